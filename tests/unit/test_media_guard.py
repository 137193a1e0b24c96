"""The SSRF guard on follower media: only WeChat's media hosts (and api_base) are fetched."""

from __future__ import annotations

import pytest

from bot.media.guard import HostGuard
from bot.media.pictures import sniff

GUARD = HostGuard(("mmbiz.qpic.cn", ".qlogo.cn", "127.0.0.1:8123"), "https://api.weixin.qq.com")


@pytest.mark.parametrize("url", [
    "http://mmbiz.qpic.cn/mmbiz_jpg/abc/0",
    "https://mmbiz.qpic.cn:443/x",
    "http://wx.qlogo.cn/mmopen/x",
    "http://127.0.0.1:8123/p.jpg",
    "https://api.weixin.qq.com/cgi-bin/media/get?media_id=x",
])
def test_wechat_media_hosts_and_the_api_base_are_allowed(url):
    assert GUARD.refusal(url) is None


@pytest.mark.parametrize(("url", "reason"), [
    ("http://169.254.169.254/latest/meta-data/", "host is not a WeChat media host"),
    ("http://mmbiz.qpic.cn.evil.example/x", "host is not a WeChat media host"),
    ("http://evilqlogo.cn/x", "host is not a WeChat media host"),
    ("http://mmbiz.qpic.cn:6379/x", "host is not a WeChat media host"),
    ("http://127.0.0.1:8124/p.jpg", "host is not a WeChat media host"),
    ("http://localhost:8123/p.jpg", "host is not a WeChat media host"),
    ("file:///etc/passwd", "scheme is not http(s)"),
    ("gopher://mmbiz.qpic.cn/x", "scheme is not http(s)"),
    ("http://user:pw@mmbiz.qpic.cn/x", "URL carries credentials"),
    ("http://mmbiz.qpic.cn:99999/x", "no host"),
    ("mmbiz.qpic.cn/x", "scheme is not http(s)"),
])
def test_everything_else_is_refused_with_a_reason(url, reason):
    assert GUARD.refusal(url) == reason


def test_only_real_image_bytes_pass_whatever_the_content_type_said():
    assert sniff(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert sniff(b"\x89PNG\r\n\x1a\nrest") == "image/png"
    assert sniff(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert sniff(b"<svg xmlns='http://www.w3.org/2000/svg'/>") is None
    assert sniff(b"") is None
