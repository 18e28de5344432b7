"""Vietnamese alphabetical order: the one sort key for lists of names (mails, page, reports).

Vietnamese orders its letters a ă â b c d đ e ê g h i k l m n o ô ơ p q r s t u ư v x y,
tones after the base letter. Python's `sorted` on str puts Đ after every Latin letter and Ă,
Â after Z; `locale.strxfrm` depends on the locales the machine happens to have. ICU's
collator for "vi" (CLDR's tailoring, PyICU) knows the order and is kept up to date with
Unicode, so it is used here rather than a table of our own.

Site names are Vietnamese whatever the UI language, so the order is Vietnamese in an
English mail too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


@functools.cache
def _collator():
    import icu  # PyICU: imported on first use (a cycle that sends no mail never needs it)

    return icu.Collator.createInstance(icu.Locale("vi"))


def sort_key(text: str) -> bytes:
    """The key that sorts `text` in Vietnamese alphabetical order (ICU's "vi" collation)."""
    return bytes(_collator().getSortKey(text))


def in_order(items: Iterable[T], name: Callable[[T], str] = str) -> list[T]:
    """items sorted by name(item) in Vietnamese order; equal names keep their order."""
    return sorted(items, key=lambda item: sort_key(name(item)))
