"""wanmon's SNMP wire codec against pysnmp/pyasn1 as the reference.

Requests encoded by snmpwire must decode with pyasn1 to the same PDU;
responses encoded by pysnmp must decode with snmpwire to the same values;
SNMPv3 MACs must equal pysnmp's own; broken datagrams raise WireError only.
The v3 keys and ciphers themselves (wanmon/probes/usm.py) are tested in test_usm.py.
"""

from __future__ import annotations

import random

import pytest
from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import api, rfc1902, rfc1905
from pysnmp.proto.mpmod.rfc2576 import SnmpV1MessageProcessingModel, SnmpV2cMessageProcessingModel

from wanmon.probes import snmpwire as w

OIDS = [
    (1, 3, 6, 1, 2, 1, 1, 5, 0),
    (1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 18, 4294967295),  # arc at the 32-bit limit
    (1, 3, 6, 1, 4, 1, 2011, 2, 23, 999999999999),  # arc > 2^32
    (2, 999, 3),  # first arcs combined > 127
    (1, 3, 6, 1, 6, 3, 10, 2, 1, 3, 0),
    (0, 0),
]


def _spec(version: int):
    return (SnmpV1MessageProcessingModel() if version == 0 else SnmpV2cMessageProcessingModel())._snmpMsgSpec


@pytest.mark.parametrize("version,tag", [(0, w.GET), (0, w.GETNEXT), (1, w.GET), (1, w.GETNEXT), (1, w.GETBULK)])
def test_requests_decode_with_pyasn1(version, tag):
    msg = w.community_message(version, b"c\xc3\xb4ng-\x00x", w.pdu(tag, 0x7FFFFFF0, 0, 300 if tag == w.GETBULK else 0,
                                                                    OIDS))
    m, rest = decoder.decode(msg, asn1Spec=_spec(version))
    assert rest == b""
    p = api.PROTOCOL_MODULES[version]
    assert int(p.apiMessage.get_version(m)) == version
    assert bytes(p.apiMessage.get_community(m)) == b"c\xc3\xb4ng-\x00x"
    pdu = p.apiMessage.get_pdu(m)
    assert int(p.apiPDU.get_request_id(pdu)) == 0x7FFFFFF0
    if tag == w.GETBULK:
        assert int(p.apiBulkPDU.get_non_repeaters(pdu)) == 0
        assert int(p.apiBulkPDU.get_max_repetitions(pdu)) == 300
    vbs = p.apiPDU.get_varbinds(pdu)
    assert [tuple(o) for o, _ in vbs] == OIDS
    assert all(v.isSameTypeWith(rfc1902.Null()) or isinstance(v, type(p.Null())) for _, v in vbs)


def _response(version: int, varbinds, request_id=12345, error_status=0, error_index=0) -> bytes:
    p = api.PROTOCOL_MODULES[version]
    pdu = p.GetResponsePDU()
    p.apiPDU.set_defaults(pdu)
    p.apiPDU.set_request_id(pdu, request_id)
    p.apiPDU.set_error_status(pdu, error_status)
    p.apiPDU.set_error_index(pdu, error_index)
    p.apiPDU.set_varbinds(pdu, varbinds)
    msg = p.Message()
    p.apiMessage.set_defaults(msg)
    p.apiMessage.set_community(msg, "public")
    p.apiMessage.set_pdu(msg, pdu)
    return encoder.encode(msg)


def _typed_values():
    o = (1, 3, 6, 1, 2, 1, 2, 2, 1)
    return [
        (o + (1, 1), rfc1902.Integer32(-2147483648), -2147483648),
        (o + (1, 2), rfc1902.Integer32(2147483647), 2147483647),
        (o + (1, 3), rfc1902.Integer32(0), 0),
        (o + (2, 1), rfc1902.OctetString(b""), b""),
        (o + (2, 2), rfc1902.OctetString("Cổng WAN — Xã Phật Tích".encode()), "Cổng WAN — Xã Phật Tích".encode()),
        (o + (2, 3), rfc1902.OctetString(b"x" * 300), b"x" * 300),  # long-form length
        (o + (2, 4), rfc1902.OctetString(b"\x00\x01\xff"), b"\x00\x01\xff"),
        (o + (3, 1), rfc1902.IpAddress("127.0.0.1"), b"\x7f\x00\x00\x01"),
        (o + (10, 1), rfc1902.Counter32(4294967295), 4294967295),
        (o + (10, 2), rfc1902.Counter32(2147483648), 2147483648),  # high bit: leading zero octet
        (o + (5, 1), rfc1902.Gauge32(1000000000), 1000000000),
        (o + (9, 1), rfc1902.TimeTicks(4294967295), 4294967295),
        (o + (6, 1), rfc1902.Counter64(18446744073709551615), 18446744073709551615),
        (o + (6, 2), rfc1902.Counter64(0), 0),
        (o + (7, 1), rfc1902.ObjectIdentifier((1, 3, 6, 1, 4, 1, 9, 1, 1208)), (1, 3, 6, 1, 4, 1, 9, 1, 1208)),
        (o + (8, 1), rfc1905.NoSuchObject(""), w.NO_SUCH_OBJECT),
        (o + (8, 2), rfc1905.NoSuchInstance(""), w.NO_SUCH_INSTANCE),
        (o + (8, 3), rfc1905.EndOfMibView(""), w.END_OF_MIB_VIEW),
        (o + (8, 4), rfc1902.Null(""), w.NULL),
    ]


