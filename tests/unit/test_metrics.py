"""The metrics module: closed label sets, the delivery outcome words, collectors read at scrape time."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics
from bot.config import config_from_dict


def _samples(collector) -> dict[tuple, float]:
    registry = CollectorRegistry()
    registry.register(collector)
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(counter, **labels) -> float:
    return counter.labels(**labels)._value.get()


def _config(tmp_path):
    return config_from_dict({
        "wechat": {"token": "t"}, "chat": {"default_model": "m1"},
        "channels": [{"name": "main", "provider": "openai", "api_key": "k", "models": ["m1", "m2"]}],
    }, base_dir=str(tmp_path))


def test_channel_and_model_labels_outside_the_configuration_are_counted_as_other(tmp_path):
    metrics.configure(_config(tmp_path))
    assert metrics.channel_label("main") == "main"
    assert metrics.channel_label("own-key") == "own-key"
    assert metrics.channel_label("o_someones_openid") == "other"
    assert metrics.model_label("m2") == "m2"
    assert metrics.model_label("gpt-anything-a-user-typed") == "other"


def test_a_generation_with_an_unconfigured_model_lands_in_the_other_series(tmp_path):
    metrics.configure(_config(tmp_path))
    before = _value(metrics.GENERATIONS, channel="main", model="other", outcome="ok")
    metrics.generation_recorded("main", "made-up-model", "ok", 0.2, 1.0, 10, 20)
    assert _value(metrics.GENERATIONS, channel="main", model="other", outcome="ok") == before + 1
    tokens = _value(metrics.TOKENS, channel="main", model="other", kind="completion")
    metrics.generation_recorded("main", "made-up-model", "weird-outcome", None, 1.0, 0, 5)
    assert _value(metrics.GENERATIONS, channel="main", model="other", outcome="other") >= 1
    assert _value(metrics.TOKENS, channel="main", model="other", kind="completion") == tokens + 5


def test_delivery_outcomes_name_how_the_last_part_reached_the_user():
    own = dict(own_message=True, given_before=0)
    assert metrics.delivery_outcome(status="done", delivery=1, **own) == "first_reply"
    assert metrics.delivery_outcome(status="done", delivery=3, **own) == "retry"
    assert metrics.delivery_outcome(status="cut", own_message=False, delivery=1, given_before=120) == "partial_fetched"
    assert metrics.delivery_outcome(status="done", own_message=False, delivery=1, given_before=0) == "hint_fetched"
    assert metrics.delivery_outcome(status="failed", delivery=1, **own) == "failed"
    assert metrics.delivery_outcome(status="timed_out", own_message=False, delivery=1, given_before=0) == "failed"
    assert metrics.delivery_outcome(status="done", pushed=True) == "pushed"
    assert metrics.delivery_outcome(status="failed", pushed=True) == "failed"


def test_an_unknown_message_kind_or_outcome_never_becomes_a_label_value():
    metrics.message_received("<script>")
    metrics.answer_delivered("something-new", 1.0)
    text = generate_latest().decode()
    assert "<script>" not in text and "something-new" not in text
    assert 'mpgpt_wechat_messages_total{type="other"}' in text


def test_channel_state_is_read_from_the_router_at_scrape_time(tmp_path):
    metrics.configure(_config(tmp_path))
    collector = metrics.ChannelStateCollector()
    states = [SimpleNamespace(name="main", state="closed", in_flight=2, recent_failures=0)]
    collector.source = lambda: states
    got = _samples(collector)
    assert got[("mpgpt_channel_state", (("channel", "main"), ("state", "closed")))] == 1.0
    assert got[("mpgpt_channel_state", (("channel", "main"), ("state", "open")))] == 0.0
    assert got[("mpgpt_channel_in_flight", (("channel", "main"),))] == 2.0
    states[0] = SimpleNamespace(name="main", state="open", in_flight=0, recent_failures=0)
    got = _samples(collector)
    assert got[("mpgpt_channel_state", (("channel", "main"), ("state", "open")))] == 1.0
    assert got[("mpgpt_channel_state", (("channel", "main"), ("state", "closed")))] == 0.0


def test_system_load_and_memory_come_from_proc(tmp_path):
    (tmp_path / "loadavg").write_text("1.50 0.75 0.25 3/120 999\n")
    (tmp_path / "meminfo").write_text("MemTotal:       2048 kB\nMemFree:         512 kB\nMemAvailable:   1024 kB\n"
                                      "HugePages_Total:       0\n")
    got = _samples(metrics.SystemCollector(str(tmp_path)))
    assert got[("mpgpt_system_load", (("period", "1m"),))] == 1.5
    assert got[("mpgpt_system_load", (("period", "15m"),))] == 0.25
    assert got[("mpgpt_system_memory_bytes", (("kind", "total"),))] == 2048 * 1024
    assert got[("mpgpt_system_memory_bytes", (("kind", "available"),))] == 1024 * 1024
    assert not any(labels == (("kind", "HugePages_Total"),) for _, labels in got)


def test_a_machine_without_proc_files_gives_no_system_series_rather_than_a_failed_scrape(tmp_path):
    assert _samples(metrics.SystemCollector(str(tmp_path / "missing"))) == {}


def test_the_real_system_collector_reports_this_machine():
    text = generate_latest().decode()
    assert 'mpgpt_system_load{period="1m"}' in text
    assert 'mpgpt_system_memory_bytes{kind="total"}' in text
    assert "process_resident_memory_bytes" in text
