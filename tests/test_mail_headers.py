"""Mail subjects survive every decoder (issue 11): every shipped site name x every kind x both
languages, sent through a real SMTP server (aiosmtpd) and decoded by two independent RFC 2047
decoders, Python's email package and Nodemailer's libmime (npm, tests/node), must give back
the intended subject exactly; encoded words at most 75 characters, lines at most 76."""

from __future__ import annotations

import email
import email.parser
import json
import re
import shutil
import smtplib
import subprocess
from email.policy import default
from pathlib import Path

import prereq

from smtp_server import SMTPServer
from wanmon.alerts.mail import KIND_ORDER, subject
from wanmon.config import load
from wanmon.mailer import EncodedSubject, build
from wanmon.model import Notification

REPO = Path(__file__).resolve().parents[1]
NODE_DIR = REPO / "tests" / "node"
need_node = prereq.needs(shutil.which("node") is not None and (NODE_DIR / "node_modules" / "libmime").is_dir(),
                         "node and tests/node's packages", prereq.NODE)


class _Spec:
    class settings:  # noqa: N801 (the shape mailer.build reads)
        from_ = "wanmon@x.example"


def _subjects() -> list[tuple[str, str, str]]:
    """(language, kind, intended subject) for every shipped name and kind, one site per mail,
    and for groups of three names (the comma list and its ellipsis)."""
    cfg = load(REPO / "sites.toml", secrets=False)
    names = {s.id: s.name for s in cfg.sites}
    ids = list(names)
    out = []
    for lang in ("vi", "en"):
        for kind in KIND_ORDER:
            if kind.startswith("guard"):
                out.append((lang, kind, subject(lang, [Notification(kind, None, 0.0)], names)))
                continue
            for sid in ids:
                out.append((lang, kind, subject(lang, [Notification(kind, sid, 0.0)], names)))
            for k in range(0, len(ids) - 3, 7):
                notes = [Notification(kind, sid, 0.0) for sid in ids[k:k + 4]]
                out.append((lang, kind, subject(lang, notes, names)))
    return out


def _raw_subject(raw: bytes) -> str:
    """The Subject header's value as on the wire, unfolded (CRLF removed, folding space kept)."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    m = re.search(r"^Subject: (.*?)\r\n(?![ \t])", head + "\r\n", re.S | re.M)
    assert m, head
    return m.group(1)


def _lines(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    start = head.index("Subject: ")
    block = re.match(r"Subject: .*?(?=\r\n(?![ \t])|$)", head[start:], re.S).group(0)
    return block.split("\r\n")


@need_node
def test_every_subject_decodes_exactly_with_two_decoders_after_a_real_smtp_server():
    cases = _subjects()
    assert len(cases) > 3000
    # One message as wanmon builds it; each case swaps in its own Subject (an EncodedSubject, as
    # build() sets it), To and Message-ID: building 3,000 whole messages cost ~11 s.
    msg = build({"recipient": "r@x.example", "subject": "x", "created_ts": 0.0, "message_id": "<t@x.example>",
                 "body_text": "t", "body_html": "<p>t</p>"}, _Spec)
    assert isinstance(msg["Subject"], EncodedSubject)
    with SMTPServer() as srv:
        with smtplib.SMTP(srv.host, srv.port, timeout=30) as conn:
            for i, (_, _, subj) in enumerate(cases):
                msg.replace_header("Subject", EncodedSubject(subj))
                msg.replace_header("To", f"r{i}@x.example")
                msg.replace_header("Message-ID", f"<t{i}@x.example>")
                conn.send_message(msg, to_addrs=[f"r{i}@x.example"])
        got = {m.rcpt_tos[0]: m.raw for m in srv.snapshot()}
    assert len(got) == len(cases)
    raws = [got[f"r{i}@x.example"] for i in range(len(cases))]

    heads = email.parser.BytesHeaderParser(policy=default)  # Python's decoder, on the header block
    py = [str(heads.parsebytes(r)["Subject"]) for r in raws]
    wire = [_raw_subject(r.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")) for r in raws]
    cp = subprocess.run(["node", str(NODE_DIR / "decode_headers.js")], input=json.dumps(wire), capture_output=True,
                        text=True, timeout=120, cwd=NODE_DIR)
    assert cp.returncode == 0, cp.stderr
    js = json.loads(cp.stdout)

    bad = [(lang, kind, want, a, b) for (lang, kind, want), a, b in zip(cases, py, js) if not want == a == b]
    assert bad == [], f"{len(bad)} of {len(cases)} subjects decoded wrong, e.g. {bad[:3]}"
    for r in raws:
        lines = _lines(r.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n"))
        assert max(len(ln) for ln in lines) <= 78, lines
        for word in re.findall(r"=\?[^?]+\?[bBqQ]\?[^?]*\?=", "".join(lines)):
            assert len(word) <= 75, word
        if any("=?" in ln for ln in lines):
            assert max(len(ln) for ln in lines) <= 76, lines
