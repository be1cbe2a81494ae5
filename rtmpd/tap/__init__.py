"""twistd plugin wiring: the command-line options, and the only place that builds and wires services.

``twistd -n rtmpd --port 1935 --record-dir ./recordings`` runs ``makeService``:
an ``RTMPService`` whose children are the recorder (with ``--record-dir``),
one listening service per endpoint (``--port`` and each ``--listen``), with
``--http`` the HTTP listener and what is mounted on it (``rtmpd.tap.http``), and,
with ``--manhole``, the manhole collection (its bit-rate sampler and its SSH
listener). Nothing else in rtmpd builds a service or gives one a parent.
"""

from __future__ import annotations

import os
import sys

from twisted.application import service
from twisted.logger import Logger
from twisted.python import usage

import rtmpd
from rtmpd import logs
from rtmpd.access.options import AUTH_PARAMETERS, AccessOptions, choice, on_loopback
from rtmpd.access.settings import AccessSettings
from rtmpd.admin.manhole_options import MANHOLE_PARAMETERS, manhole_limits
from rtmpd.config import ServerConfig
from rtmpd.core.limits import OPTIONS as LIMIT_OPTIONS
from rtmpd.core.limits import Limits
from rtmpd.hooks.options import HOOK_PARAMETERS, HookOptions
from rtmpd.recording.options import RECORDING_PARAMETERS, recording_config
from rtmpd.remote.options import REMOTE_PARAMETERS, RemoteOptions
from rtmpd.server.options import LIMIT_PARAMETERS, config_fields
from rtmpd.tap.access import install_access
from rtmpd.tap.cluster import CLUSTER_PARAMETERS, install_cluster
from rtmpd.tap.coerce import chunk_size_value, endpoint_description, limit_value, positive
from rtmpd.tap.listeners import check_listeners
from rtmpd.tap.manhole import manhole_service
from rtmpd.tap.memory import HEAP_PARAMETERS, install_heap_trimmer
from rtmpd.tap.metrics import METRICS_FLAGS, METRICS_PARAMETERS
from rtmpd.tap.tls import TLS_PARAMETERS, apply_tls_choice
from rtmpd.tap.worker_options import WORKER_PARAMETERS, wants_workers

__all__ = ["Options", "install_access", "makeService", "manhole_service"]


_log = Logger(namespace="rtmpd.tap")
_defaults = ServerConfig()
_limits = Limits()


