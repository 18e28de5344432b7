"""Composing alert mails (pure): grouping per recipient, subjects, header safety, templates."""

from __future__ import annotations

import email
from email.policy import default

from conftest import MINIMAL, REPO
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
                     detail="device restarted (uptime was 12 d 3 h at the previous poll, now 2 min)"),
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
    assert "thời gian chạy 12 ngày 3 giờ ở lần hỏi trước, nay 2 phút" in noc.text
    guard = next(m for m in compose(cfg, _all_kinds(), 10_000.0, figures) if "guard" in m.kinds)
    assert "tuyến trên không trả lời" in guard.text and "(dc-core)" in guard.text


def test_an_english_mail_says_the_same_in_english(write_config):
    cfg = cfg_with(write_config, MINIMAL + '\n[page]\nlanguage = "en"\n')
    noc = next(m for m in compose(cfg, _all_kinds(), 10_000.0, {"tien-du-phat-tich": (401.0, 33.3)})
               if m.recipient == "noc@x.example")
    assert "after 2 h 5 min down" in noc.text and "RTT 401.0 ms ≥ 300.0 ms" in noc.text and "loss 33 % ≥ 10 %" in noc.text
    assert "uptime 12 d 3 h at the previous poll, now 2 min" in noc.text
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


# ---------------------------------------------------------------------------
# Mails written for their reader (issue 22): a district router down with its communes, through the
# engine as the cycle runs it (evaluate, then compose), on a clock the test sets.

GIA_BINH_COMMUNES = ["UBND xã Xuân Lai", "UBND xã Đông Cứu", "UBND xã Đại Bái", "UBND xã Dũng Liệt",
                     "UBND xã Âu Cơ", "UBND xã Ăn Thượng", "UBND xã An Bình", "UBND xã Bình Dương"]
CONTACT = "Trung tâm CNTT tỉnh: 0222 3 123 456"
DISTRICT_CONTACT = "Phòng VHTT huyện Gia Bình: 0222 3 671 000"
START = 1_796_614_260.0  # 07/12/2026 10:31 in Hà Nội
CYCLE = 60.0


def gia_binh_config(write_config, *, lang="vi", alerts="", url=None, district_contact=True, site_contact=None):
    text = f"""\
[store]
path = "var/wanmon.db"
[snmp]
enabled = false
[page]
language = "{lang}"
{f'url = "{url}"' if url else ""}
[alerts]
noc = ["noc@x.example"]
contact = "{CONTACT}"
{alerts}
{f'[alerts.district_contacts]{chr(10)}"Gia Bình" = "{DISTRICT_CONTACT}"' if district_contact else ""}

[[sites]]
id = "core"
name = "Trung tâm dữ liệu"
level = "province"
address = "127.0.0.1"
admins = ["core@x.example"]

[[sites]]
id = "gia-binh"
name = "UBND huyện Gia Bình"
level = "district"
district = "Gia Bình"
parent = "core"
address = "127.0.0.2"
admins = ["qt@giabinh.example"]
{f'contact = "{site_contact}"' if site_contact else ""}
"""
    for i, name in enumerate(GIA_BINH_COMMUNES):
        text += f"""
[[sites]]
id = "xa-{i}"
name = "{name}"
level = "commune"
district = "Gia Bình"
parent = "gia-binh"
address = "127.0.1.{i + 1}"
admins = ["xa{i}@giabinh.example"]
"""
    return load(write_config(text))


def outage(cfg, down_cycles: int = 4, up_cycles: int = 2):
    """One cycle all up, then the district router down (its communes unreachable) for down_cycles,
    then all up for up_cycles. Returns [(cycle time, mails of that cycle)]."""
    from wanmon.alerts.engine import evaluate

    parents = {s.id: s.parent for s in cfg.sites}
    up = {s.id: "up" for s in cfg.sites}
    cut = {**up, "gia-binh": "down", **{f"xa-{i}": "unreachable" for i in range(len(GIA_BINH_COMMUNES))}}
    states, guard, out = {}, False, []
    for k, statuses in enumerate([up] + [cut] * down_cycles + [up] * up_cycles):
        now = START + k * CYCLE
        states, notes, guard = evaluate(states, statuses, now, cfg.alerts, parents, guard_active=guard)
        out.append((now, compose(cfg, notes, now)))
    return out


