"""Relays to and from other RTMP servers: push (restream a local stream to platforms) over the RTMP client.

``rtmpd.core.client`` speaks the protocol; here are its Twisted adapter
(``connection``), how an ``rtmp://``/``rtmps://`` URL becomes an endpoint
(``urls``, ``endpoints``), the retry schedule (``backoff``), one push
destination's state machine (``destination``), the push service that follows
every stream (``push``), and the command-line wiring (``options``).
"""
