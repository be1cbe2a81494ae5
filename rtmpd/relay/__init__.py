"""The relay: live streams, their publishers and players, the late-join cache and the fan-out.

It sees a connection only through ``rtmpd.relay.peer.Peer`` and never imports
the server, the recorder or the admin packages.
"""
