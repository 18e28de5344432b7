"""Alert emails end to end: wanmon run as cron runs it, real ICMP, a real SMTP server.

Every cycle is a new process, exactly as cron starts it::

    ip netns exec CLIENT python -m wanmon --config sites.toml check

inside a tests/netns.py lab. The sites under test are /32 addresses added to
the lab's "alive" namespace (198.18.1.10 and up, inside the lab only): the
kernel there answers echo for them; deleting an address makes that host stop
answering (the packet reaches the namespace, which does not forward it), and
adding it back makes it answer again, between two consecutive runs. Filler
sites on the client namespace's own loopback (127.0.0.x, always up) keep the
"agent cut off" guard (the agent's own upstream silent) out of the
way of the per-site scenarios.

The SMTP server (tests/smtp_server.py, aiosmtpd) listens on 127.0.0.1 inside
the lab's client namespace, where wanmon runs; nothing listens in the test's
own namespace. What wanmon queued is read with `wanmon alerts --json`
(outbox: id, status, to, subject, message_id, kinds) and joined to what the
server received by Message-ID.

Scenarios about time and state over many cycles (reminders after hours,
restarts of cron runs and of the daemon) run through the seams, with an
injected clock and fake ICMP, in test_alerts_seams.py; here a few keep the
real peers honest. A test that waits for a real process to do something waits on
events (its log lines, its writes to the lock file: tests/waiting.py).
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import prereq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netns  # noqa: E402
from seams import query  # noqa: E402
from smtp_server import SMTPServer  # noqa: E402
from waiting import MODIFY, OPEN, FileWrites, Output  # noqa: E402

_ok, _why = netns.available()
pytestmark = prereq.needs(_ok, "network namespaces", prereq.NETNS, _why)

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
NOC = "noc@x.example"
FROM = "wanmon@x.example"
EXIT_BUSY = 75


# ---------------------------------------------------------------------------
# running wanmon


def wm_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WANMON_CONFIG", "SMTP_USER", "SMTP_PASS", "PYTHONSAFEPATH")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def wm(lab, cfg: Path, *args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m wanmon --config cfg ARGS` inside the lab's client namespace."""
    return lab.run([PY, "-m", "wanmon", "--config", str(cfg), *args], cwd=cfg.parent,
                   env=wm_env(env), timeout=timeout)


def check(lab, cfg: Path, *args: str) -> subprocess.CompletedProcess:
    cp = wm(lab, cfg, "check", *args)
    assert cp.returncode == 0, f"wanmon check exited {cp.returncode}:\n{cp.stderr[-3000:]}"
    return cp


