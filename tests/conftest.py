from __future__ import annotations

import pytest

from tests.fakes.llm import FakeLLM


@pytest.fixture
async def llm():
    async with FakeLLM() as fake:
        yield fake
