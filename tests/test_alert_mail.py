"""Composing alert mails (pure): grouping per recipient, subjects, header safety, templates."""

from __future__ import annotations

import email
from email.policy import default

from conftest import MINIMAL
from wanmon.alerts.engine import Notification
from wanmon.alerts.mail import compose, header_safe
from wanmon.config import load
from wanmon.mailer import build

SMTP = '\n[smtp]\nhost = "127.0.0.1"\nport = 2525\nfrom = "wanmon@x.example"\n[alerts]\nnoc = ["noc@x.example"]\n'


def cfg_with(write_config, text=MINIMAL):
    return load(write_config(text + SMTP))


def test_one_mail_per_recipient_grouping_all_events(write_config):
    cfg = cfg_with(write_config)
    notes = [Notification("down", "tien-du", 100.0, "down", since=40.0, children=("tien-du-phat-tich",)),
             Notification("unreachable", "tien-du-phat-tich", 100.0, "unreachable"),
             Notification("recovery", "dc-core", 100.0, "up")]
    mails = {m.recipient: m for m in compose(cfg, notes, 100.0)}
    assert set(mails) == {"quantri@tiendu.example", "quantri@phattich.tiendu.example", "noc@ttdl.example",
                          "noc@x.example"}
    noc = mails["noc@x.example"]
    assert noc.kinds == ("down", "recovery")  # the commune's UNREACHABLE goes to its admins only
    assert noc.subject.startswith("[wanmon] 1 điểm mất kết nối, 1 điểm đã kết nối lại: UBND huyện Tiên Du")
    assert "UBND xã Phật Tích" in noc.text and "UBND xã Phật Tích" in noc.html  # the district mail lists its communes
    assert mails["quantri@phattich.tiendu.example"].kinds == ("unreachable",)
    assert len({m.message_id for m in mails.values()}) == 4


def test_english(write_config):
    cfg = cfg_with(write_config, MINIMAL + '\n[page]\nlanguage = "en"\n')
    (m, *_) = compose(cfg, [Notification("down", "tien-du", 100.0, "down", since=40.0)], 100.0)
    assert m.subject == "[wanmon] 1 site down: UBND huyện Tiên Du"


def test_hostile_names_add_no_header(write_config):
    evil = 'X\\r\\nBcc: evil@x.example =?utf-8?q?a=0D=0ABcc:_evil@x.example?= <script>'
    cfg = cfg_with(write_config, MINIMAL.replace('name = "UBND huyện Tiên Du"', f'name = "{evil}"'))
    mails = compose(cfg, [Notification("down", "tien-du", 100.0, "down")], 100.0)
    for m in mails:
        assert "\r" not in m.subject and "\n" not in m.subject and "=?" not in m.subject
        row = {"recipient": m.recipient, "subject": m.subject, "created_ts": 100.0, "message_id": m.message_id,
               "body_text": m.text, "body_html": m.html}
        raw = build(row, cfg.smtp).as_bytes()
        parsed = email.message_from_bytes(raw, policy=default)
        assert parsed["Bcc"] is None and parsed.get_all("To") == [m.recipient]
        assert "&lt;script&gt;" in m.html and "<script>" not in m.html
    assert header_safe("a\r\nb\x00c\u2028d") == "a b c d"
