"""The dated inventory: keys that change at an instant, service periods, and validate over time."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from conftest import MINIMAL, wanmon
from wanmon.config import ConfigError, load

REFORM = "2025-07-01T00:00:00+07:00"
T = datetime.fromisoformat(REFORM).timestamp()
DAY = 86400.0

# MINIMAL plus a second district; Phật Tích moves to it at the reform, renamed.
DATED = MINIMAL.replace(
    "[snmp]",
    """\
[[sites]]
id = "gia-binh"
name = "UBND huyện Gia Bình"
level = "district"
district = "Gia Bình"
parent = "dc-core"
address = "127.10.7.1"

[snmp]""",
).replace(
    'admins = ["quantri@phattich.tiendu.example"]\n',
    f"""admins = ["quantri@phattich.tiendu.example"]

  [[sites.changes]]
  at = {REFORM}
  district = "Gia Bình"
  parent = "gia-binh"
  name = "Điểm cầu xã Phật Tích (nay thuộc Gia Bình)"
""",
)


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load(path)
    return ei.value.problems


def _line(text: str, needle: str, nth: int = 1) -> int:
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return hits[nth - 1]


def test_keys_hold_from_the_instant_of_their_change(write_config):
    cfg = load(write_config(DATED))
    assert cfg.timeline.instants == (T,)
    before, after = cfg.at(T - 1), cfg.at(T)
    pt_before, pt_after = before.by_id["tien-du-phat-tich"], after.by_id["tien-du-phat-tich"]
    assert (pt_before.district, pt_before.parent, pt_before.name) == ("Tiên Du", "tien-du", "UBND xã Phật Tích")
    assert (pt_after.district, pt_after.parent) == ("Gia Bình", "gia-binh")
    assert pt_after.name == "Điểm cầu xã Phật Tích (nay thuộc Gia Bình)"
    # the keys the change does not give stay; the id never changes; the other sites are as written
    assert (pt_after.id, pt_after.address, pt_after.admins) == (pt_before.id, "::1", ("quantri@phattich.tiendu.example",))
    assert after.by_id["tien-du"] == before.by_id["tien-du"]
    assert [s.id for s in after.sites] == [s.id for s in cfg.sites]
    # the epochs: [-inf, T) and [T, inf), each asked for once and kept
    assert (before.end, after.start) == (T, T)
    assert cfg.at(T + 365 * DAY) is after and cfg.at(0) is before
    assert [e.start for e in cfg.timeline.epochs(T - DAY, T + DAY)] == [before.start, T]


def test_a_site_is_in_service_only_within_its_period(write_config):
    text = MINIMAL.replace(
        'admins = ["quantri@tiendu.example"]',
        'admins = ["quantri@tiendu.example"]\nretired_at = 2026-01-01T00:00:00+07:00',
    ).replace(
        'admins = ["quantri@phattich.tiendu.example"]',
        'admins = ["quantri@phattich.tiendu.example"]\nin_service_from = 2025-03-01T08:00:00+07:00\n'
        "retired_at = 2026-01-01T00:00:00+07:00",
    )
    cfg = load(write_config(text))
    start = datetime.fromisoformat("2025-03-01T08:00:00+07:00").timestamp()
    end = datetime.fromisoformat("2026-01-01T00:00:00+07:00").timestamp()
    assert cfg.timeline.instants == (start, end)

    def active(ts: float) -> list[str]:
        return [s.id for s in cfg.at(ts).active]

    assert active(start - 1) == ["dc-core", "tien-du"]
    assert active(start) == ["dc-core", "tien-du", "tien-du-phat-tich"]
    assert active(end - 1) == ["dc-core", "tien-du", "tien-du-phat-tich"]
    assert active(end) == ["dc-core"]
    # out of service, a site keeps its keys (reports name it), it is only not active
    assert cfg.at(end).by_id["tien-du"].name == "UBND huyện Tiên Du"
    assert not cfg.at(end).in_service("tien-du")


def test_unset_removes_a_key_and_a_change_of_snmp_keeps_the_other_snmp_keys(write_config):
    text = MINIMAL.replace(
        'admins = ["quantri@phattich.tiendu.example"]',
        'admins = ["quantri@phattich.tiendu.example"]\nsnmp = { port = 1161, retries = 2 }\n'
        f"\n  [[sites.changes]]\n  at = {REFORM}\n  level = \"province\"\n  unset = [\"district\", \"admins\"]\n"
        "  snmp = { port = 161 }",
    )
    cfg = load(write_config(text))
    td = cfg.at(T).by_id["tien-du-phat-tich"]
    assert (td.level, td.district, td.admins) == ("province", None, ())
    assert td.snmp is not None and (td.snmp.port, td.snmp.retries) == (161, 2)


def test_the_shipped_inventory_is_not_dated_and_has_one_epoch():
    cfg = load(Path(__file__).resolve().parent.parent / "sites.toml")
    assert cfg.timeline.instants == ()
    assert cfg.at(T).sites == cfg.sites and len(cfg.at(T).active) == 177


def test_ten_thousand_sites_with_a_change_each_share_their_epochs():
    """Pure logic (no file): the sweep copies the site list once per epoch asked for, from the
    nearest epoch already built; asking again costs a lookup."""
    from wanmon.config import Site, SiteChange
    from wanmon.dated import Timeline

    at = [datetime.fromisoformat(f"2025-07-{1 + i % 28:02d}T00:00:00+07:00") for i in range(10_000)]
    sites = [
        Site(
            id=f"s{i}",
            name=f"S{i}",
            level="province",
            address=f"127.1.{i // 250}.{i % 250 + 1}",
            changes=(SiteChange(at=at[i], name=f"S{i} (2025)"),),
        )
        for i in range(10_000)
    ]
    tl = Timeline(sites)
    assert len(tl.instants) == 28
    mid = tl.at(at[9].timestamp())  # the 10th of July: sites whose day is 1..10 are renamed
    renamed = [s for s in mid.sites if s.name.endswith("(2025)")]
    assert len(renamed) == sum(1 for a in at if a <= at[9])
    assert tl.at(at[9].timestamp() + 1) is mid
    late = tl.at(at[27].timestamp())
    assert all(s.name.endswith("(2025)") for s in late.sites)


# (description, edit of DATED, words the message must contain, needle of the line it names)
_CYCLE = DATED.replace(
    'address = "127.10.7.1"\n',
    f'address = "127.10.7.1"\n\n  [[sites.changes]]\n  at = {REFORM}\n  parent = "tien-du-phat-tich"\n',
)
OVER_TIME = [
    (
        "cycle at an instant",
        _CYCLE,
        ["parent cycle from 2025-07-01T00:00:00+07:00", "tien-du-phat-tich -> gia-binh -> tien-du-phat-tich"],
        ('parent = "gia-binh"', 1),
    ),
    (
        "unknown parent from a change",
        DATED.replace('parent = "gia-binh"', 'parent = "gia-bihn"'),
        ["unknown parent 'gia-bihn'", "did you mean 'gia-binh'", "from 2025-07-01T00:00:00+07:00"],
        ('parent = "gia-bihn"', 1),
    ),
    (
        "parent retired while a child hangs from it",
        DATED.replace('address = "127.10.2.1"', 'address = "127.10.2.1"\nretired_at = 2025-01-01T00:00:00+07:00'),
        ["site 'tien-du-phat-tich'", "parent 'tien-du' leaves service at 2025-01-01T00:00:00+07:00", "another parent"],
        ('parent = "tien-du"', 1),
    ),
    (
        "parent not yet in service",
        DATED.replace('address = "127.10.7.1"', 'address = "127.10.7.1"\nin_service_from = 2025-08-01T00:00:00+07:00'),
        ["parent 'gia-binh' is not in service from 2025-07-01", "enters service at 2025-08-01"],
        ('parent = "gia-binh"', 1),
    ),
    (
        "changes out of order",
        DATED.replace(
            "(nay thuộc Gia Bình)\"\n",
            "(nay thuộc Gia Bình)\"\n\n  [[sites.changes]]\n  at = 2024-12-01T00:00:00+07:00\n  contact = \"Anh Nam\"\n",
        ),
        ["comes after the one at"],
        ("at = 2024-12-01", 1),
    ),
    (
        "two changes at one instant",
        DATED.replace('  name = "Điểm cầu', f'\n  [[sites.changes]]\n  at = {REFORM}\n  name = "Điểm cầu'),
        ["two changes at 2025-07-01T00:00:00+07:00", "merge them"],
        (f"at = {REFORM}", 2),
    ),
    (
        "retired before it entered service",
        DATED.replace(
            'address = "127.10.7.1"',
            'address = "127.10.7.1"\nin_service_from = 2025-01-01T00:00:00+07:00\nretired_at = 2024-01-01T00:00:00+07:00',
        ),
        ["site 'gia-binh'", "retired_at 2024-01-01T00:00:00+07:00 is not after in_service_from"],
        ("retired_at = 2024", 1),
    ),
    (
        "a change after retirement",
        DATED.replace('address = "::1"', 'address = "::1"\nretired_at = 2025-06-01T00:00:00+07:00'),
        ["change at 2025-07-01T00:00:00+07:00 is not before the site leaves service", "remove it"],
        (f"at = {REFORM}", 1),
    ),
    (
        "an id in a change",
        DATED.replace('  district = "Gia Bình"\n  parent', '  id = "gia-binh-phat-tich"\n  district = "Gia Bình"\n  parent'),
        ["a site's id never changes", "retired_at", "in_service_from"],
        ('id = "gia-binh-phat-tich"', 1),
    ),
    (
        "a key not allowed in a change",
        DATED.replace('  district = "Gia Bình"\n  parent', '  distrcit = "Gia Bình"\n  parent'),
        ["change #1", "unknown key 'distrcit'", "did you mean 'district'"],
        ("distrcit", 1),
    ),
    (
        "a service period in a change",
        DATED.replace('  district = "Gia Bình"\n  parent', '  retired_at = 2026-01-01T00:00:00+07:00\n  district = "Gia Bình"\n  parent'),
        ["'retired_at' belongs to the site", "[[sites]] table"],
        ("retired_at = 2026", 1),
    ),
    (
        "an instant without its offset",
        DATED.replace(f"at = {REFORM}", "at = 2025-07-01T00:00:00"),
        ["must be a date-time with its UTC offset", "2025-07-01T00:00:00+07:00"],
        ("at = 2025-07-01", 1),
    ),
    (
        "a date for an instant",
        DATED.replace(f"at = {REFORM}", "at = 2025-07-01"),
        ["must be a date-time with its UTC offset", "2025-07-01T00:00:00+07:00"],
        ("at = 2025-07-01", 1),
    ),
    (
        "a change that says nothing",
        DATED.replace(
            '  district = "Gia Bình"\n  parent = "gia-binh"\n  name = "Điểm cầu xã Phật Tích (nay thuộc Gia Bình)"\n', ""
        ),
        ["says nothing"],
        ("[[sites.changes]]", 1),
    ),
    (
        "an address used by two sites at once",
        DATED.replace(f"  at = {REFORM}\n", f'  at = {REFORM}\n  address = "127.10.2.1"\n'),
        ["site 'tien-du-phat-tich'", "duplicate address '127.10.2.1'", "'tien-du'", "from 2025-07-01"],
        ('address = "127.10.2.1"', 2),
    ),
    (
        "a district without its district-level site from an instant",
        DATED.replace('  district = "Gia Bình"\n  parent = "gia-binh"', '  district = "Lương Tài"\n  parent = "gia-binh"'),
        ["district 'Lương Tài' has no district-level site from 2025-07-01"],
        ('district = "Lương Tài"', 1),
    ),
    (
        "a change that leaves the site invalid",
        DATED.replace('  district = "Gia Bình"\n  parent', '  unset = ["district"]\n  parent'),
        ["from 2025-07-01T00:00:00+07:00", "level 'commune' requires a 'district'"],
        ("unset = ", 1),
    ),
]


@pytest.mark.parametrize("name,text,words,where", OVER_TIME, ids=[c[0] for c in OVER_TIME])
def test_validate_checks_every_state_the_file_describes(write_config, name, text, words, where):
    path = write_config(text)
    problems = _problems(path)
    joined = "\n".join(problems)
    for w in words:
        assert w in joined, f"{name}: {w!r} not in {joined!r}"
    line = _line(text, *where)
    assert any(p.startswith(f"{path}:{line}:") and words[0] in p for p in problems), (name, line, problems)


def test_the_address_of_a_retired_site_may_be_reused_after_it(write_config):
    text = DATED.replace('address = "127.10.7.1"', 'address = "127.10.7.1"\nretired_at = 2025-07-01T00:00:00+07:00')
    text = text.replace('  parent = "gia-binh"', '  parent = "tien-du"\n  address = "127.10.7.1"')
    text = text.replace('  district = "Gia Bình"\n', '  district = "Tiên Du"\n')
    cfg = load(write_config(text))
    after = cfg.at(T)
    assert after.by_id["tien-du-phat-tich"].address == "127.10.7.1" and not after.in_service("gia-binh")


def test_cli_validate_names_the_instant_and_exits_2(write_config):
    path = write_config(_CYCLE)
    r = wanmon("--config", str(path), "validate")
    assert r.returncode == 2
    assert "parent cycle from 2025-07-01T00:00:00+07:00" in r.stderr
    ok = wanmon("--config", str(write_config(DATED)), "validate")
    assert ok.returncode == 0, ok.stderr


def test_a_large_dated_file_is_cached_with_its_instants(tmp_path, monkeypatch):
    """The parsed-TOML cache keeps a dated inventory's instants (marshal cannot store dates):
    the second load reads the cache and gives the same keys at the same instants."""
    import tomllib

    from wanmon import config as C

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sites = "".join(
        f'\n[[sites]]\nid = "s{i:04d}"\nname = "Điểm số {i:04d}"\nlevel = "province"\n'
        f'address = "127.1.{i // 250}.{1 + i % 250}"\n'
        + ("in_service_from = 2024-01-01T00:00:00+07:00\n" if i % 3 == 0 else "")
        + f'[[sites.changes]]\nat = 2025-07-01T00:00:{i % 60:02d}+07:00\nname = "Điểm mới {i:04d}"\n'
        for i in range(1000)
    )
    path = tmp_path / "sites.toml"
    path.write_text('[store]\npath = "var/w.db"\n' + sites, encoding="utf-8")
    first = C.load(path)
    assert len(list((tmp_path / "cache" / "wanmon").iterdir())) == 1  # the cache was written
    parsed = []
    monkeypatch.setattr(C.tomllib, "loads", lambda text: parsed.append(1) or tomllib.loads(text))
    again = C.load(path)
    assert parsed == []  # read from the cache
    assert again.timeline.instants == first.timeline.instants and len(again.timeline.instants) == 61
    for ts in (datetime.fromisoformat(t).timestamp() for t in ("2024-06-01T00:00:00+07:00", "2025-07-01T00:00:30+07:00")):
        assert [(s.name, again.at(ts).in_service(s.id)) for s in again.at(ts).sites] == [
            (s.name, first.at(ts).in_service(s.id)) for s in first.at(ts).sites
        ]
    assert again.sites[3].in_service_from == datetime.fromisoformat("2024-01-01T00:00:00+07:00")
