"""The words of the status page and of the alert mails, Vietnamese and English, in one place.

PAGE is the page's text, MAIL the mails'; what both say about a problem (its cause,
its figures against the thresholds, how long it lasted) comes from the functions at
the end, so a mail and the page never word the same outage two ways. Fmt formats
numbers, times and durations in a language and a time zone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import NotRequired, TypedDict

PAGE = {
    "vi": {
        "title": "Tình trạng mạng WAN tỉnh {province}",
        "description": "Tình trạng kết nối của {n} điểm mạng WAN tỉnh {province}: sự cố hiện tại, tỷ lệ sẵn sàng "
        "theo cấp, {group} và điểm, sự cố 30 ngày qua.",
        "last_cycle": "Lần kiểm tra gần nhất",
        "ago": "cách đây {age}",
        "never": "chưa có dữ liệu",
        "interval": "kiểm tra mỗi {n}\u00a0giây",
        "stale_tag": "dữ liệu cũ",
        "stale": "Dữ liệu đã cũ: lần kiểm tra gần nhất cách đây {age}. Máy giám sát có thể đã ngừng kiểm tra.",
        "no_data": "Chưa có lần kiểm tra nào: hãy chạy `wanmon check`.",
        "summary": "Tổng quan",
        "availability": "Tỷ lệ sẵn sàng theo cấp",
        "up": "Hoạt động",
        "degraded": "Suy giảm",
        "down": "Mất kết nối",
        "unreachable": "Không tới được",
        "unknown": "Chưa rõ",
        "district_section": "{name}",
        "sites": "điểm",
        "site": "Điểm kết nối",
        "status": "Trạng thái",
        "rtt": "Độ trễ",
        "loss": "Mất gói",
        "latency24": "Độ trễ 24\u00a0giờ",
        "uptime": "Sẵn sàng",
        "since": "từ",
        "down_since": "Mất kết nối từ",
        "last_change": "Ở trạng thái này từ",
        "unreachable_because": "Không tới được vì tuyến trên ({parent}) mất kết nối",
        "device_uptime": "Thiết bị chạy",
        "last_reboot": "khởi động lại",
        "uplink": "Đường lên",
        "incidents": "Sự cố 30 ngày qua",
        "no_incidents": "Không có sự cố nào trong 30 ngày qua.",
        "reports": "Báo cáo tỷ lệ sẵn sàng",
        "agents_title": "Các máy giám sát",
        "role_primary": "chính",
        "role_standby": "dự phòng",
        "agent_fresh": "hoạt động (nhịp cách đây {age})",
        "agent_stale": "ngừng báo từ {when}",
        "disagree_title": "Các máy giám sát thấy khác nhau (lỗi đường đi, không phải sự cố của điểm):",
        "no_incidents_influx": "Trang này dựng từ InfluxDB: danh sách sự cố chỉ có trên trang của từng máy giám sát.",
        "now_title": "Sự cố hiện tại",
        "quiet_title": "Cần để ý (SNMP)",
        "partial": "{n}/{m} {what} có sự cố",
        "start": "Bắt đầu",
        "end": "Kết thúc",
        "duration": "Thời lượng",
        "first_seen": "từ lần đầu ghi nhận lúc {when}",
        "at_least": "ít nhất {d}",
        "impact": "Ảnh hưởng",
        "more_incidents": "… và {n} sự cố cũ hơn (trong status.json).",
        "status_all": "Mọi trạng thái",
        "refresh_note": "Trang tự cập nhật mỗi {n}\u00a0giây.",
        "show_list": "danh sách",
        "healthy_n": "{n} điểm hoạt động bình thường",
        "cut_n": "{n} điểm không tới được do tuyến trên mất kết nối",
        "filter": "Tìm theo tên, mã, {group}…",
        "no_match": "Không tìm thấy điểm nào khớp với \u201c{q}\u201d.",
        "no_match_filters": "Không có điểm nào khớp với bộ lọc đã chọn.",
        "w_24h": "24\u00a0giờ",
        "w_7d": "7\u00a0ngày",
        "w_30d": "30\u00a0ngày",
        "only_problems": "Chỉ hiện điểm có sự cố",
        "gap": "không có dữ liệu",
        "definition": "Tỷ lệ sẵn sàng = thời gian kết nối được / thời gian có quan sát; "
        "khoảng thời gian không có quan sát (máy giám sát không kiểm tra) không tính là mất kết nối.",
        "level": "Cấp",
        "window": "Khoảng",
        "generated": "Tạo lúc",
        "assumption": "",
        "when": "Thời điểm",
        "change": "Thay đổi",
        "mail_failed": "{n} thư cảnh báo không gửi được (7 ngày qua): xem `wanmon alerts`.",
        "output_failing": "Đầu ra \u201c{output}\u201d lỗi từ {since} ({failures} lần liên tiếp): {error}",
        "skipped_points": "Bỏ qua {n} điểm dữ liệu từ InfluxDB không đọc được: {why}.",
        "store_damaged": "Kho dữ liệu của wanmon bị hỏng (phát hiện lúc {when}): không ghi thêm dữ liệu cho đến khi "
        "khôi phục từ bản sao lưu. Trang này có thể đã cũ.",
        "mail_retrying": "{n} thư cảnh báo đang chờ gửi lại (máy chủ thư chưa nhận).",
        "before": "trước {when}: {what}",
        "uplink_was": "tuyến trên {name}",
        "retired_n": "{n} điểm đã ngừng phục vụ trong 30 ngày qua",
        "upcoming_n": "{n} điểm sẽ vào phục vụ, sớm nhất từ {when}",
        "out_of_service": "không tính là mất kết nối, không có trong danh sách",
        "levels_since": "Các cấp từ {when}:",
        "level_was": "{now} (trước đó: {was})",
    },
    "en": {
        "title": "{province} provincial WAN status",
        "description": "Connection status of the {n} sites of the {province} provincial WAN: problems now, "
        "availability by level, {group} and site, incidents of the last 30 days.",
        "last_cycle": "Last check",
        "ago": "{age} ago",
        "never": "no data yet",
        "interval": "checked every {n}\u00a0s",
        "stale_tag": "stale data",
        "stale": "Data is stale: the last check was {age} ago. The monitoring agent may have stopped.",
        "no_data": "No check has run yet: run `wanmon check`.",
        "summary": "Summary",
        "availability": "Availability by level",
        "up": "Up",
        "degraded": "Degraded",
        "down": "Down",
        "unreachable": "Unreachable",
        "unknown": "Unknown",
        "district_section": "{name}",
        "sites": "sites",
        "sites_one": "site",
        "site": "Site",
        "status": "Status",
        "rtt": "RTT",
        "loss": "Loss",
        "latency24": "Latency, 24\u00a0h",
        "uptime": "Availability",
        "since": "since",
        "down_since": "Down since",
        "last_change": "In this state since",
        "unreachable_because": "Unreachable because its uplink ({parent}) is down",
        "device_uptime": "Device up",
        "last_reboot": "rebooted",
        "uplink": "Uplink",
        "incidents": "Incidents, last 30 days",
        "no_incidents": "No incident in the last 30 days.",
        "reports": "Availability reports",
        "agents_title": "Monitoring agents",
        "role_primary": "primary",
        "role_standby": "standby",
        "agent_fresh": "running (heartbeat {age} ago)",
        "agent_stale": "silent since {when}",
        "disagree_title": "Agents that disagree (a path problem, not a site outage):",
        "no_incidents_influx": "This page is built from InfluxDB: the incident list is on each agent's own page.",
        "now_title": "Problems now",
        "quiet_title": "Worth a look (SNMP)",
        "partial": "{n} of {m} {what} with problems",
        "start": "Start",
        "end": "End",
        "duration": "Duration",
        "first_seen": "since first seen at {when}",
        "at_least": "at least {d}",
        "impact": "Impact",
        "more_incidents": "… and {n} older incidents (in status.json).",
        "more_incidents_one": "… and {n} older incident (in status.json).",
        "status_all": "All statuses",
        "refresh_note": "This page updates itself every {n}\u00a0s.",
        "show_list": "list",
        "healthy_n": "{n} sites up",
        "healthy_n_one": "{n} site up",
        "cut_n": "{n} sites unreachable because their uplink is down",
        "cut_n_one": "{n} site unreachable because its uplink is down",
        "filter": "Search by name, id, {group}…",
        "no_match": "No site matches \u201c{q}\u201d.",
        "no_match_filters": "No site matches the chosen filters.",
        "w_24h": "24\u00a0h",
        "w_7d": "7\u00a0days",
        "w_30d": "30\u00a0days",
        "only_problems": "Only sites with problems",
        "gap": "no data",
        "definition": "Availability = time reachable / time observed; periods with no "
        "observation (agent not running) are gaps, not downtime.",
        "level": "Level",
        "window": "Window",
        "generated": "Generated",
        "assumption": "",
        "when": "When",
        "change": "Change",
        "mail_failed": "{n} alert emails could not be sent (last 7 days): see `wanmon alerts`.",
        "mail_failed_one": "{n} alert email could not be sent (last 7 days): see `wanmon alerts`.",
        "output_failing": "Output \u201c{output}\u201d failing since {since} ({failures} in a row): {error}",
        "skipped_points": "{n} points from InfluxDB skipped, they cannot be read: {why}.",
        "skipped_points_one": "{n} point from InfluxDB skipped, it cannot be read: {why}.",
        "store_damaged": "wanmon's store is damaged (found at {when}): nothing is recorded until it is restored "
        "from a backup. This page may be out of date.",
        "mail_retrying": "{n} alert emails waiting to be sent again (the mail server has not taken them yet).",
        "mail_retrying_one": "{n} alert email waiting to be sent again (the mail server has not taken it yet).",
        "before": "before {when}: {what}",
        "uplink_was": "uplink {name}",
        "retired_n": "{n} sites left service in the last 30 days",
        "retired_n_one": "{n} site left service in the last 30 days",
        "upcoming_n": "{n} sites enter service, the first from {when}",
        "upcoming_n_one": "{n} site enters service from {when}",
        "out_of_service": "not counted as down, not listed",
        "levels_since": "Levels since {when}:",
        "level_was": "{now} (before: {was})",
    },
}


# -- the three levels' names ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LevelName:
    """A level's shown words in one language. name: the level (the page's level summary, a
    site's note); noun, nouns: one of its units, several ("1 xã", "14 xã"; "1 commune",
    "14 communes"); heading: what heads a list of its units (the province's section on the page,
    the district column of the incidents)."""

    name: str
    noun: str
    nouns: str
    heading: str

    def count(self, n: int) -> str:
        return self.noun if n == 1 else self.nouns


# wanmon's own words for the 2023 tree (province -> district -> commune); [page.level_names]
# changes them, from an instant if dated (level_names)
LEVEL_NAMES: dict[str, dict[str, LevelName]] = {
    "vi": {
        "province": LevelName("Cơ quan cấp tỉnh", "cơ quan", "cơ quan", "Sở, ban, ngành và Trung tâm dữ liệu tỉnh"),
        "district": LevelName("UBND cấp huyện", "huyện", "huyện", "Huyện"),
        "commune": LevelName("UBND cấp xã", "xã", "xã", "Xã"),
    },
    "en": {
        "province": LevelName("Provincial agencies", "agency", "agencies", "Provincial agencies and data centre"),
        "district": LevelName("District People's Committees", "district", "districts", "District"),
        "commune": LevelName("Commune People's Committees", "commune", "communes", "Commune"),
    },
}

# The words `wanmon regroup --at` writes for the tree after the district tier ends (2025-07-01):
# the "district" level holds the new commune-level units (their seats), the "commune" level the
# connection points inside them, the "province" level also the former districts' own sites.
AFTER_DISTRICT_TIER: dict[str, dict[str, LevelName]] = {
    "vi": {
        "province": LevelName(
            "Cấp tỉnh (gồm điểm cấp huyện cũ)",
            "điểm",
            "điểm",
            "Sở, ban, ngành, Trung tâm dữ liệu tỉnh và điểm cấp huyện cũ",
        ),
        "district": LevelName("UBND xã, phường (cấp xã mới)", "xã/phường", "xã/phường", "Xã/phường"),
        "commune": LevelName("Điểm cầu (xã, phường cũ)", "điểm cầu", "điểm cầu", "Điểm cầu"),
    },
    "en": {
        "province": LevelName(
            "Province level (with the former district sites)",
            "site",
            "sites",
            "Provincial agencies, data centre and former district sites",
        ),
        "district": LevelName(
            "Commune-level units (communes, wards)", "commune-level unit", "commune-level units", "Unit"
        ),
        "commune": LevelName(
            "Connection points (former communes)", "connection point", "connection points", "Connection point"
        ),
    },
}


def _given(base: LevelName, entry) -> LevelName:
    """base with the words a [page.level_names] entry gives (config.LevelNameSetting): a noun
    without its plural is its own plural (Vietnamese; validate asks English for nouns)."""
    if entry is None:
        return base
    return LevelName(
        entry.name or base.name,
        entry.noun or base.noun,
        entry.nouns or entry.noun or base.nouns,
        entry.heading or base.heading,
    )


def level_names(cfg, ts: float, language: str, *, before: bool = False) -> dict[str, LevelName]:
    """The three levels' words in `language` ("vi", "en") at ts (POSIX seconds), {level key:
    LevelName}: wanmon's (LEVEL_NAMES), then cfg's [page.level_names], then its changes whose
    instant is at or before ts (before=True: strictly before ts, the words a change replaced)."""
    settings = cfg.page.level_names
    out = dict(LEVEL_NAMES[language])
    layers = [
        settings,
        *(ch for ch in settings.changes if (ch.at.timestamp() < ts if before else ch.at.timestamp() <= ts)),
    ]
    for layer in layers:
        words = getattr(layer, language)
        if words is not None:
            for level in out:  # the level keys of the file (config.LEVELS), for life
                out[level] = _given(out[level], getattr(words, level))
    return out


def counted(words: Mapping[str, str], key: str, by: str = "n", **values: object) -> str:
    """words[key] formatted with values, in English's singular (words[key + "_one"]) when the
    count values[by] is 1: "1 site up", "2 sites up" (Vietnamese has one form)."""
    text = words.get(f"{key}_one", words[key]) if values[by] == 1 else words[key]
    return text.format(**values)


MAIL = {
    "vi": {
        "down": "mất kết nối",
        "unreachable": "không tới được do tuyến trên",
        "degraded": "suy giảm",
        "recovery": "đã kết nối lại",
        "reminder": "vẫn mất kết nối",
        "flap_start": "chập chờn",
        "flap_end": "hết chập chờn",
        "reboot": "thiết bị khởi động lại",
        "guard": "máy giám sát có thể bị cô lập",
        "guard_end": "máy giám sát đã kết nối lại",
        "site": "điểm",
        "since": "từ",
        "children": "Các điểm không tới được do sự cố này",
        "intro": "Thông báo từ hệ thống giám sát mạng WAN tỉnh {province}.",
        "guard_text": "Tuyến trên của chính máy giám sát không trả lời: có thể chính máy giám sát bị mất "
        "kết nối. Không gửi thông báo cho từng điểm cho đến khi tình trạng này kết thúc.",
        "footer": "Thư tự động từ wanmon.",
        "footer_page": "Trang tình trạng:",
        "flap": "{pct} thay đổi trạng thái",
        "guard_detail": "tuyến trên không trả lời: {sites} ({silent}/{upstream}); {failing}/{total} điểm lỗi, "
        "{roots} nguyên nhân gốc",
        "guard_end_detail": "tuyến trên trả lời lại; {failing}/{total} điểm đang lỗi",
        "reboot_detail": "thời gian chạy {was} ở lần hỏi trước, nay {now}",
        "back_at": "lúc",
        "back_children": "Cùng kết nối lại",
        "cause_now": "Nguyên nhân: tuyến trên {site} {what}.",
        "cause_was": "Nguyên nhân: tuyến trên {site} mất kết nối từ {when}; tuyến trên đã hoạt động lại.",
        "cause_was_unknown": "Nguyên nhân: tuyến trên {site} mất kết nối; tuyến trên đã hoạt động lại.",
        "cause_unknown": "Nguyên nhân: sự cố ở tuyến trên.",
        "path": "Dò đường lúc {when}: {text}.",
        "todo": "Việc cần làm: {text}",
        "do_down": "Kiểm tra nguồn điện và thiết bị mạng (router, modem) của đơn vị. Nếu thiết bị có điện mà vẫn "
        "mất kết nối, báo cho {contact}, kèm tên và mã điểm.",
        "do_reminder": "Kiểm tra nguồn điện và thiết bị mạng (router, modem) của đơn vị. Nếu thiết bị có điện mà "
        "vẫn mất kết nối, báo cho {contact}, kèm tên và mã điểm.",
        "do_unreachable": "Không cần xử lý tại đơn vị: sự cố nằm ở tuyến trên, không phải tại đơn vị. Đơn vị sẽ "
        "nhận thư khi kết nối trở lại. Cần hỏi thêm: {contact}.",
        "do_degraded": "Đường truyền chậm hoặc mất gói. Nếu kéo dài hoặc ảnh hưởng công việc, báo cho {contact}.",
        "do_flap_start": "Kết nối lúc có lúc mất: kiểm tra dây mạng và nguồn điện (UPS) của thiết bị. Nếu vẫn "
        "tiếp diễn, báo cho {contact}.",
        "do_reboot": "Nếu không ai chủ động khởi động lại thiết bị, kiểm tra nguồn điện (UPS). Nếu lặp lại, báo "
        "cho {contact}.",
        "do_recovery": "Không cần làm gì thêm. Nếu dịch vụ vẫn chưa dùng được, báo cho {contact}.",
        "do_guard": "Kiểm tra đường lên của máy chạy wanmon (dây mạng, cổng của bộ chuyển mạch, tường lửa, nhà "
        "cung cấp).",
        "noc_admins": "Liên hệ quản trị tại điểm: {admins}.",
        "noc_no_admins": "Điểm này chưa có quản trị trong sites.toml (admins).",
        "no_contact": "bộ phận quản trị mạng của tỉnh",
        "no_page": "Thư này chưa có liên kết tới trang tình trạng: đặt [page] url trong sites.toml.",
        "test_subject": "[wanmon] Thư kiểm tra",
        "test_body": "Thư kiểm tra từ wanmon: cấu hình [smtp] hoạt động.",
        "damage_subject": "[wanmon] Kho dữ liệu bị hỏng: đã dừng ghi",
        "damage_text": "Kho dữ liệu của wanmon ({path}) được phát hiện bị hỏng lúc {when}. Từ đó wanmon không ghi "
        "gì vào kho: các chu kỳ giám sát không được lưu và không có thư cảnh báo cho đến khi kho "
        "được khôi phục từ bản sao lưu và lệnh `wanmon store check` đạt (README, mục 'Backup and "
        "restore').",
        "damage_findings": "SQLite báo:",
        "output_subject": "[wanmon] Đầu ra \u201c{output}\u201d lỗi từ {since}",
        "output_text": "Đầu ra \u201c{output}\u201d của wanmon lỗi {failures} lần liên tiếp, từ {since}. Các chu kỳ "
        "giám sát vẫn được ghi và các đầu ra khác vẫn chạy. Lần thử cuối ({when}) báo:",
        "output_back_subject": "[wanmon] Đầu ra \u201c{output}\u201d hoạt động lại",
        "output_back_text": "Đầu ra \u201c{output}\u201d của wanmon hoạt động lại lúc {when} (lỗi từ {since}).",
        "primary_stale_subject": "[wanmon] Tác tử chính \u201c{agent}\u201d đã ngừng (không có nhịp tim)",
        "primary_stale_text": "Tác tử chính \u201c{agent}\u201d (máy {host}) không gửi nhịp tim từ {last} (quá 3 chu kỳ "
        "{interval} s của nó). Từ {when}, máy giám sát dự phòng \u201c{me}\u201d gửi thư cảnh báo "
        "thay cho nó, kể cả những tin chưa máy giám sát nào gửi.",
        "primary_back_subject": "[wanmon] Tác tử chính \u201c{agent}\u201d chạy lại",
        "primary_back_text": "Tác tử chính \u201c{agent}\u201d (máy {host}) gửi nhịp tim lại (lần cuối {last}). Tác tử "
        "dự phòng \u201c{me}\u201d thôi gửi thư cảnh báo từ {when}.",
        "primary_mail_subject": "[wanmon] Tác tử chính \u201c{agent}\u201d không gửi được thư từ {since}",
        "primary_mail_text": "Tác tử chính \u201c{agent}\u201d (máy {host}) vẫn chạy nhưng không gửi được thư cảnh báo "
        "từ {since} ({failures} lần gửi liên tiếp lỗi, {queued} thư đang chờ). Từ {when}, tác "
        "tử dự phòng \u201c{me}\u201d gửi thư thay cho nó. Lỗi của nó: chạy `wanmon status` "
        "trên máy {host}.",
        "primary_mail_back_subject": "[wanmon] Tác tử chính \u201c{agent}\u201d gửi được thư trở lại",
        "primary_mail_back_text": "Tác tử chính \u201c{agent}\u201d (máy {host}) gửi được thư trở lại (lỗi từ "
        "{since}). Tác tử dự phòng \u201c{me}\u201d thôi gửi thư cảnh báo từ {when}.",
    },
    "en": {
        "down": "down",
        "unreachable": "unreachable (upstream outage)",
        "degraded": "degraded",
        "recovery": "recovered",
        "reminder": "still down",
        "flap_start": "flapping",
        "flap_end": "stopped flapping",
        "reboot": "device rebooted",
        "guard": "the monitoring agent may be cut off",
        "guard_end": "the monitoring agent is connected again",
        "site": "site",
        "since": "since",
        "children": "Sites unreachable because of this outage",
        "intro": "Notification from the {province} provincial WAN monitor.",
        "guard_text": "The monitoring agent's own upstream does not answer: the agent itself may be cut off. "
        "Per-site notifications are held until this ends.",
        "footer": "Automatic mail from wanmon.",
        "footer_page": "Status page:",
        "flap": "{pct} state changes",
        "guard_detail": "upstream not answering: {sites} ({silent}/{upstream}); {failing}/{total} sites failing, "
        "{roots} root cause(s)",
        "guard_end_detail": "upstream answers again; {failing}/{total} sites failing",
        "reboot_detail": "uptime {was} at the previous poll, now {now}",
        "back_at": "at",
        "back_children": "Back with it",
        "cause_now": "Cause: the upstream site {site}, {what}.",
        "cause_was": "Cause: the upstream site {site} was down from {when}; it is back.",
        "cause_was_unknown": "Cause: the upstream site {site} was down; it is back.",
        "cause_unknown": "Cause: an outage upstream.",
        "path": "Traced at {when}: {text}.",
        "todo": "What to do: {text}",
        "do_down": "Check the power and the network equipment (router, modem) at your site. If they have power "
        "and the link is still down, call {contact} with the site's name and id.",
        "do_reminder": "Check the power and the network equipment (router, modem) at your site. If they have "
        "power and the link is still down, call {contact} with the site's name and id.",
        "do_unreachable": "Nothing to be done at your site: the fault is upstream, not at your site. You will get "
        "a mail when the connection is back. Questions: {contact}.",
        "do_degraded": "The link is slow or loses packets. If it lasts or hinders work, tell {contact}.",
        "do_flap_start": "The connection comes and goes: check the network cable and the equipment's power "
        "(UPS). If it goes on, tell {contact}.",
        "do_reboot": "If nobody restarted the device on purpose, check its power (UPS). If it happens again, "
        "tell {contact}.",
        "do_recovery": "Nothing more to do. If a service still does not work, tell {contact}.",
        "do_guard": "Check the uplink of the machine that runs wanmon (cable, switch port, firewall, provider).",
        "noc_admins": "Call the site's administrators: {admins}.",
        "noc_no_admins": "This site has no administrators in sites.toml (admins).",
        "no_contact": "the provincial network administrators",
        "no_page": "No link to the status page here: set [page] url in sites.toml.",
        "test_subject": "[wanmon] Test message",
        "test_body": "Test message from wanmon: the [smtp] settings work.",
        "damage_subject": "[wanmon] The store is damaged: writes stopped",
        "damage_text": "wanmon's store ({path}) was found damaged at {when}. Since then wanmon writes nothing to "
        "it: monitoring cycles are not recorded and no alert mail is sent until the store is "
        "restored from a backup and `wanmon store check` passes (README, 'Backup and restore').",
        "damage_findings": "SQLite says:",
        "output_subject": "[wanmon] Output \u201c{output}\u201d failing since {since}",
        "output_text": "wanmon's output \u201c{output}\u201d failed {failures} times in a row, since {since}. "
        "Monitoring cycles are still recorded and the other outputs still run. The last try ({when}) "
        "said:",
        "output_back_subject": "[wanmon] Output \u201c{output}\u201d works again",
        "output_back_text": "wanmon's output \u201c{output}\u201d works again at {when} (failing since {since}).",
        "primary_stale_subject": "[wanmon] The primary agent \u201c{agent}\u201d has stopped (no heartbeat)",
        "primary_stale_text": "The primary agent \u201c{agent}\u201d (host {host}) has sent no heartbeat since {last} "
        "(more than 3 of its {interval} s intervals). From {when}, the standby agent "
        "\u201c{me}\u201d sends the alert mail in its place, including news no agent had sent.",
        "primary_back_subject": "[wanmon] The primary agent \u201c{agent}\u201d is running again",
        "primary_back_text": "The primary agent \u201c{agent}\u201d (host {host}) sends heartbeats again (last {last}). "
        "From {when}, the standby agent \u201c{me}\u201d sends no alert mail.",
        "primary_mail_subject": "[wanmon] The primary agent \u201c{agent}\u201d cannot send mail since {since}",
        "primary_mail_text": "The primary agent \u201c{agent}\u201d (host {host}) runs, but has delivered no alert mail "
        "since {since} ({failures} delivery runs failed in a row, {queued} mail(s) waiting). "
        "From {when}, the standby agent \u201c{me}\u201d sends the mail in its place. Its error: "
        "run `wanmon status` on {host}.",
        "primary_mail_back_subject": "[wanmon] The primary agent \u201c{agent}\u201d delivers mail again",
        "primary_mail_back_text": "The primary agent \u201c{agent}\u201d (host {host}) delivers mail again (failing "
        "since {since}). From {when}, the standby agent \u201c{me}\u201d sends no alert "
        "mail.",
    },
}


class ReportWords(TypedDict):
    """One language's words of the availability report (REPORT): the same keys in every language."""

    title: str
    month: str
    quarter: str
    year: str
    period: str
    previous: str
    generated: str
    to_now: str
    target: str
    levels_title: str
    districts_title: str
    sites_title: str
    level: str
    district: str
    site: str
    sites: str
    availability: str
    downtime: str
    outages: str
    longest: str
    mttr: str
    unreachable: str
    maintenance: str
    unobserved: str
    below: str
    below_n: str
    total: str
    nothing: str
    method_title: str
    more_sites: str
    levels: NotRequired[dict[str, str]]  # not in REPORT: the levels' names are words.level_names (Report.words)
    history_from: str
    method: list[str]
    summary_title: str
    met: str
    missed: str
    target_col: str
    change: str
    pp: str
    worst_title: str
    why: str
    why_own: str
    why_behind: str
    why_cut_off: str
    no_worst: str
    details_title: str
    more_districts: str
    out_of_service: str
    grouping: str
    grouping_then: str
    grouping_now: str
    split_note: str
    split_more: str
    now_note: str
    from_: str
    to: str


