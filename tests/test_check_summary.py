"""`wanmon check`'s summary as cron logs it (issue 22): grouped by root cause, readable at 80
columns. Real ICMP in the netns lab (tests/netns.py): a district router that does not answer
with 14 communes behind it, a slow site and a lossy one (degraded), the rest up; `check`'s
stdout is a pipe, as under cron, with COLUMNS=80 and with no COLUMNS at all."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import prereq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netns  # noqa: E402
from test_alerts_integration import site_toml, wm, write_config  # noqa: E402

_ok, _why = netns.available()
pytestmark = prereq.needs(_ok, "network namespaces", prereq.NETNS, _why)

LONG_ID = "ban-quan-ly-cac-khu-cong-nghiep-bac-ninh"   # the shipped file's longest id (40 characters)
COMMUNES = [f"gia-binh-xa-{i:02d}" for i in range(14)]


@pytest.fixture(scope="module")
def lab():
    with netns.lab() as lb:
        yield lb


def config(tmp_path: Path, lab) -> Path:
    sites = site_toml("core", "Trung tâm dữ liệu", "province", lab.alive4)
    for i in range(4):
        sites += site_toml(f"fill-{i}", f"Điểm phụ {i}", "district", f"127.0.0.{i + 2}", district=f"Huyện {i}",
                           parent="core")
    # the district router: an address of the lab that nobody holds (no reply), its communes too
    sites += site_toml("gia-binh", "UBND huyện Gia Bình", "district", "198.18.1.200", district="Gia Bình",
                       parent="core")
    for i, sid in enumerate(COMMUNES):
        sites += site_toml(sid, f"UBND xã Số {i}", "commune", f"198.18.1.{201 + i}", district="Gia Bình",
                           parent="gia-binh")
    sites += site_toml(LONG_ID, "Ban Quản lý các khu công nghiệp tỉnh Bắc Ninh", "province", lab.slow4,
                       parent="core")
    sites += site_toml("tien-du-lossy", "UBND huyện Tiên Du", "district", lab.lossy4, district="Tiên Du",
                       parent="core")
    return write_config(tmp_path, None, sites, count=2, interval_ms=20, timeout_ms=1000)


@pytest.mark.parametrize("columns", ["80", None])
def test_check_groups_by_root_cause_and_fits_80_columns(lab, tmp_path, columns):
    cfg = config(tmp_path, lab)
    env = {"COLUMNS": columns} if columns else {}
    cp = wm(lab, cfg, "check", env=env) if columns else _without_columns(lab, cfg)
    assert cp.returncode == 0, cp.stderr[-3000:]
    out = cp.stdout
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(line for line in lines if len(line) > 80)

    start = next(i for i, line in enumerate(lines) if line.startswith("Problems by root cause"))
    assert "3 cause(s), 17 of 22 sites not up" in lines[start]
    entries = "\n".join(lines[start + 1:])
    # one entry per cause, the district first with what it cuts off; no commune is an entry
    firsts = [line for line in lines[start + 1:] if re.match(r"^\S+ (down|unreachable|degraded|unknown) ", line)]
    assert [f.split()[1:3] for f in firsts] == [["down", "gia-binh"], ["degraded", LONG_ID],
                                                ["degraded", "tien-du-lossy"]] or \
        [f.split()[1:3] for f in firsts] == [["down", "gia-binh"], ["degraded", "tien-du-lossy"],
                                             ["degraded", LONG_ID]], entries
    said = " ".join(entries.split())      # as read: the words, wherever the lines wrap
    assert "14 communes unreachable behind it: gia-binh-xa-00, gia-binh-xa-01," in said, entries
    assert "gia-binh-xa-05 and 8 more" in said, entries
    # every id whole on one line (wrapped between words, never inside an id)
    words = set(re.findall(r"[\w-]+", entries))
    assert {"gia-binh", LONG_ID, "tien-du-lossy", *COMMUNES[:6]} <= words, entries
    # the degraded ones say which threshold they crossed
    assert re.search(r"RTT \d[\d.,]* ms ≥ 300\.0 ms", said) and "loss 50 % ≥ 10 %" in said, entries


def _without_columns(lab, cfg):
    """`wanmon check` with no COLUMNS in its environment (cron's)."""
    import subprocess

    from test_alerts_integration import PY, wm_env

    env = {k: v for k, v in wm_env().items() if k not in ("COLUMNS", "LINES")}
    return lab.run([PY, "-m", "wanmon", "--config", str(cfg), "check"], cwd=cfg.parent, env=env, timeout=60,
                   stdin=subprocess.DEVNULL)


@prereq.needs(prereq.is_root() and prereq.have("unshare", "ip"), "root, unshare and ip", prereq.NETNS,
              "the shipped sites.toml on a private loopback")
def test_the_quick_start_says_why_snmp_times_out(tmp_path):
    """The shipped sites.toml, as scripts/quickstart.sh runs it (a pipe, no COLUMNS), in a network
    namespace of its own (loopback only: its 127.10.x.y placeholders, no SNMP agent there): all
    sites up, every agent silent, and the output says that this is what placeholders give."""
    import shutil
    import subprocess

    from test_alerts_integration import PY, wm_env

    shutil.copy(Path(__file__).resolve().parents[1] / "sites.toml", tmp_path / "sites.toml")
    env = {k: v for k, v in wm_env().items() if k not in ("COLUMNS", "LINES")}
    cp = subprocess.run(["unshare", "-n", "sh", "-c", f'ip link set lo up && exec "$0" -m wanmon --config '
                         f'{tmp_path / "sites.toml"} check', PY], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=180)
    assert cp.returncode == 0, cp.stderr[-3000:]
    said = " ".join(cp.stdout.split())
    assert "All 177 sites up." in said and "SNMP: 177 timeout" in said, cp.stdout
    assert "No SNMP agent answered at all. Expected with placeholder addresses" in said, cp.stdout
    assert all(len(line) <= 80 for line in cp.stdout.splitlines())
