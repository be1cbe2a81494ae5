"""The operator's side of rtmpd: views and actions on a running server, and the SSH manhole.

- ``views``: streams, players, connections and the server as plain data (served by the JSON API).
- ``actions``: kick, drop, start/stop_recording, reconnect, reload_auth, logged with the operator's name.
- ``uptimes``: ``StartTimes``, when connections connected and players started, from the lifecycle events.
- ``errors``: ``AdminError`` and ``NotFound``, what views and actions refuse with.
- ``rates``: ``RateSampler``, bit rates from the connections' byte counters.
- ``format``: ``Table`` and ``Column``, text tables for the prompt.
- ``namespace``: what an operator's manhole session holds (the views as tables, the actions, help).
- ``manhole`` and ``auth``: the SSH shell, and who may enter it.

Services are built and wired in ``rtmpd.tap`` only.
"""