def mail_to(cycles, rcpt: str, kind: str):
    found = [m for _, mails in cycles for m in mails if m.recipient == rcpt and kind in m.kinds]
    assert len(found) == 1, (rcpt, kind, [(m.recipient, m.kinds) for _, ms in cycles for m in ms])
    return found[0]


def hanoi(ts: float, lang: str = "vi") -> str:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(ts, ZoneInfo("Asia/Ho_Chi_Minh")).strftime(
        "%d/%m/%Y %H:%M" if lang == "vi" else "%Y-%m-%d %H:%M")


def listed(text: str) -> list[str]:
    """The names of a mail's '    - name (id)' lines, in order."""
    import re

    return re.findall(r"^    - (.+) \([a-z0-9-]+\)$", text, re.M)


def test_a_commune_admin_is_told_which_upstream_site_since_when_and_that_nothing_is_to_be_done(write_config):
    cfg = gia_binh_config(write_config)
    cycles = outage(cfg)
    down_from = START + CYCLE                      # the first cycle without an answer
    for i, name in enumerate(GIA_BINH_COMMUNES):
        m = mail_to(cycles, f"xa{i}@giabinh.example", "unreachable")
        assert m.kinds == ("unreachable",)
        for body in (m.text, m.html):
            assert f"Nguyên nhân: tuyến trên UBND huyện Gia Bình (gia-binh) mất kết nối từ {hanoi(down_from)}" in body
            assert "Không cần xử lý tại đơn vị" in body
            assert DISTRICT_CONTACT in body          # whom to call: the district's contact
        lines = m.text.splitlines()
        head = next(k for k, ln in enumerate(lines) if name in ln)
        assert lines[head + 1].strip().startswith("Nguyên nhân:"), m.text   # the cause right under the site
        assert "Kiểm tra nguồn điện" not in m.text   # nothing to check at the commune


def test_the_same_in_english(write_config):
    cfg = gia_binh_config(write_config, lang="en")
    cycles = outage(cfg)
    m = mail_to(cycles, "xa1@giabinh.example", "unreachable")
    assert (f"Cause: the upstream site UBND huyện Gia Bình (gia-binh), down since {hanoi(START + CYCLE, 'en')}"
            in m.text)
    assert "Nothing to be done at your site" in m.text and DISTRICT_CONTACT in m.text
    assert "Nguyên nhân" not in m.text and "Không cần" not in m.text


def test_a_recovery_says_when_it_came_back_and_how_long_it_was_out(write_config):
    cfg = gia_binh_config(write_config)
    cycles = outage(cfg, down_cycles=7, up_cycles=2)
    began, back = START + CYCLE, START + 8 * CYCLE          # the first silent cycle, the first answer
    district = mail_to(cycles, "qt@giabinh.example", "recovery")
    assert (f"ĐÃ KẾT NỐI LẠI: UBND huyện Gia Bình (gia-binh), lúc {hanoi(back)}, sau 7 phút mất kết nối "
            f"(từ {hanoi(began)})") in district.text
    commune = mail_to(cycles, "xa1@giabinh.example", "recovery")
    assert f"lúc {hanoi(back)}, sau 7 phút không tới được do tuyến trên (từ {hanoi(began)})" in commune.text
    assert "Nguyên nhân: tuyến trên UBND huyện Gia Bình (gia-binh) mất kết nối" in commune.text
    assert mail_to(cycles, "qt@giabinh.example", "recovery").created_ts == back + CYCLE  # recover_cycles = 2


def test_the_nocs_recovery_is_grouped_by_root_cause_like_its_down(write_config):
    cfg = gia_binh_config(write_config)
    cycles = outage(cfg)
    down, rec = mail_to(cycles, "noc@x.example", "down"), mail_to(cycles, "noc@x.example", "recovery")
    assert down.notes == (("gia-binh", "down"),) and rec.notes == (("gia-binh", "recovery"),)
    assert rec.subject == "[wanmon] 1 điểm đã kết nối lại: UBND huyện Gia Bình"
    assert listed(down.text) == listed(rec.text) and sorted(listed(rec.text)) == sorted(GIA_BINH_COMMUNES)
    assert f"Cùng kết nối lại ({len(GIA_BINH_COMMUNES)}):" in rec.text
    assert "mất kết nối" not in rec.text.split("Cùng kết nối lại")[1]   # the communes were not down
    # each commune's recovery goes to its own admins, with the district as its cause
    assert not any(m.recipient == "noc@x.example" for _, ms in cycles for m in ms if ("xa-1", "recovery") in m.notes)


