"""`mpgpt simulate`: play WeChat's servers against a running mpgpt from a terminal.

Each line you type is sent as a follower's text message: signed, AES-encrypted when the config has
an EncodingAESKey, and delivered again on WeChat's cadence (same body, `window` seconds apart, up to
`deliveries` times) when the server does not answer in time — so you see exactly what a follower
would see, including "继续" for long answers.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from xml.etree import ElementTree

import aiohttp
from werobot.crypto import MessageCrypt

from bot.config import Config
from bot.wechat.protocol import sign

_TEXT = ("<xml><ToUserName><![CDATA[{account}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
         "<CreateTime>{now}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
         "<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>")


class Simulator:
    def __init__(self, cfg: Config, url: str, openid: str, session: aiohttp.ClientSession) -> None:
        self.cfg = cfg
        self.url = url
        self.openid = openid
        self.session = session
        w = cfg.wechat
        self.crypt = MessageCrypt(w.token, w.encoding_aes_key, w.app_id) if w.encoding_aes_key else None
        self.msg_id = int(time.time() * 1000)

    def _request(self, content: str) -> tuple[dict, str]:
        self.msg_id += 1
        now = str(int(time.time()))
        nonce = secrets.token_hex(5)
        xml = _TEXT.format(account="gh_simulator", openid=self.openid, now=now,
                           content=content.replace("]]>", "]]]]><![CDATA[>"), msg_id=self.msg_id)
        query = {"signature": sign(self.cfg.wechat.token, now, nonce), "timestamp": now, "nonce": nonce,
                 "openid": self.openid}
        if self.crypt is None:
            return query, xml
        encrypted = ElementTree.fromstring(self.crypt.encrypt_message(xml, now, nonce)).findtext("Encrypt") or ""
        query.update(encrypt_type="aes", msg_signature=sign(self.cfg.wechat.token, now, nonce, encrypted))
        return query, f"<xml><ToUserName><![CDATA[gh_simulator]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"

    def _content(self, body: str) -> str:
        root = ElementTree.fromstring(body)
        encrypted = root.findtext("Encrypt")
        if encrypted is not None and self.crypt is not None:
            plain = self.crypt.prp_crypto.decrypt(encrypted, self.cfg.wechat.app_id)
            root = ElementTree.fromstring(plain)
        return root.findtext("Content") or ""

    async def send(self, content: str) -> str:
        """Deliver one message on WeChat's cadence; return what the follower would see."""
        query, body = self._request(content)
        w = self.cfg.wechat
        for attempt in range(1, w.deliveries + 1):
            try:
                async with self.session.post(self.url, params=query, data=body.encode(),
                                             timeout=aiohttp.ClientTimeout(total=w.window)) as resp:
                    text = await resp.text()
                    if resp.status != 200:
                        return f"[HTTP {resp.status}: {text}]"
                    if text in ("", "success"):
                        return "[no reply shown (success)]"
                    return self._content(text)
            except TimeoutError:
                print(f"  [no answer within {w.window:g}s, WeChat delivers again ({attempt + 1})]"
                      if attempt < w.deliveries else "  [WeChat gives up]", file=sys.stderr)
        return "[该公众号暂时无法提供服务 — no reply within WeChat's window]"


async def run_simulator(cfg: Config, url: str | None = None, openid: str = "o_simulator") -> int:
    host = "127.0.0.1" if cfg.server.host in ("0.0.0.0", "::", "") else cfg.server.host
    url = url or f"http://{host}:{cfg.server.port}/wechat"
    print(f"mpgpt simulate → {url} as {openid} (Ctrl-D to quit)", file=sys.stderr)
    async with aiohttp.ClientSession() as session:
        sim = Simulator(cfg, url, openid, session)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return 0
            if not line.strip():
                continue
            try:
                print(await sim.send(line.rstrip("\n")))
            except aiohttp.ClientError as e:
                print(f"mpgpt simulate: cannot reach {url}: {e}", file=sys.stderr)
                return 1
