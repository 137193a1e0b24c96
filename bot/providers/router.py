"""The router: which channel answers a question, and what happens when one fails.

Candidates are the enabled, healthy channels serving the model that have a free stream slot. The
highest `priority` tier with a candidate serves; inside a tier a channel is drawn at random in
proportion to its `weight`. Before the first token reaches the caller a failure of the channel
(connect, timeout, 429, 5xx, protocol, a rejected key) moves the request to another channel — never
one already tried for this request — up to `router.max_attempts` channels. A bad request or refused
content is the question's fault: it is not retried. After the first token there is no failover: the
caller keeps what arrived and gets `StreamCut`.

Every attempt is recorded (one `generations` row per channel tried) in a background write, so a
slow disk never holds up an answer; `flush()` waits for those writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, field

import structlog

from bot import metrics
from bot.config import ChannelConfig, Config, RouterConfig
from bot.providers.base import RETRYABLE, Channel, ChatMessage, Delta, ProviderError, Usage
from bot.providers.breaker import Breaker, BreakerSettings, State
from bot.providers.catalogue import Catalogue
from storage.generations import DisabledChannelRepo, GenerationRecord, GenerationRepo

log = structlog.get_logger(__name__)

# A rejected key says nothing about the question: another channel's key may well work.
FAILOVER = RETRYABLE | {"auth"}


class ModelUnavailable(ProviderError):
    """The model is unknown or no enabled channel serves it (a configuration matter, not a failure)."""

    def __init__(self, model: str) -> None:
        super().__init__("bad_request", f"model {model!r} is not available")
        self.model = model


class NoChannelAvailable(ProviderError):
    """Every channel serving the model is resting, open, disabled or full right now."""

    def __init__(self, model: str) -> None:
        super().__init__("server", f"no healthy channel for model {model!r} right now")
        self.model = model


class StreamCut(ProviderError):
    """The stream failed after its first token: no failover; the caller keeps what arrived."""

    def __init__(self, cause: ProviderError, channel: str) -> None:
        super().__init__(cause.kind, f"answer cut on {channel}: {cause}", cause.status)
        self.cause = cause
        self.channel = channel


@dataclass
class Route:
    channel: Channel
    priority: int = 0
    weight: int = 1
    enabled: bool = True
    key_hash: str = ""
    breaker: Breaker = field(default_factory=lambda: Breaker(BreakerSettings()))

    @property
    def name(self) -> str:
        return self.channel.name

    def has_room(self) -> bool:
        return getattr(self.channel, "in_flight", 0) < getattr(self.channel, "max_streams", 1 << 30)


@dataclass(frozen=True)
class ChannelState:
    name: str
    provider: str
    models: tuple[str, ...]
    priority: int
    weight: int
    # "off" (disabled in the config), or the breaker's: closed, open, half_open, resting, disabled
    state: str
    in_flight: int
    max_streams: int
    recent_failures: int
    disabled_reason: str | None


@dataclass
class _Attempt:
    route: Route
    openid: str
    msg_key: str | None
    model: str
    started_at: float
    t0: float
    first_token: float | None = None
    usage: Usage | None = None
    error: ProviderError | None = None

    def record(self, outcome: str, end: float) -> GenerationRecord:
        u = self.usage
        first_ms = None if self.first_token is None else (self.first_token - self.t0) * 1000
        return GenerationRecord(
            openid=self.openid, msg_key=self.msg_key, channel=self.route.name, model=self.model,
            started_at=self.started_at, first_token_ms=first_ms, total_ms=(end - self.t0) * 1000,
            prompt_tokens=u.prompt_tokens if u else 0, completion_tokens=u.completion_tokens if u else 0,
            usage_estimated=bool(u and u.estimated), outcome=outcome,
            error_kind=self.error.kind if self.error else None)

    async def relay(self, inner: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
        """A channel's stream as it comes, noting when its first token arrived and its usage."""
        async with aclosing(inner):
            async for item in inner:
                if isinstance(item, Usage):
                    self.usage = item
                elif self.first_token is None:
                    self.first_token = time.perf_counter()
                yield item


