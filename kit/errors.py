"""The one base class of every mistake a user can fix: commands print its message, never a traceback."""
from __future__ import annotations


class KitError(Exception):
    """A user-fixable problem; the message names the file and line, column or key at fault."""