def test_response_values_decode_like_pyasn1():
    cases = _typed_values()
    msg = _response(1, [(rfc1902.ObjectName(oid), val) for oid, val, _ in cases], request_id=2**31 - 1,
                    error_status=0)
    version, community, pdu = w.parse_community(msg)
    assert (version, community, pdu.tag, pdu.request_id) == (1, b"public", w.RESPONSE, 2**31 - 1)
    assert [oid for oid, _ in pdu.varbinds] == [oid for oid, _, _ in cases]
    for (oid, got), (_, _, want) in zip(pdu.varbinds, cases):
        assert got == want and type(got) is type(want), (oid, got, want)
    for absent in (w.NO_SUCH_OBJECT, w.NO_SUCH_INSTANCE, w.END_OF_MIB_VIEW, w.NULL):
        assert not absent and absent != 0


def test_big_response_and_error_fields():
    """A 250-varbind reply (several KB, long lengths at every level) and error status/index."""
    rnd = random.Random(7)
    vbs = []
    for row in range(25):
        for col in range(10):
            oid = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1, col + 1, 10101 + row * 37)
            val = rnd.choice([rfc1902.Counter64(rnd.getrandbits(64)), rfc1902.OctetString(bytes(rnd.getrandbits(8)
                             for _ in range(rnd.randint(0, 200)))), rfc1902.Integer32(rnd.randint(-2**31, 2**31 - 1))])
            vbs.append((rfc1902.ObjectName(oid), val))
    msg = _response(1, vbs, request_id=99, error_status=5, error_index=17)
    assert len(msg) > 4096
    _, _, pdu = w.parse_community(msg)
    assert (pdu.error_status, pdu.error_index) == (5, 17)
    ref, _ = decoder.decode(msg, asn1Spec=_spec(1))
    p = api.PROTOCOL_MODULES[1]
    want = [(tuple(o), bytes(v) if isinstance(v, rfc1902.OctetString) else int(v))
            for o, v in p.apiPDU.get_varbinds(p.apiMessage.get_pdu(ref))]
    assert pdu.varbinds == want


def test_peek_id():
    assert w.peek_id(_response(1, [], request_id=424242)) == (1, 424242)
    assert w.peek_id(_response(0, [], request_id=7)) == (0, 7)
    keys = w.V3Keys("u", "SHA", "authpass-1", "AES", "privpass-1")
    msg = w.v3_message(31337, w.FLAG_AUTH | w.FLAG_PRIV, b"\x80\x00\x1f\x88\x04abc", 3, 100, b"u",
                       w.pdu(w.GET, 31337, 0, 0, OIDS[:1]), keys)
    assert w.peek_id(msg) == (3, 31337)
    assert w.peek_id(b"") is None and w.peek_id(b"\x30\x03\x02\x01") is None and w.peek_id(b"GET / HTTP/1.1") is None


V3_COMBOS = [(a, p) for a in ("MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512")
             for p in ("none", "DES", "AES", "AES192", "AES256")] + [("none", "none")]


def _v3_reply(keys: w.V3Keys, engine: bytes, pdu_bytes: bytes, msg_id=77) -> bytes:
    flags = keys.flags
    return w.v3_message(msg_id, flags, engine, 12, 3456789, keys.user, pdu_bytes, keys)


