#!/usr/bin/env python3
"""Regenerate wanmon's shipped inventory, sites.toml, from the reference data.

Usage:
    python3 tools/gen_sites.py [DATA_DIR] [-o OUTPUT]

DATA_DIR defaults to data/ in the repository (the
folder holding bacninh-units-2023.tsv, bacninh-communes-2023-gso-codes.tsv and
bacninh-units-2023-candidates.tsv). OUTPUT defaults to stdout ("-").

Stdlib only (Python 3.11+). The output is deterministic: same data, same bytes.
The script checks the data (counts, cross-file consistency, unique ids and
addresses) and exits non-zero with a message instead of writing a bad file.
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT / "data"

UNITS_FILE = "bacninh-units-2023.tsv"
GSO_FILE = "bacninh-communes-2023-gso-codes.tsv"
CANDIDATES_FILE = "bacninh-units-2023-candidates.tsv"

EXPECTED_TOTAL = 177          # connection points reported by the province (08/2023)
N_CANDIDATES = 7              # first N bodies of the candidates file are included
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")

# Provincial data-centre points (ASSUMPTION: the split of the 177 points is not
# published; the README proposes 7 points of the data centre itself).
DC_POINTS = [
    ("dc-core", "Trung tâm dữ liệu tỉnh – Router lõi chính"),
    ("dc-core-2", "Trung tâm dữ liệu tỉnh – Router lõi dự phòng"),
    ("dc-fw-1", "Trung tâm dữ liệu tỉnh – Tường lửa 1"),
    ("dc-fw-2", "Trung tâm dữ liệu tỉnh – Tường lửa 2"),
    ("dc-sw-1", "Trung tâm dữ liệu tỉnh – Chuyển mạch 1"),
    ("dc-sw-2", "Trung tâm dữ liệu tỉnh – Chuyển mạch 2"),
    ("dc-sw-3", "Trung tâm dữ liệu tỉnh – Chuyển mạch 3"),
]
ROOT_ID = "dc-core"
DC_ADMIN = "noc@ttdl.bacninh.example"

# Placeholder address plan (all inside 127.0.0.0/8).
PROVINCE_NET = "127.10.0"
DC_HOST0 = 1                  # 127.10.0.1 .. .7
AGENCY_HOST0 = 11             # 127.10.0.11 ..
CANDIDATE_HOST0 = 41          # 127.10.0.41 ..
DISTRICT_UBND_HOST = 1        # 127.10.<d>.1
DISTRICT_HCC_HOST = 2         # 127.10.<d>.2
COMMUNE_HOST0 = 11            # 127.10.<d>.11 ..


class DataError(Exception):
    pass


# --------------------------------------------------------------------------- helpers

def nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s.strip())


def slug(s: str) -> str:
    """ASCII slug: strip Vietnamese diacritics (đ -> d), lowercase, '-' separators."""
    s = s.replace("đ", "d").replace("Đ", "D")
    s = unicodedata.normalize("NFD", s)
    s = "".join(c for c in s if not unicodedata.combining(c))
    s = s.lower()
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-")
    if not s.isascii() or not ID_RE.match(s):
        raise DataError(f"cannot make an ASCII slug from {s!r}")
    return s


# Ids longer than this are hard to type in a shell and read in a table: these
# bodies get a shorter, still recognisable slug (ids are stable forever).
SHORT_IDS = {
    "Liên hiệp các Hội Khoa học và Kỹ thuật tỉnh": "lien-hiep-hoi-khkt-tinh",
    "Ban Quản lý dự án đầu tư xây dựng giao thông Bắc Ninh": "bqlda-giao-thong",
    "Ban quản lý dự án đầu tư xây dựng công trình dân dụng và công nghiệp Bắc Ninh":
        "bqlda-dan-dung-cong-nghiep",
}


def body_id(name: str) -> str:
    return SHORT_IDS.get(name) or slug(name)


def label(s: str) -> str:
    """DNS label for the .example admin addresses: the slug without hyphens."""
    out = slug(s).replace("-", "")
    if len(out) > 63:
        raise DataError(f"DNS label too long ({len(out)}): {out}")
    return out


def toml_str(s: str) -> str:
    out = ['"']
    for c in s:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def read_tsv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"missing data file: {path}")
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [{k: nfc(v or "") for k, v in r.items()} for r in rows]


# --------------------------------------------------------------------------- model

def build(data_dir: Path) -> tuple[list[dict], list[dict]]:
    """Return (sections, sites). A section is a banner + comment + its sites."""
    units = read_tsv(data_dir / UNITS_FILE)
    gso = read_tsv(data_dir / GSO_FILE)
    cands = read_tsv(data_dir / CANDIDATES_FILE)

    prov = [u for u in units if u["level"] == "province"]
    dists = [u for u in units if u["level"] == "district"]
    comms = [u for u in units if u["level"] == "commune"]
    other = [u for u in units if u["level"] not in ("province", "district", "commune")]
    if other:
        raise DataError(f"unknown level in {UNITS_FILE}: {other[0]}")
    if (len(prov), len(dists), len(comms)) != (21, 8, 126):
        raise DataError(f"{UNITS_FILE}: expected 21/8/126 units, "
                        f"got {len(prov)}/{len(dists)}/{len(comms)}")

    # Communes of the units file and of the GSO file must be the same set.
    k_units = Counter((c["district"], c["kind"], c["name"]) for c in comms)
    k_gso = Counter((g["district"], g["kind"], g["name"]) for g in gso)
    if k_units != k_gso:
        raise DataError(f"{UNITS_FILE} and {GSO_FILE} disagree on communes: "
                        f"only in units {sorted((k_units - k_gso).elements())}, "
                        f"only in GSO {sorted((k_gso - k_units).elements())}")
    if max(k_gso.values()) > 1:
        raise DataError(f"duplicate commune in {GSO_FILE}")

    # District order = GSO district code order; d = 1..8.
    codes: dict[str, str] = {}
    for g in gso:
        if codes.setdefault(g["district"], g["district_code"]) != g["district_code"]:
            raise DataError(f"district {g['district']} has two GSO codes")
    dist_by_name = {d["name"]: d for d in dists}
    if set(codes) != set(dist_by_name):
        raise DataError(f"district names differ: units {sorted(dist_by_name)} "
                        f"vs GSO {sorted(codes)}")
    dist_order = sorted(codes, key=lambda n: int(codes[n]))

    sites: list[dict] = []
    sections: list[dict] = []

    def add(section: dict, **site) -> None:
        site.setdefault("comment", [])
        section["sites"].append(site)
        sites.append(site)

    # ---- provincial data centre (ASSUMPTION)
    sec = {"banner": ["PROVINCE – provincial data centre (7 points) – 127.10.0.1-7"],
           "comment": [
               "ASSUMPTION: the split of the 177 connection points is not published.",
               "These 7 points of the provincial data centre itself (core and backup",
               "routers, firewalls, switch fabric) complete the count to 177; the",
               "device list is illustrative. dc-core is the root of the tree: it has",
               "no parent; everything else ultimately hangs from it.",
           ], "sites": []}
    for i, (sid, name) in enumerate(DC_POINTS):
        site = dict(id=sid, name=name, level="province",
                    address=f"{PROVINCE_NET}.{DC_HOST0 + i}", admins=[DC_ADMIN])
        if sid != ROOT_ID:
            site["parent"] = ROOT_ID
        add(sec, **site)
    sections.append(sec)

    # ---- provincial agencies (confirmed)
    sec = {"banner": [f"PROVINCE – provincial agencies ({len(prov)}, confirmed) – "
                      f"127.10.0.{AGENCY_HOST0}-{AGENCY_HOST0 + len(prov) - 1}"],
           "comment": [f"Source: {UNITS_FILE} (level = province)."], "sites": []}
    for i, u in enumerate(prov):
        add(sec, id=body_id(u["name"]), name=u["name"], level="province",
            parent=ROOT_ID, address=f"{PROVINCE_NET}.{AGENCY_HOST0 + i}",
            admins=[f"quantri@{label(u['name'])}.example"])
    sections.append(sec)

    # ---- candidate provincial bodies (ASSUMPTION)
    chosen = cands[:N_CANDIDATES]
    if len(chosen) != N_CANDIDATES:
        raise DataError(f"{CANDIDATES_FILE}: fewer than {N_CANDIDATES} rows")
    sec = {"banner": [f"PROVINCE – candidate provincial bodies ({len(chosen)}, ASSUMPTION) – "
                      f"127.10.0.{CANDIDATE_HOST0}-{CANDIDATE_HOST0 + len(chosen) - 1}"],
           "comment": [
               f"ASSUMPTION: the first {N_CANDIDATES} bodies of {CANDIDATES_FILE}.",
               "They exist, but their membership of the provincial WAN is",
               "unconfirmed. Each entry carries the status recorded in the data.",
           ], "sites": []}
    for i, c in enumerate(chosen):
        if c["level"] != "province":
            raise DataError(f"candidate not at province level: {c}")
        add(sec, id=body_id(c["name"]), name=c["name"], level="province",
            parent=ROOT_ID, address=f"{PROVINCE_NET}.{CANDIDATE_HOST0 + i}",
            admins=[f"quantri@{label(c['name'])}.example"],
            comment=[f"ASSUMPTION – status: {c['status']}", f"basis: {c['basis']}"])
    sections.append(sec)

    # ---- districts, GSO order
    for d_idx, dname in enumerate(dist_order, start=1):
        du = dist_by_name[dname]
        kind = du["kind"].lower()
        dslug = slug(dname)
        dlabel = label(dname)
        net = f"127.10.{d_idx}"
        dcomms = [g for g in gso if g["district"] == dname]
        dcomms.sort(key=lambda g: g["commune_code"])
        sec = {"banner": [f"DISTRICT {d_idx}/8 – {du['kind']} {dname} (GSO {codes[dname]}) – "
                          f"UBND, HCC, {len(dcomms)} communes – {net}.0/24"],
               "comment": [], "sites": []}
        add(sec, id=dslug, name=f"UBND {kind} {dname}", level="district",
            district=dname, parent=ROOT_ID, address=f"{net}.{DISTRICT_UBND_HOST}",
            admins=[f"quantri@{dlabel}.example"])
        hcc_note = ["ASSUMPTION: district public administration centre as a WAN point."]
        if dname == "Từ Sơn":
            hcc_note.append("The source article names this one (Từ Sơn city's centre).")
        add(sec, id=f"{dslug}-hcc", name=f"Trung tâm Hành chính công {kind} {dname}",
            level="district", district=dname, parent=ROOT_ID,
            address=f"{net}.{DISTRICT_HCC_HOST}",
            admins=[f"quantri@hcc.{dlabel}.example"], comment=hcc_note)
        for j, g in enumerate(dcomms):
            host = COMMUNE_HOST0 + j
            if host > 254:
                raise DataError(f"too many communes in {dname}")
            note = [f"GSO {g['commune_code']}"]
            if dname == "Tiên Du" and g["name"] == "Phật Tích":
                note = [f"GSO {g['commune_code']} – named in the source article"]
            add(sec, id=f"{dslug}-{slug(g['name'])}",
                name=f"UBND {g['kind'].lower()} {g['name']}", level="commune",
                district=dname, parent=dslug, address=f"{net}.{host}",
                admins=[f"quantri@{label(g['name'])}.{dlabel}.example"], comment=note)
        sections.append(sec)

    check(sites)
    return sections, sites


def check(sites: list[dict]) -> None:
    if len(sites) != EXPECTED_TOTAL:
        raise DataError(f"expected {EXPECTED_TOTAL} sites, built {len(sites)}")
    ids = Counter(s["id"] for s in sites)
    dup = [k for k, n in ids.items() if n > 1]
    if dup:
        raise DataError(f"duplicate ids: {dup}")
    addrs = Counter(s["address"] for s in sites)
    dup = [k for k, n in addrs.items() if n > 1]
    if dup:
        raise DataError(f"duplicate addresses: {dup}")
    loop = ipaddress.ip_network("127.0.0.0/8")
    by_id = {s["id"]: s for s in sites}
    for s in sites:
        if not ID_RE.match(s["id"]) or not s["id"].isascii():
            raise DataError(f"bad id {s['id']!r}")
        if ipaddress.ip_address(s["address"]) not in loop:
            raise DataError(f"{s['id']}: address outside 127.0.0.0/8")
        if unicodedata.normalize("NFC", s["name"]) != s["name"]:
            raise DataError(f"{s['id']}: name not NFC")
        for a in s["admins"]:
            if not (a.isascii() and a.endswith(".example") and "@" in a):
                raise DataError(f"{s['id']}: bad admin address {a!r}")
        p = s.get("parent")
        if p is None:
            if s["id"] != ROOT_ID:
                raise DataError(f"{s['id']}: no parent but not the root")
            continue
        if p not in by_id:
            raise DataError(f"{s['id']}: unknown parent {p!r}")
        if s["level"] == "commune":
            ps = by_id[p]
            if ps["level"] != "district" or ps.get("district") != s["district"]:
                raise DataError(f"{s['id']}: parent {p} is not its district")
    # No cycles: walk each site up to the root.
    for s in sites:
        seen, cur = set(), s
        while "parent" in cur:
            if cur["id"] in seen:
                raise DataError(f"parent cycle through {cur['id']}")
            seen.add(cur["id"])
            cur = by_id[cur["parent"]]


# --------------------------------------------------------------------------- output

HEADER = """\
# =============================================================================
# wanmon – site inventory and settings
# Bắc Ninh provincial WAN, 2023 hierarchy: province / district / commune
# =============================================================================
#
# GENERATED by tools/gen_sites.py from the reference data in data/
# (bacninh-units-2023.tsv, bacninh-communes-2023-gso-codes.tsv,
# bacninh-units-2023-candidates.tsv). Regenerate with
#     python3 tools/gen_sites.py -o sites.toml
# Once an operator has put real addresses in, this file is the source of
# truth: edit it by hand, do not regenerate over it.
#
# Check the file after every edit with:
#     wanmon validate
#
# ---------------------------------------------------------------------------
# ADDRESSES ARE PLACEHOLDERS
# ---------------------------------------------------------------------------
# Every `address` below is a loopback placeholder in 127.0.0.0/8, so this file
# is safe to run anywhere: wanmon only ever pings the local machine and sends
# no packet onto a real network. (Linux answers for all of 127.0.0.0/8; on
# systems that only configure 127.0.0.1, e.g. macOS, the placeholders simply
# time out and show as down.) Before deployment an operator replaces each
# address with the real router address of that site: an IPv4 address, an
# IPv6 address or a hostname. Placeholder plan:
#   127.10.0.1-7      provincial data centre (dc-core = 127.10.0.1)
#   127.10.0.11-31    provincial agencies (21)
#   127.10.0.41-47    candidate provincial bodies (7, assumption)
#   127.10.<d>.0/24   district d = 1..8 in GSO district-code order:
#                       1 Bắc Ninh (256)   2 Yên Phong (258)   3 Quế Võ (259)
#                       4 Tiên Du (260)    5 Từ Sơn (261)      6 Thuận Thành (262)
#                       7 Gia Bình (263)   8 Lương Tài (264)
#     127.10.<d>.1      district UBND
#     127.10.<d>.2      district public administration centre (HCC)
#     127.10.<d>.11-    communes, in GSO commune-code order
# Admin e-mail addresses are placeholders too, on the reserved .example domain.
#
# ---------------------------------------------------------------------------
# WHAT IS IN HERE: 177 sites
# ---------------------------------------------------------------------------
# The province reported (08/2023) 177 connection points on its WAN, all
# reaching the provincial data centre; the split is not published. 155 are
# confirmed units: 21 provincial agencies, 8 district UBND, 126 commune UBND.
# The other 22 are ASSUMPTIONS, marked where they appear: 7 data-centre
# points, 7 candidate provincial bodies, 8 district public administration
# centres.
#
# Since 1 July 2025 Vietnam has no district tier and Bắc Ninh is merged with
# Bắc Giang. To regroup sites, change name / level / district / parent and
# keep the id: history follows the id, never the name or the position.

