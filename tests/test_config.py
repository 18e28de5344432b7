"""Validation: one case per class of error, each named with its place; exit 2, nothing written."""

from __future__ import annotations

import stat
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import MINIMAL, REPO, wanmon
from wanmon.config import ConfigError, load, valid_address


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load(path)
    return ei.value.problems


def test_minimal_is_valid(write_config):
    cfg = load(write_config())
    assert [s.id for s in cfg.sites] == ["dc-core", "tien-du", "tien-du-phat-tich"]
    assert cfg.icmp.count == 3 and cfg.icmp.timeout_ms == 500
    assert cfg.store_path == cfg.path.parent / "var" / "wanmon.db"


def test_defaults_when_sections_absent(write_config):
    text = MINIMAL.split("[[sites]]", 1)[1]
    cfg = load(write_config("[[sites]]" + text))
    assert (cfg.icmp.count, cfg.icmp.interval_ms, cfg.icmp.timeout_ms) == (3, 200, 1000)
    assert cfg.store.path == "var/wanmon.db"
    assert cfg.thresholds.degraded_loss_pct == 10.0


# (description, edit of MINIMAL, words the message must contain, expected line or None)
CASES = [
    ("syntax", lambda t: t.replace('count = 3', 'count = = 3'), ["TOML syntax error"], 5),
    ("unknown site key", lambda t: t.replace('address = "127.10.2.1"', 'adress = "127.10.2.1"'),
     ["site 'tien-du'", "unknown key 'adress'", "did you mean 'address'"], 22),
    ("unknown section key", lambda t: t.replace("timeout_ms = 500", "timeout = 500"),
     ["[icmp]", "unknown key 'timeout'", "timeout_ms"], 7),
    ("unknown table", lambda t: "[stor]\npath = 'x'\n" + t, ["unknown table or key 'stor'", "did you mean 'store'"], 1),
    ("missing required", lambda t: t.replace('name = "UBND huyện Tiên Du"\n', ""),
     ["site 'tien-du'", "missing required key 'name'"], None),
    ("duplicate id", lambda t: t.replace('id = "tien-du-phat-tich"', 'id = "tien-du"').replace('parent = "tien-du"\n', ""),
     ["duplicate id 'tien-du'"], 26),
    ("duplicate address", lambda t: t.replace('address = "::1"', 'address = "127.10.2.1"'),
     ["duplicate address", "tien-du"], 31),
    ("duplicate address (ipv6 spelling)", lambda t: t.replace('address = "::1"', 'address = "0:0:0:0:0:0:0:1"').replace(
        'address = "127.0.0.1"', 'address = "::1"'), ["duplicate address"], None),
    ("invalid address", lambda t: t.replace('address = "127.10.2.1"', 'address = "127.10.2.300"'),
     ["site 'tien-du'", "invalid address '127.10.2.300'"], 22),
    ("unknown parent", lambda t: t.replace('parent = "tien-du"', 'parent = "tien-duu"'),
     ["site 'tien-du-phat-tich'", "unknown parent 'tien-duu'", "did you mean 'tien-du'"], 30),
    ("parent cycle", lambda t: t.replace('address = "127.0.0.1"', 'address = "127.0.0.1"\nparent = "tien-du-phat-tich"'),
     ["parent cycle", "dc-core", "tien-du", "tien-du-phat-tich"], None),
    ("self parent", lambda t: t.replace('parent = "tien-du"', 'parent = "tien-du-phat-tich"'), ["parent is the site itself"], 30),
    ("commune without district site", lambda t: t.replace('district = "Tiên Du"\nparent = "tien-du"', 'district = "Gia Bình"\nparent = "tien-du"'),
     ["site 'tien-du-phat-tich'", "district 'Gia Bình' has no district-level site"], 29),
    ("district level without district", lambda t: t.replace('district = "Tiên Du"\nparent = "dc-core"', 'parent = "dc-core"'),
     ["site 'tien-du'", "requires a 'district'"], None),
    ("invalid email", lambda t: t.replace('"quantri@tiendu.example"', '"quantri at tiendu"'),
     ["site 'tien-du'", "invalid email 'quantri at tiendu'"], 23),
    ("non-positive timing", lambda t: t.replace("timeout_ms = 500", "timeout_ms = 0"), ["[icmp] timeout_ms = 0: must be a number from 1 to 60000"], 7),
    ("negative interval", lambda t: t.replace("interval_ms = 50", "interval_ms = -5"), ["[icmp] interval_ms = -5: must be a number from 1 to 60000"], 6),
    ("wrong type", lambda t: t.replace("count = 3", 'count = "3"'), ["[icmp]", "count"], 5),
    ("bad level", lambda t: t.replace('level = "commune"', 'level = "village"'), ["site 'tien-du-phat-tich'", "level", "province"], 28),
    ("bad id", lambda t: t.replace('id = "tien-du-phat-tich"', 'id = "Phật Tích"'), ["ASCII slug"], 26),
    ("no sites", lambda t: t.split("[[sites]]")[0], ["no [[sites]]"], None),
    *[(f"special address {addr}", (lambda a: lambda t: t.replace('address = "127.10.2.1"', f'address = "{a}"'))(addr),
       ["site 'tien-du'", *words], 22) for addr, words in [
        ("0.0.0.0", ["unspecified address"]), ("::", ["unspecified address"]),
        ("255.255.255.255", ["broadcast address"]), ("224.0.0.1", ["multicast group"]),
        ("ff02::1", ["multicast group"]), ("::ffff:127.0.0.1", ["IPv4-mapped", "'127.0.0.1'"]),
        ("fe80::1", ["link-local", "fe80::1%eth0"]), ("fe80::1%wmnosuch9", ["no network interface 'wmnosuch9'"]),
    ]],
    ("unknown guard site", lambda t: t.replace("[[sites]]", '[alerts]\nguard_sites = ["dc-cor"]\n\n[[sites]]', 1),
     ["[alerts] guard_sites", "unknown site 'dc-cor'", "did you mean 'dc-core'"], None),
    ("district ending in a backslash", lambda t: t.replace('district = "Tiên Du"\nparent = "dc-core"',
                                                           'district = "Tiên Du\\\\"\nparent = "dc-core"'),
     ["site 'tien-du'", "district 'Tiên Du\\\\' ends in a backslash", "InfluxDB 1.x cannot store"], 20),
    ("name ending in a backslash", lambda t: t.replace('name = "UBND huyện Tiên Du"', 'name = "UBND huyện Tiên Du\\\\"'),
     ["site 'tien-du'", "name 'UBND huyện Tiên Du\\\\' ends in a backslash"], 18),
    ("agent id ending in a backslash", lambda t: "[agent]\nid = 'noc\\'\n" + t,
     ["[agent] id 'noc\\\\' ends in a backslash", "remove the backslash"], 2),
    *[(f"heartbeat url {why}", (lambda u: lambda t: f'[agent]\nheartbeat_url = "{u}"\n\n' + t)(url),
       ["[agent] heartbeat_url", words], 2) for why, url, words in [
        ("not http", "ftp://kuma.example/api/push/tok", "http:// or https://"),
        ("no host", "https:///api/push/tok", "with a host"),
        ("credentials", "https://me:pw@kuma.example/api/push/tok", "must not carry credentials"),
        ("bad port", "http://kuma.example:99999/api/push/tok", "not a valid URL"),
        ("space", "http://kuma.example/api/push/t ok", "spaces"),
    ]],
    ("heartbeat budget", lambda t: '[agent]\nheartbeat_url = "http://127.0.0.1:3001/api/push/tok"\n'
     'heartbeat_budget_s = 0\n\n' + t, ["[agent]", "heartbeat_budget_s", "must be a number above 0 and at most 60"], 3),
    ("empty guard sites", lambda t: t.replace("[[sites]]", "[alerts]\nguard_sites = []\n\n[[sites]]", 1),
     ["[alerts] guard_sites is empty", "without a parent"], None),
]


