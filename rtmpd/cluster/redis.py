"""``RedisDirectory``: the stream directory of a cluster of hosts, in one Redis (``--cluster redis://...``).

Each claim is one Redis key, ``rtmpd:claim:APP/NAME``, whose value is the
owner (``Node.encode``: node id and pull URL) and whose expiry is the TTL.
Only Redis's own atomic primitives are used (no home-made consensus):

- claim: ``SET key node NX PX ttl``; when it is taken, ``GET`` says by whom
  (a claim this node already holds is refreshed). A takeover is a plain
  ``SET key node PX ttl``.
- refresh and release compare the owner first, in one small Lua script
  each (``EVALSHA``), so a node never extends or drops another's claim.
- lookup ``GET``; claims ``SCAN`` over the prefix and ``MGET``.

The client is redis-py, run in the reactor's thread pool (``deferToThread``)
with short socket timeouts and no retries: the reactor never blocks, and a
Redis that is down answers at once with ``DirectoryUnavailable``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from rtmpd.cluster.directory import DirectoryUnavailable, Node

__all__ = ["PREFIX", "RedisDirectory", "redis_client"]

PREFIX = "rtmpd:claim:"
#: Seconds to connect to Redis, and to wait for an answer.
TIMEOUT = 1.0
#: Keys asked per SCAN step.
SCAN_COUNT = 500

_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def redis_client(url: str, timeout: float = TIMEOUT) -> Any:
    """A redis-py client of ``url`` (``redis://host:port/db``) that fails fast. Raises ValueError."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


class RedisDirectory:
    """``StreamDirectory`` of ``node`` in Redis (see the module docstring).

    Every call fails with ``DirectoryUnavailable`` when Redis cannot be
    reached or answers with an error.
    """

    log = Logger()

    def __init__(self, client: Any, node: Node, ttl: float, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.client = client
        self.node = node
        self.ttl = ttl
        self._reactor = reactor
        self._value = node.encode()
        self._ttl_ms = max(1, int(ttl * 1000))
        self._refresh = client.register_script(_REFRESH)
        self._release = client.register_script(_RELEASE)

    def _call(self, what: str, function: Any, *args: Any) -> Deferred:
        def run() -> Any:
            import redis

            try:
                return function(*args)
            except redis.RedisError as e:
                raise DirectoryUnavailable(f"redis {what}: {e}") from e

        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), run)

    def _owner(self, key: str, value: str | None) -> Node | None:
        if value is None:
            return None
        try:
            return Node.decode(value)
        except ValueError:
            self.log.warn("Unreadable claim in Redis; ignored", stream_key=key, value=value[:100])
            return None

    # -- StreamDirectory ----------------------------------------------------------------

    def claim(self, key: str, *, takeover: bool = False) -> Deferred[Node]:
        return self._call("claim", self._claim, key, takeover)

    def _claim(self, key: str, takeover: bool) -> Node:
        name = PREFIX + key
        if takeover:
            self.client.set(name, self._value, px=self._ttl_ms)
            return self.node
        if self.client.set(name, self._value, nx=True, px=self._ttl_ms):
            return self.node
        current = self.client.get(name)
        if current == self._value:
            self._refresh(keys=[name], args=[self._value, self._ttl_ms])
            return self.node
        owner = self._owner(key, current)
        if owner is None:  # expired between SET and GET (or unreadable): try once more
            if self.client.set(name, self._value, nx=True, px=self._ttl_ms):
                return self.node
            owner = self._owner(key, self.client.get(name))
        return owner if owner is not None else self.node

    def refresh(self, key: str) -> Deferred[bool]:
        d = self._call("refresh", self._refresh, [PREFIX + key], [self._value, self._ttl_ms])
        return d.addCallback(lambda extended: bool(extended))

    def release(self, key: str) -> Deferred[None]:
        d = self._call("release", self._release, [PREFIX + key], [self._value])
        return d.addCallback(lambda _: None)

    def lookup(self, key: str) -> Deferred[Node | None]:
        d = self._call("lookup", self.client.get, PREFIX + key)
        return d.addCallback(lambda value: self._owner(key, value))

    def claims(self) -> Deferred[dict[str, Node]]:
        return self._call("claims", self._claims)

    def _claims(self) -> dict[str, Node]:
        names = list(self.client.scan_iter(match=PREFIX + "*", count=SCAN_COUNT))
        found: dict[str, Node] = {}
        for start in range(0, len(names), SCAN_COUNT):
            batch = names[start : start + SCAN_COUNT]
            for name, value in zip(batch, self.client.mget(batch), strict=True):
                key = name[len(PREFIX) :]
                owner = self._owner(key, value)
                if owner is not None:
                    found[key] = owner
        return found