REPORT: dict[str, ReportWords] = {
    "vi": {
        "title": "Báo cáo tỷ lệ sẵn sàng mạng WAN tỉnh {province}",
        "month": "Tháng {m:02d}/{y}",
        "quarter": "Quý {q}/{y}",
        "year": "Năm {y}",
        "period": "Kỳ báo cáo",
        "previous": "Kỳ trước",
        "generated": "Lập lúc",
        "to_now": "(đến thời điểm lập)",
        "target": "Mục tiêu",
        "levels_title": "Tỷ lệ sẵn sàng theo cấp",
        "districts_title": "Theo huyện",
        "sites_title": "Theo điểm kết nối (thấp nhất trước)",
        "level": "Cấp",
        "district": "Huyện",
        "site": "Điểm kết nối",
        "sites": "Số điểm",
        "availability": "Sẵn sàng",
        "downtime": "Mất kết nối (giờ:phút)",
        "outages": "Số lần",
        "longest": "Lâu nhất",
        "mttr": "Khắc phục TB",
        "unreachable": "Do tuyến trên",
        "maintenance": "Bảo trì",
        "unobserved": "Không giám sát",
        "below": "Dưới mục tiêu",
        "below_n": "{n} điểm dưới mục tiêu {t}",
        "total": "Toàn mạng",
        "nothing": "Không có dữ liệu giám sát nào trong kỳ này: máy giám sát chưa chạy, hoặc kho dữ liệu trống. "
        "Tỷ lệ sẵn sàng để trống thay vì 100 %.",
        "method_title": "Phương pháp tính",
        "more_sites": "… và {n} điểm khác (sẵn sàng bằng hoặc cao hơn, hoặc không có dữ liệu): danh sách đầy đủ trong tệp CSV và bản HTML.",
        "history_from": "Ghi chú: lịch sử bắt đầu từ {t} (nâng cấp kho dữ liệu): phiên bản wanmon cũ chỉ giữ lại "
        "số liệu tổng hợp theo giờ cho thời gian trước đó, không đủ để tính tỷ lệ sẵn sàng, nên "
        "khoảng thời gian ấy không được tính (cũng không tính là không giám sát).",
        "summary_title": "Tóm tắt",
        "met": "Đạt",
        "missed": "Không đạt",
        "target_col": "Mục tiêu {t}",
        "change": "Thay đổi",
        "pp": "điểm %",
        "worst_title": "Điểm kém nhất và nguyên nhân",
        "why": "Nguyên nhân",
        "why_own": "mất kết nối {n} lần, lâu nhất {longest}",
        "why_behind": "kéo theo {n} điểm phía sau không tới được",
        "why_cut_off": "không tới được do tuyến trên mất kết nối",
        "no_worst": "Không có điểm nào mất kết nối trong kỳ.",
        "details_title": "Chi tiết",
        "more_districts": "… và {n} huyện khác: xem bảng «Theo huyện» ở phần chi tiết.",
        "out_of_service": "Ngoài thời gian sử dụng",
        "grouping": "Cách nhóm",
        "grouping_then": "theo đơn vị có hiệu lực ở từng thời điểm",
        "grouping_now": "theo cây đơn vị hiện tại",
        "split_note": "Kỳ báo cáo được chia tại {t}: mỗi khoảng thời gian được tính theo tên, cấp và đơn vị "
        "có hiệu lực lúc đó (--grouping then); điểm nào đổi tên, cấp hoặc đơn vị trong kỳ có một dòng cho mỗi khoảng.",
        "split_more": "và {n} thời điểm khác",
        "now_note": "Có điểm đã đổi tên, cấp hoặc đơn vị kể từ kỳ này: cả kỳ của mỗi điểm được tính theo tên, cấp "
        "và đơn vị có hiệu lực lúc {t} (--grouping now; --grouping then: theo đơn vị lúc đó).",
        "from_": "Từ",
        "to": "Đến",
        "method": [
            "Kết quả mỗi lần kiểm tra có hiệu lực từ thời điểm kiểm tra (ts) đến lần kiểm tra kế tiếp, "
            "nhưng không quá {cap} giây (2 × [schedule] icmp_interval_s); quá thời gian đó là không giám sát.",
            "Hoạt động và suy giảm được tính là sẵn sàng; mất kết nối và không tới được là không sẵn sàng; "
            "chưa rõ là không giám sát. Thời gian bảo trì được loại trừ.",
            "Tỷ lệ sẵn sàng = thời gian sẵn sàng / thời gian có giám sát. Tỷ lệ của một cấp hay một huyện là "
            "tổng thời gian sẵn sàng của các điểm chia cho tổng thời gian có giám sát của chúng.",
            "Mất kết nối là thời gian của chính điểm đó; thời gian không tới được do tuyến trên mất kết nối "
            "được ghi riêng (vẫn là không sẵn sàng). Một lần mất kết nối kết thúc khi điểm hoạt động lại, "
            "khi không giám sát hoặc khi bảo trì; sự cố vắt qua đầu hay cuối kỳ được cắt tại mốc đó. "
            "Khắc phục trung bình = tổng thời gian mất kết nối / số lần.",
            "Thời gian một điểm chưa đưa vào sử dụng hoặc đã ngừng sử dụng (in_service_from, retired_at) "
            "được ghi riêng là ngoài thời gian sử dụng: không phải mất kết nối, không phải không giám sát, "
            "không có trong tỷ lệ sẵn sàng.",
        ],
    },
    "en": {
        "title": "WAN availability report, {province} province",
        "month": "{y}-{m:02d}",
        "quarter": "Q{q} {y}",
        "year": "{y}",
        "period": "Period",
        "previous": "Previous period",
        "generated": "Generated",
        "to_now": "(to the time of writing)",
        "target": "Target",
        "levels_title": "Availability by level",
        "districts_title": "By district",
        "sites_title": "By site (worst first)",
        "level": "Level",
        "district": "District",
        "site": "Site",
        "sites": "Sites",
        "availability": "Availability",
        "downtime": "Downtime (h:mm)",
        "outages": "Outages",
        "longest": "Longest",
        "mttr": "MTTR",
        "unreachable": "Upstream",
        "maintenance": "Maintenance",
        "unobserved": "Unobserved",
        "below": "Below target",
        "below_n": "{n} sites below the {t} target",
        "total": "Whole network",
        "nothing": "Nothing was observed in this period: the agent did not run, or the store is empty. "
        "Availability is left blank rather than shown as 100 %.",
        "method_title": "Method",
        "more_sites": "… and {n} more sites (as available or more, or not observed): the full list is in the CSV and the HTML.",
        "history_from": "Note: history starts at {t}, the store was upgraded: the older wanmon kept only hourly "
        "rollups of the time before, which cannot give the availability, so that time is left out "
        "(it is not counted as unobserved either).",
        "summary_title": "Summary",
        "met": "Met",
        "missed": "Missed",
        "target_col": "Target {t}",
        "change": "Change",
        "pp": "pp",
        "worst_title": "Worst sites and why",
        "why": "Why",
        "why_own": "down {n}×, longest {longest}",
        "why_behind": "sites behind it unreachable: {n}",
        "why_cut_off": "unreachable: an upstream site was down",
        "no_worst": "No site was down or unreachable in this period.",
        "details_title": "Details",
        "more_districts": "… and {n} more districts: see «By district» in the details.",
        "out_of_service": "Out of service",
        "grouping": "Grouping",
        "grouping_then": "under the groups valid at the time",
        "grouping_now": "under today's tree",
        "split_note": "The period is split at {t}: each stretch is counted under the name, level and group "
        "valid then (--grouping then); a site whose name, level or group changed has one row per stretch.",
        "split_more": "and {n} more instants",
        "now_note": "Sites changed name, level or group since this period: each site's whole period is counted "
        "under the name, level and group valid at {t} (--grouping now; --grouping then: the groups of the time).",
        "from_": "From",
        "to": "To",
        "method": [
            "Each check's result holds from its time (ts) until the next check, but never longer than {cap} s "
            "(2 × [schedule] icmp_interval_s); beyond that the time is unobserved.",
            "Up and degraded are available; down and unreachable are not; unknown is unobserved. "
            "Time in a maintenance window is excluded.",
            "Availability = available time / observed time. A level's or district's figure is the sum of its "
            "sites' available time over the sum of their observed time.",
            "Downtime is the site's own; time unreachable because an upstream site was down is shown apart "
            "(it is still not available). An outage ends when the site answers again, when observation stops "
            "or a maintenance window begins; outages crossing the period's edges are cut there. "
            "MTTR = downtime / outages.",
            "Time before a site entered service or after it was retired (in_service_from, retired_at) is "
            "shown apart as out of service: never down, never unobserved, not in the availability.",
        ],
    },
}


