"""The manhole: a Python prompt inside the running server, over SSH (``twisted.conch``).

This module owns the SSH side: ``manhole_factory`` builds the SSH factory
that ``rtmpd.tap`` serves on ``--manhole ENDPOINT``. An operator who logs in
(a key from ``--manhole-keys`` or a password from ``--manhole-passwd``, see
``rtmpd.admin.auth``) gets a colourised interactive interpreter whose
namespace (``rtmpd.admin.namespace``) holds the server's live objects and the
views and actions acting in that operator's name.

It is full code execution in the server: ``manhole_endpoint`` binds the
endpoint to loopback unless it names an interface (and a ``unix:`` socket
is private), the manhole refuses to start without a credential source, and
``rtmpd.admin.door`` keeps strangers' connections short and few.

What the stock ``manhole_ssh`` pieces get wrong, and this module does instead:
EOF from a piped client and window-size changes are handled (the stock session
raises NotImplementedError for both); host keys belong to this factory only
(the stock ``ConchFactory`` keeps them in class-level dicts); the session ends
with an exit status so ``ssh`` exits 0; ``exit()`` ends the session, never the
server (the builtin closes the server's stdin and raises SystemExit); ``help``
is rtmpd's (the builtin reads the server's stdin); ``exec`` requests are
refused with a message instead of an error in the server log; a client's
ordinary disconnect message is not logged as an error.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from twisted.conch import avatar, manhole
from twisted.conch.checkers import SSHPublicKeyChecker
from twisted.conch.insults import insults
from twisted.conch.interfaces import IConchUser, ISession
from twisted.conch.manhole_ssh import ConchFactory
from twisted.conch.ssh import session
from twisted.cred.portal import IRealm, Portal
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from zope.interface import implementer

import rtmpd
from rtmpd.admin.auth import (
    AuthorizedKeys,
    HostKeyFile,
    ManholeError,
    ManholeUserAuth,
    PasswordFile,
    ThrottledPortal,
)
from rtmpd.admin.door import ManholeDoor, ManholeTransport, address_text, loopback_default, manhole_endpoint
from rtmpd.admin.errors import AdminError
from rtmpd.admin.manhole_options import ManholeLimits

__all__ = ["ManholeError", "ManholeLimits", "loopback_default", "manhole_endpoint", "manhole_factory"]

#: The terminal size assumed when the client asks for no pty (``ssh host`` with piped input and no -t).
_DEFAULT_SIZE = (80, 24)


# -- the interpreter ------------------------------------------------------------


class _Interpreter(manhole.ManholeInterpreter):
    """The stock interpreter, except that SystemExit ends the session instead of escaping into Twisted,
    and a helper's refusal (AdminError) shows as one line rather than a traceback."""

    exited = False

    def runcode(self, *args, **kwargs) -> None:
        try:
            super().runcode(*args, **kwargs)
        except SystemExit:
            self.exited = True

    def excepthook(self, excType, excValue, excTraceback) -> None:
        if isinstance(excValue, AdminError):
            self.write(f"AdminError: {excValue}\n")
        else:
            super().excepthook(excType, excValue, excTraceback)


