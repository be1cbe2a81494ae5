"""rtmpd: a live-streaming RTMP server on Twisted."""

from rtmpd._version import __version__ as __version_info__

__version__: str = __version_info__.public()
__all__ = ["__version__", "__version_info__"]