# =============================================================================
# [store] – where results are kept
# =============================================================================
[store]
## SQLite database file. A relative path is relative to the folder holding
## this file. The folder is created with mode 0700, the file with mode 0600.
## Default: "var/wanmon.db"
path = "var/wanmon.db"

## Raw per-cycle samples are kept this many days, then deleted.
## Default: 35
retention_raw_days = 35

## Hourly rollups are kept this many days, then deleted.
## Default: 400
retention_rollup_days = 400

# =============================================================================
# [icmp] – how sites are probed
# =============================================================================
[icmp]
## Echo requests sent to each site in each cycle.
## Default: 3
count = 3

## Gap between two requests to the same site, in milliseconds.
## Default: 200
interval_ms = 200

## How long to wait for each reply, in milliseconds.
## Default: 1000
timeout_ms = 1000

## Global send-rate cap over all sites, in packets per second.
## Default: 1000
rate_pps = 1000

## ICMP payload size in bytes (like ping's default).
## Default: 56
payload_bytes = 56

## Socket mode: "auto" | "raw" | "unprivileged".
##   raw           needs root or CAP_NET_RAW
##   unprivileged  needs the process gid inside net.ipv4.ping_group_range
##   auto          tries raw, then unprivileged
## Default: "auto"
mode = "auto"