@pytest.mark.parametrize("name,edit,words,line", CASES, ids=[c[0] for c in CASES])
def test_each_error_class_is_reported_with_its_place(write_config, name, edit, words, line):
    path = write_config(edit(MINIMAL))
    problems = _problems(path)
    text = "\n".join(problems)
    for w in words:
        assert w in text, f"{name}: {w!r} not in {text!r}"
    if line is not None:
        assert f"{path}:{line}" in text, f"{name}: line {line} not named in {text!r}"


def test_all_problems_reported_at_once(write_config):
    bad = (MINIMAL.replace("timeout_ms = 500", "timeout_ms = -1")
           .replace('address = "127.10.2.1"', 'address = "not an address"')
           .replace('"quantri@phattich.tiendu.example"', '"nobody"')
           .replace('parent = "tien-du"', 'parent = "ghost"'))
    problems = _problems(write_config(bad))
    assert len(problems) == 4, problems


def _line(text: str, needle: str) -> int:
    return text.splitlines().index(needle) + 1


# Values that passed `validate` and then broke: inf timeout (traceback in the sweep), 1e9 ms
# interval or 1e-9 pps (a check that never ends, holding the cycle lock), inf daemon interval
# (internal error; `Infinity` in the report's JSON). Each is refused with its line and range.
NUMERIC_EDGES = MINIMAL.replace("count = 3", "count = 3\nrate_pps = 1e-9").replace(
    "interval_ms = 50", "interval_ms = 1e9").replace("timeout_ms = 500", "timeout_ms = inf") + (
    "\n[schedule]\nicmp_interval_s = inf\n\n[thresholds]\ndegraded_loss_pct = nan\n\n"
    "[alerts]\nconfirm_cycles = inf\nguard_fraction = 0\n\n"
    '[influxdb]\nurl = "http://127.0.0.1:1"\napi = "v1"\nspool_max_age_h = -inf\n')
