"""`vramc run`'s server in front of llama-cpp-python's routes, against a real running server.

One `python -m vramc run` subprocess on the tiny generated GGUF (test_run's model, whose
end-of-sequence logit is pinned so every answer has max_tokens tokens), bound to 127.0.0.1 on a
free port with --queue 2, --max-body 64KiB and --allow-host proxy.example. /health counts the
requests let through to the model (`admitted`): a refused request must leave it unchanged.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
httpx = pytest.importorskip("httpx")

from test_run import DEPLOYMENT, KEY, start_server, stop, vramc_run, write_model  # noqa: E402

pytestmark = pytest.mark.engine

MAX_BODY = 64 * 1024
QUEUE = 2
BODY_TIMEOUT = 2
USER = [{"role": "user", "content": "Hi"}]
OPENAI_ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "profiles" / "models").mkdir(parents=True)
    write_model(root / "models" / "tiny.gguf")
    (root / "profiles" / "models" / "tiny.yaml").write_text("kind: model\nname: tiny\ngguf: models/tiny.gguf\n")
    (root / "profiles" / "tiny.yaml").write_text(DEPLOYMENT)
    return root


@pytest.fixture(scope="module")
def server(project, tmp_path_factory):
    logs = tmp_path_factory.mktemp("server")
    proc, url = start_server(
        project,
        logs,
        "--queue",
        str(QUEUE),
        "--max-body",
        "64KiB",
        "--allow-host",
        "proxy.example",
        "--body-timeout",
        str(BODY_TIMEOUT),
    )
    try:
        yield url
    finally:
        stop(proc)


def health(url: str, **headers) -> dict:
    r = httpx.get(f"{url}/health", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def openai_error(r, status: int) -> dict:
    """The answer is `status` with OpenAI's error object, exactly its four keys."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == OPENAI_ERROR_KEYS, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def raw_request(url: str, head: str, body: bytes = b"", *, timeout: float = 10) -> tuple[int, bytes]:
    """Send bytes as written (framing and all) and read the answer until the server closes or a
    complete Content-Length body has come: (status, whole answer)."""
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=timeout) as s:
        try:
            s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking it all: read what it said
        data = b""
        while True:
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                m = re.search(rb"(?i)content-length: *(\d+)", data[:head_end])
                if m and len(data) >= head_end + 4 + int(m[1]):
                    break
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", data)
    assert m, data[:200]
    return int(m[1]), data