## How long a site's host name may take to resolve, in milliseconds (the whole
## lookup). Literal addresses never wait, and no site waits for another's DNS.
## A name without an answer in time (or with a temporary DNS failure) is pinged
## at its last good address, and its reason says so; with none, the site is
## down with "DNS timeout". A name the DNS says does not exist is down with
## "does not resolve" and never uses the last address.
## Default: 1000
dns_timeout_ms = 1000

# =============================================================================
# [thresholds] – when a site counts as "degraded"
# =============================================================================
[thresholds]
## Packet loss at or above this percentage (but below 100%) makes a site
## "degraded". 100% loss is "down".
## Default: 10.0
degraded_loss_pct = 10.0

## Average round-trip time at or above this, in milliseconds, makes a site
## "degraded".
## Default: 300.0
degraded_rtt_ms = 300.0

# =============================================================================
# [snmp] – SNMP polling of each site's router (defaults for every site)
# =============================================================================
# Each key can be overridden per site in a `[sites.snmp]` table (or an inline
# `snmp = { ... }`), which also takes `uplink`. Secrets (community, v3 keys)
# come ONLY from the environment (`*_env`) or a file (`*_file`, relative paths
# are relative to this file's folder): never write them in this file.
# The placeholder addresses have no SNMP agent: every poll of this shipped
# file ends in "timeout" until real addresses are filled in.
[snmp]
## Poll SNMP at all. A site turns it off with `snmp = { enabled = false }`.
## Default: true
enabled = true

