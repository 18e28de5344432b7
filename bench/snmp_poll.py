#!/usr/bin/env python3
"""SNMP poll benchmark: `wanmon inventory --refresh` end to end against net-snmp.

N simulated SNMP agents (default 177, one per WAN connection point), each on
its own loopback endpoint 127.0.X.Y:PORT with realistic data (system group,
4-12 interfaces with ifTable + ifXTable), are polled in full by both tools in
the same run, for SNMPv2c and SNMPv3 authPriv (SHA/AES):

    python -m wanmon --config FILE inventory --refresh --json      (exactly as a user runs it)

    xargs -P 0 -L 1 sh poll_one.sh < agents                         (net-snmp, all agents at once)
      poll_one.sh:  snmpget      -t 1 -r 1 AGENT sysDescr ... sysLocation ifNumber
                    snmpbulkwalk -t 1 -r 1 AGENT ifTable
                    snmpbulkwalk -t 1 -r 1 AGENT ifXTable

The script reports wall-clock, CPU (user+sys from wait4) and peak RSS
(ru_maxrss from wait4) of each tool, their ratios, and "spurious" agents:
agents that are up but that the tool reported as a timeout, an error, or with
missing/wrong data (sysName, interface count, interface names).  It prints
PASS/FAIL for the acceptance figures (0 spurious, wall <= 1.0x net-snmp for
every version), but always exits 0 once the measurements are done (1 if a
tool produced no usable output, 2 if the agents could not be set up).

Agents (default): one net-snmp snmpd per device, each with its own engine
ID, community and SNMPv3 user, serving the device's data through a tiny C
pass_persist responder: 177 independent, fast agents, as on a real WAN.
`--agent-impl snmpsim` uses snmpsim as the tests do instead (v2c: the tests'
SnmpSim, one engine; v3: one engine per device); a single-threaded simulator
cannot answer 177 agents polled at once in time, so it measures itself.  See
bench/README.md.

Only 127.0.0.0/8 is ever contacted.  Every process started here is stopped
by its own PID on exit, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import csv
import io
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.join(REPO, "tests"))
import _measure as M  # noqa: E402
from _measure import default_python, log  # noqa: E402
import snmp_agents as sa  # noqa: E402  (tests/snmp_agents.py: Device, SnmpSim, net-snmp CLI helpers)

TIMEOUT_S = 1          # net-snmp -t 1      = wanmon timeout_ms = 1000
RETRIES = 1            # net-snmp -r 1      = wanmon retries = 1
V3_USER = "wmbench"
V3_AUTH, V3_PRIV = "SHA", "AES"

SYS_OIDS = [sa.SYS_DESCR, sa.SYS_OBJECT_ID, sa.SYS_UPTIME, sa.SYS_CONTACT, sa.SYS_NAME,
            sa.SYS_LOCATION, sa.IF_NUMBER]
IF_TABLE = "1.3.6.1.2.1.2.2"
IFX_TABLE = "1.3.6.1.2.1.31.1.1"
UNITS_TSV = str(Path(__file__).resolve().parent.parent / "data" / "bacninh-units-2023.tsv")
TOOLS = ("netsnmp", "wanmon")


# --------------------------------------------------------------------------
# simulated devices


@dataclass(frozen=True)
class Port:
    if_index: int
    name: str
    if_type: int
    speed_bps: int
    physical: bool
    descr: str | None = None


def _seq(names: list[tuple[str, int, int, bool]], start: int = 1) -> list[Port]:
    return [Port(start + k, n, t, s, p) for k, (n, t, s, p) in enumerate(names)]


G, M100, T10 = 1_000_000_000, 100_000_000, 10_000_000_000
ETH, LOOP, OTHER, TUNNEL, PROPVIRT, PPP, L3VLAN, BRIDGE = 6, 24, 1, 131, 53, 23, 136, 209


def _cisco_isr() -> list[Port]:
    ports = [(f"GigabitEthernet0/0/{k}", ETH, G, True) for k in range(2)]
    ports += [(f"GigabitEthernet0/1/{k}", ETH, G, True) for k in range(8)]
    ports += [("GigabitEthernet0", ETH, G, True), ("Null0", OTHER, 4_294_967_295, False),
              ("Loopback0", LOOP, 8_000_000_000, False), ("Tunnel0", TUNNEL, 100_000, False),
              ("Vlan1", PROPVIRT, G, False)]
    return _seq(ports)


def _cisco_2960x() -> list[Port]:
    out = [Port(1, "Vlan1", PROPVIRT, G, False)]
    out += [Port(10101 + k, f"GigabitEthernet1/0/{k + 1}", ETH, G, True) for k in range(12)]
    out += [Port(10601, "TenGigabitEthernet1/0/1", ETH, T10, True),
            Port(14501, "Null0", OTHER, 4_294_967_295, False)]
    return out


def _juniper_srx() -> list[Port]:
    out = [Port(6, "lo0", LOOP, 0, False), Port(21, "lsi", OTHER, 0, False)]
    out += [Port(508 + k, f"ge-0/0/{k}", ETH, G, True) for k in range(8)]
    out += [Port(530, "ge-0/0/0.0", PROPVIRT, G, False), Port(531, "ge-0/0/1.0", PROPVIRT, G, False),
            Port(540, "st0", TUNNEL, 0, False), Port(541, "st0.0", TUNNEL, 0, False)]
    return out


def _mikrotik() -> list[Port]:
    ports = [(f"ether{k}", ETH, G, True) for k in range(1, 11)]
    ports += [("sfp-sfpplus1", ETH, T10, True), ("bridge", BRIDGE, 0, False),
              ("pppoe-out1", PPP, 0, False)]
    return _seq(ports)


def _huawei_ar() -> list[Port]:
    out = _seq([("InLoopBack0", LOOP, 0, False), ("NULL0", OTHER, 0, False), ("Vlanif1", L3VLAN, G, False),
                ("GigabitEthernet0/0/0", ETH, G, True)]
               + [(f"Ethernet0/0/{k}", ETH, M100, True) for k in range(4)]
               + [("GigabitEthernet0/0/4", ETH, G, True), ("Cellular0/0/0", OTHER, 0, True),
                  ("Tunnel0/0/1", TUNNEL, 0, False), ("Virtual-Template0", PPP, 0, False),
                  ("Dialer1", PPP, 0, False)])
    return [Port(p.if_index, p.name, p.if_type, p.speed_bps, p.physical,
                 f"HUAWEI, AR Series, {p.name} Interface" if p.physical else None) for p in out]


def _fortigate() -> list[Port]:
    ports = [("wan1", ETH, G, True), ("wan2", ETH, G, True), ("dmz", ETH, G, True)]
    ports += [(f"internal{k}", ETH, G, True) for k in range(1, 6)]
    ports += [("modem", PPP, 0, False), ("ssl.root", TUNNEL, 0, False), ("fortilink", PROPVIRT, 0, False),
              ("internal", ETH, G, False), ("naf.root", TUNNEL, 0, False)]
    return _seq(ports)


def _linux() -> list[Port]:
    ports = [("lo", LOOP, 10_000_000, False)]
    ports += [(f"eth{k}", ETH, G, True) for k in range(4)]
    ports += [("ens19", ETH, T10, True), ("br0", ETH, 0, False), ("eth0.100", L3VLAN, 0, False),
              ("wg0", OTHER, 0, False), ("tun0", TUNNEL, 10_000_000, False), ("ppp0", PPP, 0, False),
              ("docker0", ETH, 0, False)]
    return _seq(ports)


def _h3c() -> list[Port]:
    out = _seq([("GigabitEthernet0/0", ETH, G, True), ("GigabitEthernet0/1", ETH, G, True)]
               + [(f"GigabitEthernet1/0/{k}", ETH, G, True) for k in range(8)]
               + [("NULL0", OTHER, 0, False), ("InLoopBack0", LOOP, 0, False),
                  ("Vlan-interface1", L3VLAN, G, False), ("Dialer0", PPP, 0, False)])
    return [Port(p.if_index, p.name, p.if_type, p.speed_bps, p.physical, f"{p.name} Interface") for p in out]


@dataclass(frozen=True)
class Profile:
    vendor: str
    sys_object_id: str
    sys_descr: str
    ports: Any  # () -> list[Port], in ifIndex order, at least 12


PROFILES = [
    Profile("Cisco ISR4321", "1.3.6.1.4.1.9.1.2068",
            "Cisco IOS Software [Fuji], ISR Software (X86_64_LINUX_IOSD-UNIVERSALK9-M), Version 16.9.5, "
            "RELEASE SOFTWARE (fc1)\r\nTechnical Support: http://www.cisco.com/techsupport\r\n"
            "Copyright (c) 1986-2020 by Cisco Systems, Inc.\r\nCompiled Thu 30-Jan-20 18:48 by mcpre",
            _cisco_isr),
    Profile("Cisco C2960X", "1.3.6.1.4.1.9.1.1208",
            "Cisco IOS Software, C2960X Software (C2960X-UNIVERSALK9-M), Version 15.2(7)E4, RELEASE SOFTWARE "
            "(fc2)\r\nTechnical Support: http://www.cisco.com/techsupport\r\n"
            "Copyright (c) 1986-2021 by Cisco Systems, Inc.\r\nCompiled Fri 05-Feb-21 11:49 by mcpre",
            _cisco_2960x),
    Profile("Juniper SRX300", "1.3.6.1.4.1.2636.1.1.1.2.133",
            "Juniper Networks, Inc. srx300 internet router, kernel JUNOS 21.4R3-S4.9, "
            "Build date: 2023-05-10 02:09:49 UTC Copyright (c) 1996-2023 Juniper Networks, Inc.",
            _juniper_srx),
    Profile("MikroTik RB4011", "1.3.6.1.4.1.14988.1", "RouterOS RB4011iGS+", _mikrotik),
    Profile("Huawei AR161", "1.3.6.1.4.1.2011.2.224.279",
            "Huawei Versatile Routing Platform Software\r\nVRP (R) software, Version 5.170 "
            "(AR160 V200R010C10SPC700)\r\nCopyright (C) 2011-2018 HUAWEI TECH CO., LTD\r\nHuawei AR161 Router",
            _huawei_ar),
    Profile("FortiGate 60F", "1.3.6.1.4.1.12356.101.1.641", "FortiGate-60F v7.2.8,build1639,240313 (GA.M)",
            _fortigate),
    Profile("Linux (net-snmp)", "1.3.6.1.4.1.8072.3.2.10",
            "Linux gw-bn 5.10.0-28-amd64 #1 SMP Debian 5.10.209-2 (2024-01-31) x86_64", _linux),
    Profile("H3C MSR2600", "1.3.6.1.4.1.25506.11.1.136",
            "H3C Comware Platform Software, Software Version 7.1.064, Release 0821P16\r\n"
            "H3C MSR2600-10-X1\r\nCopyright (c) 2004-2021 New H3C Technologies Co., Ltd. All rights reserved.",
            _h3c),
]

ALIASES = ["WAN - VNPT", "WAN - Viettel", "Kết nối Sở TT&TT", "LAN UBND", "uplink core", "Camera",
           "Một cửa", "Wi-Fi khách", "backup 4G", "Phòng họp trực tuyến"]


def _units(n: int) -> list[str]:
    """Display names of the WAN's connection points (the province's units when
    the reference list is there), cycled to n."""
    names: list[str] = []
    try:
        with open(UNITS_TSV, encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                kind, name = row.get("kind", ""), row.get("name", "")
                if row.get("level") == "province":
                    names.append(name)
                else:
                    names.append(f"{kind} {name}" + (f" ({row['district']})" if row.get("district") else ""))
    except (OSError, KeyError, csv.Error):
        names = []
    if not names:
        names = ["Điểm kết nối"]
    return [names[k] if k < len(names) else f"Điểm kết nối {k + 1}" for k in range(n)]


def _slug(s: str) -> str:
    s = unicodedata.normalize("NFKD", s.replace("đ", "d").replace("Đ", "D"))
    s = "".join(c for c in s if not unicodedata.combining(c)).lower()
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-")[:24].strip("-") or "site"


@dataclass(frozen=True)
class Agent:
    idx: int                  # 1-based
    site_id: str
    site_name: str
    vendor: str
    device: sa.Device
    comm_env: str             # environment variable holding the v2c community for wanmon

    @property
    def address(self) -> str:
        return self.device.address

    @property
    def n_if(self) -> int:
        return len(self.device.interfaces)

    @property
    def if_names(self) -> list[str]:
        return [i.name for i in self.device.interfaces]


def make_agents(n: int, seed: int) -> list[Agent]:
    """n devices with realistic, reproducible (per seed) data; the addresses
    are a fresh 127.0.X.Y block (random X) so parallel test runs rarely share one."""
    rnd = random.Random(seed)
    addrs = sa.loopback_addresses(n)
    names = _units(n)
    now = time.time()
    agents = []
    for k in range(n):
        idx = k + 1
        prof = PROFILES[rnd.randrange(len(PROFILES))]
        cands = prof.ports()
        n_if = rnd.randint(4, 12)
        # the first two (the usual WAN/LAN ports) and a random choice of the rest, in ifIndex order
        chosen = sorted(cands[:2] + rnd.sample(cands[2:], n_if - 2), key=lambda p: p.if_index)
        first_two = {cands[0].if_index, cands[1].if_index}
        ifs = []
        for j, p in enumerate(chosen):
            lead = p.if_index in first_two
            if p.physical and not lead:
                admin, oper = rnd.choices([(1, 1), (1, 2), (2, 2)], weights=[75, 15, 10])[0]
            else:
                admin, oper = (1, 1)
            up = oper == 1
            rate_in = rnd.uniform(2e3, 2.5e6) if up and p.physical else 0.0
            rate_out = rnd.uniform(1e3, 1.2e6) if up and p.physical else 0.0
            ifs.append(sa.Interface(
                if_index=p.if_index, name=p.name, descr=p.descr or p.name,
                alias=(rnd.choice(ALIASES) if lead or rnd.random() < 0.3 else ""),
                if_type=p.if_type, speed_bps=p.speed_bps, admin_status=admin, oper_status=oper,
                mtu=1500 if p.if_type != LOOP else 65536,
                mac=bytes([0x00, 0x1b, 0x54, idx >> 8 & 0xFF, idx & 0xFF, j]) if p.physical else None,
                in_octets=rnd.randrange(0, 2 ** 44) if up else 0,
                out_octets=rnd.randrange(0, 2 ** 43) if up else 0,
                in_rate=rate_in, out_rate=rate_out,
                in_errors=rnd.choice([0, 0, 0, rnd.randrange(1, 5000)]),
                out_errors=rnd.choice([0, 0, 0, 0, rnd.randrange(1, 500)]),
                in_discards=rnd.choice([0, 0, rnd.randrange(1, 20000)]),
                out_discards=rnd.choice([0, 0, rnd.randrange(1, 3000)]),
                in_ucast=rnd.randrange(0, 2 ** 32), out_ucast=rnd.randrange(0, 2 ** 32),
                last_change=rnd.randrange(0, 2 ** 31)))
        uptime_s = rnd.randrange(3600, 400 * 86400)
        sys_name = f"bn-{_slug(names[k])}-{idx:03d}"
        dev = sa.Device(
            community=f"bn{idx:03d}{secrets.token_hex(4)}", address=addrs[k], sys_name=sys_name,
            sys_object_id=prof.sys_object_id, sys_descr=prof.sys_descr,
            sys_location=f"{names[k]}, Bắc Ninh", sys_contact="noc@sotttt.example",
            sys_uptime=uptime_s * 100, engine_boots=rnd.randint(1, 40), engine_time=uptime_s,
            interfaces=ifs, epoch=now)
        agents.append(Agent(idx, f"a{idx:03d}", names[k], prof.vendor, dev, f"BENCH_COMM_{idx:03d}"))
    return agents


# --------------------------------------------------------------------------
# agents
#
# Default ("snmpd"): one net-snmp snmpd per device, on the device's own
# endpoint, with its own engine ID (80001f8804 + "wmb<idx>"), the device's
# v2c community and SNMPv3 user.  snmpd's own system, interfaces, ifTable
# and ifXTable modules are left out (-I -...) and those three subtrees are
# served from the device's data by a tiny C pass_persist responder (compiled
# at start): every ifTable/ifXTable column, with real Counter64, Gauge32 and
# TimeTicks types.
# Every device is an independent C agent, as on a real WAN: 177 agents answer
# in parallel and answer fast.
#
# Alternative ("snmpsim", --agent-impl snmpsim): snmpsim as in the tests
# (v2c: tests/snmp_agents.py SnmpSim, one engine, data picked by community;
# v3: one snmpsim process with one engine per device).  snmpsim is one
# single-threaded Python process serving every device, a few ms per request:
# with 177 agents polled at once it queues requests for seconds, so it
# measures the simulator, not the pollers (see bench/README.md).


@dataclass(frozen=True)
class V3Creds:
    user: str
    auth_key: str
    priv_key: str

    def cli(self) -> list[str]:
        return ["-v3", "-l", "authPriv", "-u", self.user, "-a", V3_AUTH, "-A", self.auth_key,
                "-x", V3_PRIV, "-X", self.priv_key]

    def create_user_line(self) -> str:
        return sa.V3User(self.user, V3_AUTH, self.auth_key, V3_PRIV, self.priv_key).create_user_line()


PASS_HELPER_C = r"""
/* wm_passpersist DATAFILE: a static-data pass_persist responder for snmpd.
 * DATAFILE lines: OID<TAB>TYPE<TAB>VALUE (any order; sorted here), TYPE one
 * of snmpd's pass types (integer gauge counter counter64 timeticks string
 * objectid octet).  Answers PING, get and getnext; refuses set. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXSUB 128
typedef struct { unsigned long sub[MAXSUB]; int n; char *oid, *type, *value; } rec_t;
static rec_t *recs; static int nrecs;

static int parse_oid(const char *s, unsigned long *sub) {
    int n = 0;
    while (*s == '.') s++;
    while (*s && n < MAXSUB) {
        char *end; sub[n++] = strtoul(s, &end, 10);
        if (end == s) break;
        s = end; if (*s == '.') s++; else break;
    }
    return n;
}
static int cmp_sub(const unsigned long *a, int na, const unsigned long *b, int nb) {
    for (int i = 0; i < na && i < nb; i++) if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
    return na < nb ? -1 : na > nb;
}
static int cmp_rec(const void *x, const void *y) {
    const rec_t *a = x, *b = y; return cmp_sub(a->sub, a->n, b->sub, b->n);
}
static void chomp(char *s) { size_t l = strlen(s); while (l && (s[l-1] == '\n' || s[l-1] == '\r')) s[--l] = 0; }

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: wm_passpersist DATAFILE\n"); return 2; }
    FILE *f = fopen(argv[1], "r");
    if (!f) { perror(argv[1]); return 2; }
    char *line = NULL; size_t cap = 0; int alloc = 0;
    while (getline(&line, &cap, f) > 0) {
        chomp(line);
        char *t1 = strchr(line, '\t'); if (!t1) continue;
        char *t2 = strchr(t1 + 1, '\t'); if (!t2) continue;
        *t1 = 0; *t2 = 0;
        if (nrecs == alloc) { alloc = alloc ? alloc * 2 : 256; recs = realloc(recs, alloc * sizeof *recs); }
        rec_t *r = &recs[nrecs++];
        r->n = parse_oid(line, r->sub);
        r->oid = strdup(line[0] == '.' ? line + 1 : line); r->type = strdup(t1 + 1); r->value = strdup(t2 + 1);
    }
    fclose(f);
    qsort(recs, nrecs, sizeof *recs, cmp_rec);
    char cmd[64], oid[4096]; unsigned long q[MAXSUB];
    while (fgets(cmd, sizeof cmd, stdin)) {
        chomp(cmd);
        if (!strcmp(cmd, "PING")) { fputs("PONG\n", stdout); fflush(stdout); continue; }
        if (!fgets(oid, sizeof oid, stdin)) break;
        chomp(oid);
        if (!strcmp(cmd, "set")) { char junk[4096]; if (!fgets(junk, sizeof junk, stdin)) break;
                                   fputs("not-writable\n", stdout); fflush(stdout); continue; }
        int nq = parse_oid(oid, q), lo = 0, hi = nrecs;            /* first record >= q */
        while (lo < hi) { int mid = (lo + hi) / 2;
                          if (cmp_sub(recs[mid].sub, recs[mid].n, q, nq) < 0) lo = mid + 1; else hi = mid; }
        rec_t *r = NULL;
        int exact = lo < nrecs && !cmp_sub(recs[lo].sub, recs[lo].n, q, nq);
        if (!strcmp(cmd, "get")) { if (exact) r = &recs[lo]; }
        else if (!strcmp(cmd, "getnext")) { if (exact) lo++; if (lo < nrecs) r = &recs[lo]; }
        if (r) printf(".%s\n%s\n%s\n", r->oid, r->type, r->value);
        else fputs("NONE\n", stdout);
        fflush(stdout);
    }
    return 0;
}
"""


def build_pass_helper(workdir: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise M.LabError("the snmpd agents need a C compiler (cc) for their data responder; "
                         "or use --agent-impl snmpsim")
    src, exe = workdir / "wm_passpersist.c", workdir / "wm_passpersist"
    src.write_text(PASS_HELPER_C)
    r = M._run([cc, "-O2", "-o", str(exe), str(src)])
    if r.returncode != 0:
        raise M.LabError(f"compiling {src}: {r.stderr.strip()}")
    return exe


def _pass_str(s: str | bytes) -> tuple[str, str]:
    b = s if isinstance(s, bytes) else s.encode("utf-8")
    if all(32 <= c < 127 for c in b):
        return "string", b.decode("ascii")
    return "octet", " ".join(f"{c:02x}" for c in b)


SUBTREES = {"sys": "1.3.6.1.2.1.1", "if": "1.3.6.1.2.1.2", "ifx": "1.3.6.1.2.1.31.1.1"}


def pass_records(d: sa.Device) -> dict[str, list[tuple[str, str, str]]]:
    """A device's system group, ifNumber + ifTable (all 22 columns) and
    ifXTable (all 19 columns) as pass_persist records, per served subtree.
    Static values (one poll needs no growth): counters are the device's true
    octet counts, 32-bit columns modulo 2**32."""
    C32, C64 = 2 ** 32, 2 ** 64
    sysr = [(sa.SYS_DESCR, *_pass_str(d.sys_descr)), (sa.SYS_OBJECT_ID, "objectid", "." + d.sys_object_id),
            (sa.SYS_UPTIME, "timeticks", str(int(d.sys_uptime) % C32)),
            (sa.SYS_CONTACT, *_pass_str(d.sys_contact)), (sa.SYS_NAME, *_pass_str(d.sys_name)),
            (sa.SYS_LOCATION, *_pass_str(d.sys_location)), ("1.3.6.1.2.1.1.7.0", "integer", "78")]
    ifr = [(sa.IF_NUMBER, "integer", str(len(d.interfaces)))]
    ifx = []
    for i in d.interfaces:
        x = i.if_index
        ucast_in, ucast_out = i.in_ucast, i.out_ucast
        mcast = (i.in_ucast // 97, i.out_ucast // 131)
        cols = {
            1: ("integer", x), 2: _pass_str(i.descr or i.name), 3: ("integer", i.if_type),
            4: ("integer", i.mtu), 5: ("gauge", min(i.speed_bps, C32 - 1)),
            6: ("octet", " ".join(f"{c:02x}" for c in (i.mac or b""))),
            7: ("integer", i.admin_status), 8: ("integer", i.oper_status),
            9: ("timeticks", i.last_change % C32), 10: ("counter", i.in_octets % C32),
            11: ("counter", ucast_in % C32), 12: ("counter", mcast[0] % C32), 13: ("counter", i.in_discards % C32),
            14: ("counter", i.in_errors % C32), 15: ("counter", 0), 16: ("counter", i.out_octets % C32),
            17: ("counter", ucast_out % C32), 18: ("counter", mcast[1] % C32),
            19: ("counter", i.out_discards % C32), 20: ("counter", i.out_errors % C32),
            21: ("gauge", 0), 22: ("objectid", ".0.0"),
        }
        ifr += [(f"{sa.IF_ENTRY}.{c}.{x}", t, str(v)) for c, (t, v) in cols.items()]
        xcols = {
            1: _pass_str(i.name), 2: ("counter", mcast[0] % C32), 3: ("counter", mcast[0] // 7 % C32),
            4: ("counter", mcast[1] % C32), 5: ("counter", mcast[1] // 7 % C32),
            6: ("counter64", i.in_octets % C64), 7: ("counter64", ucast_in), 8: ("counter64", mcast[0]),
            9: ("counter64", mcast[0] // 7), 10: ("counter64", i.out_octets % C64),
            11: ("counter64", ucast_out), 12: ("counter64", mcast[1]), 13: ("counter64", mcast[1] // 7),
            14: ("integer", 1 if i.if_type == 6 else 2), 15: ("gauge", i.speed_bps // 1_000_000),
            16: ("integer", 2), 17: ("integer", 1 if i.if_type == 6 else 2), 18: _pass_str(i.alias),
            19: ("timeticks", 0),
        }
        ifx += [(f"{sa.IFX_ENTRY}.{c}.{x}", t, str(v)) for c, (t, v) in xcols.items()]
    return {"sys": sysr, "if": ifr, "ifx": ifx}


def _proc_children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def _proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _proc_rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return 0.0


def tree_cpu_s(pids: list[int]) -> float:
    """CPU seconds used so far by these (running) processes and their live children."""
    return sum(_proc_cpu(p) + sum(_proc_cpu(c) for c in _proc_children(p)) for p in pids)


def tree_rss_mib(pids: list[int]) -> float:
    return sum(_proc_rss_mib(p) + sum(_proc_rss_mib(c) for c in _proc_children(p)) for p in pids)


def machine_busy_s() -> float | None:
    """Non-idle CPU seconds of the whole machine so far (/proc/stat)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal (guest is inside user)
        return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def wait_quiet(max_wait_s: float, limit_pct: float = 15.0, window_s: float = 0.5) -> tuple[bool, float]:
    """Wait until the machine's non-idle CPU over one window is under
    limit_pct of one core (other jobs: tests of other sessions...), at most
    max_wait_s.  Returns (quiet, seconds waited)."""
    t0 = time.monotonic()
    while True:
        b0 = machine_busy_s()
        time.sleep(window_s)
        b1 = machine_busy_s()
        if b0 is None or b1 is None or (b1 - b0) / window_s * 100 < limit_pct:
            return True, time.monotonic() - t0
        if time.monotonic() - t0 >= max_wait_s:
            return False, time.monotonic() - t0