# --- 1. OpenAI's request rules, before the model ------------------------------------------------

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
INVALID = [
    (CHAT, {}, "messages", "missing_required_parameter"),
    (CHAT, {"messages": []}, "messages", "empty_array"),
    (CHAT, {"messages": "Hi"}, "messages", "invalid_type"),
    (CHAT, {"messages": [{"content": "Hi"}]}, "messages[0].role", "missing_required_parameter"),
    (CHAT, {"messages": [{"role": "user"}]}, "messages[0].content", "missing_required_parameter"),
    (CHAT, {"messages": [{"role": "user", "content": None}]}, "messages[0].content", "missing_required_parameter"),
    (CHAT, {"messages": [{"role": "wizard", "content": "Hi"}]}, "messages[0].role", "invalid_value"),
    (CHAT, {"messages": [{"role": "developer", "content": "Hi"}]}, "messages[0].role", "invalid_value"),
    (CHAT, {"messages": [USER[0], "Hi"]}, "messages[1]", "invalid_type"),
    (CHAT, {"messages": [{"role": "user", "content": 7}]}, "messages[0].content", "invalid_type"),
    (
        CHAT,
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "http://x/a.png"}]}]},
        "messages[0].content[0].type",
        "invalid_value",
    ),
    (CHAT, {"messages": [{"role": "tool", "content": "42"}]}, "messages[0].tool_call_id", "missing_required_parameter"),
    (CHAT, {"messages": USER, "max_tokens": -5}, "max_tokens", "integer_below_min_value"),
    (CHAT, {"messages": USER, "max_tokens": 0}, "max_tokens", "integer_below_min_value"),
    (CHAT, {"messages": USER, "max_tokens": "5"}, "max_tokens", "invalid_type"),
    (CHAT, {"messages": USER, "max_tokens": 2.5}, "max_tokens", "invalid_type"),
    (CHAT, {"messages": USER, "max_tokens": True}, "max_tokens", "invalid_type"),
    (CHAT, {"messages": USER, "max_completion_tokens": 0}, "max_completion_tokens", "integer_below_min_value"),
    (CHAT, {"messages": USER, "max_tokens": 4, "max_completion_tokens": 9}, "max_completion_tokens", "invalid_value"),
    (CHAT, {"messages": USER, "temperature": 2.5}, "temperature", "decimal_above_max_value"),
    (CHAT, {"messages": USER, "temperature": -0.1}, "temperature", "decimal_below_min_value"),
    (CHAT, {"messages": USER, "temperature": "hot"}, "temperature", "invalid_type"),
    (CHAT, {"messages": USER, "top_p": 1.5}, "top_p", "decimal_above_max_value"),
    (CHAT, {"messages": USER, "top_p": -1}, "top_p", "decimal_below_min_value"),
    (CHAT, {"messages": USER, "presence_penalty": 3}, "presence_penalty", "decimal_above_max_value"),
    (CHAT, {"messages": USER, "n": 0}, "n", "integer_below_min_value"),
    (CHAT, {"messages": USER, "n": 2}, "n", "unsupported_value"),
    (CHAT, {"messages": USER, "stream": "true"}, "stream", "invalid_type"),
    (CHAT, {"messages": USER, "stream": 1}, "stream", "invalid_type"),
    (CHAT, {"messages": USER, "model": 5}, "model", "invalid_type"),
    # llama-cpp-python (logits_all off) answers logprobs: true with null, top_logprobs with a 500
    (CHAT, {"messages": USER, "logprobs": True}, "logprobs", "unsupported_parameter"),
    (CHAT, {"messages": USER, "top_logprobs": 2}, "top_logprobs", "unsupported_parameter"),
    # what only the model can say: llama-cpp-python indexed past the vocabulary (a 500, or the bias
    # dropped) and a grammar llama.cpp cannot parse killed the whole server process
    (CHAT, {"messages": USER, "logit_bias": {"abc": 1}}, "logit_bias", "invalid_value"),
    (CHAT, {"messages": USER, "logit_bias": {"999999": 1}}, "logit_bias", "invalid_value"),
    (CHAT, {"messages": USER, "logit_bias": {"-1": 1}}, "logit_bias", "invalid_value"),
    (CHAT, {"messages": USER, "logit_bias": {"5": 101}}, "logit_bias", "invalid_value"),
    (CHAT, {"messages": USER, "logit_bias": [5]}, "logit_bias", "invalid_type"),
    (CHAT, {"messages": USER, "grammar": "garbage ::="}, "grammar", "invalid_value"),
    (CHAT, {"messages": USER, "grammar": 'root ::= root "a"'}, "grammar", "invalid_value"),
    (CHAT, {"messages": USER, "grammar": 5}, "grammar", "invalid_type"),
    (COMPLETIONS, {"prompt": "x", "grammar": "x"}, "grammar", "invalid_value"),
    (COMPLETIONS, {}, "prompt", "missing_required_parameter"),
    (COMPLETIONS, {"max_tokens": 4}, "prompt", "missing_required_parameter"),
    (COMPLETIONS, {"prompt": 5}, "prompt", "invalid_type"),
    (COMPLETIONS, {"prompt": ["one", "two"]}, "prompt", "invalid_value"),
    (COMPLETIONS, {"prompt": [15, 16]}, "prompt", "invalid_value"),
    (COMPLETIONS, {"prompt": "x", "max_tokens": -5}, "max_tokens", "integer_below_min_value"),
    (COMPLETIONS, {"prompt": "x", "max_tokens": 0}, "max_tokens", "integer_below_min_value"),
    (COMPLETIONS, {"prompt": "x", "max_tokens": "many"}, "max_tokens", "invalid_type"),
    (COMPLETIONS, {"prompt": "x", "best_of": 3}, "best_of", "unsupported_value"),
    (COMPLETIONS, {"prompt": "x", "echo": "yes"}, "echo", "invalid_type"),
    (COMPLETIONS, {"prompt": "x", "logprobs": 2}, "logprobs", "unsupported_parameter"),
]