## "1", "2c" or "3".
## Default: "2c"
version = "2c"

## UDP port of the agents.
## Default: 161
port = 161

## Wait for each reply, in milliseconds; a request is sent retries+1 times,
## so a dead agent costs timeout_ms * (retries + 1).
## Default: 1000
timeout_ms = 1000

## Default: 1
retries = 1

## Poll a site at most this often, in seconds, also from cron (the time of
## the last poll is kept in the store). 0 = every cycle.
## Default: 300
interval_s = 300

## At most this many agents polled at once. A dead agent holds its slot for
## timeout_ms * (retries + 1); replies cost little CPU (about 0.2 ms for a
## 200-value GETBULK answer), so the default polls the whole WAN at once.
## Default: 256
max_concurrency = 256

## SNMP runs after the ICMP sweep, never inside it: the page and the alerts
## never wait for an agent. Only sites that answered ICMP in the last cycle
## are polled. One poll (all due agents) takes at most budget_s seconds;
## agents not reached by then come first next time.
## Default: 30
budget_s = 30

## An agent that keeps timing out is polled less often: from its second
## timeout in a row the wait doubles (2x, 4x ... the interval, at least 60 s)
## up to max_backoff_s. `wanmon inventory --refresh` polls it anyway.
## Default: 3600
max_backoff_s = 3600