class _Quitter:
    """``exit``/``quit`` for the session: the builtins close the server's own stdin first."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Use {self.name}() or Ctrl-D to end the session."

    def __call__(self, code: object = None) -> None:
        raise SystemExit(code)


class ManholeShell(manhole.ColoredManhole):
    """The line editor and interpreter one operator talks to; every command they run is logged."""

    log = Logger()

    def __init__(
        self, namespace: dict[str, Any], user: str, peer: str, size: tuple[int, int] = _DEFAULT_SIZE
    ) -> None:
        super().__init__(namespace)
        self.user = user
        self.peer = peer
        self.width, self.height = size
        #: True once the operator ended the session: what they typed after that is not run.
        self.ended = False
        self.namespace["exit"] = _Quitter("exit")
        self.namespace["quit"] = _Quitter("quit")

    def connectionMade(self) -> None:
        super().connectionMade()
        self.interpreter = _Interpreter(self, self.namespace)

    def initializeScreen(self) -> None:
        # No terminal reset first (the stock editor's): it would clear the operator's screen.
        self.terminal.write(f"rtmpd {rtmpd.__version__} manhole: help() lists what is here.\n".encode())
        self.terminal.write(self.ps[self.pn])
        self.setInsertMode()

    def terminalSize(self, width: int, height: int) -> None:
        # The stock line editor erases the screen on every resize, taking the
        # operator's output with it; nothing here depends on the size.
        self.width, self.height = width, height

    def keystrokeReceived(self, keyID, modifier) -> None:
        if not self.ended:
            super().keystrokeReceived(keyID, modifier)

    def lineReceived(self, line: bytes) -> None:
        if line.strip():
            self.log.info(
                "Manhole input", user=self.user, peer=self.peer, source=line.decode("utf-8", "replace")
            )
        super().lineReceived(line)
        if self.interpreter.exited:
            self.handle_QUIT()

    def handle_QUIT(self) -> None:
        """End the session: exit(), Ctrl-D on an empty line, Ctrl-\\, or the end of piped input."""
        if self.ended:
            return
        self.ended = True
        # The stock quit sends a full terminal reset, which clears the operator's
        # screen; undoing the one mode this editor set is enough.
        self.terminal.resetModes([insults.modes.IRM])
        self.terminal.nextLine()
        self.terminal.transport.loseConnection()


# -- SSH session ------------------------------------------------------------------


class _Pipe:
    """A write end and a close hook: the glue between the SSH channel and the terminal protocol."""

    def __init__(self, write: Callable[[bytes], None], lose: Callable[[], None]) -> None:
        self._write = write
        self._lose = lose

    def write(self, data: bytes) -> None:
        self._write(data)

    def writeSequence(self, seq) -> None:
        self._write(b"".join(seq))

    def loseConnection(self) -> None:
        self._lose()


@implementer(ISession)
class ManholeSession:
    """One SSH session channel of an operator: a shell on the manhole, nothing else."""

    log = Logger()

    def __init__(self, user: ManholeUser) -> None:
        self.user = user
        self.width, self.height = _DEFAULT_SIZE
        self._proto = None
        self._terminal: insults.ServerProtocol | None = None
        self._ended = False

    @property
    def shell(self) -> ManholeShell | None:
        """The operator's shell while the session has one."""
        terminal = self._terminal
        return terminal.terminalProtocol if terminal is not None else None

    def getPty(self, term: bytes, windowSize, modes) -> None:
        self._resize(windowSize)

    def _resize(self, window_size) -> None:
        # ssh -tt with piped input asks for a 0x0 pty.
        rows, cols = window_size[:2]
        self.width, self.height = cols or _DEFAULT_SIZE[0], rows or _DEFAULT_SIZE[1]

    def openShell(self, proto) -> None:
        self._proto = proto
        user = self.user
        terminal = self._terminal = insults.ServerProtocol(
            ManholeShell, user.namespace_factory(user.name), user.name, user.peer, (self.width, self.height)
        )
        # The terminal first: whatever the client sent before the shell opened is
        # handed to it as soon as the channel side connects.
        terminal.makeConnection(_Pipe(self._to_client, self._end))
        # The channel's "lose connection" needs no answer: closed() follows it.
        proto.makeConnection(_Pipe(self._from_client, lambda: None))
        self.log.info("Manhole session opened", user=user.name, peer=user.peer)

    def execCommand(self, proto, command: bytes) -> None:
        proto.makeConnection(_Pipe(lambda data: None, lambda: None))
        proto.write(b"rtmpd manhole: commands are not run on their own; open a session (ssh -t ...)\r\n")
        self.log.info(
            "Manhole exec refused",
            user=self.user.name,
            peer=self.user.peer,
            command=command.decode("utf-8", "replace"),
        )
        self._proto = proto
        self._end(status=1)

    def windowChanged(self, newWindowSize) -> None:
        self._resize(newWindowSize)
        if self.shell is not None:
            self.shell.terminalSize(self.width, self.height)

    def eofReceived(self) -> None:
        # A piped client has no more input: the session is over once its output is out.
        if self.shell is not None:
            self.shell.handle_QUIT()
        elif self._proto is not None:
            self._end()

    def _end(self, status: int = 0) -> None:
        """Send the exit status, then close the channel (after what is buffered has been sent)."""
        if self._ended or self._proto is None:
            return
        self._ended = True
        channel = self._proto.session
        channel.conn.sendRequest(channel, b"exit-status", struct.pack(">L", status))
        channel.loseConnection()

    def _from_client(self, data: bytes) -> None:
        if self._terminal is not None:
            self._terminal.dataReceived(data)

    def _to_client(self, data: bytes) -> None:
        # A Deferred shown at the prompt may fire after the session has closed.
        if self._terminal is not None and self._proto is not None:
            self._proto.write(data)

    def closed(self) -> None:
        # Only now, not when the close was asked for: the terminal may still be
        # in the middle of handing out the keystrokes that asked for it.
        terminal, self._terminal = self._terminal, None
        if terminal is not None:
            terminal.connectionLost(connectionDone)
        if self._proto is not None:
            self.log.info("Manhole session closed", user=self.user.name, peer=self.user.peer)


