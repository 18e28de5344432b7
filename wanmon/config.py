"""Load and validate sites.toml once, at the edge.

Every problem is collected (not just the first) and reported with its place:
`file:line` where it can be found, plus the site id and the key.  A config
that has any problem raises `ConfigError`; callers exit with status 2 and
write nothing.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wanmon.errors import ConfigError

DEFAULT_CONFIG = "sites.toml"
LEVELS = ("province", "district", "commune")

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class StoreSettings(_Strict):
    path: str = "var/wanmon.db"
    retention_raw_days: int = Field(35, gt=0)
    retention_rollup_days: int = Field(400, gt=0)


class IcmpSettings(_Strict):
    count: int = Field(3, gt=0, le=1000)
    interval_ms: float = Field(200.0, gt=0)
    timeout_ms: float = Field(1000.0, gt=0)
    rate_pps: float = Field(1000.0, gt=0)
    payload_bytes: int = Field(56, ge=16, le=1400)
    mode: Literal["auto", "raw", "unprivileged"] = "auto"


class Thresholds(_Strict):
    degraded_loss_pct: float = Field(10.0, gt=0, le=100)
    degraded_rtt_ms: float = Field(300.0, gt=0)


class Site(_Strict):
    id: str
    name: str = Field(min_length=1)
    level: Literal["province", "district", "commune"]
    district: str | None = None
    parent: str | None = None
    address: str = Field(min_length=1)
    admins: tuple[str, ...] = ()

    # TOML arrays arrive as lists; accept them for the tuple in strict mode.
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


_SECTIONS: dict[str, type[_Strict]] = {
    "store": StoreSettings,
    "icmp": IcmpSettings,
    "thresholds": Thresholds,
}


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    store: StoreSettings
    icmp: IcmpSettings
    thresholds: Thresholds
    sites: tuple[Site, ...]
    site_lines: dict[str, int] = field(default_factory=dict)

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
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+|\"[^\"]*\")\s*=")


class _Locator:
    """Maps (table, index, key) to a line number, by a light scan of the text."""

    def __init__(self, text: str):
        self.top: dict[str, _Block] = {}
        self.sites: list[_Block] = []
        current = _Block("", 0)
        self.root = current
        for n, line in enumerate(text.splitlines(), start=1):
            m = _HEADER.match(line)
            if m:
                name = m.group(2).strip()
                if m.group(1) == "[[" and name == "sites":
                    current = _Block("sites", n)
                    self.sites.append(current)
                elif name.startswith("sites.") and self.sites:
                    current = _Block(name, n)  # sub-table of the last site
                else:
                    current = _Block(name, n)
                    self.top.setdefault(name, current)
                continue
            k = _KEY.match(line)
            if k:
                current.keys.setdefault(k.group(1).strip('"'), n)

    def site(self, index: int, key: str | None = None) -> int | None:
        if index >= len(self.sites):
            return None
        b = self.sites[index]
        return b.keys.get(key, b.line) if key else b.line

    def section(self, name: str, key: str | None = None) -> int | None:
        b = self.top.get(name)
        if b is None:
            return None
        return b.keys.get(key, b.line) if key else b.line


# --------------------------------------------------------------------------


def _describe(err: dict[str, Any], fields: list[str]) -> tuple[str | None, str]:
    """(key, message) for one pydantic error, in the operator's words."""
    loc = [str(x) for x in err["loc"]]
    key = loc[0] if loc else None
    etype = err["type"]
    if etype == "extra_forbidden":
        close = difflib.get_close_matches(key or "", fields, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(fields)})"
        return key, f"unknown key '{key}'{hint}"
    if etype == "missing":
        return key, f"missing required key '{key}'"
    where = ".".join(loc) if loc else "value"
    got = err.get("input")
    msg = err["msg"]
    if etype in ("greater_than", "greater_than_equal") and got is not None:
        msg = f"must be {'> ' if etype == 'greater_than' else '>= '}{err['ctx'].get('gt', err['ctx'].get('ge'))}"
    return key, f"key '{where}': {msg} (got {got!r})"


def _validate_model(model: type[BaseModel], raw: Any) -> tuple[BaseModel | None, list[tuple[str | None, str]]]:
    if not isinstance(raw, dict):
        return None, [(None, f"must be a table, got {type(raw).__name__}")]
    try:
        return model.model_validate(raw), []
    except ValidationError as exc:
        fields = list(model.model_fields)
        return None, [_describe(e, fields) for e in exc.errors()]


def valid_address(address: str) -> bool:
    """An IPv4/IPv6 literal or an RFC 1123 host name (not a malformed dotted quad)."""
    try:
        ipaddress.ip_address(address.strip("[]"))
        return True
    except ValueError:
        pass
    if len(address) > 253:
        return False
    labels = address.rstrip(".").split(".")
    if not labels or not all(_LABEL.match(lab) for lab in labels):
        return False
    # "127.0.0.300" or "10.1.1" are typos of an IPv4 address, not host names.
    return not labels[-1].isdigit()


def address_key(address: str) -> str:
    """Normalised form for duplicate detection."""
    try:
        return ipaddress.ip_address(address.strip("[]")).compressed
    except ValueError:
        return address.lower().rstrip(".")


