"""Load and validate sites.toml once, at the edge.

Every problem is collected (not just the first) and reported with its place:
`file:line` where it can be found, plus the site id and the key.  A config
that has any problem raises `ConfigError`; callers exit with status 2 and
write nothing.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from wanmon.dated import AFTER, BEFORE, CHANGEABLE, Epoch, Span, Timeline, apply, spans
from wanmon.errors import ConfigError
from wanmon.files import make_folder, replacing

DEFAULT_CONFIG = "sites.toml"
LEVELS = ("province", "district", "commune")

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def valid_id(text: str) -> bool:
    """A site id as sites.toml allows it: lowercase letters, digits and '-', at most 63."""
    return bool(_SLUG.match(text))


_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)


class _Strict(BaseModel):
    # allow_inf_nan=False: TOML has inf and nan, and no setting means either (a timeout of inf
    # crashed the sweep; an interval of inf ended as `Infinity` in JSON). Subclasses' model_config
    # merges with this one, so every table refuses them.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


_WEEK_S = 7 * 86400


def _range(default: Any, lo: float, hi: float, *, above: bool = False) -> Any:
    """A numeric setting allowed from lo (or above lo, when lo itself means nothing) to hi.
    Every number has both bounds: without an upper one, `interval_ms = 1e9` passed `validate`
    and the next check waited for ever holding the cycle lock. _describe names the range."""
    if above:
        return Field(default, gt=lo, le=hi)
    return Field(default, ge=lo, le=hi)


class StoreSettings(_Strict):
    path: str = "var/wanmon.db"
    retention_raw_days: int = _range(35, 1, 3650)
    retention_rollup_days: int = _range(400, 1, 3650)


class IcmpSettings(_Strict):
    count: int = _range(3, 1, 1000)
    interval_ms: float = _range(200.0, 1, 60000)
    timeout_ms: float = _range(1000.0, 1, 60000)
    rate_pps: float = _range(1000.0, 1, 1_000_000)
    payload_bytes: int = _range(56, 16, 1400)
    mode: Literal["auto", "raw", "unprivileged"] = "auto"
    # Whole-lookup deadline for a site's host name; past it the site uses its last good
    # address (wanmon.dns), or is down with "DNS timeout". Literal addresses never wait.
    dns_timeout_ms: float = _range(1000.0, 1, 60000)


class TraceSettings(_Strict):
    """[trace]: tracing the path to a site (wanmon.trace; `wanmon probe`, `wanmon topology`)."""

    max_hops: int = _range(16, 1, 64)
    attempts: int = _range(3, 1, 10)  # probes at one distance before it counts as silent (rate limits drop some)
    timeout_ms: float = _range(1000.0, 1, 60000)  # one probe's wait for its answer
    gap_ms: float = _range(20.0, 0, 10000)  # between two probes of one trace (routers rate-limit their answers)
    budget_s: float = _range(10.0, 0, 600, above=True)  # one whole trace, enforced while it runs
    # the agent's own traces, after a cycle's page (wanmon.cycle.run_traces)
    on_outage: bool = True  # trace a site that goes down on its own (not one behind a down parent)
    refresh_h: float = _range(24.0, 0, 8760)  # a site's good path traced again after this (0: never)
    per_cycle: int = _range(8, 1, 1000)  # traces a cycle starts at most (outages first)


class HopEntry(_Strict):
    """[[hops]]: an address seen on traced paths that is not a site's own address: the carrier's
    equipment, or another interface of a site's router (`site`)."""

    address: str
    name: str = Field(min_length=1)
    site: str | None = None  # the site this equipment belongs to (a router answering from another interface)


class Thresholds(_Strict):
    degraded_loss_pct: float = _range(10.0, 0, 100, above=True)
    degraded_rtt_ms: float = _range(300.0, 1, 60000)


SNMP_AUTH = ("none", "MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512")
SNMP_PRIV = ("none", "DES", "AES", "AES192", "AES256")
_SECRET_KEYS = ("community", "auth_key", "priv_key")


class Secret:
    """A secret value that never shows itself in repr, str, logs or JSON."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SnmpSettings(_Strict):
    """[snmp]: defaults for every site; a site's own `snmp` table overrides any key."""

    enabled: bool = True
    version: Literal["1", "2c", "3"] = "2c"
    port: int = _range(161, 1, 65535)
    timeout_ms: float = _range(1000.0, 1, 60000)
    retries: int = _range(1, 0, 10)
    interval_s: float = _range(300.0, 0, _WEEK_S)
    max_concurrency: int = _range(256, 1, 4096)
    budget_s: float = _range(30.0, 1, 3600)  # one whole poll at most; agents not reached come first next time
    max_backoff_s: float = _range(3600.0, 0, _WEEK_S)  # an agent that keeps timing out is polled at most this rarely
    community_env: str | None = None
    community_file: str | None = None
    user: str | None = None
    auth_protocol: Literal["none", "MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"] = "SHA"
    auth_key_env: str | None = None
    auth_key_file: str | None = None
    priv_protocol: Literal["none", "DES", "AES", "AES192", "AES256"] = "AES"
    priv_key_env: str | None = None
    priv_key_file: str | None = None


def _name_only(value: Any) -> Any:
    """A level given as a string is its name alone: `vi.commune = "Điểm cầu"`."""
    return {"name": value} if isinstance(value, str) else value


class LevelNameSetting(_Strict):
    """One level's words in one language ([page.level_names]): the keys not given keep the
    words valid before (wanmon.words.LEVEL_NAMES, then earlier changes)."""

    name: str | None = Field(None, min_length=1)  # the level: the page's level summary, a site's note
    noun: str | None = Field(None, min_length=1)  # one of its units: "1 điểm cầu", the filter's hint
    nouns: str | None = Field(None, min_length=1)  # several (English plural; Vietnamese: noun)
    heading: str | None = Field(None, min_length=1)  # what heads a list of its units (section, column)

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


LevelNameEntry = Annotated[LevelNameSetting, BeforeValidator(_name_only)]


class LevelNamesByLevel(_Strict):
    """One language's words, by level key (the keys of the file never change)."""

    province: LevelNameEntry | None = None
    district: LevelNameEntry | None = None
    commune: LevelNameEntry | None = None

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class LevelNamesChange(_Strict):
    """One [[page.level_names.changes]]: from `at` on, the words it gives hold."""

    at: Instant
    vi: LevelNamesByLevel | None = None
    en: LevelNamesByLevel | None = None

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class LevelNamesSettings(_Strict):
    """[page.level_names]: the shown names of the three levels, by language, optionally dated
    (wanmon.words.level_names reads them)."""

    vi: LevelNamesByLevel | None = None
    en: LevelNamesByLevel | None = None
    changes: tuple[LevelNamesChange, ...] = ()

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class PageSettings(_Strict):
    """[page]: the static status page."""

    out_dir: str = "public"
    language: Literal["vi", "en"] = "vi"
    timezone: str = "Asia/Ho_Chi_Minh"
    province: str = "Bắc Ninh"
    refresh_s: int = _range(60, 1, 86400)
    templates_dir: str | None = None
    url: str | None = None  # where the IT staff open the page: alert mails link it (no link without it)
    source: Literal["store", "influxdb"] = "store"  # `wanmon render` (and the daemon's page) from InfluxDB
    influx_budget_s: float = _range(60.0, 1, 3600)  # all the queries of a page from InfluxDB, together
    # validated apart (parse: _level_names), for the lines of its changes
    level_names: LevelNamesSettings = Field(default_factory=LevelNamesSettings)


class ScheduleSettings(_Strict):
    """[schedule]: the daemon (`wanmon run`)."""

    icmp_interval_s: float = _range(60.0, 1, 86400)
    snmp_interval_s: float | None = _range(None, 0, _WEEK_S)  # alias of [snmp] interval_s when given
    grace_s: float = _range(30.0, 0, 3600)


class AgentSettings(_Strict):
    """[agent]: this agent among several writing to one InfluxDB (README, 'Several agents')."""

    id: str = Field(
        default_factory=lambda: __import__("socket").gethostname() or "wanmon",
        min_length=1,
        max_length=64,
        pattern=r"^[^\x00-\x1f\x7f]+$",
    )
    role: Literal["primary", "standby"] = "primary"
    # a GET after each recorded cycle (wanmon.heartbeat): an Uptime Kuma push URL, a healthchecks.io ping URL
    heartbeat_url: str | None = None
    heartbeat_budget_s: float = _range(5.0, 0, 60, above=True)  # the whole request, enforced while it runs

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class ReportSettings(_Strict):
    """[report]: the availability reports (`wanmon report`)."""

    target_pct: float = _range(99.0, 0, 100)  # sites under it are flagged
    recipients: tuple[str, ...] = ()  # `wanmon report --email` and the daemon's monthly mail
    monthly: bool = True  # the daemon mails last month's report on the 1st (when recipients are set)

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


CONTACT_MAX = 300  # a contact is a line of a mail: a name, a phone number, an address


class AlertSettings(_Strict):
    """[alerts]: when and to whom notifications go."""

    enabled: bool = True
    confirm_cycles: int = _range(3, 1, 100)
    recover_cycles: int = _range(2, 1, 100)
    reminder_h: float = _range(4.0, 0, 8760)  # 0: no reminders
    flap_window: int = _range(21, 3, 100)
    flap_low_pct: float = _range(5.0, 0, 100)
    flap_high_pct: float = _range(20.0, 0, 100, above=True)
    notify_degraded: bool = True
    notify_unreachable: bool = True
    notify_reboot: bool = True
    noc: tuple[str, ...] = ()
    noc_gets_all: bool = True
    # The monitor-side guard (alerts.engine.evaluate): raised when the agent's own upstream,
    # guard_sites (default: the sites without a parent), does not answer: guard_fraction of
    # them (default all) down or unreachable, in a network of at least guard_min_sites sites.
    guard_sites: tuple[str, ...] | None = None
    guard_fraction: float = _range(1.0, 0, 1, above=True)
    guard_min_sites: int = _range(5, 1, 1_000_000)
    # Whom a site's administrators call (alert mails say it with what to do): the default for
    # every site; district_contacts: for the sites of a district (by its `district` name); a
    # site's own `contact` wins over both.
    contact: str | None = None
    district_contacts: dict[str, str] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class SmtpSettings(_Strict):
    """[smtp]: the mail relay for alert emails."""

    host: str
    port: int = _range(25, 1, 65535)
    from_: str = Field(alias="from")
    starttls: bool | None = (
        None  # true: always (fail if not offered); false: never; unset: when credentials are set and the relay offers it
    )
    ssl: bool = False
    allow_plaintext_auth: bool = (
        False  # DANGEROUS: send the SMTP password without TLS to a relay that is not on loopback
    )
    user_env: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    timeout_s: float = _range(
        10.0, 0, 600, above=True
    )  # deadline of connect+greeting+EHLO+TLS+AUTH, and of each message
    max_attempts: int = _range(8, 1, 1000)  # a mail still not accepted after this many attempts is 'failed'
    retry_s: float = _range(60.0, 0, 3600, above=True)  # wait after a failed attempt: doubles each time, at most 1 h

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class Maintenance(_Strict):
    """[[maintenance]]: notifications suppressed for these sites/districts during the window."""

    sites: tuple[str, ...] = ()
    districts: tuple[str, ...] = ()
    start: str | None = None  # one-off, ISO local time ("2026-12-01T22:00")
    end: str | None = None
    days: tuple[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], ...] = ()  # weekly
    from_: str | None = Field(None, alias="from")  # "22:00"
    to: str | None = None  # "02:00" (next day when earlier than from)
    reason: str = ""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True, populate_by_name=True)


