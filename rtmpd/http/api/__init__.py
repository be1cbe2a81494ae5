"""The JSON API at ``/api/v1/`` (docs/api.md): the admin views and actions over HTTP.

- ``resource``: ``APIResource``, mounted at ``/api`` on the HTTP tree; the order of checks.
- ``routes``: path patterns, 404 and 405.
- ``endpoints``: what each path answers, from ``rtmpd.admin`` (shared with the manhole).
- ``auth``: the bearer token and the loopback rule for reads.
- ``errors``: ``APIError``, an HTTP error with headers.

Wired by ``rtmpd.tap.api`` only.
"""