def test_lists_follow_vietnamese_alphabetical_order(write_config):
    from conftest import vi_letters
    from wanmon.collate import in_order

    cycles = outage(gia_binh_config(write_config))
    down = mail_to(cycles, "noc@x.example", "down")
    names = listed(down.text)
    assert [vi_letters(n) for n in names] == sorted(vi_letters(n) for n in names), names
    # Đ after D (not after X), Ă and Â after A (not after X)
    assert names.index("UBND xã Dũng Liệt") < names.index("UBND xã Đại Bái") < names.index("UBND xã Đông Cứu") \
        < names.index("UBND xã Xuân Lai")
    assert names.index("UBND xã An Bình") < names.index("UBND xã Ăn Thượng") < names.index("UBND xã Âu Cơ") \
        < names.index("UBND xã Bình Dương")
    # the collation on every shipped name: the tests' own alphabet agrees with it
    shipped = [s.name for s in load(REPO / "sites.toml", secrets=False).sites]
    ordered = in_order(shipped)
    assert [vi_letters(n) for n in ordered] == sorted(vi_letters(n) for n in shipped)
    # a mail about several sites lists them in the same order, its subject too
    each_down = [Notification("down", f"xa-{i}", START, "down", since=START) for i in range(len(GIA_BINH_COMMUNES))]
    noc = next(m for m in compose(gia_binh_config(write_config), each_down, START) if m.recipient == "noc@x.example")
    assert noc.subject == "[wanmon] 8 điểm mất kết nối: UBND xã An Bình, UBND xã Ăn Thượng, UBND xã Âu Cơ, …"
    heads = [ln.split(": ", 1)[1].split(" (")[0] for ln in noc.text.splitlines() if ln.startswith("* ")]
    assert heads == in_order(GIA_BINH_COMMUNES)
    assert [vi_letters(n) for n in heads] == sorted(vi_letters(n) for n in heads)


def test_whom_to_call_the_sites_own_contact_then_its_districts_then_alerts_contact(write_config):
    own = "Trực ban Sở TT&TT: 0222 3 800 800"
    cycles = outage(gia_binh_config(write_config, site_contact=own))
    district = mail_to(cycles, "qt@giabinh.example", "down")
    assert "Kiểm tra nguồn điện và thiết bị mạng" in district.text and own in district.text   # its own contact
    assert DISTRICT_CONTACT not in district.text and CONTACT not in district.text
    assert DISTRICT_CONTACT in mail_to(cycles, "xa0@giabinh.example", "unreachable").text     # the district's
    cycles = outage(gia_binh_config(write_config, district_contact=False))
    for rcpt, kind in (("qt@giabinh.example", "down"), ("xa0@giabinh.example", "unreachable")):
        assert CONTACT in mail_to(cycles, rcpt, kind).text                                    # [alerts] contact
    # the NOC is the one they call: it gets whom to call at the site instead
    noc = mail_to(cycles, "noc@x.example", "down")
    assert "Liên hệ quản trị tại điểm: qt@giabinh.example." in noc.text and CONTACT not in noc.text


def test_without_any_contact_the_mail_still_says_whom_to_call(write_config):
    cfg = cfg_with(write_config)
    assert cfg.alerts.contact is None
    (m,) = [m for m in compose(cfg, [Notification("down", "tien-du", 100.0, "down", since=40.0)], 100.0)
            if m.recipient == "quantri@tiendu.example"]
    assert "báo cho bộ phận quản trị mạng của tỉnh" in m.text


def test_the_page_link_or_for_the_noc_where_to_set_it(write_config):
    url = "https://giamsat.bacninh.example/wan/"
    cycles = outage(gia_binh_config(write_config, url=url))
    for rcpt, kind in (("noc@x.example", "down"), ("xa0@giabinh.example", "unreachable")):
        m = mail_to(cycles, rcpt, kind)
        assert f"Trang tình trạng: {url}" in m.text and f'<a href="{url}">' in m.html
        assert "[page] url" not in m.text
    cycles = outage(gia_binh_config(write_config))
    assert "đặt [page] url trong sites.toml" in mail_to(cycles, "noc@x.example", "down").text  # the NOC can set it
    commune = mail_to(cycles, "xa0@giabinh.example", "unreachable")
    assert "[page] url" not in commune.text and "Trang tình trạng" not in commune.text      # nothing to do with it