# How long something lasted or how old it is, in one format for the page (its script too,
# from this list), the mails and the reports: units largest first
DURATION_UNITS = {
    "vi": (("ngày", 86400), ("giờ", 3600), ("phút", 60), ("giây", 1)),
    "en": (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)),
}
NBSP = "\u00a0"  # joins a number to its unit on the page: "33 %" never breaks between them


def duration(seconds: float, lang: str, sep: str = " ") -> str:
    """A length of time in words: 52 giây, 45 phút, 2 giờ 5 phút, 3 ngày 4 giờ (en: 52 s,
    45 min, 2 h 5 min, 3 d 4 h). Its largest unit, then the next one if not zero; seconds only
    under a minute; to the nearest second (half up: JavaScript's Math.round). sep goes between
    a number and its unit (NBSP on the page). The page's script words the data's age by the
    same rule (templates/page.html.j2, words())."""
    units = DURATION_UNITS[lang]
    s = max(0, math.floor(seconds + 0.5))
    i = next(k for k, (_, size) in enumerate(units) if s >= size or size == 1)
    word, size = units[i]
    out = f"{s // size}{sep}{word}"
    if i + 1 < len(units) and units[i + 1][1] > 1:
        nword, nsize = units[i + 1]
        rest = s % size // nsize
        if rest:
            out += f" {rest}{sep}{nword}"
    return out


