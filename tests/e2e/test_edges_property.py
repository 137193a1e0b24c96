"""Property: whatever bytes or JSON reach the public doors, `mpgpt serve` answers 2xx or 4xx, never a
5xx, and keeps serving. /wechat gets validly signed requests (the signature is the only thing an
attacker with one logged URL has); the API gets a logged-in session (the worst case: a follower).

The server is a real child process on loopback; the model channel points at a closed port, so a
question that gets through fails fast instead of waiting for a model; WeChat Pay is the fake (on an
event loop of its own thread), so an order that passes every check is really placed.
"""

from __future__ import annotations

import http.client
import asyncio
import json
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import paykit
from tests.fakes.wechat_crypto import sha1_signature
from tests.fakes.wechatpay import FakeWeChatPay, make_keys
from tests.harness import TOKEN, ServerProcess, config_data, free_port, write_toml

EXAMPLES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20)
# objects with the keys the API reads, holding anything
api_objects = st.fixed_dictionaries({}, optional={
    k: json_values | st.sampled_from(["p6", "p30", "native", "jsapi"]) for k in ("token", "code", "message", "model", "conversation_id", "product_id", "kind",
                             "t", "pv", "vid", "page", "x", "y", "vw", "vh", "ms", "target")})
bodies = st.binary(max_size=2048) | json_values.map(lambda v: json.dumps(v).encode()) | \
    api_objects.map(lambda v: json.dumps(v).encode())
fields = st.sampled_from(["ToUserName", "FromUserName", "CreateTime", "MsgType", "Content", "MsgId", "Event",
                          "EventKey", "Encrypt", "Recognition", "x"])
xml_bodies = st.lists(st.tuples(fields, st.text(max_size=30) | st.sampled_from(["text", "event", "subscribe", "1"])),
                      max_size=8).map(
    lambda items: ("<xml>" + "".join(f"<{k}><![CDATA[{v.replace(']]>', '')}]]></{k}>" for k, v in items)
                   + "</xml>").encode("utf-8", "surrogatepass"))
# an invite link's last path segment: anything at all (percent-encoded, as it travels), or a well-formed code
segments = st.binary(min_size=1, max_size=300).map(lambda b: urllib.parse.quote(b, safe="")) | \
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60).map(
        lambda t: urllib.parse.quote(t, safe="/.~%;=&?#")) | st.from_regex(r"[2-9A-HJKMNP-Za-hjkmnp-z]{8}", fullmatch=True)


class Client:
    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""

    def post(self, path: str, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            headers = {"Content-Type": content_type}
            if self.cookie:
                headers["Cookie"] = self.cookie
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            cookie = resp.getheader("Set-Cookie") or ""
            if cookie.startswith("mpgpt_session="):
                self.cookie = cookie.split(";")[0]
            return resp.status, data
        finally:
            conn.close()

    def get(self, path: str) -> tuple[int, bytes, str | None]:
        """Without following redirects: the status, the body and where it points."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request("GET", path, headers={"Cookie": self.cookie} if self.cookie else {})
            resp = conn.getresponse()
            return resp.status, resp.read(), resp.getheader("Location")
        finally:
            conn.close()

    def wechat(self, body: bytes) -> tuple[int, bytes]:
        ts, nonce = str(int(time.time())), str(secrets.randbelow(9 * 10**9) + 10**9)
        query = f"signature={sha1_signature(TOKEN, ts, nonce)}&timestamp={ts}&nonce={nonce}&openid=o_fuzz"
        return self.post(f"/wechat?{query}", body, "text/xml")


@contextmanager
def fake_pay_in_a_thread() -> Iterator[FakeWeChatPay]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake = FakeWeChatPay(make_keys())
    try:
        asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[ServerProcess, Client]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with fake_pay_in_a_thread() as pay:
        yield from _serve(tmp, pay)


def _serve(tmp, pay: FakeWeChatPay) -> Iterator[tuple[ServerProcess, Client]]:
    port = free_port()
    data = config_data(tmp, "http://127.0.0.1:9/v1", server={"public_url": "http://127.0.0.1/"},
                       chat={"generation_deadline": 2.0}, rules={"rate_limit": 100000},
                       companion={"order_limit": 100000, "ip_waits": 100000, "code_attempts": 100000})
    pay_data = paykit.config_data(tmp, pay, notify_url=f"http://127.0.0.1:{port}/api/pay/notify")
    data["pay"], data["products"] = pay_data["pay"], pay_data["products"]
    proc = ServerProcess(write_toml(tmp / "config.toml", data), port).start()
    client = Client(proc.port)
    try:
        status, reply = client.wechat(b"<xml><ToUserName>gh</ToUserName><FromUserName>o_fuzz_follower</FromUserName>"
                                      b"<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>\xe7\x99\xbb\xe5\xbd\x95"
                                      b"</Content><MsgId>1</MsgId></xml>")
        token = re.search(rb"#login=([A-Za-z0-9_-]+)", reply)
        assert status == 200 and token, reply
        assert client.post("/api/login", json.dumps({"token": token.group(1).decode()}).encode())[0] == 200
        yield proc, client
    finally:
        proc.stop()


def _check(proc: ServerProcess, status: int, body: bytes) -> None:
    assert 200 <= status < 500, (status, body[:300])
    assert proc.proc is not None and proc.proc.poll() is None


@EXAMPLES
@given(body=bodies | xml_bodies)
def test_signed_wechat_requests_with_any_body_get_2xx_or_4xx(server, body):
    proc, client = server
    _check(proc, *client.wechat(body))


@pytest.mark.parametrize("path", ["/api/login", "/api/login/wait", "/api/track", "/api/orders", "/api/chat"])
@EXAMPLES
@given(body=bodies)
def test_any_body_to_the_api_gets_2xx_or_4xx(server, path, body):
    proc, client = server
    _check(proc, *client.post(path, body))


@EXAMPLES
@given(segment=segments)
def test_any_invite_link_gets_2xx_3xx_or_4xx_and_redirects_only_home(server, segment):
    proc, client = server
    status, body, location = client.get("/i/" + segment)
    assert 200 <= status < 500, (status, body[:300])
    assert proc.proc is not None and proc.proc.poll() is None
    if 300 <= status < 400:
        assert location == "/"  # the link's code is never echoed into a redirect elsewhere


def test_after_all_that_the_server_still_answers(server):
    proc, client = server
    assert client.post("/api/login/wait", b"{}")[0] == 200
    assert client.get("/i/ABCDEFGH")[:3:2] == (302, "/")
    status, order = client.post("/api/orders", json.dumps({"product_id": "p6", "kind": "native"}).encode())
    assert status == 200 and json.loads(order)["state"] == "pending"  # the pay path was live all along
    assert proc.proc is not None and proc.proc.poll() is None
