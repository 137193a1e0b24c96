"""`mpgpt channels list|enable|disable|test`.

enable and disable write the disabled_channels table, the one the router keeps (a rejected key
writes it too); every running server re-reads it every `router.disabled_sync_interval` seconds.
test sends one tiny question through the channel itself, not through the router: it works on a
disabled channel too, which is how the owner checks a fixed key before enabling it again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

from bot.config import ChannelConfig, Config
from bot.providers.base import ChatMessage, ProviderError, Usage
from bot.providers.breaker import Breaker, BreakerSettings
from scripts.owner.kit import Ctx, OwnerError, group, leaf, reason_text, table
from storage.generations import DisabledChannelRepo, GenerationRepo

PROBE = "Reply with the single word: OK"


def register(subparsers: Any) -> None:
    channels = group(subparsers, "channels", "model channels: list, enable, disable, test")
    p = leaf(channels, "list", "channels, their state and the last day's use", channels_list)
    p.add_argument("--hours", type=float, default=24.0, help="usage over this many hours (default 24)")
    p = leaf(channels, "enable", "let the router use a channel again (after fixing its key or balance)",
             channels_enable)
    p.add_argument("name", help="channel name")
    p.add_argument("--reason", default="", help="why (kept in the audit trail)")
    p = leaf(channels, "disable", "keep the router off a channel until it is enabled again (--reason REASON is"
             " required: `channels list` shows it)", channels_disable)
    p.add_argument("name", help="channel name")
    p.add_argument("--reason", required=True, type=reason_text,
                   help="required: why (shown by `channels list`, kept in the audit trail)")
    p = leaf(channels, "test", "send one tiny question through a channel and time it", channels_test, needs="config")
    p.add_argument("name", help="channel name")
    p.add_argument("--model", help="model to ask (default: the channel's first)")
    p.add_argument("--timeout", type=float, default=30.0, help="give up after this many seconds (default 30)")


def channel_config(cfg: Config, name: str) -> ChannelConfig:
    for ch in cfg.channels:
        if ch.name == name:
            return ch
    raise OwnerError(f"unknown channel {name!r} (channels: {', '.join(c.name for c in cfg.channels)})")


@dataclass(frozen=True, slots=True)
class ProbeResult:
    channel: str
    model: str
    ok: bool
    first_token_ms: float | None
    total_ms: float
    completion_tokens: int
    reply: str
    error: str | None = None


async def probe(cfg: Config, name: str, model: str | None = None, timeout: float = 30.0) -> ProbeResult:
    """One question through the channel, outside the router (no breaker, no failover, no records)."""
    from bot.providers.router import Router

    ch = channel_config(cfg, name)
    model = model or ch.models[0]
    if model not in ch.models:
        raise OwnerError(f"channel {name!r} does not serve {model!r} (it serves {', '.join(ch.models)})")
    router = Router.from_config(cfg)
    channel = next(r.channel for r in router.routes if r.name == name)
    t0 = time.perf_counter()
    first: float | None = None
    text, tokens = "", 0
    try:
        async with asyncio.timeout(timeout):
            async for item in channel.stream(model, [ChatMessage("user", PROBE)]):
                if isinstance(item, Usage):
                    tokens = item.completion_tokens
                else:
                    first = first if first is not None else time.perf_counter()
                    text += item
    except ProviderError as e:
        return _result(name, model, t0, first, text, tokens, f"{e.kind}: {e}")
    except TimeoutError:
        return _result(name, model, t0, first, text, tokens, f"timeout: no answer within {timeout:g} s")
    finally:
        await router.aclose()
    return _result(name, model, t0, first, text, tokens, None)


def _result(name: str, model: str, t0: float, first: float | None, text: str, tokens: int,
            error: str | None) -> ProbeResult:
    total = (time.perf_counter() - t0) * 1000
    first_ms = None if first is None else round((first - t0) * 1000, 1)
    return ProbeResult(name, model, error is None, first_ms, round(total, 1), tokens, text.strip()[:80], error)


async def breaker_states(cfg: Config, repo: GenerationRepo, now: float) -> dict[str, str]:
    """Each channel's breaker as the servers see it, replayed from the attempts they recorded.

    A breaker lives in each server process; every attempt it judged is in storage, so the same rules
    run over the same attempts give the state (an open breaker, a half-open one) without asking them."""
    r = cfg.router
    settings = BreakerSettings(r.breaker_failures, r.breaker_window, r.breaker_cooldown, r.rate_limit_cooldown)
    breakers: dict[str, Breaker] = {}
    for attempt in await repo.attempts_since(now - r.breaker_window - r.breaker_cooldown):
        breaker = breakers.setdefault(attempt["channel"], Breaker(settings))
        if attempt["outcome"] == "ok":
            breaker.succeeded(attempt["ended_at"])
        elif attempt["error_kind"] and attempt["error_kind"] != "auth":  # a rejected key shows as disabled
            breaker.failed(attempt["error_kind"], attempt["ended_at"])
    states = {}
    for name, breaker in breakers.items():
        state = breaker.state(now)
        if state == "open":
            states[name] = "breaker open"
        elif state == "half_open":
            states[name] = "breaker half-open (next request probes)"
        elif state == "resting":
            states[name] = "resting (rate limited)"
    return states


async def channels_list(ctx: Ctx) -> None:
    from bot.providers.router import key_hash

    disabled = await DisabledChannelRepo(ctx.db).all()
    breakers = await breaker_states(ctx.cfg, GenerationRepo(ctx.db), time.time())
    usage = await GenerationRepo(ctx.db).summary(time.time() - ctx.args.hours * 3600)
    rows = []
    for ch in ctx.cfg.channels:
        mine = [u for u in usage if u["channel"] == ch.name]
        row = disabled.get(ch.name)
        if not ch.enabled:
            state = "off in config"
        elif row is not None and row[0] == key_hash(ch.api_key):
            state = f"disabled: {row[1]}"
        else:
            state = breakers.get(ch.name, "enabled")
        ok = sum(u["n"] for u in mine if u["outcome"] == "ok")
        attempts = sum(u["n"] for u in mine)
        firsts = [u["avg_first_token_ms"] for u in mine if u["outcome"] == "ok" and u["avg_first_token_ms"]]
        rows.append({"name": ch.name, "provider": ch.provider, "models": list(ch.models), "priority": ch.priority,
                     "weight": ch.weight, "state": state, "attempts": attempts, "ok": ok,
                     "failed": attempts - ok, "avg_first_token_ms": round(firsts[0], 1) if firsts else None,
                     "tokens": sum((u["prompt_tokens"] or 0) + (u["completion_tokens"] or 0) for u in mine)})
    ctx.emit(rows, lambda: table(
        [(r["name"], r["provider"], ",".join(r["models"]), r["priority"], r["weight"], r["state"], r["attempts"],
          r["failed"], r["avg_first_token_ms"], r["tokens"]) for r in rows],
        ("CHANNEL", "PROVIDER", "MODELS", "PRIORITY", "WEIGHT", "STATE", "ATTEMPTS", "FAILED", "FIRST TOKEN MS",
         "TOKENS")))


def _sync_note(ctx: Ctx) -> str:
    return f"running servers follow within {ctx.cfg.router.disabled_sync_interval:g} s"


async def channels_enable(ctx: Ctx) -> None:
    ch = channel_config(ctx.cfg, ctx.args.name)
    async with ctx.change("channels.enable", ch.name, ctx.args.reason) as change:
        removed = await DisabledChannelRepo(change.db).enable(ch.name)
        change.detail["was_disabled"] = removed
    note = "" if ch.enabled else " (but it is off in the config: set enabled = true and restart)"
    ctx.emit({"channel": ch.name, "was_disabled": removed, "audit_id": change.id},
             (f"{ch.name}: enabled; {_sync_note(ctx)}" if removed else f"{ch.name} was not disabled") + note)


async def channels_disable(ctx: Ctx) -> None:
    from bot.providers.router import key_hash

    ch = channel_config(ctx.cfg, ctx.args.name)
    async with ctx.change("channels.disable", ch.name, ctx.args.reason) as change:
        await DisabledChannelRepo(change.db).disable(ch.name, key_hash(ch.api_key), f"owner: {ctx.args.reason}",
                                                     time.time())
    ctx.emit({"channel": ch.name, "disabled": True, "audit_id": change.id},
             f"{ch.name}: disabled; {_sync_note(ctx)}")


async def channels_test(ctx: Ctx) -> int:
    result = await probe(ctx.cfg, ctx.args.name, ctx.args.model, ctx.args.timeout)
    ctx.emit(asdict(result), lambda: table(
        [(result.channel, result.model, "ok" if result.ok else "FAIL", result.first_token_ms, result.total_ms,
          result.completion_tokens, result.error or result.reply)],
        ("CHANNEL", "MODEL", "RESULT", "FIRST TOKEN MS", "TOTAL MS", "TOKENS", "REPLY / ERROR")))
    return 0 if result.ok else 1
