"""Run every benchmark, one after the other, and write bench/RESULTS.md from what they print.

Each benchmark measures mpgpt against a baseline in the same run and writes its own section to
bench/results/NAME.md; this script only runs them and joins the sections. Run it on a quiet machine:

    python bench/run_all.py [--only wechat,providers]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHES = ["wechat", "providers", "credits", "webchat", "media", "answer_page", "postgres"]
# No benchmark takes near this long (each bounds its own phases); a stuck one ends the run with its name.
BENCH_TIMEOUT = 45 * 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated names (default: all)")
    args = parser.parse_args()
    chosen = [b for b in BENCHES if not args.only or b in args.only.split(",")]
    for name in chosen:
        script = ROOT / "bench" / f"bench_{name}.py"
        if not script.exists():
            continue
        print(f"== {name}", flush=True)
        try:
            done = subprocess.run([sys.executable, str(script), "--out", str(ROOT / "bench" / "results" / f"{name}.md")],
                                  cwd=ROOT, timeout=BENCH_TIMEOUT)
        except subprocess.TimeoutExpired:  # the child is killed; its section keeps its last run
            print(f"bench {name} did not finish within {BENCH_TIMEOUT} s", file=sys.stderr)
            return 1
        if done.returncode != 0:
            print(f"bench {name} failed with exit code {done.returncode}", file=sys.stderr)
            return done.returncode
    sections = [(ROOT / "bench" / "results" / f"{b}.md") for b in BENCHES]
    body = "\n".join(p.read_text(encoding="utf-8").rstrip() + "\n" for p in sections if p.exists())
    header = (
        "# Benchmark results\n\n"
        "Produced by `python bench/run_all.py` (each section by its own script, named in it). Every figure\n"
        "is measured against a baseline in the same run, because these machines are noisy; ratios carry\n"
        f"over, absolute numbers do not. Last assembled {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f" on {platform.machine()}, Python {platform.python_version()}.\n\n"
    )
    (ROOT / "bench" / "RESULTS.md").write_text(header + body, encoding="utf-8")
    print(f"wrote {ROOT / 'bench' / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
