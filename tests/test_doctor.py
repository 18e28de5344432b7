"""`wanmon doctor` (issue 22): whether this host can run the agent, each problem with its fix,
exit 1 on a problem. Against real things: a real SMTP server (aiosmtpd) on 127.0.0.1, an InfluxDB
port with nothing listening, a real InfluxDB 1.6, a folder the service user cannot write (doctor
run as uid 65534 through setpriv, with and without CAP_NET_RAW as the service gets it)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import prereq
from conftest import MINIMAL, wanmon
from smtp_server import SMTPServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tsdb_servers as ts  # noqa: E402


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(folder: Path, *, smtp: SMTPServer | None = None, influx_url: str | None = None, url: str | None = None,
           store: str = "var/wanmon.db", out_dir: str = "public") -> Path:
    text = MINIMAL.replace('path = "var/wanmon.db"', f'path = "{store}"')
    text += f'\n[page]\nout_dir = "{out_dir}"\n' + (f'url = "{url}"\n' if url else "")
    if smtp is not None:
        text += "\n" + smtp.toml(timeout_s=5) + "\n"
    if influx_url:
        text += f'\n[influxdb]\nurl = "{influx_url}"\napi = "v1"\ndatabase = "wanmon"\ntimeout_ms = 2000\n'
    path = folder / "sites.toml"
    path.write_text(text, encoding="utf-8")
    return path


def findings(out: str) -> dict[str, list[tuple[str, str]]]:
    """doctor's lines by level: [(what, fix)]."""
    got: dict[str, list[tuple[str, str]]] = {}
    lines = out.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(ok|warn|FAIL)\s+(.*)$", line)
        if m:
            fix = lines[i + 1].strip().removeprefix("fix: ") if i + 1 < len(lines) and "fix:" in lines[i + 1] else ""
            got.setdefault(m.group(1), []).append((m.group(2), fix))
    return got


def test_a_closed_influxdb_port_and_no_page_url_are_problems_with_their_fixes(tmp_path):
    with SMTPServer() as smtp:
        port = closed_port()
        cfg = config(tmp_path, smtp=smtp, influx_url=f"http://127.0.0.1:{port}")
        r = wanmon("--config", str(cfg), "doctor", cwd=tmp_path, timeout=60)
        assert r.returncode == 1, r.stdout + r.stderr
        got = findings(r.stdout)
        fails = dict(got["FAIL"])
        (influx,) = [w for w in fails if w.startswith("InfluxDB:")]
        assert f"127.0.0.1:{port}" in influx and "cannot reach" in influx, influx
        assert "influx check" in fails[influx]
        (page,) = [w for w in fails if w.startswith("page:")]
        assert "[page] url is not set" in page and "set [page] url" in fails[page]
        assert any(w.startswith(f"mail: SMTP relay 127.0.0.1:{smtp.port} answered") for w, _ in got["ok"]), r.stdout
        assert smtp.messages == []                 # it looks: no mail sent
        assert "2 problem(s)" in r.stdout
        assert not (tmp_path / "var").exists() and not (tmp_path / "public").exists()   # nor writes


def test_a_silent_smtp_port_is_a_problem(tmp_path):
    port = closed_port()
    text = config(tmp_path, url="https://giamsat.example/wan/").read_text(encoding="utf-8")
    cfg = tmp_path / "sites.toml"
    cfg.write_text(text + f'\n[smtp]\nhost = "127.0.0.1"\nport = {port}\nfrom = "wanmon@x.example"\ntimeout_s = 3\n',
                   encoding="utf-8")
    r = wanmon("--config", str(cfg), "doctor", cwd=tmp_path, timeout=60)
    assert r.returncode == 1
    (mail,) = [(w, f) for w, f in findings(r.stdout)["FAIL"] if w.startswith("mail:")]
    assert f"cannot reach SMTP server 127.0.0.1:{port}" in mail[0] and "firewall" in mail[1], mail


@prereq.needs(ts.influx_available()[0], "InfluxDB 1.x (influxd)", prereq.INFLUXDB, ts.influx_available()[1])
def test_everything_in_place_is_no_problem(tmp_path):
    with SMTPServer() as smtp, ts.InfluxV1Server(databases=["wanmon"]) as influx:
        cfg = config(tmp_path, smtp=smtp, influx_url=influx.url, url="https://giamsat.example/wan/",
                     store=str(tmp_path / "state" / "wanmon.db"), out_dir=str(tmp_path / "public"))
        (tmp_path / "public").mkdir()
        r = wanmon("--config", str(cfg), "doctor", cwd=tmp_path, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        got = findings(r.stdout)
        assert "FAIL" not in got and "no problem found" in r.stdout
        oks = " | ".join(w for w, _ in got["ok"])
        for part in ("ICMP: this process can ping", "store:", "page:", "reports:", "mail: SMTP relay",
                     "InfluxDB:", "page: mails link https://giamsat.example/wan/"):
            assert part in oks, (part, r.stdout)
        assert [w for w, _ in got.get("warn", [])] == [next(w for w, _ in got["warn"] if w.startswith("running as"))]


@prereq.needs(prereq.is_root() and prereq.have("setpriv", "unshare"), "root, setpriv and unshare -m",
              prereq.ROOT + "; Debian package util-linux", "to run doctor as another user")
def test_as_the_service_user_an_unwritable_store_folder_and_missing_icmp_permission():
    from as_nobody import command, readable_copy

    work = Path(tempfile.mkdtemp(prefix="wanmon-doctor-"))   # uid 65534 reaches it (not pytest's tmp_path)
    try:
        os.chmod(work, 0o755)
        readable_copy(work)
        state = work / "state"        # root's, 0755: not writable by the service user
        state.mkdir()
        os.chmod(state, 0o755)
        public = work / "public"      # writable by anyone
        public.mkdir()
        os.chmod(public, 0o777)
        cfg = config(work, url="https://giamsat.example/wan/", store=str(state / "wanmon.db"), out_dir=str(public))
        os.chmod(cfg, 0o644)

        def doctor(opts):
            r = subprocess.run(command(work, ["-m", "wanmon", "--config", str(cfg), "doctor"], setpriv_opts=opts),
                               cwd=work, capture_output=True, text=True, timeout=120)
            assert r.returncode == 1, r.stdout + r.stderr
            return findings(r.stdout), r.stdout

        got, out = doctor(["--inh-caps=+net_raw", "--ambient-caps=+net_raw"])   # as wanmon.service runs it
        fails = dict(got["FAIL"])
        (store,) = [w for w in fails if w.startswith("store:")]
        assert f"{state} is not writable by user nobody (uid 65534" in store, out
        assert fails[store].startswith(f"`chown nobody: {state}`"), fails[store]
        oks = [w for w, _ in got["ok"]]
        assert any(w.startswith(f"page: {public} is writable by user nobody") for w in oks), out
        assert any(w.startswith("ICMP: this process can ping: raw sockets") for w in oks), out

        rng = Path("/proc/sys/net/ipv4/ping_group_range").read_text().split()
        got, out = doctor([])                                                      # without the capability
        if not int(rng[0]) <= 65534 <= int(rng[1]):
            (icmp,) = [(w, f) for w, f in got["FAIL"] if w.startswith("ICMP:")]
            assert "cannot send ICMP echo requests" in icmp[0], out
            assert "CAP_NET_RAW" in icmp[1] and "ping_group_range" in icmp[1], out
    finally:
        shutil.rmtree(work, ignore_errors=True)
