"""Deployment (issue 22): the unit files in packaging/ pass `systemd-analyze verify`, and the
README's deployment block, run as it stands on a fresh machine, puts the store, the page and
the reports where the README's nginx example serves them.

"A fresh machine" is a private mount namespace (`unshare -m`) in which /etc is a copy of this
machine's (the user wanmon is added there, not here), /opt and /var/lib are empty folders of
the test, and the network is a private namespace with only loopback (the shipped sites.toml's
127.10.x.y placeholders). /opt/wanmon/.venv/bin/wanmon is the one thing the test provides:
a launcher of this checkout (pip would need the Internet). After the block, the check
service's ExecStart runs as its User with its capability (AmbientCapabilities=CAP_NET_RAW,
through setpriv: there is no systemd as PID 1 here), from its WorkingDirectory, with its
Environment, as systemd would start it; then `wanmon report` the same way."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import prereq
from conftest import REPO

UNITS = ("wanmon.service", "wanmon-check.service", "wanmon-check.timer")
PACKAGING = REPO / "packaging"
README = REPO / "README.md"


def readme_block(marker: str) -> str:
    """The fenced block right after the README line `<!-- MARKER ... -->`."""
    text = README.read_text(encoding="utf-8")
    m = re.search(rf"<!-- {re.escape(marker)}\b[^\n]*-->\n```\w*\n(.*?)\n```", text, re.S)
    assert m, f"README.md has no fenced block after <!-- {marker} -->"
    return m.group(1)


def nginx_alias() -> str:
    """The folder the README's nginx example serves."""
    m = re.search(r"```nginx\n.*?\balias\s+(\S+?);", README.read_text(encoding="utf-8"), re.S)
    assert m, "README.md: no nginx example with an alias"
    return m.group(1).rstrip("/")


def service_section(path: Path) -> dict[str, list[str]]:
    """A unit file's [Service] keys -> their values (in order)."""
    out: dict[str, list[str]] = {}
    section = None
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


needs_systemd_analyze = prereq.needs(prereq.have("systemd-analyze"), "systemd-analyze", "Debian package systemd")


@needs_systemd_analyze
def test_the_shipped_units_pass_systemd_analyze_verify(tmp_path):
    # verify wants ExecStart's program to exist: the units as shipped, with the path of this
    # venv's wanmon for /opt/wanmon/.venv/bin/wanmon (the one change)
    exe = Path(sys.prefix) / "bin" / "wanmon"
    assert exe.is_file() and os.access(exe, os.X_OK), exe
    for name in UNITS:
        text = (PACKAGING / name).read_text(encoding="utf-8")
        (tmp_path / name).write_text(text.replace("/opt/wanmon/.venv/bin/wanmon", str(exe)), encoding="utf-8")
    r = subprocess.run(["systemd-analyze", "verify", *[str(tmp_path / n) for n in UNITS]],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr   # a warning ("Unknown key") fails too


@needs_systemd_analyze
def test_verify_would_see_a_broken_unit(tmp_path):
    exe = Path(sys.prefix) / "bin" / "wanmon"
    text = (PACKAGING / "wanmon.service").read_text(encoding="utf-8").replace("/opt/wanmon/.venv/bin/wanmon", str(exe))
    (tmp_path / "wanmon.service").write_text(text.replace("User=", "Usr="), encoding="utf-8")
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "wanmon.service")],
                       capture_output=True, text=True, timeout=120)
    assert "Unknown key" in r.stderr


def test_the_units_agree_with_the_readme_and_each_other():
    daemon = service_section(PACKAGING / "wanmon.service")
    check = service_section(PACKAGING / "wanmon-check.service")
    for key in ("User", "Group", "WorkingDirectory", "Environment", "EnvironmentFile", "AmbientCapabilities",
                "ReadWritePaths"):
        assert daemon[key] == check[key], key
    assert daemon["ExecStart"] == ["/opt/wanmon/.venv/bin/wanmon run"]
    assert check["ExecStart"] == ["/opt/wanmon/.venv/bin/wanmon check"]
    # what nginx serves is inside what the service may write
    assert nginx_alias().startswith(daemon["ReadWritePaths"][0] + "/")
    tmpfiles = (PACKAGING / "tmpfiles.d" / "wanmon.conf").read_text(encoding="utf-8")
    assert re.search(rf"^d\s+{re.escape(nginx_alias())}\s+0755\s+wanmon\s+wanmon\b", tmpfiles, re.M), tmpfiles
    sysusers = (PACKAGING / "sysusers.d" / "wanmon.conf").read_text(encoding="utf-8")
    assert re.search(r"^u\s+wanmon\s", sysusers, re.M)


@prereq.needs(prereq.is_root() and prereq.have("unshare", "setpriv", "systemd-sysusers", "systemd-tmpfiles", "ip"),
              "root, unshare, setpriv, systemd-sysusers, systemd-tmpfiles",
              prereq.ROOT + "; Debian packages util-linux systemd iproute2", "a fresh machine in a mount namespace")
