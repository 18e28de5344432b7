"""wanmon's SNMPv3 crypto (wanmon/probes/usm.py) against the RFC vectors and independent references.

* RFC 3414 A.3.1 / A.3.2: Ku and Kul of "maplesyrup" for MD5 and SHA-1.
* The RFC's own 64-octet password-to-key loop, transliterated here, for every hash.
* pysnmp's USM (a test-only dependency, an independent implementation): localized
  auth and privacy keys for every hash and cipher (RFC 7860 has no SHA-2 vectors,
  RFC 3826 none for AES), and cipher texts each way: ours decrypted by pysnmp,
  pysnmp's decrypted by ours.
* DES against the FIPS 81 CBC example (it checks that TripleDES with one key
  repeated is single DES), AES-CFB against `cryptography` with the RFC 3826 IV.
The interop with a real net-snmp snmpd is in tests/test_snmp_integration.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import warnings

import pytest

from conftest import REPO
from wanmon.probes import snmpwire as w
from wanmon.probes import usm

ENGINE_A3 = bytes.fromhex("000000000000000000000002")
HASHES = ["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"]
CIPHERS = ["DES", "AES", "AES192", "AES256"]


# ---------------------------------------------------------------------------
# RFC 3414 appendix A.3


@pytest.mark.parametrize("auth,ku,kul", [
    ("MD5", "9faf3283884e92834ebc9847d8edd963", "526f5eed9fcce26f8964c2930787d82b"),  # A.3.1
    ("SHA", "9fb5cc0381497b3793528939ff788d5d79145211", "6695febc9288e36282235fc7151f128497b38f3f"),  # A.3.2
])
def test_rfc3414_a3_key_vectors(auth, ku, kul):
    h = usm.AUTH[auth][0]
    got_ku = usm.password_to_key(b"maplesyrup", h)
    assert got_ku.hex() == ku
    assert usm.localize(got_ku, ENGINE_A3, h).hex() == kul
    assert w.V3Keys("u", auth, "maplesyrup", "none", None).localized(ENGINE_A3)[0].hex() == kul


def _rfc3414_a2_loop(password: bytes, h) -> bytes:
    """RFC 3414 A.2.1 as written: 64 octets at a time from a ring over the password."""
    hasher = h()
    count, index = 0, 0
    while count < 1_048_576:
        hasher.update(bytes(password[(index + i) % len(password)] for i in range(64)))
        index += 64
        count += 64
    return hasher.digest()


@pytest.mark.parametrize("auth", HASHES)
@pytest.mark.parametrize("password", [b"maplesyrup", b"8charsXY", "Mật khẩu Đông Cứu".encode(), bytes(range(1, 71))])
def test_password_to_key_is_the_rfc_loop(auth, password):
    h = usm.AUTH[auth][0]
    assert usm.password_to_key(password, h) == _rfc3414_a2_loop(password, h)


def test_empty_pass_phrase_is_refused():
    with pytest.raises(ValueError):
        usm.password_to_key(b"", hashlib.sha1)


def test_mac_lengths_are_rfc3414_and_rfc7860():
    assert {k: v[1] for k, v in usm.AUTH.items()} == {
        "MD5": 12, "SHA": 12, "SHA224": 16, "SHA256": 24, "SHA384": 32, "SHA512": 48}


# ---------------------------------------------------------------------------
# pysnmp's USM as an independent implementation (test-only dependency)

_PYSNMP_AUTH = {"MD5": "USM_AUTH_HMAC96_MD5", "SHA": "USM_AUTH_HMAC96_SHA", "SHA224": "USM_AUTH_HMAC128_SHA224",
                "SHA256": "USM_AUTH_HMAC192_SHA256", "SHA384": "USM_AUTH_HMAC256_SHA384",
                "SHA512": "USM_AUTH_HMAC384_SHA512"}
_PYSNMP_PRIV = {"DES": "USM_PRIV_CBC56_DES", "AES": "USM_PRIV_CFB128_AES", "AES192": "USM_PRIV_CFB192_AES",
                "AES256": "USM_PRIV_CFB256_AES"}


@pytest.fixture(scope="module")
def pysnmp_usm():
    """(auth services, priv services, config module, OctetString) of pysnmp: its internals, used here
    only as a reference; a pysnmp that moved them skips these cross-checks, it does not break wanmon."""
    try:
        from pysnmp.entity import config as pc
        from pysnmp.proto.rfc1902 import OctetString
        from pysnmp.proto.secmod.rfc3414.service import SnmpUSMSecurityModel as Usm

        auth = {n: Usm.AUTH_SERVICES[getattr(pc, o)] for n, o in _PYSNMP_AUTH.items()}
        priv = {n: Usm.PRIV_SERVICES[getattr(pc, o)] for n, o in _PYSNMP_PRIV.items()}
        for s in (*auth.values(), *priv.values()):
            assert callable(s.hash_passphrase) and callable(s.localize_key)
    except (ImportError, AttributeError, KeyError, AssertionError) as exc:
        pytest.skip(f"pysnmp's USM services are not where this cross-check expects them: {exc!r}")
    return auth, priv, pc, OctetString


ENGINES = [ENGINE_A3, bytes.fromhex("80001f8880e9630000d61ff449"), b"\x80\x00\x1f\x88\x04" + b"x" * 27]


@pytest.mark.parametrize("auth", HASHES)
def test_auth_keys_equal_pysnmp(pysnmp_usm, auth):
    svcs, _, _, Octets = pysnmp_usm
    keys = w.V3Keys("u", auth, "auth-pass-phrase", "none", None)
    for engine in ENGINES:
        ref = svcs[auth].localize_key(svcs[auth].hash_passphrase(Octets("auth-pass-phrase")), Octets(engine))
        assert keys.localized(engine)[0] == bytes(ref), engine


@pytest.mark.parametrize("auth", HASHES)
@pytest.mark.parametrize("priv", CIPHERS)
def test_priv_keys_equal_pysnmp(pysnmp_usm, auth, priv):
    """Includes the AES-192/256 Reeder extension, used where the digest is shorter than the
    key: MD5 (16 octets) and SHA-1 (20) for both, SHA-224 (28) for AES-256."""
    _, svcs, pc, Octets = pysnmp_usm
    auth_oid = getattr(pc, _PYSNMP_AUTH[auth])
    keys = w.V3Keys("u", auth, "auth-pass-phrase", priv, "priv-pass-phrase")
    for engine in ENGINES:
        s = svcs[priv]
        ref = bytes(s.localize_key(auth_oid, s.hash_passphrase(auth_oid, Octets("priv-pass-phrase")), Octets(engine)))
        got = keys.localized(engine)[1]
        assert len(got) == usm.PRIV[priv].key_len
        assert got == ref[:len(got)], engine


def test_reeder_extension_is_not_blumenthal():
    """AES-256 with SHA-1: the tail is localize(password_to_key(Kul)), not H(Kul) (Blumenthal's draft,
    net-snmp's plain AES-256): the two differ, and devices and net-snmp's -C variants use Reeder's."""
    h = hashlib.sha1
    kul = usm.localize(usm.password_to_key(b"priv-pass-phrase", h), ENGINE_A3, h)
    key = usm.priv_key("AES256", usm.password_to_key(b"priv-pass-phrase", h), ENGINE_A3, h)
    assert key[:20] == kul
    assert key[20:] == usm.localize(usm.password_to_key(kul, h), ENGINE_A3, h)[:12]
    assert key[20:] != h(kul).digest()[:12]


@pytest.mark.parametrize("auth", ["MD5", "SHA", "SHA256", "SHA512"])
@pytest.mark.parametrize("priv", CIPHERS)
def test_ciphers_interoperate_with_pysnmp(pysnmp_usm, auth, priv):
    _, svcs, _, Octets = pysnmp_usm
    s = svcs[priv]
    keys = w.V3Keys("u", auth, "auth-pass-phrase", priv, "priv-pass-phrase")
    pk = keys.localized(ENGINES[1])[1]
    from pysnmp.proto.error import StatusInformation

    try:
        s.encrypt_data(Octets(pk), (1, 1, None), b"probe")
    except StatusInformation:  # pysnmp 7.1.30 imports CFB from where cryptography >= 47 has it
        import cryptography

        pytest.skip(f"pysnmp's {priv} does not work with cryptography {cryptography.__version__}: "
                    "no reference here (test_aes_equals_an_independent_aes_cfb still runs)")
    for n in (0, 1, 7, 8, 9, 63, 64, 1000):
        plain = os.urandom(n)
        boots, time_s = 0x7FFFFFFF - n, 1_234_567 + n
        cipher, salt = keys.encrypt(pk, boots, time_s, plain)
        assert len(salt) == 8
        back = bytes(s.decrypt_data(Octets(pk), (boots, time_s, Octets(salt)), Octets(cipher)))
        if priv == "DES":  # padded to a multiple of 8, no more
            assert len(cipher) == (n + 7) // 8 * 8 and back[:n] == plain
        else:
            assert back == plain and len(cipher) == n
        theirs, their_salt = s.encrypt_data(Octets(pk), (boots, time_s, None), plain)
        ours = keys.decrypt(pk, boots, time_s, bytes(their_salt), bytes(theirs))
        assert ours[:n] == plain


# ---------------------------------------------------------------------------
# the ciphers against published or independent references


def test_des_is_single_des_fips81_cbc_example():
    """FIPS 81 appendix C (CBC): key 0123456789abcdef, IV 1234567890abcdef, "Now is the time for all "."""
    key = bytes.fromhex("0123456789abcdef")
    iv = bytes.fromhex("1234567890abcdef")
    pre_iv = iv  # with salt 0 the IV is the pre-IV itself
    out = usm.PRIV["DES"].decrypt(key + pre_iv, 0, 0, bytes(8),
                                  bytes.fromhex("e5c7cdde872bf27c43e934008c389c0f683788499a7c05f6"))
    assert out == b"Now is the time for all "


def test_des_salt_and_iv_are_rfc3414_8_1():
    keys = w.V3Keys("u", "SHA", "auth-pass-phrase", "DES", "priv-pass-phrase")
    pk = keys.localized(ENGINE_A3)[1]
    c1, s1 = keys.encrypt(pk, 0x01020304, 0, b"x" * 16)
    c2, s2 = keys.encrypt(pk, 0x01020304, 0, b"x" * 16)
    assert s1[:4] == s2[:4] == bytes.fromhex("01020304")  # engineBoots
    assert (int.from_bytes(s2[4:], "big") - int.from_bytes(s1[4:], "big")) % 2**32 == 1  # the local counter
    assert c1 != c2
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    iv = bytes(a ^ b for a, b in zip(pk[8:16], s1))
    assert c1 == Cipher(TripleDES(pk[:8] * 3), modes.CBC(iv)).encryptor().update(b"x" * 16)


def test_aes_equals_an_independent_aes_cfb():
    """RFC 3826: AES-128 CFB, key = the first 16 octets of the localized privacy key, IV =
    engineBoots, engineTime (4 octets each, big-endian) and the 8-octet salt; the 192/256
    variants the same with 24/32 octets of key."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    try:
        from cryptography.hazmat.decrepit.ciphers.modes import CFB
    except ImportError:  # cryptography < 47
        from cryptography.hazmat.primitives.ciphers.modes import CFB

    for priv, n in (("AES", 16), ("AES192", 24), ("AES256", 32)):
        keys = w.V3Keys("u", "SHA", "auth-pass-phrase", priv, "priv-pass-phrase")
        pk = keys.localized(ENGINES[1])[1]
        plain = bytes(range(256)) * 3 + b"tail"
        cipher, salt = keys.encrypt(pk, 7, 123_456, plain)
        c2, salt2 = keys.encrypt(pk, 7, 123_456, plain)
        assert salt != salt2 and cipher != c2
        iv = (7).to_bytes(4, "big") + (123_456).to_bytes(4, "big") + salt
        assert cipher == Cipher(algorithms.AES(pk[:n]), CFB(iv)).encryptor().update(plain)
        assert keys.decrypt(pk, 7, 123_456, salt, cipher) == plain


def test_bad_cipher_inputs_are_wire_errors():
    for priv in CIPHERS:
        keys = w.V3Keys("u", "SHA", "auth-pass-phrase", priv, "priv-pass-phrase")
        pk = keys.localized(ENGINE_A3)[1]
        with pytest.raises(w.DecryptError):
            keys.decrypt(pk, 1, 1, b"short", b"x" * 16)
        with pytest.raises(w.WireError):
            keys.encrypt(pk, 2**32, 1, b"x")
        with pytest.raises(w.WireError):
            keys.encrypt(pk, -1, 1, b"x")
    des = w.V3Keys("u", "SHA", "auth-pass-phrase", "DES", "priv-pass-phrase")
    with pytest.raises(w.DecryptError):
        des.decrypt(des.localized(ENGINE_A3)[1], 1, 1, bytes(8), b"x" * 15)


def test_no_deprecation_warning_from_cryptography():
    """Single-key TripleDES (8-octet key) is deprecated in cryptography 47+; usm gives 24 octets."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for priv in CIPHERS:
            keys = w.V3Keys("u", "SHA", "auth-pass-phrase", priv, "priv-pass-phrase")
            pk = keys.localized(ENGINE_A3)[1]
            c, s = keys.encrypt(pk, 1, 2, b"payload")
            assert keys.decrypt(pk, 1, 2, s, c)[:7] == b"payload"


def test_privacy_without_authentication_is_refused():
    with pytest.raises(ValueError, match="privacy needs authentication"):
        w.V3Keys("u", "none", None, "AES", "priv-pass-phrase")


def test_salt_counter_restarts_in_a_forked_child():
    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    r, wfd = os.pipe()
    nxt = usm.PRIV["AES"]._salt
    before = nxt._n
    pid = os.fork()
    if pid == 0:  # child: report the counter it starts from
        os.write(wfd, nxt._n.to_bytes(8, "big"))
        os._exit(0)
    os.close(wfd)
    child = int.from_bytes(os.read(r, 8), "big")
    os.close(r)
    os.waitpid(pid, 0)
    assert child != before


# ---------------------------------------------------------------------------
# pysnmp is no runtime dependency


def test_wanmon_imports_no_pysnmp_nor_pyasn1():
    code = ("import sys, wanmon.probes.snmp, wanmon.probes.snmpwire, wanmon.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pysnmp', 'pyasn1')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    for path in (REPO / "wanmon").rglob("*.py"):
        assert not re.search(r"^\s*(from|import)\s+(pysnmp|pyasn1)\b", path.read_text(), re.M), path


def test_pyproject_runtime_dependencies_are_ranges_without_pysnmp():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"]
    assert not [d for d in deps if d.lower().startswith("pysnmp")]
    assert not [d for d in deps if "==" in d], deps
    crypto = [d for d in deps if d.startswith("cryptography")]
    assert crypto and ">=" in crypto[0] and "<" in crypto[0].replace("<=", "<"), crypto
    test_pysnmp = [d for d in project["optional-dependencies"]["test"] if d.startswith("pysnmp")]
    assert test_pysnmp and "==" not in test_pysnmp[0], test_pysnmp
