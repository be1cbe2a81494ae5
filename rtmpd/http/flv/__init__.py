"""HTTP-FLV players: ``GET /{app}/{name}.flv`` streams the FLV of a live stream from the same fan-out
as RTMP players (``peer.HTTPPeer`` is a ``rtmpd.relay.peer.Peer`` whose media are FLV tags made once
per message for all of them), with the same late join, slow-player policy and access control."""
