"""Load a plan's model in-process with llama_cpp.Llama: progress, Ctrl-C, and plain failures.

The arguments are exactly `to_llama_kwargs(plan)` (the mapping the rendered serve script uses)
plus `verbose=False`. Two things llama-cpp-python 0.3.36 does not offer are added around it:

* progress: `Llama()` takes no progress callback, but builds its model parameters with
  `llama_cpp.llama_cpp.llama_model_default_params()`; for the duration of the constructor that
  function is wrapped to set llama.cpp's `progress_callback`. If a later version stops calling
  it, loading works the same and only the progress display is missing.
* Ctrl-C: a ctypes call cannot be interrupted by Python's KeyboardInterrupt (it is raised, and
  swallowed, inside a callback). While loading, SIGINT sets a flag and the progress callback
  returns false, which makes llama.cpp abort the load; a second Ctrl-C kills the process.

`verbose=False` makes llama-cpp-python point fds 1 and 2 at /dev/null during load, so progress is
written to `console`, a duplicate of stderr taken beforehand.
"""

from __future__ import annotations

import os
import signal
import threading
import time

MEMORY_PATTERNS = (
    "out of memory",
    "failed to allocate",
    "unable to allocate",
    "cudamalloc failed",
    "erroroutofdevicememory",
    "not enough memory",
    "cannot allocate memory",
    "insufficient memory",
    "bad_alloc",
)


QUIET_SECONDS = 1.0


class LoadError(Exception):
    def __init__(self, message: str, memory: bool = False, interrupted: bool = False) -> None:
        super().__init__(message)
        self.memory = memory
        self.interrupted = interrupted


class Progress:
    """Percent loaded: one rewritten line on a terminal; otherwise (logs) a line per quarter, once
    loading has taken a second."""

    def __init__(self, console, cancel: threading.Event) -> None:
        self.console = console
        self.cancel = cancel
        self.tty = hasattr(console, "isatty") and console.isatty()
        self.shown = -1
        self.start = time.monotonic()

    def __call__(self, progress: float, user_data) -> bool:
        try:
            pct = int(progress * 100)
            elapsed = time.monotonic() - self.start
            if self.tty:
                step = pct
            elif elapsed >= QUIET_SECONDS:  # a small model loads before anyone needs a progress bar
                step = pct // 25 * 25
            else:
                step = self.shown
            if step > self.shown:
                self.shown = step
                end = "\r" if self.tty and pct < 100 else "\n"
                self.console.write(f"loading weights {step:3d}%  {elapsed:5.1f} s{end}")
                self.console.flush()
        except Exception:  # pragma: no cover - never let an exception reach llama.cpp
            pass
        return not self.cancel.is_set()


def load_llama(llama_cpp, kwargs: dict, console, capture) -> object:
    """`llama_cpp.Llama(**kwargs)` with progress and Ctrl-C; raises LoadError with llama.cpp's words."""
    cancel = threading.Event()
    progress = Progress(console, cancel)
    ll = llama_cpp.llama_cpp
    c_progress = ll.llama_progress_callback(progress)
    default_params = ll.llama_model_default_params

    def params_with_progress():
        p = default_params()
        p.progress_callback = c_progress
        return p

    def on_sigint(signum, frame):
        cancel.set()
        console.write("\ninterrupted: stopping the load (Ctrl-C again to kill)\n")
        console.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main else None
    ll.llama_model_default_params = params_with_progress
    try:
        llm = llama_cpp.Llama(**kwargs, verbose=False)
    except Exception as e:  # llama-cpp-python raises ValueError/RuntimeError with a bare message
        if cancel.is_set():
            raise LoadError("interrupted while loading", interrupted=True) from None
        raise _explain(e, kwargs, capture) from None
    finally:
        ll.llama_model_default_params = default_params
        if in_main:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if cancel.is_set():  # Ctrl-C after the weights, while the context was created
        llm.close()
        raise LoadError("interrupted while loading", interrupted=True)
    return llm


def _explain(e: Exception, kwargs: dict, capture) -> LoadError:
    said = capture.problems() if capture is not None else []
    text = " ".join(said).lower()
    memory = any(p in text for p in MEMORY_PATTERNS)
    path = os.path.relpath(kwargs["model_path"])
    head = f"not enough memory to load {path}" if memory else f"llama.cpp could not load {path}"
    lines = [f"{head}: {e}"]
    if said and capture.console is not None:
        lines[0] += " (llama.cpp's own messages are above)"  # echoed as they came
    elif said:
        lines.append("llama.cpp said:")
        lines += [f"  {s.strip()}" for s in said]
    return LoadError("\n".join(lines), memory=memory)
