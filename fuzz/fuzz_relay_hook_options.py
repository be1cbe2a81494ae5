"""Fuzz the option parsers of hooks and push/pull rules, which take text from the command line and the API.

The input's first byte picks what the rest (decoded as argv is, UTF-8 with
surrogate escapes) is given to:

- ``--hook-webhook`` / ``--hook-exec`` ``EVENTS=TARGET`` (``parse_hook``; a
  hook that parses must describe itself for a log line);
- a number option of hooks or relays (``--hook-retries``, ``--push-grace``, ...);
- ``--push PATTERN=URL``, then the push service's rule check (the API's
  ``POST relays/push`` calls the same ``PushService.add``) and the URL the rule
  gives for a few stream keys;
- ``--pull APP=URL``, then ``PullService.add``;
- an ``rtmp://`` URL alone (``RemoteURL.parse`` and what logs show of it).

Only the typed errors of each parser may escape: ``usage.UsageError`` from
options, ``HookConfigError`` from hooks, ``URLError`` from URLs and rules.
A URL a rule renders is short (a template cannot ask for padding).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import atheris  # noqa: E402

from fuzz._harness import run  # noqa: E402

with atheris.instrument_imports(include=["rtmpd"]):
    from rtmpd.hooks.options import HOOK_PARAMETERS, HookOptions
    from rtmpd.hooks.spec import HookConfigError, parse_hook
    from rtmpd.remote.options import REMOTE_PARAMETERS, RemoteOptions
    from rtmpd.remote.pull import PullService
    from rtmpd.remote.push import PushService
    from rtmpd.remote.urls import RemoteURL, URLError, matches, render

from twisted.internet.task import Clock  # noqa: E402
from twisted.python import usage  # noqa: E402

from rtmpd.config import ServerConfig  # noqa: E402
from rtmpd.relay.registry import StreamRegistry  # noqa: E402

_REGISTRY = StreamRegistry(ServerConfig(), lambda: 0.0)
_KEYS = ("live/test", "app/inst/some-key", "a/b")
_NUMBERS = [p[0] for p in HOOK_PARAMETERS + REMOTE_PARAMETERS if len(p) > 4]


class RelayHookOptions(HookOptions, RemoteOptions, usage.Options):
    """The hook and relay options as the tap's Options has them, without the rest."""

    optParameters = HOOK_PARAMETERS + REMOTE_PARAMETERS

    def __init__(self) -> None:
        super().__init__()
        self.init_hooks()
        self.init_remote()


def _parse(args: list[str]) -> RelayHookOptions:
    options = RelayHookOptions()
    options.parseOptions(args)
    return options


def _rendered(template: str) -> None:
    for key in _KEYS:
        try:
            url = render(template, key)
        except URLError:
            continue
        assert len(url.tc_url) + len(url.name) <= 2 * len(template) + 64, template[:100]


def _push(text: str) -> None:
    ((pattern, url),) = _parse(["--push", text])["push"]
    push = PushService(
        _REGISTRY,
        Clock(),
        lambda destination, rule: None,
        max_queue_bytes=1 << 20,
        stall_timeout=5.0,
        is_self=lambda remote: remote.port == 1935 and remote.host == "127.0.0.1",
    )
    push.add(pattern, url)
    for key in _KEYS:
        matches(pattern, key)
    _rendered(url)


def _pull(text: str) -> None:
    ((app, url),) = _parse(["--pull", text])["pull"]
    pull = PullService(
        _REGISTRY,
        Clock(),
        lambda upstream: None,
        is_self=lambda remote: remote.port == 1935 and remote.host == "127.0.0.1",
    )
    pull.add(app, url)
    _rendered(pull.rules()[app])


def _hook(kind: str, text: str) -> None:
    options = _parse([f"--hook-{kind}", text])
    (spec,) = options["hooks"]
    assert spec == parse_hook("webhook" if kind == "webhook" else "exec", text)
    assert isinstance(spec.describe(), str)


def _url(text: str) -> None:
    url = RemoteURL.parse(text)
    assert url.port is not None and 0 <= url.port <= 65535
    for shown in (url.tc_url, url.key, url.redacted()):
        assert isinstance(shown, str)


def target(data: bytes) -> None:
    if not data:
        return
    text = data[1:].decode("utf-8", "surrogateescape")
    choice = data[0] % 6
    if choice == 0:
        _hook("webhook", text)
    elif choice == 1:
        _hook("exec", text)
    elif choice == 2:
        _parse([f"--{_NUMBERS[data[0] // 6 % len(_NUMBERS)]}", text])
    elif choice == 3:
        _push(text)
    elif choice == 4:
        _pull(text)
    else:
        _url(text)


if __name__ == "__main__":
    run(target, (usage.UsageError, HookConfigError, URLError))
