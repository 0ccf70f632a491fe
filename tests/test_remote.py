"""Remote GGUF headers (`vramc analyze URL`, hf://): a real HTTP server on 127.0.0.1 serving sparse
GGUFs written by vramc.dev.synth, with and without Range, redirects, 401, 404, slow, truncated and
hostile answers. Every test is bounded: the client's timeout is short and the server is local."""

from __future__ import annotations

import http.client
import json
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from vramc.cli.commands import app
from vramc.dev.synth import CATALOG, write_sparse_gguf
from vramc.load.schema import Model
from vramc.model import remote
from vramc.model.gguf import GGUFError, read_gguf, read_header
from vramc.model.modelmeta import ModelMeta

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_secret"


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, Path]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files = files  # name -> file
        self.seen: list[tuple[str, dict]] = []  # (path, headers) of every request
        self.sent = 0  # body bytes written
        self.flaky: set[str] = set()
        self.listing: dict[str, list[str]] = {}
        self.proxied: list[str] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def send_body(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.sent += len(body)

    def file_range(self, name: str, *, ranges: bool = True, cut: bool = False) -> None:
        path = self.server.files.get(name)
        if path is None:
            return self.send_body(404, b"not found")
        size = path.stat().st_size
        rng = self.headers.get("Range")
        if not ranges or not rng:
            # the whole file, streamed until the client hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            try:
                with open(path, "rb") as f:
                    while block := f.read(1 << 16):
                        self.wfile.write(block)
                        self.server.sent += len(block)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return None
        start, end = (int(x) for x in rng.removeprefix("bytes=").split("-"))
        end = min(end, size - 1)
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        headers = {
            "Content-Range": f"bytes {start}-{end}/{size}",
            "Accept-Ranges": "bytes",
        }
        if cut:  # promise the range, send half, hang up
            self.send_response(206)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.server.sent += len(body) // 2
            self.close_connection = True
            return None
        return self.send_body(206, body, headers)

    def do_GET(self) -> None:
        srv: Server = self.server
        path = self.path
        if path.startswith("http://"):  # asked as a proxy: the absolute URL of the target
            srv.proxied.append(path)
            path = "/" + path.split("/", 3)[3]
        srv.seen.append((path, dict(self.headers)))
        kind, _, rest = path.lstrip("/").partition("/")
        if kind == "range":
            return self.file_range(rest)
        if kind == "norange":
            return self.file_range(rest, ranges=False)
        if kind == "cut":
            return self.file_range(rest, cut=True)
        if kind == "flaky":
            if rest not in srv.flaky:
                srv.flaky.add(rest)
                return self.send_body(503, b"busy", {"Retry-After": "0"})
            return self.file_range(rest)
        if kind == "redirect":
            return self.send_body(302, b"", {"Location": f"/range/{rest}"})
        if kind == "loop":
            return self.send_body(302, b"", {"Location": "/loop/again"})
        if kind == "ftp":
            return self.send_body(302, b"", {"Location": "ftp://127.0.0.1/x.gguf"})
        if kind == "slow":
            time.sleep(3)
            return self.file_range(rest)
        if kind == "html":
            page = b"<!DOCTYPE html><html>a model page</html>"
            return self.send_body(
                206,
                page,
                {
                    "Content-Range": f"bytes 0-{len(page) - 1}/{len(page)}",
                    "Content-Type": "text/html",
                },
            )
        if kind == "liar":  # a Content-Range far bigger than what was asked
            return self.send_body(206, b"GGUF", {"Content-Range": "bytes 0-99999999/100000000"})
        if kind == "api":  # /api/models/ORG/REPO/revision/REV
            parts = rest.split("/")
            repo = "/".join(parts[1:3])
            if repo == "org/gated" and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self.send_body(401, b"gated")
            if repo == "org/garbage":
                return self.send_body(200, b"<html>not json</html>", {"Content-Type": "text/html"})
            if repo == "org/odd":
                doc = {"sha": "x", "siblings": [{"rfilename": "a\x1b[2J-Q4_K_M.gguf"}]}
                return self.send_body(200, json.dumps(doc).encode())
            if repo not in srv.listing:
                return self.send_body(404, b"no such repo")
            doc = {
                "sha": COMMIT,
                "siblings": [{"rfilename": f} for f in srv.listing[repo]],
            }
            return self.send_body(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})
        if "/resolve/" in path:  # /ORG/REPO/resolve/REV/FILE -> the "CDN"
            repo, _, tail = path.lstrip("/").partition("/resolve/")
            if repo == "org/gated" and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self.send_body(403, b"gated")
            file = tail.partition("/")[2]
            return self.send_body(302, b"", {"Location": f"/range/{file.rsplit('/', 1)[-1]}"})
        return self.send_body(404, b"not found")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("remote")
    shape = CATALOG["llama-3.1-8b-instruct"]
    return {
        f"llama-8b-{q}.gguf": write_sparse_gguf(root / f"llama-8b-{q}.gguf", shape, q)
        for q in ("Q4_K_M", "Q8_0", "Q2_K")
    }