class _Procs:
    """Child processes this script started; stopped by their own Popen objects."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self._logs: list[Any] = []
        _started.append(self)

    def spawn(self, argv: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
        log_f = open(log_path, "ab")
        self._logs.append(log_f)
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_f, stderr=subprocess.STDOUT, env=env)
        self.procs.append(p)
        return p

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)
        self.procs = []
        for f in self._logs:
            with contextlib.suppress(Exception):
                f.close()
        self._logs = []


_started: list[_Procs] = []


@atexit.register
def _stop_all() -> None:
    for ps in _started:
        with contextlib.suppress(Exception):
            ps.stop()


class SnmpdFarm(_Procs):
    """One snmpd per device (see the comment at the top of this section)."""

    def __init__(self, agents: list[Agent], creds: dict[str, V3Creds], workdir: Path,
                 start_timeout: float = 60.0) -> None:
        super().__init__()
        self.agents = agents
        self.creds = creds
        self.dir = workdir
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.start_s = 0.0
        self.snmpd = sa._which("snmpd")

    def start(self) -> "SnmpdFarm":
        if not self.snmpd:
            raise M.LabError("snmpd not installed (apt-get install snmpd)")
        self.dir.mkdir(parents=True, exist_ok=True)
        helper = build_pass_helper(self.dir)
        for a in self.agents:
            d = self.dir / a.site_id
            (d / "persist").mkdir(parents=True, exist_ok=True)
            for part, recs in pass_records(a.device).items():
                (d / f"{part}.pass").write_text("".join(f"{o}\t{t}\t{v}\n" for o, t, v in recs), encoding="utf-8")
            users = d / "persist" / "snmpd.conf"   # snmpd turns createUser into localized usmUser lines
            users.write_text(self.creds[a.site_id].create_user_line() + "\n")
            os.chmod(users, 0o600)
        t0 = time.monotonic()
        for attempt in range(3):
            self.port = sa.free_udp_port([a.address for a in self.agents])
            for a in self.agents:
                d = self.dir / a.site_id
                conf = d / "snmpd.conf"
                conf.write_text("\n".join([
                    f"agentAddress udp:{a.address}:{self.port}",
                    f"rocommunity {a.device.community} 127.0.0.0/8",
                    f"rouser {self.creds[a.site_id].user} priv",
                    # net-snmp's default engine ID (time + random) collides for agents started in
                    # the same second; a real device's is unique: 0x80001f8804 + "wmb<idx>"
                    f"engineID wmb{a.idx:05d}",
                    "dontLogTCPWrappersConnects yes",
                    *[f"pass_persist .{oid} {helper} {d / f'{part}.pass'}" for part, oid in SUBTREES.items()],
                ]) + "\n")
                os.chmod(conf, 0o600)
                self.spawn([self.snmpd, "-f", "-Lo", "-C", "-c", f"{conf},{d / 'persist' / 'snmpd.conf'}",
                            f"--persistentDir={d / 'persist'}",
                            "-I", "-smux,system_mib,sysORTable,interfaces,ifTable,ifXTable",
                            "-p", str(d / "snmpd.pid")],
                           d / "snmpd.log", {**os.environ, **sa.NOMIB_ENV})
            try:
                self._wait_ready()
            except M.LabError:
                busy = any("Address already in use" in _read(self.dir / a.site_id / "snmpd.log")
                           for a in self.agents)
                self.stop()
                if busy and attempt < 2:
                    continue
                raise
            self.start_s = time.monotonic() - t0
            return self
        raise M.LabError("snmpd agents did not start")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout

        def one(a: Agent) -> str | None:
            while True:
                r = sa.snmpcmd("snmpget", a.address, self.port, sa.SYS_NAME, community=a.device.community,
                               timeout=0.5)
                if r.ok:
                    return None
                if time.monotonic() > deadline:
                    return f"{a.site_id} {a.address}:{self.port}: {r.stderr.strip()[:200]}"
                time.sleep(0.1)
        dead = [a.site_id for a, p in zip(self.agents, self.procs) if p.poll() is not None]
        with ThreadPoolExecutor(16) as ex:
            problems = [p for p in ex.map(one, self.agents) if p]
        dead = [a.site_id for a, p in zip(self.agents, self.procs) if p.poll() is not None]
        if dead or problems:
            log_tail = _read(self.dir / (dead or [self.agents[0].site_id])[0] / "snmpd.log")[-1500:]
            raise M.LabError(f"{len(dead)} snmpd exited, {len(problems)} do not answer, e.g. "
                             f"{(problems or dead)[:3]}\n{log_tail}")


class SnmpsimV3Farm(_Procs):
    """One snmpsim-command-responder process with one SNMP engine per device.

    snmpsim picks a device's data from the SNMPv3 context name (or, with an
    empty context, from a file named after the engine); a poller that cannot
    choose a context (wanmon) therefore needs one engine per device.  Each
    engine has its own engine ID (80001f8804 + "wmb<idx>"), its own USM user
    and keys, its own data directory holding `self.snmprec` (the device's
    data, served for the empty context), and listens on the device's own
    endpoint.  Configured through --args-from-file, so keys stay off argv."""

    def __init__(self, agents: list[Agent], creds: dict[str, V3Creds], src_data: dict[str, Path],
                 workdir: Path, start_timeout: float = 180.0) -> None:
        super().__init__()
        self.agents = agents
        self.creds = creds
        self.src_data = src_data    # site id -> .snmprec written by SnmpSim
        self.dir = workdir
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.start_s = 0.0

    @property
    def log_path(self) -> Path:
        return self.dir / "snmpsim-v3.log"

    def start(self) -> "SnmpsimV3Farm":
        (self.dir / "cache").mkdir(parents=True, exist_ok=True)
        for a in self.agents:
            d = self.dir / "data" / a.site_id
            d.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.src_data[a.site_id], d / "self.snmprec")
        cmd = sa.snmpsim_command()
        if cmd is None:
            raise M.LabError("snmpsim-command-responder not found")
        for attempt in range(3):
            self.port = sa.free_udp_port([a.address for a in self.agents])
            args = []
            for a in self.agents:
                c = self.creds[a.site_id]
                args += [f"--v3-engine-id=80001f8804{('wmb%05d' % a.idx).encode().hex()}",
                         f"--v3-user={c.user}", f"--v3-auth-key={c.auth_key}", f"--v3-auth-proto={V3_AUTH}",
                         f"--v3-priv-key={c.priv_key}", f"--v3-priv-proto={V3_PRIV}",
                         f"--data-dir={self.dir / 'data' / a.site_id}",
                         f"--agent-udpv4-endpoint={a.address}:{self.port}"]
            argfile = self.dir / "engines.args"
            argfile.write_text("\n".join(args) + "\n")
            os.chmod(argfile, 0o600)
            env = {**os.environ, "SNMPSIM_ALLOW_ROOT": "true"}
            env.pop("PYTHONSAFEPATH", None)
            t0 = time.monotonic()
            proc = self.spawn([*cmd, f"--cache-dir={self.dir / 'cache'}", "--log-level=error",
                               f"--args-from-file={argfile}"], self.log_path, env)
            try:
                self._wait_ready(proc)
            except M.LabError:
                busy = "Address already in use" in _read(self.log_path)
                self.stop()
                if busy and attempt < 2:
                    continue
                raise
            self.start_s = time.monotonic() - t0
            return self
        raise M.LabError("snmpsim (v3) did not start")

    def _wait_ready(self, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + self.start_timeout
        first = self.agents[0]
        while True:
            if proc.poll() is not None:
                raise M.LabError(f"snmpsim (v3) exited rc={proc.returncode}:\n{_read(self.log_path)[-3000:]}")
            r = sa.snmpcmd("snmpget", first.address, self.port, sa.SYS_NAME,
                           v3_args=self.creds[first.site_id].cli(), timeout=0.5)
            if r.ok:
                return
            if time.monotonic() > deadline:
                raise M.LabError(f"snmpsim (v3) did not answer within {self.start_timeout:.0f} s:\n"
                                 f"{_read(self.log_path)[-3000:]}")
            time.sleep(0.5)


def verify_agents(agents: list[Agent], port: int, auth: dict[str, list[str]], distinct_engines: bool) -> list[str]:
    """Every agent answers its own sysName, ifNumber and first ifName with
    these credentials (net-snmp snmpget, 16 at a time, untimed; this also
    starts snmpd's data responders), and, when asked, every agent has its
    own snmpEngineID.  Returns problems, empty when all is well."""
    engine_ids: dict[str, str] = {}

    def one(a: Agent) -> str | None:
        first = a.device.interfaces[0]
        oids = [sa.SYS_NAME, sa.IF_NUMBER, f"{sa.IFX_ENTRY}.{sa.IFX_NAME}.{first.if_index}", sa.ENGINE_ID]
        r = sa.snmpcmd("snmpget", a.address, port, oids, v3_args=auth[a.site_id], timeout=2.0, retries=1)
        if not r.ok:
            return f"{a.site_id} {a.address}:{port}: rc={r.rc} {r.stderr.strip()[:200]}"
        got = tuple(r.values.get(o, ("", ""))[1] for o in oids[:3])
        want = (a.device.sys_name, str(a.n_if), first.name)
        if got != want:
            return f"{a.site_id}: sysName/ifNumber/ifName {got} != {want}"
        engine_ids[a.site_id] = r.values.get(sa.ENGINE_ID, ("", ""))[1]
        return None
    with ThreadPoolExecutor(16) as ex:
        problems = [p for p in ex.map(one, agents) if p]
    if distinct_engines and not problems and len(set(engine_ids.values())) != len(agents):
        problems.append(f"only {len(set(engine_ids.values()))} distinct snmpEngineIDs for {len(agents)} agents")
    return problems


# --------------------------------------------------------------------------
# the two tools


def wanmon_config(agents: list[Agent], version: str, store: str, port: int,
                  v3env: dict[str, tuple[str, str, str]], max_concurrency: int | None = None) -> str:
    """sites.toml for the agents.  v3env: site id -> (user, auth env var, priv env var)."""
    q = json.dumps
    lines = ["# generated by bench/snmp_poll.py", "[store]", f"path = {q(store)}", "",
             "[icmp]", "count = 1", "",
             "[snmp]", f"version = {q(version)}",
             f"timeout_ms = {TIMEOUT_S * 1000}   # = net-snmp -t {TIMEOUT_S}",
             f"retries = {RETRIES}           # = net-snmp -r {RETRIES}",
             "interval_s = 0"]
    if max_concurrency:
        lines.append(f"max_concurrency = {max_concurrency}")
    for a in agents:
        lines += ["", "[[sites]]", f"id = {q(a.site_id)}", f"name = {q(a.site_name)}", 'level = "province"',
                  f"address = {q(a.address)}", "[sites.snmp]", f"port = {port}"]
        if version == "3":
            user, aenv, penv = v3env[a.site_id]
            lines += [f"user = {q(user)}", f'auth_protocol = "{V3_AUTH}"', f"auth_key_env = {q(aenv)}",
                      f'priv_protocol = "{V3_PRIV}"', f"priv_key_env = {q(penv)}"]
        else:
            lines += [f"community_env = {q(a.comm_env)}"]
    return "\n".join(lines) + "\n"


POLL_ONE_SH = """#!/bin/sh
# poll_one.sh OUT TARGET AUTH...: one agent's full poll with net-snmp, as a
# poller script does it: the system scalars, then ifTable, then ifXTable.
out=$1; tgt=$2; shift 2
{snmpget} "$@" -On -Oe -t {t} -r {r} "$tgt" {oids} >"$out.sys" 2>"$out.err"
{snmpbulkwalk} "$@" -On -Oe -t {t} -r {r} "$tgt" {if_table} >"$out.if" 2>>"$out.err"
{snmpbulkwalk} "$@" -On -Oe -t {t} -r {r} "$tgt" {ifx_table} >"$out.ifx" 2>>"$out.err"
"""


@dataclass
class Case:
    version: str
    agents: list[Agent]
    port: int
    agent_pids: Any           # () -> pids of the agent processes (for their CPU)
    dir: Path
    wanmon_env: dict[str, str]
    v3env: dict[str, tuple[str, str, str]]
    netsnmp_auth: dict[str, list[str]]
    runs: dict[str, list[dict]]
    max_concurrency: int | None = None


def netsnmp_argv(case: Case, outdir: Path) -> list[str]:
    outdir.mkdir(parents=True, exist_ok=True)
    lines = []
    for a in case.agents:
        auth = case.netsnmp_auth[a.site_id]
        for w in auth + [str(outdir)]:
            if re.search(r"[\s'\"\\]", w):
                raise M.LabError(f"xargs cannot pass {w!r} unquoted")
        lines.append(" ".join([str(outdir / a.site_id), f"udp:{a.address}:{case.port}", *auth]))
    agents_file = outdir / "agents.txt"
    agents_file.write_text("\n".join(lines) + "\n")
    os.chmod(agents_file, 0o600)
    return [shutil.which("xargs") or "/usr/bin/xargs", "-a", str(agents_file), "-P", "0", "-L", "1",
            "/bin/sh", str(case.dir / "poll_one.sh")]


def netsnmp_env(case: Case) -> dict[str, str]:
    conf = case.dir / "netsnmp-conf"
    persist = case.dir / "netsnmp-persist"
    conf.mkdir(exist_ok=True)
    persist.mkdir(exist_ok=True)
    # numeric OIDs, no MIB loading, no user or system snmp.conf: the cheapest net-snmp
    return {**os.environ, **sa.NOMIB_ENV, "SNMPCONFPATH": str(conf), "SNMP_PERSISTENT_DIR": str(persist)}


_LINE = re.compile(r"^\.?([\d.]+) = (.*)$")


def _parse_walk(text: str) -> dict[str, str]:
    """-On -Oe output -> {oid: 'TYPE: value'} (continuation lines dropped; we
    only read sysName, ifIndex and ifName, which are single-line)."""
    out = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _str_value(v: str | None) -> str | None:
    if v is None or not v.startswith("STRING: "):
        return None
    v = v[len("STRING: "):]
    if len(v) >= 2 and v[0] == v[-1] == '"':
        v = v[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return v


def _read(p: Path) -> str:
    try:
        return p.read_text("utf-8", "replace")
    except OSError:
        return ""


def evaluate_netsnmp(case: Case, outdir: Path) -> dict[str, dict]:
    """site id -> {"state": ok|timeout|error|incomplete, "detail": ...}"""
    res = {}
    for a in case.agents:
        base = outdir / a.site_id
        # net-snmp's one-off notice when it first creates its persistent dir is not an error
        err = "\n".join(line for line in _read(Path(f"{base}.err")).splitlines()
                        if not line.startswith("Created directory:"))
        sysv = _parse_walk(_read(Path(f"{base}.sys")))
        ift = _parse_walk(_read(Path(f"{base}.if")))
        ifx = _parse_walk(_read(Path(f"{base}.ifx")))
        if_idx = [o for o in ift if o.startswith(f"{sa.IF_ENTRY}.{sa.IF_INDEX}.")]
        names = [_str_value(v) for o, v in ifx.items() if o.startswith(f"{sa.IFX_ENTRY}.{sa.IFX_NAME}.")]
        problems = []
        if _str_value(sysv.get(sa.SYS_NAME)) != a.device.sys_name:
            problems.append(f"sysName {_str_value(sysv.get(sa.SYS_NAME))!r}")
        if len(if_idx) != a.n_if:
            problems.append(f"ifTable rows {len(if_idx)}/{a.n_if}")
        if names != a.if_names:
            problems.append(f"ifName {len(names)}/{a.n_if}")
        if "Timeout" in err:
            state = "timeout"
        elif err.strip():
            state = "error"
        elif problems:
            state = "incomplete"
        else:
            state = "ok"
        res[a.site_id] = {"state": state,
                          "detail": "; ".join(problems + ([err.strip()[:200]] if err.strip() else []))}
    return res


def evaluate_wanmon(case: Case, stdout: str) -> dict[str, dict]:
    rows = json.loads(stdout)
    if not isinstance(rows, list):
        raise ValueError("inventory --json: expected a JSON array")
    by_id = {str(r.get("id")): r for r in rows if isinstance(r, dict)}
    res = {}
    for a in case.agents:
        r = by_id.get(a.site_id)
        if r is None:
            res[a.site_id] = {"state": "missing", "detail": "not in the output"}
            continue
        st = r.get("snmp_status")
        ifs = r.get("interfaces") or []
        names = [i.get("name") for i in sorted(ifs, key=lambda i: i.get("if_index") or 0)]
        problems = []
        if r.get("sys_name") != a.device.sys_name:
            problems.append(f"sys_name {r.get('sys_name')!r}")
        if len(ifs) != a.n_if:
            problems.append(f"interfaces {len(ifs)}/{a.n_if}")
        elif names != a.if_names:
            problems.append("interface names differ")
        if st == "timeout":
            state = "timeout"
        elif st != "ok":
            state = "error"
        elif problems:
            state = "incomplete"
        else:
            state = "ok"
        res[a.site_id] = {"state": state, "status": st,
                          "detail": "; ".join(problems + ([str(r.get("reason"))] if r.get("reason") else []))}
    return res


def summarize_states(res: dict[str, dict]) -> dict:
    counts = {k: 0 for k in ("ok", "timeout", "error", "incomplete", "missing")}
    for r in res.values():
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    bad = {sid: r for sid, r in res.items() if r["state"] != "ok"}
    return {**counts, "spurious": len(bad),
            "examples": [f"{sid}: {r['state']} {r['detail']}".strip() for sid, r in list(bad.items())[:5]]}


def run_tool(runner: M.Runner, case: Case, tool: str, tag: str, timeout: float, python: str,
             quiet_wait_s: float = 0.0) -> dict:
    rundir = case.dir / f"{tool}-{tag}"
    if rundir.exists():
        shutil.rmtree(rundir)
    rundir.mkdir(parents=True)
    if tool == "wanmon":
        store = rundir / "store" / "wanmon.db"   # a fresh store: the first discovery, nothing stale to show
        store.parent.mkdir()
        cfg = rundir / "sites.toml"
        cfg.write_text(wanmon_config(case.agents, case.version, str(store), case.port, case.v3env,
                                     case.max_concurrency), encoding="utf-8")
        argv = [python, "-m", "wanmon", "--config", str(cfg), "inventory", "--refresh", "--json"]
        env = case.wanmon_env
    else:
        argv = netsnmp_argv(case, rundir / "out")
        env = netsnmp_env(case)
    out, err = str(rundir / "stdout"), str(rundir / "stderr")
    pids = case.agent_pids()
    quiet, waited = wait_quiet(quiet_wait_s) if quiet_wait_s > 0 else (None, 0.0)
    ag0, busy0 = tree_cpu_s(pids), machine_busy_s()
    rr = runner.run(argv, stdout_path=out, stderr_path=err, timeout_s=timeout, cwd=REPO, env=env)
    ag1, busy1 = tree_cpu_s(pids), machine_busy_s()
    run: dict[str, Any] = {
        "tool": tool, "tag": tag, "rc": rr.rc, "timed_out": rr.timed_out, "wall_s": rr.wall_s,
        "cpu_s": rr.cpu_s, "user_s": rr.user_s, "sys_s": rr.sys_s, "maxrss_mib": rr.maxrss_kib / 1024.0,
        "outer_wall_s": rr.outer_wall_s, "children_cpu_delta_s": rr.children_cpu_delta_s,
        "method": rr.method,
        "agents_cpu_s": ag1 - ag0,
        "quiet_before": quiet, "quiet_wait_s": waited,
        "ok": False,
    }
    # CPU used on the machine during the run by anything but the tool and the
    # agents (other jobs, this script): the figures are only clean when small
    if busy0 is not None and busy1 is not None:
        run["other_cpu_s"] = max(0.0, (busy1 - busy0) - rr.cpu_s - run["agents_cpu_s"])
    if rr.wall_s > 0:
        run["agents_busy_pct"] = 100.0 * run["agents_cpu_s"] / rr.wall_s
    stdout, stderr = _read(Path(out)), _read(Path(err))
    try:
        if rr.timed_out:
            raise ValueError(f"killed after {timeout:.0f} s timeout")
        if tool == "wanmon":
            if rr.rc != 0:
                raise ValueError(f"exit status {rr.rc}")
            res = evaluate_wanmon(case, stdout)
        else:
            res = evaluate_netsnmp(case, rundir / "out")
        run.update(summarize_states(res))
        run["ok"] = True
    except (ValueError, json.JSONDecodeError) as e:
        run["error"] = f"{tool} rc={rr.rc}: {e}"
        run["stdout_tail"] = stdout[-1500:]
        run["stderr_tail"] = stderr[-1500:]
    return run


def summarize(runs: list[dict]) -> dict | None:
    ok = [r for r in runs if r.get("ok")]
    if not ok:
        return None
    keys = ["wall_s", "cpu_s", "user_s", "sys_s", "maxrss_mib", "agents_cpu_s", "agents_busy_pct", "other_cpu_s",
            "timeout", "error", "incomplete", "missing", "spurious"]
    s: dict[str, Any] = {k: M.median_or_none([r.get(k) for r in ok]) for k in keys}
    for k in ("timeout", "spurious"):
        s[f"{k}_max"] = max(r[k] for r in ok)
    s["runs_not_quiet"] = sum(1 for r in ok if r.get("quiet_before") is False)
    s["runs_ok"] = len(ok)
    s["runs_failed"] = len(runs) - len(ok)
    s["examples"] = next((r["examples"] for r in ok if r["examples"]), [])
    return s


def run_case(runner: M.Runner, case: Case, args) -> dict:
    (case.dir / "poll_one.sh").write_text(POLL_ONE_SH.format(
        snmpget=shutil.which("snmpget") or "/usr/bin/snmpget",
        snmpbulkwalk=shutil.which("snmpbulkwalk") or "/usr/bin/snmpbulkwalk",
        t=TIMEOUT_S, r=RETRIES, oids=" ".join(SYS_OIDS), if_table=IF_TABLE, ifx_table=IFX_TABLE))
    label = f"v{case.version}, {len(case.agents)} agents"
    for w in range(args.warmup):
        for tool in TOOLS:
            r = run_tool(runner, case, tool, f"warmup{w + 1}", args.timeout, args.python)
            log(f"  [{label}, warm-up] {tool:7s} wall {r['wall_s']:6.3f} s  "
                + (f"spurious {r['spurious']}" if r["ok"] else f"FAILED: {r['error']}"))
    for rep in range(args.repeat):
        order = list(TOOLS) if rep % 2 == 0 else list(reversed(TOOLS))
        for tool in order:
            r = run_tool(runner, case, tool, f"r{rep + 1}", args.timeout, args.python, args.quiet_wait)
            case.runs[tool].append(r)
            if r["ok"]:
                log(f"  [{label}, run {rep + 1}/{args.repeat}] {tool:7s} wall {r['wall_s']:6.3f} s  "
                    f"cpu {r['cpu_s']:6.3f} s  rss {r['maxrss_mib']:6.1f} MiB  agents cpu "
                    f"{r['agents_cpu_s']:5.2f} s  other cpu {M.fmt(r.get('other_cpu_s'), '.2f')} s  "
                    f"timeouts {r['timeout']}  spurious {r['spurious']}"
                    f"  rc {r['rc']}")
                for ex in r["examples"][:3]:
                    log(f"      e.g. {ex}")
            else:
                log(f"  [{label}, run {rep + 1}/{args.repeat}] {tool} FAILED: {r['error']}")
                if r.get("stderr_tail"):
                    log("    stderr tail: " + r["stderr_tail"].strip().replace("\n", "\n    "))
    summ = {t: summarize(case.runs[t]) for t in TOOLS}
    n, w = summ["netsnmp"], summ["wanmon"]
    return {
        "version": case.version, "agents": len(case.agents), "port": case.port,
        "interfaces_total": sum(a.n_if for a in case.agents),
        "netsnmp": n, "wanmon": w,
        "ratios": {
            "wall": M.ratio(w and w["wall_s"], n and n["wall_s"]),
            "cpu": M.ratio(w and w["cpu_s"], n and n["cpu_s"]),
            "rss": M.ratio(w and w["maxrss_mib"], n and n["maxrss_mib"]),
        },
        "runs": {t: case.runs[t] for t in TOOLS},
    }


def profile_wanmon(runner: M.Runner, case: Case, args, out_prof: Path) -> str:
    import pstats
    rundir = case.dir / "profile"
    rundir.mkdir(exist_ok=True)
    store = rundir / "store" / "wanmon.db"
    store.parent.mkdir(exist_ok=True)
    cfg = rundir / "sites.toml"
    cfg.write_text(wanmon_config(case.agents, case.version, str(store), case.port, case.v3env,
                                 case.max_concurrency), encoding="utf-8")
    argv = [args.python, "-m", "cProfile", "-o", str(out_prof), "-m", "wanmon", "--config", str(cfg),
            "inventory", "--refresh", "--json"]
    if args.quiet_wait > 0:
        wait_quiet(args.quiet_wait)
    rr = runner.run(argv, stdout_path=str(rundir / "stdout"), stderr_path=str(rundir / "stderr"),
                    timeout_s=args.timeout, cwd=REPO, env=case.wanmon_env)
    buf = io.StringIO()
    buf.write(f"cProfile of wanmon inventory --refresh, v{case.version}, {len(case.agents)} agents: "
              f"wall {rr.wall_s:.3f} s, cpu {rr.cpu_s:.3f} s (under the profiler), rc {rr.rc}; "
              f"saved {out_prof}\n")
    try:
        w = evaluate_wanmon(case, _read(rundir / "stdout"))
        s = summarize_states(w)
        buf.write(f"  (that run: {s['ok']} ok, {s['timeout']} timeout, {s['error']} error, "
                  f"{s['incomplete']} incomplete)\n")
    except (ValueError, json.JSONDecodeError):
        pass
    if out_prof.exists():
        st = pstats.Stats(str(out_prof), stream=buf)
        buf.write("\nwhere the time goes (cumulative seconds under the profiler; parts overlap):\n")
        for label, secs in profile_phases(st):
            buf.write(f"  {secs:7.3f} s  {label}\n")
        buf.write("\n")
        st.sort_stats("cumulative").print_stats(35)
        st.sort_stats("tottime").print_stats(25)
    return buf.getvalue()


PHASES = [  # (label, file suffix, function): the largest cumtime among matches
    ("whole run", "wanmon/__main__.py", "<module>"),
    ("imports (all modules)", "<frozen importlib._bootstrap>", "_find_and_load"),
    ("config: load and validate sites.toml", "wanmon/config.py", "load"),
    ("refresh_snmp (poll + store)", "wanmon/cycle.py", "refresh_snmp"),
    ("  asyncio.run(snmp.probe(...)): the poll", "asyncio/runners.py", "run"),
    ("    idle: waiting for replies or timers (epoll)", "selectors.py", "select"),
    ("    replies: matching them to requests (datagram_received)", "wanmon/probes/snmp.py", "datagram_received"),
    ("    v1/v2c replies: BER decoding (snmpwire)", "wanmon/probes/snmpwire.py", "parse_community"),
    ("    v3 replies: authentication, decryption, BER decoding (snmpwire)", "wanmon/probes/snmpwire.py", "parse_v3"),
    ("    v3 requests: encoding, encryption, MAC (snmpwire)", "wanmon/probes/snmpwire.py", "v3_message"),
    ("    v3 pass phrase hashing (usm, once per key set)", "wanmon/probes/usm.py", "password_to_key"),
    ("    v3 privacy: decrypting replies (usm)", "wanmon/probes/usm.py", "decrypt"),
    ("    interface table walk (requests and row assembly)", "wanmon/probes/snmp.py", "table"),
    ("  store.record_snmp", "wanmon/store.py", "record_snmp"),
    ("inventory rows + JSON output", "wanmon/cli.py", "_inventory_rows"),
]


def profile_phases(st) -> list[tuple[str, float]]:
    """Coarse breakdown of a wanmon profile by a few well-known functions."""
    out = []
    for label, suffix, func in PHASES:
        best = None
        for (fname, _line, name), (_cc, _nc, _tt, ct, _callers) in st.stats.items():
            if name == func and fname.endswith(suffix):
                best = ct if best is None else max(best, ct)
        if best is not None:
            out.append((label, best))
    return out


# --------------------------------------------------------------------------
# reporting


def acceptance(cases: list[dict]) -> list[dict]:
    checks = []
    for c in cases:
        v, w, n = c["version"], c["wanmon"], c["netsnmp"]
        if w is None or n is None:
            for name in (f"v{v}: wanmon spurious timeouts = 0", f"v{v}: wall <= 1.0x net-snmp"):
                checks.append({"check": name, "result": "FAIL", "detail": "no usable run"})
            continue
        worst = int(w["spurious_max"])
        checks.append({"check": f"v{v}: wanmon spurious timeouts = 0", "value": worst, "limit": 0,
                       "result": "PASS" if worst == 0 else "FAIL",
                       "detail": f"worst of {w['runs_ok']} run(s): {worst} of {c['agents']} agents "
                                 f"(timeout {w['timeout_max']:g}); net-snmp worst {n['spurious_max']:g}"})
        r = c["ratios"]["wall"]
        checks.append({"check": f"v{v}: wall <= 1.0x net-snmp", "value": r, "limit": 1.0,
                       "result": "PASS" if r is not None and r <= 1.0 else "FAIL",
                       "detail": f"wanmon {w['wall_s']:.3f} s vs net-snmp {n['wall_s']:.3f} s = {r:.2f}x "
                                 "(medians)"})
    return checks


def print_report(meta: dict, cases: list[dict], checks: list[dict], profiles: list[str]) -> None:
    p = print
    p()
    p(f"wanmon inventory --refresh vs net-snmp (all agents in parallel)  |  timeout {TIMEOUT_S} s, "
      f"retries {RETRIES}  |  {meta['agents']} agents, {meta['interfaces_total']} interfaces")
    p(f"net-snmp: {meta['netsnmp_cmd']}")
    p(f"wanmon:   {meta['wanmon_cmd']}")
    if meta["agent_impl"] == "snmpd":
        agents_desc = (f"one net-snmp snmpd per device at {meta['lab']['addresses']}, data served by a C "
                       "pass_persist responder")
    else:
        agents_desc = (f"snmpsim {meta['snmpsim_version']} at {meta['lab']['addresses']} (v2c: one engine, "
                       "data by community; v3: one engine per device)")
    p(f"agents: {agents_desc}; v3 user {meta['v3']['user']} authPriv {meta['v3']['auth']}/{meta['v3']['priv']}, "
      f"{meta['v3']['keys']} keys")
    if meta.get("wanmon_rcvbuf"):
        p(f"NOTE: wanmon's SNMP socket asked for a {meta['wanmon_rcvbuf']}-byte receive buffer (--wanmon-rcvbuf)")
    if meta.get("wanmon_max_concurrency"):
        p(f"NOTE: wanmon's [snmp] max_concurrency = {meta['wanmon_max_concurrency']} (not its default): "
          "a diagnosis run, not the acceptance configuration")
    pysmi = ("hidden (as in a plain pip install: no MIB compiler)" if meta["pysmi"] == "hide"
             else "importable (the dev venv as it is)")
    p(f"wanmon runs with pysmi {pysmi}")
    p(f"{meta['netsnmp_version']}, {meta['kernel']}, {meta['cpus']} CPUs, Python {meta['python']}; "
      f"medians of {meta['repeat']} run(s) per tool and version after {meta['warmup']} warm-up run(s)")
    p("wall/CPU/RSS: the tool's own wait4() rusage (net-snmp: xargs and every snmpget/snmpbulkwalk it "
      "ran; RSS is the largest single process)" if meta["measurement"] == "helper" else
      "wall/CPU/RSS: wait4() of the tool started directly (no C compiler: RSS has this script's peak as a floor)")
    p()

    def g(tool, key):
        return lambda c: (c.get(tool) or {}).get(key)

    cols = [
        ("", "SNMP", 4, lambda c: f"v{c['version']}"),
        ("", "agents", 6, lambda c: f"{c['agents']}"),
        ("wall s", "net-snmp", 8, lambda c: M.fmt(g("netsnmp", "wall_s")(c), ".3f")),
        ("wall s", "wanmon", 6, lambda c: M.fmt(g("wanmon", "wall_s")(c), ".3f")),
        ("wall s", "ratio", 6, lambda c: M.fmt_ratio(c["ratios"]["wall"])),
        ("CPU s", "net-snmp", 8, lambda c: M.fmt(g("netsnmp", "cpu_s")(c), ".3f")),
        ("CPU s", "wanmon", 6, lambda c: M.fmt(g("wanmon", "cpu_s")(c), ".3f")),
        ("CPU s", "ratio", 6, lambda c: M.fmt_ratio(c["ratios"]["cpu"])),
        ("peak RSS MiB", "net-snmp", 8, lambda c: M.fmt(g("netsnmp", "maxrss_mib")(c), ".1f")),
        ("peak RSS MiB", "wanmon", 6, lambda c: M.fmt(g("wanmon", "maxrss_mib")(c), ".1f")),
        ("peak RSS MiB", "ratio", 6, lambda c: M.fmt_ratio(c["ratios"]["rss"])),
        ("spurious (timeouts)", "net-snmp", 8, lambda c: _spur(c.get("netsnmp"))),
        ("spurious (timeouts)", "wanmon", 8, lambda c: _spur(c.get("wanmon"))),
        ("agents CPU s", "net-snmp", 8, lambda c: M.fmt(g("netsnmp", "agents_cpu_s")(c), ".2f")),
        ("agents CPU s", "wanmon", 6, lambda c: M.fmt(g("wanmon", "agents_cpu_s")(c), ".2f")),
        ("other CPU s", "net-snmp", 8, lambda c: M.fmt(g("netsnmp", "other_cpu_s")(c), ".2f")),
        ("other CPU s", "wanmon", 6, lambda c: M.fmt(g("wanmon", "other_cpu_s")(c), ".2f")),
    ]
    for line in M.render_table(cols, cases):
        p(line)
    p()
    p("spurious = agents (all up) reported as timeout, error or with missing/wrong data (sysName, "
      "interface count, ifName); median (max N) over runs; timeouts in brackets.")
    p("agents CPU = CPU the agent processes used during the tool's run; other CPU = the rest of the "
      "machine's busy time in that run (other jobs; ideally near 0).")
    for c in cases:
        for tool in TOOLS:
            s = c.get(tool)
            label = f"v{c['version']} {tool}"
            if s is None:
                p(f"note: {label}: no usable run (see errors below)")
                continue
            if s["runs_failed"]:
                p(f"note: {label}: {s['runs_failed']} run(s) failed")
            for ex in s["examples"][:3]:
                p(f"note: {label}: e.g. {ex}")
            busy = s.get("agents_busy_pct")
            if busy is not None and busy > 80 and meta["agent_impl"] == "snmpsim":
                p(f"note: {label}: the simulator was busy {busy:.0f}% of the run's wall time: "
                  "it, not the tool, may set the pace")
            if s.get("runs_not_quiet"):
                p(f"note: {label}: {s['runs_not_quiet']} run(s) started before the machine was idle "
                  "(--quiet-wait ran out)")
            other = s.get("other_cpu_s")
            if other is not None and s["wall_s"] and other > 0.25 * s["wall_s"]:
                p(f"note: {label}: other processes used {other:.2f} CPU s during the run "
                  f"({100 * other / s['wall_s']:.0f}% of one core): the machine was not idle")
    p()
    p("Acceptance:")
    for ck in checks:
        p(f"  {ck['result']:6s}  {ck['check']:36s}  {ck.get('detail', '')}")
    if meta.get("errors"):
        p()
        p("Errors:")
        for e in meta["errors"]:
            p(f"  {e}")
    for text in profiles:
        p()
        p(text)


def _spur(s: dict | None) -> str:
    if s is None:
        return "-"
    return f"{M.fmt_count(s['spurious'], s['spurious_max'])} ({s['timeout']:g})"


def _pkg_version(name: str) -> str:
    import importlib.metadata as md
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "-"


def _version(argv: list[str]) -> str:
    r = M._run(argv)
    return ((r.stdout or r.stderr).strip().splitlines() or ["?"])[0]


# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark `wanmon inventory --refresh` against net-snmp (snmpget + snmpbulkwalk, "
                    "all agents in parallel) on simulated SNMP agents at 127.0.X.Y.")
    p.add_argument("--agents", type=int, default=177, help="simulated agents (default: %(default)s)")
    p.add_argument("--versions", default="2c,3", help="SNMP versions to run: 2c, 3 or 2c,3 (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3,
                   help="measured runs per tool and version; the table shows medians (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1,
                   help="unmeasured runs per tool and version first (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout instead of the table")
    p.add_argument("--python", default=default_python(),
                   help="interpreter that runs `-m wanmon` (default: %(default)s)")
    p.add_argument("--agent-impl", choices=["snmpd", "snmpsim"], default="snmpd",
                   help="simulated agents: one net-snmp snmpd per device (default), or snmpsim as in the "
                        "tests (one single-threaded simulator for all devices; see README)")
    p.add_argument("--pysmi", choices=["hide", "keep"], default="hide",
                   help="pysmi (a test-only dependency, installed for snmpsim) makes pysnmp build a MIB "
                        "compiler, about 1 s of CPU, on its first OID; wanmon does not depend on it, so by "
                        "default it is hidden from wanmon as in a plain `pip install wanmon` (keep: use "
                        "the venv as it is)")
    p.add_argument("--wanmon-max-concurrency", type=int, metavar="N",
                   help="add `max_concurrency = N` to wanmon's [snmp] (default: not set, wanmon's own "
                        "default); for diagnosis only, the acceptance is judged on the default")
    p.add_argument("--wanmon-rcvbuf", type=int, metavar="BYTES",
                   help="give wanmon's SNMP socket this receive buffer instead of the 8 MB it asks for "
                        "(run through a small wrapper); 106496 gives the 212,992 bytes an unprivileged "
                        "process gets under Debian's default net.core.rmem_max")
    p.add_argument("--v3-keys", choices=["shared", "per-device"], default="shared",
                   help="SNMPv3: one user and key pair for every device (shared, default) or the same user "
                        "name with different keys per device")
    p.add_argument("--profile", choices=["auto", "always", "never"], default="auto",
                   help="run wanmon once more under cProfile for a version whose goals failed (auto, default), "
                        "for every version (always), or not at all")
    p.add_argument("--profile-dir", help="where to save the .prof files (default: a new /tmp/wmbench-snmp-prof-*)")
    p.add_argument("--quiet-wait", type=float, default=60.0, metavar="S",
                   help="before each measured run, wait up to S seconds for the machine to be idle "
                        "(other jobs under 15%% of a core); 0 = don't wait (default: %(default)s)")
    p.add_argument("--seed", type=int, default=20230801, help="device data seed (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="kill a single tool run after this many seconds (default: %(default)s)")
    p.add_argument("--report", metavar="FILE.json",
                   help="print the table of a saved --json result and exit (measures nothing)")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the temp dir (configs, agent data, raw outputs of every run)")
    a = p.parse_args(argv)
    a.versions = [v.strip().lstrip("v") for v in a.versions.split(",") if v.strip()]
    if not a.versions or any(v not in ("2c", "3") for v in a.versions):
        p.error("--versions: 2c, 3 or 2c,3")
    if not 1 <= a.agents <= 2000:
        p.error("--agents must be 1..2000")
    if a.repeat < 1 or a.warmup < 0:
        p.error("--repeat must be >= 1 and --warmup >= 0")
    return a


def make_creds(agents: list[Agent], mode: str) -> tuple[dict[str, V3Creds], dict[str, str],
                                                          dict[str, tuple[str, str, str]]]:
    """v3 credentials per site, the environment wanmon reads them from, and
    site id -> (user, auth env var, priv env var) for its config."""
    def new() -> V3Creds:
        return V3Creds(V3_USER, "auth-" + secrets.token_hex(8), "priv-" + secrets.token_hex(8))
    if mode == "shared":
        c = new()
        return ({a.site_id: c for a in agents}, {"BENCH_V3_AUTH": c.auth_key, "BENCH_V3_PRIV": c.priv_key},
                {a.site_id: (c.user, "BENCH_V3_AUTH", "BENCH_V3_PRIV") for a in agents})
    creds = {a.site_id: new() for a in agents}
    env, v3env = {}, {}
    for a in agents:
        env[f"BENCH_AUTH_{a.idx:03d}"] = creds[a.site_id].auth_key
        env[f"BENCH_PRIV_{a.idx:03d}"] = creds[a.site_id].priv_key
        v3env[a.site_id] = (V3_USER, f"BENCH_AUTH_{a.idx:03d}", f"BENCH_PRIV_{a.idx:03d}")
    return creds, env, v3env


def _rcvbuf_wrapper(python: str, nbytes: int) -> str:
    """A `python -m wanmon ...` stand-in whose SNMP socket asks for nbytes of receive buffer."""
    d = Path(tempfile.mkdtemp(prefix="wmbench-rcvbuf-"))
    atexit.register(shutil.rmtree, d, True)
    w = d / "python"
    w.write_text(f"""#!{python}
import runpy, sys
import wanmon.probes.snmp as snmp
snmp._RCVBUF = {int(nbytes)}  # the kernel doubles it
assert sys.argv[1:2] == ["-m"], sys.argv
mod = sys.argv[2]
sys.argv = [mod] + sys.argv[3:]
runpy.run_module(mod, run_name="__main__", alter_sys=True)
""")
    w.chmod(0o755)
    return str(w)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        with open(args.report, encoding="utf-8") as f:
            saved = json.load(f)
        print_report(saved["meta"], saved["cases"], saved["acceptance"], saved.get("profiles") or [])
        return 0
    M.install_signal_cleanup()
    needs = [sa.cli_available()]
    if args.agent_impl == "snmpsim":
        needs.append(sa.snmpsim_available())
    elif not sa._which("snmpd"):
        needs.append((False, "net-snmp agent `snmpd` not installed: apt-get install snmpd "
                             "(or use --agent-impl snmpsim)"))
    for ok, why in needs:
        if not ok:
            log(f"error: {why}")
            return 2
    if args.wanmon_rcvbuf:
        args.python = _rcvbuf_wrapper(args.python, args.wanmon_rcvbuf)
    r = M._run([args.python, "-m", "wanmon", "inventory", "--help"], cwd=REPO, timeout=60)
    if r.returncode != 0 or "--refresh" not in r.stdout:
        log(f"error: `{args.python} -m wanmon inventory --help` failed or has no --refresh "
            f"(rc {r.returncode}):\n{(r.stderr or r.stdout).strip()[-800:]}")
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="wmbench-snmp-", dir="/tmp"))
    prof_dir = Path(args.profile_dir).resolve() if args.profile_dir else None
    agents = make_agents(args.agents, args.seed)
    creds, v3_env, v3env = make_creds(agents, args.v3_keys)
    auth = {"2c": {a.site_id: ["-v2c", "-c", a.device.community] for a in agents},
            "3": {a.site_id: creds[a.site_id].cli() for a in agents}}
    wanmon_env = {**os.environ, **{a.comm_env: a.device.community for a in agents}, **v3_env}
    if args.pysmi == "hide":
        shim = tmp / "no-pysmi" / "pysmi"
        shim.mkdir(parents=True)
        (shim / "__init__.py").write_text(
            'raise ImportError("pysmi hidden by bench/snmp_poll.py --pysmi hide: wanmon does not depend on it")\n')
        wanmon_env["PYTHONPATH"] = os.pathsep.join(
            [str(shim.parent)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    cases: list[dict] = []
    errors: list[str] = []
    profiles: list[str] = []
    lab: dict[str, Any] = {"impl": args.agent_impl, "addresses": f"{agents[0].address}..{agents[-1].address}"}
    farm: SnmpdFarm | SnmpsimV3Farm | None = None
    sim: sa.SnmpSim | None = None
    method = "?"
    try:
        helper = M.build_helper(str(tmp))
        if helper is None:
            log("warning: no C compiler: measuring the tools directly; ru_maxrss has this script's own "
                "peak RSS as a floor")
        runner = M.Runner(None, helper)
        method = runner.method

        snmprec: dict[str, Path] = {}
        if args.agent_impl == "snmpd":
            log(f"starting {len(agents)} snmpd agents at {lab['addresses']} (temp dir {tmp}) ...")
            farm = SnmpdFarm(agents, creds, tmp / "agents").start()
            lab["snmpd"] = {"port": farm.port, "processes": len(farm.pids()), "start_s": farm.start_s}
            log(f"  {len(farm.pids())} snmpd on port {farm.port}, ready in {farm.start_s:.1f} s")
        else:
            log(f"starting snmpsim for {len(agents)} v2c agents at {lab['addresses']} (temp dir {tmp}) ...")
            t0 = time.monotonic()
            sim = sa.SnmpSim([a.device for a in agents], start_timeout=120)
            sim.start()
            lab["snmpsim_v2c"] = {"pid": sim.pid, "port": sim.port, "start_s": time.monotonic() - t0,
                                  "rss_mib": _proc_rss_mib(sim.pid), "engines": 1}
            log(f"  snmpsim (v2c) pid {sim.pid}, port {sim.port}, ready in "
                f"{lab['snmpsim_v2c']['start_s']:.1f} s, RSS {lab['snmpsim_v2c']['rss_mib']:.0f} MiB")
            (tmp / "snmprec").mkdir()
            for a in agents:   # a copy: the v3 simulator serves the same data after this one is gone
                snmprec[a.site_id] = tmp / "snmprec" / f"{a.site_id}.snmprec"
                shutil.copyfile(sim.data_dir / f"{a.device.community}.snmprec", snmprec[a.site_id])

        for version in args.versions:
            casedir = tmp / f"v{version}"
            casedir.mkdir()
            if args.agent_impl == "snmpd":
                port, pids = farm.port, farm.pids
            elif version == "2c":
                if sim is None:
                    raise M.LabError("v2c after v3 with --agent-impl snmpsim: list 2c first")
                port, pids = sim.port, (lambda s=sim: [s.pid] if s.pid else [])
            else:
                if sim is not None:   # one simulator at a time on the 2 cores
                    sim.close()
                    sim = None
                log(f"starting snmpsim for {len(agents)} v3 agents (one SNMP engine each; takes a while) ...")
                farm = SnmpsimV3Farm(agents, creds, snmprec, tmp / "v3farm").start()
                lab["snmpsim_v3"] = {"pid": farm.pids()[0], "port": farm.port, "start_s": farm.start_s,
                                     "rss_mib": tree_rss_mib(farm.pids()), "engines": len(agents)}
                log(f"  snmpsim (v3) pid {farm.pids()[0]}, port {farm.port}, ready in {farm.start_s:.1f} s, "
                    f"RSS {lab['snmpsim_v3']['rss_mib']:.0f} MiB")
                port, pids = farm.port, farm.pids
            case = Case(version, agents, port, pids, casedir, wanmon_env, v3env, auth[version],
                        {t: [] for t in TOOLS}, args.wanmon_max_concurrency)
            # (snmpsim serves snmpEngineID.0 from the device data, if at all: its v3 engine IDs are
            # set explicitly, one per device, and checked by the v3 discovery of every snmpget)
            distinct = args.agent_impl == "snmpd"
            problems = verify_agents(agents, port, auth[version], distinct_engines=distinct)
            if problems:
                raise M.LabError(f"v{version}: {len(problems)} agents do not answer as configured, e.g.\n  "
                                 + "\n  ".join(problems[:5]))
            log(f"verified v{version}: all {len(agents)} agents answer their own sysName, ifNumber and first "
                "ifName" + (", each with its own snmpEngineID" if distinct else "") + " (snmpget, untimed)")
            if args.agent_impl == "snmpd":
                lab["snmpd"]["rss_mib_total"] = tree_rss_mib(farm.pids())
            log(f"case: SNMP v{version}, {len(agents)} agents")
            res = run_case(runner, case, args)
            cases.append(res)
            for tool in TOOLS:
                for i, rr in enumerate(case.runs[tool], 1):
                    if not rr["ok"]:
                        errors.append(f"v{version} {tool} run {i}: {rr['error']}")
            goals_failed = any(ck["result"] != "PASS" for ck in acceptance([res]))
            if args.profile == "always" or (args.profile == "auto" and goals_failed):
                if prof_dir is None:   # a small folder of its own, kept; the temp dir is not
                    prof_dir = Path(tempfile.mkdtemp(prefix="wmbench-snmp-prof-", dir="/tmp"))
                prof_dir.mkdir(parents=True, exist_ok=True)
                out_prof = prof_dir / f"wanmon-inventory-v{version}.prof"
                log(f"profiling wanmon (v{version}) -> {out_prof}")
                profiles.append(profile_wanmon(runner, case, args, out_prof))
    except M.LabError as e:
        log(f"error: lab setup failed: {e}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        M.kill_current_children()
        if sim is not None:
            sim.close()
        if farm is not None:
            farm.stop()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    meta = {
        "agents": len(agents),
        "interfaces_total": sum(a.n_if for a in agents),
        "vendors": {v: sum(1 for a in agents if a.vendor == v) for v in sorted({a.vendor for a in agents})},
        "netsnmp_version": _version(["snmpget", "--version"]),
        "snmpsim_version": _pkg_version("snmpsim"),
        "agent_impl": args.agent_impl,
        "netsnmp_cmd": f"xargs -P 0 -L 1 sh poll_one.sh < agents  (per agent: snmpget {len(SYS_OIDS)} scalars, "
                       f"snmpbulkwalk {IF_TABLE}, snmpbulkwalk {IFX_TABLE}; -t {TIMEOUT_S} -r {RETRIES} -On -Oe)",
        "wanmon_cmd": f"{args.python} -m wanmon --config FILE inventory --refresh --json",
        "kernel": f"Linux {platform.release()}",
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "pysmi": args.pysmi,
        "wanmon_max_concurrency": args.wanmon_max_concurrency,
        "wanmon_rcvbuf": args.wanmon_rcvbuf,
        "versions": args.versions, "repeat": args.repeat, "warmup": args.warmup, "seed": args.seed,
        "v3": {"user": V3_USER, "auth": V3_AUTH, "priv": V3_PRIV, "keys": args.v3_keys},
        "timeout_s": TIMEOUT_S, "retries": RETRIES, "measurement": method, "lab": lab,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "errors": errors,
    }
    checks = acceptance(cases)
    if args.json:
        json.dump({"meta": meta, "cases": cases, "acceptance": checks, "profiles": profiles},
                  sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        print_report(meta, cases, checks, profiles)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