def load(path: str | Path) -> Config:
    """Read, parse and validate; raise ConfigError listing every problem."""
    p = Path(path)
    shown = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(shown, [f"{shown}: file not found (use --config PATH or WANMON_CONFIG)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(shown, [f"{shown}: cannot read: {exc}"]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        where = f"{shown}:{m.group(1)}:{m.group(2)}" if m else shown
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(shown, [f"{where}: TOML syntax error: {msg}"]) from None
    return parse(raw, text, p)


def parse(raw: dict[str, Any], text: str, path: Path) -> Config:
    loc = _Locator(text)
    shown = str(path)
    problems: list[str] = []

    def at(line: int | None) -> str:
        return f"{shown}:{line}" if line else shown

    known = [*_SECTIONS, "sites"]
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
            line = loc.section(key) or loc.root.keys.get(key)
            problems.append(f"{at(line)}: unknown table or key '{key}'{hint}")

    sections: dict[str, Any] = {}
    for name, model in _SECTIONS.items():
        obj, errs = _validate_model(model, raw.get(name, {}))
        sections[name] = obj
        for key, msg in errs:
            problems.append(f"{at(loc.section(name, key))}: [{name}] {msg}")

    raw_sites = raw.get("sites", [])
    if not isinstance(raw_sites, list) or not raw_sites:
        problems.append(f"{at(None)}: no [[sites]] defined: add at least one site")
        raw_sites = []

    sites: list[Site] = []
    index_of: dict[str, int] = {}  # site id -> position of its [[sites]] table
    site_lines: dict[str, int] = {}
    seen_ids: dict[str, int] = {}
    seen_addr: dict[str, str] = {}
    for i, rs in enumerate(raw_sites):
        sid = rs.get("id") if isinstance(rs, dict) else None
        label = f"site '{sid}'" if isinstance(sid, str) else f"site #{i + 1}"
        obj, errs = _validate_model(Site, rs)
        for key, msg in errs:
            problems.append(f"{at(loc.site(i, key))}: {label}: {msg}")
        if obj is None:
            continue
        site: Site = obj  # type: ignore[assignment]
        line = loc.site(i)

        def bad(key: str, msg: str) -> None:
            problems.append(f"{at(loc.site(i, key))}: {label}: {msg}")

        if not _SLUG.match(site.id):
            bad("id", f"id {site.id!r} must be an ASCII slug: lowercase letters, digits and '-' (e.g. 'tien-du')")
        if site.id in seen_ids:
            bad("id", f"duplicate id '{site.id}' (first defined at line {seen_ids[site.id]}): ids must be unique")
        else:
            seen_ids[site.id] = line or 0
            site_lines[site.id] = line or 0
            index_of[site.id] = i
        if not valid_address(site.address):
            bad("address", f"invalid address {site.address!r}: use an IPv4 or IPv6 address or a host name")
        else:
            ak = address_key(site.address)
            if ak in seen_addr:
                bad("address", f"duplicate address {site.address!r}, already used by site '{seen_addr[ak]}'")
            else:
                seen_addr[ak] = site.id
        if site.level in ("district", "commune") and not site.district:
            bad("level", f"level '{site.level}' requires a 'district' key naming its district")
        if site.level == "province" and site.district:
            bad("district", "a province-level site takes no 'district' (remove it, or change 'level')")
        for email in site.admins:
            if not _EMAIL.match(email):
                bad("admins", f"invalid email {email!r} in 'admins'")
        if site.id in index_of and index_of[site.id] == i:
            sites.append(site)  # a duplicate id is reported above and not used further

    by_id = {s.id: s for s in sites}
    # Sites that failed their own checks still count as existing here, so one
    # typo does not cascade into "unknown parent" errors on all its children.
    raw_ok = [r for r in raw_sites if isinstance(r, dict)]
    known_ids = {r.get("id") for r in raw_ok} | set(by_id)
    district_sites = {r.get("district") for r in raw_ok if r.get("level") == "district"}
    for s in sites:
        i = index_of[s.id]
        if s.parent is not None:
            if s.parent == s.id:
                problems.append(f"{at(loc.site(i, 'parent'))}: site '{s.id}': parent is the site itself")
            elif s.parent not in known_ids:
                close = difflib.get_close_matches(s.parent, list(by_id), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problems.append(f"{at(loc.site(i, 'parent'))}: site '{s.id}': unknown parent '{s.parent}'{hint}")
        if s.level == "commune" and s.district and s.district not in district_sites:
            problems.append(
                f"{at(loc.site(i, 'district'))}: site '{s.id}': district '{s.district}' has no district-level site: "
                f"add a [[sites]] with level = \"district\" and district = \"{s.district}\""
            )
    problems.extend(
        f"{at(loc.site(index_of[c[0]], 'parent'))}: parent cycle: {' -> '.join(c)}: one of these must have no parent "
        "or another parent"
        for c in _cycles(by_id)
    )

    if problems:
        raise ConfigError(shown, sorted(problems, key=lambda p: _line_of(p, shown)))
    return Config(
        path=path,
        store=sections["store"],
        icmp=sections["icmp"],
        thresholds=sections["thresholds"],
        sites=tuple(sites),
        site_lines=site_lines,
    )


def _line_of(problem: str, shown: str) -> int:
    m = re.match(re.escape(shown) + r":(\d+)", problem)
    return int(m.group(1)) if m else 0


def _cycles(by_id: dict[str, Site]) -> list[list[str]]:
    """Each parent cycle once, as a path that returns to its start."""
    done: set[str] = set()
    found: list[list[str]] = []
    for start in by_id:
        path: list[str] = []
        index: dict[str, int] = {}
        node: str | None = start
        while node is not None and node in by_id and node not in done:
            if node in index:
                cyc = path[index[node]:]
                if len(cyc) > 1:  # a self-parent is reported on its own
                    found.append(cyc + [node])
                break
            index[node] = len(path)
            path.append(node)
            node = by_id[node].parent
        done.update(path)
    return found