## v1/v2c community: the name of an environment variable holding it
## (community_env) or a file holding it (community_file). With neither, the
## well-known "public" is used.
# community_env = "WANMON_SNMP_COMMUNITY"
# community_file = "/etc/wanmon/snmp-community"

## SNMPv3 (version = "3"): user name, authentication and privacy.
## auth_protocol: "none" | "MD5" | "SHA" | "SHA224" | "SHA256" | "SHA384" | "SHA512"
##   (default "SHA"); priv_protocol: "none" | "DES" | "AES" | "AES192" | "AES256"
##   (default "AES"; AES192/AES256 extend the key as Cisco does, net-snmp's
##   "AES-192-C"/"AES-256-C"). Keys (at least 8 characters) from auth_key_env /
##   auth_key_file and priv_key_env / priv_key_file.
# user = "wanmon"
# auth_protocol = "SHA"
# auth_key_env = "WANMON_SNMP_AUTH_KEY"
# priv_protocol = "AES"
# priv_key_env = "WANMON_SNMP_PRIV_KEY"

## Per site only: `uplink` names the interface whose traffic is the site's
## figure (its ifName, ifDescr or ifIndex). Without it wanmon picks: among
## interfaces that are up and not loopbacks, one whose ifAlias/ifName says
## uplink/WAN/internet/ISP/upstream, else the fastest, else the lowest ifIndex.
## Example:
# [sites.snmp]
# version = "3"
# user = "wanmon-tiendu"
# uplink = "GigabitEthernet0/0"

