"""Recording: published streams to files, one writer thread per recording.

It listens to the relay's streams, takes the relay's classification of each
message instead of parsing it, and touches a publisher only through the
relay's ``Peer`` (to hold its input back). ``recorder`` is the service,
``recording`` one stream's state, ``throttle`` the holding back, ``writer``
the thread, ``flvfile`` the file layout, ``paths`` and ``names`` the file names.
"""
