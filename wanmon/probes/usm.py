"""SNMPv3 USM crypto: pass phrase to key, key localization and the privacy ciphers.

Built on `hashlib` and `cryptography` only (their documented APIs), so that
no SNMP library's internals sit on the poll's path:

* pass phrase to key: RFC 3414 A.2.1 (MD5) and A.2.2 (SHA-1); RFC 7860 4.2.2
  uses the same algorithm with SHA-224/256/384/512. Ku = H(the pass phrase
  repeated to 1 MB); this is the expensive step (about 1 to 3 ms), done once
  per credential set by `snmpwire.V3Keys`, never per message.
* key localization: Kul = H(Ku || snmpEngineID || Ku), done once per engine.
* DES-CBC (RFC 3414 8.1): key = Kul[0:8], pre-IV = Kul[8:16], salt =
  engineBoots (4 octets) || a 32-bit local counter, IV = pre-IV XOR salt.
  `cryptography` has no single DES; triple DES with K1 = K2 = K3 is single
  DES (EDE with one key: E_K(D_K(E_K(x))) = E_K(x)), so the 8-octet key is
  given three times over. That 24-octet form is the one `cryptography`
  (from 43 to at least 51) accepts without a deprecation warning.
* AES-128-CFB (RFC 3826): key = Kul[0:16], IV = engineBoots (4) ||
  engineTime (4) || a 64-bit local salt.
* AES-192/256-CFB as Cisco devices, net-snmp's AES-192-C/AES-256-C and
  pysnmp's usmAesCfb192Protocol/usmAesCfb256Protocol do them: the localized
  key is extended by the procedure of draft-reeder-snmpv3-usm-3desede
  section 2.1 (Kul += localize(password_to_key(Kul so far))) until it is
  long enough, then cut to 24 or 32 octets.

Tested in tests/test_usm.py against the RFC 3414 A.3 vectors, against
pysnmp's USM (a test-only dependency, an independent implementation) for
every hash and cipher, and against a real net-snmp snmpd for every auth and
privacy combination (tests/test_snmp_integration.py).
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # cryptography 43 to 46 have CFB only here (47 moved it and deprecated this name)
    from cryptography.hazmat.primitives.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers.modes import CBC

if TYPE_CHECKING:
    from hashlib import _Hash

HashFn = Callable[..., "_Hash"]  # a hashlib constructor: hashlib.md5, hashlib.sha256...

# auth protocol -> (hash constructor, MAC length in octets: RFC 3414 HMAC-96, RFC 7860 table 1)
AUTH: dict[str, tuple[HashFn, int]] = {
    "MD5": (hashlib.md5, 12),
    "SHA": (hashlib.sha1, 12),
    "SHA224": (hashlib.sha224, 16),
    "SHA256": (hashlib.sha256, 24),
    "SHA384": (hashlib.sha384, 32),
    "SHA512": (hashlib.sha512, 48),
}
_MEGABYTE = 1_048_576


class PrivError(ValueError):
    """Cipher text that cannot be decrypted (bad length, bad salt)."""


def password_to_key(password: bytes, hash_fn: HashFn) -> bytes:
    """Ku of RFC 3414 A.2: the hash of the password repeated to 1,048,576 octets.
    Kept for speed: one 1 MB buffer and one hash call give the RFC loop's digest
    (tests/test_usm.py) for 1.8 ms of CPU instead of 5.5 ms with SHA-1 (2.9 against
    5.0 with MD5) when the loop runs 16,384 updates of 64 octets as pysnmp's did,
    measured here (2 cores, Python 3.11) in Dec 2026. It counts with per-device keys:
    177 sites are 354 pass phrases per poll."""
    if not password:
        raise ValueError("an SNMPv3 pass phrase cannot be empty")
    reps = _MEGABYTE // len(password) + 1
    return hash_fn((password * reps)[:_MEGABYTE]).digest()


def localize(ku: bytes, engine_id: bytes, hash_fn: HashFn) -> bytes:
    """Kul of RFC 3414 A.2: H(Ku || snmpEngineID || Ku)."""
    return hash_fn(ku + engine_id + ku).digest()


def extend_reeder(kul: bytes, engine_id: bytes, hash_fn: HashFn, size: int) -> bytes:
    """Kul extended to `size` octets as draft-reeder-snmpv3-usm-3desede 2.1 (Cisco's
    AES-192/256): while too short, append localize(password_to_key(the key so far)).
    Same as net-snmp's netsnmp_extend_kul and pysnmp's AbstractAesReeder."""
    key = kul
    while len(key) < size:
        key += localize(password_to_key(key, hash_fn), engine_id, hash_fn)
    return key[:size]


def _u32(v: int, what: str) -> bytes:
    if not 0 <= v < 1 << 32:  # an agent's boots/time out of the 0..2^31-1 of RFC 3414
        raise PrivError(f"{what} {v} does not fit the 4 octets of the IV")
    return v.to_bytes(4, "big")


class Privacy(Protocol):
    """A privacy protocol (Des, Aes): what snmpwire.V3Keys uses."""

    name: str
    key_len: int  # octets of the localized privacy key it takes

    def encrypt(self, key: bytes, boots: int, time_s: int, plain: bytes) -> tuple[bytes, bytes]: ...

    def decrypt(self, key: bytes, boots: int, time_s: int, salt: bytes, cipher: bytes) -> bytes: ...


class _Counter:
    """A local salt counter that starts at random and wraps (RFC 3414 8.1.1.1, RFC 3826
    3.1.2.1). Restarted at random in a forked child, so two processes polling with the
    same key never send the same salt."""

    def __init__(self, bits: int):
        self._mask = (1 << bits) - 1
        self.reseed()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self._n = random.SystemRandom().getrandbits(self._mask.bit_length())

    def next(self) -> int:
        n = self._n
        self._n = (n + 1) & self._mask
        return n


class Des:
    """usmDESPrivProtocol, RFC 3414 8.1 (CBC-DES)."""

    name = "DES"
    key_len = 16  # 8 octets of key, 8 of pre-IV
    _salt = _Counter(32)

    def encrypt(self, key: bytes, boots: int, time_s: int, plain: bytes) -> tuple[bytes, bytes]:
        salt = _u32(boots, "engine boots") + self._salt.next().to_bytes(4, "big")
        pad = -len(plain) % 8  # 8.1.1.2: any pad value; the scoped PDU's own length ends it
        enc = self._cipher(key, salt).encryptor()
        return enc.update(plain + b"\x00" * pad) + enc.finalize(), salt

    def decrypt(self, key: bytes, boots: int, time_s: int, salt: bytes, cipher: bytes) -> bytes:
        if len(salt) != 8 or len(cipher) % 8:  # 8.3.2.1, 8.3.2.4
            raise PrivError("DES: the salt is not 8 octets or the cipher text not a multiple of 8")
        dec = self._cipher(key, salt).decryptor()
        return dec.update(cipher) + dec.finalize()

    @staticmethod
    def _cipher(key: bytes, salt: bytes) -> Cipher:
        iv = bytes(a ^ b for a, b in zip(key[8:16], salt))
        return Cipher(TripleDES(key[:8] * 3), CBC(iv))


class Aes:
    """usmAesCfb128Protocol (RFC 3826) and, with a longer key, the AES-192/256 variants."""

    _salt = _Counter(64)

    def __init__(self, name: str, key_len: int):
        self.name = name
        self.key_len = key_len

    def encrypt(self, key: bytes, boots: int, time_s: int, plain: bytes) -> tuple[bytes, bytes]:
        salt = self._salt.next().to_bytes(8, "big")
        enc = self._cipher(key, boots, time_s, salt).encryptor()
        return enc.update(plain) + enc.finalize(), salt

    def decrypt(self, key: bytes, boots: int, time_s: int, salt: bytes, cipher: bytes) -> bytes:
        if len(salt) != 8:  # 3.3.2.1
            raise PrivError("AES: the salt is not 8 octets")
        dec = self._cipher(key, boots, time_s, salt).decryptor()
        return dec.update(cipher) + dec.finalize()

    def _cipher(self, key: bytes, boots: int, time_s: int, salt: bytes) -> Cipher:
        iv = _u32(boots, "engine boots") + _u32(time_s, "engine time") + salt
        return Cipher(algorithms.AES(key[: self.key_len]), CFB(iv))


PRIV: dict[str, Privacy] = {
    "DES": Des(),
    "AES": Aes("AES", 16),
    "AES192": Aes("AES192", 24),
    "AES256": Aes("AES256", 32),
}


def priv_key(priv: str, ku: bytes, engine_id: bytes, hash_fn: HashFn) -> bytes:
    """The localized privacy key for a cipher: Kul from the privacy pass phrase's Ku
    (hashed with the auth protocol's hash, RFC 3414 / RFC 3826 / RFC 7860), cut to the
    cipher's length, extended first for AES-192/256."""
    kul = localize(ku, engine_id, hash_fn)
    size = PRIV[priv].key_len
    return extend_reeder(kul, engine_id, hash_fn, size) if size > len(kul) else kul[:size]
