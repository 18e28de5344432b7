"""Outputs: everything a cycle feeds once its observations are recorded.

A cycle ends when its record commits (samples, status runs, alert state, outbox, spool:
one transaction). The page, the InfluxDB drain, mail delivery, the heartbeat URL and
the page from InfluxDB are *outputs*: each runs through `attempt()`, which gives it its
own error handling and health, so one that fails (a folder that cannot be written, a
bad point read back from InfluxDB, a relay that rejects the login) is logged and
recorded and never stops the others. Each output bounds its own time (its budget is
enforced inside it: wanmon.deadline for the network).

A run with nothing to do (`idle`: mail with nothing due) changes no health: only a
delivery that worked clears a failing mail output.

Health lives in the store's meta table (`output.<name>`, JSON): when it last worked,
since when it fails, how many runs in a row, the last error. `wanmon status` and the
page show failing outputs; after NOTICE_AFTER failures in a row the NOC ([alerts] noc)
gets one mail through the outbox (not for the mail output itself: that mail could not
leave), and one more when it works again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

logger = logging.getLogger(__name__)

NOTICE_AFTER = 3  # failures in a row before the NOC is told (one cron minute each, by default)
PREFIX = "output."


@dataclass
class Health:
    ok_ts: float | None = None  # the last run that worked
    failing_since: float | None = None  # the first failure of the current stretch (None: working)
    failures: int = 0  # in a row
    error: str | None = None  # the last failure's reason
    told_ts: float | None = None  # the NOC was mailed about this stretch

    @property
    def failing(self) -> bool:
        return self.failing_since is not None


def health(store) -> dict[str, Health]:
    """{output name: Health} as recorded."""
    out = {}
    for key, value in store.meta_prefixed(PREFIX).items():
        try:
            out[key[len(PREFIX) :]] = Health(**json.loads(value))
        except (TypeError, ValueError):
            continue  # written by another version: ignored, rewritten at the next run
    return out


def failure_of(report: Any) -> str | None:
    """An output's reports (sink.DrainReport, mailer.DeliveryReport) say why a run stopped in `error`."""
    return getattr(report, "error", None)


def attempt(
    store, cfg, name: str, fn: Callable[..., Any], *args: Any, now: Callable[[], float] = time.time, **kw: Any
) -> tuple[Any, str | None]:
    """Run one output: (its result, None) or (None, why it failed). Never raises for an
    ordinary failure (only KeyboardInterrupt/SystemExit pass); records the output's health."""
    from wanmon.errors import describe

    try:
        value = fn(*args, **kw)
        error = failure_of(value)
    except Exception as exc:
        value, error = None, describe(exc)
        logger.debug("output=%s failed", name, exc_info=True)
    if error is None and getattr(value, "idle", False):
        return value, None  # nothing to do (mail: nothing due): neither a success nor a failure
    if error is not None:
        logger.error("output=%s failed: %s", name, error)
    try:
        note(store, cfg, name, error, now())
    except Exception:
        logger.warning("output=%s: its health could not be recorded", name, exc_info=True)
    return value, error


def note(store, cfg, name: str, error: str | None, t: float) -> Health:
    """Record one run of an output; tell the NOC once when it keeps failing, once when it is back."""
    h = health(store).get(name, Health())
    mails = []
    if error is None:
        if h.told_ts is not None:
            mails = _notice(cfg, name, h, t, back=True)
        h = Health(ok_ts=t)
    else:
        h.failing_since = h.failing_since if h.failing else t
        h.failures += 1
        h.error = error[:500]
        if h.failures >= NOTICE_AFTER and h.told_ts is None and name != "mail":
            mails = _notice(cfg, name, h, t, back=False)
            h.told_ts = t if mails else None
    store.note_output(PREFIX + name, json.dumps(asdict(h)), mails)
    return h


def _notice(cfg, name: str, h: Health, t: float, back: bool) -> list:
    if cfg is None or not cfg.alerts.noc:
        return []
    from wanmon.alerts.mail import output_mails

    return output_mails(cfg, name, h, t, back)


def failing(store) -> dict[str, Health]:
    """The outputs failing now."""
    return {k: h for k, h in health(store).items() if h.failing}
