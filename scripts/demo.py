"""`mpgpt demo`: see it work in one command — no key, no account, no network.

The real server (the /wechat path with its signatures and 5-second window, the rules, credits, the
companion page) runs on loopback against the demo model (scripts/demo_model.py, an OpenAI-compatible
endpoint in this process that writes a canned explanation of mpgpt at a steady pace). The simulator
is attached: each line typed is a follower's message, delivered as WeChat delivers it, and the reply
printed is what the follower sees. The page's address and a one-time link that logs it in (what 登录
answers) are printed first. The data lives in a temporary folder unless `--data DIR`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the rest is imported when the demo runs: every `mpgpt` command registers it
    from bot.config import Config

FOLLOWER = "o_demo_follower"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="see it work: the real server with a demo model and the simulator "
                                           "(no key, no account, no network)")
    p.add_argument("--data", metavar="DIR", help="keep the demo's database in DIR (default: a temporary folder, "
                                                  "removed at exit)")
    p.add_argument("--port", type=int, default=0, help="the demo server's port on 127.0.0.1 (default: a free one)")
    p.add_argument("--time-scale", type=float, default=1.0, metavar="X",
                   help="run WeChat's window and the demo model X times faster (default 1: real time)")
    p.set_defaults(func=run)


def demo_config(port: int, data_dir: Path, model_url: str, scale: float = 1.0) -> Config:
    """The demo's whole configuration: the shipped defaults, the demo model, WeChat's timing / scale."""
    from bot.config import config_from_dict
    from scripts.demo_model import DISPLAY_NAME, MODEL

    window = 5.0 / scale
    return config_from_dict({
        "server": {"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}",
                   "shutdown_timeout": 3.0},
        "storage": {"path": str(data_dir / "mpgpt.db")},
        "wechat": {"token": secrets.token_urlsafe(16), "window": window,
                   "reply_margin": min(window / 2, max(0.6 / scale, 0.2))},
        "chat": {"default_model": MODEL},
        "channels": [{"name": "demo", "provider": "openai", "base_url": model_url, "api_key": "demo-needs-no-key",
                      "models": [MODEL]}],
        "models": {MODEL: {"display_name": DISPLAY_NAME, "cost": 1}},
        "log": {"level": "warning", "format": "auto"},
        "metrics": {"port": 0, "token": secrets.token_urlsafe(16)},
    }, env={}, base_dir=str(data_dir))


def run(args: argparse.Namespace) -> int:
    from bot.logs import setup_logging
    from scripts.serving import ListenError, bind, run_loop

    if not args.time_scale > 0:
        print("mpgpt: demo: --time-scale must be greater than 0", file=sys.stderr)
        return 2
    setup_logging("warning", "auto")
    data_dir = Path(args.data).resolve() if args.data else Path(tempfile.mkdtemp(prefix="mpgpt-demo-"))
    try:
        try:
            sock = bind("127.0.0.1", args.port)
        except ListenError as e:
            print(f"mpgpt: {e}", file=sys.stderr)
            return 1
        return run_loop(asyncio.new_event_loop(), _demo(sock, data_dir, args.time_scale, kept=bool(args.data)))
    finally:
        if not args.data:
            shutil.rmtree(data_dir, ignore_errors=True)


async def _demo(sock: Any, data_dir: Path, scale: float, kept: bool) -> int:
    from scripts.composition import create_app
    from scripts.demo_model import DemoModel
    from scripts.serving import serve

    model = await DemoModel(pace=DemoModel().pace / scale).start()
    try:
        cfg = demo_config(sock.getsockname()[1], data_dir, model.base_url, scale)
        return await serve(cfg, create_app(cfg), sock, until=lambda: _follower(cfg, data_dir, kept),
                            exiting=True)
    finally:
        await model.close()


async def _follower(cfg: Config, data_dir: Path, kept: bool) -> None:
    """The owner types as a follower; first, the page's address and a link that logs it in."""
    import aiohttp

    from scripts.demo_model import DISPLAY_NAME
    from scripts.simulate import Simulator

    base = cfg.server.public_url
    async with aiohttp.ClientSession() as session:
        sim = Simulator(cfg, f"{base}/wechat", FOLLOWER, session)
        login_word = cfg.commands.login[0]
        found = re.search(r"\S+#login=\S+", await sim.send(login_word))
        w = cfg.wechat
        print(f"""mpgpt demo: the real server on {base}, answering with a DEMO MODEL ("{DISPLAY_NAME}":
canned text written at a steady pace; no AI, no key, no network). You type as a follower; each line
goes to {base}/wechat signed as WeChat sends it, again every {w.window:g}s while unanswered (at most {w.deliveries}
times), and what you see below is what the follower sees in WeChat.

  companion page:  {base}/
  log it in as this follower (one-time link, what 「{login_word}」 answers):
                   {found.group(0) if found else "(no link: see the log above)"}
  data:            {data_dir}{"" if kept else " (removed at exit; --data DIR keeps it)"}

Try: 你好 (watch the 5-second window, the partial reply, then 继续), 帮助, 余额, {login_word}. Ctrl-D quits.
""", flush=True)
        lines = _stdin_lines()
        while True:
            line = await lines.get()
            if line is None:
                return
            if not line.strip():
                continue
            if not sys.stdin.isatty():
                print(f"> {line.rstrip()}", flush=True)
            print(await sim.line(line.rstrip("\n")), flush=True)


def _stdin_lines() -> asyncio.Queue[str | None]:
    """Lines typed, read by a daemon thread: a read waiting on the terminal never holds up the exit
    (Ctrl-C, or the server stopping), as a read in the loop's executor would."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line)
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except RuntimeError:  # the loop closed meanwhile: the demo is over
            pass

    threading.Thread(target=read, name="demo-stdin", daemon=True).start()
    return queue
