"""Fuzz command and data message decoding as the session does it (types 20, 17, 18, 15).

``decode_command`` may raise only AMFDecodeError or MalformedCommand; the
data-message normaliser only AMFDecodeError, and its metadata has only
``str`` keys (so sorting them cannot fail). Client strings are rendered for
a log line within the budgets.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import atheris  # noqa: E402

from fuzz._harness import run  # noqa: E402

with atheris.instrument_imports():
    from rtmpd.core.commands import decode_command
    from rtmpd.core.datamessages import data_event
    from rtmpd.core.errors import AMFDecodeError, MalformedCommand
    from rtmpd.core.events import MetadataReceived
    from rtmpd.core.messages import Message
    from rtmpd.core.text import client_text

_TYPES = (20, 17, 18, 15)
_AMF = {"max_depth": 64, "max_nodes": 100_000, "max_bytes": 8 * 1024 * 1024}


def target(data: bytes) -> None:
    if not data:
        return
    type_id = _TYPES[data[0] & 3]
    message = Message(type_id, 0, 1, data[1:])
    if type_id in (20, 17):
        command = decode_command(message)
        assert len(command.name) <= 256
        for value in (command.name, command.command_object, *command.args):
            assert len(client_text(value)) < 1200
        return
    event = data_event(message, _AMF)
    if isinstance(event, MetadataReceived):
        sorted(event.values)


if __name__ == "__main__":
    run(target, (AMFDecodeError, MalformedCommand))
