"""The answer page served by a process that is not the one generating the answer (one shared database)."""

from __future__ import annotations

import aiohttp
import pytest

from tests.e2e.answerkit import LABEL, ON, link_in, page_events, text_of
from tests.e2e.test_answer_page import SLOW, slow_model
from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, TOKEN, ServerProcess, config_data, free_port, merge, write_toml


@pytest.fixture
def two_servers(tmp_path, llm):
    port_a, port_b = free_port(), free_port()
    data = merge(config_data(tmp_path, llm.base_url, server={"public_url": f"http://127.0.0.1:{port_a}"}), ON)
    config = write_toml(tmp_path / "config.toml", data)
    a = ServerProcess(config, port_a).start()
    b = ServerProcess(config, port_b).start()
    yield a, b
    a.stop()
    b.stop()


async def test_a_second_process_streams_the_page_of_an_answer_the_first_is_generating(two_servers, llm):
    a, b = two_servers
    llm.queue(slow_model())
    async with FakeWeChat(f"{a.url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
        d = await wx.send_text("o_two", "慢慢回答")
    link = link_in(d.content)
    assert link.startswith(a.url) and "第12句" not in d.content
    on_b = link.replace(a.url, b.url)
    async with aiohttp.ClientSession() as http:
        async with http.get(on_b) as r:
            assert r.status == 200
            assert "第1句话已经写好了。" in await r.text()
        events = await page_events(http, on_b)
        assert [n for n, _ in events].count("delta") >= 1  # followed from storage while A wrote
        assert text_of(events) == SLOW and events[-1][1]["label"] == LABEL
        async with http.get(on_b) as r:
            assert SLOW in await r.text()
    assert len(llm.requests) == 1