NUMERIC_EDGE_MESSAGES = [
    ("rate_pps = 1e-9", "[icmp] rate_pps = 1e-09: must be a number from 1 to 1000000"),
    ("interval_ms = 1e9", "[icmp] interval_ms = 1e+09: must be a number from 1 to 60000"),
    ("timeout_ms = inf", "[icmp] timeout_ms = inf: must be a number from 1 to 60000"),
    ("icmp_interval_s = inf", "[schedule] icmp_interval_s = inf: must be a number from 1 to 86400"),
    ("degraded_loss_pct = nan", "[thresholds] degraded_loss_pct = nan: must be a number above 0 and at most 100"),
    ("confirm_cycles = inf", "[alerts] confirm_cycles = inf: must be a number from 1 to 100"),
    ("guard_fraction = 0", "[alerts] guard_fraction = 0: must be a number above 0 and at most 1"),
    ("spool_max_age_h = -inf", "[influxdb] spool_max_age_h = -inf: must be a number above 0 and at most 87600"),
]


def test_non_finite_and_absurd_numbers_are_refused_with_their_range(write_config):
    path = write_config(NUMERIC_EDGES)
    problems = _problems(path)
    assert problems == [f"{path}:{_line(NUMERIC_EDGES, key)}: {msg}" for key, msg in NUMERIC_EDGE_MESSAGES]


def test_a_site_snmp_number_out_of_range_names_the_site_and_its_line(write_config):
    text = MINIMAL.replace('address = "127.10.2.1"', 'address = "127.10.2.1"\nsnmp = { timeout_ms = inf, port = 0 }')
    path = write_config(text)
    line = _line(text, "snmp = { timeout_ms = inf, port = 0 }")
    assert _problems(path) == [f"{path}:{line}: site 'tien-du': snmp.port = 0: must be a number from 1 to 65535",
                               f"{path}:{line}: site 'tien-du': snmp.timeout_ms = inf: must be a number from 1 to 60000"]