@dataclass(frozen=True)
class Fmt:
    lang: str
    tz: tzinfo  # a ZoneInfo, or a report's --from offset (datetime.timezone)
    sep: str = " "  # between a number and its unit: NBSP (NBSP) on the page

    def num(self, v: float | None, digits: int = 2, unit: str = "") -> str:
        if v is None:
            return "–"
        s = f"{v:,.{digits}f}"
        if self.lang == "vi":  # 1.234,56: dot for thousands, comma for decimals
            s = s.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
        return s + (self.sep + unit[1:] if unit.startswith(" ") else unit)

    def ms(self, v: float | None) -> str:
        """RTT with the digits that matter: 0,023 ms on a LAN, 12,4 ms on a WAN, 1.250 ms when bad."""
        if v is None:
            return "–"
        return self.num(v, 3 if v < 1 else 2 if v < 10 else 1 if v < 1000 else 0, " ms")

    def pct(self, v: float | None) -> str:
        return self.num(v, 2, "%")

    def dt(self, ts: float | None) -> str:
        if ts is None:
            return "–"
        d = datetime.fromtimestamp(ts, self.tz)
        return d.strftime("%d/%m/%Y %H:%M") if self.lang == "vi" else d.strftime("%Y-%m-%d %H:%M")

    def when(self, ts: float) -> str:
        """An instant as a day when it is a midnight here (01/07/2025, 2025-07-01), else as dt():
        the instants of a dated inventory."""
        d = datetime.fromtimestamp(ts, self.tz)
        if (d.hour, d.minute, d.second, d.microsecond) != (0, 0, 0, 0):
            return self.dt(ts)
        return d.strftime("%d/%m/%Y") if self.lang == "vi" else d.strftime("%Y-%m-%d")

    def iso(self, ts: float) -> str:
        """For <time datetime>: 2025-01-01T00:30:00+07:00."""
        return datetime.fromtimestamp(ts, self.tz).isoformat(timespec="seconds")

    def span(self, seconds: float | None) -> str:
        """How long something lasted: duration() (45 phút, 2 giờ 5 phút, 3 ngày 4 giờ): the
        page's problems and incidents, the mails' outages."""
        return "–" if seconds is None else duration(seconds, self.lang, self.sep)

    age = span  # how old something is: the same words (the page's templates say age)


