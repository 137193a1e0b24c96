"""structlog set-up: console lines on a terminal, JSON lines elsewhere, context vars merged first.

The libraries underneath (aiohttp, asyncio, aiosqlite, httpx, the OpenAI and ZhipuAI SDKs) log through
the standard library; their records are rendered by the same processors (structlog's
ProcessorFormatter), so in JSON mode every line on stderr is one JSON object, whoever wrote it.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import TracebackType
from typing import TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def setup_logging(level: str = "info", fmt: str = "auto") -> bool:
    """Configure structlog and the standard library's logging; True when lines are JSON."""
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer = structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer(ensure_ascii=False)
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = _SharedLines(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            stamp,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    ))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    # aiohttp logs every access line at info; our own summary line per request replaces it.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Python's warnings and an uncaught exception become records too, not free text on stderr.
    logging.captureWarnings(True)
    if not console:
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread
    return not console


class _SharedLines(logging.Handler):
    """Writes the library's records through structlog's own logger for the same file, so both share
    its one lock per file: a line from aiosqlite's thread never lands in the middle of ours."""

    def __init__(self, file: TextIO) -> None:
        super().__init__()
        self._out = structlog.PrintLogger(file=file)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._out.msg(self.format(record))
        except Exception:
            self.handleError(record)


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        structlog.get_logger("mpgpt").critical(
            "uncaught_exception", thread=args.thread.name if args.thread else None,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    structlog.get_logger("mpgpt").critical("uncaught_exception", exc_info=(kind, exc, tb))
