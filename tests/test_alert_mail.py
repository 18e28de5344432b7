"""Composing alert mails (pure): grouping per recipient, subjects, header safety, templates."""

from __future__ import annotations

import email
from email.policy import default

from conftest import MINIMAL
from wanmon.alerts.mail import compose, header_safe
from wanmon.config import load
from wanmon.mailer import build
from wanmon.model import Notification

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


def _all_kinds() -> list[Notification]:
    return [
        Notification("down", "tien-du", 10_000.0, "down", since=2_500.0, children=("tien-du-phat-tich",)),
        Notification("recovery", "dc-core", 10_000.0, "up", since=10_000.0 - 7_500.0, detail="was down"),
        Notification("degraded", "tien-du-phat-tich", 10_000.0, "degraded", since=9_000.0),
        Notification("flap_start", "dc-core", 10_000.0, "down", detail="37% state change", value=37.4),
        Notification("flap_end", "tien-du", 10_000.0, "up", detail="3% state change", value=3.0),
        Notification("reboot", "tien-du", 10_000.0, uptimes=(12 * 86400 + 3 * 3600 + 4 * 60 + 7.0, 150.0),
                     detail="device restarted (uptime was 12d 03:04:07 at the previous poll, now 00:02:30)"),
        Notification("guard", None, 10_000.0, detail="1 of 1 upstream site(s) not answering (dc-core); ...",
                     children=("dc-core",), counts=(1, 1, 3, 3, 1)),
        Notification("guard_end", None, 10_000.0, detail="...", counts=(0, 1, 0, 3, 0)),
    ]


ENGLISH_FROM_THE_ENGINE = ["was down", "state change", "upstream site", "sites failing", "root cause",
                           "uptime was", "device restarted", "previous poll"]


def test_a_vietnamese_mail_is_vietnamese_throughout_with_durations_figures_and_thresholds(write_config):
    cfg = cfg_with(write_config)
    figures = {"tien-du-phat-tich": (401.0, 33.3)}
    for m in compose(cfg, _all_kinds(), 10_000.0, figures):
        for body in (m.text, m.html):
            for words in ENGLISH_FROM_THE_ENGINE:
                assert words not in body, (m.recipient, words, body)
    noc = next(m for m in compose(cfg, _all_kinds(), 10_000.0, figures) if m.recipient == "noc@x.example")
    assert "sau 2 giờ 5 phút mất kết nối" in noc.text                        # the recovery's outage, 7,500 s
    assert "độ trễ 401,0 ms ≥ 300,0 ms" in noc.text and "mất gói 33 % ≥ 10 %" in noc.text
    assert "37 % thay đổi trạng thái" in noc.text
    assert "thời gian chạy 12 ngày 03:04 ở lần hỏi trước, nay 00:02" in noc.text
    guard = next(m for m in compose(cfg, _all_kinds(), 10_000.0, figures) if "guard" in m.kinds)
    assert "tuyến trên không trả lời" in guard.text and "(dc-core)" in guard.text


def test_an_english_mail_says_the_same_in_english(write_config):
    cfg = cfg_with(write_config, MINIMAL + '\n[page]\nlanguage = "en"\n')
    noc = next(m for m in compose(cfg, _all_kinds(), 10_000.0, {"tien-du-phat-tich": (401.0, 33.3)})
               if m.recipient == "noc@x.example")
    assert "after 2 h 5 min down" in noc.text and "RTT 401.0 ms ≥ 300.0 ms" in noc.text and "loss 33 % ≥ 10 %" in noc.text
    assert "uptime 12 d 03:04 at the previous poll, now 00:02" in noc.text
    assert "mất kết nối" not in noc.text and "thay đổi" not in noc.text


def test_the_html_part_has_lang_head_title_and_links_the_page_only_with_its_url(write_config):
    from html.parser import HTMLParser

    class Tags(HTMLParser):
        def __init__(self):
            super().__init__()
            self.seen, self.lang, self.title, self._in_title, self.hrefs = [], None, "", False, []

        def handle_starttag(self, tag, attrs):
            self.seen.append(tag)
            a = dict(attrs)
            if tag == "html":
                self.lang = a.get("lang")
            if tag == "a":
                self.hrefs.append(a.get("href"))
            self._in_title = tag == "title"

        def handle_endtag(self, tag):
            self._in_title = False

        def handle_data(self, data):
            if self._in_title:
                self.title += data

    cfg = cfg_with(write_config)
    for m in compose(cfg, _all_kinds(), 10_000.0):
        t = Tags()
        t.feed(m.html)
        assert t.lang == "vi" and "head" in t.seen and t.title == m.subject and t.hrefs == []
        assert "index.html" not in m.text + m.html and "/public" not in m.text + m.html   # no server path
    url = "https://giamsat.bacninh.example/wan/"
    cfg = cfg_with(write_config, MINIMAL + f'\n[page]\nurl = "{url}"\n')
    for m in compose(cfg, _all_kinds(), 10_000.0):
        t = Tags()
        t.feed(m.html)
        assert t.hrefs == [url] and url in m.text
