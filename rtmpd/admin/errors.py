"""The errors of the operator's views and actions, shared by every front end (manhole, HTTP API).

A front end shows the message as is: it is one line for the operator, and
nothing was changed. ``NotFound`` lets an HTTP front end answer 404 rather
than 409.
"""

from __future__ import annotations

__all__ = ["AdminError", "NotFound"]


class AdminError(Exception):
    """A view or action was refused (nothing to kick, stop, ...); nothing changed."""


class NotFound(AdminError):
    """The stream or connection named does not exist; the message names the known ones where useful."""
