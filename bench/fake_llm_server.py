"""Run the fake LLM provider in its own process for benchmarks: prints its port, serves until stdin closes."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.llm import FakeLLM, Script  # noqa: E402


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--first-delay", type=float, default=0.0, help="seconds before the first chunk")
    args = parser.parse_args()
    llm = FakeLLM(Script(chunks=[f"tok{i} " for i in range(args.chunks)], prompt_tokens=12,
                         completion_tokens=args.chunks, chunk_delay=args.chunk_delay, first_delay=args.first_delay))
    await llm.start()
    # The benchmark reads no requests back; keeping them would grow memory for nothing.
    llm.requests = _Discard()  # type: ignore[assignment]
    print(llm.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await llm.close()


class _Discard(list):  # type: ignore[type-arg]
    def append(self, _: object) -> None:
        pass


if __name__ == "__main__":
    asyncio.run(main())
