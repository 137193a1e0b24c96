"""Real media files for tests, made with Debian's codecs, and a fake of WeChat's picture CDN.

Debian's ffmpeg decodes AMR but has no AMR encoder; libopencore-amrnb0 has one, reached here with
ctypes (its C API: Encoder_Interface_init / _Encode / _exit, 160 samples of 8 kHz per 20 ms frame).
Pictures are real JPEGs from ffmpeg's test sources.
"""

from __future__ import annotations

import ctypes
import math
import subprocess
from typing import Any

from aiohttp import web

AMRNB = "/usr/lib/x86_64-linux-gnu/libopencore-amrnb.so.0"
_MR122 = 7  # 12.2 kbit/s, the mode WeChat's voice uses


def amr_voice(seconds: float = 1.0, hz: float = 440.0) -> bytes:
    """An AMR-NB file ("#!AMR\\n" + frames) of a tone, encoded by libopencore-amrnb."""
    lib = ctypes.CDLL(AMRNB)
    lib.Encoder_Interface_init.restype = ctypes.c_void_p
    lib.Encoder_Interface_init.argtypes = [ctypes.c_int]
    lib.Encoder_Interface_Encode.restype = ctypes.c_int
    lib.Encoder_Interface_Encode.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_short),
                                             ctypes.POINTER(ctypes.c_ubyte), ctypes.c_int]
    lib.Encoder_Interface_exit.argtypes = [ctypes.c_void_p]
    state = lib.Encoder_Interface_init(0)
    out = bytearray(b"#!AMR\n")
    frame = (ctypes.c_ubyte * 64)()
    try:
        for f in range(int(seconds * 50)):
            samples = (ctypes.c_short * 160)(*(int(8000 * math.sin(2 * math.pi * hz * (f * 160 + i) / 8000))
                                               for i in range(160)))
            n = lib.Encoder_Interface_Encode(state, _MR122, samples, frame, 0)
            out += bytes(frame[:n])
    finally:
        lib.Encoder_Interface_exit(state)
    return bytes(out)


def audio_seconds(data: bytes) -> float:
    """How long an audio file plays, as ffmpeg decodes it (an independent check of a conversion)."""
    result = subprocess.run(["ffmpeg", "-hide_banner", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", "8000",
                             "pipe:1"], input=data, capture_output=True, check=True)
    return len(result.stdout) / 2 / 8000


def jpeg(width: int = 64, height: int = 48, noise: bool = False) -> bytes:
    """A real JPEG; `noise` makes it big (a 1024x1024 noise picture is ~1 MB)."""
    source = f"nullsrc=s={width}x{height},geq=random(1)*255:128:128" if noise else f"testsrc=s={width}x{height}"
    return subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", source,
                           "-frames:v", "1", "-q:v", "2", "-f", "image2pipe", "-c:v", "mjpeg", "pipe:1"],
                          capture_output=True, check=True).stdout


class FakeCDN:
    """A picture host (mmbiz.qpic.cn's role): GET a path, get the picture; records every request."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.requests: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    def add(self, path: str, data: bytes, content_type: str = "image/jpeg") -> str:
        self.files[path] = (data, content_type)
        return f"{self.base_url}{path}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _get(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        if request.path not in self.files:
            return web.Response(status=404)
        data, ctype = self.files[request.path]
        return web.Response(body=data, content_type=ctype)

    async def __aenter__(self) -> FakeCDN:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._get)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