# =============================================================================
# [page] – the static status page (written after every cycle)
# =============================================================================
[page]
## Output folder for index.html and status.json; relative to this file.
## Default: "public"
out_dir = "public"

## "vi" (95,55%, dd/mm/yyyy) or "en".
## Default: "vi"
language = "vi"

## Time zone for the times shown on the page and in emails.
## Default: "Asia/Ho_Chi_Minh"
timezone = "Asia/Ho_Chi_Minh"

## Province name in titles.
## Default: "Bắc Ninh"
province = "Bắc Ninh"

## Browser refresh, in seconds; match the poll interval. The page shows a
## "data is stale" banner when the last cycle is older than 3 x this.
## Default: 60
refresh_s = 60

## A folder with your own copies of page.html.j2 / email.*.j2 (optional).
# templates_dir = "my-templates"

## Where the IT staff open the page (served by any web server); emails link
## to it. Without it, emails name the file's path.
# url = "http://wanmon.ttdl.bacninh.example/"

## Where the page's data comes from: "store" (this agent's) or "influxdb"
## (every agent's points, merged: README "Several agents"; needs [influxdb]).
## Default: "store"
source = "store"

## A page from InfluxDB: every query together within this many seconds (a
## 10,000-site day of points takes InfluxDB 1.6 about 12 s); beyond it the
## last page stays in place. Default: 60
influx_budget_s = 60

# =============================================================================
# [schedule] – the daemon (`wanmon run`); cron runs one cycle per call
# =============================================================================
[schedule]
## Seconds between two cycles (ICMP every cycle; SNMP per [snmp] interval_s).
## Default: 60
icmp_interval_s = 60

## On SIGTERM/SIGINT, how long the running cycle may take to finish.
## Default: 30
grace_s = 30

# =============================================================================
# [alerts] – who is told what, and when
# =============================================================================
[alerts]
## Default: true
enabled = true
## Consecutive bad cycles before a problem is "hard" and notified. Default: 3
confirm_cycles = 3
## Consecutive good cycles before a recovery is notified. Default: 2
recover_cycles = 2
## Reminder every N hours while a problem lasts; 0 = off. Default: 4
reminder_h = 4
## Flap detection over the last N cycles (Nagios' weighted state changes):
## flapping starts at flap_high_pct and ends below flap_low_pct.
## Defaults: 21, 5.0, 20.0
flap_window = 21
flap_low_pct = 5.0
flap_high_pct = 20.0
## Also notify degraded sites / unreachable communes (once) / SNMP reboots.
## Defaults: true
notify_degraded = true
notify_unreachable = true
notify_reboot = true
## The network operations centre: gets every notification (noc_gets_all) and
## the "monitoring agent may be cut off" mail.
noc = ["noc@ttdl.bacninh.example"]
noc_gets_all = true
## Whom a site's administrators call: each alert mail says what to do and whom
## to call. contact: for every site; [alerts.district_contacts] (below): for the
## sites of a district, by its `district` name; a site's own `contact` wins over
## both. One line each, at most 300 characters. Without any, the mails say "the
## provincial network administrators".
# contact = "Trung tâm CNTT tỉnh: 0222 3 123 456, noc@ttdl.bacninh.example"
## The monitor-side guard: when the agent's own upstream does not answer
## (guard_sites; default: the sites without a parent, here dc-core), the agent
## itself is probably cut off: one mail to the NOC instead of a flood, and no
## site's state moves until it answers again. A district router down with its
## communes is one root cause, never the guard. Seen from here a dc-core outage
## and the agent's own isolation look the same; list the agent's own gateway
## (as a site) in guard_sites to tell them apart.
## guard_fraction: the share of guard_sites that must be silent (1.0 = all);
## guard_min_sites: no guard in a network smaller than this. Defaults: 1.0, 5
# guard_sites = ["dc-core"]
guard_fraction = 1.0
guard_min_sites = 5
# [alerts.district_contacts]
# "Gia Bình" = "Phòng VHTT huyện Gia Bình: 0222 3 671 000"

