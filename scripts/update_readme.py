"""Regenerate the generated parts of README.md (between <!-- NAME:start --> and <!-- NAME:end -->).

python scripts/update_readme.py          # rewrite README.md
python scripts/update_readme.py --check  # exit 1 if README.md is stale (tests run this)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rules_table() -> str:
    out = subprocess.run(
        [sys.executable, "-m", "vramc", "rules", "--format", "md"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return out.stdout.strip()


def bench_file(rel: str) -> str:
    p = ROOT / rel
    return p.read_text().strip() if p.exists() else f"(run the benchmark: {rel} is missing)"


def speed() -> str:
    parts = [
        (
            "`vramc check profiles/` against `yamllint profiles/` (`python bench/check_speed.py`)",
            "bench/results/check_speed.txt",
        ),
        ("GGUF header read (`python bench/header.py`)", "bench/results/header.txt"),
        (
            "`vramc run --prompt` against a bare `llama_cpp.Llama` (`python bench/run_overhead.py`)",
            "bench/results/run_overhead.txt",
        ),
        (
            "`vramc diff HEAD~1` over the shipped profiles with one of them changed, warm, against the two\n"
            "`vramc plan --format json` runs it replaces (`python bench/diff_speed.py`)",
            "bench/results/diff_speed.txt",
        ),
    ]
    out = []
    for title, rel in parts:
        out += [f"{title}:", "", "```", bench_file(rel), "```", ""]
    return "\n".join(out).strip()


SECTIONS = {"rules": rules_table, "speed": speed}


def render(text: str) -> str:
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        text = pattern.sub(lambda m: m.group(1) + make() + "\n" + m.group(2), text)  # noqa: B023  # called here
    return text


def main() -> int:
    readme = ROOT / "README.md"
    old = readme.read_text()
    new = render(old)
    if "--check" in sys.argv:
        if new != old:
            print("README.md is stale: run python scripts/update_readme.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