@pytest.fixture
def server(models, tmp_path, monkeypatch):
    for var in (
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "HF_TOKEN",
        "VRAMC_OFFLINE",
        "HF_HUB_OFFLINE",
        "VRAMC_NO_CACHE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("VRAMC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VRAMC_HTTP_TIMEOUT", "1")
    srv = Server(dict(models))
    srv.listing["org/repo"] = [
        "README.md",
        "llama-8b-Q4_K_M.gguf",
        "llama-8b-Q8_0.gguf",
        "mmproj-llama-8b-Q4_K_M.gguf",
        "split/big-Q6_K-00001-of-00002.gguf",
        "split/big-Q6_K-00002-of-00002.gguf",
    ]
    srv.listing["org/quants"] = [
        "llama-8b-Q2_K.gguf",
        "llama-8b-Q4_K_M.gguf",
        "llama-8b-Q8_0.gguf",
        "mmproj-F16.gguf",
        "README.md",
    ]
    monkeypatch.setenv("HF_ENDPOINT", srv.base)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _http(**kw) -> remote.Http:
    return remote.Http(timeout=kw.pop("timeout", 1.0), backoff=0.01, **kw)


# --- what is read --------------------------------------------------------------------------
def test_an_8b_header_over_range_requests(server, models):
    local = models["llama-8b-Q4_K_M.gguf"]
    header = read_header(local)
    http = _http()
    got = remote.read_remote(f"{server.base}/range/llama-8b-Q4_K_M.gguf", http=http)
    want = read_gguf(local)
    assert got.meta.tensors == want.tensors and got.meta.hparams == want.hparams
    assert (got.meta.file_size, got.meta.header_sha256) == (
        want.file_size,
        want.header_sha256,
    )
    # never the tensor data: the header plus at most one read-ahead chunk
    assert header.data_offset < http.transferred <= header.data_offset + remote.READ_AHEAD
    assert server.sent == http.transferred
    assert header.file_size > 4 * 2**30  # the file is 4.9 GB; a few MB crossed the wire
    assert all(h.get("Range", "").startswith("bytes=") for _, h in server.seen)


def test_a_redirect_is_followed(server):
    got = remote.read_remote(f"{server.base}/redirect/llama-8b-Q4_K_M.gguf", http=_http())
    assert got.meta.architecture == "llama"
    assert [p for p, _ in server.seen][:2] == [
        "/redirect/llama-8b-Q4_K_M.gguf",
        "/range/llama-8b-Q4_K_M.gguf",
    ]


def test_a_server_without_range_is_refused_not_downloaded(server, models):
    with pytest.raises(remote.RemoteError, match="ignores HTTP Range requests.*download the file"):
        remote.read_remote(f"{server.base}/norange/llama-8b-Q4_K_M.gguf", http=_http())
    assert server.sent < 64 * 2**20  # it stopped reading; the file is 4.9 GB


def test_the_proxy_variables_are_honoured(server, monkeypatch):
    monkeypatch.setenv("http_proxy", server.base)
    got = remote.read_remote("http://models.example/range/llama-8b-Q4_K_M.gguf", http=_http())
    assert got.meta.architecture == "llama"
    assert server.proxied[0] == "http://models.example/range/llama-8b-Q4_K_M.gguf"


def test_transient_failures_are_retried(server):
    http = _http()
    got = remote.read_remote(f"{server.base}/flaky/llama-8b-Q4_K_M.gguf", http=http)
    assert got.meta.architecture == "llama"
    assert [p for p, _ in server.seen].count("/flaky/llama-8b-Q4_K_M.gguf") >= 2


@pytest.mark.parametrize(
    "path, message",
    [
        ("/nothing.gguf", r"not found \(HTTP 404\)"),
        ("/loop/x", "redirect loop"),
        ("/ftp/x", "redirect|not http"),
        ("/html/x", r'starts with "<!DO" \(not a GGUF file'),
        ("/liar/x", "sent bytes 0-99999999 of 100000000 when asked for 0-1048575"),
        ("/cut/llama-8b-Q4_K_M.gguf", "cut short"),
        ("/slow/llama-8b-Q4_K_M.gguf", "timed out|no answer"),
    ],
)
def test_bad_answers_are_clear_errors(server, path, message):
    start = time.monotonic()
    with pytest.raises((remote.RemoteError, GGUFError), match=message):
        remote.read_remote(server.base + path, http=_http(attempts=2))
    assert time.monotonic() - start < 15  # bounded: no hang


def test_a_huge_declared_length_is_not_fetched(server, tmp_path):
    # a header whose first key claims a 1 GiB string, in a "file" of 4 GiB
    body = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 30) + b"k" * 64
    big = tmp_path / "huge.gguf"
    big.write_bytes(body)
    import os

    os.truncate(big, 4 << 30)
    server.files["huge.gguf"] = big
    with pytest.raises((remote.RemoteError, GGUFError), match="needs|runs past|vramc allows"):
        remote.read_remote(f"{server.base}/range/huge.gguf", http=_http())
    assert server.sent <= 2 * remote.READ_AHEAD


