"""Every Prometheus metric mpgpt exports, as module-level objects, and the collectors read at scrape time.

Label values come only from closed sets — route names, message kinds, delivery outcomes, configured
channels and models, fixed outcome words — never an openid, a raw path or message text, so the
number of series stays bounded whatever the traffic. Channel and model names are checked against
the configuration (`configure(cfg)`); anything else is counted as "other".

This module imports no aiohttp: storage and services call it. The HTTP side (middleware, the
/metrics route) is bot/metrics_http.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from bot.config import Config

OTHER = "other"
UNMATCHED = "unmatched"

# -- HTTP ---------------------------------------------------------------------------------------------

HTTP_REQUESTS = Counter("mpgpt_http_requests_total", "HTTP requests answered, by route name and status.",
                        ["route", "method", "status"])
HTTP_SECONDS = Histogram("mpgpt_http_request_duration_seconds", "Time to answer an HTTP request, by route name.",
                         ["route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 7.5, 10, 30))

# -- WeChat ---------------------------------------------------------------------------------------------

MESSAGE_KINDS = ("text", "voice", "image", "subscribe", "unsubscribe", "event", "other")
WECHAT_MESSAGES = Counter("mpgpt_wechat_messages_total", "WeChat messages and events received (once per MsgId).",
                          ["type"])
# How an answer reached the user, counted once, when the last of it was handed over.
DELIVERY_OUTCOMES = ("first_reply", "retry", "partial_fetched", "hint_fetched", "pushed", "failed")
ANSWERS_DELIVERED = Counter("mpgpt_wechat_answers_delivered_total",
                            "Answers fully handed to the user, by how they got there.", ["outcome"])
ANSWER_DELIVERY_SECONDS = Histogram(
    "mpgpt_wechat_answer_delivery_seconds", "Time from the question's arrival to its answer being fully delivered.",
    ["outcome"], buckets=(0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 60, 120, 300, 900, 3600))

# -- media: voice heard, pictures fetched ----------------------------------------------------------------

# download, convert, transcribe (voice); fetch (picture); each with a closed outcome
MEDIA_STEPS = ("download", "convert", "transcribe", "picture")
MEDIA_OUTCOMES = ("ok", "refused", "failed", "missing_converter", "empty")
MEDIA_SECONDS = Histogram("mpgpt_media_step_seconds", "Time of one step on a follower's voice or picture.",
                          ["step", "outcome"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10))

# -- generations (one per channel attempt, recorded by the router) --------------------------------------

GENERATION_OUTCOMES = ("ok", "failed_over", "cut", "refused", "failed", "timed_out")
GENERATIONS = Counter("mpgpt_generations_total", "Model calls, one per channel attempt, by outcome.",
                      ["channel", "model", "outcome"])
FIRST_TOKEN_SECONDS = Histogram("mpgpt_generation_first_token_seconds", "Time from request to the first token.",
                                ["channel", "model"],
                                buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20, 30, 60))
GENERATION_SECONDS = Histogram("mpgpt_generation_duration_seconds", "Time from request to the end of the stream.",
                               ["channel", "model"],
                               buckets=(0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 45, 60, 90, 120, 300))
TOKENS = Counter("mpgpt_generation_tokens_total", "Tokens used, as reported by the provider (or estimated).",
                 ["channel", "model", "kind"])

# -- credits and money ----------------------------------------------------------------------------------

CREDIT_OPS = ("reserved", "settled", "refunded")
CREDITS = Counter("mpgpt_credits_total", "Credits reserved for answers, then settled (spent) or refunded.", ["op"])
ORDER_EVENTS = ("created", "create_failed", "paid", "held", "closed")
ORDERS = Counter("mpgpt_orders_total", "WeChat Pay orders created, paid, held for the owner, closed.", ["event"])
PAID_FEN = Counter("mpgpt_orders_paid_fen_total", "Money received and credited, in fen.")
REDEEM_OUTCOMES = ("redeemed", "mine", "used", "expired", "disabled", "invalid", "limited")
REDEMPTIONS = Counter("mpgpt_code_redemptions_total", "Redemption-code attempts (兑换), by outcome.", ["outcome"])

# -- companion page -----------------------------------------------------------------------------------

LOGIN_METHODS = ("link", "code", "oauth")
LOGIN_OUTCOMES = ("ok", "invalid", "limited", "error")
LOGINS = Counter("mpgpt_login_attempts_total", "Companion-page login attempts, by method and outcome.",
                 ["method", "outcome"])
TRACK_OUTCOMES = ("accepted", "invalid", "too_large", "rate_limited", "dropped")
TRACK_EVENTS = Counter("mpgpt_track_events_total", "Page-analytics events posted to /api/track, by outcome.",
                       ["outcome"])
ANSWER_PAGE_EVENTS = ("linked", "read")
ANSWER_PAGES = Counter("mpgpt_answer_pages_total", "Answer pages: a reply or push linked to one; a browser was shown "
                       "a whole answer there (chat owes no more of it).", ["event"])

# Closed label sets that every scrape should show, even at zero (a panel then says 0, not "no data").
for _op in CREDIT_OPS:
    CREDITS.labels(op=_op)
for _event in ORDER_EVENTS:
    ORDERS.labels(event=_event)
for _outcome in REDEEM_OUTCOMES:
    REDEMPTIONS.labels(outcome=_outcome)
for _method in LOGIN_METHODS:
    for _outcome in LOGIN_OUTCOMES:
        LOGINS.labels(method=_method, outcome=_outcome)
for _event in ANSWER_PAGE_EVENTS:
    ANSWER_PAGES.labels(event=_event)
for _outcome in TRACK_OUTCOMES:
    TRACK_EVENTS.labels(outcome=_outcome)


# -- closed sets from the configuration ---------------------------------------------------------------

_channels: frozenset[str] = frozenset()
_models: frozenset[str] = frozenset()


def configure(cfg: Config) -> None:
    """Learn the configured channel and model names: the only values their labels may take."""
    global _channels, _models
    _channels = frozenset(ch.name for ch in cfg.channels) | {"own-key"}
    _models = frozenset(cfg.models) | {m for ch in cfg.channels for m in ch.models}


def _closed(value: str | None, allowed: Iterable[str]) -> str:
    return value if value is not None and value in allowed else OTHER


def channel_label(name: str) -> str:
    return _closed(name, _channels)


def model_label(name: str) -> str:
    return _closed(name, _models)


# -- recording helpers (one call where the event happens) ---------------------------------------------


# labels() validates and locks on every call: the kinds are a closed set, so each child is looked up once
_MESSAGE_CHILDREN = {kind: WECHAT_MESSAGES.labels(type=kind) for kind in (*MESSAGE_KINDS, OTHER)}


def message_received(kind: str) -> None:
    _MESSAGE_CHILDREN[_closed(kind, MESSAGE_KINDS)].inc()


def media_step(step: str, outcome: str, seconds: float) -> None:
    MEDIA_SECONDS.labels(step=_closed(step, MEDIA_STEPS), outcome=_closed(outcome, MEDIA_OUTCOMES)).observe(seconds)


def delivery_outcome(*, status: str, own_message: bool = True, delivery: int = 1, given_before: int = 0,
                     pushed: bool = False) -> str:
    """Which DELIVERY_OUTCOMES word fits an answer whose last part was just handed over.

    `pushed`: by a customer-service message; else in a passive reply, and then `own_message`: the
    reply is to the question's own message (else a later message fetched it); `delivery`: which of
    WeChat's deliveries of that message got the reply (1 = the first); `given_before`: characters
    of the answer the user already had before this reply.
    """
    if status in ("failed", "timed_out"):
        return "failed"
    if pushed:
        return "pushed"
    if own_message:
        return "first_reply" if delivery <= 1 else "retry"
    return "partial_fetched" if given_before > 0 else "hint_fetched"


def answer_delivered(outcome: str, seconds: float) -> None:
    outcome = _closed(outcome, DELIVERY_OUTCOMES)
    ANSWERS_DELIVERED.labels(outcome=outcome).inc()
    ANSWER_DELIVERY_SECONDS.labels(outcome=outcome).observe(max(0.0, seconds))


def generation_recorded(channel: str, model: str, outcome: str, first_token_s: float | None, total_s: float,
                        prompt_tokens: int, completion_tokens: int) -> None:
    ch, mo = channel_label(channel), model_label(model)
    GENERATIONS.labels(channel=ch, model=mo, outcome=_closed(outcome, GENERATION_OUTCOMES)).inc()
    if first_token_s is not None:
        FIRST_TOKEN_SECONDS.labels(channel=ch, model=mo).observe(first_token_s)
    GENERATION_SECONDS.labels(channel=ch, model=mo).observe(total_s)
    if prompt_tokens:
        TOKENS.labels(channel=ch, model=mo, kind="prompt").inc(prompt_tokens)
    if completion_tokens:
        TOKENS.labels(channel=ch, model=mo, kind="completion").inc(completion_tokens)


def credits_moved(op: str, amount: int) -> None:
    if amount > 0:
        CREDITS.labels(op=_closed(op, CREDIT_OPS)).inc(amount)


def order_event(event: str, paid_fen: int = 0) -> None:
    ORDERS.labels(event=_closed(event, ORDER_EVENTS)).inc()
    if paid_fen > 0:
        PAID_FEN.inc(paid_fen)


def code_redeemed(outcome: str) -> None:
    REDEMPTIONS.labels(outcome=_closed(outcome, REDEEM_OUTCOMES)).inc()


def login_attempted(method: str, outcome: str) -> None:
    """One login try on the companion page: outcome "ok", or why it failed (LOGIN_OUTCOMES)."""
    LOGINS.labels(method=_closed(method, LOGIN_METHODS), outcome=_closed(outcome, LOGIN_OUTCOMES)).inc()


def answer_page_event(event: str) -> None:
    ANSWER_PAGES.labels(event=_closed(event, ANSWER_PAGE_EVENTS)).inc()


def track_event(outcome: str, n: int = 1) -> None:
    TRACK_EVENTS.labels(outcome=_closed(outcome, TRACK_OUTCOMES)).inc(n)


# -- collectors read at scrape time -------------------------------------------------------------------

CHANNEL_STATES = ("closed", "open", "half_open", "resting", "disabled", "off")


class ChannelStateCollector(Collector):
    """The router's channel health as gauges: one series per channel and state, 1 for the current one.

    The router is registered by the app (`watch_channels(router.states)`) and read at each scrape,
    so the gauge never lags the breaker.
    """

    def __init__(self) -> None:
        self.source: Callable[[], Sequence[Any]] | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        state = GaugeMetricFamily("mpgpt_channel_state", "Channel health (1 for the current state).",
                                  labels=["channel", "state"])
        in_flight = GaugeMetricFamily("mpgpt_channel_in_flight", "Streams open on the channel.", labels=["channel"])
        failures = GaugeMetricFamily("mpgpt_channel_recent_failures", "Failures inside the breaker's window.",
                                     labels=["channel"])
        for ch in self.source() if self.source is not None else ():
            name = channel_label(ch.name)
            for s in CHANNEL_STATES:
                state.add_metric([name, s], 1.0 if ch.state == s else 0.0)
            in_flight.add_metric([name], ch.in_flight)
            failures.add_metric([name], ch.recent_failures)
        return [state, in_flight, failures]


class SystemCollector(Collector):
    """The host's load average and memory from /proc (Linux), read at each scrape."""

    MEMINFO = {"MemTotal": "total", "MemAvailable": "available", "MemFree": "free", "Buffers": "buffers",
               "Cached": "cached", "SwapTotal": "swap_total", "SwapFree": "swap_free"}

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = Path(proc)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        out = []
        try:
            fields = (self.proc / "loadavg").read_text().split()
            load = GaugeMetricFamily("mpgpt_system_load", "System load average.", labels=["period"])
            for period, value in zip(("1m", "5m", "15m"), fields[:3]):
                load.add_metric([period], float(value))
            out.append(load)
        except (OSError, ValueError):
            pass  # not Linux: no load series rather than a failed scrape
        try:
            memory = GaugeMetricFamily("mpgpt_system_memory_bytes", "System memory from /proc/meminfo.",
                                       labels=["kind"])
            for line in (self.proc / "meminfo").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in self.MEMINFO:
                    memory.add_metric([self.MEMINFO[key]], float(rest.split()[0]) * 1024)
            out.append(memory)
        except (OSError, ValueError, IndexError):
            pass
        return out


CHANNELS = ChannelStateCollector()
REGISTRY.register(CHANNELS)
REGISTRY.register(SystemCollector())


def watch_channels(source: Callable[[], Sequence[Any]] | None) -> None:
    """Report these channel states (the router's `states`) at each scrape; None stops."""
    CHANNELS.source = source