def test_cli_refuses_the_edges_before_probing(write_config, tmp_path):
    """`validate` lists them all and exits 2; `check` (which hung or crashed on them) exits 2 at once."""
    path = write_config(NUMERIC_EDGES.replace("[influxdb]", "[influxdbX]").split("[influxdbX]")[0])
    r = wanmon("--config", str(path), "validate", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    for key, msg in NUMERIC_EDGE_MESSAGES[:-1]:
        assert f"{path}:{_line(path.read_text(encoding='utf-8'), key)}: {msg}" in r.stderr, r.stderr
    r = wanmon("--config", str(path), "check", "--json", cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and r.stdout == "" and "must be a number from 1 to 60000" in r.stderr
    assert not (tmp_path / "var").exists()


def _numeric_settings():
    from wanmon import config as C

    tables = {**{f"[{k}]": m for k, m in C._SECTIONS.items()}, "[smtp]": C.SmtpSettings,
              "[influxdb]": C.InfluxSettings, "site snmp": C.SiteSnmp}
    required = {"[smtp]": {"host": "h", "from": "a@b.example"}, "[influxdb]": {"url": "http://127.0.0.1:1"}}
    for table, model in tables.items():
        for name, f in model.model_fields.items():
            kinds = getattr(f.annotation, "__args__", (f.annotation,))
            # (not site snmp `uplink`: a name or an ifIndex, only ever compared with the agent's)
            if (int in kinds or float in kinds) and bool not in kinds and str not in kinds:
                yield table, model, name, required.get(table, {})


@pytest.mark.parametrize("table,model,name,required", list(_numeric_settings()),
                         ids=[f"{t} {n}" for t, _, n, _ in _numeric_settings()])
def test_every_number_setting_has_a_finite_range(table, model, name, required):
    """A new number setting without a range fails here: inf, nan and 1e18 are refused, and the
    message names the range."""
    from pydantic import ValidationError

    from wanmon.config import _allowed

    allowed = _allowed(model, [name])
    assert allowed is not None, f"{table} {name}: give it a range with _range(default, lo, hi)"
    for bad in (float("inf"), float("-inf"), float("nan"), 1e18, -1e18):
        with pytest.raises(ValidationError):
            model.model_validate({**required, name: bad})


def test_readme_lists_every_range():
    """README's table of ranges is the models' own."""
    import re

    from wanmon.config import _allowed, _number

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\[\w+\] \w+)` \| ([^|]+?) \| [^|]+ \|$", readme, re.M))
    want = {f"{t} {n}": _allowed(m, [n]) for t, m, n, _ in _numeric_settings() if t != "site snmp"}
    assert rows == want


@pytest.mark.parametrize("cmd", [["validate"], ["check"], ["check", "--json"], ["status"]])
def test_cli_exits_2_and_writes_nothing(write_config, tmp_path, cmd):
    path = write_config(MINIMAL.replace('address = "127.10.2.1"', 'adress = "127.10.2.1"'))
    r = wanmon("--config", str(path), *cmd, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert f"{path}:22" in r.stderr and "adress" in r.stderr
    assert r.stdout == ""
    assert not (tmp_path / "var").exists()


def test_env_var_selects_config(write_config, tmp_path):
    path = write_config()
    r = wanmon("validate", cwd=tmp_path, env={"WANMON_CONFIG": str(path)})
    assert r.returncode == 0, r.stderr
    assert "3 sites" in r.stdout


def test_missing_file_is_a_config_error(tmp_path):
    r = wanmon("--config", str(tmp_path / "nope.toml"), "validate", cwd=tmp_path)
    assert r.returncode == 2
    assert "not found" in r.stderr


@pytest.mark.parametrize("addr,ok", [
    ("127.0.0.1", True), ("::1", True), ("fd00::1", True), ("router-1.bacninh.example", True),
    ("localhost", True), ("127.0.0.300", False), ("10.1.1", False), ("bad_host!", False), ("-x.example", False), ("", False),
])
def test_address_forms(addr, ok):
    assert valid_address(addr) is ok


def test_shipped_sites_toml():
    """Acceptance 2: 177 sites, 3 levels, the real unit names, communes under their district."""
    r = wanmon("--config", str(REPO / "sites.toml"), "validate")
    assert r.returncode == 0, r.stderr
    cfg = load(REPO / "sites.toml")
    sites = cfg.sites
    assert len(sites) == 177
    by_level = {lv: [s for s in sites if s.level == lv] for lv in ("province", "district", "commune")}
    assert {lv: len(v) for lv, v in by_level.items()} == {"province": 35, "district": 16, "commune": 126}
    by_id = {s.id: s for s in sites}
    for c in by_level["commune"]:
        parent = by_id[c.parent]
        assert parent.level == "district" and parent.district == c.district, c.id
    import ipaddress
    assert all(ipaddress.ip_address(s.address).is_loopback for s in sites)
    assert all(a.endswith(".example") for s in sites for a in s.admins)
    data = REPO / "data" / "bacninh-units-2023.tsv"  # the reference data (data/README.md)
    import csv
    rows = list(csv.DictReader(data.open(encoding="utf-8"), delimiter="\t"))
    names = {s.name for s in by_level["province"]}
    for row in rows:
        if row["level"] == "province":
            assert row["name"] in names, row
        else:
            pool = [s.name for s in by_level[row["level"]] if s.district == row["district"]]
            assert any(n.endswith(" " + row["name"]) for n in pool), row
    counts = {}
    for c in by_level["commune"]:
        counts[c.district] = counts.get(c.district, 0) + 1
    assert counts == {"Bắc Ninh": 19, "Từ Sơn": 12, "Quế Võ": 21, "Thuận Thành": 18, "Yên Phong": 14,
                      "Tiên Du": 14, "Gia Bình": 14, "Lương Tài": 14}
    assert tomllib.loads((REPO / "sites.toml").read_text())["store"]["path"] == "var/wanmon.db"


def test_a_large_file_is_parsed_once_per_change_and_a_bad_cache_is_ignored(tmp_path, monkeypatch):
    """Files over 64 KB keep their parsed TOML in ~/.cache/wanmon (XDG_CACHE_HOME) under the
    text's SHA-256: the same config back, any edit parsed again, a damaged cache ignored."""
    from wanmon import config as C

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sites = "".join(f'\n[[sites]]\nid = "s{i:04d}"\nname = "Điểm số {i:04d}"\nlevel = "province"\n'
                    f'address = "127.1.{i // 250}.{1 + i % 250}"\n' for i in range(1000))
    path = tmp_path / "sites.toml"
    path.write_text('[store]\npath = "var/w.db"\n' + sites, encoding="utf-8")
    first = C.load(path)
    (cache,) = (tmp_path / "cache" / "wanmon").iterdir()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600 and stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    again = C.load(path)
    assert [s.name for s in again.sites] == [s.name for s in first.sites] and len(again.sites) == 1000
    path.write_text(path.read_text(encoding="utf-8").replace("Điểm số 0007", "Điểm đổi tên"), encoding="utf-8")
    assert C.load(path).sites[7].name == "Điểm đổi tên"          # an edit is never hidden by the cache
    cache.write_bytes(b"\x00garbage")
    assert C.load(path).sites[7].name == "Điểm đổi tên"          # a damaged cache is ignored (and rewritten)
    path.write_text(path.read_text(encoding="utf-8") + "\n[[sites]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="TOML syntax error"):  # errors still come from the parser
        C.load(path)


def _thousand_dated(folder: Path, change: Callable[[int], str]) -> Path:
    """sites.toml with 1,000 sites (large enough for the TOML cache), site i with one change,
    change(i) its lines (its `at` and keys)."""
    sites = "".join(f'\n[[sites]]\nid = "s{i:04d}"\nname = "Điểm số {i:04d}"\nlevel = "province"\n'
                    f'address = "127.1.{i // 250}.{1 + i % 250}"\n[[sites.changes]]\n{change(i)}\n'
                    for i in range(1000))
    path = folder / "sites.toml"
    path.write_text('[store]\npath = "var/w.db"\n' + sites, encoding="utf-8")
    return path


def test_a_large_dated_file_is_cached_with_its_instants(tmp_path, monkeypatch):
    """A dated inventory's instants (offset date-times; dates and times elsewhere) come back from
    the cache as TOML gave them: the same instants, offsets, keys; the cache read, not the text."""
    from wanmon import config as C

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = _thousand_dated(tmp_path, lambda i: f'at = 2025-07-01T00:00:00{"+07:00" if i % 2 else "Z"}\nname = "Mới {i}"')
    text = path.read_text(encoding="utf-8")
    first = C.load(path)
    (cache,) = (tmp_path / "cache" / "wanmon").iterdir()
    raw = C._parse_toml(text, path).raw
    assert raw == tomllib.loads(text)  # from the cache: equal, offsets and all
    assert [type(ch["at"].tzinfo) for ch in raw["sites"][0]["changes"] + raw["sites"][1]["changes"]] == \
        [type(ch["at"].tzinfo) for s in tomllib.loads(text)["sites"][:2] for ch in s["changes"]]
    again = C.load(path)
    assert again.timeline.instants == first.timeline.instants and len(again.timeline.instants) == 2
    assert again.at(again.timeline.instants[-1]).by_id["s0001"].name == "Mới 1"
    cache.write_bytes(cache.read_bytes().replace("Mới 1".encode(), "Mỡi 1".encode()))  # same length: still valid
    assert C.load(path).at(again.timeline.instants[-1]).by_id["s0001"].name == "Mỡi 1"  # the cache is what is read


def test_a_file_found_valid_skips_its_checks_over_time_until_anything_changes(tmp_path, monkeypatch):
    """The cache marks a large file that a load found valid, so the next loads skip the checks
    of each site and every state it describes (they depend on the data alone); but a cache
    altered since, or other checks' code, is checked in full: a problem is never hidden behind
    the mark."""
    from wanmon import config as C

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ran = []
    real = C._over_time
    monkeypatch.setattr(C, "_over_time", lambda *a: (ran.append(1), real(*a)))
    path = _thousand_dated(tmp_path, lambda i: f'at = 2025-07-01T00:00:00+07:00\naddress = "127.2.{i // 250}.{1 + i % 250}"')
    first = C.load(path)
    second = C.load(path)
    third = C.load(path)
    assert len(ran) == 1  # the first load only: it found the file valid and marked its cache
    assert [s.address for s in third.at(1.8e9).sites] == [s.address for s in first.at(1.8e9).sites]
    assert third.at(1.8e9).by_id["s0001"].address == "127.2.0.2" and second.timeline.instants == first.timeline.instants
    (cache,) = (tmp_path / "cache" / "wanmon").iterdir()
    # the cache altered (same length: it still reads): two sites share an address after the change; a bad address
    import marshal

    good = cache.read_bytes()

    def altered(site: int, edit) -> bytes:
        """The cache with one site's data edited, its mark kept as it was."""
        tag, digest, body, mark = marshal.loads(good)
        raw, dates = marshal.loads(body)
        edit(raw["sites"][site])
        return marshal.dumps((tag, digest, marshal.dumps((raw, dates)), mark))

    cache.write_bytes(altered(249, lambda s: s["changes"][0].update(address="127.2.0.249")))
    with pytest.raises(ConfigError, match="duplicate address '127.2.0.249'"):
        C.load(path)
    cache.write_bytes(altered(5, lambda s: s.update(address="127.1.0.6 x")))
    with pytest.raises(ConfigError, match="invalid address '127.1.0.6 x'"):  # a site's own keys: checked again too
        C.load(path)
    cache.write_bytes(good)
    path.write_text(path.read_text(encoding="utf-8") + "\n", encoding="utf-8")  # a new cache
    n = len(ran)
    C.load(path)
    C.load(path)
    assert len(ran) == n + 1  # checked once, marked, then skipped
    n = len(ran)
    C._checks_code.cache_clear()
    monkeypatch.setattr(C, "_checks_code", lambda: b"other checks")
    C.load(path)
    assert len(ran) == n + 1  # other code: the mark does not hold


def test_cached_parses_not_written_for_a_month_go_when_another_is_written(tmp_path, monkeypatch):
    """One cached parse per config path: those of files gone (a benchmark's temporary folder) do
    not pile up: a month unwritten, they go when another file's is written; recent ones stay."""
    import os

    from wanmon import config as C

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "wanmon"
    folder.mkdir(parents=True)
    old, recent = folder / "toml-0000000000000001.marshal", folder / "toml-0000000000000002.marshal"
    old.write_bytes(b"x")
    recent.write_bytes(b"y")
    month = 31 * 86400
    os.utime(old, (os.path.getatime(old) - month, os.path.getmtime(old) - month))
    path = tmp_path / "sites.toml"
    path.write_text(MINIMAL + "".join(f'\n# {"padding " * 12}{i}' for i in range(1000)), encoding="utf-8")
    assert len(path.read_bytes()) >= C._TOML_CACHE_MIN
    C.load(path)
    assert not old.exists() and recent.exists()
    assert C._toml_cache_file(path).exists()


def test_gen_sites_reproduces_the_shipped_file(tmp_path):
    """tools/gen_sites.py writes the shipped sites.toml byte for byte (its comments included)."""
    data = REPO / "data"  # the reference data (data/README.md)
    import subprocess
    import sys

    out = tmp_path / "sites.toml"
    r = subprocess.run([sys.executable, str(REPO / "tools" / "gen_sites.py"), str(data), "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert out.read_text(encoding="utf-8") == (REPO / "sites.toml").read_text(encoding="utf-8")


def test_heartbeat_url_is_optional_and_its_token_never_shown(write_config):
    assert load(write_config()).agent.heartbeat_url is None
    url = "https://kuma.example/api/push/Xk29sEcReT?status=up&msg=OK&ping="
    cfg = load(write_config(f'[agent]\nheartbeat_url = "{url}"\n\n' + MINIMAL))
    assert cfg.agent.heartbeat_url == url and cfg.agent.heartbeat_budget_s == 5.0
    bad = url.replace("https://", "https://me:pw@")
    text = "\n".join(_problems(write_config(f'[agent]\nheartbeat_url = "{bad}"\n\n' + MINIMAL)))
    assert "Xk29sEcReT" not in text and "me:pw@" not in text


def test_contacts_are_one_line_each_and_name_known_districts(write_config):
    """[alerts] contact, [alerts.district_contacts] and a site's contact (whom its admins call, issue 22)."""
    good = MINIMAL.replace("[[sites]]", '[alerts]\ncontact = "Trung tâm CNTT tỉnh: 0222 3 123 456"\n'
                           '[alerts.district_contacts]\n"Tiên Du" = "Phòng VHTT Tiên Du: 0222 3 837 000"\n\n[[sites]]', 1)
    good = good.replace('admins = ["quantri@tiendu.example"]',
                        'admins = ["quantri@tiendu.example"]\ncontact = "Trực ban Sở: 0222 3 800 800"')
    cfg = load(write_config(good))
    assert cfg.alerts.contact == "Trung tâm CNTT tỉnh: 0222 3 123 456"
    assert cfg.alerts.district_contacts == {"Tiên Du": "Phòng VHTT Tiên Du: 0222 3 837 000"}
    assert next(s for s in cfg.sites if s.id == "tien-du").contact == "Trực ban Sở: 0222 3 800 800"

    bad = good.replace('"Tiên Du" = "Phòng', '"Tien Du" = "Phòng').replace(
        'contact = "Trung tâm CNTT tỉnh: 0222 3 123 456"', 'contact = "Trung tâm\\nCNTT"').replace(
        'contact = "Trực ban Sở: 0222 3 800 800"', 'contact = "   "')
    path = write_config(bad)
    text = "\n".join(_problems(path))
    def line(start: str) -> int:
        return next(i + 1 for i, ln in enumerate(bad.splitlines()) if ln.startswith(start))

    contact_line, district_line, blank_line = line('contact = "Trung'), line('"Tien Du"'), line('contact = "   "')
    assert f"{path}:{contact_line}: [alerts] contact 'Trung tâm\\nCNTT' has a line break" in text, text
    assert (f"{path}:{district_line}: [alerts] district_contacts: unknown district 'Tien Du' "
            "(did you mean 'Tiên Du'?)") in text, text
    assert f"{path}:{blank_line}: site 'tien-du': contact is blank" in text, text
    too_long = good.replace("0222 3 123 456", "0" * 400)
    long_contact = "Trung tâm CNTT tỉnh: " + "0" * 400
    assert (f"{path}:{contact_line}: [alerts] contact is {len(long_contact)} characters long: at most 300"
            in "\n".join(_problems(write_config(too_long))))


# [page.level_names]: the levels' shown names, dated (README "Dated inventory")
LEVEL_NAMES = MINIMAL + """
[page.level_names]
vi.commune = "Điểm cầu"

[page.level_names.en]
commune = { name = "Connection points", noun = "connection point", nouns = "connection points" }

[[page.level_names.changes]]
at = 2025-07-01T00:00:00+07:00
vi.district = { name = "UBND xã, phường", noun = "xã/phường" }
"""
LATER = '\n[[page.level_names.changes]]\nat = {at}\nen.district = "Units"\n'

# (description, edit of LEVEL_NAMES, words the message must contain, the text of its line, nth such line)
LEVEL_NAME_CASES = [
    ("unknown level", lambda t: t.replace("vi.commune =", "vi.comune ="),
     ["[page.level_names] unknown key 'vi.comune'", "did you mean 'commune'"], "vi.comune", 1),
    ("unknown word", lambda t: t.replace('noun = "connection point"', 'nom = "connection point"'),
     ["[page.level_names] unknown key 'en.commune.nom'", "(known keys: name, noun, nouns, heading)"], "commune = {", 1),
    ("unknown language", lambda t: t.replace("vi.district = {", "fr.district = {"),
     ["[page.level_names] change #1: unknown key 'fr'", "known keys: at, vi, en"], "fr.district", 1),
    ("instant without its offset", lambda t: t.replace("at = 2025-07-01T00:00:00+07:00", "at = 2025-07-01"),
     ["change #1: key 'at'", "with its UTC offset", "2025-07-01T00:00:00+07:00"], "at = 2025-07-01", 1),
    ("an empty name", lambda t: t.replace('vi.commune = "Điểm cầu"', 'vi.commune = ""'),
     ["[page.level_names]", "vi.commune.name", "at least 1 character"], "vi.commune", 1),
    ("an English noun without its plural", lambda t: t.replace(', nouns = "connection points"', ""),
     ['en.commune: noun = "connection point" needs its plural, nouns'], "commune = {", 1),
    ("a level that says nothing", lambda t: t.replace('vi.district = { name = "UBND xã, phường", noun = "xã/phường" }',
                                                      "vi.district = {}"),
     ["change #1: vi.district says nothing"], "vi.district = {}", 1),
    ("a change that says nothing", lambda t: t.replace('vi.district = { name = "UBND xã, phường", noun = "xã/phường" }', ""),
     ["change #1: says nothing: give vi and/or en"], "[[page.level_names.changes]]", 1),
    ("changes out of order", lambda t: t + LATER.format(at="2025-01-01T00:00:00+07:00"),
     ["change at 2025-01-01T00:00:00+07:00 comes after the one at 2025-07-01T00:00:00+07:00", "time order"],
     "at = 2025-01-01", 1),
    ("two changes at one instant", lambda t: t + LATER.format(at="2025-07-01T00:00:00+07:00"),
     ["two changes at 2025-07-01T00:00:00+07:00", "merge them"], "at = 2025-07-01", 2),
    ("not a table", lambda t: MINIMAL + '\n[page]\nlevel_names = "Điểm cầu"\n',
     ["[page.level_names] must be a table"], "level_names =", 1),
]


@pytest.mark.parametrize("name,edit,words,needle,nth", LEVEL_NAME_CASES, ids=[c[0] for c in LEVEL_NAME_CASES])
def test_level_names_errors_name_their_line(write_config, name, edit, words, needle, nth):
    assert load(write_config(LEVEL_NAMES)).page.level_names.changes  # the file as written is valid
    text = edit(LEVEL_NAMES)
    path = write_config(text)
    problems = "\n".join(_problems(path))
    for w in words:
        assert w in problems, f"{name}: {w!r} not in {problems!r}"
    line = [n for n, ln in enumerate(text.splitlines(), start=1) if needle in ln][nth - 1]
    assert f"{path}:{line}: [page.level_names]" in problems, f"{name}: line {line} not named in {problems!r}"
