"""The demo model of `mpgpt demo`: an OpenAI-compatible endpoint served in-process on loopback.

It is a real provider endpoint, not a channel kind of its own: the demo's channel is an ordinary
`provider = "openai"` channel pointing here, so everything an owner's real channel goes through (the
OpenAI SDK, SSE chunks, the usage report, the router, breakers, metrics) runs unchanged, and no
config value exists that only the demo may use. It answers every question with the same canned
explanation of mpgpt, labelled as such, written out at a steady pace so WeChat's 5-second window, the
partial reply and 继续 can be seen.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

MODEL = "mpgpt-demo"
DISPLAY_NAME = "演示模型（预设回答，不是 AI）"

ANSWER = """【演示模型】这是 mpgpt 自带的演示模型：它不连接任何 AI，也不联网，只是按固定节奏把这段预设的说明一点点“写”出来，好让你看到真实的微信消息路径如何工作。你刚才发的是：「{question}」。

mpgpt 是什么：一个放进微信公众号里的 AI 对话服务。你运行一个 mpgpt serve，粉丝就能在公众号里直接和模型对话，模型可以是 OpenAI、智谱 GLM，或任何 OpenAI 兼容的接口（DeepSeek、Ollama、vLLM 等）。新粉丝有免费积分，用完后可以在配套网页上用微信支付充值。

刚才的等待就是微信的 5 秒窗口：微信每次投递只等 5 秒，一条消息最多投递 3 次。回答还没写完时，mpgpt 在最后一次投递里先回复已经写好的完整句子，并提示回复「继续」，你发「继续」就能取到后面的部分。一个问题只生成一次回答，不管哪次投递、哪个进程收到它；积分只在回答送达后扣除，失败则退回。

粉丝可以用的命令：帮助，继续，新对话，模型（查看或切换模型），余额，登录（一次性链接登录网页），兑换 兑换码，邀请；开放后还能用 key 设置自己的 API key。

接入真实的公众号只需四步。第一，复制 config.toml，在 [wechat] 填入公众号后台“设置与开发 → 基本配置”里的 Token、AppID 和 EncodingAESKey。第二，在 [[channels]] 填入模型服务的地址和 api_key。第三，把 mpgpt serve 放在 HTTPS 反向代理后面（deploy/ 里有 nginx、Caddy 和 systemd 的配置），在公众号后台把服务器地址设为 https://你的域名/wechat。第四，运行 mpgpt doctor 逐项检查，通过后用 mpgpt serve 启动。

日常维护用 mpgpt 的命令：users、credits、products、codes、orders、channels、words、backup、prune、doctor 和 report，详见 README。演示到此结束，发「新对话」可以重新开始。"""

CHUNK_CHARS = 5


class DemoModel:
    """Streams ANSWER in chunks of CHUNK_CHARS characters, one every `pace` seconds."""

    def __init__(self, pace: float = 0.11) -> None:
        self.pace = pace
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> "DemoModel":
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @staticmethod
    def answer_to(body: dict[str, Any]) -> str:
        messages = body.get("messages") if isinstance(body.get("messages"), list) else []
        question = next((m.get("content") for m in reversed(messages)
                         if isinstance(m, dict) and m.get("role") == "user"), "")
        if not isinstance(question, str):  # a picture question: text and image parts
            question = " ".join(p.get("text", "") for p in question if isinstance(p, dict)) or "（图片）"
        question = " ".join(question.split())
        return ANSWER.format(question=question[:40] + ("…" if len(question) > 40 else ""))

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": {"message": "body must be JSON", "type": "invalid_request_error"}},
                                     status=400)
        text = self.answer_to(body if isinstance(body, dict) else {})
        usage = {"prompt_tokens": 0, "completion_tokens": len(text) // CHUNK_CHARS + 1}
        usage["total_tokens"] = usage["completion_tokens"]
        head = {"id": "chatcmpl-demo", "created": int(time.time()), "model": MODEL}
        if not body.get("stream"):
            return web.json_response({**head, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        async def send(choices: list, **extra: Any) -> None:
            chunk = {**head, "object": "chat.completion.chunk", "choices": choices, **extra}
            await resp.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())

        try:
            for i in range(0, len(text), CHUNK_CHARS):
                delta = {"content": text[i:i + CHUNK_CHARS], **({"role": "assistant"} if i == 0 else {})}
                await send([{"index": 0, "delta": delta, "finish_reason": None}])
                await asyncio.sleep(self.pace)
            await send([{"index": 0, "delta": {}, "finish_reason": "stop"}])
            if (body.get("stream_options") or {}).get("include_usage"):
                await send([], usage=usage)
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except ConnectionError:  # the generation stopped listening (the demo is stopping): nothing to say
            pass
        return resp
