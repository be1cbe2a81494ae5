"""The Prometheus collector of one server: every ``rtmpd_`` metric, read at scrape time.

``ServerCollector.collect`` walks the stream registry (publishers, players,
late-join caches), the open connections (their byte counters, through
``rtmpd.relay.peer.Peer``), the recorder, the access counters and the hook
counts, and adds the totals of what ended (``rtmpd.metrics.events``). A
scrape costs one pass over the streams and one over the connections; the
media path counts nothing for it. Metric names and labels are listed in
docs/metrics.md.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

import rtmpd
import twisted
from rtmpd.metrics.labels import CLOSE_REASONS, AppLabels, close_reason

if TYPE_CHECKING:
    from rtmpd.access.counters import LatencySamples
    from rtmpd.metrics.events import EventTotals
    from rtmpd.recording.recorder import Recorder
    from rtmpd.relay.peer import Peer
    from rtmpd.relay.registry import StreamRegistry

__all__ = ["DEFAULT_MAX_APPS", "DEFAULT_MAX_STREAMS", "ServerCollector", "Sources"]

#: Applications with labels of their own (``--metrics-max-apps``).
DEFAULT_MAX_APPS = 32
#: Streams exported one by one with ``--metrics-per-stream`` (``--metrics-max-streams``).
DEFAULT_MAX_STREAMS = 100


@dataclass
class Sources:
    """Where a scrape reads the server. ``access`` and ``recorder`` are asked at each scrape (the
    access policy may be replaced by a reload); either may answer None."""

    registry: StreamRegistry
    connections: Mapping[str, Peer]
    #: Closed connections by the reason the server logged (``rtmpd.server.lifecycle``).
    closed_by_reason: Mapping[str, int]
    totals: EventTotals
    #: The event hooks' delivery counts ``{(kind, result): count}``; None without hooks.
    hooks: Callable[[], Mapping[tuple[str, str], int] | None]
    access: Callable[[], Any]
    recorder: Callable[[], Recorder | None]
    #: The push and pull services (``rtmpd.remote``), or None when not configured.
    push: Callable[[], Any] = lambda: None
    pull: Callable[[], Any] = lambda: None


class ServerCollector:
    """Yields every ``rtmpd_`` metric of one server (see the module doc).

    With ``per_stream``, also per-stream series for at most ``max_streams``
    streams (the first by key), and ``rtmpd_metrics_streams_omitted``.
    """

    def __init__(
        self,
        sources: Sources,
        app_label: AppLabels,
        *,
        per_stream: bool = False,
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        self.sources = sources
        self.app_label = app_label
        self.per_stream = per_stream
        self.max_streams = max_streams
        self._recording_bytes = 0

    def describe(self) -> list[Metric]:
        # Registering must not scrape the server; the names are in docs/metrics.md.
        return []

    def collect(self) -> Iterator[Metric]:
        yield InfoMetricFamily(
            "rtmpd_build",
            "rtmpd's version and the Python and Twisted it runs on.",
            value={
                "version": str(rtmpd.__version__),
                "python_version": platform.python_version(),
                "twisted_version": twisted.__version__,
            },
        )
        yield from self._connections()
        yield from self._streams()
        yield from self._recordings()
        yield from self._access()
        yield from self._hooks()
        yield from self._relays()

    # -- connections ------------------------------------------------------------------------

    def _connections(self) -> Iterator[Metric]:
        src, label = self.sources, self.app_label
        connections = list(src.connections.values())
        closed: Counter[str] = Counter({reason: 0 for reason in CLOSE_REASONS})
        for reason, count in list(src.closed_by_reason.items()):
            closed[close_reason(reason)] += count
        total_closed = sum(closed.values())
        yield _gauge("rtmpd_connections", "Open client connections (RTMP in any state, and HTTP players).", len(connections))
        yield _counter(
            "rtmpd_connections_accepted",
            "Client connections accepted since the start.",
            total_closed + len(connections),
        )
        family = CounterMetricFamily(
            "rtmpd_connections_closed", "Client connections closed, by reason.", labels=["reason"]
        )
        for reason in CLOSE_REASONS:
            family.add_metric([reason], closed[reason])
        yield family
        yield _counter(
            "rtmpd_players_timed_out",
            "Connections dropped because their socket made no progress for --play-timeout.",
            closed["play_timeout"],
        )
        received, sent = Counter(src.totals.bytes_in), Counter(src.totals.bytes_out)
        buffered = 0
        for peer in connections:
            buffered += peer.buffered_bytes
            if peer.app:  # before connect, a connection's bytes belong to no application yet
                app = label(peer.app)
                received[app] += peer.bytes_in
                sent[app] += peer.bytes_out
        yield _by_app_counter(
            "rtmpd_received_bytes", "Bytes received from clients (RTMP framing included).", received
        )
        yield _by_app_counter("rtmpd_sent_bytes", "Bytes sent to clients (RTMP framing included).", sent)
        yield _gauge(
            "rtmpd_output_buffered_bytes",
            "Bytes written to client sockets that the clients have not read yet.",
            buffered,
        )

    # -- streams ----------------------------------------------------------------------------

    def _streams(self) -> Iterator[Metric]:
        src, label = self.sources, self.app_label
        publishers: Counter[str] = Counter()
        players: Counter[str] = Counter()
        gop: Counter[str] = Counter()
        dropped = Counter(src.totals.dropped_frames)
        streams = list(src.registry)
        for stream in streams:
            app = label(stream.key.partition("/")[0])
            publishers[app] += stream.publisher is not None
            players[app] += len(stream.players)
            gop[app] += stream.cache.gop_bytes
            for player in stream.players:
                dropped[app] += player.dropped_frames
        # Every application seen keeps its series (at 0), so a gauge is seen going down to 0.
        for app in (*src.totals.publishes, *src.totals.plays):
            publishers[app] += 0
            players[app] += 0
            gop[app] += 0
            dropped[app] += 0
        yield _by_app_gauge("rtmpd_publishers", "Streams being published.", publishers)
        yield _by_app_gauge(
            "rtmpd_players", "Players (plays of a stream, live or awaiting a publisher).", players
        )
        yield _by_app_gauge("rtmpd_gop_cache_bytes", "Bytes of media held in late-join (GOP) caches.", gop)
        yield _by_app_counter(
            "rtmpd_dropped_frames",
            "Video frames not sent to players whose socket was full (they resume at a keyframe).",
            dropped,
        )
        yield _by_app_counter("rtmpd_publishes", "Publishes started.", src.totals.publishes)
        yield _by_app_counter("rtmpd_plays", "Plays started.", src.totals.plays)
        if self.per_stream:
            yield from self._per_stream(streams)

    def _per_stream(self, streams: list) -> Iterator[Metric]:
        streams = sorted(streams, key=lambda s: s.key)
        shown = streams[: self.max_streams]
        live = GaugeMetricFamily(
            "rtmpd_stream_live", "1 while the stream has a publisher.", labels=["stream"]
        )
        players = GaugeMetricFamily("rtmpd_stream_players", "Players of the stream.", labels=["stream"])
        gop = GaugeMetricFamily(
            "rtmpd_stream_gop_cache_bytes", "Bytes in the stream's late-join cache.", labels=["stream"]
        )
        received = CounterMetricFamily(
            "rtmpd_stream_received_bytes",
            "Media bytes received from the stream's current publisher (starts again at each publish).",
            labels=["stream"],
        )
        for stream in shown:
            key = [stream.key]
            live.add_metric(key, 1 if stream.publisher is not None else 0)
            players.add_metric(key, len(stream.players))
            gop.add_metric(key, stream.cache.gop_bytes)
            if stream.publisher is not None:
                received.add_metric(key, stream.publisher.bytes_in)
        yield from (live, players, gop, received)
        yield _gauge(
            "rtmpd_metrics_streams_omitted",
            "Streams left out of the rtmpd_stream_* series (over --metrics-max-streams).",
            len(streams) - len(shown),
        )

    # -- recordings -------------------------------------------------------------------------

    def _recordings(self) -> Iterator[Metric]:
        recorder = self.sources.recorder()
        if recorder is None:
            return
        unfinished = list(recorder.unfinished)
        active = sum(1 for r in unfinished if r.state == "recording")
        failed = recorder.ended_failed + sum(1 for r in unfinished if r.state == "failed")
        written = recorder.ended_bytes + sum(r.bytes_before + r.bytes for r in unfinished)
        # A failed file is cut back to its last whole tag: the total never goes back for it.
        self._recording_bytes = max(self._recording_bytes, written)
        yield _gauge("rtmpd_recordings_active", "Recordings writing a file now.", active)
        yield _counter(
            "rtmpd_recording_bytes",
            "Bytes queued to recording files (FLV framing included).",
            self._recording_bytes,
        )
        yield _counter(
            "rtmpd_recording_failures", "Recordings ended by a disk error or a full writer queue.", failed
        )
        yield _gauge(
            "rtmpd_recording_pending_bytes",
            "Bytes queued for the disk that the writer threads have not written yet.",
            sum(r.pending_bytes for r in unfinished),
        )

    # -- access control ----------------------------------------------------------------------

    def _access(self) -> Iterator[Metric]:
        policy = self.sources.access()
        counters = getattr(policy, "counters", None)
        if counters is None:
            return
        outcomes = CounterMetricFamily(
            "rtmpd_auth_decisions", "Access decisions, by action and result.", labels=["action", "result"]
        )
        for (action, result), count in sorted(counters.outcomes.items()):
            outcomes.add_metric([action, result], count)
        yield outcomes
        by_authoriser = CounterMetricFamily(
            "rtmpd_auth_authoriser_decisions",
            "Each authoriser's answers, by action, result and authoriser.",
            labels=["action", "result", "authoriser"],
        )
        for (action, result, authoriser), count in sorted(counters.decisions.items()):
            by_authoriser.add_metric([action, result, authoriser], count)
        yield by_authoriser
        callbacks = CounterMetricFamily(
            "rtmpd_auth_callback_requests", "Access callback requests, by result.", labels=["result"]
        )
        for result, count in sorted(counters.callback_results.items()):
            callbacks.add_metric([result], count)
        yield callbacks
        yield _histogram(
            "rtmpd_auth_callback_duration_seconds",
            "Round-trip time of access callback requests.",
            counters.callback_latency,
        )

    # -- event hooks ---------------------------------------------------------------------------

    def _hooks(self) -> Iterator[Metric]:
        counts = self.sources.hooks()
        if counts is None:
            return
        deliveries = CounterMetricFamily(
            "rtmpd_hook_deliveries",
            "Events handled by the event hooks, by sink kind and result (ok, retry, failed, dropped).",
            labels=["kind", "result"],
        )
        for (kind, result), count in sorted(counts.items()):
            deliveries.add_metric([kind, result], count)
        yield deliveries

    # -- push and pull relays ----------------------------------------------------------------

    def _relays(self) -> Iterator[Metric]:
        push = self.sources.push()
        if push is not None:
            states = GaugeMetricFamily(
                "rtmpd_push_destinations", "Push destinations by state.", labels=["state"]
            )
            counts: dict[str, int] = {}
            for destination in push.destinations():
                counts[destination["state"]] = counts.get(destination["state"], 0) + 1
            for state, count in sorted(counts.items()):
                states.add_metric([state], count)
            yield states
            totals = push.totals()
            yield _counter("rtmpd_push_sent_bytes", "Bytes sent to push destinations.", totals["bytes_sent"])
            yield _counter(
                "rtmpd_push_reconnects",
                "Push destinations connected again after a failure.",
                totals["reconnects"],
            )
        pull = self.sources.pull()
        if pull is not None:
            upstreams = GaugeMetricFamily(
                "rtmpd_pull_upstreams", "Pull (edge) upstreams by state.", labels=["state"]
            )
            counts = {}
            for upstream in pull.upstreams():
                counts[str(upstream["state"])] = counts.get(str(upstream["state"]), 0) + 1
            for state, count in sorted(counts.items()):
                upstreams.add_metric([state], count)
            yield upstreams


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _by_app_gauge(name: str, documentation: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["app"])
    for app, value in sorted(values.items()):
        family.add_metric([app], value)
    return family


def _by_app_counter(name: str, documentation: str, values: Mapping[str, float]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=["app"])
    for app, value in sorted(values.items()):
        family.add_metric([app], value)
    return family


def _histogram(name: str, documentation: str, samples: LatencySamples) -> HistogramMetricFamily:
    buckets = [(_bound(bound), count) for bound, count in zip(samples.bounds, samples.buckets, strict=True)]
    buckets.append(("+Inf", samples.count))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=samples.sum)


def _bound(value: float) -> str:
    return repr(float(value))