def key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


class Router:
    def __init__(self, routes: Sequence[Route], catalogue: Catalogue, settings: RouterConfig | None = None, *,
                 generations: GenerationRepo | None = None, disabled: DisabledChannelRepo | None = None,
                 rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic,
                 own_key_channel: Callable[[str, str], Channel] | None = None,
                 executor: ThreadPoolExecutor | None = None) -> None:
        self.settings = settings or RouterConfig()
        breaker = BreakerSettings(self.settings.breaker_failures, self.settings.breaker_window,
                                  self.settings.breaker_cooldown, self.settings.rate_limit_cooldown)
        self.routes = list(routes)
        for r in self.routes:
            r.breaker = Breaker(breaker)
        self.catalogue = catalogue
        self.generations = generations
        self.disabled_repo = disabled
        self.rng = rng or random.Random()
        self.clock = clock
        self._own_key_channel = own_key_channel
        self._executor = executor
        self._writes: set[asyncio.Task[None]] = set()
        self._unrecorded: list[GenerationRecord] = []
        self._recording = False
        # Channels this router saw disabled in storage: re-enabled when their row goes (the owner's
        # `mpgpt channels enable`, possibly in another process). A breaker disabled here whose row is
        # not written yet is not in the set, so a sync never undoes a fresh disable.
        self._stored_disabled: set[str] = set()
        self._synced_at: float | None = None

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Config, *, generations: GenerationRepo | None = None,
                    disabled: DisabledChannelRepo | None = None, rng: random.Random | None = None) -> Router:
        from bot.providers.openai_channel import OpenAIChannel
        from bot.providers.zhipuai_channel import ZhipuAIChannel, make_executor

        executor = None
        routes = []
        for ch in cfg.channels:
            if ch.provider == "zhipuai":
                executor = executor or make_executor(cfg.router.zhipuai_threads)
                channel: Channel = ZhipuAIChannel(ch.name, ch.base_url, ch.api_key, ch.models, executor=executor,
                                                  **_channel_options(ch))
            else:
                channel = OpenAIChannel(ch.name, ch.base_url, ch.api_key, ch.models, **_channel_options(ch))
            routes.append(Route(channel, ch.priority, ch.weight, ch.enabled, key_hash(ch.api_key)))
        served = [m for ch in cfg.channels if ch.enabled for m in ch.models]
        base_url = cfg.router.own_key_base_url

        def own_key_channel(api_key: str, model: str) -> Channel:
            return OpenAIChannel("own-key", base_url, api_key, [model], max_streams=1)

        return cls(routes, Catalogue(cfg.models, served), cfg.router, generations=generations, disabled=disabled,
                   rng=rng, own_key_channel=own_key_channel, executor=executor)

    async def load_disabled(self) -> None:
        """Follow the disabled channels in storage: disable those with a row (a row for a key since
        changed in the config is ignored), re-enable those whose row was removed since we saw it.
        Run at start and then every `disabled_sync_interval` seconds by stream()."""
        if self.disabled_repo is None:
            return
        self._synced_at = self.clock()
        rows = await self.disabled_repo.all()
        for r in self.routes:
            if r.name in rows and rows[r.name][0] == r.key_hash:
                if r.breaker.disabled_reason is None:
                    r.breaker.disable(rows[r.name][1])
                self._stored_disabled.add(r.name)
            elif r.name in self._stored_disabled:
                self._stored_disabled.discard(r.name)
                r.breaker.enable()
                log.info("channel_enabled", channel=r.name, source="storage")

    async def _sync_disabled_if_due(self) -> None:
        """Cheap periodic reload: one indexed read of a tiny table at most once per interval, by the
        first question after it, so that question already honours an owner's change. A failed read
        keeps the current state (the next interval tries again)."""
        if self.disabled_repo is None:
            return
        now = self.clock()
        if self._synced_at is not None and now - self._synced_at < self.settings.disabled_sync_interval:
            return
        self._synced_at = now
        try:
            await self.load_disabled()
        except Exception as exc:  # noqa: BLE001 - a storage hiccup must not fail a question
            log.warning("disabled_sync_failed", error=type(exc).__name__)

    async def aclose(self) -> None:
        await self.flush()
        for r in self.routes:
            await r.channel.aclose()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def flush(self) -> None:
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    # -- choosing -------------------------------------------------------------------------------
    def resolve(self, model: str) -> str:
        """The catalogue's name for a model or alias that an enabled channel serves; else ModelUnavailable."""
        name = self.catalogue.resolve(model)
        if name is None or not any(r.enabled and name in r.channel.models for r in self.routes):
            raise ModelUnavailable(model)
        return name

    def pick(self, model: str, exclude: Sequence[str] = ()) -> Route | None:
        now = self.clock()
        candidates = [r for r in self.routes
                      if r.enabled and model in r.channel.models and r.name not in exclude
                      and r.breaker.allows(now) and r.has_room()]
        if not candidates:
            return None
        top = max(r.priority for r in candidates)
        tier = [r for r in candidates if r.priority == top]
        return tier[0] if len(tier) == 1 else self.rng.choices(tier, weights=[r.weight for r in tier])[0]

    # -- streaming ------------------------------------------------------------------------------
    async def stream(self, model: str, messages: Sequence[ChatMessage], *, user: str,
                     msg_key: str | None = None) -> AsyncIterator[Delta]:
        await self._sync_disabled_if_due()
        name = self.resolve(model)
        info = self.catalogue.info(name)
        # a token-priced model's reservation counts on the answer being no longer than this
        max_tokens = info.max_output_tokens if info is not None and info.price is not None else None
        tried: list[str] = []
        pending: _Attempt | None = None  # failed before its first token; its outcome depends on what follows
        for _ in range(self.settings.max_attempts):
            route = self.pick(name, tried)
            if route is None:
                break
            if pending is not None:
                self._record(pending, "failed_over")
                pending = None
            tried.append(route.name)
            attempt = _Attempt(route, user, msg_key, name, time.time(), time.perf_counter())
            route.breaker.begin(self.clock())
            try:
                async with aclosing(attempt.relay(route.channel.stream(name, messages, max_tokens=max_tokens))) as relayed:
                    async for item in relayed:
                        yield item
            except ProviderError as err:
                attempt.error = err
                self._judge(route, err)
                if attempt.first_token is not None:
                    self._record(attempt, "cut")
                    raise StreamCut(err, route.name) from None
                if err.kind in FAILOVER:
                    log.warning("channel_failed_over", channel=route.name, model=name, kind=err.kind,
                                status=err.status)
                    pending = attempt
                    continue
                self._record(attempt, "refused" if err.kind == "refused" else "failed")
                raise
            except BaseException:
                # The caller stopped: its deadline, a cancellation, or it closed the stream early.
                route.breaker.abandoned()
                self._record(attempt, "cut" if attempt.first_token is not None else "timed_out")
                raise
            route.breaker.succeeded(self.clock())
            self._record(attempt, "ok")
            return
        if pending is None:
            raise NoChannelAvailable(name)
        assert pending.error is not None
        self._record(pending, "timed_out" if pending.error.kind == "timeout" else "failed")
        raise pending.error

    async def own_key_stream(self, api_key: str, model: str, messages: Sequence[ChatMessage], *, user: str,
                             msg_key: str | None = None) -> AsyncIterator[Delta]:
        """A follower's own OpenAI-compatible key (router.own_key_base_url): no failover, no breaker.

        A rejected key surfaces as ProviderError(kind="auth"): tell the follower in one sentence.
        """
        if self._own_key_channel is None:
            raise ModelUnavailable(model)
        name = self.catalogue.resolve(model) or model
        channel = self._own_key_channel(api_key, name)
        route = Route(channel)
        attempt = _Attempt(route, user, msg_key, name, time.time(), time.perf_counter())
        try:
            async with aclosing(attempt.relay(channel.stream(name, messages))) as relayed:
                async for item in relayed:
                    yield item
            self._record(attempt, "ok")
        except ProviderError as err:
            attempt.error = err
            cut = attempt.first_token is not None
            self._record(attempt, "cut" if cut else "refused" if err.kind == "refused" else "failed")
            if cut:
                raise StreamCut(err, channel.name) from None
            raise
        except BaseException:
            self._record(attempt, "cut" if attempt.first_token is not None else "timed_out")
            raise
        finally:
            await channel.aclose()

    # -- health ---------------------------------------------------------------------------------
    def _judge(self, route: Route, err: ProviderError) -> None:
        route.breaker.failed(err.kind, self.clock(), str(err))
        if err.kind == "auth":
            # Loud and once: the owner must act (fix the key or top up) and re-enable the channel.
            log.error("channel_disabled", channel=route.name, reason=str(err), status=err.status,
                      action=f"fix the key or balance, then: mpgpt channels enable {route.name}")
            if self.disabled_repo is not None:
                self._background(self._persist_disable(route, str(err)[:200]))

    async def _persist_disable(self, route: Route, reason: str) -> None:
        assert self.disabled_repo is not None
        await self.disabled_repo.disable(route.name, route.key_hash, reason, time.time())
        # From now on a missing row means the owner re-enabled it.
        self._stored_disabled.add(route.name)

    def states(self) -> list[ChannelState]:
        now = self.clock()
        out = []
        for r in self.routes:
            state: State | str = r.breaker.state(now) if r.enabled else "off"
            out.append(ChannelState(
                name=r.name, provider=getattr(r.channel, "provider", "?"), models=tuple(r.channel.models),
                priority=r.priority, weight=r.weight, state=state, in_flight=getattr(r.channel, "in_flight", 0),
                max_streams=getattr(r.channel, "max_streams", 0), recent_failures=r.breaker.recent_failures(now),
                disabled_reason=r.breaker.disabled_reason))
        return out

    async def enable(self, name: str) -> bool:
        """The owner re-enables a channel (clears a disable and the breaker)."""
        found = False
        self._stored_disabled.discard(name)
        for r in self.routes:
            if r.name == name:
                r.breaker.enable()
                found = True
        if self.disabled_repo is not None:
            found = await self.disabled_repo.enable(name) or found
        return found

    # -- records --------------------------------------------------------------------------------
    def _record(self, attempt: _Attempt, outcome: str) -> None:
        rec = attempt.record(outcome, time.perf_counter())
        log.info("generation_attempt", channel=rec.channel, model=rec.model, outcome=outcome,
                 first_token_ms=None if rec.first_token_ms is None else round(rec.first_token_ms, 1),
                 total_ms=round(rec.total_ms, 1), prompt_tokens=rec.prompt_tokens,
                 completion_tokens=rec.completion_tokens, estimated=rec.usage_estimated)
        metrics.generation_recorded(rec.channel, rec.model, outcome,
                                    None if rec.first_token_ms is None else rec.first_token_ms / 1000,
                                    rec.total_ms / 1000, rec.prompt_tokens, rec.completion_tokens)
        if self.generations is not None:
            self._unrecorded.append(rec)
            if not self._recording:  # one write at a time: records that come meanwhile go in the next
                self._recording = True
                self._background(self._record_pending(self.generations))

    async def _record_pending(self, generations: GenerationRepo) -> None:
        try:
            while self._unrecorded:
                batch, self._unrecorded = self._unrecorded, []
                await _logged(generations.record_many(batch))
        finally:
            self._recording = False

    def _background(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(_logged(coro))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)


async def _logged(coro) -> None:  # type: ignore[no-untyped-def]
    try:
        await coro
    except Exception as exc:  # noqa: BLE001 - a lost usage row must not break an answer
        log.error("generation_record_failed", error=type(exc).__name__)


def _channel_options(ch: ChannelConfig) -> dict[str, float]:
    return {"connect_timeout": ch.connect_timeout, "first_token_timeout": ch.first_token_timeout,
            "total_timeout": ch.total_timeout, "max_streams": ch.max_streams}