def test_the_readme_deployment_puts_store_page_and_reports_where_nginx_serves_them():
    from as_nobody import readable_copy, venv_view

    block = readme_block("deploy")
    check_unit = service_section(PACKAGING / "wanmon-check.service")
    user, group = check_unit["User"][0], check_unit["Group"][0]
    env = dict(e.split("=", 1) for e in check_unit["Environment"])
    caps = [c.lower().removeprefix("cap_") for c in check_unit["AmbientCapabilities"][0].split()]
    work = Path(tempfile.mkdtemp(prefix="wanmon-deploy-"))   # not pytest's 0700 tmp_path: wanmon must reach it
    try:
        os.chmod(work, 0o755)
        src = readable_copy(work)                 # the checkout, readable by the user wanmon
        view, python = venv_view(work)
        etc, opt, varlib, varlog = work / "etc", work / "opt", work / "varlib", work / "varlog"
        subprocess.run(["cp", "-a", "/etc", str(etc)], check=True, timeout=120)
        for d in (opt, varlib, varlog):
            d.mkdir(mode=0o755)
        launcher = opt / "wanmon" / ".venv" / "bin" / "wanmon"
        launcher.parent.mkdir(parents=True, mode=0o755)
        # what pip writes as the console script, with this checkout's copy on the path
        launcher.write_text(f"#!{python}\nimport sys\nsys.path.insert(0, {str(src)!r})\n"
                            "from wanmon.cli import main\nsys.exit(main())\n")
        launcher.chmod(0o755)
        for d in (opt, varlib, varlog, opt / "wanmon", opt / "wanmon" / ".venv", launcher.parent):
            d.chmod(0o755)  # mkdir's mode is filtered by the umask

        def as_service(command: str, out: str) -> str:
            """command run as check_unit's ExecStart would be: its user, capability, cwd, env."""
            setpriv = ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups", "--no-new-privs",
                       *[f"--inh-caps=+{c}" for c in caps], *[f"--ambient-caps=+{c}" for c in caps]]
            envs = ["env", "-i", "PATH=/usr/bin:/bin", *[f"{k}={v}" for k, v in env.items()]]
            return (f"( cd {shlex.quote(check_unit['WorkingDirectory'][0])} && umask {check_unit['UMask'][0]} && "
                    f"exec {shlex.join(envs)} {shlex.join(setpriv)} {command} ) "
                    f">{work}/{out}.out 2>{work}/{out}.err; echo $? >{work}/{out}.rc")

        month = time.strftime("%Y-%m")
        script = "\n".join([
            "set -eu",
            f"mount --bind {etc} /etc",
            f"mount --bind {opt} /opt",
            f"mount --bind {varlib} /var/lib",
            f"mount --bind {varlog} /var/log",
            view,
            "ip link set lo up",
            f"cd {shlex.quote(str(REPO))}",
            f"( {block}\n) >{work}/block.out 2>&1",
            "set +e",
            as_service(check_unit["ExecStart"][0], "check"),
            as_service(f"/opt/wanmon/.venv/bin/wanmon report --month {month} --format html", "report"),
            as_service("/opt/wanmon/.venv/bin/wanmon --config /etc/wanmon/sites.toml doctor", "doctor"),
            f"ls -ln /var/lib/wanmon /var/lib/wanmon/public >{work}/ls.out 2>&1",
        ])
        r = subprocess.run(["unshare", "-m", "-n", "--propagation", "private", "bash", "-c", script],
                           capture_output=True, text=True, timeout=300)
        block_out = (work / "block.out").read_text() if (work / "block.out").exists() else ""
        assert r.returncode == 0, (r.stderr, block_out)
        assert "OK: 177 sites" in block_out, block_out          # the block's own `wanmon validate`

        def rc(name: str) -> tuple[str, str]:
            return (work / f"{name}.rc").read_text().strip(), (work / f"{name}.err").read_text()

        assert rc("check")[0] == "0", rc("check")[1]
        # doctor, as the service user: this layout is fine; the shipped file has no [page] url yet
        doctor = (work / "doctor.out").read_text()
        assert rc("doctor")[0] == "1", doctor
        fails = [line for line in doctor.splitlines() if line.startswith("FAIL")]
        assert len(fails) == 1 and "[page] url is not set" in fails[0], doctor
        for part in ("ok    ICMP: this process can ping: raw sockets", "ok    store: /var/lib/wanmon/store is writable",
                     "ok    page: /var/lib/wanmon/public is writable", "ok    reports: /var/lib/wanmon/public/reports"):
            assert part in doctor, (part, doctor)
        assert rc("report")[0] == "0", rc("report")[1]
        uid = int(next(line.split(":")[2] for line in (etc / "passwd").read_text().splitlines()
                       if line.startswith(f"{user}:")))
        assert uid != 0

        served = varlib / Path(nginx_alias()).relative_to("/var/lib")   # where nginx looks, on this machine
        page = served / "index.html"
        assert "Bắc Ninh" in page.read_text(encoding="utf-8")
        assert (served / "status.json").is_file() and (served / "index.html.gz").is_file()
        reports = list((served / "reports").glob(f"wanmon-report-{month}*.html"))
        assert reports, sorted(p.name for p in served.rglob("*"))
        # nginx (another user) can read what it serves: every folder on the way 0755, files 0644
        for folder in (varlib / "wanmon", served, served / "reports"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o755, (folder, oct(folder.stat().st_mode))
        for f in (page, reports[0]):
            assert stat.S_IMODE(f.stat().st_mode) == 0o644 and f.stat().st_uid == uid, f
        # the store: where the config says, the service user's, in a folder of its own
        store = varlib / "wanmon" / "store" / "wanmon.db"
        assert store.is_file() and store.stat().st_uid == uid, (work / "ls.out").read_text()
        assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700
        # nothing landed beside the config (relative paths resolve from /etc/wanmon)
        assert sorted(p.name for p in (etc / "wanmon").iterdir()) == ["secrets.env", "sites.toml"]
        cfg = etc / "wanmon" / "sites.toml"
        assert stat.S_IMODE(cfg.stat().st_mode) == 0o640
        assert stat.S_IMODE((etc / "wanmon" / "secrets.env").stat().st_mode) == 0o600
        # the crontab line's log, which cron's shell (as wanmon) opens for appending
        log = varlog / "wanmon.log"
        assert log.stat().st_uid == uid and stat.S_IMODE(log.stat().st_mode) == 0o640
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