# -- what the page and the mails both say about a problem ----------------------


class CauseWords(TypedDict):
    """One language's words about a problem (CAUSE): the same keys in every language."""

    down: str
    unreachable: str
    degraded: str
    down_first_seen: str
    degraded_first_seen: str
    unreachable_n: str
    sites: str  # what unreachable_n counts when they are not of one level
    site: str
    rtt: str
    loss: str
    outage: str
    outage_unreachable: str
    outage_degraded: str
    ongoing: str
    flapping: str
    maintenance: str
    snmp_silent: str
    rebooted: str
    all_ok: str


CAUSE: dict[str, CauseWords] = {
    "vi": {
        "down": "mất kết nối từ {since} ({span})",
        "unreachable": "không tới được từ {since} ({span})",
        "degraded": "suy giảm từ {since}",
        "down_first_seen": "mất kết nối từ lần đầu ghi nhận lúc {since} (ít nhất {span})",
        "degraded_first_seen": "suy giảm từ lần đầu ghi nhận lúc {since}",
        "unreachable_n": "{n} {what} không tới được",
        "sites": "điểm",
        "site": "điểm",
        "rtt": "độ trễ {v} ≥ {t}",
        "loss": "mất gói {v} ≥ {t}",
        "outage": "sau {d} mất kết nối",
        "outage_unreachable": "sau {d} không tới được do tuyến trên",
        "outage_degraded": "sau {d} suy giảm",
        "ongoing": "đang diễn ra",
        "flapping": "chập chờn",
        "maintenance": "đang bảo trì",
        "snmp_silent": "không có phản hồi SNMP từ {since}",
        "rebooted": "thiết bị khởi động lại lúc {when}",
        "all_ok": "Tất cả {n} điểm đều hoạt động bình thường.",
    },
    "en": {
        "down": "down since {since} ({span})",
        "unreachable": "unreachable since {since} ({span})",
        "degraded": "degraded since {since}",
        "down_first_seen": "down since first seen at {since} (at least {span})",
        "degraded_first_seen": "degraded since first seen at {since}",
        "unreachable_n": "{n} {what} unreachable",
        "sites": "sites",
        "site": "site",
        "rtt": "RTT {v} ≥ {t}",
        "loss": "loss {v} ≥ {t}",
        "outage": "after {d} down",
        "outage_unreachable": "after {d} unreachable through an upstream outage",
        "outage_degraded": "after {d} degraded",
        "ongoing": "ongoing",
        "flapping": "flapping",
        "maintenance": "in maintenance",
        "snmp_silent": "no SNMP answer since {since}",
        "rebooted": "device rebooted at {when}",
        "all_ok": "All {n} sites are up.",
    },
}


