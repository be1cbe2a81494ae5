"""The operator's side of rtmpd: views and actions on a running server, and the SSH manhole.

- ``views``: streams, players and connections as plain data (ready for JSON).
- ``actions``: kick, drop, stop_recording, reconnect, logged with the operator's name.
- ``errors``: ``AdminError`` and ``NotFound``, what views and actions refuse with.
- ``rates``: ``RateSampler``, bit rates from the connections' byte counters.
- ``format``: ``Table`` and ``Column``, text tables for the prompt.
- ``namespace``: what an operator's manhole session holds (the views as tables, the actions, help).
- ``manhole`` and ``auth``: the SSH shell, and who may enter it.

Services are built and wired in ``rtmpd.tap`` only.
"""
