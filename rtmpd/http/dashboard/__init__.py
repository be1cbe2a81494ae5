"""The web dashboard at ``/`` of the HTTP listener: a small page of plain HTML, CSS and JavaScript.

It reads the JSON API (``/api/v1/``) once a second and shows every live
stream with a muted preview (LL-HLS through hls.js when the build installed
it into ``vendor/``, natively where the browser plays HLS), its codecs,
resolution, frame rate, bit-rate sparkline, players, recording and uptime,
the API's actions behind the API token, and a page per stream.
"""
