"""`wanmon regroup`: the shipped inventory carried through the 2024 and 2025 mergers of Bắc Ninh."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import pytest

from conftest import MINIMAL, REPO, wanmon
from wanmon.config import load

DATA = REPO / "data"  # a copy of the team's reference data (data/README.md)
SHARED = REPO.parent / "shared" / "data"
TABLE = DATA / "bacninh-2023-to-2025-merge.tsv"
EXAMPLE = REPO / "examples" / "bacninh-2025.toml"
INTERIM, REFORM = "2024-12-01T00:00:00+07:00", "2025-07-01T00:00:00+07:00"
T1, T2 = (datetime.fromisoformat(x).timestamp() for x in (INTERIM, REFORM))
FEWER = "the 2024 step (into xã An Tập) rests on the province's 2023 plan and the statistics codes only"
# The command the README gives for the shipped example (run from the repository's folder).
COMMAND = ["--config", "sites.toml", "regroup", str(TABLE), "--interim-at", INTERIM, "--at", REFORM,
           "--review", f"Lương Tài/Lai Hạ={FEWER}", "--review", f"Lương Tài/Mỹ Hương={FEWER}"]

def _rows() -> list[dict[str, str]]:
    with TABLE.open(encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_the_shipped_example_is_what_the_command_writes(tmp_path):
    out = tmp_path / "bacninh-2025.toml"
    r = wanmon(*COMMAND, "-o", str(out), cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "note:" not in r.stderr  # every row found its site, every commune its row
    assert out.read_text(encoding="utf-8") == EXAMPLE.read_text(encoding="utf-8")
    # and it is the shipped inventory plus changes: every line of sites.toml is in it, in order
    shipped = (REPO / "sites.toml").read_text(encoding="utf-8").splitlines()
    lines = iter(out.read_text(encoding="utf-8").splitlines())
    assert all(any(line == x for x in lines) for line in shipped)


def test_the_shipped_example_validates_clean():
    r = wanmon("--config", str(EXAMPLE), "validate")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert f"from {REFORM}: 177 sites in service" in r.stdout


def test_126_communes_are_carried_to_41_units_and_every_id_is_kept():
    old = load(REPO / "sites.toml")
    cfg = load(EXAMPLE)
    assert [s.id for s in cfg.sites] == [s.id for s in old.sites]
    # before the first step: the 2023 tree, key for key
    keys = ("name", "level", "district", "parent", "address", "admins", "contact", "snmp")
    first = cfg.at(T1 - 1)
    for s in old.sites:
        assert [getattr(first.by_id[s.id], k) for k in keys] == [getattr(s, k) for k in keys], s.id
    communes = [s.id for s in old.sites if s.level == "commune"]
    assert len(communes) == 126
    rows = _rows()
    site_of = {(s.district, s.name): s.id for s in old.sites if s.level == "commune"}
    row_of = {site_of[(r["old_district"], f"UBND {r['old_kind_2023'].lower()} {r['old_unit_name']}")]: r for r in rows}
    assert sorted(row_of) == sorted(communes)

    after = cfg.at(T2)
    units = {r["new_unit_name"] for r in rows}
    assert len(units) == 41
    assert {after.by_id[c].district for c in communes} == units
    for c in communes:
        assert after.by_id[c].district == row_of[c]["new_unit_name"]
    # one district-level site per unit, "UBND <unit>": the commune whose code the unit keeps
    heads = [after.by_id[c] for c in communes if after.by_id[c].level == "district"]
    assert sorted(h.district for h in heads) == sorted(units)
    for h in heads:
        r = row_of[h.id]
        assert h.name == f"UBND {r['new_unit_name']}"
        assert r["code_before_2025_07_01"] == r["new_gso_code"] == r["old_gso_code"]
    for c in communes:
        if after.by_id[c].level == "commune":
            assert after.by_id[c].name.endswith(f"(nay thuộc {row_of[c]['new_unit_name']})")
    # no district tier: the 16 former district-level sites are province-level points
    former = [s for s in old.sites if s.level == "district"]
    assert len(former) == 16
    assert all(after.by_id[s.id].level == "province" and after.by_id[s.id].district is None for s in former)
    assert all(after.by_id[s.id].name == f"{s.name} (cũ)" for s in former)
    # a decree moves no cable: parents are those of 2023 at every instant
    for t in (T1, T2):
        assert all(cfg.at(t).by_id[s.id].parent == s.parent for s in old.sites)


def test_the_2024_step_merges_nine_units_first():
    cfg = load(EXAMPLE)
    old = load(REPO / "sites.toml")
    interim = cfg.at(T1)
    renamed = {s.id: interim.by_id[s.id].name for s in old.sites if interim.by_id[s.id].name != s.name}
    rows = [r for r in _rows() if r["unit_before_2025_07_01"] != f"{r['old_kind_2023'].lower()} {r['old_unit_name']}"
            or r["code_before_2025_07_01"] != r["old_gso_code"]]
    assert len(rows) == len(renamed) == 9
    assert renamed["bac-ninh-ninh-xa"] == "UBND phường Tiền Ninh Vệ"
    assert renamed["bac-ninh-tien-an"] == "Điểm cầu phường Tiền An (nay thuộc phường Tiền Ninh Vệ)"
    assert renamed["gia-binh-nhan-thang"] == "UBND thị trấn Nhân Thắng"
    # still the district tier until the reform
    assert {s.district for s in interim.sites} == {s.district for s in old.sites}
    # the rows that rest on fewer sources are marked for review where they are changed
    text = EXAMPLE.read_text(encoding="utf-8")
    for sid in ("luong-tai-lai-ha", "luong-tai-my-huong"):
        block = text[text.index(f'id = "{sid}"'):]
        block = block[: block.index("[[sites]]")]
        assert block.count(f"# REVIEW: {FEWER}") == 2


def test_a_table_without_its_columns_is_refused_with_its_place(write_config, tmp_path):
    path = write_config()
    table = tmp_path / "map.tsv"
    table.write_text("old_unit_name\tnew_unit_name\nPhật Tích\txã Phật Tích\n", encoding="utf-8")
    r = wanmon("--config", str(path), "regroup", str(table), "--at", REFORM)
    assert r.returncode == 2
    assert f"{table}:1: mapping table without column(s) old_district" in r.stderr


def test_rows_without_a_site_are_told_and_the_rest_is_carried(write_config, tmp_path):
    path = write_config()
    table = tmp_path / "map.tsv"
    table.write_text(
        "old_unit_name\told_district\told_kind\tnew_unit_name\n"
        "Phật Tích\tTiên Du\txã\txã Phật Tích\n"
        "Minh Đạo\tTiên Du\txã\txã Phật Tích\n",
        encoding="utf-8",
    )
    out = tmp_path / "out.toml"
    r = wanmon("--config", str(path), "regroup", str(table), "--at", REFORM, "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "map.tsv:3: no commune site for xã Minh Đạo (Tiên Du): row skipped" in r.stderr
    cfg = load(out)
    pt = cfg.at(T2).by_id["tien-du-phat-tich"]
    assert (pt.level, pt.district, pt.name) == ("district", "xã Phật Tích", "UBND xã Phật Tích")
    td = cfg.at(T2).by_id["tien-du"]
    assert (td.level, td.district, td.name) == ("province", None, "UBND huyện Tiên Du (cũ)")


def test_an_inventory_already_changed_then_is_not_regrouped_twice(write_config, tmp_path):
    path = write_config(MINIMAL.replace(
        'admins = ["quantri@phattich.tiendu.example"]',
        f'admins = ["quantri@phattich.tiendu.example"]\n[[sites.changes]]\nat = {REFORM}\nname = "X"'))
    table = tmp_path / "map.tsv"
    table.write_text("old_unit_name\told_district\tnew_unit_name\nPhật Tích\tTiên Du\txã Phật Tích\n", encoding="utf-8")
    r = wanmon("--config", str(path), "regroup", str(table), "--at", REFORM)
    assert r.returncode == 2
    assert f"site 'tien-du-phat-tich' already has a change at {REFORM}" in r.stderr


def test_an_instant_without_its_offset_is_refused(write_config, tmp_path):
    table = tmp_path / "map.tsv"
    table.write_text("old_unit_name\told_district\tnew_unit_name\n", encoding="utf-8")
    r = wanmon("--config", str(write_config()), "regroup", str(table), "--at", "2025-07-01")
    assert r.returncode == 2
    assert "with its UTC offset, e.g. 2025-07-01T00:00:00+07:00" in r.stderr


def test_the_levels_are_named_for_the_tree_after_the_reform():
    """The example says how the three levels map onto the tree from the reform on: the names the
    page shows (README, [page.level_names]); before it, wanmon's own names of the 2023 tree."""
    from wanmon.words import AFTER_DISTRICT_TIER, LEVEL_NAMES, level_names

    cfg = load(EXAMPLE)
    for lang in ("vi", "en"):
        assert level_names(cfg, T2 - 1, lang) == LEVEL_NAMES[lang]
        assert level_names(cfg, T2, lang) == AFTER_DISTRICT_TIER[lang]
    assert [ch.at.timestamp() for ch in cfg.page.level_names.changes] == [T2]  # nothing at the 2024 step


def test_level_names_already_changed_then_are_not_written_twice(write_config, tmp_path):
    path = write_config(MINIMAL + f'\n[[page.level_names.changes]]\nat = {REFORM}\nvi.commune = "Điểm cầu"\n')
    table = tmp_path / "map.tsv"
    table.write_text("old_unit_name\told_district\tnew_unit_name\nPhật Tích\tTiên Du\txã Phật Tích\n", encoding="utf-8")
    r = wanmon("--config", str(path), "regroup", str(table), "--at", REFORM)
    assert r.returncode == 2
    assert f"[page.level_names] already has a change at {REFORM}" in r.stderr


@pytest.mark.skipif(not SHARED.exists(), reason=f"the team's reference folder is not at {SHARED}")
def test_the_repositorys_copy_of_the_reference_data_is_the_teams():
    copied = sorted(p.name for p in DATA.glob("*.tsv"))
    assert copied and all((DATA / n).read_bytes() == (SHARED / n).read_bytes() for n in copied), copied