def alerts_json(lab, cfg: Path) -> dict:
    cp = wm(lab, cfg, "alerts", "--json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def db_path(cfg: Path) -> Path:
    return cfg.parent / "var" / "wanmon.db"


def store_query(cfg: Path, sql: str, args=()) -> list:
    return query(db_path(cfg), sql, args)


def cycles(cfg: Path) -> int:
    if not db_path(cfg).exists():
        return 0
    try:
        return store_query(cfg, "SELECT count(*) FROM cycles")[0][0]
    except sqlite3.OperationalError:   # schema not created yet
        return 0


def site_statuses(cfg: Path) -> dict[str, str]:
    return dict(store_query(cfg, "SELECT site_id, status FROM site_state"))


# ---------------------------------------------------------------------------
# hosts that stop / start answering


class Hosts:
    """/32 addresses on the lab's alive namespace, each switched on and off."""

    _next = 10

    def __init__(self, lab):
        self.lab = lab
        self.dev = f"{lab.tag}ac"       # the alive end of the client<->alive veth
        self.mine: dict[str, bool] = {}

    def new(self) -> str:
        assert Hosts._next < 250, "out of lab addresses"
        addr = f"198.18.1.{Hosts._next}"
        Hosts._next += 1
        self.up(addr)
        return addr

    def _ip(self, op: str, addr: str) -> None:
        cp = self.lab.run(["ip", "addr", op, f"{addr}/32", "dev", self.dev], ns=self.lab.alive_ns)
        assert cp.returncode == 0, cp.stderr

    def up(self, *addrs: str) -> None:
        for a in addrs:
            if not self.mine.get(a):
                self._ip("add", a)
                self.mine[a] = True

    def down(self, *addrs: str) -> None:
        for a in addrs:
            if self.mine.get(a):
                self._ip("del", a)
                self.mine[a] = False

    def answers(self, addr: str) -> bool:
        cp = self.lab.run(["ping", "-n", "-q", "-c", "1", "-W", "1", addr])
        return cp.returncode == 0

    def close(self) -> None:
        self.down(*[a for a, on in self.mine.items() if on])


@pytest.fixture(scope="module")
def lab():
    with netns.lab() as lb:
        yield lb


@pytest.fixture
def hosts(lab):
    h = Hosts(lab)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def smtp(lab):
    srv = SMTPServer(netns=lab.client).start()
    try:
        yield srv
    finally:
        srv.stop()


# ---------------------------------------------------------------------------
# configuration


def site_toml(sid: str, name: str, level: str, address: str, admins=(), district: str | None = None,
              parent: str | None = None) -> str:
    lines = ["[[sites]]", f"id = {json.dumps(sid)}", f"name = {json.dumps(name, ensure_ascii=False)}",
             f'level = "{level}"', f'address = "{address}"',
             f"admins = {json.dumps(list(admins))}"]
    if district:
        lines.append(f"district = {json.dumps(district, ensure_ascii=False)}")
    if parent:
        lines.append(f'parent = "{parent}"')
    return "\n".join(lines) + "\n"


def base_sites(fillers: int = 6) -> str:
    """The root (the lab's alive host) and `fillers` always-up district sites on the
    client namespace's loopback."""
    out = site_toml("core", "Trung tâm dữ liệu", "province", "198.18.1.2", ["core@x.example"])
    for i in range(fillers):
        out += site_toml(f"fill-{i}", f"Điểm phụ {i}", "district", f"127.0.0.{i + 2}",
                         [f"fill{i}@x.example"], district=f"Huyện phụ {i}", parent="core")
    return out


def write_config(tmp_path: Path, smtp: SMTPServer | None, sites: str, *, alerts: str = "",
                 page: str = "", count: int = 1, interval_ms: int = 20, timeout_ms: int = 300,
                 interval_s: float = 60, grace_s: float = 30, extra: str = "") -> Path:
    text = f"""\
[store]
path = "var/wanmon.db"

[icmp]
count = {count}
interval_ms = {interval_ms}
timeout_ms = {timeout_ms}

[snmp]
enabled = false

[page]
out_dir = "public"
{page}

[schedule]
icmp_interval_s = {interval_s}
grace_s = {grace_s}

[alerts]
enabled = true
confirm_cycles = 3
recover_cycles = 2
reminder_h = 4
notify_unreachable = true
noc = ["{NOC}"]
guard_fraction = 0.5
guard_min_sites = 5
{alerts}

{smtp.toml(from_addr=FROM, timeout_s=5) if smtp else ""}
{extra}

{sites}
"""
    p = tmp_path / "sites.toml"
    p.write_text(text, encoding="utf-8")
    return p


# ---------------------------------------------------------------------------
# what was sent


def by_message_id(lab, cfg: Path) -> dict[str, dict]:
    return {o["message_id"]: o for o in alerts_json(lab, cfg)["outbox"]}


def classify(lab, cfg: Path, msgs) -> list[tuple[str, list[str], object]]:
    """[(kinds joined by '+', envelope recipients, captured message)] in arrival order."""
    box = by_message_id(lab, cfg)
    out = []
    for m in msgs:
        o = box.get(m.message_id)
        assert o is not None, f"received a mail the outbox does not know: {m.message_id} {m.subject!r}"
        out.append(("+".join(o["kinds"]), m.rcpt_tos, m))
    return out


def rcpts(msgs) -> list[str]:
    return sorted(r for m in msgs for r in m.rcpt_tos)


def assert_count(smtp: SMTPServer, n: int, what: str) -> list:
    """Exactly n captured mails so far (mail is delivered within the `check` run)."""
    got = smtp.snapshot()
    assert len(got) == n, f"{what}: expected {n} mail(s), got {len(got)}: " + \
        "; ".join(f"{m.rcpt_tos} {m.subject!r}" for m in got)
    return got


def assert_well_formed(m, site_names: list[str] = ()) -> None:
    assert m.mail_from == FROM
    assert m.header("From") == FROM
    assert m.message_id and m.message_id.startswith("<") and m.message_id.endswith(">")
    assert m.content_types()[0] == "multipart/alternative"
    assert m.text is not None and m.html is not None
    for name in site_names:
        assert name in m.text, (name, m.text)
        assert name in m.html, (name, m.html)
    # header names appear once each
    names = [h.lower() for h in m.header_names()]
    assert len(names) == len(set(names)), names


# ---------------------------------------------------------------------------
# (1) confirm_cycles / recover_cycles


def test_down_confirmed_after_3_cycles_then_recovery_after_2(lab, hosts, smtp, tmp_path):
    a = hosts.new()
    name = "UBND huyện Thuận Thành"
    admins = ["quantri@thuanthanh.example", "it@thuanthanh.example"]
    sites = base_sites() + site_toml("thuan-thanh", name, "district", a, admins,
                                     district="Thuận Thành", parent="core")
    cfg = write_config(tmp_path, smtp, sites)

    check(lab, cfg)
    assert site_statuses(cfg)["thuan-thanh"] == "up"

    # down 2 cycles, back: nothing at all
    hosts.down(a)
    assert not hosts.answers(a)
    for _ in range(2):
        check(lab, cfg)
    assert site_statuses(cfg)["thuan-thanh"] == "down"
    hosts.up(a)
    check(lab, cfg)
    check(lab, cfg)
    assert site_statuses(cfg)["thuan-thanh"] == "up"
    assert_count(smtp, 0, "a site down for only 2 cycles")
    assert alerts_json(lab, cfg)["outbox"] == []

    # down 3 cycles: one DOWN, on the third, to each admin and the NOC
    hosts.down(a)
    check(lab, cfg)
    check(lab, cfg)
    assert_count(smtp, 0, "2 bad cycles")
    check(lab, cfg)
    down = assert_count(smtp, 3, "3rd bad cycle")
    assert rcpts(down) == sorted(admins + [NOC])
    for m in down:
        assert len(m.rcpt_tos) == 1
        assert m.subject == f"[wanmon] 1 điểm mất kết nối: {name}", m.subject
        assert_well_formed(m, [name])
    assert [k for k, _, _ in classify(lab, cfg, down)] == ["down"] * 3
    state = alerts_json(lab, cfg)
    assert [(p["id"], p["status"]) for p in state["problems"]] == [("thuan-thanh", "down")]
    assert {o["status"] for o in state["outbox"]} == {"sent"}

    # still down: no repeat (reminder_h = 4)
    check(lab, cfg)
    check(lab, cfg)
    assert_count(smtp, 3, "still down")

    # back: one RECOVERY after the 2nd good cycle
    hosts.up(a)
    check(lab, cfg)
    assert_count(smtp, 3, "1 good cycle")
    check(lab, cfg)
    got = assert_count(smtp, 6, "2nd good cycle")
    rec = got[3:]
    assert rcpts(rec) == sorted(admins + [NOC])
    assert [k for k, _, _ in classify(lab, cfg, rec)] == ["recovery"] * 3
    for m in rec:
        assert_well_formed(m, [name])
        assert name in m.subject
    check(lab, cfg)
    assert_count(smtp, 6, "up again")
    assert alerts_json(lab, cfg)["problems"] == []
    ids = [m.message_id for m in smtp.snapshot()]
    assert len(set(ids)) == len(ids)


def test_english_subject(lab, hosts, smtp, tmp_path):
    a = hosts.new()
    sites = base_sites() + site_toml("que-vo", "UBND huyện Quế Võ", "district", a, ["qv@x.example"],
                                     district="Quế Võ", parent="core")
    cfg = write_config(tmp_path, smtp, sites, page='language = "en"')
    hosts.down(a)
    for _ in range(3):
        check(lab, cfg)
    got = assert_count(smtp, 2, "DOWN in English")
    assert {m.subject for m in got} == {"[wanmon] 1 site down: UBND huyện Quế Võ"}


# ---------------------------------------------------------------------------
# (2) a district outage and its communes


def test_district_down_lists_its_communes(lab, hosts, smtp, tmp_path):
    d, c1, c2, c3 = hosts.new(), hosts.new(), hosts.new(), hosts.new()
    dist = "Tiên Du"
    sites = base_sites() + site_toml("tien-du", "UBND huyện Tiên Du", "district", d, ["qt@tiendu.example"],
                                     district=dist, parent="core")
    sites += site_toml("phat-tich", "UBND xã Phật Tích", "commune", c1, ["qt@phattich.example"],
                       district=dist, parent="tien-du")
    sites += site_toml("lac-ve", "UBND xã Lạc Vệ", "commune", c2, ["qt@lacve.example"],
                       district=dist, parent="tien-du")
    sites += site_toml("hien-van", "UBND xã Hiên Vân", "commune", c3, ["qt@hienvan.example"],
                       district=dist, parent="tien-du")
    cfg = write_config(tmp_path, smtp, sites)
    check(lab, cfg)

    # the district and two of its communes stop answering; Hiên Vân still answers
    hosts.down(d, c1, c2)
    for _ in range(3):
        check(lab, cfg)
    st = site_statuses(cfg)
    assert (st["tien-du"], st["phat-tich"], st["lac-ve"], st["hien-van"]) == \
        ("down", "unreachable", "unreachable", "up")

    got = classify(lab, cfg, smtp.snapshot())
    summary = [(k, r) for k, r, _ in got]
    downs = [(k, r, m) for k, r, m in got if "down" in k.split("+")]
    # one DOWN about the district, to its admins and the NOC; it lists the unreachable communes
    assert rcpts([m for _, _, m in downs]) == sorted(["qt@tiendu.example", NOC]), summary
    for _, _, m in downs:
        assert m.subject == "[wanmon] 1 điểm mất kết nối: UBND huyện Tiên Du", m.subject
        assert_well_formed(m, ["UBND huyện Tiên Du", "UBND xã Phật Tích", "UBND xã Lạc Vệ"])
        assert "Hiên Vân" not in m.text      # it answers: not made unreachable
    # no DOWN for a commune, to anyone: the only DOWN mails are the two above, about the district
    assert len(downs) == 2, summary
    assert not any("Phật Tích" in m.subject or "Lạc Vệ" in m.subject for _, _, m in downs)
    # commune admins: one UNREACHABLE each; Hiên Vân's admins nothing
    for addr, cname in (("qt@phattich.example", "UBND xã Phật Tích"), ("qt@lacve.example", "UBND xã Lạc Vệ")):
        mine = [(k, m) for k, r, m in got if addr in r]
        assert [k for k, _ in mine] == ["unreachable"], (addr, summary)
        assert_well_formed(mine[0][1], [cname])
    assert not smtp.to("qt@hienvan.example")
    assert len(got) == 4, summary   # district admins, NOC, two commune admins

    # the outage goes on: nothing more
    for _ in range(2):
        check(lab, cfg)
    assert_count(smtp, 4, "outage goes on")

    # the district comes back (its communes with it): one RECOVERY about the district
    hosts.up(d, c1, c2)
    for _ in range(2):
        check(lab, cfg)
    after = classify(lab, cfg, smtp.snapshot()[4:])
    rec_district = [r for k, r, m in after if "recovery" in k.split("+") and "Tiên Du" in m.subject]
    assert sorted(x for r in rec_district for x in r) == sorted(["qt@tiendu.example", NOC]), \
        [(k, r, m.subject) for k, r, m in after]
    assert all("down" not in k.split("+") for k, _, _ in after)


# ---------------------------------------------------------------------------
# (3) restarts: cron processes and the daemon


CYCLE_DONE = r"cycle id=\d+ took="   # the daemon's INFO line after each recorded cycle


def start_daemon(lab, cfg: Path, log: Path) -> tuple[subprocess.Popen, Output]:
    """`wanmon run` in the lab; its log read as it comes (and copied to `log`)."""
    p = lab.popen([PY, "-m", "wanmon", "-v", "--config", str(cfg), "run"], cwd=cfg.parent, env=wm_env(),
                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return p, Output(p.stdout, log)


def stop_daemon(p: subprocess.Popen, out: Output, timeout: float = 30) -> int:
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout=timeout)
    finally:
        out.close()
        p.stdout.close()


def test_the_daemon_after_cron_repeats_nothing_and_delivers_the_recoveries(lab, hosts, smtp, tmp_path):
    """End to end with the real daemon and a real SMTP server: sites hard down under cron get one
    DOWN; the daemon started then repeats nothing, and when they answer again it delivers one
    RECOVERY per site. (Restarts over many cycles, cron and daemon: test_alerts_seams.py.)"""
    addrs = [hosts.new() for _ in range(3)]
    ids = ["yen-phong", "gia-binh", "luong-tai"]
    names = ["UBND huyện Yên Phong", "UBND huyện Gia Bình", "UBND huyện Lương Tài"]
    sites = base_sites()
    for sid, name, a in zip(ids, names, addrs):
        sites += site_toml(sid, name, "district", a, [f"qt@{sid}.example"], district=name[12:], parent="core")
    cfg = write_config(tmp_path, smtp, sites, interval_s=1)   # a 1 s cycle for the daemon part

    check(lab, cfg)
    hosts.down(*addrs)
    for _ in range(3):
        check(lab, cfg)          # each a new process: cron
    first = smtp.snapshot()
    kinds = classify(lab, cfg, first)
    assert all(k == "down" for k, _, _ in kinds), [(k, r) for k, r, _ in kinds]
    # one mail per recipient per cycle: each site's admins one, the NOC one for all three
    assert rcpts(first) == sorted([f"qt@{s}.example" for s in ids] + [NOC])
    noc_mail = smtp.to(NOC)[0]
    assert noc_mail.subject.startswith("[wanmon] 3 điểm mất kết nối: "), noc_mail.subject
    assert_well_formed(noc_mail, names)
    n0 = len(first)
    assert {p["id"] for p in alerts_json(lab, cfg)["problems"]} == set(ids)

    # the daemon while they are still down: a cycle, then SIGTERM; nothing new, not even queued
    log = tmp_path / "daemon.log"
    p, out = start_daemon(lab, cfg, log)
    try:
        out.wait_for(CYCLE_DONE)
    finally:
        rc = stop_daemon(p, out)
    assert rc == 0, log.read_text()[-3000:]
    assert_count(smtp, n0, "the daemon while hard down")
    assert len(alerts_json(lab, cfg)["outbox"]) == n0

    # back up, under the daemon: one RECOVERY per site (admins + NOC), delivered by the daemon
    hosts.up(*addrs)
    p, out = start_daemon(lab, cfg, log)
    try:
        smtp.wait_for(n0 + 4, timeout=30)
    finally:
        rc = stop_daemon(p, out)
    assert rc == 0, log.read_text()[-3000:]
    rec = classify(lab, cfg, smtp.snapshot()[n0:])
    assert all(k == "recovery" for k, _, _ in rec), [(k, r) for k, r, _ in rec]
    assert sorted(r for _, rr, _ in rec for r in rr) == sorted([f"qt@{s}.example" for s in ids] + [NOC])
    n1 = n0 + len(rec)
    # and cron again afterwards (it also delivers whatever the daemon queued last): nothing duplicated
    for _ in range(2):
        check(lab, cfg)
    assert_count(smtp, n1, "after recovery")
    mids = [m.message_id for m in smtp.snapshot()]
    assert len(mids) == len(set(mids))
    assert alerts_json(lab, cfg)["problems"] == []


# ---------------------------------------------------------------------------
# (4) SMTP outage: queue, then deliver in order, once


def test_smtp_outage_queues_then_delivers_in_order_once(lab, hosts, smtp, tmp_path):
    s1, s2 = hosts.new(), hosts.new()
    sites = base_sites()
    sites += site_toml("tu-son", "UBND thị xã Từ Sơn", "district", s1, ["qt@tuson.example"],
                       district="Từ Sơn", parent="core")
    sites += site_toml("bac-ninh", "UBND thành phố Bắc Ninh", "district", s2, ["qt@bacninh.example"],
                       district="Bắc Ninh", parent="core")
    cfg = write_config(tmp_path, smtp, sites)
    # a failed attempt waits [smtp] retry_s (60 s by default, doubling) before the next: 1 s here
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("timeout_s = 5\n", "timeout_s = 5\nretry_s = 1\n", 1),
                   encoding="utf-8")
    check(lab, cfg)

    smtp.stop()
    assert not smtp.accepts()
    hosts.down(s1)
    for _ in range(3):
        check(lab, cfg)          # DOWN tu-son queued (2 mails)
    hosts.down(s2)
    for _ in range(3):
        check(lab, cfg)          # DOWN bac-ninh queued (2 mails)
    hosts.up(s1)
    for _ in range(2):
        check(lab, cfg)          # RECOVERY tu-son queued (2 mails)
    box = alerts_json(lab, cfg)["outbox"]
    assert [o["status"] for o in box] == ["queued"] * 6, box
    assert [o["attempts"] for o in box] == [0] * 6, box  # an unreachable server counts against no mail
    assert [o["kinds"] for o in box] == [["down"]] * 4 + [["recovery"]] * 2
    assert [o["id"] for o in box] == sorted(o["id"] for o in box)
    assert smtp.snapshot() == []

    # the server answers again but says "try later": still queued, nothing lost
    smtp.fail_data = "451 4.3.0 try again later"
    smtp.start()
    check(lab, cfg)
    assert smtp.snapshot() == []
    assert len(smtp.rejected) >= 1
    box2 = alerts_json(lab, cfg)["outbox"]
    assert [o["status"] for o in box2] == ["queued"] * 6, box2
    # each was refused for now (451): one attempt each, and a retry time
    assert [o["attempts"] for o in box2] == [1] * 6 and all(o["next_try_ts"] for o in box2), box2
    assert all(o["last_error"].startswith("451") for o in box2), box2

    # the server takes mail again: once their retry time has come (retry_s = 1 here, 60 s by
    # default), the next cycle delivers all six, in queue order, once
    smtp.fail_data = None
    time.sleep(max(0.0, max(o["next_try_ts"] for o in box2) - time.time()) + 0.1)
    check(lab, cfg)
    got = assert_count(smtp, 6, "after the SMTP outage")
    assert [m.message_id for m in got] == [o["message_id"] for o in box]
    assert [m.rcpt_tos for m in got] == [[o["to"]] for o in box]
    assert [m.subject for m in got] == [o["subject"] for o in box]
    assert len({m.message_id for m in got}) == 6
    box3 = alerts_json(lab, cfg)["outbox"]
    assert [o["status"] for o in box3] == ["sent"] * 6, box3
    assert [o["attempts"] for o in box3] == [2] * 6, box3
    for _ in range(2):
        check(lab, cfg)
    assert_count(smtp, 6, "later cycles")


