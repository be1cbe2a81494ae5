"""Wiring of ``/metrics`` (``rtmpd.metrics``, ``rtmpd.http.metrics``) and its options.

``install_metrics`` builds one ``CollectorRegistry`` per server holding the
server's collector, the first-keyframe histogram and the library's process,
platform and GC collectors, subscribes the event totals to the notifier,
and mounts the resource on the HTTP tree. Nothing here imports
``prometheus_client`` until it is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rtmpd.core.text import ascii_number

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from rtmpd.http.root import HTTPRoot
    from rtmpd.server.service import RTMPService


def _at_least_one(value: str) -> int:
    number = ascii_number(int, value)
    if number < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return number


_at_least_one.coerceDoc = "A positive integer."

#: Options of the metrics, for ``rtmpd.tap.Options``.
METRICS_FLAGS = [
    ["no-metrics", None, "Do not serve /metrics on the --http listener."],
    [
        "metrics-per-stream",
        None,
        "Also export per-stream series (rtmpd_stream_*), capped by --metrics-max-streams.",
    ],
]
METRICS_PARAMETERS = [
    [
        "metrics-max-streams",
        None,
        100,
        "Most streams exported one by one with --metrics-per-stream",
        _at_least_one,
    ],
    [
        "metrics-max-apps",
        None,
        32,
        "Applications with a metrics label of their own; others are '_other'",
        _at_least_one,
    ],
]

#: Upper bounds (seconds) of the play-to-first-keyframe histogram.
FIRST_KEYFRAME_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


def install_metrics(top: RTMPService, root: HTTPRoot, options: Any) -> CollectorRegistry | None:
    """Mount ``/metrics`` for ``top`` on ``root`` unless ``--no-metrics``; return its registry."""
    if options["no-metrics"]:
        return None
    registry = metrics_registry(
        top,
        per_stream=options["metrics-per-stream"],
        max_streams=options["metrics-max-streams"],
        max_apps=options["metrics-max-apps"],
    )
    from rtmpd.http.metrics import MetricsResource

    root.mount("metrics", MetricsResource(registry))
    return registry


def hook_deliveries(top: RTMPService) -> dict[tuple[str, str], int] | None:
    """The event hooks' delivery counts (the service named "hooks", ``rtmpd.hooks``), None without hooks."""
    try:
        hooks = top.getServiceNamed("hooks")
    except KeyError:
        return None
    return hooks.deliveries()


def metrics_registry(
    top: RTMPService, *, per_stream: bool = False, max_streams: int = 100, max_apps: int = 32
) -> CollectorRegistry:
    """A registry of every metric of ``top``, and the subscriptions that feed it."""
    from prometheus_client import CollectorRegistry, Histogram
    from prometheus_client.gc_collector import GCCollector
    from prometheus_client.platform_collector import PlatformCollector
    from prometheus_client.process_collector import ProcessCollector

    from rtmpd.metrics.collector import ServerCollector, Sources
    from rtmpd.metrics.events import EventTotals, FirstKeyframeTimer
    from rtmpd.metrics.labels import AppLabels

    registry = CollectorRegistry(auto_describe=False)
    app_label = AppLabels(max_apps)
    totals = EventTotals(app_label)
    factory = top.factory
    sources = Sources(
        registry=top.registry,
        connections=top.connections,
        closed_by_reason=factory.closed_by_reason,
        totals=totals,
        hooks=lambda: hook_deliveries(top),
        access=lambda: factory.access,
        recorder=lambda: top.recorder,
        push=lambda: _named(top, "push"),
        pull=lambda: _named(top, "pull"),
    )
    registry.register(ServerCollector(sources, app_label, per_stream=per_stream, max_streams=max_streams))
    from rtmpd.metrics.cluster import ClusterCollector

    registry.register(ClusterCollector(lambda: _named(top, "cluster")))
    first_keyframe = Histogram(
        "rtmpd_play_first_keyframe_seconds",
        "Time from a play of a live stream (or from the publish, for waiting players) to the first video "
        "keyframe sent to the player.",
        buckets=FIRST_KEYFRAME_BUCKETS,
        registry=registry,
    )
    timer = FirstKeyframeTimer(top.registry, top.clock, first_keyframe.observe)
    notifier = top.registry.notifier
    notifier.subscribe(totals)
    notifier.subscribe(timer.event)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def _named(top: RTMPService, name: str) -> Any:
    try:
        return top.getServiceNamed(name)
    except KeyError:
        return None
