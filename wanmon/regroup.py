"""`wanmon regroup`: carry an inventory through a merger of administrative units.

Input: the config (sites as valid just before the first step) and a mapping table, tab-separated
with a header, one row per former commune-level unit (the shape of
`data/bacninh-2023-to-2025-merge.tsv`):

- `old_unit_name`, `old_district`: the unit as the inventory names it (a site's `district`, and
  its name after "UBND xã/phường/thị trấn");
- `old_kind_2023` (or `old_kind`), `old_gso_code`: its kind and statistics-office code;
- `unit_before_2025_07_01`, `code_before_2025_07_01` (optional): the unit it belonged to just
  before the reform: an interim step, applied at `--interim-at` where it differs;
- `new_unit_name` (with its kind: "xã Gia Bình"), `new_gso_code`, `nq1658_khoan` (optional): the
  unit from `--at` on.

Output: the config's text with a `[[sites.changes]]` under each site concerned, for an
operator to review (the rest of the file, comments included, is kept as written):

- at `--interim-at`: a site whose unit merged becomes "Điểm cầu <its unit> (nay thuộc <unit>)";
  the seat of the merged unit (the member whose code the unit keeps) is named "UBND <unit>";
- at `--at`: the district tier ends. Each new unit becomes a group (`district` = its name); its
  seat (the member whose code the new unit keeps; else the member of the same name; else the
  first in the file) becomes the unit's district-level site "UBND <unit>"; the other members
  become "Điểm cầu <former unit> (nay thuộc <unit>)"; the district-level sites of the former
  districts become province-level points named "<name> (cũ)".
- `parent` is never changed: a decree moves no cable. When a link is re-homed, add a change
  with `parent` at the instant of the work.

Ids never change; no site is added or removed. Pure apart from reading the table: `regroup()`
returns the new text, the CLI writes it.
"""

from __future__ import annotations

import csv
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from wanmon.config import Config, Site
from wanmon.errors import ConfigError
from wanmon.words import AFTER_DISTRICT_TIER

_KINDS = ("thị trấn", "phường", "xã")
_REQUIRED = ("old_unit_name", "old_district", "new_unit_name")


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text.strip())


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    old_name: str
    old_district: str
    old_kind: str  # lower case: "xã", "phường", "thị trấn" ("" when the table has no kind)
    old_code: str
    before_unit: str  # "" when the table has no interim step
    before_code: str
    new_unit: str
    new_code: str
    clause: str

    @property
    def old_unit(self) -> str:
        return f"{self.old_kind} {self.old_name}".strip()

    @property
    def interim(self) -> bool:
        """The unit changed at the interim step (merged, or changed kind)."""
        return bool(self.before_unit) and (
            self.before_unit != self.old_unit or (self.before_code or self.old_code) != self.old_code
        )

    @property
    def seat_before(self) -> bool:
        """Its site is the seat of the unit just before the reform (it keeps this unit's code)."""
        return not self.before_unit or (self.before_code or self.old_code) == self.old_code

    @property
    def seat_code(self) -> str:
        """The code of the unit this site is the seat of just before the reform ("" for none)."""
        return self.old_code if self.seat_before else ""


def read_table(path: Path) -> list[Row]:
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(shown, [f"{shown}: cannot read: {exc}"]) from None
    reader = csv.DictReader(text.splitlines(), delimiter="\t")
    cols = reader.fieldnames or []
    missing = [c for c in _REQUIRED if c not in cols]
    if missing:
        raise ConfigError(
            shown,
            [
                f"{shown}:1: mapping table without column(s) {', '.join(missing)}: the header needs "
                f"{', '.join(_REQUIRED)} (tab-separated), see `wanmon regroup --help`"
            ],
        )
    rows: list[Row] = []
    problems: list[str] = []
    for n, r in enumerate(reader, start=2):

        def col(*names: str, r: dict = r) -> str:
            return next((_nfc(r[c]) for c in names if r.get(c)), "")

        row = Row(
            line=n,
            old_name=col("old_unit_name"),
            old_district=col("old_district"),
            old_kind=col("old_kind_2023", "old_kind").lower(),
            old_code=col("old_gso_code"),
            before_unit=col("unit_before_2025_07_01"),
            before_code=col("code_before_2025_07_01"),
            new_unit=col("new_unit_name"),
            new_code=col("new_gso_code"),
            clause=col("nq1658_khoan"),
        )
        if not row.old_name or not row.old_district:
            problems.append(f"{shown}:{n}: old_unit_name and old_district are required")
        elif not row.new_unit:
            problems.append(
                f"{shown}:{n}: {row.old_unit} ({row.old_district}) has no new_unit_name: "
                "fill it in, or remove the row (its unit is then left as it is)"
            )
        rows.append(row)
    if problems:
        raise ConfigError(shown, problems)
    return rows


