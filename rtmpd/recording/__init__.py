"""Recording: published streams to files, one writer thread per recording.

It listens to the relay's streams and never touches a connection.
"""