@pytest.mark.parametrize(
    "path, body, param, code",
    INVALID,
    ids=[f"{'chat' if p == CHAT else 'completions'}-{json.dumps(b)[:60]}" for p, b, _, _ in INVALID],
)
def test_invalid_request_is_refused_before_the_model(server, path, body, param, code):
    before = health(server)["admitted"]
    error = openai_error(httpx.post(server + path, json=body, timeout=30), 400)
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code), error
    assert health(server)["admitted"] == before  # never reached the model's queue


def test_model_checks_keep_the_server_up(server):
    """A token id past the vocabulary aborted llama.cpp (std::out_of_range) and a bad grammar left a
    null sampler: either request killed the process. Refused with 400, and the server still answers."""
    for body, param in (
        ({"tokens": [999999]}, "tokens[0]"),
        ({"tokens": [-1]}, "tokens[0]"),
        ({"tokens": [1, "2"]}, "tokens[1]"),
    ):
        assert openai_error(httpx.post(server + "/extras/detokenize", json=body, timeout=30), 400)["param"] == param
    r = httpx.post(server + "/extras/detokenize", json={"tokens": [5, 6]}, timeout=30)
    assert r.status_code == 200 and isinstance(r.json()["text"], str)
    # a valid grammar and bias still reach the model, and constrain it
    r = httpx.post(server + CHAT, json={"messages": USER, "max_tokens": 4, "grammar": 'root ::= "a"'}, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "a", r.text
    r = httpx.post(server + CHAT, json={"messages": USER, "max_tokens": 2, "logit_bias": {"5": 100}}, timeout=60)
    assert r.status_code == 200, r.text
    assert health(server)["status"] == "ok"


def test_invalid_request_messages_read_like_openai(server):
    e = openai_error(httpx.post(server + CHAT, json={"messages": USER, "max_tokens": -5}), 400)
    assert e["message"].startswith(
        "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got -5 instead."
    )
    e = openai_error(httpx.post(server + CHAT, json={"messages": []}), 400)
    assert e["message"] == (
        "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead."
    )
    e = openai_error(httpx.post(server + CHAT, json={"messages": [{"role": "wizard", "content": "x"}]}), 400)
    assert e["message"].startswith("Invalid value: 'wizard'. Supported values are: 'system', 'user'")


@pytest.mark.parametrize(
    "raw, ctype, status",
    [
        (b"{not json", "application/json", 400),
        (b'"just a string"', "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', "application/json", 400),
        (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "application/json", 400),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400),
        (b"\xff\xfe\x00garbage", "application/json", 400),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "text/plain", 415),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "application/x-www-form-urlencoded", 415),
        (b'{"messages": [{"role": "user", "content": "x"}]}', None, 415),
    ],
)
def test_body_that_is_not_a_json_object(server, raw, ctype, status):
    headers = {"content-type": ctype} if ctype else {}
    before = health(server)["admitted"]
    for path in (CHAT, COMPLETIONS, "/extras/tokenize"):
        r = httpx.post(server + path, content=raw, headers=headers, timeout=30)
        assert openai_error(r, status)["type"] == "invalid_request_error"
    assert health(server)["admitted"] == before


def test_other_invalid_fields_get_openai_400_from_the_routes(server):
    """What the routes' own pydantic types refuse is OpenAI's 400 too, not FastAPI's 422."""
    before = health(server)["admitted"]
    e = openai_error(httpx.post(server + CHAT, json={"messages": USER, "stop": 5}), 400)
    assert (e["param"], e["code"], e["type"]) == ("stop", "invalid_type", "invalid_request_error"), e
    # the error of the message type its role names, where the request has it
    call = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": 7, "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    e = openai_error(httpx.post(server + CHAT, json={"messages": [USER[0], call]}), 400)
    assert e["param"] == "messages[1].tool_calls[0].id", e
    e = openai_error(httpx.post(server + CHAT, json={"messages": USER, "response_format": {"type": "xml"}}), 400)
    assert e["param"] == "response_format.type", e
    e = openai_error(httpx.post(server + "/extras/tokenize", json={"input": 3}), 400)
    assert e["param"] == "input"
    # the model is loaded for generation: llama-cpp-python would answer embeddings with a 500
    e = openai_error(httpx.post(server + "/v1/embeddings", json={"input": "x"}), 400)
    assert e["code"] == "unsupported_endpoint"
    # the four the routes refused passed the queue (their types check them before the model's lock);
    # the embeddings request did not
    assert health(server)["admitted"] == before + 4