class Options(AccessOptions, HookOptions, RemoteOptions, usage.Options):
    synopsis = "[options]"
    longdesc = "Live-streaming RTMP server: publish to rtmp://HOST:PORT/APP/KEY, play the same URL."

    optFlags = [
        ["no-record", None, "Do not record, even if --record-dir is given."],
        ["publish-takeover", None, "A new publisher on a live key replaces the current one."],
        ["no-gop-cache", None, "Do not cache the last group of pictures for late joiners."],
        ["version", None, "Print the rtmpd version and exit."],
        ["auth-revoke-live", None, "A key removed from --auth-keys on reload ends its live publisher."],
        ["hls", None, "Serve every live stream as LL-HLS under /hls/ on the --http listener."],
        ["api-token-always", None, "The JSON API wants the token for reads from loopback too."],
    ]
    optParameters = [
        ["port", "p", "tcp:1935", "Port number or endpoint description to listen on", endpoint_description],
        ["record-dir", None, None, "Record every published stream into this directory"],
        ["record-max-size", None, None, "Start a new recording file past this many bytes", positive(int)],
        [
            "record-interval",
            None,
            None,
            "Start a new recording file every this many seconds",
            positive(float),
        ],
        *RECORDING_PARAMETERS,
        [
            "publisher-timeout",
            None,
            _defaults.publisher_timeout,
            "Drop a publisher that sends nothing for this many seconds",
            positive(float),
        ],
        [
            "play-timeout",
            None,
            _defaults.play_timeout,
            "Drop a player whose socket makes no progress for this many seconds",
            positive(float),
        ],
        [
            "max-queue-bytes",
            None,
            _defaults.max_queue_bytes,
            "Most bytes a slow player may have queued before frames are dropped",
            positive(int),
        ],
        [
            "gop-cache-bytes",
            None,
            _defaults.gop_cache_max_bytes,
            "Largest GOP cache per stream in bytes",
            positive(int),
        ],
        [
            "gop-cache-duration",
            None,
            _defaults.gop_cache_max_duration,
            "Longest GOP cache per stream in seconds",
            positive(float),
        ],
        ["chunk-size", None, _defaults.chunk_size, "Outgoing RTMP chunk size", chunk_size_value],
        [
            "max-message-size",
            None,
            _limits.max_media_message_size,
            "Largest audio/video/data message accepted, in bytes",
            positive(int),
        ],
        [
            "max-command-size",
            None,
            _limits.max_command_message_size,
            "Largest command or control message accepted, in bytes",
            positive(int),
        ],
        [
            "max-chunk-streams",
            None,
            _limits.max_chunk_streams,
            "Most chunk streams one connection may open",
            positive(int),
        ],
        [
            "handshake-timeout",
            None,
            _limits.handshake_timeout,
            "Seconds a client has to complete the handshake",
            positive(float),
        ],
        [
            "log-level",
            None,
            "info",
            "Log level: debug, info, warn or error",
            choice("debug", "info", "warn", "error"),
        ],
        [
            "log-format",
            None,
            None,
            "Log format: text or json (default: text on a terminal, json otherwise)",
            choice("text", "json"),
        ],
        [
            "manhole",
            None,
            None,
            "Endpoint for the SSH admin shell, e.g. tcp:2222 (off when absent)",
            endpoint_description,
        ],
        [
            "http",
            None,
            None,
            "HTTP listener (metrics, API, health), e.g. tcp:8080:interface=127.0.0.1 (off when absent)",
            endpoint_description,
        ],
        ["api-token-file", None, None, "File holding the JSON API's bearer token (changes are off without)"],
        ["http-max-body", None, 64 * 1024, "Largest HTTP request body accepted, in bytes", positive(int)],
        ["http-max-connections", None, 256, "Most HTTP connections open at once", positive(int)],
        ["manhole-keys", None, None, "authorized_keys file of keys allowed into the manhole"],
        ["manhole-passwd", None, None, "user:password file for the manhole (hashed passwords supported)"],
        [
            "manhole-host-key",
            None,
            "rtmpd_host_key",
            "SSH host key file for the manhole (created if missing)",
        ],
        *MANHOLE_PARAMETERS,
    ]

    optParameters += AUTH_PARAMETERS
    optParameters += HOOK_PARAMETERS
    optFlags += METRICS_FLAGS
    optParameters += METRICS_PARAMETERS
    optParameters += REMOTE_PARAMETERS
    optParameters += CLUSTER_PARAMETERS  # the cluster (rtmpd.tap.cluster, docs/cluster.md)
    # LL-HLS (rtmpd.tap.hls, docs/hls.md)
    optParameters += [
        ["hls-segment-duration", None, 1.0, "HLS segment target in seconds (at keyframes)", positive(float)],
        ["hls-part-duration", None, 0.333, "LL-HLS part duration in seconds", positive(float)],
        ["hls-window", None, 6, "HLS segments listed in the playlist (kept in memory)", positive(int)],
    ]
    optParameters += LIMIT_PARAMETERS
    optParameters += WORKER_PARAMETERS  # --workers (rtmpd.tap.workers, docs/cluster.md)
    optParameters += TLS_PARAMETERS + HEAP_PARAMETERS  # --tls, --heap-trim-interval (docs/performance.md)
    # Hostile-client budgets (docs/security.md): one option per Limits field.
    optParameters += [
        [name, None, getattr(_limits, field), text, limit_value(name, type(getattr(_limits, field)))]
        for name, field, text in LIMIT_OPTIONS
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["record-match"] = []
        self.init_access()
        self.init_hooks()
        self.init_remote()

    def opt_listen(self, description: str) -> None:
        """Listen on one more endpoint (repeatable), e.g. tcp6:1935:interface=\\:\\:1."""
        try:
            self["listen"].append(endpoint_description(description))
        except ValueError as e:
            raise usage.UsageError(f"--listen: {e}") from e

    def opt_record_match(self, pattern: str) -> None:
        """Record only streams whose app/name matches this fnmatch pattern (repeatable)."""
        self["record-match"].append(pattern)

    def opt_version(self) -> None:
        print(f"rtmpd {rtmpd.__version__}")
        sys.exit(0)

    def parseOptions(self, options=None) -> None:
        # twistd answers a UsageError by printing its whole help; an operator
        # with a typo wants the one line that says what is wrong.
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            sys.exit(f"rtmpd: error: {e}")

    def postOptions(self) -> None:
        # First: nothing may have imported Twisted's networking before TLS is kept out or not.
        apply_tls_choice(self)
        check_listeners(self)
        record_dir = None if self["no-record"] else self["record-dir"]
        if record_dir is not None:
            try:
                os.makedirs(record_dir, exist_ok=True)
            except OSError as e:
                raise usage.UsageError(f"--record-dir {record_dir}: {e.strerror}") from e
            if not os.access(record_dir, os.W_OK | os.X_OK):
                raise usage.UsageError(f"--record-dir {record_dir}: not writable")
        self["record-dir"] = record_dir
        if self["manhole"] and not (self["manhole-keys"] or self["manhole-passwd"]):
            raise usage.UsageError(
                "--manhole needs --manhole-keys or --manhole-passwd (it is a Python shell)"
            )
        self.access_settings = self.access_settings_from_options()
        self.hook_settings = self.hook_settings_from_options()
        if self["hls"] and not self["http"]:
            raise usage.UsageError("--hls needs --http (HLS is served by the HTTP listener)")
        if self["hls-part-duration"] > self["hls-segment-duration"]:
            raise usage.UsageError("--hls-part-duration must not exceed --hls-segment-duration")
        if self.parent is not None and self.parent.get("logger") is None:
            path = self.parent.get("logfile") or (None if self.parent.get("nodaemon") else "twistd.log")
            logs.configure(self["log-format"], self["log-level"], path)
            self.parent["logger"] = "rtmpd.logs.observer_factory"

    def config(self) -> ServerConfig:
        """The ServerConfig these options describe."""
        limits = Limits(
            max_media_message_size=self["max-message-size"],
            max_command_message_size=self["max-command-size"],
            max_chunk_streams=self["max-chunk-streams"],
            handshake_timeout=self["handshake-timeout"],
            **{field: self[name] for name, field, _ in LIMIT_OPTIONS},
        )
        return ServerConfig(
            limits=limits,
            chunk_size=self["chunk-size"],
            publisher_timeout=self["publisher-timeout"],
            publish_takeover=self["publish-takeover"],
            play_timeout=self["play-timeout"],
            max_queue_bytes=self["max-queue-bytes"],
            gop_cache=not self["no-gop-cache"],
            gop_cache_max_bytes=self["gop-cache-bytes"],
            gop_cache_max_duration=self["gop-cache-duration"],
            record_dir=self["record-dir"],
            record_match=tuple(self["record-match"]),
            record_max_size=self["record-max-size"],
            record_interval=self["record-interval"],
            **recording_config(self),
            **config_fields(self),
        )


def makeService(options: Options) -> service.IService:
    """Build the rtmpd service collection from parsed options (with ``--workers N``: their parent).

    Exits with one line (``rtmpd: error: ...``) when the manhole cannot start.
    """
    if wants_workers(options):
        from rtmpd.tap.workers import workers_service

        return workers_service(options, build_service)
    return build_service(options)


def build_service(options: Options) -> service.MultiService:
    """The service collection of one rtmpd process."""
    from twisted.internet import reactor

    from rtmpd.server.listening import ListeningService
    from rtmpd.server.service import RTMPService

    config = options.config()
    top = RTMPService(config)
    if config.record_dir is not None:
        from rtmpd.tap.recording import install_recorder

        install_recorder(top, config, reactor)
    listeners = [options["port"], *options["listen"]]
    for description in listeners:
        ListeningService(description, top.factory).setServiceParent(top)
    settings = getattr(options, "access_settings", None) or AccessSettings()
    reloader = None
    if settings.enabled:
        reloader = install_access(top, settings, reactor)
    elif not all(on_loopback(d) for d in listeners):
        _log.warn(
            "Access control is off: anyone who can reach {listeners} may publish and play "
            "(see --auth-* options, docs/access.md)",
            listeners=", ".join(d for d in listeners if not on_loopback(d)),
        )
    if options["http"]:
        from rtmpd.tap.api import install_api
        from rtmpd.tap.http import install_http
        from rtmpd.tap.metrics import install_metrics

        root = install_http(top, options["http"], options["http-max-body"], options["http-max-connections"])
        install_metrics(top, root, options)
        install_api(
            top, root, options["api-token-file"], options["api-token-always"], reloader and reloader.reload
        )
        if options["hls"]:
            from rtmpd.tap.hls import hls_settings, install_hls

            install_hls(top, root, hls_settings(options), reactor)
    hook_settings = getattr(options, "hook_settings", None)
    if hook_settings is not None and hook_settings.enabled:
        from rtmpd.tap.hooks import install_hooks

        install_hooks(top, hook_settings, reactor)
    from rtmpd.remote.options import install_remote

    install_remote(top, options)
    install_cluster(top, options)
    install_heap_trimmer(top, options, reactor)
    if options["manhole"]:
        from rtmpd.admin.auth import ManholeError

        try:
            manhole = manhole_service(
                options["manhole"],
                top,
                keys_file=options["manhole-keys"],
                passwd_file=options["manhole-passwd"],
                host_key_file=options["manhole-host-key"],
                reload_access=reloader.reload if reloader is not None else None,
                limits=manhole_limits(options),
            )
        except ManholeError as e:
            sys.exit(f"rtmpd: error: {e}")
        manhole.setServiceParent(top)
    return top