def degraded_why(fmt: Fmt, rtt_ms: float | None, loss_pct: float | None, thresholds) -> str:
    """Which threshold a degraded site crossed, with its figure: "độ trễ 401,0 ms ≥ 300,0 ms"."""
    c = CAUSE[fmt.lang]
    parts = []
    if rtt_ms is not None and rtt_ms >= thresholds.degraded_rtt_ms:
        parts.append(c["rtt"].format(v=fmt.ms(rtt_ms), t=fmt.ms(thresholds.degraded_rtt_ms)))
    if loss_pct is not None and loss_pct >= thresholds.degraded_loss_pct:
        parts.append(c["loss"].format(v=fmt.num(loss_pct, 0, " %"), t=fmt.num(thresholds.degraded_loss_pct, 0, " %")))
    return ", ".join(parts)


def outage(fmt: Fmt, seconds: float, was: str = "down") -> str:
    """A recovery's outage: "sau 2 giờ 5 phút mất kết nối" (was: down, unreachable or degraded)."""
    c = CAUSE[fmt.lang]
    text = {"unreachable": c["outage_unreachable"], "degraded": c["outage_degraded"]}.get(was, c["outage"])
    return text.format(d=fmt.span(seconds))


def since_text(fmt: Fmt, status: str, since: float, now: float, first_seen: bool = False) -> str:
    """A problem's start after the site's name: "mất kết nối từ 02/12/2026 08:15 (2 giờ 5 phút)";
    first_seen: since the site's first observation, so it may have begun earlier."""
    c = CAUSE[fmt.lang]
    texts = {
        "down": c["down"],
        "unreachable": c["unreachable"],
        "degraded": c["degraded"],
        "down_first_seen": c["down_first_seen"],
        "degraded_first_seen": c["degraded_first_seen"],
    }
    key = f"{status}_first_seen" if first_seen else status
    return texts[key].format(since=fmt.dt(since), span=fmt.span(now - since))


