"""Low-Latency HLS (and classic HLS) of every live stream, served under ``/hls/`` on the HTTP listener.

Sans-IO parts, time passed in: ``segments`` (the bounded window of
segments and parts in memory), ``segmenter`` (cuts one stream's fMP4 into
parts and keyframe-aligned segments), ``playlist`` (renders the media
playlist), ``blocking`` (what a blocking playlist reload or a preload-hint
request waits for, and when it is refused), ``names`` (URLs of the files).
Twisted parts: ``live`` (one muxer per watched stream, fed by the relay as a
stream listener, stopped when unwatched) and ``resource`` (the HTTP tree,
with access control). Nothing is written to disk. See docs/hls.md.
"""