class InfluxSettings(_Strict):
    """[influxdb]: the long-term sink. Absent = embedded store only."""

    url: str
    api: Literal["v2", "v1"] = "v2"
    org: str = "wanmon"
    bucket: str = "wanmon"
    token_env: str | None = None
    token_file: str | None = None
    database: str = "wanmon"
    retention_policy: str | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    timeout_ms: float = _range(5000.0, 1, 600_000)
    batch_size: int = _range(5000, 1, 1_000_000)
    spool_max_points: int = _range(1_000_000, 1, 1_000_000_000)
    spool_max_age_h: float = _range(168.0, 0, 87600, above=True)
    drain_budget_s: float = _range(10.0, 0, 3600)


@dataclass(frozen=True, slots=True)
class SmtpSpec:
    settings: SmtpSettings
    user: str | None
    password: Secret | None


@dataclass(frozen=True, slots=True)
class InfluxSpec:
    """[influxdb] with its secret resolved (never printed)."""

    settings: InfluxSettings
    secret: Secret | None  # v2 token, or v1 password


class SiteSnmp(_Strict):
    """A site's `snmp` table: any [snmp] key, plus `uplink`."""

    enabled: bool | None = None
    version: Literal["1", "2c", "3"] | None = None
    port: int | None = _range(None, 1, 65535)
    timeout_ms: float | None = _range(None, 1, 60000)
    retries: int | None = _range(None, 0, 10)
    interval_s: float | None = _range(None, 0, _WEEK_S)
    community_env: str | None = None
    community_file: str | None = None
    user: str | None = None
    auth_protocol: Literal["none", "MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"] | None = None
    auth_key_env: str | None = None
    auth_key_file: str | None = None
    priv_protocol: Literal["none", "DES", "AES", "AES192", "AES256"] | None = None
    priv_key_env: str | None = None
    priv_key_file: str | None = None
    uplink: str | int | None = None


@dataclass(frozen=True, slots=True)
class SnmpSpec:
    """One site's effective SNMP settings, secrets resolved (never printed)."""

    version: str
    port: int
    timeout_ms: float
    retries: int
    interval_s: float
    community: Secret | None = None
    user: str | None = None
    auth_protocol: str = "none"
    auth_key: Secret | None = None
    priv_protocol: str = "none"
    priv_key: Secret | None = None
    uplink: str | int | None = None

    @property
    def security_level(self) -> str:
        if self.version != "3":
            return "community"
        if self.auth_protocol == "none":
            return "noAuthNoPriv"
        return "authNoPriv" if self.priv_protocol == "none" else "authPriv"


def _offset_datetime(value: Any) -> Any:
    """An instant as TOML writes it with its UTC offset; anything else is refused with the fix."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    if isinstance(value, datetime):
        hint = f"{value.isoformat()}+07:00"
    elif isinstance(value, date):
        hint = f"{value.isoformat()}T00:00:00+07:00"
    else:
        hint = "2025-07-01T00:00:00+07:00"
    raise ValueError(f"must be a date-time with its UTC offset, unquoted, e.g. {hint}")


Instant = Annotated[datetime, BeforeValidator(_offset_datetime)]


class SiteChange(_Strict):
    """One [[sites.changes]] entry: from `at` on, the keys it gives hold (wanmon.dated)."""

    at: Instant
    name: str | None = Field(None, min_length=1)
    level: Literal["province", "district", "commune"] | None = None
    district: str | None = None
    parent: str | None = None
    address: str | None = Field(None, min_length=1)
    admins: tuple[str, ...] | None = None
    contact: str | None = None
    snmp: SiteSnmp | None = None
    unset: tuple[Literal["district", "parent", "contact", "snmp", "admins"], ...] = ()

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class Site(_Strict):
    id: str
    name: str = Field(min_length=1)
    level: Literal["province", "district", "commune"]
    district: str | None = None
    parent: str | None = None
    address: str = Field(min_length=1)
    admins: tuple[str, ...] = ()
    # whom its admins call (overrides [alerts] contact and district_contacts)
    contact: str | None = None
    snmp: SiteSnmp | None = None
    # the dated inventory (wanmon.dated): a service period, and the changes of its other keys
    in_service_from: Instant | None = None
    retired_at: Instant | None = None
    changes: tuple[SiteChange, ...] = ()  # validated one by one by parse(), for their lines

    # TOML arrays arrive as lists; accept them for the tuple in strict mode.
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


_SECTIONS: dict[str, type[_Strict]] = {
    "store": StoreSettings,
    "icmp": IcmpSettings,
    "thresholds": Thresholds,
    "snmp": SnmpSettings,
    "page": PageSettings,
    "schedule": ScheduleSettings,
    "alerts": AlertSettings,
    "report": ReportSettings,
    "agent": AgentSettings,
    "trace": TraceSettings,
}


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    store: StoreSettings
    icmp: IcmpSettings
    thresholds: Thresholds
    snmp: SnmpSettings
    page: PageSettings
    schedule: ScheduleSettings
    alerts: AlertSettings
    sites: tuple[Site, ...]
    report: ReportSettings = field(default_factory=ReportSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    snmp_specs: dict[str, SnmpSpec] = field(default_factory=dict)  # site id -> spec; absent = SNMP off
    influx: InfluxSpec | None = None
    smtp: SmtpSpec | None = None
    maintenance: tuple[Maintenance, ...] = ()
    trace: TraceSettings = field(default_factory=TraceSettings)
    hops: tuple[HopEntry, ...] = ()  # [[hops]]: names of addresses on the paths (wanmon.trace)
    warnings: tuple[str, ...] = ()  # not errors: `wanmon validate` prints them and exits 0
    # the inventory through time (wanmon.dated); `sites` above are the sites as first written
    timeline: Timeline = field(default_factory=lambda: Timeline(()))
    # SNMP settings of the states a change gives its own snmp table: (site id, snmp_key(state)) ->
    # spec, None = SNMP off then. Secrets are read and checked at load, like the sites' own.
    dated_snmp_specs: dict[tuple[str, str], SnmpSpec | None] = field(default_factory=dict, repr=False)
    # as_of's views, by the start of their stretch; a view knows the config it is a view of (its
    # own as_of asks that one). init=False: dataclasses.replace() makes a config of its own.
    _views: dict[float, Config] = field(default_factory=dict, init=False, repr=False, compare=False)
    _root: Config | None = field(default=None, init=False, repr=False, compare=False)

    def at(self, ts: float) -> Epoch:
        """The sites with the keys valid at ts (POSIX seconds), and those in service then."""
        return self.timeline.at(ts)

    def as_of(self, ts: float) -> Config:
        """This config as the agent uses it at ts: `sites` are the sites in service then, with
        their keys then (file order), and `snmp_specs` theirs. The same object for every ts of
        one stretch of the timeline; the config itself when nothing in it is dated. A view's
        as_of is its config's (the page re-views the cycle's view at its own instant)."""
        if not self.timeline.dated:
            return self
        root = self if self._root is None else self._root
        epoch = root.timeline.at(ts)
        view = root._views.get(epoch.start)
        if view is not None:
            return view
        specs: dict[str, SnmpSpec] = {}
        for s in epoch.active:
            base = root.timeline.base_by_id[s.id]
            spec = root.snmp_specs.get(s.id) if s.snmp == base.snmp else root.dated_snmp_specs.get((s.id, snmp_key(s)))
            if spec is not None:
                specs[s.id] = spec
        view = dataclasses.replace(root, sites=epoch.active, snmp_specs=specs)
        object.__setattr__(view, "_root", root)
        root._views[epoch.start] = view
        return view

    @property
    def run_cap_s(self) -> float:
        """The longest one cycle's status holds in the history (the report's accounting method)."""
        return 2 * self.schedule.icmp_interval_s

    @property
    def store_path(self) -> Path:
        """The store file; a relative path is relative to the config file's folder."""
        p = Path(self.store.path).expanduser()
        return p if p.is_absolute() else (self.path.parent / p)


# --------------------------------------------------------------------------
# Where things are in the file (tomllib gives no positions for keys).


@dataclass
class _Block:
    header: str
    line: int
    keys: dict[str, int] = field(default_factory=dict)


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
_PART = r"(?:[A-Za-z0-9_\-]+|\"[^\"]*\")"
_KEY = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")  # a key, or a dotted key: vi.commune = ...


def _key_names(key: str) -> list[str]:
    """A key as the locator records it: `vi . "commune"` -> ["vi", "vi.commune"] (every prefix, so
    the line of `vi.commune = ...` answers for `vi` too)."""
    if "." not in key:  # most keys: a plain or quoted name
        return [key.strip('"')]
    parts = [p.strip().strip('"') for p in re.findall(_PART, key)]
    return [".".join(parts[: n + 1]) for n in range(len(parts))]