# =============================================================================
# [agent] – this agent, when several write to one InfluxDB
# =============================================================================
[agent]
## Tagged on every point (tag "agent"); `wanmon influx check` lists the agents.
## Default: the host name
# id = "ttdl-primary"

## "primary" or "standby". Default: "primary"
role = "primary"

# =============================================================================
# [report] – availability reports (`wanmon report`, README "Availability reports")
# =============================================================================
[report]
## Sites under this availability (%) are flagged in the reports. Default: 99.0
target_pct = 99.0

## Who gets the report by mail (`wanmon report --email`, and the daemon's
## monthly mail of the previous month, sent once, needs [smtp]). Default: none
recipients = []
# recipients = ["so-tttt@bacninh.example"]

## The daemon mails last month's report on the 1st. Default: true
monthly = true

# =============================================================================
# [trace] – the path to a site (`wanmon probe`, `wanmon topology`, and the
# agent's own traces at an outage; README "Finding the break"): ICMP echo
# requests to the site with growing TTLs
# =============================================================================
# [trace]
# max_hops = 16        # the farthest distance probed
# attempts = 3         # probes at one distance before it counts as silent
#                      # (routers rate-limit their ICMP answers: Linux 1 a second)
# timeout_ms = 1000    # one probe's wait for its answer
# gap_ms = 20          # between two probes of one trace
# budget_s = 10        # one whole trace (and all of a cycle's traces), enforced while it runs
# on_outage = true     # trace a site that goes down on its own, after the cycle's page
# refresh_h = 24       # a site's good path traced again after this (0: never)
# per_cycle = 8        # traces a cycle starts at most (outages first)

# =============================================================================
# [[hops]] – names for addresses seen on the paths that are no site's address
# (any number): the carrier's routers, or another interface of a site's router
# =============================================================================
# [[hops]]
# address = "127.10.0.254"        # an IP address: traces see hops by address
# name = "Router VNPT Gia Bình"
#
# [[hops]]
# address = "127.10.7.254"
# name = "UBND huyện Gia Bình (cổng WAN)"
# site = "gia-binh"              # this equipment is that site's: the path passes it

# =============================================================================
# [smtp] – mail relay for alert emails (optional; without it mails are only
# listed by `wanmon alerts`)
# =============================================================================
# [smtp]
# host = "mail.bacninh.example"
# port = 587
# from = "wanmon@ttdl.bacninh.example"
# starttls = true                        # or ssl = true (port 465)
# user_env = "WANMON_SMTP_USER"
# password_env = "WANMON_SMTP_PASSWORD"  # or password_file
# timeout_s = 10       # deadline for connect+greeting+EHLO+STARTTLS+AUTH, and for each
#                      # message's exchange (MAIL, RCPT, DATA, the final dot); a relay that
#                      # answers later is cut off and the message is retried later
# max_attempts = 8     # a mail still not accepted after this many attempts is marked failed
#                      # (shown by `wanmon alerts` and on the status page)
# retry_s = 60         # wait after a failed attempt; doubles each time, at most 1 h
#                      # (defaults: 8 attempts over about two hours)