def unreachable_count(lang: str, levels: list[str], names: Mapping[str, LevelName] | None = None) -> str:
    """ "14 xã không tới được" (all communes), "3 điểm không tới được" (a mix). names: the levels'
    words (level_names; default wanmon's own, LEVEL_NAMES)."""
    kinds = set(levels)
    return unreachable_n(lang, len(levels), kinds.pop() if len(kinds) == 1 else "", names)


def unreachable_n(lang: str, n: int, level: str = "", names: Mapping[str, LevelName] | None = None) -> str:
    """ "14 xã không tới được"; in English "1 commune unreachable", "2 sites unreachable"."""
    c = CAUSE[lang]
    if level:
        what = (names or LEVEL_NAMES[lang])[level].count(n)
    else:
        what = c["site"] if n == 1 else c["sites"]
    return c["unreachable_n"].format(n=n, what=what)


# The page's words for the levels, as templates read them (t.province, t.province_section,
# t.district_col): wanmon's own level names; the page puts the configured ones in their place.
def page_level_words(names: Mapping[str, LevelName]) -> dict[str, str]:
    return {
        **{level: w.name for level, w in names.items()},
        "province_section": names["province"].heading,
        "district_col": names["district"].heading,
    }


for _lang, _words in PAGE.items():
    _words.update(page_level_words(LEVEL_NAMES[_lang]))