class _LazyLocator:
    """A _Locator built the first time a line is asked for: a valid file never needs one, and
    scanning 2,000 sites' text cost 20 ms of every cron check."""

    def __init__(self, text: str):
        self._text = text
        self._real: _Locator | None = None

    def _locator(self) -> _Locator:
        if self._real is None:
            self._real = _Locator(self._text)
        return self._real

    @property
    def root(self) -> _Block:
        return self._locator().root

    def site(self, index: int, key: str | None = None) -> int | None:
        return self._locator().site(index, key)

    def site_any(self, index: int, *keys: str) -> int | None:
        return self._locator().site_any(index, *keys)

    def change(self, index: int, k: int, key: str | None = None) -> int | None:
        return self._locator().change(index, k, key)

    def section(self, name: str, key: str | None = None) -> int | None:
        return self._locator().section(name, key)

    def dotted(self, table: str, key: str) -> int | None:
        return self._locator().dotted(table, key)

    def element(self, array: str, k: int, key: str | None = None) -> int | None:
        return self._locator().element(array, k, key)

    def entry(self, name: str, index: int, key: str | None = None) -> int | None:
        """Line of a key of the index-th [[name]] table, else of its header; for entries written
        inline (`name = [{...}]`), the line of `name`."""
        found = self._locator().element(name, index, key)
        return found if found is not None else self._locator().root.keys.get(name)


class _Locator:
    """Maps (table, index, key) to a line number, by a light scan of the text."""

    def __init__(self, text: str):
        self.top: dict[str, _Block] = {}
        self.sites: list[_Block] = []
        self.changes: list[list[_Block]] = []  # per site: its [[sites.changes]] tables
        self.arrays: dict[str, list[_Block]] = {}  # other arrays of tables: [[page.level_names.changes]]
        current = _Block("", 0)
        self.root = current
        prefix = ""  # "snmp." while inside a [sites.snmp] sub-table: keys land on the site
        for n, line in enumerate(text.splitlines(), start=1):
            m = _HEADER.match(line)
            if m:
                name = m.group(2).strip()
                prefix = ""
                if m.group(1) == "[[" and name == "sites":
                    current = _Block("sites", n)
                    self.sites.append(current)
                    self.changes.append([])
                elif m.group(1) == "[[" and name == "sites.changes" and self.sites:
                    current = _Block(name, n)
                    self.changes[-1].append(current)
                elif name.startswith("sites.changes.") and self.sites and self.changes[-1]:
                    current = self.changes[-1][-1]  # [sites.changes.snmp]: keys land on the change
                    sub = name[len("sites.changes.") :]
                    current.keys.setdefault(sub, n)
                    prefix = sub + "."
                elif name.startswith("sites.") and self.sites:
                    current = self.sites[-1]
                    sub = name[len("sites.") :]
                    current.keys.setdefault(sub, n)
                    prefix = sub + "."
                elif m.group(1) == "[[":
                    current = _Block(name, n)
                    self.arrays.setdefault(name, []).append(current)
                else:
                    array = next((a for a in self.arrays if name.startswith(a + ".")), None)
                    if array is not None:  # [page.level_names.changes.vi]: keys land on the element
                        current = self.arrays[array][-1]
                        sub = name[len(array) + 1 :]
                        current.keys.setdefault(sub, n)
                        prefix = sub + "."
                    else:
                        current = _Block(name, n)
                        self.top.setdefault(name, current)
                continue
            k = _KEY.match(line)
            if k:
                for key in _key_names(k.group(1)):
                    current.keys.setdefault(prefix + key, n)

    def site(self, index: int, key: str | None = None) -> int | None:
        if index >= len(self.sites):
            return None
        b = self.sites[index]
        if not key:
            return b.line
        # "snmp.port" of an inline `snmp = { port = 0 }` is on the line of its table's key.
        return b.keys.get(key) or b.keys.get(key.split(".")[0], b.line)

    def site_any(self, index: int, *keys: str) -> int | None:
        """Line of the first of `keys` present in the site's table, else its header."""
        if index >= len(self.sites):
            return None
        b = self.sites[index]
        return next((b.keys[k] for k in keys if k in b.keys), b.line)

    def change(self, index: int, k: int, key: str | None = None) -> int | None:
        """Line of a key of the site's k-th change, else of that change's header; for changes
        written inline (`changes = [{...}]`), the line of the site's `changes` key."""
        blocks = self.changes[index] if index < len(self.changes) else []
        if k >= len(blocks):
            return self.site(index, "changes")
        b = blocks[k]
        if not key:
            return b.line
        return b.keys.get(key) or b.keys.get(key.split(".")[0], b.line)

    def section(self, name: str, key: str | None = None) -> int | None:
        b = self.top.get(name)
        if b is None:
            return None
        return b.keys.get(key, b.line) if key else b.line

    def element(self, array: str, k: int, key: str | None = None) -> int | None:
        """Line of a (dotted) key of the k-th table of an array of tables, or of its nearest
        enclosing key given, else of the table's header; None when the array is not written
        as [[tables]] (then the caller names the key that holds it)."""
        blocks = self.arrays.get(array, [])
        if k >= len(blocks):
            return None
        b = blocks[k]
        parts = key.split(".") if key else []
        return next(
            (b.keys[".".join(parts[:n])] for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in b.keys), b.line
        )

    def dotted(self, table: str, key: str) -> int | None:
        """Line of a dotted key under a table, wherever it is written: `[page.level_names.vi]
        district = ...`, `[page.level_names] vi.district = ...`, `[page] level_names = {...}`:
        the deepest table written and the longest part of the key found there."""
        parts = [*table.split("."), *key.split(".")]
        for cut in range(len(parts) - 1, 0, -1):
            b = self.top.get(".".join(parts[:cut]))
            if b is None:
                continue
            rest = parts[cut:]
            for n in range(len(rest), 0, -1):
                line = b.keys.get(".".join(rest[:n]))
                if line is not None:
                    return line
        for cut in range(len(parts), 0, -1):  # no key found: the deepest table written
            b = self.top.get(".".join(parts[:cut]))
            if b is not None:
                return b.line
        return None


def site_key_lines(text: str) -> list[tuple[int, dict[str, int]]]:
    """(header line, {key: line}) of each [[sites]] table of a config's text, in file order
    (keys of its sub-tables as "snmp.port"): where `wanmon topology`'s patch edits."""
    return [(b.line, dict(b.keys)) for b in _Locator(text).sites]


# --------------------------------------------------------------------------


def _table(model: type[BaseModel], loc: list[str]) -> type[BaseModel]:
    """The (possibly nested) model whose field is the last part of loc, as far as it can be followed."""
    import typing

    def plain(a: Any) -> Any:  # Annotated[Model, ...] -> Model
        return typing.get_args(a)[0] if typing.get_origin(a) is Annotated else a

    for part in loc[:-1]:
        ann = model.model_fields.get(part)
        sub = (
            next(
                (
                    plain(a)
                    for a in getattr(ann.annotation, "__args__", (ann.annotation,))
                    if isinstance(plain(a), type) and issubclass(plain(a), BaseModel)
                ),
                None,
            )
            if ann
            else None
        )
        if sub is None:
            break
        model = sub
    return model


def _describe(err: ErrorDetails, model: type[BaseModel]) -> tuple[str | None, str]:
    """(dotted key, message) for one pydantic error, in the operator's words."""
    loc = [str(x) for x in err["loc"] if not isinstance(x, int)]
    key = ".".join(loc) if loc else None
    etype = err["type"]
    if etype == "extra_forbidden":
        # Suggest among the fields of the (possibly nested) table that holds the key.
        fields = list(_table(model, loc).model_fields)
        close = difflib.get_close_matches(loc[-1], fields, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(fields)})"
        return key, f"unknown key '{key}'{hint}"
    if etype == "missing":
        return key, f"missing required key '{key}'"
    where = key or "value"
    got = err.get("input")
    msg = err["msg"].removeprefix("Value error, ")
    allowed = _allowed(model, loc) if etype in _OUT_OF_RANGE else None
    if allowed is not None and isinstance(got, int | float) and not isinstance(got, bool):
        return key, f"{where} = {_number(got)}: must be a number {allowed}"
    return key, f"key '{where}': {msg} (got {got!r})"


_OUT_OF_RANGE = ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number")


def _number(x: float) -> str:
    """A number as the operator would write it: 60000, 0.5, 1e+09, inf."""
    if isinstance(x, int):
        return str(x)
    return f"{x:g}" if x != x or float(f"{x:g}") == x else repr(x)


def _allowed(model: type[BaseModel], loc: list[str]) -> str | None:
    """'from 1 to 60000' (or 'above 0 and at most 100') for the field at loc, from its _range."""
    f = _table(model, loc).model_fields.get(loc[-1]) if loc else None
    bounds = {k: getattr(m, k) for m in (f.metadata if f else ()) for k in ("ge", "gt", "le") if hasattr(m, k)}
    if "le" not in bounds or not ("ge" in bounds or "gt" in bounds):
        return None
    if "ge" in bounds:
        return f"from {_number(bounds['ge'])} to {_number(bounds['le'])}"
    return f"above {_number(bounds['gt'])} and at most {_number(bounds['le'])}"


def _validate_model(model: type[BaseModel], raw: Any) -> tuple[BaseModel | None, list[tuple[str | None, str]]]:
    if not isinstance(raw, dict):
        return None, [(None, f"must be a table, got {type(raw).__name__}")]
    try:
        return model.model_validate(raw), []
    except ValidationError as exc:
        return None, [_describe(e, model) for e in exc.errors()]