# =============================================================================
# [influxdb] – long-term storage (optional; without it the embedded store only)
# =============================================================================
# [influxdb]
# url = "http://127.0.0.1:8086"
# api = "v2"                     # "v2" (InfluxDB 2.x/3.x/1.8+) or "v1" (1.7 and older)
# org = "wanmon"                 # v2
# bucket = "wanmon"              # v2
# token_env = "WANMON_INFLUX_TOKEN"
# database = "wanmon"            # v1
# username = "wanmon"            # v1, optional
# password_env = "WANMON_INFLUX_PASSWORD"
# timeout_ms = 5000
# batch_size = 5000
# spool_max_points = 1000000
# spool_max_age_h = 168
# drain_budget_s = 10

# =============================================================================
# [[maintenance]] – windows without notifications (any number)
# =============================================================================
# [[maintenance]]
# districts = ["Gia Bình"]       # and/or sites = ["gia-binh"]
# days = ["sun"]                 # weekly: days + from/to (to < from = past midnight)
# from = "22:00"
# to = "02:00"
# reason = "bảo trì định kỳ"
#
# [[maintenance]]
# sites = ["tien-du"]
# start = "2026-12-01T22:00"     # one-off, local time
# end = "2026-12-02T02:00"

# =============================================================================
# [[sites]] – one table per monitored connection point
# =============================================================================
## id        Required. Stable ASCII slug matching ^[a-z0-9][a-z0-9-]*$, unique
##           in the file. It is the key of all history in the store: never
##           change it (rename with `name`, regroup with `district`/`parent`).
##           Here: province bodies use the slug of their name, district sites
##           the slug of the district ("tien-du", "tien-du-hcc"), communes
##           "<district-slug>-<commune-slug>" ("tien-du-phat-tich").
## name      Required. Human-readable name (Vietnamese, UTF-8, NFC).
## level     Required. "province" | "district" | "commune".
## district  Required for level "district" and "commune": the district name,
##           e.g. "Tiên Du". Absent for province-level sites.
## parent    Optional. Uplink dependency: the id of the site this one reaches
##           the data centre through. Omit only for the root (dc-core).
##           Here: communes hang from their district's UBND site; district
##           sites and provincial bodies hang from dc-core.
## address   Required. What to ping: IPv4, IPv6 or hostname (placeholders
##           here, see the top of the file).
## admins    Optional, default []. E-mail addresses of the site's admins.
## contact   Optional. Whom its admins call (overrides [alerts] contact and
##           district_contacts).
## snmp      Optional table: this site's overrides of [snmp] (see above).
##
## Example:
# [[sites]]
# id = "tien-du"
# name = "UBND huyện Tiên Du"
# level = "district"
# district = "Tiên Du"
# parent = "dc-core"
# address = "127.10.4.1"
# admins = ["quantri@tiendu.example"]
"""

KEY_ORDER = ("id", "name", "level", "district", "parent", "address")


def render(sections: list[dict]) -> str:
    out = [HEADER]
    for sec in sections:
        out.append("")
        out.append("# " + "=" * 77)
        out.extend(f"# {b}" for b in sec["banner"])
        out.append("# " + "=" * 77)
        out.extend(f"# {c}" for c in sec["comment"])
        for s in sec["sites"]:
            out.append("")
            out.extend(f"# {c}" for c in s["comment"])
            out.append("[[sites]]")
            for k in KEY_ORDER:
                if k in s:
                    out.append(f"{k} = {toml_str(s[k])}")
            out.append("admins = [" + ", ".join(toml_str(a) for a in s["admins"]) + "]")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir", nargs="?", type=Path, default=DEFAULT_DATA,
                    help=f"reference data folder (default: {DEFAULT_DATA})")
    ap.add_argument("-o", "--output", default="-",
                    help="output file, '-' for stdout (default)")
    args = ap.parse_args(argv)
    try:
        sections, _ = build(args.data_dir)
    except DataError as e:
        print(f"gen_sites: {e}", file=sys.stderr)
        return 1
    text = render(sections)
    if args.output == "-":
        sys.stdout.buffer.write(text.encode("utf-8"))
        sys.stdout.flush()
    else:
        Path(args.output).write_text(text, encoding="utf-8", newline="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
