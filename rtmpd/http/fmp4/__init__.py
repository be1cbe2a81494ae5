"""WebSocket-fMP4 players: ``ws://HOST/{app}/{name}.mp4`` sends a stream's fMP4 init segment, then one
fragment (``moof`` + ``mdat``) per video frame, for a page's own MSE player. The fragments are made once
per stream (``source.FragmentSources``) and shared by all its WebSocket-fMP4 players."""
