"""Vendor from sysObjectID (IANA private enterprise numbers) and a model string from sysDescr."""

from __future__ import annotations

ENTERPRISE = "1.3.6.1.4.1."

# IANA Private Enterprise Numbers of the makers found on government WANs.
VENDORS: dict[int, str] = {
    9: "Cisco",
    11: "HP",
    43: "3Com",
    171: "D-Link",
    311: "Microsoft",
    674: "Dell",
    890: "Zyxel",
    1916: "Extreme Networks",
    1991: "Brocade (Foundry)",
    2011: "Huawei",
    2021: "net-snmp (UCD)",
    2272: "Nortel",
    2604: "Sophos",
    2620: "Check Point",
    2636: "Juniper",
    3375: "F5",
    3902: "ZTE",
    4526: "Netgear",
    5951: "Citrix",
    6486: "Alcatel-Lucent",
    6527: "Nokia (Alcatel-Lucent)",
    8072: "net-snmp",
    8741: "SonicWall",
    10002: "Ubiquiti",
    11863: "TP-Link",
    12325: "pfSense (FreeBSD)",
    12356: "Fortinet",
    14823: "Aruba",
    14988: "MikroTik",
    25461: "Palo Alto Networks",
    25506: "H3C",
    30065: "Arista",
    41112: "Ubiquiti",
    47196: "Ruijie",
}


def enterprise_number(sys_object_id: str | None) -> int | None:
    if not sys_object_id or not sys_object_id.startswith(ENTERPRISE):
        return None
    head = sys_object_id[len(ENTERPRISE) :].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def vendor(sys_object_id: str | None) -> str | None:
    """'Cisco', 'Juniper'... or 'enterprise N' for an unlisted maker; None without an OID."""
    n = enterprise_number(sys_object_id)
    if n is None:
        return None
    return VENDORS.get(n, f"enterprise {n}")


def model(sys_descr: str | None, limit: int = 120) -> str | None:
    """The first line of sysDescr (model / OS version), shortened for tables."""
    if not sys_descr:
        return None
    first = sys_descr.strip().splitlines()[0].strip() if sys_descr.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"
