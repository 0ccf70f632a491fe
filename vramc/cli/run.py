"""Where `vramc run` talks (vramc.run.runner takes it as its Console)."""

from __future__ import annotations

import os
import sys


class Console:
    """A duplicate of stderr, because llama-cpp-python points fd 2 at /dev/null while it loads
    (verbose=False) and progress must still show; --prompt's completion goes to stdout."""

    def __init__(self) -> None:
        try:
            self.stream = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
        except OSError:  # pragma: no cover - no fd 2
            self.stream = sys.stderr

    def write(self, text: str) -> None:
        self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def say(self, text: str) -> None:
        self.stream.write(f"vramc run: {text}\n")
        self.stream.flush()

    def answer(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()