@pytest.mark.parametrize(
    "ref",
    [
        "hf://org",
        "hf://org/re po:Q4",
        "hf://../x/y.gguf",
        "hf://org/repo/../x.gguf",
        "hf://org/repo/x.bin",
        "hf://org/repo:Q4 K",
        "http://",
        "https://host:notaport/x.gguf",
        "ftp://x/y.gguf",
        "hf://org/repo/a\nb.gguf",
    ],
)
def test_malformed_references(ref):
    with pytest.raises(remote.RemoteError):
        remote.parse_ref(ref)


# --- Hugging Face ----------------------------------------------------------------------------
def test_hf_quant_picks_the_file_llama_cpp_would(server):
    got = remote.read_remote("hf://org/repo:q4_k_m", http=_http())
    assert got.source == f"hf://org/repo@{COMMIT}/llama-8b-Q4_K_M.gguf"
    assert got.revision == COMMIT and got.file_name == "llama-8b-Q4_K_M.gguf"
    assert got.urls == [f"{server.base}/org/repo/resolve/{COMMIT}/llama-8b-Q4_K_M.gguf"]
    assert server.seen[0][0] == "/api/models/org/repo/revision/main"


def test_hf_quant_none_or_several(server):
    with pytest.raises(remote.RemoteError) as e:
        remote.read_remote("hf://org/repo:Q5_K_M", http=_http())
    assert "no GGUF model file of quant Q5_K_M" in str(e.value)
    assert "  llama-8b-Q8_0.gguf\n" in str(e.value) and "split/big-Q6_K-00001-of-00002.gguf" in str(e.value)
    assert "mmproj" not in str(e.value) and "00002-of" not in str(e.value)
    server.listing["org/repo"].append("other/llama-8b-Q4_K_M.gguf")
    with pytest.raises(remote.RemoteError, match="2 files match quant Q4_K_M"):
        remote.read_remote("hf://org/repo:Q4_K_M", http=_http())
    with pytest.raises(remote.RemoteError, match="name the quant"):
        remote.read_remote("hf://org/repo", http=_http())


def test_hf_gated_says_how_to_get_access(server, monkeypatch):
    server.listing["org/gated"] = ["llama-8b-Q4_K_M.gguf"]
    with pytest.raises(remote.RemoteError, match="gated or private.*set HF_TOKEN"):
        remote.read_remote("hf://org/gated:Q4_K_M", http=_http())
    got = remote.read_remote("hf://org/gated:Q4_K_M", http=_http(token=TOKEN))
    assert got.meta.architecture == "llama"
    # the token went to the Hub, not to where it redirected
    sent = {p: h.get("Authorization") for p, h in server.seen}
    assert sent["/api/models/org/gated/revision/main"] == f"Bearer {TOKEN}"
    assert sent[f"/org/gated/resolve/{COMMIT}/llama-8b-Q4_K_M.gguf"] == f"Bearer {TOKEN}"


