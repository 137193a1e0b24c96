"""Voice conversion with Debian's ffmpeg: WeChat's AMR (or Speex) in, MP3 out.

OpenAI's transcription API (and ZhipuAI's ASR) do not take AMR. ffmpeg decodes AMR-NB/WB and Speex
and encodes MP3 with libmp3lame; it runs as a subprocess with pipes (nothing on disk), bounded by a
timeout and killed when it overruns. MP3 rather than WAV: ffmpeg can only write a WAV's sizes into
a seekable file, and a pipe is not one.
"""

from __future__ import annotations

import asyncio
import shutil


class ConverterMissing(Exception):
    """ffmpeg is not installed (or not where speech.ffmpeg says)."""


class ConversionFailed(Exception):
    pass


def converter_problem(ffmpeg: str) -> str | None:
    """One line for `mpgpt doctor` when the converter cannot run, else None."""
    if shutil.which(ffmpeg) is None:
        return (f"speech.ffmpeg: {ffmpeg!r} not found — voice messages cannot be converted "
                "(install Debian's ffmpeg: apt-get install ffmpeg)")
    return None


async def to_mp3(data: bytes, ffmpeg: str, timeout: float) -> bytes:
    """The voice as 16 kHz mono MP3."""
    exe = shutil.which(ffmpeg)
    if exe is None:
        raise ConverterMissing(ffmpeg)
    proc = await asyncio.create_subprocess_exec(
        exe, "-hide_banner", "-loglevel", "error", "-i", "pipe:0", "-vn", "-ac", "1", "-ar", "16000",
        "-c:a", "libmp3lame", "-b:a", "32k", "-f", "mp3", "pipe:1",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(data), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ConversionFailed("timed out") from None
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0 or not out:
        raise ConversionFailed(err.decode("utf-8", "replace").strip()[-200:] or f"exit {proc.returncode}")
    return out