@functools.lru_cache(maxsize=1 << 16)
def ip_literal(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address as an IP literal, or None (a host name, or not an address). Parsed once per
    address: validating 10,000 sites parsed each of them four times (0.25 s)."""
    try:
        return ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return None


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def valid_address(address: str) -> bool:
    """An IPv4/IPv6 literal or an RFC 1123 host name (not a malformed dotted quad)."""
    if ip_literal(address) is not None:
        return True
    if len(address) > 253:
        return False
    labels = address.rstrip(".").split(".")
    if not labels or not all(_LABEL.match(lab) for lab in labels):
        return False
    # "127.0.0.300" or "10.1.1" are typos of an IPv4 address, not host names.
    return not labels[-1].isdigit()


def address_problem(address: str) -> str | None:
    """Why an IP literal cannot be a site's address (None: it can, or it is a host name).
    Each reason says what to write instead."""
    import socket

    ip = ip_literal(address)
    if ip is None:
        return None
    zone = getattr(ip, "scope_id", None)
    if ip.is_unspecified:
        return f"{address!r} is the unspecified address: no host answers from it (write the router's own address)"
    if ip.version == 4 and ip == _BROADCAST:
        return f"{address!r} is the broadcast address, not a host (write the router's own address)"
    if ip.is_multicast:
        return f"{address!r} is a multicast group, not a host (write the router's own address)"
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return f"{address!r} is an IPv4-mapped IPv6 address: write the IPv4 address '{ip.ipv4_mapped}'"
    if ip.version == 6 and ip.is_link_local and not zone:
        return (
            f"{address!r} is link-local: it needs the interface it is reached through, "
            f"e.g. '{address.strip('[]')}%eth0'"
        )
    if zone and not zone.isdigit():
        try:
            socket.if_nametoindex(zone)
        except OSError:
            return f"{address!r}: no network interface '{zone}' on this machine (see `ip link`)"
    return None


def tag_problem(key: str, value: str | None) -> str | None:
    """Why a value that InfluxDB gets as a tag cannot be used (None: it can). InfluxDB 1.x line
    protocol has no way to write a tag value that ends in a backslash (wanmon.lineproto)."""
    if value and value.endswith("\\"):
        return (
            f"{key} {value!r} ends in a backslash, which InfluxDB 1.x cannot store in a tag (its points "
            "would be refused): remove the backslash"
        )
    return None


@functools.lru_cache(maxsize=1 << 16)
def address_key(address: str) -> str:
    """Normalised form for duplicate detection. Kept per address: validate asks it of every
    stretch of a dated site (20,000 times for 10,000 sites with a change each: 0.17 s)."""
    ip = ip_literal(address)
    return ip.compressed if ip is not None else address.lower().rstrip(".")


_TOML_CACHE_TAG = "wanmon-toml-3"
_TOML_CACHE_MIN = 64 * 1024  # smaller files parse in a few ms: not worth a file


@functools.cache
def _checks_code() -> bytes | None:
    """The checks' own code (this module and wanmon.dated, as bytes): a file found valid over
    time by one version of them is not taken as valid by another. None: not readable (then the
    checks always run)."""
    from wanmon import dated

    try:
        return Path(__file__).read_bytes() + Path(dated.__file__).read_bytes()
    except (OSError, TypeError):
        return None


@dataclass
class _Parsed:
    """A parsed file (_parse_toml) and what the cache knows of it: `checked`, that its checks over
    time (_over_time, each change's) passed with this very data and the checks' code of now;
    `mark()` records that once they have (a no-op without a cache)."""

    raw: dict
    checked: bool = False
    mark: Callable[[], None] = lambda: None


def _check_mark(body: bytes) -> str | None:
    code = _checks_code()
    return None if code is None else hashlib.sha256(body + code).hexdigest()


def _toml_cache_file(path: Path) -> Path | None:
    home = os.environ.get("XDG_CACHE_HOME") or (
        os.path.join(os.path.expanduser("~"), ".cache") if os.path.expanduser("~") != "~" else None
    )
    if not home:
        return None
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return Path(home) / "wanmon" / f"toml-{key}.marshal"


_DATE_KINDS: dict[type, Callable[[str], Any]] = {
    datetime: datetime.fromisoformat,
    date: date.fromisoformat,
    dtime: dtime.fromisoformat,
}


def _take_dates(value: Any, path: tuple, dates: list) -> Any:
    """value with its TOML dates and times left out (marshal cannot store them), each put in
    dates as (path, kind, ISO text): a dated inventory's 10,000 instants are cached too."""
    if isinstance(value, dict):
        return {k: _take_dates(v, (*path, k), dates) for k, v in value.items()}
    if isinstance(value, list):
        return [_take_dates(v, (*path, i), dates) for i, v in enumerate(value)]
    kind = type(value)
    if kind in _DATE_KINDS:
        dates.append((path, kind.__name__, value.isoformat()))
        return None
    return value


def _put_dates(raw: dict, dates: list) -> dict:
    """The parsed TOML again from the cache: each date put back at its path."""
    kinds = {k.__name__: parse for k, parse in _DATE_KINDS.items()}
    for path, kind, text in dates:
        node: Any = raw
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = kinds[kind](text)
    return raw


_TOML_CACHE_DAYS = 30  # a cached file not written for this long goes when another is written


def _prune_cache(keep: Path) -> None:
    """Remove the cached parses (one per config path) not written for _TOML_CACHE_DAYS: files
    moved, renamed or left by a test or benchmark in a temporary folder (4 MB each at 10,000
    sites with a change each). A file still in use comes back at its next load."""
    import time

    cutoff = time.time() - _TOML_CACHE_DAYS * 86400
    try:
        for f in keep.parent.glob("toml-*.marshal"):
            if f != keep and f.stat().st_mtime < cutoff:
                f.unlink()
    except OSError:
        pass


def _parse_toml(text: str, path: Path) -> _Parsed:
    """tomllib.loads(text), kept for the next run in the user's cache folder (~/.cache/wanmon,
    0700) under the text's SHA-256: the pure-Python parser takes 33-36 ms on a 2,000-site file
    (178 KB; 61 ms with the shipped file's keys), 0.6 s at 10,000 sites, against about 2 ms to
    read the cache, and cron parses the same file every minute (measured Dec 2026, 2 cores). Any
    change to the text is a new parse; a cache that cannot be read or written is ignored. A file
    with dates (a dated inventory) is kept with them apart, each put back at its path
    (_take_dates): 10,000 sites with a change each, 0.56 s to parse, a few ms back.

    The cache also keeps, once a load found the file valid, a mark: the SHA-256 of the cached
    data and of the checks' code (_checks_code). With it the next load skips the checks of
    each site's keys and of every state the file describes (0.1 s at 10,000 sites, 0.2 s with
    a change each), which depend on nothing but the data; a cache altered or damaged since, or
    other code, has no matching mark and is checked in full."""
    import marshal

    if len(text) < _TOML_CACHE_MIN:
        return _Parsed(tomllib.loads(text))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    cache = _toml_cache_file(path)

    def write(body: bytes, mark: str | None) -> None:
        try:
            make_folder(cache.parent, 0o700)  # type: ignore[union-attr]  # XDG: missing cache folders are made 0700
            with replacing(cache, binary=True, mode=0o600) as f:  # type: ignore[arg-type]
                f.write(marshal.dumps((_TOML_CACHE_TAG, digest, body, mark)))
        except (OSError, ValueError):
            return
        _prune_cache(cache)  # type: ignore[arg-type]

    if cache is not None:
        try:
            tag, seen, body, mark = marshal.loads(cache.read_bytes())
            if tag == _TOML_CACHE_TAG and seen == digest and isinstance(body, bytes):
                raw, put = marshal.loads(body)
                if isinstance(raw, dict):
                    want = _check_mark(body)
                    checked = want is not None and mark == want
                    return _Parsed(
                        _put_dates(raw, put), checked, (lambda: None) if checked else (lambda: write(body, want))
                    )
        except (OSError, ValueError, EOFError, TypeError, KeyError, IndexError):
            pass
    raw = tomllib.loads(text)
    if cache is None:
        return _Parsed(raw)
    try:
        dates: list = []
        body = marshal.dumps((_take_dates(raw, (), dates), dates))
    except ValueError:
        return _Parsed(raw)
    write(body, None)
    return _Parsed(raw, False, lambda: write(body, _check_mark(body)))


def load(path: str | Path, secrets: bool = True) -> Config:
    """Read, parse and validate; raise ConfigError listing every problem.

    secrets=False (read-only commands such as `status`) skips reading the SNMP
    secrets, so a shell without them can still look at the state.
    """
    p = Path(path)
    shown = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(shown, [f"{shown}: file not found (use --config PATH or WANMON_CONFIG)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(shown, [f"{shown}: cannot read: {exc}"]) from None
    try:
        parsed = _parse_toml(text, p)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        where = f"{shown}:{m.group(1)}:{m.group(2)}" if m else shown
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(shown, [f"{where}: TOML syntax error: {msg}"]) from None
    cfg = parse(parsed.raw, text, p, secrets, checked=parsed.checked)
    if not parsed.checked:
        parsed.mark()  # valid: the next load of this very file may skip the checks over time
    return cfg


def parse(raw: dict[str, Any], text: str, path: Path, secrets: bool = True, checked: bool = False) -> Config:
    """The Config of a parsed file, or ConfigError with every problem at its line. checked: the
    file passed its checks before, unchanged since (_parse_toml's mark): those that depend on the
    sites' data alone are skipped (each site's keys, each change, every state over time)."""
    loc = _LazyLocator(text)
    shown = str(path)
    problems: list[str] = []

    def at(line: int | None) -> str:
        return f"{shown}:{line}" if line else shown

    known = [*_SECTIONS, "sites", "influxdb", "smtp", "maintenance", "hops"]
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
            line = loc.section(key) or loc.root.keys.get(key)
            problems.append(f"{at(line)}: unknown table or key '{key}'{hint}")

    sections: dict[str, Any] = {}
    raw_page = raw.get("page", {})
    raw_level_names = None
    if isinstance(raw_page, dict) and "level_names" in raw_page:  # validated apart, for its lines
        raw_level_names = raw_page["level_names"]
        raw = {**raw, "page": {k: v for k, v in raw_page.items() if k != "level_names"}}
    for name, model in _SECTIONS.items():
        obj, errs = _validate_model(model, raw.get(name, {}))
        sections[name] = obj
        for err_key, msg in errs:
            problems.append(f"{at(loc.section(name, err_key))}: [{name}] {msg}")
    if raw_level_names is not None:
        level_names = _level_names(raw_level_names, loc, at, problems)
        if level_names is not None and sections["page"] is not None:
            sections["page"] = sections["page"].model_copy(update={"level_names": level_names})

    warnings: list[str] = []
    influx = None
    if "influxdb" in raw:
        influx = _influx_spec(raw["influxdb"], loc, path, at, problems if secrets else [], warnings)

    smtp = None
    if "smtp" in raw:
        smtp = _smtp_spec(raw["smtp"], loc, path, at, problems if secrets else [], warnings)
    maintenance = _maintenance(raw.get("maintenance", []), lambda: at(loc.section("maintenance")), problems)

    raw_sites = raw.get("sites", [])
    if not isinstance(raw_sites, list) or not raw_sites:
        problems.append(f"{at(None)}: no [[sites]] defined: add at least one site")
        raw_sites = []

    sites: list[Site] = []
    index_of: dict[str, int] = {}  # site id -> position of its [[sites]] table
    states_of: dict[str, list[Site]] = {}  # site id -> the site after each of its changes
    seen_ids: dict[str, int] = {}  # id -> the index of the site that defined it first
    bad_addresses: set[str] = set()  # reported already: no "duplicate address" for them
    for i, rs in enumerate(raw_sites):
        sid = rs.get("id") if isinstance(rs, dict) else None
        label = f"site '{sid}'" if isinstance(sid, str) else f"site #{i + 1}"
        raw_changes = rs.get("changes") if isinstance(rs, dict) else None
        obj, errs = _validate_model(Site, rs)
        if errs and raw_changes is not None:  # the changes again one by one below, for their lines
            obj, errs = _validate_model(Site, {k: v for k, v in rs.items() if k != "changes"})
        else:
            raw_changes = None  # valid: the site has its changes (checked together below)
        for err_key, msg in errs:
            problems.append(f"{at(loc.site(i, err_key))}: {label}: {msg}")
        if obj is None:
            continue
        site: Site = obj  # type: ignore[assignment]

        def bad(key: str, msg: str, i: int = i, label: str = label) -> None:
            problems.append(f"{at(loc.site(i, key))}: {label}: {msg}")

        if not valid_id(site.id):
            bad("id", f"id {site.id!r} must be an ASCII slug: lowercase letters, digits and '-' (e.g. 'tien-du')")
        if site.id in seen_ids:
            bad(
                "id",
                f"duplicate id '{site.id}' (first defined at line {loc.site(seen_ids[site.id]) or 0}): "
                "ids must be unique",
            )
        else:
            seen_ids[site.id] = i
            index_of[site.id] = i
        for key, msg in () if checked else _site_problems(site):
            bad(key, msg)
            if key == "address":
                bad_addresses.add(site.address)
        lo, hi = site.in_service_from, site.retired_at
        if lo is not None and hi is not None and hi <= lo:
            bad(
                "retired_at",
                f"retired_at {hi.isoformat()} is not after in_service_from {lo.isoformat()}: "
                "a site leaves service after it enters it",
            )
        if raw_changes is not None:
            good = _change_models(raw_changes, i, label, loc, at, problems)
            site = site.model_copy(update={"changes": tuple(ch for _, ch in good)})
        else:
            good = list(enumerate(site.changes))
        if good:
            states_of[site.id] = _changes(site, good, i, label, loc, at, problems, check=not checked)
        if site.id in index_of and index_of[site.id] == i:
            sites.append(site)  # a duplicate id is reported above and not used further

    by_id = {s.id: s for s in sites}
    # Sites that failed their own checks still count as existing here, so one
    # typo does not cascade into "unknown parent" errors on all its children.
    raw_ok = [r for r in raw_sites if isinstance(r, dict)]
    known_ids = {r.get("id") for r in raw_ok} | set(by_id)
    failed_districts = {r.get("district") for r in raw_ok if r.get("level") == "district" and r.get("id") not in by_id}
    timeline = Timeline(sites, states_of)
    if not checked:  # (a marked file: the spans are worked out where they are asked for)
        life = {s.id: timeline.site_spans(s) for s in sites}
        _over_time(
            sites, life, index_of, known_ids, failed_districts, bad_addresses, timeline.labels, loc, at, problems
        )
    all_districts = {r.get("district") for r in raw_ok} | {
        ch.district for s in sites for ch in s.changes if ch.district is not None
    }
    for k, m in enumerate(maintenance):
        for sid in m.sites:
            if sid not in known_ids:
                problems.append(f"{at(loc.section('maintenance'))}: [[maintenance]] #{k + 1}: unknown site '{sid}'")
        for d in m.districts:
            if d not in all_districts:
                problems.append(f"{at(loc.section('maintenance'))}: [[maintenance]] #{k + 1}: unknown district '{d}'")

    hops = _hops(raw.get("hops", []), sites, timeline.site_spans, known_ids, loc, at, problems)

    if sections["page"] is not None:
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(sections["page"].timezone)
        except (ValueError, LookupError, OSError):
            problems.append(
                f"{at(loc.section('page', 'timezone'))}: [page] unknown timezone "
                f'{sections["page"].timezone!r} (e.g. "Asia/Ho_Chi_Minh")'
            )
    if sections["page"] is not None and sections["page"].source == "influxdb" and "influxdb" not in raw:
        problems.append(f'{at(loc.section("page", "source"))}: [page] source = "influxdb" needs an [influxdb] table')
    if sections["agent"] is not None and (why := tag_problem("id", sections["agent"].id)) is not None:
        problems.append(f"{at(loc.section('agent', 'id'))}: [agent] {why}")
    if sections["agent"] is not None and sections["agent"].role == "standby" and "influxdb" not in raw:
        problems.append(
            f'{at(loc.section("agent", "role"))}: [agent] role = "standby" needs an [influxdb] table: '
            "the standby learns from the primary's heartbeats there whether to send mail"
        )
    if sections["agent"] is not None and sections["agent"].heartbeat_url is not None:
        problem = _heartbeat_problem(sections["agent"].heartbeat_url)
        if problem:
            problems.append(f"{at(loc.section('agent', 'heartbeat_url'))}: [agent] heartbeat_url {problem}")
    if sections["report"] is not None:
        for email in sections["report"].recipients:
            if not _EMAIL.match(email):
                problems.append(
                    f"{at(loc.section('report', 'recipients'))}: [report] invalid email {email!r} in 'recipients'"
                )
    if sections["alerts"] is not None:
        for email in sections["alerts"].noc:
            if not _EMAIL.match(email):
                problems.append(f"{at(loc.section('alerts', 'noc'))}: [alerts] invalid email {email!r} in 'noc'")
        for sid in sections["alerts"].guard_sites or ():
            if sid not in known_ids:
                close = difflib.get_close_matches(sid, list(by_id), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problems.append(
                    f"{at(loc.section('alerts', 'guard_sites'))}: [alerts] guard_sites: unknown site '{sid}'{hint}"
                )
        _check_contacts(sections["alerts"], all_districts, loc, at, problems)
        if sections["alerts"].guard_sites == ():
            problems.append(
                f"{at(loc.section('alerts', 'guard_sites'))}: [alerts] guard_sites is empty: list the "
                "sites the agent reaches the network through, or remove the key (default: the sites "
                "without a parent)"
            )
    if (
        sections["snmp"] is not None
        and sections["schedule"] is not None
        and sections["schedule"].snmp_interval_s is not None
        and "interval_s" not in raw.get("snmp", {})
    ):
        sections["snmp"] = sections["snmp"].model_copy(update={"interval_s": sections["schedule"].snmp_interval_s})
    snmp_specs: dict[str, SnmpSpec] = {}
    dated_snmp_specs: dict[tuple[str, str], SnmpSpec | None] = {}
    if sections["snmp"] is not None:
        snmp_specs = _snmp_specs(sections["snmp"], sites, index_of, loc, path, at, problems if secrets else [])
        dated_snmp_specs = _dated_snmp_specs(
            sections["snmp"], sites, index_of, loc, path, at, problems if secrets else []
        )

    if problems:
        raise ConfigError(shown, sorted(problems, key=lambda p: _line_of(p, shown)))
    return Config(
        path=path,
        store=sections["store"],
        icmp=sections["icmp"],
        thresholds=sections["thresholds"],
        snmp=sections["snmp"],
        page=sections["page"],
        schedule=sections["schedule"],
        alerts=sections["alerts"],
        report=sections["report"],
        agent=sections["agent"],
        sites=tuple(sites),
        snmp_specs=snmp_specs,
        dated_snmp_specs=dated_snmp_specs,
        influx=influx,
        smtp=smtp,
        maintenance=maintenance,
        trace=sections["trace"],
        hops=hops,
        warnings=tuple(warnings),
        timeline=timeline,
    )


_CONTACT_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def contact_problem(text: str) -> str | None:
    """Why a contact cannot go into a mail (None: it can): it is one line of text."""
    if not text.strip():
        return "is blank: write whom to call (a name and a phone number), or remove the key"
    if len(text) > CONTACT_MAX:
        return f"is {len(text)} characters long: at most {CONTACT_MAX} (a name, a phone number, an address)"
    if _CONTACT_CONTROLS.search(text):
        return f"{text!r} has a line break or a control character: write it on one line"
    return None


def _check_contacts(alerts: AlertSettings, districts: set, loc: _LazyLocator, at, problems: list[str]) -> None:
    """[alerts] contact and district_contacts: one line each; each district named by some site."""
    if alerts.contact is not None and (why := contact_problem(alerts.contact)) is not None:
        problems.append(f"{at(loc.section('alerts', 'contact'))}: [alerts] contact {why}")
    known = sorted(d for d in districts if isinstance(d, str))
    for district, text in alerts.district_contacts.items():
        line = loc.section("alerts.district_contacts", district) or loc.section("alerts", "district_contacts")
        if district not in districts:
            close = difflib.get_close_matches(district, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else " (no site has it as its 'district')"
            problems.append(f"{at(line)}: [alerts] district_contacts: unknown district '{district}'{hint}")
        if (why := contact_problem(text)) is not None:
            problems.append(f"{at(line)}: [alerts] district_contacts '{district}' {why}")


def _read_secret(kind: str, env: str | None, file: str | None, base: Path) -> tuple[Secret | None, str | None]:
    """(secret, problem) from an env var or a file; (None, None) when neither is given."""
    if env and file:
        return None, f"give either {kind}_env or {kind}_file, not both"
    if env:
        val = os.environ.get(env)
        if val is None:
            return None, f"{kind}_env: environment variable {env} is not set (export it, or use {kind}_file)"
        if not val:
            return None, f"{kind}_env: environment variable {env} is empty"
        return Secret(val), None
    if file:
        fp = Path(file).expanduser()
        fp = fp if fp.is_absolute() else base / fp
        try:
            val = fp.read_text(encoding="utf-8").strip()
        except OSError as exc:
            return None, f"{kind}_file: cannot read {fp}: {exc.strerror or exc}"
        if not val:
            return None, f"{kind}_file: {fp} is empty"
        return Secret(val), None
    return None, None


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also IPv4-mapped) or "localhost": a peer on this machine, whose traffic never
    leaves it."""
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _smtp_spec(
    raw: Any, loc: _LazyLocator, path: Path, at, problems: list[str], warnings: list[str]
) -> SmtpSpec | None:
    obj, errs = _validate_model(SmtpSettings, raw)
    for key, msg in errs:
        problems.append(f"{at(loc.section('smtp', key))}: [smtp] {msg.replace('from_', 'from')}")
    if obj is None:
        return None
    st: SmtpSettings = obj  # type: ignore[assignment]
    if st.starttls and st.ssl:
        problems.append(f"{at(loc.section('smtp', 'ssl'))}: [smtp] choose starttls or ssl, not both")
    if not _EMAIL.match(st.from_):
        problems.append(f"{at(loc.section('smtp', 'from'))}: [smtp] invalid from address {st.from_!r}")
    user = None
    if st.user_env:
        user = os.environ.get(st.user_env)
        if not user:
            problems.append(
                f"{at(loc.section('smtp', 'user_env'))}: [smtp] user_env: environment variable {st.user_env} is not set"
            )
    password, problem = _read_secret("password", st.password_env, st.password_file, path.parent)
    if problem:
        problems.append(f"{at(loc.section('smtp', 'password_env') or loc.section('smtp'))}: [smtp] {problem}")
    if password is not None and not st.user_env:
        problems.append(f"{at(loc.section('smtp'))}: [smtp] a password needs user_env (the login name)")
    if st.user_env and not st.ssl and st.starttls is not True and not is_loopback(st.host):
        if st.allow_plaintext_auth:
            warnings.append(
                f"{at(loc.section('smtp', 'allow_plaintext_auth'))}: [smtp] allow_plaintext_auth = true: "
                f"the SMTP password may travel in clear to {st.host} (anyone on the path can read it)"
            )
        elif st.starttls is False:
            warnings.append(
                f"{at(loc.section('smtp', 'starttls'))}: [smtp] credentials with starttls = false: wanmon "
                f"will not log in to {st.host} without TLS, so no mail will go out; set starttls = true "
                "(or ssl = true, port 465)"
            )
        else:
            warnings.append(
                f"{at(loc.section('smtp', 'user_env'))}: [smtp] credentials without starttls = true or "
                f"ssl = true: wanmon logs in to {st.host} only if it offers STARTTLS (else no mail goes "
                "out); set starttls = true to require it"
            )
    return SmtpSpec(st, user, password)


def _maintenance(raw: Any, where_at: Callable[[], str], problems: list[str]) -> tuple[Maintenance, ...]:
    from datetime import datetime as _dt

    if not isinstance(raw, list):
        problems.append(f"{where_at()}: [[maintenance]] must be an array of tables")
        return ()
    out = []
    for i, item in enumerate(raw):
        label = f"[[maintenance]] #{i + 1}"
        obj, errs = _validate_model(Maintenance, item)
        for _key, msg in errs:
            problems.append(f"{where_at()}: {label}: {msg.replace('from_', 'from')}")
        if obj is None:
            continue
        m: Maintenance = obj  # type: ignore[assignment]
        if not m.sites and not m.districts:
            problems.append(f"{where_at()}: {label}: name its `sites` and/or `districts`")
        one_off = m.start is not None or m.end is not None
        weekly = bool(m.days) or m.from_ is not None or m.to is not None
        if one_off == weekly:
            problems.append(f"{where_at()}: {label}: give either start/end (one-off) or days/from/to (weekly)")
        if one_off:
            try:
                if _dt.fromisoformat(m.end or "") <= _dt.fromisoformat(m.start or ""):
                    problems.append(f"{where_at()}: {label}: end must be after start")
            except ValueError:
                problems.append(f'{where_at()}: {label}: start and end must be times like "2026-12-01T22:00"')
        if weekly:
            for v in (m.from_, m.to):
                if v is None or not re.match(r"^([01]\d|2[0-3]):[0-5]\d$", v):
                    problems.append(f'{where_at()}: {label}: from and to must be times like "22:00"')
                    break
            if not m.days:
                problems.append(f'{where_at()}: {label}: weekly windows need `days` (e.g. ["sun"])')
        out.append(m)
    return tuple(out)


def _level_names(raw: Any, loc: _LazyLocator, at, problems: list[str]) -> LevelNamesSettings | None:
    """[page.level_names] with each problem at its line: the changes in time order, each saying
    something, and English nouns with their plural."""
    table = "page.level_names"

    def line(loc_parts: tuple) -> int | None:
        parts = [str(x) for x in loc_parts]
        if len(parts) >= 2 and parts[0] == "changes" and parts[1].isdigit():
            key = ".".join(parts[2:]) or None
            found = loc.element(f"{table}.changes", int(parts[1]), key)
            if found is not None:
                return found
            parts = parts[:1]  # written inline: the line of `changes`
        return loc.dotted(table, ".".join(parts)) if parts else loc.dotted("page", "level_names")

    if not isinstance(raw, dict):
        problems.append(f"{at(loc.dotted('page', 'level_names'))}: [{table}] must be a table (vi, en, changes)")
        return None
    try:
        obj = LevelNamesSettings.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            where = err["loc"]
            if len(where) >= 2 and where[0] == "changes" and isinstance(where[1], int):  # one change's key
                _key, msg = _describe({**err, "loc": where[2:]}, LevelNamesChange)
                msg = f"change #{where[1] + 1}: {msg}"
            else:
                _key, msg = _describe(err, LevelNamesSettings)
            problems.append(f"{at(line(where))}: [{table}] {msg}")
        return None

    def check(words: LevelNamesByLevel | None, where: tuple, what: str) -> None:
        """One language's words (where: their place, ending in the language)."""
        if words is None:
            return
        lang = where[-1]
        for level in LEVELS:
            entry = getattr(words, level)
            if entry is None:
                continue
            given = [k for k in ("name", "noun", "nouns", "heading") if getattr(entry, k) is not None]
            here = at(line((*where, level)))
            if not given:
                problems.append(
                    f"{here}: [{table}] {what}{lang}.{level} says nothing: give name, noun, nouns or heading"
                )
            if lang == "en" and entry.noun is not None and entry.nouns is None:
                problems.append(
                    f'{here}: [{table}] {what}en.{level}: noun = "{entry.noun}" needs its plural, '
                    f'nouns (e.g. nouns = "{entry.noun}s")'
                )

    for lang in ("vi", "en"):
        check(getattr(obj, lang), (lang,), "")
    prev: LevelNamesChange | None = None
    for k, ch in enumerate(obj.changes):
        what = f"change #{k + 1}: "
        when = ch.at.isoformat()
        here = at(line(("changes", k, "at")))
        if ch.vi is None and ch.en is None:
            problems.append(
                f"{at(line(('changes', k)))}: [{table}] {what}says nothing: give vi and/or en, or remove it"
            )
        for lang in ("vi", "en"):
            check(getattr(ch, lang), ("changes", k, lang), what)
        if prev is not None and ch.at == prev.at:
            problems.append(f"{here}: [{table}] two changes at {when}: merge them into one [[{table}.changes]]")
        elif prev is not None and ch.at < prev.at:
            problems.append(
                f"{here}: [{table}] change at {when} comes after the one at {prev.at.isoformat()}: "
                "list the changes in time order"
            )
        prev = ch
    return obj


def _hops(
    raw: Any,
    sites: list[Site],
    spans_of: Callable[[Site], list[Span]],
    known_ids: set,
    loc: _LazyLocator,
    at,
    problems: list[str],
) -> tuple[HopEntry, ...]:
    """[[hops]]: each an IP address (a trace sees hops by address) used once, and not the address
    of a site at any time (the site names it already); `site` one of the sites. spans_of: a site's
    spans (Timeline.site_spans: made once). A line is looked up only for a problem (it scans the file)."""
    if isinstance(raw, list) and not raw:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        problems.append(
            f"{at(loc.section('hops') or loc.root.keys.get('hops'))}: 'hops' must be [[hops]] tables, each with "
            "an `address` and a `name`"
        )
        return ()
    site_at: dict[str, str] = {}
    for s in sites:
        for sp in spans_of(s):
            site_at.setdefault(address_key(sp.site.address), s.id)
    by_id = [s.id for s in sites]
    seen: dict[str, int] = {}

    def line(k: int, key: str | None) -> str:
        return at(loc.entry("hops", k, key))

    out = []
    for k, item in enumerate(raw):
        label = f"[[hops]] #{k + 1}"
        obj, errs = _validate_model(HopEntry, item)
        for err_key, msg in errs:
            problems.append(f"{line(k, err_key)}: {label}: {msg}")
        if obj is None:
            continue
        hop: HopEntry = obj  # type: ignore[assignment]
        ip = ip_literal(hop.address)
        if ip is None:
            problems.append(
                f"{line(k, 'address')}: {label}: address {hop.address!r} must be an IP address (a trace sees the hops on a "
                "path by address, never by name)"
            )
            continue
        key = ip.compressed
        if key in seen:
            problems.append(
                f"{line(k, 'address')}: {label}: duplicate address {hop.address!r} (first at line "
                f"{loc.entry('hops', seen[key]) or 0}): one name per address"
            )
        elif key in site_at:
            problems.append(
                f"{line(k, 'address')}: {label}: {hop.address!r} is the address of site '{site_at[key]}', which names it "
                "already: remove this entry"
            )
        seen.setdefault(key, k)
        if hop.site is not None and hop.site not in known_ids:
            close = difflib.get_close_matches(hop.site, by_id, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{line(k, 'site')}: {label}: unknown site '{hop.site}'{hint}")
        out.append(hop)
    return tuple(out)


def _heartbeat_problem(url: str) -> str | None:
    """What is wrong with a heartbeat URL, or None. (Its path and query hold the monitor's
    token: the messages never repeat the URL.)"""
    from urllib.parse import urlsplit

    try:
        u = urlsplit(url)
        u.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        return 'is not a valid URL (e.g. "https://kuma.example/api/push/<token>?status=up&msg=OK&ping=")'
    if u.scheme not in ("http", "https") or not u.hostname:
        return 'must be an http:// or https:// URL with a host, e.g. "https://kuma.example/api/push/<token>?status=up"'
    if u.username is not None or u.password is not None:
        return "must not carry credentials (user:password@): push URLs hold their token in the path"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "must not contain spaces or control characters (percent-encode them)"
    return None


def _influx_spec(
    raw: Any, loc: _LazyLocator, path: Path, at, problems: list[str], warnings: list[str]
) -> InfluxSpec | None:
    obj, errs = _validate_model(InfluxSettings, raw)
    for key, msg in errs:
        problems.append(f"{at(loc.section('influxdb', key))}: [influxdb] {msg}")
    if obj is None:
        return None
    st: InfluxSettings = obj  # type: ignore[assignment]
    from urllib.parse import urlsplit

    u = urlsplit(st.url)
    if u.scheme not in ("http", "https") or not u.hostname:
        problems.append(
            f"{at(loc.section('influxdb', 'url'))}: [influxdb] url {st.url!r} must look like http://host:8086"
        )
    if u.username or u.password:
        problems.append(
            f"{at(loc.section('influxdb', 'url'))}: [influxdb] url must not carry credentials: "
            "use token_env / password_env"
        )
    kind = "token" if st.api == "v2" else "password"
    secret, problem = _read_secret(kind, getattr(st, f"{kind}_env"), getattr(st, f"{kind}_file"), path.parent)
    if problem:
        problems.append(
            f"{at(loc.section('influxdb', f'{kind}_env') or loc.section('influxdb'))}: [influxdb] {problem}"
        )
    if st.api == "v2" and secret is not None and not (secret.reveal().isascii() and secret.reveal().isprintable()):
        problems.append(
            f"{at(loc.section('influxdb', 'token_env') or loc.section('influxdb'))}: [influxdb] the token "
            "must be printable ASCII (it travels in an HTTP header): check token_env / token_file"
        )
    if st.api == "v1" and secret is not None and not st.username:
        problems.append(f"{at(loc.section('influxdb'))}: [influxdb] a v1 password needs a username")
    named = st.token_env or st.token_file if st.api == "v2" else st.password_env or st.password_file
    if named and u.scheme == "http" and u.hostname and not is_loopback(u.hostname):
        warnings.append(
            f"{at(loc.section('influxdb', 'url'))}: [influxdb] the {kind} travels in clear over http:// "
            f"to {u.hostname}: use https://"
        )
    return InfluxSpec(st, secret)


def _snmp_specs(
    glob: SnmpSettings, sites, index_of, loc: _LazyLocator, path: Path, at, problems: list[str]
) -> dict[str, SnmpSpec]:
    """Merge [snmp] with each site's own table, resolve secrets, check v3 consistency."""
    base = path.parent
    # Secrets named in [snmp] are read (and reported) once, not once per site.
    glob_secrets: dict[str, Secret | None] = {}
    for kind in _SECRET_KEYS:
        secret, problem = _read_secret(kind, getattr(glob, f"{kind}_env"), getattr(glob, f"{kind}_file"), base)
        if problem:
            problems.append(f"{at(loc.section('snmp', f'{kind}_env') or loc.section('snmp'))}: [snmp] {problem}")
        glob_secrets[kind] = secret
    specs: dict[str, SnmpSpec] = {}
    for site in sites:
        own = site.snmp.model_dump(exclude_none=True) if site.snmp else {}
        merged = {**glob.model_dump(), **{k: v for k, v in own.items() if k != "uplink"}}
        if not merged["enabled"]:
            continue
        i = index_of[site.id]
        label = f"site '{site.id}'"

        def here(i: int = i) -> str:  # the line, looked up only for a problem to report
            return at(loc.site_any(i, "snmp.version", "snmp.user", "snmp"))

        secrets: dict[str, Secret | None] = {}
        unreadable: set[str] = set()  # reported already: no second "needs a key" message
        for kind in _SECRET_KEYS:
            if f"{kind}_env" in own or f"{kind}_file" in own:
                secret, problem = _read_secret(kind, own.get(f"{kind}_env"), own.get(f"{kind}_file"), base)
                if problem:
                    line = loc.site_any(i, f"snmp.{kind}_env", f"snmp.{kind}_file", "snmp")
                    problems.append(f"{at(line)}: {label}: snmp {problem}")
                    unreadable.add(kind)
                secrets[kind] = secret
            else:
                secrets[kind] = glob_secrets[kind]
                if getattr(glob, f"{kind}_env") or getattr(glob, f"{kind}_file"):
                    unreadable.update([kind] if secrets[kind] is None else [])
        version = merged["version"]
        community = secrets["community"]
        if version in ("1", "2c") and community is None:
            community = Secret("public")  # the well-known default, like net-snmp's tools
        if version == "3":
            if not merged["user"]:
                problems.append(f"{here()}: {label}: SNMPv3 needs a 'user' (in [snmp] or the site's snmp table)")
            if merged["auth_protocol"] != "none" and secrets["auth_key"] is None and "auth_key" not in unreadable:
                problems.append(
                    f"{here()}: {label}: SNMPv3 auth_protocol {merged['auth_protocol']} needs "
                    'auth_key_env or auth_key_file (or set auth_protocol = "none")'
                )
            if merged["priv_protocol"] != "none":
                if merged["auth_protocol"] == "none":
                    problems.append(
                        f"{here()}: {label}: SNMPv3 privacy needs authentication: set "
                        'auth_protocol, or priv_protocol = "none"'
                    )
                elif secrets["priv_key"] is None and "priv_key" not in unreadable:
                    problems.append(
                        f"{here()}: {label}: SNMPv3 priv_protocol {merged['priv_protocol']} needs "
                        'priv_key_env or priv_key_file (or set priv_protocol = "none")'
                    )
            for kind in ("auth_key", "priv_key"):
                sec = secrets[kind]
                if sec is not None and len(sec.reveal()) < 8:
                    problems.append(f"{here()}: {label}: SNMPv3 {kind} must be at least 8 characters (RFC 3414)")
        specs[site.id] = SnmpSpec(
            version=version,
            port=merged["port"],
            timeout_ms=merged["timeout_ms"],
            retries=merged["retries"],
            interval_s=merged["interval_s"],
            community=community if version != "3" else None,
            user=merged["user"] if version == "3" else None,
            auth_protocol=merged["auth_protocol"] if version == "3" else "none",
            auth_key=secrets["auth_key"] if version == "3" and merged["auth_protocol"] != "none" else None,
            priv_protocol=merged["priv_protocol"] if version == "3" and merged["auth_protocol"] != "none" else "none",
            priv_key=secrets["priv_key"] if version == "3" and merged["priv_protocol"] != "none" else None,
            uplink=own.get("uplink"),
        )
    return specs


def snmp_key(site: Site) -> str:
    """A site state's own snmp table as a key (Config.dated_snmp_specs)."""
    return site.snmp.model_dump_json(exclude_none=True) if site.snmp is not None else ""


def _dated_snmp_specs(
    glob: SnmpSettings, sites, index_of, loc: _LazyLocator, path: Path, at, problems: list[str]
) -> dict[tuple[str, str], SnmpSpec | None]:
    """The SNMP settings of each state a change gives other snmp keys than the site's own (its
    secrets read and checked like the site's): {(site id, snmp_key(state)): spec or None}."""
    out: dict[tuple[str, str], SnmpSpec | None] = {}
    for site in sites:
        if not any(ch.snmp is not None or "snmp" in ch.unset for ch in site.changes):
            continue
        for sp in spans(site):
            key = (site.id, snmp_key(sp.site))
            if sp.site.snmp == site.snmp or key in out:
                continue
            out[key] = _snmp_specs(glob, [sp.site], index_of, loc, path, at, problems).get(site.id)
    return out


def _line_of(problem: str, shown: str) -> int:
    m = re.match(re.escape(shown) + r":(\d+)", problem)
    return int(m.group(1)) if m else 0


def _site_problems(site: Site, keys: Collection[str] = CHANGEABLE) -> list[tuple[str, str]]:
    """(key, message) for what is wrong with one site's keys on their own (as written, or as a
    change leaves them); keys: only those (a change's, with level and district together)."""
    out: list[tuple[str, str]] = []
    if "address" in keys:
        if not valid_address(site.address):
            out.append(("address", f"invalid address {site.address!r}: use an IPv4 or IPv6 address or a host name"))
        elif (why := address_problem(site.address)) is not None:
            out.append(("address", why))
    if "level" in keys and site.level in ("district", "commune") and not site.district:
        out.append(("level", f"level '{site.level}' requires a 'district' key naming its district"))
    if "district" in keys and site.level == "province" and site.district:
        out.append(("district", "a province-level site takes no 'district' (remove it, or change 'level')"))
    if "admins" in keys:
        for email in site.admins:
            if not _EMAIL.match(email):
                out.append(("admins", f"invalid email {email!r} in 'admins'"))
    for key in ("name", "district", "address"):
        if key in keys and (why := tag_problem(key, getattr(site, key))) is not None:
            out.append((key, why))
    if "contact" in keys and site.contact is not None and (why := contact_problem(site.contact)) is not None:
        out.append(("contact", f"contact {why}"))
    return out


_LIFE_KEYS = ("in_service_from", "retired_at", "changes")


class _Lazy:
    """A text worked out when it is formatted (a valid file never looks up its lines)."""

    def __init__(self, make: Callable[[], str]):
        self._make = make

    def __format__(self, spec: str) -> str:
        return format(self._make(), spec)


def _change_models(
    raw: Any, i: int, label: str, loc: _LazyLocator, at, problems: list[str]
) -> list[tuple[int, SiteChange]]:
    """The site's [[sites.changes]] one by one, when the site with them did not validate: each
    problem at its line; [(index in the file, change)] for the valid ones."""
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        problems.append(
            f"{at(loc.site(i, 'changes'))}: {label}: 'changes' must be [[sites.changes]] tables, each with "
            "its instant `at` and the keys that hold from then on"
        )
        return []
    good: list[tuple[int, SiteChange]] = []
    for k, item in enumerate(raw):
        what = f"{label}: change #{k + 1}"
        if "id" in item:
            problems.append(
                f"{at(loc.change(i, k, 'id'))}: {what}: a site's id never changes (its history follows the id): "
                "to replace a device, give this site `retired_at` and add a new [[sites]] with `in_service_from`"
            )
        for key in _LIFE_KEYS:
            if key in item:
                problems.append(
                    f"{at(loc.change(i, k, key))}: {what}: '{key}' belongs to the site, not to a change: "
                    "move it up into the [[sites]] table"
                )
        item = {key: v for key, v in item.items() if key != "id" and key not in _LIFE_KEYS}
        obj, errs = _validate_model(SiteChange, item)
        for err_key, msg in errs:
            problems.append(f"{at(loc.change(i, k, err_key))}: {what}: {msg}")
        if obj is None:
            continue
        good.append((k, obj))  # type: ignore[arg-type]
    return good


def _changes(
    site: Site,
    good: list[tuple[int, SiteChange]],
    i: int,
    label: str,
    loc: _LazyLocator,
    at,
    problems: list[str],
    check: bool = True,
) -> list[Site]:
    """The site's valid changes (with their index in the file) checked: each says something, in
    time order, inside the site's service period, and for the keys it leaves the site with.
    Returns the site after each of them. A change's line (found by scanning the file) and its
    instant as text are worked out for a problem only (10,000 changes: a second of scanning).
    check=False: the file passed these checks before (parse's `checked`): the states only."""
    if not check:
        states: list[Site] = []
        for _k, ch in good:
            states.append(apply(states[-1] if states else site, ch))
        return states
    lo, hi = site.in_service_from, site.retired_at
    prev: SiteChange | None = None
    states = []
    state = site
    for k, ch in good:
        given = [key for key in CHANGEABLE if getattr(ch, key) is not None]
        if not given and not ch.unset:
            problems.append(
                f"{at(loc.change(i, k))}: {label}: change #{k + 1}: says nothing: give the keys that hold from "
                f"{ch.at.isoformat()} ({', '.join(CHANGEABLE)}) or remove it"
            )
        for key in set(given) & set(ch.unset):
            problems.append(
                f"{at(loc.change(i, k, 'unset'))}: {label}: change #{k + 1}: sets '{key}' and unsets it: keep one"
            )
        if prev is not None and ch.at <= prev.at:
            here = f"{at(loc.change(i, k, 'at'))}: {label}"
            if ch.at == prev.at:
                problems.append(f"{here}: two changes at {ch.at.isoformat()}: merge them into one [[sites.changes]]")
            else:
                problems.append(
                    f"{here}: change at {ch.at.isoformat()} comes after the one at {prev.at.isoformat()}: "
                    "list the changes in time order"
                )
        if lo is not None and ch.at <= lo:
            problems.append(
                f"{at(loc.change(i, k, 'at'))}: {label}: change at {ch.at.isoformat()} is not after the site enters "
                f"service (in_service_from {lo.isoformat()}): write its keys in the [[sites]] table itself"
            )
        if hi is not None and ch.at >= hi:
            problems.append(
                f"{at(loc.change(i, k, 'at'))}: {label}: change at {ch.at.isoformat()} is not before the site leaves "
                f"service (retired_at {hi.isoformat()}): a retired site takes no changes; remove it"
            )
        if prev is None or ch.at > prev.at:
            prev = ch
        state = apply(state, ch)
        states.append(state)
        touched = {*given, *ch.unset}
        if touched & {"level", "district"}:
            touched |= {"level", "district"}
        for key, msg in _site_problems(state, touched):
            # the line of the key that made the problem: itself, else the level/district or unset beside it
            shown_key = key if key in given else next((g for g in given if g in ("level", "district")), "unset")
            problems.append(f"{at(loc.change(i, k, shown_key))}: {label}: from {ch.at.isoformat()}: {msg}")
    return states


def _over_time(
    sites: list[Site],
    life: dict[str, list[Span]],
    index_of: dict[str, int],
    known_ids: set,
    failed_districts: set,
    bad_addresses: set[str],
    labels: dict[float, str],
    loc: _LazyLocator,
    at,
    problems: list[str],
) -> None:
    """What must hold between sites at every instant the file describes: parents that exist and
    are in service, no parent cycle, one site per address, a district-level site for each
    commune's district. Each is checked over the sites' spans (wanmon.dated), not epoch by
    epoch: 10,000 sites with a change each are 20,000 spans, not 10,000 epochs of 10,000."""
    period = {s.id: (life[s.id][0].start, life[s.id][-1].end) if life[s.id] else (AFTER, AFTER) for s in sites}
    said: set[tuple] = set()

    def when(t: float) -> str:
        return "" if t == BEFORE else f" from {labels.get(t, t)}"

    def line(sid: str, sp: Span, key: str) -> str:
        i = index_of[sid]
        return at(loc.site(i, key) if sp.change is None else loc.change(i, sp.change, key))

    def once(key: tuple, text: str) -> None:
        if key not in said:
            said.add(key)
            problems.append(text)

    # parents: known, and in service for as long as the child hangs from them
    for s in sites:
        for sp in life[s.id]:
            p = sp.site.parent
            if p is None:
                continue
            if p == s.id or p not in period or period[p][0] > sp.start or period[p][1] < sp.end:
                head = f"{line(s.id, sp, 'parent')}: site '{s.id}'"  # the locator scans the text: only for a problem
            else:
                continue
            if p == s.id:
                once(("self", s.id), f"{head}: parent is the site itself")
            elif p not in period:
                if p not in known_ids:
                    close = difflib.get_close_matches(p, list(period), n=1)
                    hint = f" (did you mean '{close[0]}'?)" if close else ""
                    once(("unknown", s.id, p), f"{head}: unknown parent '{p}'{hint}{when(sp.start)}")
            else:
                lo, hi = period[p]
                if lo > sp.start:
                    enters = f"it enters service at {labels[lo]}" if lo in labels else "its service period is empty"
                    once(
                        ("early", s.id, p),
                        f"{head}: parent '{p}' is not in service{when(sp.start)} ({enters}): "
                        f"give '{s.id}' another parent until then",
                    )
                if hi < sp.end:
                    once(
                        ("late", s.id, p),
                        f"{head}: parent '{p}' leaves service at {labels.get(hi, hi)} while '{s.id}' "
                        f"hangs from it: add a [[sites.changes]] at {labels.get(hi, hi)} with another parent "
                        "(or retire it then too)",
                    )

    # parent cycles: a cycle appears only where an edge does (first span, or a parent change)
    starts: dict[float, list[tuple[str, Span]]] = {}
    ends: dict[float, list[str]] = {}
    for s in sites:
        prev_parent: object = object()
        for sp in life[s.id]:
            if sp.site.parent != prev_parent:
                starts.setdefault(sp.start, []).append((s.id, sp))
                prev_parent = sp.site.parent
        if life[s.id]:
            ends.setdefault(life[s.id][-1].end, []).append(s.id)
    parent_of: dict[str, str | None] = {}
    for t in sorted(set(starts) | set(ends)):
        for sid in ends.get(t, ()):
            parent_of.pop(sid, None)
        new = starts.get(t, [])
        for sid, sp in new:
            parent_of[sid] = sp.site.parent
        done: set[str] = set()
        fresh = {sid: sp for sid, sp in new}  # the sites whose edge to their parent begins at t
        for sid, _sp in new:
            path: list[str] = []
            seen: dict[str, int] = {}
            node: str | None = sid
            while node is not None and node in parent_of and node not in done:
                if node in seen:
                    cyc = path[seen[node] :]
                    if len(cyc) > 1:  # a self-parent is reported on its own
                        # named at the first (in the file) of its members whose edge begins at t
                        first = min((x for x in cyc if x in fresh), key=lambda x: index_of[x])
                        j = cyc.index(first)
                        cyc = cyc[j:] + cyc[:j]
                        once(
                            ("cycle", frozenset(cyc)),
                            f"{line(first, fresh[first], 'parent')}: parent cycle{when(t)}: "
                            f"{' -> '.join([*cyc, first])}: one of these must have no parent or another parent",
                        )
                    break
                seen[node] = len(path)
                path.append(node)
                node = parent_of[node]
            done.update(path)

    # one site per address at any instant (a retired router's address may be reused after it)
    # [start, end, file index, id, span]: one per stretch of a site at one address
    first_at: dict[str, list] = {}  # address -> its first user
    by_addr: dict[str, list[list]] = {}  # only the addresses used twice
    usable: dict[str, bool] = {}  # address -> neither invalid nor refused (those are reported already)
    keys: dict[str, str] = {}
    for s in sites:
        last: list | None = None
        for sp in life[s.id]:
            a = sp.site.address
            if last is not None and a == last[4].site.address and sp.start == last[1]:
                last[1] = sp.end  # the same address on: one stretch (a renamed site keeps its address)
                continue
            if a not in usable:  # the sites' own addresses were checked as they were read
                usable[a] = (
                    (a not in bad_addresses) if sp.change is None else (valid_address(a) and address_problem(a) is None)
                )
            if not usable[a]:
                last = None
                continue
            key = keys.get(a) or keys.setdefault(a, address_key(a))
            last = [sp.start, sp.end, index_of[s.id], s.id, sp]
            if key not in first_at:
                first_at[key] = last
            else:
                by_addr.setdefault(key, [first_at[key]]).append(last)
    for items in by_addr.values():
        items.sort(key=lambda x: (x[0], x[2]))
        for n, (start, _, _, sid, sp) in enumerate(items):
            for ostart, oend, _, oid, _ in items[:n]:
                if oid != sid and oend > start and ("addr", sid) not in said:
                    once(
                        ("addr", sid),
                        f"{line(sid, sp, 'address')}: site '{sid}': duplicate address {sp.site.address!r}, "
                        f"already used by site '{oid}'{when(max(start, ostart))}",
                    )

    # a commune's district has a district-level site in service whenever the commune is
    cover: dict[str, list[tuple[float, float]]] = {}
    for s in sites:
        for sp in life[s.id]:
            if sp.site.level == "district" and sp.site.district:
                cover.setdefault(sp.site.district, []).append((sp.start, sp.end))
    for spans_of in cover.values():
        spans_of.sort()
    for s in sites:
        for sp in life[s.id]:
            d = sp.site.district
            if sp.site.level != "commune" or not d or d in failed_districts:
                continue
            gap = _uncovered(cover.get(d, []), sp.start, sp.end)
            if gap is not None:
                once(
                    ("district", s.id, d),
                    f"{line(s.id, sp, 'district')}: site '{s.id}': district '{d}' has no district-level site"
                    f'{when(gap)}: add a [[sites]] with level = "district" and district = "{d}" '
                    "in service then",
                )


def _uncovered(intervals: list[tuple[float, float]], start: float, end: float) -> float | None:
    """The first instant of [start, end) that no interval covers, or None."""
    t = start
    for a, b in intervals:  # sorted by the caller
        if a > t:
            break
        t = max(t, b)
        if t >= end:
            return None
    return t
