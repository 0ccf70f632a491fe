"""Helpers for the build and target tests: fixture projects, running `vramc build`, the pinned
llama-server, free ports and processes that are always stopped."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "build"  # a project: profiles/, templates/, golden out/


def build(paths, out: Path | str = "out", check_only: bool = False, force: bool = False) -> int:
    """`vramc build`'s exit code, as the command gives it."""
    from vramc.build.builder import cli_build
    from vramc.cli.common import build_exit_code, build_report

    outcome = cli_build(
        [Path(p) for p in paths], out=Path(out), check_only=check_only, force=force, report=build_report()
    )
    return build_exit_code(outcome)


def copy_fixture(dest: Path) -> Path:
    """The fixture project without its golden out/ (tests build their own)."""
    shutil.copytree(FIXTURE, dest, ignore=shutil.ignore_patterns("out"))
    return dest


def read_tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def llama_server_binary() -> Path | None:
    from vramc.dev.oracle import DEFAULT_BIN

    d = Path(os.environ.get("VRAMC_ORACLE_BIN") or DEFAULT_BIN)
    b = d / "llama-server"
    return b if os.access(b, os.X_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process started in its own process group (a shell, xargs and llama-server are
    stopped together); `stop()` kills exactly that group."""

    def __init__(self, argv: list[str], cwd: Path, env: dict | None = None, log: Path | None = None):
        self.log = log
        out = open(log, "wb") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        if log:
            out.close()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log else ""

    def wait_healthy(self, port: int, timeout_s: float = 20.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"no healthy server on port {port} within {timeout_s} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group this object started
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, kind, error, tb) -> None:
        self.stop()
        if isinstance(error, AssertionError):  # say what the server said
            error.args = (f"{error.args[0] if error.args else ''}\n--- server log ---\n{self.log_tail()}",)


def args_file_lines(path: Path) -> list[str]:
    """The arguments of an args file as `sed -n '/^[^#]/,$p'` leaves them (its documented use)."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    return lines[start:]


# --- systemd ---------------------------------------------------------------------------------------

# Ollama's unit as its install script writes it (scripts/install.sh): the base of the drop-in.
OLLAMA_UNIT = """\
[Unit]
Description=Ollama Service
After=network-online.target

[Service]
ExecStart=/usr/bin/ollama serve
User=ollama
Group=ollama
Restart=always
RestartSec=3

[Install]
WantedBy=default.target
"""
STAND_INS = (
    "usr/local/bin/llama-server",
    "usr/local/bin/ggml-rpc-server",
    "usr/local/bin/vllm",
    "usr/local/bin/ray",
    "usr/bin/sh",  # a vLLM Ray head's unit starts the head and vllm serve from one sh -c
    "usr/bin/python3",
    "usr/bin/ollama",
)


def systemd_root(dest: Path) -> Path:
    """A file system root for `systemd-analyze verify --root`: the system's own unit files (the
    targets our units order against), and stand-in executables where systemd looks up the
    programs our units start (verify checks that ExecStart's program exists and is executable;
    the engines themselves are not installed here)."""
    unit_dir = dest / "usr" / "lib" / "systemd"
    unit_dir.mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", unit_dir / "system", symlinks=True)
    for rel in STAND_INS:
        exe = dest / rel
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    (dest / "etc" / "systemd" / "system").mkdir(parents=True)
    return dest


def verify_unit(root: Path, name: str, text: str, dropin: str | None = None) -> str:
    """Install `text` as unit `name` (or, with `dropin`, as that unit's drop-in) in `root` and run
    systemd-analyze verify; returns its complaints ('' when the unit is clean)."""
    unit_dir = root / "etc" / "systemd" / "system"
    for old in unit_dir.glob("*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    if dropin is None:
        (unit_dir / name).write_text(text)
    else:
        (unit_dir / name).write_text(OLLAMA_UNIT)
        (unit_dir / f"{name}.d").mkdir()
        (unit_dir / f"{name}.d" / dropin).write_text(text)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", name], capture_output=True, text=True, timeout=60
    )
    complaints = (proc.stdout + proc.stderr).strip()
    return complaints or ("" if proc.returncode == 0 else f"exit status {proc.returncode}")


def unit_environment(unit_text: str) -> dict[str, str]:
    """The Environment= assignments of a unit, unquoted as systemd does for the quoted form our
    units use ("KEY=value" with \\ and \" escapes, %% for %; no $ expansion there)."""
    env = {}
    for line in unit_text.splitlines():
        if line.startswith("Environment="):
            quoted = line[len("Environment=") :]
            assert quoted.startswith('"') and quoted.endswith('"'), line
            text = re.sub(r"\\(.)", r"\1", quoted[1:-1]).replace("%%", "%")
            key, _, value = text.partition("=")
            env[key] = value
    return env


def execstart_argv(unit_text: str) -> list[str]:
    """ExecStart= split as systemd does (load-fragment.c config_parse_exec: extract_first_word with
    EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE, then specifier and $VAR resolution), for the subset of the
    syntax our units use: quoted and bare words, \\\\ \\" escapes, %% and $$."""
    joined = unit_text.replace("\\\n", " ")  # line continuation
    line = next(x for x in joined.splitlines() if x.startswith("ExecStart="))[len("ExecStart=") :]
    words, i = [], 0
    while i < len(line):
        if line[i] in " \t":
            i += 1
            continue
        word, quoted = [], False
        while i < len(line) and (quoted or line[i] not in " \t"):
            c = line[i]
            if c == '"':
                quoted = not quoted
            elif c == "\\" and i + 1 < len(line):
                i += 1
                word.append(line[i])
            else:
                word.append(c)
            i += 1
        assert not quoted, f"unbalanced quote in {line!r}"
        text = "".join(word)
        assert re.fullmatch(r"(%%|\$\$|[^%$])*", text), f"unresolved specifier or variable in {text!r}"
        words.append(text.replace("%%", "%").replace("$$", "$"))
    return words


# --- reading artifacts back as their consumers do --------------------------------------------------


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(command, argument) as ollama's parser/parser.go ParseFile reads them (FROM is "model")."""

    def unquote(s: str) -> tuple[str, bool]:
        if s.startswith('"""'):
            return (s[3:-3], True) if len(s) >= 6 and s.endswith('"""') else ("", False)
        if s.startswith('"'):
            return (s[1:-1], True) if len(s) >= 2 and s.endswith('"') else ("", False)
        return s, True

    def step(r: str, state: str) -> tuple[str, str]:
        space, newline = r in " \t", r in "\r\n"
        if state == "nil":
            return ("comment", "") if r == "#" else ("nil", "") if space or newline else ("name", r)
        if state == "name":
            if r.isascii() and r.isalpha():
                return "name", r
            assert space, f"invalid command character {r!r}"
            return "value", ""
        if state == "value":
            return ("nil", r) if space or newline else ("value", r)
        if state == "parameter":
            if r.isascii() and (r.isalnum() or r == "_"):
                return "parameter", r
            assert space, f"invalid parameter character {r!r}"
            return "value", ""
        return ("nil", "") if newline else ("comment", "")

    commands, state, buf, name = [], "nil", "", ""
    for r in text:
        nxt, out = step(r, state)
        if nxt != state:
            if state == "name":
                low = buf.lower()
                assert low in ("from", "parameter"), f"command {buf!r}"
                name = "model" if low == "from" else ""
                if low == "parameter":
                    nxt = "parameter"
            elif state == "parameter":
                name = buf
            elif state == "value":
                s, ok = unquote(buf.strip())
                if not ok or r in " \t":
                    buf += r
                    continue
                commands.append((name, s))
            buf, state = "", nxt
        if out.isprintable():
            buf += out
    if state == "value":
        s, ok = unquote(buf.strip())
        assert ok, "unterminated quote"
        commands.append((name, s))
    return commands


def read_env_file(path: Path) -> dict[str, str]:
    """The variables a POSIX shell gets from `set -a; . FILE` (what the file's header says)."""
    script = 'set -a; . "$1"; set +a; env -0'
    out = subprocess.run(
        ["env", "-i", "sh", "-c", script, "sh", str(path)], capture_output=True, check=True
    ).stdout.decode()
    env = dict(item.split("=", 1) for item in out.split("\0") if item)
    return {k: v for k, v in env.items() if k not in ("PWD", "SHLVL", "_")}