class ManholeUser(avatar.ConchUser):
    """A logged-in operator: a name, where they come from, and sessions on the manhole."""

    log = Logger()

    def __init__(self, name: str, peer: str, namespace_factory: Callable[[str], dict[str, Any]]) -> None:
        super().__init__()
        self.name = name
        self.peer = peer
        self.namespace_factory = namespace_factory
        self.channelLookup[b"session"] = session.SSHSession

    def __conform__(self, interface):
        # One ManholeSession per SSH session channel (SSHSession adapts its avatar once).
        if interface is ISession:
            return ManholeSession(self)
        return None

    def logout(self) -> None:
        self.log.info("Manhole logout", user=self.name, peer=self.peer)


@implementer(IRealm)
class ManholeRealm:
    """Makes a ``ManholeUser`` of every authenticated operator; ``mind`` is their peer address."""

    def __init__(self, namespace_factory: Callable[[str], dict[str, Any]]) -> None:
        self.namespace_factory = namespace_factory

    def requestAvatar(self, avatarId: bytes, mind: Any, *interfaces):
        if IConchUser not in interfaces:
            raise NotImplementedError("the manhole only serves SSH users")
        name = avatarId.decode("utf-8", "replace")
        user = ManholeUser(name, mind if isinstance(mind, str) else "", self.namespace_factory)
        return IConchUser, user, user.logout


# -- the SSH factory ------------------------------------------------------------


class ManholeFactory(ConchFactory):
    """The SSH factory of one manhole: its own host key, audited logins, its ``door`` against strangers
    (``rtmpd.admin.door``: connections refused at once, the grace time of each connection)."""

    protocol = ManholeTransport

    def __init__(self, portal: Portal, host_key, door: ManholeDoor | None = None) -> None:
        super().__init__(portal)
        # ConchFactory's key dicts are class attributes: two factories would share (and overwrite) them.
        self.publicKeys = {host_key.sshType(): host_key.public()}
        self.privateKeys = {host_key.sshType(): host_key}
        self.services = {**self.services, b"ssh-userauth": ManholeUserAuth}
        self.door = door if door is not None else ManholeDoor()

    def buildProtocol(self, addr):
        if not self.door.admits(addr):
            return None
        ssh = super().buildProtocol(addr)
        ssh.door = self.door
        ssh.address = address_text(addr)[1]
        return ssh


def manhole_factory(
    namespace_factory: Callable[[str], dict[str, Any]],
    *,
    keys_file: str | None = None,
    passwd_file: str | None = None,
    host_key_file: str = "rtmpd_host_key",
    limits: ManholeLimits | None = None,
    clock: IReactorTime | None = None,
) -> ManholeFactory:
    """The manhole's SSH factory: operators who log in with a key of ``keys_file`` or a password of
    ``passwd_file`` get a shell on ``namespace_factory(user name)``; ``limits`` bound what strangers may do.

    Raises ManholeError (one line) when there is no usable credential source
    (neither file given, a file unreadable, malformed or empty) or the host key
    can be neither read nor created.
    """
    if not keys_file and not passwd_file:
        raise ManholeError("--manhole needs --manhole-keys or --manhole-passwd (it is a Python shell)")
    checkers = []
    if keys_file:
        keys = AuthorizedKeys(keys_file)
        keys.check()
        checkers.append(SSHPublicKeyChecker(keys))
    if passwd_file:
        passwords = PasswordFile(passwd_file)
        passwords.check()
        checkers.append(passwords)
    host_key = HostKeyFile(host_key_file).load()
    door = ManholeDoor(limits, clock)
    portal = ThrottledPortal(ManholeRealm(namespace_factory), checkers, door.throttle)
    return ManholeFactory(portal, host_key, door)