def bare_name(site_name: str) -> str:
    """A unit's name as the table gives it: "UBND xã Phật Tích" -> "Phật Tích"."""
    name = _nfc(site_name)
    if name.startswith("UBND "):
        name = name[len("UBND ") :]
    for kind in _KINDS:
        if name.lower().startswith(kind + " "):
            return name[len(kind) + 1 :]
    return name


@dataclass
class Plan:
    """What regroup writes: per site id, its new changes as (comment lines, TOML key lines)."""

    changes: dict[str, list[tuple[list[str], list[str]]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the operator must look at (also on stderr)
    tail: list[str] = field(default_factory=list)  # lines after the sites: the levels' names from --at

    def add(self, site_id: str, comments: list[str], keys: list[str]) -> None:
        self.changes.setdefault(site_id, []).append((comments, keys))


def _q(text: str) -> str:
    """A TOML basic string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def plan(
    cfg: Config,
    rows: list[Row],
    table_name: str,
    at: str,
    interim_at: str | None = None,
    reviews: dict[tuple[str, str], str] | None = None,
) -> Plan:
    """The changes that carry cfg's sites through the table's steps (instants as TOML writes them)."""
    from datetime import datetime

    reviews = reviews or {}
    first = datetime.fromisoformat(interim_at or at).timestamp()
    for s in cfg.sites:
        late = [ch.at.isoformat() for ch in s.changes if ch.at.timestamp() >= first]
        if late:
            raise ConfigError(
                str(cfg.path),
                [
                    f"{cfg.path}: site '{s.id}' already has a change at {late[0]}: regroup writes the changes "
                    f"from {interim_at or at} on; remove those first"
                ],
            )
    late_names = [ch.at.isoformat() for ch in cfg.page.level_names.changes if ch.at.timestamp() >= first]
    if late_names:
        raise ConfigError(
            str(cfg.path),
            [
                f"{cfg.path}: [page.level_names] already has a change at {late_names[0]}: regroup writes the "
                f"levels' names from {at} on; remove it first"
            ],
        )
    state = cfg.at(first - 1e-3)
    sites: list[Site] = list(state.sites)
    by_unit: dict[tuple[str, str], Site] = {}
    for s in sites:
        if s.level == "commune" and s.district:
            by_unit.setdefault((_nfc(s.district), bare_name(s.name)), s)
    out = Plan()
    matched: dict[str, Row] = {}
    for row in rows:
        site = by_unit.get((row.old_district, row.old_name))
        if site is None:
            out.notes.append(
                f"{table_name}:{row.line}: no commune site for {row.old_unit} ({row.old_district}): row skipped"
            )
            continue
        matched[site.id] = row
    order = {s.id: n for n, s in enumerate(sites)}
    members: dict[str, list[str]] = {}  # new unit -> site ids, in file order
    for sid in sorted(matched, key=order.__getitem__):
        members.setdefault(matched[sid].new_unit, []).append(sid)
    old_districts = {r.old_district for r in rows}

    def review(row: Row) -> list[str]:
        why = reviews.get((row.old_district, row.old_name))
        return [f"# REVIEW: {why}"] if why else []

    # the interim step: units merged before the reform
    if interim_at is not None:
        for sid in sorted(matched, key=order.__getitem__):
            row = matched[sid]
            if not row.interim:
                continue
            where = f"# {table_name}:{row.line}: {row.old_unit} -> {row.before_unit}"
            where += f" (GSO {row.before_code})" if row.before_code else ""
            if row.seat_before:
                name = f"UBND {row.before_unit}"
                where += ": the unit keeps this site's code, its seat" if row.before_unit != row.old_unit else ""
            else:
                name = f"Điểm cầu {row.old_unit} (nay thuộc {row.before_unit})"
            out.add(sid, [*review(row), where], [f"at = {interim_at}", f"name = {_q(name)}"])

    # the reform: every member joins its new unit, whose seat becomes its district-level site
    for unit, ids in members.items():
        seat = next(
            (sid for sid in ids if matched[sid].new_code and matched[sid].seat_code == matched[sid].new_code), None
        )
        why = "the unit keeps this site's code, its seat"
        if seat is None:
            seat = next((sid for sid in ids if matched[sid].old_name == bare_name(unit)), None)
            why = "its seat: the member of the same name (check it)"
        if seat is None:
            seat = ids[0]
            why = "its seat: the first member in the file (no code or name says which: check it)"
            out.notes.append(f"{unit}: no member keeps its code or name: '{seat}' is taken as its seat")
        for sid in ids:
            row = matched[sid]
            where = f"# {table_name}:{row.line}: {row.before_unit or row.old_unit} -> {unit}"
            where += f" (GSO {row.new_code})" if row.new_code else ""
            where += f", NQ 1658/NQ-UBTVQH15 khoản {row.clause}" if row.clause else ""
            keys = [f"at = {at}"]
            if sid == seat:
                where += f": {why}"
                keys += ['level = "district"', f"district = {_q(unit)}", f"name = {_q('UBND ' + unit)}"]
            else:
                former = row.before_unit if row.seat_before and row.before_unit else row.old_unit
                keys += [f"district = {_q(unit)}", f"name = {_q(f'Điểm cầu {former} (nay thuộc {unit})')}"]
            out.add(sid, [*review(row), where], keys)

    # the district tier ends: the former districts' own sites become province-level points
    for s in sites:
        if s.id in matched or s.district not in old_districts:
            continue
        if s.level == "commune":
            out.notes.append(f"site '{s.id}' ({s.name}, {s.district}) is in no row of {table_name}: left as it is")
            continue
        out.add(
            s.id,
            [f"# the district tier ends: '{s.district}' is no more"],
            [f"at = {at}", 'level = "province"', 'unset = ["district"]', f"name = {_q(s.name + ' (cũ)')}"],
        )
    out.tail = level_names_change(at)
    return out


def level_names_change(at: str) -> list[str]:
    """The [[page.level_names.changes]] that words the levels after the district tier ends
    (wanmon.words.AFTER_DISTRICT_TIER), as TOML lines with the comment that says why."""
    lines = [
        "# " + "=" * 77,
        f"# The levels' names from {at}, as the page shows them",
        '# ([page.level_names], README "Dated inventory"). The district tier ends: the',
        "# level `district` holds the new commune-level units (their seats), the level",
        "# `commune` the connection points inside them, the level `province` also the",
        "# former districts' own sites. The keys of the file stay; only the names change.",
        "# " + "=" * 77,
        "[[page.level_names.changes]]",
        f"at = {at}",
    ]
    for lang, levels in AFTER_DISTRICT_TIER.items():
        for level, w in levels.items():
            words = ", ".join(f"{k} = {_q(getattr(w, k))}" for k in ("name", "noun", "nouns", "heading"))
            lines.append(f"{lang}.{level} = {{ {words} }}")
    return lines


def render(text: str, p: Plan, header: list[str]) -> str:
    """text with each site's new [[sites.changes]] after its last key, and header on top."""
    lines = text.splitlines()
    # [[sites]] headers and the next header that is not one of the site's own sub-tables
    starts: list[int] = []
    bounds: list[int] = []
    for n, line in enumerate(lines):
        s = line.strip()
        if not s.startswith("["):
            continue
        name = s.strip("[] ").split("]")[0].strip()
        if s.startswith("[[") and name == "sites":
            if starts and len(bounds) < len(starts):
                bounds.append(n)
            starts.append(n)
        elif not name.startswith("sites.") and starts and len(bounds) < len(starts):
            bounds.append(n)
    if len(bounds) < len(starts):
        bounds.append(len(lines))
    inserts: dict[int, list[str]] = {}
    for start, end in zip(starts, bounds, strict=True):
        sid = _site_id(lines[start:end])
        if sid is None or sid not in p.changes:
            continue
        last = end - 1
        while last > start and (not lines[last].strip() or lines[last].lstrip().startswith("#")):
            last -= 1
        block: list[str] = []
        for comments, keys in p.changes[sid]:
            block += ["", *(f"  {c}" for c in comments), "  [[sites.changes]]", *(f"  {k}" for k in keys)]
        inserts[last] = block
    out = [*header]
    for n, line in enumerate(lines):
        out.append(line)
        out.extend(inserts.get(n, ()))
    if p.tail:
        out += ["", *p.tail]
    return "\n".join(out) + "\n"


def _site_id(block: list[str]) -> str | None:
    import tomllib

    for line in block:
        if line.strip().startswith("id"):
            try:
                value = tomllib.loads(line.strip()).get("id")
            except tomllib.TOMLDecodeError:
                continue
            if isinstance(value, str):
                return value
    return None
