"""The Twisted server: the RTMP protocol adapter, command responders, listeners and services."""
