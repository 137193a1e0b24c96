"""`mpgpt simulate`: play WeChat's servers against a running mpgpt from a terminal.

Each line you type is sent as a follower's text message: signed, AES-encrypted when the config has
an EncodingAESKey, and delivered again on WeChat's cadence (same body, `window` seconds apart, up to
`deliveries` times) when the server does not answer in time — so you see exactly what a follower
would see, including "继续" for long answers.

Voice and pictures: `/voice FILE` (an AMR or Speex recording) and `/picture FILE [question]` send them
as a follower would. With `--media-port P` the simulator also plays WeChat's media server on
127.0.0.1:P — `/cgi-bin/stable_token`, `/cgi-bin/media/get` and the pictures' PicUrl — so a server
started with `wechat.api_base = "http://127.0.0.1:P"` fetches them from here.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from xml.etree import ElementTree

from pathlib import Path

import aiohttp
from aiohttp import web
from werobot.crypto import MessageCrypt

from bot.config import Config
from bot.wechat.protocol import sign

_VOICE = ("<xml><ToUserName><![CDATA[{account}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
          "<CreateTime>{now}</CreateTime><MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[{media_id}]]></MediaId>"
          "<Format><![CDATA[{fmt}]]></Format><MsgId>{msg_id}</MsgId></xml>")
_IMAGE = ("<xml><ToUserName><![CDATA[{account}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
          "<CreateTime>{now}</CreateTime><MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[{pic_url}]]></PicUrl>"
          "<MediaId><![CDATA[{media_id}]]></MediaId><MsgId>{msg_id}</MsgId></xml>")
_TYPES = {".amr": "audio/amr", ".speex": "audio/speex", ".spx": "audio/speex", ".jpg": "image/jpeg",
          ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif", ".webp": "image/webp"}

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
        # media/get's files, by MediaId, and where they are served (None: no media server)
        self.media: dict[str, tuple[bytes, str]] = {}
        self.media_url: str | None = None

    def _request(self, content: str, template: str = _TEXT, **fields: str) -> tuple[dict, str]:
        self.msg_id += 1
        now = str(int(time.time()))
        nonce = secrets.token_hex(5)
        xml = template.format(account="gh_simulator", openid=self.openid, now=now,
                              content=content.replace("]]>", "]]]]><![CDATA[>"), msg_id=self.msg_id, **fields)
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

    async def line(self, line: str) -> str:
        """One typed line: text, or `/voice FILE`, or `/picture FILE [question]`."""
        command, _, rest = line.partition(" ")
        if command not in ("/voice", "/picture"):
            return await self.send(line)
        path, _, question = rest.strip().partition(" ")
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            return f"[cannot read {path!r}: {e.strerror}]"
        if self.media_url is None:
            return "[start mpgpt simulate with --media-port to send voice and pictures]"
        media_id = secrets.token_urlsafe(24)
        self.media[media_id] = (data, _TYPES.get(Path(path).suffix.lower(), "application/octet-stream"))
        if command == "/voice":
            fmt = "speex" if "speex" in self.media[media_id][1] else "amr"
            return await self.send("", _VOICE, media_id=media_id, fmt=fmt)
        picture = asyncio.create_task(self.send("", _IMAGE, media_id=media_id,
                                                pic_url=f"{self.media_url}/simulator/{media_id}"))
        if not question.strip():
            return await picture
        await asyncio.sleep(0.2)  # a follower's question right after the picture takes it along
        answer = await self.send(question.strip())
        await picture
        return answer

    async def serve_media(self, port: int) -> web.AppRunner:
        """WeChat's side of voice and pictures: a token, media/get and the PicUrl, on 127.0.0.1:port."""
        async def token(request: web.Request) -> web.Response:
            return web.json_response({"access_token": "simulator-token", "expires_in": 7200})

        async def media_get(request: web.Request) -> web.Response:
            found = self.media.get(request.query.get("media_id", "") or request.match_info.get("id", ""))
            if found is None:
                return web.json_response({"errcode": 40007, "errmsg": "invalid media_id"}, content_type="text/plain")
            return web.Response(body=found[0], content_type=found[1])

        app = web.Application()
        app.router.add_post("/cgi-bin/stable_token", token)
        app.router.add_get("/cgi-bin/media/get", media_get)
        app.router.add_get("/simulator/{id}", media_get)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.media_url = f"http://127.0.0.1:{port}"
        return runner

    async def send(self, content: str, template: str = _TEXT, **fields: str) -> str:
        """Deliver one message on WeChat's cadence; return what the follower would see."""
        query, body = self._request(content, template, **fields)
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


async def run_simulator(cfg: Config, url: str | None = None, openid: str = "o_simulator",
                        media_port: int = 0) -> int:
    host = "127.0.0.1" if cfg.server.host in ("0.0.0.0", "::", "") else cfg.server.host
    url = url or f"http://{host}:{cfg.server.port}/wechat"
    print(f"mpgpt simulate → {url} as {openid} (Ctrl-D to quit; /voice FILE, /picture FILE [question])",
          file=sys.stderr)
    async with aiohttp.ClientSession() as session:
        sim = Simulator(cfg, url, openid, session)
        runner = await sim.serve_media(media_port) if media_port else None
        if runner is not None:
            print(f"  media server on {sim.media_url} (the server's wechat.api_base must point here)", file=sys.stderr)
        loop = asyncio.get_running_loop()
        try:
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    return 0
                if not line.strip():
                    continue
                try:
                    print(await sim.line(line.rstrip("\n")), flush=True)
                except aiohttp.ClientError as e:
                    print(f"mpgpt simulate: cannot reach {url}: {e}", file=sys.stderr)
                    return 1
        finally:
            if runner is not None:
                await runner.cleanup()
