"""The breaker's rules, driven by a clock the test moves."""

from __future__ import annotations

from bot.providers.breaker import Breaker, BreakerSettings

S = BreakerSettings(failures=3, window=10.0, cooldown=5.0, rate_limit_cooldown=2.0)


def test_one_error_never_opens_the_breaker() -> None:
    b = Breaker(S)
    b.failed("server", 0.0)
    assert b.state(0.0) == "closed" and b.allows(0.0)


def test_n_failures_within_the_window_open_it_for_the_cooldown() -> None:
    b = Breaker(S)
    for t in (0.0, 1.0, 2.0):
        b.failed("timeout", t)
    assert b.state(2.0) == "open" and not b.allows(6.9)
    assert b.state(7.0) == "half_open" and b.allows(7.0)


def test_only_one_probe_is_let_through_while_half_open() -> None:
    b = Breaker(S)
    for t in (0.0, 0.1, 0.2):
        b.failed("connect", t)
    assert b.begin(6.0) is True
    assert not b.allows(6.0)
    b.abandoned()  # the probe's caller gave up: another may probe
    assert b.allows(6.0)


def test_a_successful_probe_closes_and_a_failed_one_reopens() -> None:
    b = Breaker(S)
    for t in (0.0, 0.1, 0.2):
        b.failed("protocol", t)
    b.begin(6.0)
    b.failed("server", 6.1)
    assert b.state(6.1) == "open" and b.state(11.0) == "open" and b.state(11.2) == "half_open"
    b.begin(11.2)
    b.succeeded(11.3)
    assert b.state(11.3) == "closed"


def test_a_bad_request_is_neutral_but_ends_a_probe_well() -> None:
    b = Breaker(S)
    for t in (0.0, 0.1):
        b.failed("server", t)
    b.failed("bad_request", 0.2)
    b.failed("refused", 0.3)
    assert b.state(0.3) == "closed" and b.recent_failures(0.3) == 2
    b.failed("server", 0.4)
    b.begin(6.0)
    b.failed("refused", 6.1)
    assert b.state(6.1) == "closed"


def test_a_429_rests_the_channel_briefly_and_never_disables_it() -> None:
    b = Breaker(S)
    for t in range(10):
        b.failed("rate_limited", float(t))
    assert b.state(9.0) == "resting" and b.disabled_reason is None
    assert b.state(11.0) == "closed"


def test_a_rejected_key_disables_until_enabled() -> None:
    b = Breaker(S)
    b.failed("auth", 0.0, "key rejected: invalid_api_key")
    assert b.state(1e9) == "disabled" and not b.allows(1e9)
    b.enable()
    assert b.state(0.0) == "closed"