# -- where a path stops (wanmon.trace) --------------------------------------------

PATH = {
    "vi": {
        "stops": "đường truyền dừng sau {hop}, hop {n} của {m}",
        "stops_open": "đường truyền dừng sau {hop}, hop {n}",
        "silent": "đường truyền không có hop nào trả lời",
    },
    "en": {
        "stops": "the path stops after {hop}, hop {n} of {m}",
        "stops_open": "the path stops after {hop}, hop {n}",
        "silent": "no hop on the path answers",
    },
}


# -- the picture of the tree (wanmon.tree: tree.html beside the page) -------------------------

TREE = {
    "vi": {
        "title": "Sơ đồ mạng WAN tỉnh {province}",
        "description": "Sơ đồ {n} điểm mạng WAN tỉnh {province} theo tuyến trên trong cấu hình, với tình trạng "
        "hiện tại và các tuyến trên mà đường đi thực tế cho thấy khác cấu hình.",
        "link": "Sơ đồ mạng",
        "back": "Trang tình trạng",
        "intro": "Mỗi điểm nằm dưới tuyến trên (parent) của nó trong cấu hình hôm nay; trạng thái theo lần kiểm "
        "tra gần nhất. Di chuột (hoặc chạm) vào một điểm để xem đầy đủ.",
        "legend": "Chú giải",
        "edge": "nối với tuyến trên trong cấu hình",
        "ghost": "tuyến trên thực tế khác cấu hình (theo wanmon topology): điểm được vẽ thêm nét đứt dưới "
        "tuyến trên tìm thấy",
        "diff_title": "Tuyến trên khác cấu hình",
        "diff_when": "Theo lần chạy `wanmon topology` lúc {when}; sửa `parent` trong sites.toml theo bản vá nó in ra.",
        "diff_none": "Tuyến trên trong cấu hình khớp với lần chạy `wanmon topology` lúc {when}.",
        "diff_never": "Chưa chạy `wanmon topology`: chạy lệnh này để so tuyến trên trong cấu hình với đường đi "
        "thực tế (traceroute, LLDP).",
        "diff_line": "cấu hình nối qua {configured}, thực tế qua {found} (theo {evidence})",
        "no_parent": "không có tuyến trên",
        "found_via": "≠ thực tế qua {name}",
        "ghost_line": "≠ cấu hình: {name}",
        "below": "{n}\u00a0{what} bên dưới",
        "diffs_n": "{n} khác cấu hình",
        "loose": "Điểm không có tuyến trên",
        "picture": "Sơ đồ: {name}",
        "sites_n": "{n}\u00a0điểm",
        "traceroute": "traceroute",
        "lldp": "LLDP",
    },
    "en": {
        "title": "{province} provincial WAN: the tree",
        "description": "The {n} sites of the {province} provincial WAN under their configured uplinks, with their "
        "status now and the uplinks the paths show to differ from the configuration.",
        "link": "Network tree",
        "back": "Status page",
        "intro": "Each site under its uplink (parent) in today's configuration; status from the last check. "
        "Hover over (or tap) a site to read it whole.",
        "legend": "Legend",
        "edge": "linked to its configured uplink",
        "ghost": "an uplink found to differ (by wanmon topology): the site drawn again, dashed, under the uplink found",
        "diff_title": "Uplinks that differ from the configuration",
        "diff_when": "As `wanmon topology` found them at {when}; fix `parent` in sites.toml with the patch it prints.",
        "diff_none": "The configured uplinks agree with `wanmon topology` at {when}.",
        "diff_never": "`wanmon topology` has not run: run it to compare the configured uplinks with the paths "
        "(traceroute, LLDP).",
        "diff_line": "configured under {configured}, found under {found} ({evidence})",
        "no_parent": "no uplink",
        "found_via": "≠ found under {name}",
        "ghost_line": "≠ configured: {name}",
        "below": "{n}\u00a0{what} below",
        "diffs_n": "{n} differ",
        "loose": "Sites without an uplink",
        "picture": "Tree: {name}",
        "sites_n": "{n}\u00a0sites",
        "sites_n_one": "{n}\u00a0site",
        "traceroute": "traceroute",
        "lldp": "LLDP",
    },
}
