"""Typed errors of access control: refusals sent to a client, and configuration files that do not parse.

A refusal is an ``AccessDenied``, a ``CommandError`` of the core: the
server's command dispatcher already answers a ``CommandError`` with its
``status_code`` and ``description`` and closes the connection when it is
``fatal``, so a responder that lets an ``AccessDenied`` propagate needs no
other code. Each action has its own subclass, with the status code clients
act on:

- connect: ``_error NetConnection.Connect.Rejected``
- publish: ``onStatus NetStream.Publish.BadName`` (OBS's librtmp closes on it
  and shows the description; ``NetStream.Publish.Unauthorized`` is not a code
  librtmp knows, so OBS would keep waiting)
- play: ``onStatus NetStream.Play.Failed``

The description a client sees is built from a short public reason only
("invalid signature"): never a secret, a key, the callback's address or its
error. What an operator needs beyond that travels in ``detail``, which is
logged and never sent.

A configuration file error (``ConfigFileError``) names the file and the line
but never quotes the line: it may hold a secret.
"""

from __future__ import annotations

from rtmpd.core.errors import CommandError

__all__ = [
    "AccessDenied",
    "CallbackConfigError",
    "ConfigFileError",
    "ConnectDenied",
    "KeyFileError",
    "PlayDenied",
    "PublishDenied",
    "RuleError",
    "SecretsFileError",
]

#: A description longer than this is cut: ffmpeg keeps 255 bytes of it, and a log line stays one line.
MAX_DESCRIPTION = 200

#: Substrings that make a client start an authentication dance instead of showing the refusal (ffmpeg and
#: OBS's librtmp look for them in a connect ``_error`` description): never sent.
_CLIENT_AUTH_TRIGGERS = ("authmod=", "code=403", "?reason=")


class AccessDenied(CommandError):
    """A client was refused an action. Raised by ``AccessPolicy``; answered and the connection closed.

    ``action`` is ``"connect"``, ``"publish"`` or ``"play"``; ``reason`` is the
    public reason (it becomes the description); ``authoriser`` names who
    refused; ``detail`` is for the log only.
    """

    action = ""
    fatal = True

    def __init__(self, reason: str, *, authoriser: str = "", detail: str = "") -> None:
        self.reason = reason
        self.authoriser = authoriser
        self.detail = detail
        super().__init__(_description(self.action, reason))

    @staticmethod
    def for_action(action: str, reason: str, *, authoriser: str = "", detail: str = "") -> AccessDenied:
        """The refusal of ``action`` (connect, publish or play). Raises KeyError for another action."""
        cls = _BY_ACTION[str(action)]
        return cls(reason, authoriser=authoriser, detail=detail)


class ConnectDenied(AccessDenied):
    """``connect`` refused: ``_error NetConnection.Connect.Rejected``, then the connection closes."""

    action = "connect"
    status_code = "NetConnection.Connect.Rejected"


class PublishDenied(AccessDenied):
    """``publish`` refused: ``onStatus NetStream.Publish.BadName``, then the connection closes."""

    action = "publish"
    status_code = "NetStream.Publish.BadName"


class PlayDenied(AccessDenied):
    """``play`` refused: ``onStatus NetStream.Play.Failed``, then the connection closes."""

    action = "play"
    status_code = "NetStream.Play.Failed"


_BY_ACTION: dict[str, type[AccessDenied]] = {
    "connect": ConnectDenied,
    "publish": PublishDenied,
    "play": PlayDenied,
}


def _description(action: str, reason: str) -> str:
    text = f"{action.capitalize()} refused: {reason}" if action else reason
    text = "".join(c if c.isprintable() else " " for c in text)
    for trigger in _CLIENT_AUTH_TRIGGERS:
        text = text.replace(trigger, trigger.replace("=", " "))
    if len(text) > MAX_DESCRIPTION:
        text = text[: MAX_DESCRIPTION - 3] + "..."
    return text


class ConfigFileError(ValueError):
    """A configuration file (secrets, keys) could not be read or parsed.

    ``path`` and ``line`` (1-based; 0 when the whole file is at fault) say
    where; the message never contains the line's text.
    """

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")


class SecretsFileError(ConfigFileError):
    """The signed-URL secrets file is unreadable or has a bad line."""


class KeyFileError(ConfigFileError):
    """The stream key file is unreadable or has a bad line."""


class RuleError(ValueError):
    """An address rule (``ACTION:CIDR``) that does not parse."""


class CallbackConfigError(ValueError):
    """An HTTP callback setting that cannot work (a URL that is not http(s), a negative timeout...)."""
