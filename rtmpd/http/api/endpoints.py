"""What each path of the JSON API answers: the admin views and actions (``rtmpd.admin``), as JSON.

Every handler takes a ``Call`` and returns a JSON-able value or a Deferred
of one. The data and the checks are the admin package's, shared with the
manhole; this module only names them and wraps them in an object (``{"streams":
[...]}``) so that fields can be added later without breaking clients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

from rtmpd.admin.actions import Actions, Report
from rtmpd.admin.cluster import cluster_streams, cluster_view
from rtmpd.admin.errors import AdminError, NotFound
from rtmpd.admin.relays import RelayActions, relays_view
from rtmpd.admin.views import ServerViews
from rtmpd.cluster.directory import DirectoryUnavailable
from rtmpd.http.api.routes import Route
from rtmpd.http.jsonio import HTTPError

__all__ = ["Call", "ROUTES"]


@dataclass
class Call:
    """One API request as the handlers see it: path parameters, the JSON body (a dict, {} when
    none), the shared views, and the actions in the name of this client."""

    params: dict[str, str]
    body: dict[str, Any]
    views: ServerViews
    actions: Actions


def _index(call: Call) -> dict[str, Any]:
    return {
        "version": "v1",
        "endpoints": [
            f"{route.method} /api/v1/{route.path.replace('+}', '}')}" for route in ROUTES if route.pattern
        ],
    }


def _streams(call: Call) -> dict[str, Any]:
    return {"streams": call.views.streams()}


def _key(call: Call) -> str:
    return f"{call.params['app']}/{call.params['name']}"


def _stream(call: Call) -> dict[str, Any]:
    return {"stream": call.views.stream_detail(_key(call))}


def _connections(call: Call) -> dict[str, Any]:
    return {"connections": call.views.connections()}


def _server(call: Call) -> dict[str, Any]:
    return {"server": call.views.server_info()}


def _done(report: Report) -> dict[str, Any]:
    return {"ok": True, "message": str(report), **report.data}


def _answer(result: Report | Deferred) -> dict[str, Any] | Deferred:
    if isinstance(result, Deferred):
        return result.addCallback(_done)
    return _done(result)


def _kick(call: Call) -> dict[str, Any]:
    return _done(call.actions.kick(_key(call), reason=call.body.get("reason")))


def _drop(call: Call) -> dict[str, Any]:
    return _done(call.actions.drop(call.params["conn_id"], reason=call.body.get("reason")))


def _record_start(call: Call) -> dict[str, Any]:
    return _done(call.actions.start_recording(_key(call)))


def _record_stop(call: Call) -> dict[str, Any] | Deferred:
    return _answer(call.actions.stop_recording(_key(call)))


def _auth_reload(call: Call) -> dict[str, Any]:
    return _done(call.actions.reload_auth())


def _relays(call: Call) -> dict[str, Any]:
    return {"relays": relays_view(call.views.server)}


def _cluster(call: Call) -> dict[str, Any]:
    return {"cluster": cluster_view(call.views.server)}


def _cluster_streams(call: Call) -> Deferred:
    def unavailable(failure: Any) -> None:
        failure.trap(DirectoryUnavailable)
        raise HTTPError(503, f"cluster directory unavailable: {failure.getErrorMessage()}")

    d = cluster_streams(call.views.server).addCallback(lambda rows: {"streams": rows})
    return d.addErrback(unavailable)


def _relay_actions(call: Call) -> RelayActions:
    return RelayActions(call.views.server, call.actions.user, front="API")


def _rule(call: Call) -> int:
    try:
        return int(call.params["rule"])
    except ValueError:
        raise NotFound(f"no push rule {call.params['rule']!r}") from None


def _push_add(call: Call) -> dict[str, Any]:
    pattern, url = call.body.get("pattern"), call.body.get("url")
    if not isinstance(pattern, str) or not isinstance(url, str):
        raise AdminError('a push rule needs "pattern" and "url" strings')
    return _done(_relay_actions(call).add_push(pattern, url))


def _push_remove(call: Call) -> dict[str, Any]:
    return _done(_relay_actions(call).remove_push(_rule(call)))


def _push_restart(call: Call) -> dict[str, Any]:
    return _done(_relay_actions(call).restart_push(_rule(call)))


def _route(method: str, path: str, handler: Callable[[Call], Any], fields: tuple[str, ...] = ()) -> Route:
    pattern = tuple(path.split("/")) if path else ()
    return Route(method, pattern, handler, mutation=method != "GET", fields=frozenset(fields))


_STREAM = "streams/{app}/{name+}"

#: Every route of /api/v1/, in matching order.
ROUTES = [
    _route("GET", "", _index),
    _route("GET", "streams", _streams),
    _route("POST", f"{_STREAM}/kick", _kick, ("reason",)),
    _route("POST", f"{_STREAM}/record/start", _record_start),
    _route("POST", f"{_STREAM}/record/stop", _record_stop),
    _route("GET", _STREAM, _stream),
    _route("GET", "connections", _connections),
    _route("POST", "connections/{conn_id}/drop", _drop, ("reason",)),
    _route("GET", "server", _server),
    _route("POST", "auth/reload", _auth_reload),
    _route("GET", "relays", _relays),
    _route("GET", "cluster", _cluster),
    _route("GET", "cluster/streams", _cluster_streams),
    _route("POST", "relays/push", _push_add, ("pattern", "url")),
    _route("POST", "relays/push/{rule}/remove", _push_remove),
    _route("POST", "relays/push/{rule}/restart", _push_restart),
]