# ---------------------------------------------------------------------------
# (5) the store lock: a second check exits 75 at once; kill -9 leaves no stale lock


def _lock_held_by(cfg: Path, pid: int) -> bool:
    lock = db_path(cfg).with_name("wanmon.db.lock")
    return lock.exists() and f"pid {pid} " in lock.read_text()


def wait_lock_taken(w: FileWrites, cfg: Path, proc: subprocess.Popen, timeout: float = 30) -> None:
    """Until `proc` holds the cycle lock: it writes its pid into the lock file once it has it
    (each write wakes us; no polling)."""
    deadline = time.monotonic() + timeout
    while not _lock_held_by(cfg, proc.pid):
        assert proc.poll() is None, "the check ended before it took the lock"
        w.wait("wanmon.db.lock", MODIFY, deadline - time.monotonic())


def test_concurrent_check_exits_75_and_kill_9_leaves_no_stale_lock(lab, hosts, smtp, tmp_path):
    a = hosts.new()
    sites = base_sites(2) + site_toml("site-a", "Điểm A", "district", a, ["a@x.example"],
                                      district="A", parent="core")
    # a long sweep: 25 packets 120 ms apart, about 3 s
    cfg = write_config(tmp_path, smtp, sites, count=25, interval_ms=120)
    check(lab, cfg)          # creates the store
    n = cycles(cfg)

    with FileWrites(db_path(cfg).parent) as w:
        first = lab.popen([PY, "-m", "wanmon", "--config", str(cfg), "check"], cwd=tmp_path, env=wm_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_lock_taken(w, cfg, first)
    t0 = time.monotonic()
    second = wm(lab, cfg, "check")
    took = time.monotonic() - t0
    first_running = first.poll() is None
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert second.returncode == EXIT_BUSY, (second.returncode, second.stderr)
    assert "another wanmon cycle is running" in second.stderr and f"pid {first.pid}" in second.stderr
    assert first_running, "the second check waited for the first"
    assert took < 2.5, f"the second check took {took:.1f} s to give up"
    assert cycles(cfg) == n + 1

    # kill -9 in the middle of a cycle (lock taken, store open, sweeping): the next run proceeds
    with FileWrites(db_path(cfg).parent) as w:
        victim = lab.popen([PY, "-m", "wanmon", "--config", str(cfg), "check"], cwd=tmp_path, env=wm_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_lock_taken(w, cfg, victim)
        w.wait("wanmon.db", OPEN)      # the cycle opened the store (after the lock)
    assert victim.poll() is None
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL
    after = wm(lab, cfg, "check")
    assert after.returncode == 0, after.stderr
    assert cycles(cfg) == n + 2          # the killed cycle left nothing behind
    assert store_query(cfg, "PRAGMA integrity_check")[0][0] == "ok"


# ---------------------------------------------------------------------------
# (6) header injection through site names


HOSTILE = {
    "crlf": "Trạm X\r\nBcc: evil@x.example",
    "encoded": "=?utf-8?q?a=0D=0ABcc:_evil@x.example?=",
    "lf": "Trạm Y\nBcc: evil@x.example\nX-Injected: 1",
}


def test_hostile_site_names_add_no_header_and_no_recipient(lab, hosts, smtp, tmp_path):
    addrs = {k: hosts.new() for k in HOSTILE}
    sites = base_sites()
    for k, name in HOSTILE.items():
        sites += site_toml(f"evil-{k}", name, "district", addrs[k], [f"{k}@x.example"],
                           district=f"D-{k}", parent="core")
    cfg = write_config(tmp_path, smtp, sites)
    v = wm(lab, cfg, "validate")
    assert v.returncode == 0, v.stderr    # names are data: accepted, and must be made safe
    check(lab, cfg)
    hosts.down(*addrs.values())
    for _ in range(3):
        check(lab, cfg)
    got = smtp.snapshot()
    # one DOWN to each site's admin, one to the NOC listing all three
    assert rcpts(got) == sorted([f"{k}@x.example" for k in HOSTILE] + [NOC]), [(m.rcpt_tos, m.subject) for m in got]
    expected_headers = None
    for m in got:
        assert all("evil" not in r for r in m.rcpt_tos), m.rcpt_tos
        assert len(m.rcpt_tos) == 1
        names = [h.lower() for h in m.header_names()]
        assert "bcc" not in names and "x-injected" not in names, names
        assert len(names) == len(set(names)), names
        if expected_headers is None:
            expected_headers = set(names)
        assert set(names) == expected_headers
        raw_h = m.raw_headers().decode("ascii", "replace")
        for line in raw_h.split("\n"):
            assert not line.lower().startswith(("bcc:", "x-injected:")), raw_h
        subj = m.subject
        assert "\r" not in subj and "\n" not in subj, repr(subj)
        assert not m.message.defects, m.message.defects
        # the encoded-word text is shown literally, not decoded into a CR LF
        to_h = m.header("To")
        assert "evil" not in (to_h or "") and m.header("Cc") is None
        # HTML part: names are escaped text
        assert "<script" not in (m.html or "")
    assert "to" in expected_headers and "subject" in expected_headers and "message-id" in expected_headers
    # the NOC mail names all three (the encoded one verbatim, no decoding into a header break)
    [noc] = smtp.to(NOC)
    assert "evil@x.example" in noc.text      # shown as text in the body, that is fine
    assert "=?utf-8?q?a=0D=0ABcc:_evil@x.example?=" in noc.text


def _alert_rows(cfg: Path) -> tuple[list, list]:
    """The store's alert state machines and its outbox, row by row."""
    import sqlite3

    con = sqlite3.connect(f"file:{db_path(cfg)}?mode=ro", uri=True)
    try:
        return (con.execute("SELECT * FROM alert_state ORDER BY site_id").fetchall(),
                con.execute("SELECT * FROM outbox ORDER BY id").fetchall())
    finally:
        con.close()


def test_dry_run_changes_nothing_and_the_next_check_sends_what_it_showed(lab, hosts, smtp, tmp_path):
    a = hosts.new()
    name = "UBND huyện Dry"
    sites = base_sites() + site_toml("dry", name, "district", a, ["dry@x.example"], district="Dry", parent="core")
    cfg = write_config(tmp_path, smtp, sites)
    check(lab, cfg)
    hosts.down(a)
    check(lab, cfg)
    check(lab, cfg)  # two cycles down of the three that confirm it
    before = _alert_rows(cfg)
    cycles = alerts_json(lab, cfg)
    out = check(lab, cfg, "--dry-run").stdout
    assert "dry@x.example" in out and f"[wanmon] 1 điểm mất kết nối: {name}" in out, out
    assert "nothing was recorded" in out
    assert _alert_rows(cfg) == before           # alert states and outbox as they were
    assert alerts_json(lab, cfg) == cycles
    out2 = check(lab, cfg, "--dry-run").stdout  # a second dry run shows the same news again
    assert f"[wanmon] 1 điểm mất kết nối: {name}" in out2
    assert smtp.snapshot() == []
    # the real check sends what the dry run showed
    check(lab, cfg)
    got = smtp.wait_for(2, timeout=10)
    assert any("dry@x.example" in m.rcpt_tos and name in m.subject for m in got), [m.subject for m in got]


# ---------------------------------------------------------------------------
# test-email


def test_test_email_sends_and_fails_clearly(lab, smtp, tmp_path):
    cfg = write_config(tmp_path, smtp, base_sites(0))
    cp = wm(lab, cfg, "test-email", "someone@x.example")
    assert cp.returncode == 0, cp.stderr
    [m] = smtp.wait_for(1, timeout=5)
    assert m.rcpt_tos == ["someone@x.example"] and m.mail_from == FROM
    assert m.message_id and m.message_id in cp.stdout
    smtp.stop()
    cp = wm(lab, cfg, "test-email", "someone@x.example")
    assert cp.returncode == 1
    assert f"127.0.0.1:{smtp.port}" in cp.stderr and "refused" in cp.stderr.lower(), cp.stderr


def test_test_email_with_auth(lab, tmp_path):
    srv = SMTPServer(netns=lab.client, auth=("wanmon", "pa55 word")).start()
    try:
        cfg = write_config(tmp_path, None, base_sites(0),
                           extra=srv.toml(from_addr=FROM, user_env="SMTP_USER", password_env="SMTP_PASS"))
        ok = wm(lab, cfg, "test-email", "a@x.example", env={"SMTP_USER": "wanmon", "SMTP_PASS": "pa55 word"})
        assert ok.returncode == 0, ok.stderr
        [m] = srv.wait_for(1, timeout=5)
        assert m.auth_login == "wanmon"
        bad = wm(lab, cfg, "test-email", "a@x.example", env={"SMTP_USER": "wanmon", "SMTP_PASS": "nope"})
        assert bad.returncode == 1
        assert "login" in bad.stderr.lower() or "auth" in bad.stderr.lower(), bad.stderr
        assert "nope" not in bad.stderr and "pa55" not in bad.stderr
    finally:
        srv.stop()


# ---------------------------------------------------------------------------
# the other kinds: the agent-side guard, maintenance, flapping (reminders, which need hours to
# pass: test_alerts_seams.py, with an injected clock)


def test_guard_when_the_agents_upstream_is_silent_mails_the_noc_only(lab, hosts, smtp, tmp_path):
    """The agent cut off: its upstream (the only site without a parent) and everything behind it
    stop answering. One mail to the NOC, none per site; then one 'connected again'."""
    gw = hosts.new()
    addrs = [hosts.new() for _ in range(6)]
    sites = site_toml("gw", "Cổng trung tâm dữ liệu", "province", gw, ["gw@x.example"])
    for i, a in enumerate(addrs):
        sites += site_toml(f"g{i}", f"Điểm G{i}", "district", a, [f"g{i}@x.example"],
                           district=f"G{i}", parent="gw")
    cfg = write_config(tmp_path, smtp, sites)
    check(lab, cfg)
    hosts.down(gw, *addrs)
    for _ in range(4):
        check(lab, cfg)
    got = classify(lab, cfg, smtp.snapshot())
    assert [(k, r) for k, r, _ in got] == [("guard", [NOC])], [(k, r, m.subject) for k, r, m in got]
    assert "gw" in got[0][2].text, got[0][2].text   # the silent upstream is named
    assert alerts_json(lab, cfg)["guard"] is True
    hosts.up(gw, *addrs)
    for _ in range(3):
        check(lab, cfg)
    got = classify(lab, cfg, smtp.snapshot())
    assert [(k, r) for k, r, _ in got] == [("guard", [NOC]), ("guard_end", [NOC])], \
        [(k, r, m.subject) for k, r, m in got]
    assert alerts_json(lab, cfg)["problems"] == []


def test_six_sites_district_and_all_its_communes_down_is_one_down_and_one_recovery(lab, hosts, smtp, tmp_path):
    """5 of 6 sites fail, but the agent's upstream (core) answers: one root cause. The district's
    admins get one DOWN listing the communes and one RECOVERY; no guard mail (issue 11)."""
    d = hosts.new()
    communes = [hosts.new() for _ in range(4)]
    dist = "Gia Bình"
    sites = base_sites(0) + site_toml("gia-binh", "UBND huyện Gia Bình", "district", d, ["qt@giabinh.example"],
                                      district=dist, parent="core")
    names = ["UBND xã Đông Cứu", "UBND xã Giang Sơn", "UBND xã Lãng Ngâm", "UBND xã Song Giang"]
    for i, (a, n) in enumerate(zip(communes, names)):
        sites += site_toml(f"xa-{i}", n, "commune", a, [f"xa{i}@giabinh.example"], district=dist, parent="gia-binh")
    cfg = write_config(tmp_path, smtp, sites)
    check(lab, cfg)
    hosts.down(d, *communes)
    for _ in range(3):
        check(lab, cfg)
    st = site_statuses(cfg)
    assert st["gia-binh"] == "down" and {st[f"xa-{i}"] for i in range(4)} == {"unreachable"}
    got = classify(lab, cfg, smtp.snapshot())
    summary = [(k, r) for k, r, _ in got]
    assert not [k for k, _ in summary if k.startswith("guard")], summary
    downs = [m for k, r, m in got if "down" in k.split("+")]
    assert rcpts(downs) == sorted(["qt@giabinh.example", NOC]), summary
    for m in downs:
        assert_well_formed(m, ["UBND huyện Gia Bình", *names])
    assert alerts_json(lab, cfg)["guard"] is False
    n_before = len(got)
    hosts.up(d, *communes)
    for _ in range(2):
        check(lab, cfg)
    got = classify(lab, cfg, smtp.snapshot())[n_before:]
    district_rec = [m for k, r, m in got if "recovery" in k.split("+") and "qt@giabinh.example" in r]
    assert len(district_rec) == 1 and "UBND huyện Gia Bình" in district_rec[0].subject, [(k, r) for k, r, _ in got]
    assert not [k for k, _, _ in got if k.startswith("guard")]


def decoded(m) -> tuple[str, str, str]:
    """(subject, text, html) of a captured mail, decoded from the raw bytes aiosmtpd received by
    Python's email package (policy.default), which wanmon does not use to read mail; the message
    must parse without defects."""
    import email
    from email.policy import default

    msg = email.message_from_bytes(m.raw, policy=default)
    assert not msg.defects and all(not p.defects for p in msg.walk()), [p.defects for p in msg.walk()]
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text.get_content_charset() == "utf-8" and html.get_content_charset() == "utf-8"
    return str(msg["Subject"]), text.get_content(), html.get_content()


def hanoi(ts: float) -> str:
    """A time as the Vietnamese mails write it (dd/mm/yyyy HH:MM, Hà Nội)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(ts, ZoneInfo("Asia/Ho_Chi_Minh")).strftime("%d/%m/%Y %H:%M")


def alert_state(cfg: Path, sid: str) -> dict:
    [(state,)] = store_query(cfg, "SELECT state FROM alert_state WHERE site_id = ?", (sid,))
    return json.loads(state)


def listed_ids(text: str) -> list[str]:
    """The ids of a text mail's '    - name (id)' lines, in order."""
    import re

    return re.findall(r"^    - .+ \(([a-z0-9-]+)\)\r?$", text, re.M)


def test_a_district_outage_told_to_each_reader_grouped_and_in_vietnamese_order(lab, hosts, smtp, tmp_path):
    """Issue 22: the Gia Bình router stops answering (real ICMP), its communes with it. Each
    commune's admins are told which upstream site cut them off, since when, that nothing is to
    be done at the commune and whom to ask; the NOC's RECOVERY is grouped like its DOWN; lists
    in Vietnamese order; every mail decodes from the bytes the SMTP server received."""
    d = hosts.new()
    communes = {"gb-xuan-lai": "UBND xã Xuân Lai", "gb-dong-cuu": "UBND xã Đông Cứu",
                "gb-dai-bai": "UBND xã Đại Bái", "gb-dung-liet": "UBND xã Dũng Liệt",
                "gb-au-co": "UBND xã Âu Cơ", "gb-an-thuong": "UBND xã Ăn Thượng",
                "gb-an-binh": "UBND xã An Bình", "gb-binh-duong": "UBND xã Bình Dương"}
    # in Vietnamese order: A Ă Â B D Đ … X (Python's sorted() puts Ă, Â, Đ after X)
    in_vi_order = ["gb-an-binh", "gb-an-thuong", "gb-au-co", "gb-binh-duong", "gb-dung-liet", "gb-dai-bai",
                   "gb-dong-cuu", "gb-xuan-lai"]
    addrs = {sid: hosts.new() for sid in communes}
    sites = base_sites() + site_toml("gia-binh", "UBND huyện Gia Bình", "district", d, ["qt@giabinh.example"],
                                     district="Gia Bình", parent="core")
    for sid, name in communes.items():
        sites += site_toml(sid, name, "commune", addrs[sid], [f"{sid}@giabinh.example"], district="Gia Bình",
                           parent="gia-binh")
    contact, district_contact = "Trung tâm CNTT tỉnh: 0222 3 123 456", "Phòng VHTT huyện Gia Bình: 0222 3 671 000"
    cfg = write_config(tmp_path, smtp, sites,
                       alerts=f'contact = "{contact}"\n[alerts.district_contacts]\n"Gia Bình" = "{district_contact}"')
    check(lab, cfg)
    hosts.down(d, *addrs.values())
    assert not hosts.answers(d)
    for _ in range(3):
        check(lab, cfg)
    assert {st for sid, st in site_statuses(cfg).items() if sid in communes} == {"unreachable"}
    down_since = alert_state(cfg, "gia-binh")["hard_since"]
    got = classify(lab, cfg, smtp.snapshot())
    assert sorted(r for _, rr, _ in got for r in rr) == sorted(
        [NOC, "qt@giabinh.example", *(f"{sid}@giabinh.example" for sid in communes)]), [(k, r) for k, r, _ in got]

    # each commune's admins: the district named as the cause, since when, nothing to do locally, whom to ask
    for kind, (rcpt,), m in got:
        if rcpt not in (NOC, "qt@giabinh.example"):
            sid = rcpt.split("@")[0]
            subj, text, html = decoded(m)
            assert kind == "unreachable" and subj == f"[wanmon] 1 điểm không tới được do tuyến trên: {communes[sid]}"
            for body in (text, html):
                assert (f"Nguyên nhân: tuyến trên UBND huyện Gia Bình (gia-binh) mất kết nối từ {hanoi(down_since)}"
                        in body), body
                assert "Không cần xử lý tại đơn vị" in body and district_contact in body, body
    # the district's admins and the NOC: one DOWN, the communes listed under it in Vietnamese order
    for rcpt in ("qt@giabinh.example", NOC):
        [(kind, m)] = [(k, m) for k, r, m in got if r == [rcpt]]
        subj, text, html = decoded(m)
        assert kind == "down" and subj == "[wanmon] 1 điểm mất kết nối: UBND huyện Gia Bình", subj
        assert listed_ids(text) == in_vi_order, text
        assert [html.index(f"({sid})") for sid in in_vi_order] == sorted(html.index(f"({sid})") for sid in in_vi_order)
    assert "Kiểm tra nguồn điện" in decoded(smtp.to("qt@giabinh.example")[0])[1]   # the district has work to do
    n_down = len(got)

    # back: the first answering cycle is when it came back
    hosts.up(d, *addrs.values())
    before_up = time.time()
    check(lab, cfg)
    check(lab, cfg)
    back = alert_state(cfg, "gia-binh")["streak_since"]
    assert before_up - 1 <= back <= time.time(), (before_up, back)
    rec = classify(lab, cfg, smtp.snapshot()[n_down:])
    assert {k for k, _, _ in rec} == {"recovery"}
    [noc_rec] = [m for _, r, m in rec if r == [NOC]]
    subj, text, html = decoded(noc_rec)
    assert subj == "[wanmon] 1 điểm đã kết nối lại: UBND huyện Gia Bình", subj     # one root cause, as the DOWN
    assert listed_ids(text) == in_vi_order, text                                   # grouped like its DOWN
    assert f"Cùng kết nối lại ({len(communes)}):" in text
    assert (f"ĐÃ KẾT NỐI LẠI: UBND huyện Gia Bình (gia-binh), lúc {hanoi(back)}, sau" in text
            and f"mất kết nối (từ {hanoi(down_since)})" in text), text
    assert text.count("ĐÃ KẾT NỐI LẠI") == 1 and "mất kết nối" not in text.split("Cùng kết nối lại")[1]
    for sid in communes:
        [(m,)] = [(m,) for _, r, m in rec if r == [f"{sid}@giabinh.example"]]
        subj, text, _ = decoded(m)
        assert subj == f"[wanmon] 1 điểm đã kết nối lại: {communes[sid]}"
        assert f"lúc {hanoi(back)}" in text and "không tới được do tuyến trên" in text, text
        assert "Nguyên nhân: tuyến trên UBND huyện Gia Bình (gia-binh) mất kết nối" in text, text
    assert len(rec) == 2 + len(communes)


def test_maintenance_window_silences_a_site(lab, hosts, smtp, tmp_path):
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    a, b = hosts.new(), hosts.new()
    now = datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).replace(second=0, microsecond=0, tzinfo=None)
    window = (f'[[maintenance]]\nsites = ["bao-tri"]\n'
              f'start = "{(now - timedelta(hours=1)).isoformat(timespec="minutes")}"\n'
              f'end = "{(now + timedelta(hours=1)).isoformat(timespec="minutes")}"\n')
    sites = base_sites()
    sites += site_toml("bao-tri", "Điểm bảo trì", "district", a, ["bt@x.example"], district="BT", parent="core")
    sites += site_toml("khac", "Điểm khác", "district", b, ["khac@x.example"], district="K", parent="core")
    cfg = write_config(tmp_path, smtp, sites, extra=window)
    check(lab, cfg)
    hosts.down(a, b)
    for _ in range(3):
        check(lab, cfg)
    got = smtp.snapshot()
    assert rcpts(got) == sorted(["khac@x.example", NOC]), [(m.rcpt_tos, m.subject) for m in got]
    assert all("bảo trì" not in m.subject for m in got)


def test_flapping_start_and_end(lab, hosts, smtp, tmp_path):
    a = hosts.new()
    sites = base_sites() + site_toml("chap-chon", "Điểm chập chờn", "district", a, ["cc@x.example"],
                                     district="CC", parent="core")
    cfg = write_config(tmp_path, smtp, sites,
                       alerts="flap_window = 5\nflap_high_pct = 50\nflap_low_pct = 10\n")
    # up, down, up, down, up: 4 changes in 5 cycles
    for i in range(5):
        (hosts.up if i % 2 == 0 else hosts.down)(a)
        check(lab, cfg)
    got = classify(lab, cfg, smtp.snapshot())
    assert [(k, sorted(r)) for k, r, _ in got] in (
        [("flap_start", ["cc@x.example"]), ("flap_start", [NOC])],
        [("flap_start", [NOC]), ("flap_start", ["cc@x.example"])],
    ), [(k, r, m.subject) for k, r, m in got]
    # steady up until the window holds no change: one end notice
    hosts.up(a)
    for _ in range(5):
        check(lab, cfg)
    got = classify(lab, cfg, smtp.snapshot())
    assert sorted(k for k, _, _ in got) == ["flap_end", "flap_end", "flap_start", "flap_start"], \
        [(k, r, m.subject) for k, r, m in got]
