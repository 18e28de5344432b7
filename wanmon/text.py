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
import unicodedata

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


# -- search text without accents -------------------------------------------------
#
# Most staff type on phones without Vietnamese accents: "gia binh" must find "Gia Bình".
# fold() is the one rule; the page writes each site's folded text into its row
# (data-search) and its script folds what is typed with the same rule, built from
# FOLD_SPACES and FOLD_MAP below (tests/test_page_browser.py compares the two).
# The rule: lower case; canonical decomposition (NFD); every combining mark (Unicode
# category M: tones, circumflex, breve, horn) dropped; đ -> d (a letter of its own,
# not a d with a mark); each run of white space (Python's str.isspace, listed in
# FOLD_SPACES) -> one space; none at either end.

# Python's white space (str.isspace) as a regex class, for the page's script (JS's \s differs)
FOLD_SPACES = r"\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
FOLD_MAP = {"đ": "d"}  # after lower case (Đ -> đ)


class _FoldTable(dict):
    """str.translate's table, filled one code point at a time as text meets it (listing all
    of Unicode's marks would cost ~0.3 s at every start of `wanmon check`)."""

    def __missing__(self, cp: int) -> str:
        c = chr(cp)
        out = "" if unicodedata.category(c)[0] == "M" else FOLD_MAP.get(c, c)
        self[cp] = out
        return out


_FOLD = _FoldTable()


def fold(text: str) -> str:
    """text as the page's filter compares it: "UBND xã Đại  Xuân" -> "ubnd xa dai xuan".
    About 3 µs for a Vietnamese name (30 ms for a 10,000-site page), less for ASCII."""
    s = text.lower()
    if not s.isascii():
        s = unicodedata.normalize("NFD", s).translate(_FOLD)
    return " ".join(s.split())