@pytest.mark.parametrize("auth,priv", V3_COMBOS)
def test_v3_round_trip_and_tampering(auth, priv):
    engine = b"\x80\x00\x1f\x88\x80" + bytes(range(12))
    keys = w.V3Keys("monitor", auth, "auth-pass-phrase" if auth != "none" else None, priv,
                    "priv-pass-phrase" if priv != "none" else None)
    body = w.pdu(w.RESPONSE, 77, 0, 0, OIDS)
    msg = _v3_reply(keys, engine, body)
    r = w.parse_v3(msg, keys)
    assert (r.msg_id, r.engine_id, r.boots, r.time_s, r.user) == (77, engine, 12, 3456789, b"monitor")
    assert r.flags & 3 == keys.flags
    assert [oid for oid, _ in r.pdu.varbinds] == OIDS and all(v is w.NULL for _, v in r.pdu.varbinds)
    if priv != "none":
        assert b"\x2b\x06\x01\x02\x01\x01\x05" not in msg  # sysName's OID is not in clear text
    if auth == "none":
        return
    # one flipped bit anywhere after the header: the MAC no longer matches
    for pos in (len(msg) - 1, len(msg) // 2, 40):
        bad = bytearray(msg)
        bad[pos] ^= 0x01
        with pytest.raises(w.WireError):
            w.parse_v3(bytes(bad), keys)
    # right auth key, wrong auth key
    other_auth = w.V3Keys("monitor", auth, "another-auth-phrase", priv, "priv-pass-phrase" if priv != "none" else None)
    with pytest.raises(w.AuthError):
        w.parse_v3(msg, other_auth)
    if priv != "none":
        other_priv = w.V3Keys("monitor", auth, "auth-pass-phrase", priv, "another-priv-phrase")
        with pytest.raises(w.DecryptError):
            w.parse_v3(msg, other_priv)


_PYSNMP_AUTH = {"MD5": "USM_AUTH_HMAC96_MD5", "SHA": "USM_AUTH_HMAC96_SHA", "SHA256": "USM_AUTH_HMAC192_SHA256",
                "SHA512": "USM_AUTH_HMAC384_SHA512"}


@pytest.mark.parametrize("auth", ["MD5", "SHA", "SHA256", "SHA512"])
def test_v3_mac_equals_pysnmp(auth):
    """The MAC snmpwire writes is the one pysnmp's own USM service computes."""
    from pysnmp.entity import config as pc
    from pysnmp.proto.secmod.rfc3414.service import SnmpUSMSecurityModel as Usm

    engine = b"\x80\x00\x1f\x88\x03wanmon"
    keys = w.V3Keys("u", auth, "a-long-auth-pass", "none", None)
    msg = w.v3_message(5, w.FLAG_AUTH, engine, 1, 2, b"u", w.pdu(w.GET, 5, 0, 0, OIDS), keys)
    r = w.parse_v3(msg, keys)
    assert r.flags & w.FLAG_AUTH
    mac_len = keys.mac_len
    # find our MAC: the only mac_len-byte run that differs from a zeroed copy
    svc = Usm.AUTH_SERVICES[getattr(pc, _PYSNMP_AUTH[auth])]
    auth_key = keys.localized(engine)[0]
    zeroed = None
    for i in range(len(msg) - mac_len):
        cand = msg[:i] + b"\x00" * mac_len + msg[i + mac_len:]
        if msg[i - 2:i] == bytes((0x04, mac_len)) and keys.mac(auth_key, cand) == msg[i:i + mac_len]:
            zeroed = cand
            break
    assert zeroed is not None
    from pysnmp.proto import rfc1902

    assert bytes(svc.authenticate_outgoing_message(rfc1902.OctetString(auth_key), zeroed)) == msg


def test_broken_datagrams_raise_wire_error_only():
    rnd = random.Random(11)
    good = _response(1, [(rfc1902.ObjectName(oid), val) for oid, val, _ in _typed_values()])
    keys = w.V3Keys("u", "SHA", "authpass-1", "AES", "privpass-1")
    v3 = w.v3_message(9, w.FLAG_AUTH | w.FLAG_PRIV, b"\x80\x00\x1f\x88\x04abc", 3, 100, b"u",
                      w.pdu(w.RESPONSE, 9, 0, 0, OIDS), keys)
    samples = [good[:n] for n in range(len(good))] + [v3[:n] for n in range(len(v3))]
    for _ in range(3000):
        src = bytearray(rnd.choice((good, v3)))
        for _ in range(rnd.randint(1, 4)):
            src[rnd.randrange(len(src))] = rnd.randrange(256)
        samples.append(bytes(src))
    samples += [rnd.randbytes(rnd.randint(0, 64)) for _ in range(500)]
    for data in samples:
        w.peek_id(data)  # never raises
        for parse in (w.parse_community, lambda d: w.parse_v3(d, keys)):
            try:
                parse(data)
            except w.WireError:
                pass
