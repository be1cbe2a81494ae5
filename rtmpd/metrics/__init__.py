"""Prometheus metrics of a running server, served at ``/metrics`` (``rtmpd.http.metrics``).

Most values are read from the server at scrape time (``collector``); the few
that must be caught when they happen come from lifecycle events and a
short-lived stream listener (``events``). ``labels`` keeps every label's set
of values bounded. Only ``collector`` and ``rtmpd.http.metrics`` import
``prometheus_client``.
"""
