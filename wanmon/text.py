"""Text from the config and from devices, made safe to show.

A site name, an SNMP sysName or sysDescr, an interface's name: all are data
from someone else, and a terminal takes some of their bytes as commands
(ESC]0;… sets the window title, ESC[31m colours the rest of the screen, ESC[2J
clears it). Everything wanmon shows on a terminal (status, inventory, --csv,
the logs) and on the page goes through printable(): each C0 control, DEL and
C1 control is written as a visible escape (\\x1b), so the reader sees what the
device sent and the terminal runs none of it.
"""

from __future__ import annotations

import re

_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROLS_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _visible(m: re.Match) -> str:
    return f"\\x{ord(m.group()):02x}"


def printable(value):
    """value with its control characters shown as \\xNN (non-strings are returned as they are)."""
    if isinstance(value, str) and _CONTROLS.search(value):
        return _CONTROLS.sub(_visible, value)
    return value


def printable_lines(text: str) -> str:
    """printable(), but newlines kept (a log record with its traceback)."""
    return _CONTROLS_BUT_NEWLINE.sub(_visible, text) if _CONTROLS_BUT_NEWLINE.search(text) else text