def test_accepted_requests_mean_what_openai_means(server):
    # null is "left out" (llama-cpp-python refuses a null temperature or stream)
    r = httpx.post(
        server + CHAT,
        json={"messages": USER, "max_tokens": 3, "temperature": None, "stream": None, "top_p": None, "n": None},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    # max_completion_tokens limits (llama-cpp-python ignores it and would fill the context)
    r = httpx.post(server + CHAT, json={"messages": USER, "max_completion_tokens": 3}, timeout=30)
    assert r.status_code == 200, r.text
    assert 3 <= r.json()["usage"]["completion_tokens"] <= 6  # may finish a split UTF-8 character
    # text content parts are the text joined by newlines (llama-cpp-python would print the list)
    parts = [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]
    counts = []
    for content in (parts, "Hello\nthere", "[{'type': 'text', 'text': 'Hello'}, {'type': 'text', 'text': 'there'}]"):
        r = httpx.post(
            server + CHAT, json={"messages": [{"role": "user", "content": content}], "max_tokens": 1}, timeout=30
        )
        assert r.status_code == 200, r.text
        counts.append(r.json()["usage"]["prompt_tokens"])
    assert counts[0] == counts[1] != counts[2], counts
    # an assistant turn that only called a tool may have no content
    msgs = [
        USER[0],
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    r = httpx.post(server + CHAT, json={"messages": msgs, "max_tokens": 2}, timeout=30)
    assert r.status_code == 200, r.text
    r = httpx.post(server + COMPLETIONS, json={"prompt": ["Hello"], "max_tokens": 2}, timeout=30)
    assert r.status_code == 200, r.text


def test_unknown_route_and_wrong_method(server):
    e = openai_error(httpx.post(server + "/v1/nothing", json={}), 404)
    assert e["message"] == "Invalid URL (POST /v1/nothing)" and e["type"] == "invalid_request_error"
    openai_error(httpx.get(server + "/nothing"), 404)
    r = httpx.get(server + CHAT)
    e = openai_error(r, 405)
    assert e["message"] == "Invalid method for URL (GET /v1/chat/completions)"
    assert r.headers["allow"] == "POST"
    openai_error(httpx.put(server + COMPLETIONS, json={"prompt": "x"}), 405)


# --- 2. the body limit -------------------------------------------------------------------------


def test_body_over_the_limit(server):
    before = health(server)["admitted"]
    body = {"messages": USER, "max_tokens": 1, "user": "x" * MAX_BODY}
    e = openai_error(httpx.post(server + CHAT, json=body, timeout=30), 413)
    assert e["code"] == "request_too_large" and str(MAX_BODY) in e["message"]
    body["user"] = "x" * (MAX_BODY - 200)  # just under: served
    r = httpx.post(server + CHAT, json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert health(server)["admitted"] == before + 1


def test_declared_length_over_the_limit_is_refused_unread(server):
    """Content-Length: 1 GB and no body at all: 413 at once, not a wait for a gigabyte."""
    t0 = time.monotonic()
    status, data = raw_request(
        server,
        f"POST {CHAT} HTTP/1.1\nHost: 127.0.0.1:{port_of(server)}\n"
        "Content-Type: application/json\nContent-Length: 1000000000\n",
    )
    assert status == 413 and time.monotonic() - t0 < 5
    assert b"connection: close" in data.lower()
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_too_large"


def test_chunked_body_over_the_limit(server):
    """No Content-Length: the bytes are counted as they come."""
    parts = [b'{"messages": [], "user": "'] + [b"x" * 8192] * (MAX_BODY // 8192 + 1)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)  # no last chunk: the server stops first
    status, data = raw_request(
        server,
        f"POST {CHAT} HTTP/1.1\nHost: 127.0.0.1:{port_of(server)}\n"
        "Content-Type: application/json\nTransfer-Encoding: chunked\n",
        chunked,
    )
    assert status == 413, data[:300]
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_too_large"
    # a small chunked body is read whole and served
    small = json.dumps({"prompt": "Hi", "max_tokens": 2}).encode()
    status, data = raw_request(
        server,
        f"POST {COMPLETIONS} HTTP/1.1\nHost: 127.0.0.1:{port_of(server)}\n"
        "Content-Type: application/json\nTransfer-Encoding: chunked\n"
        "Connection: close\n",
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small),
    )
    assert status == 200, data[:300]


def test_content_length_shorter_than_the_body(server):
    """A Content-Length that under-states the body: only that many bytes are the request (not JSON:
    400); what follows is not taken as part of it, and the server keeps serving."""
    body = json.dumps({"messages": USER, "max_tokens": 1, "user": "x" * (MAX_BODY + 1024)}).encode()
    status, _ = raw_request(
        server,
        f"POST {CHAT} HTTP/1.1\nHost: 127.0.0.1:{port_of(server)}\n"
        "Content-Type: application/json\nContent-Length: 20\n",
        body,
    )
    assert status == 400
    assert health(server)["status"] == "ok"


def test_body_that_trickles_in_times_out(server):
    """Headers, then part of the body and nothing more: 408 once --body-timeout has passed (the
    connection closed), not a connection held for as long as the client likes; the model untouched."""
    before = health(server)["admitted"]
    t0 = time.monotonic()
    status, data = raw_request(
        server,
        f"POST {CHAT} HTTP/1.1\nHost: 127.0.0.1:{port_of(server)}\n"
        "Content-Type: application/json\nContent-Length: 100\n",
        b'{"messages": [',
        timeout=BODY_TIMEOUT + 20,
    )
    took = time.monotonic() - t0
    assert status == 408, data[:300]
    assert BODY_TIMEOUT - 0.5 <= took < BODY_TIMEOUT + 10, took
    assert b"connection: close" in data.lower()
    error = json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "request_timeout" and "--body-timeout" in error["message"]
    assert health(server)["admitted"] == before


# --- 3. the queue ------------------------------------------------------------------------------


def test_bounded_queue(server):
    """One streamed request holds the model (its client reads slowly: each event carries the 60 kB
    model name it asked for, 12 MB in all, so the server soon blocks on the socket), QUEUE more
    wait, the next is 503; then every admitted request is answered in full."""
    port = port_of(server)
    body = json.dumps({"model": "m" * 60_000, "messages": USER, "max_tokens": 200, "stream": True}).encode()
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    slow.settimeout(30)
    slow.connect(("127.0.0.1", port))
    results: list = [None] * QUEUE
    threads = []
    try:
        slow.sendall(
            f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        got = b""
        while b"data: " not in got:
            got += slow.recv(4096)
        assert got.startswith(b"HTTP/1.1 200 ")
        assert health(server)["busy"] and health(server)["waiting"] == 0

        def wait_in_line(i: int) -> None:
            r = httpx.post(server + COMPLETIONS, json={"prompt": f"n{i}", "max_tokens": 3}, timeout=60)
            results[i] = (r.status_code, r.json())

        for i in range(QUEUE):
            threads.append(threading.Thread(target=wait_in_line, args=(i,)))
            threads[-1].start()
        deadline = time.monotonic() + 20
        while health(server)["waiting"] < QUEUE:
            assert time.monotonic() < deadline, health(server)
            time.sleep(0.05)
        state = health(server)

        refused = httpx.post(server + COMPLETIONS, json={"prompt": "late", "max_tokens": 3}, timeout=10)
        e = openai_error(refused, 503)
        assert (e["type"], e["code"]) == ("server_error", "queue_full")
        assert int(refused.headers["retry-after"]) >= 1
        after = health(server)
        assert after["refused"] == state["refused"] + 1 and after["admitted"] == state["admitted"]
        assert after["waiting"] == QUEUE and all(r is None for r in results)  # the model was still busy
        # what does not need the model answers at once
        models = httpx.get(server + "/v1/models", timeout=5)
        assert [m["id"] for m in models.json()["data"]] == ["tiny"]

        # the slow client reads its stream to the end: whole, then the others are served
        while True:
            chunk = slow.recv(1 << 20)
            if not chunk:
                break
            got += chunk
    finally:
        slow.close()
        for t in threads:
            t.join(60)
    events = [line for line in got.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1].strip() == b"data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "length"
    assert [r[0] for r in results] == [200] * QUEUE, results
    assert all(r[1]["usage"]["completion_tokens"] >= 3 for r in results)
    deadline = time.monotonic() + 10
    while health(server)["busy"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)


# --- 4. the Host header ------------------------------------------------------------------------


def test_host_header(server):
    port = port_of(server)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost.:{port}", "proxy.example", "proxy.example:443"):
        assert httpx.get(f"{server}/health", headers={"Host": host}).status_code == 200, host
        r = httpx.post(server + COMPLETIONS, headers={"Host": host}, json={"prompt": "x", "max_tokens": 1}, timeout=30)
        assert r.status_code == 200, (host, r.text)
    before = health(server)["admitted"]
    for host in (
        f"evil.example:{port}",
        "evil.example",
        f"localhost:{port + 1}",
        "localhost",
        f"127.0.0.1.evil.example:{port}",
        f"192.168.1.20:{port}",
        "proxy.example.evil:80",
        "a:b",
    ):
        for method, path in (("GET", "/health"), ("POST", COMPLETIONS), ("GET", "/v1/models"), ("GET", "/docs")):
            r = httpx.request(method, server + path, headers={"Host": host}, json={"prompt": "x", "max_tokens": 1})
            e = openai_error(r, 421)
            assert e["code"] == "invalid_host", (host, e)
    assert health(server)["admitted"] == before


@pytest.mark.parametrize(
    "bound, allow, host, ok",
    [
        ("::1", [], "[::1]:8000", True),
        ("::1", [], "localhost:8000", True),
        ("::1", [], "[::2]:8000", False),
        ("0.0.0.0", [], "192.168.1.20:8000", True),  # a wildcard address: reached through any of its IPs
        ("0.0.0.0", [], "[fe80::1]:8000", True),
        ("0.0.0.0", [], "myhost.lan:8000", False),  # but a DNS name only when allowed
        ("0.0.0.0", ["myhost.lan"], "MyHost.LAN:8000", True),
        ("0.0.0.0", ["myhost.lan:8000"], "myhost.lan:8001", False),
        ("0.0.0.0", ["myhost.lan:80"], "myhost.lan", True),
        ("192.168.1.5", [], "192.168.1.5:8000", True),
        ("192.168.1.5", [], "192.168.1.6:8000", False),
        ("127.0.0.1", ["*"], "anything.example:1", True),
        ("127.0.0.1", [], "localhost:8000:8000", False),
        ("127.0.0.1", [], "", False),
    ],
)
def test_host_names_accepted(bound, allow, host, ok):
    from vramc.run.serve import HostCheck

    assert HostCheck(None, bound, 8000, allow).accepts(host) is ok


def test_host_checked_before_the_api_key(project, tmp_path):
    (project / "key.txt").write_text(f"{KEY}\n")
    proc, url = start_server(project, tmp_path, "--api-key-file", "key.txt")
    try:
        evil = {"Host": f"evil.example:{port_of(url)}", "Authorization": f"Bearer {KEY}"}
        assert openai_error(httpx.get(f"{url}/health", headers=evil), 421)["code"] == "invalid_host"
        assert openai_error(httpx.get(f"{url}/health"), 401)["code"] == "invalid_api_key"
        assert httpx.get(f"{url}/health", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    finally:
        stop(proc)


# --- the options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, said",
    [
        (["--max-body", "100"], "give a unit"),
        (["--max-body", "lots"], "cannot read"),
        (["--max-body", "10B"], "at least 1KiB"),
        (["--queue", "-1"], "0 or more"),
        (["--body-timeout", "0"], "--body-timeout"),
        (["--body-timeout", "1e9"], "at most 3600"),
        (["--body-timeout", "nan"], "--body-timeout"),
        (["--allow-host", "http://evil/"], "--allow-host"),
        (["--allow-host", "a b"], "--allow-host"),
        (["--allow-host", "x:70000"], "--allow-host"),
        # read whole, /dev/zero ran until memory was gone
        (["--api-key-file", "/dev/zero", "--host", "0.0.0.0"], "not a key file"),
    ],
)
def test_bad_server_options_are_usage_errors(project, args, said):
    r = vramc_run(project, "tiny", "--port", "0", *args)
    assert r.returncode == 2, r.stderr
    assert said in r.stderr and "loaded in" not in r.stderr