def test_hf_hostile_listings(server):
    with pytest.raises(remote.RemoteError, match="did not answer with a repository listing"):
        remote.read_remote("hf://org/garbage:Q4_K_M", http=_http())
    with pytest.raises(remote.RemoteError, match="no GGUF model file of quant") as e:
        remote.read_remote("hf://org/odd:Q4_K_M", http=_http())
    assert "\x1b" not in str(e.value)  # a file name cannot drive the terminal


def test_the_token_goes_to_the_hub_only(server, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    port = server.server_address[1]
    remote.read_remote(f"http://localhost:{port}/range/llama-8b-Q4_K_M.gguf")
    assert [h.get("Authorization") for _, h in server.seen] == [None] * len(server.seen)
    server.listing["org/gated"] = ["llama-8b-Q4_K_M.gguf"]
    assert remote.read_remote("hf://org/gated:Q4_K_M").meta.architecture == "llama"


def test_hf_missing_repo_and_file(server):
    with pytest.raises(remote.RemoteError, match="no repository org/none"):
        remote.read_remote("hf://org/none:Q4_K_M", http=_http())
    with pytest.raises(remote.RemoteError, match="x.gguf is not in org/repo"):
        remote.read_remote("hf://org/repo/x.gguf", http=_http())


def test_split_model_reads_every_part(server, tmp_path):
    from conftest import llama_keys, llama_tensors, write_gguf

    parts = write_gguf(tmp_path / "big.gguf", llama_tensors(), llama_keys, split_max_tensors=8)
    for p in parts:
        server.files[p.name] = p
    got = remote.read_remote(f"{server.base}/range/{parts[0].name}", http=_http())
    want = read_gguf(parts[0])
    assert (got.meta.splits, got.meta.header_sha256, got.meta.file_size) == (
        3,
        want.header_sha256,
        want.file_size,
    )
    assert len(got.urls) == 3
    server.files.pop(parts[2].name)
    with pytest.raises(remote.RemoteError, match="404"):
        remote.read_remote(f"{server.base}/range/{parts[0].name}", http=_http())


def test_hf_split_model_in_a_folder(server, tmp_path):
    from conftest import llama_keys, llama_tensors, write_gguf

    parts = write_gguf(tmp_path / "big.gguf", llama_tensors(), llama_keys, split_max_tensors=8)
    for p in parts:
        server.files[p.name] = p
    server.listing["org/split"] = [f"sub/{p.name}" for p in parts]
    got = remote.read_remote("hf://org/split", http=_http())  # the one model there
    assert got.source == f"hf://org/split@{COMMIT}/sub/{parts[0].name}"
    assert got.urls == [f"{server.base}/org/split/resolve/{COMMIT}/sub/{p.name}" for p in parts]
    assert (got.meta.splits, got.meta.header_sha256) == (
        3,
        read_gguf(parts[0]).header_sha256,
    )


def test_offline_from_the_cache(server, monkeypatch):
    first = remote.read_remote("hf://org/repo:Q4_K_M", http=_http())
    monkeypatch.setenv("VRAMC_OFFLINE", "1")
    n = len(server.seen)
    again = remote.read_remote("hf://org/repo:Q4_K_M", http=_http())
    assert len(server.seen) == n and again.cached
    assert again.meta.header_sha256 == first.meta.header_sha256
    with pytest.raises(remote.RemoteError, match="no header of it is cached"):
        remote.read_remote("hf://org/repo:Q8_0", http=_http())


def test_a_damaged_cached_listing_is_a_miss(server, monkeypatch):
    remote.read_remote("hf://org/repo:Q4_K_M", http=_http())  # caches main's listing
    monkeypatch.setenv("VRAMC_OFFLINE", "1")
    key = f"listing\0{server.base}\0org/repo\0main"
    notes: list[str] = []
    assert remote.list_repo(_http(), server.base, "org/repo", "main", "x", notes)[0] == COMMIT
    assert notes == [
        f"x: offline (VRAMC_OFFLINE or HF_HUB_OFFLINE is set): used the cached listing of org/repo at commit {COMMIT} (main then)\n"
    ]
    for bad in ({"sha": 5, "files": []}, {"sha": COMMIT, "files": "a.gguf"}, {"sha": COMMIT, "files": [1]}, {}):
        remote._cache_put(key, bad)
        with pytest.raises(remote.RemoteError, match="no listing of org/repo at main is cached"):
            remote.list_repo(_http(), server.base, "org/repo", "main", "x")
    remote._cache_path(key).write_text("not an entry")
    with pytest.raises(remote.RemoteError, match="no header of it is cached"):
        remote.read_remote("hf://org/repo:Q8_0", http=_http())
    # names that could not be a file are dropped from a cached listing as from a fetched one
    remote._cache_put(key, {"sha": COMMIT, "files": ["a\x1b[2J-Q8_0.gguf", "llama-8b-Q4_K_M.gguf"]})
    assert remote.list_repo(_http(), server.base, "org/repo", "main", "x")[1] == ["llama-8b-Q4_K_M.gguf"]
    assert len([p for p, _ in server.seen if p.startswith("/api/")]) == 1  # offline: not one request


def test_an_unreachable_server_falls_back_to_the_cache(server, models):
    url = f"{server.base}/range/llama-8b-Q4_K_M.gguf"
    first = remote.read_remote(url, http=_http())
    server.shutdown()
    server.server_close()  # connection refused from now on
    again = remote.read_remote(url, http=_http())
    assert again.cached and again.meta.header_sha256 == first.meta.header_sha256
    with pytest.raises(remote.RemoteError, match="cannot reach .*no header of it is cached"):
        remote.read_remote(url.replace("Q4_K_M", "Q8_0"), http=_http())


def test_an_unreachable_server_is_said_in_words_once(server):
    """No "[Errno 111]" or repr of Python's exception, and the reference and what the cache lacks
    said once (an hf:// reference with no cached listing said both twice)."""
    server.shutdown()
    server.server_close()  # connection refused from now on
    for ref, lacks in (
        (f"{server.base}/range/llama-8b-Q4_K_M.gguf", "no header of it is cached"),
        ("hf://org/repo:Q4_K_M", "no listing of org/repo at main is cached"),
    ):
        with pytest.raises(remote.RemoteError) as e:
            remote.read_remote(ref, http=_http())
        msg = str(e.value)
        assert msg.startswith(f"{ref}: cannot reach 127.0.0.1:") and ": Connection refused, and " in msg, msg
        assert "Errno" not in msg and msg.count(ref) == 1 and msg.count("run once online") == 1, msg
        assert lacks in msg and msg.endswith("run once online")
    assert remote._why(ConnectionResetError(104, "Connection reset by peer")) == "Connection reset by peer"
    assert remote._why(http.client.RemoteDisconnected("Remote end closed")) == "Remote end closed"


def test_a_pinned_header_is_not_fetched_twice(server):
    remote.read_remote("hf://org/repo:Q4_K_M", http=_http())
    http = _http()
    remote.read_remote("hf://org/repo:Q4_K_M", http=http)
    assert http.requests == 1  # the listing; the header at that commit came from the cache


# --- the command ----------------------------------------------------------------------------
runner = CliRunner()


def test_analyze_write_needs_no_network_later(server, tmp_path, monkeypatch):
    (tmp_path / "profiles" / "models").mkdir(parents=True)
    dest = tmp_path / "profiles" / "models" / "llama.yaml"
    result = runner.invoke(app, ["analyze", "hf://org/repo:Q4_K_M", "--write", str(dest)])
    assert result.exit_code == 0, result.output
    text = dest.read_text()
    assert f"# download: {server.base}/org/repo/resolve/{COMMIT}/llama-8b-Q4_K_M.gguf\n" in text
    model = Model.model_validate(yaml.safe_load(text))
    assert model.gguf == "models/llama-8b-Q4_K_M.gguf"
    assert model.source == f"hf://org/repo@{COMMIT}/llama-8b-Q4_K_M.gguf"
    assert ModelMeta.from_lock(model.lock).tensors
    assert model.lock.file.header_sha256 == read_gguf(server.files["llama-8b-Q4_K_M.gguf"]).header_sha256


@pytest.mark.parametrize(
    "ref",
    [
        "hf://org/repo:Q5_K_M",
        "http://127.0.0.1:1/x.gguf",
        "hf://a",
        "https://[::1/x.gguf",
        "http://127.0.0.1:99999/x.gguf",
        "https://" + "a" * 70 + ".com/x.gguf",
        "hf://org/repo/x.gguf\n",
    ],
)
def test_analyze_errors_exit_1_not_3(server, ref):
    """Through the real entry point (CliRunner reports an uncaught exception as exit 1 too)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "VRAMC_HTTP_TIMEOUT": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "vramc", "analyze", ref],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("vramc analyze: ") and "internal error" not in result.stderr


def test_a_written_profile_plans_without_the_network(server, tmp_path, monkeypatch, models):
    """analyze hf://... --write, then check and plan with the server gone: the lock is enough,
    and the plan equals the plan of the real file's header."""
    project = tmp_path / "project"
    (project / "profiles" / "models").mkdir(parents=True)
    dest = project / "profiles" / "models" / "llama-8b-Q4_K_M.yaml"
    assert runner.invoke(app, ["analyze", "hf://org/repo:Q4_K_M", "--write", str(dest)]).exit_code == 0
    deployment = (
        "name: llama\nhardware:\n  gpus:\n    - {name: RTX 4090, vram: 24GiB}\n"
        "model: llama-8b-Q4_K_M\nengine: llama-server\nsettings:\n  ctx: 8192\n"
    )
    (project / "profiles" / "llama.yaml").write_text(deployment)
    server.shutdown()
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")  # nothing listens there
    monkeypatch.chdir(project)
    res = runner.invoke(app, ["check", "profiles/llama.yaml"])
    assert res.exit_code == 0, res.output
    planned = json.loads(runner.invoke(app, ["plan", "profiles/llama.yaml", "--format", "json"]).output)
    # the same deployment on the real file
    (project / "models").mkdir()
    (project / "models" / "llama-8b-Q4_K_M.gguf").symlink_to(models["llama-8b-Q4_K_M.gguf"])
    res = runner.invoke(app, ["check", "profiles/llama.yaml"])
    assert res.exit_code == 0 and "VR202" not in res.output, res.output  # the lock matches the file
    direct = json.loads(runner.invoke(app, ["plan", "profiles/llama.yaml", "--format", "json"]).output)
    [a], [b] = planned["deployments"], direct["deployments"]
    assert a["verdict"] == b["verdict"] == "fits"
    assert [d["weights_bytes"] for d in a["devices"]] == [d["weights_bytes"] for d in b["devices"]]
    assert a["devices"][0]["weights_bytes"] > 4 * 2**30


def test_plan_quants_table(server, tmp_path, monkeypatch):
    """`vramc plan PROFILE --quants hf://ORG/REPO`: each quant against an 8 GiB card."""
    (tmp_path / "profiles" / "models").mkdir(parents=True)
    (tmp_path / "profiles" / "models" / "m.yaml").write_text("kind: model\ngguf: models/none.gguf\n")
    (tmp_path / "profiles" / "d.yaml").write_text(
        "name: d\nhardware:\n  gpus:\n    - {name: RTX 4060, vram: 8GiB}\nmodel: m\n"
        "engine: llama-server\nsettings:\n  ctx: 8192\n  gpu_layers: auto\n"
    )
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["plan", "profiles/d.yaml", "--quants", "hf://org/quants"])
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line.split() for line in res.stdout.splitlines() if line.startswith("  Q")}
    assert list(rows) == [
        "Q8_0",
        "Q4_K_M",
        "Q2_K",
    ]  # largest first; the mmproj is no quant
    assert rows["Q4_K_M"][3] == "fits" and rows["Q4_K_M"][4] == "33/33"
    assert rows["Q8_0"][4] != "33/33"  # 8 GB of weights: part of it stays on the CPU
    assert "choice: Q4_K_M (llama-8b-Q4_K_M.gguf), the largest quant that fits with all layers" in res.stdout
    bad = runner.invoke(app, ["plan", "profiles/d.yaml", "--quants", "hf://org/quants:Q4_K_M"])
    assert bad.exit_code == 1 and "takes a repository" in bad.output
    # a deployment that is not there is said as such, not as "no llama.cpp deployment given"
    bad = runner.invoke(app, ["plan", "profiles/none.yaml", "--quants", "hf://org/quants"])
    assert bad.exit_code == 1 and "profiles/none.yaml:1:1: VR000 error: no such file" in bad.output, bad.output
    assert "none was given" not in bad.output
