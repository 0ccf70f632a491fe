"""Serve an already-loaded `llama_cpp.Llama` with llama-cpp-python's own OpenAI-compatible routes.

`llama_cpp.server.app.create_app` cannot take a loaded model: it builds a `LlamaProxy`, which
loads models itself from `ModelSettings` (its own defaults and argument mapping, not the plan's).
So the app here is a thin FastAPI around the server module's `router` (its endpoints, their error
handling and their request locks unchanged) with the module's two globals set directly:
`_server_settings` through `set_server_settings`, and `_llama_proxy` to `LoadedModel`, which hands
out the one model whatever name a request asks for (as LlamaProxy does with an unknown name).

The routes are re-registered with `OpenAIRoute`: the server's `RouteErrorHandler` turns *every*
exception into a 500, including FastAPI's request validation (a malformed body is the client's
error), so validation errors are answered, as 400s in OpenAI's error format, before its wrapper
sees them. `GET /v1/models` is answered here without the model lock: the server's own waits
behind a running generation.

In front of the routes, outermost first (pure ASGI, so streamed answers pass through untouched):

* HostCheck: the Host header must name this server (DNS rebinding: a web page whose name
  resolves to 127.0.0.1 would otherwise be "same origin" with the local model), else 421.
* ApiKey (with a key file): `Authorization: Bearer KEY` on *every* path (the routes' own check
  does not cover FastAPI's /docs and /openapi.json, nor /health), else 401.
* RequestGuard, for POST to a route: `Content-Type: application/json` (415: a web page can send
  text/plain or form bodies cross-origin without a CORS preflight), the body within --max-body
  (413, counted as it arrives, so a missing or lying Content-Length does not get past it) and
  within --body-timeout seconds of the headers (408: a client trickling its body ties up nothing), valid
  JSON holding an object, and for the two completion routes the checks of `check_chat` and
  `check_completion` (400): llama-cpp-python accepts, and answers 200 to, requests OpenAI refuses
  (no messages, max_tokens 0 generating to the end of the context, n: 5 answered with one choice);
  then ModelChecks, what only the loaded model can say: a `logit_bias` key or a detokenize token
  past the vocabulary, a `grammar` llama.cpp cannot parse (each of these crashed the process or
  answered 500).
* ModelQueue, for POST to a route (every one of them takes the model lock): at most one request
  runs and --queue wait; the next gets 503 with Retry-After.

Left out: create_app's CORS middleware with `allow_origins=["*"]`, which would let any web page
the user visits call the local model. `interrupt_requests` is off: with it on, a streaming
response is cut short as soon as another request waits, so concurrent clients would get truncated
answers.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import ipaddress
import json
import math
import re
import socket
import time

DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_BODY_TIMEOUT = 30.0  # seconds for a request's whole body, once its headers are in
DEFAULT_QUEUE = 8
CHAT_PATHS = frozenset({"/v1/chat/completions"})
COMPLETION_PATHS = frozenset({"/v1/completions", "/v1/engines/copilot-codex/completions"})
DETOKENIZE_PATH = "/extras/detokenize"
# What llama-cpp-python's request types accept (llama_types.ChatCompletionRequestMessage).
ROLES = ("system", "user", "assistant", "tool", "function")
JSON_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json$")
HOST_NAME = re.compile(r"^(?:\*|[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?$")


class LoadedModel:
    """What llama_cpp.server.app's routes expect from `_llama_proxy`: call it, iterate aliases."""

    def __init__(self, llm, alias: str) -> None:
        self.llm = llm
        self.alias = alias

    def __call__(self, model: str | None = None):
        return self.llm

    def __iter__(self):
        yield self.alias

    def free(self) -> None:
        self.llm.close()


# --- OpenAI's error format ---------------------------------------------------------------------


class ApiError(Exception):
    """An answer in OpenAI's error format: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.message, kind=self.kind, param=self.param, code=self.code)


def error_body(
    message: str, *, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}).encode()


async def send_error(send, error: ApiError, close: bool = False) -> None:
    body = error.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
    if close:  # the rest of the request body was not read: the connection cannot carry another
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


# --- request checks ----------------------------------------------------------------------------


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _type_error(param: str, expected: str, value) -> ApiError:
    return ApiError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {_kind(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _missing(param: str) -> ApiError:
    return ApiError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def _integer(body: dict, name: str, minimum: int, *, why: str = "") -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(name, "an integer", value)
    if value < minimum:
        raise ApiError(
            400,
            f"Invalid '{name}': integer below minimum value. Expected a value >= {minimum}, "
            f"but got {value} instead.{why}",
            param=name,
            code="integer_below_min_value",
        )


def _number(body: dict, name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(name, "a number", value)
    for bad, word, sign, bound, code in (
        (value < low, "below minimum", ">=", low, "decimal_below_min_value"),
        (value > high, "above maximum", "<=", high, "decimal_above_max_value"),
    ):
        if bad:
            raise ApiError(
                400,
                f"Invalid '{name}': decimal {word} value. Expected a value {sign} {bound:g}, "
                f"but got {value:g} instead.",
                param=name,
                code=code,
            )


def _boolean(body: dict, name: str) -> None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise _type_error(name, "a boolean", value)


def _only_one(body: dict, name: str) -> None:
    """llama-cpp-python drops `n` and `best_of`: more than one would be answered with one."""
    _integer(body, name, 1)
    if body.get(name, 1) not in (None, 1):
        raise ApiError(
            400,
            f"Unsupported value: '{name}' must be 1 here; this server generates one choice "
            "per request (send several requests instead).",
            param=name,
            code="unsupported_value",
        )


MAX_TOKENS_ZERO = (
    " llama-cpp-python reads 0 or less as 'until the context is full': leave it out, or null, for no limit."
)


def _common(body: dict) -> None:
    for name in ("max_tokens", "max_completion_tokens"):
        _integer(body, name, 1, why=MAX_TOKENS_ZERO)
    if body.get("max_completion_tokens") is not None:
        # OpenAI's newer name; llama-cpp-python ignores it and would generate without a limit.
        limit = body.pop("max_completion_tokens")
        if body.get("max_tokens") not in (None, limit):
            raise ApiError(
                400,
                "Give one of 'max_tokens' and 'max_completion_tokens', not two different values.",
                param="max_completion_tokens",
                code="invalid_value",
            )
        body["max_tokens"] = limit
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "frequency_penalty", -2, 2)
    _boolean(body, "stream")
    _only_one(body, "n")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _type_error("model", "a string", model)


def _drop_nulls(body: dict) -> None:
    """OpenAI reads a null parameter as left out; llama-cpp-python refuses null for most of them
    (temperature, stream...) and reads max_tokens: null on /v1/completions as 'no limit'."""
    for key in [k for k, v in body.items() if v is None]:
        del body[key]


NO_LOGPROBS = (
    "Unsupported parameter: '{}'. This server does not return log probabilities: vramc run loads "
    "the model with logits_all off, as the rendered llama-cpp-python server does."
)


def _no_logprobs(body: dict, *names: str) -> None:
    """llama-cpp-python answers chat `logprobs: true` with `logprobs: null`, and fails (a 500) where
    it would need logits_all."""
    for name in names:
        if body.get(name) not in (None, False):
            raise ApiError(400, NO_LOGPROBS.format(name), param=name, code="unsupported_parameter")


def check_chat(body: dict) -> None:
    """A /v1/chat/completions body as OpenAI checks it, mended in place where llama-cpp-python would
    read it otherwise. Raises ApiError."""
    _drop_nulls(body)
    if "messages" not in body:
        raise _missing("messages")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _type_error("messages", "an array", messages)
    if not messages:
        raise ApiError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for i, message in enumerate(messages):
        _check_message(message, f"messages[{i}]")
    _common(body)
    _boolean(body, "logprobs")
    _no_logprobs(body, "logprobs", "top_logprobs")


def _check_message(message, at: str) -> None:
    if not isinstance(message, dict):
        raise _type_error(at, "an object", message)
    if "role" not in message:
        raise _missing(f"{at}.role")
    role = message["role"]
    if role not in ROLES:
        hint = " (use 'system' for developer instructions)" if role == "developer" else ""
        supported = ", ".join(f"'{r}'" for r in ROLES[:-1]) + f", and '{ROLES[-1]}'"
        shown = f"'{role[:80]}'" if isinstance(role, str) else json.dumps(role)[:80]
        raise ApiError(
            400,
            f"Invalid value: {shown}. Supported values are: {supported}{hint}.",
            param=f"{at}.role",
            code="invalid_value",
        )
    content = message.get("content")
    if content is None:
        # OpenAI: required, but for an assistant message that has tool_calls or a function_call
        if role != "assistant" or not (message.get("tool_calls") or message.get("function_call")):
            raise _missing(f"{at}.content")
        # llama-cpp-python's type refuses null, and its formatters index message["content"]
        message["content"] = ""
    elif isinstance(content, list):
        message["content"] = _text_of_parts(content, f"{at}.content")
    elif not isinstance(content, str):
        raise _type_error(f"{at}.content", "a string or an array of content parts", content)
    for key in {"tool": ("tool_call_id",), "function": ("name",)}.get(role, ()):
        if key not in message:
            raise _missing(f"{at}.{key}")
        if not isinstance(message[key], str):
            raise _type_error(f"{at}.{key}", "a string", message[key])


def _text_of_parts(parts: list, at: str) -> str:
    """Text content parts joined with newlines, as llama.cpp's common/chat.cpp does for templates
    that take a string (common_chat_msg::to_json_oaicompat with concat_typed_text): llama-cpp-python
    hands the list itself to the chat template, which prints it as a Python list."""
    if not parts:
        raise ApiError(
            400,
            f"Invalid '{at}': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param=at,
            code="empty_array",
        )
    texts = []
    for j, part in enumerate(parts):
        where = f"{at}[{j}]"
        if not isinstance(part, dict):
            raise _type_error(where, "an object", part)
        if part.get("type") != "text":
            kind = part.get("type")
            shown = f"'{kind[:80]}'" if isinstance(kind, str) else json.dumps(kind)[:80]
            raise ApiError(
                400,
                f"Invalid value: {shown}. This server takes text content parts only (type "
                "'text'): vramc run loads no image or audio projector.",
                param=f"{where}.type",
                code="invalid_value",
            )
        if not isinstance(part.get("text"), str):
            raise _type_error(f"{where}.text", "a string", part.get("text"))
        texts.append(part["text"])
    return "\n".join(texts)


def check_completion(body: dict) -> None:
    """A /v1/completions body as OpenAI checks it, mended in place (see check_chat)."""
    _drop_nulls(body)
    if "prompt" not in body:
        raise _missing("prompt")
    prompt = body["prompt"]
    if isinstance(prompt, list):
        # llama-cpp-python asserts one prompt (an AssertionError: a 500) and takes no token ids
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise ApiError(
                400,
                "Invalid 'prompt': this server takes one prompt per request, as a string (or an "
                "array holding one string).",
                param="prompt",
                code="invalid_value",
            )
    elif not isinstance(prompt, str):
        raise _type_error("prompt", "a string", prompt)
    _common(body)
    _only_one(body, "best_of")
    _boolean(body, "echo")
    _no_logprobs(body, "logprobs")


LOGIT_BIAS_LIMIT = 100  # OpenAI: "values between -100 and 100"


class ModelChecks:
    """What only the loaded model can say about a request: its token ids (`logit_bias`) and whether
    llama.cpp parses a `grammar`. llama-cpp-python checks neither: a token id past the vocabulary is
    an IndexError in its logits processor (a 500, or a bias silently dropped), and a grammar llama.cpp
    cannot parse leaves a null sampler in the chain, which kills the whole server process."""

    def __init__(self, llm) -> None:
        model = getattr(llm, "_model", None)
        self.vocab = getattr(model, "vocab", None)
        if self.vocab is None or not hasattr(llm, "n_vocab"):
            raise RuntimeError(
                "this llama-cpp-python's Llama has no _model.vocab/n_vocab(); "
                "vramc run needs llama-cpp-python 0.3.36 (pip install 'vramc[run]')"
            )
        self.n_vocab = int(llm.n_vocab())

    def check_detokenize(self, body: dict) -> None:
        """llama.cpp aborts the process (std::out_of_range) on a token id past its vocabulary."""
        tokens = body.get("tokens")
        if not isinstance(tokens, list):
            return  # the route's own type answers a missing or mistyped list
        for i, token in enumerate(tokens):
            if isinstance(token, bool) or not isinstance(token, int):
                raise _type_error(f"tokens[{i}]", "an integer", token)
            if not 0 <= token < self.n_vocab:
                raise ApiError(
                    400,
                    f"Invalid 'tokens[{i}]': {token} is not a token id of this model; token ids "
                    f"are from 0 to {self.n_vocab - 1}.",
                    param=f"tokens[{i}]",
                    code="invalid_value",
                )

    def check(self, body: dict) -> None:
        self._logit_bias(body)
        grammar = body.get("grammar")
        if grammar is None:
            return
        if not isinstance(grammar, str):
            raise _type_error("grammar", "a string", grammar)
        if not self._parses(grammar):
            raise ApiError(
                400,
                "Invalid 'grammar': llama.cpp cannot parse it as a GBNF grammar with a 'root' rule "
                "(the server's log says where).",
                param="grammar",
                code="invalid_value",
            )

    def _logit_bias(self, body: dict) -> None:
        bias = body.get("logit_bias")
        if bias is None:
            return
        if not isinstance(bias, dict):
            raise _type_error("logit_bias", "an object", bias)
        by_text = body.get("logit_bias_type") == "tokens"  # llama-cpp-python's: keys are text to tokenize
        for key, value in bias.items():
            if not by_text and not (key.isascii() and key.isdigit() and len(key) <= 12 and int(key) < self.n_vocab):
                raise ApiError(
                    400,
                    f"Invalid 'logit_bias': {json.dumps(key[:40])} is not a token id of this "
                    f"model; keys are token ids from 0 to {self.n_vocab - 1}.",
                    param="logit_bias",
                    code="invalid_value",
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _type_error("logit_bias", "numbers as values", value)
            if not -LOGIT_BIAS_LIMIT <= value <= LOGIT_BIAS_LIMIT:
                raise ApiError(
                    400,
                    f"Invalid 'logit_bias': {value:g} is out of range. Expected values from "
                    f"-{LOGIT_BIAS_LIMIT} to {LOGIT_BIAS_LIMIT}.",
                    param="logit_bias",
                    code="invalid_value",
                )

    def _parses(self, grammar: str) -> bool:
        import llama_cpp

        sampler = llama_cpp.llama_sampler_init_grammar(self.vocab, grammar.encode("utf-8"), b"root")
        if not sampler:
            return False
        llama_cpp.llama_sampler_free(sampler)
        return True


def parse_json_object(raw: bytes) -> dict:
    def constant(name):  # NaN, Infinity: Python's json reads them, JSON has no such thing
        raise ValueError(f"{name} is not JSON")

    try:
        value = json.loads(raw, parse_constant=constant)
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # a lone surrogate (\ud800) is not text
    except RecursionError:
        raise ApiError(400, "The JSON body of this request is nested too deeply.") from None
    except UnicodeEncodeError:
        raise ApiError(
            400,
            "The JSON body of this request holds a lone UTF-16 surrogate (such as \\ud800): "
            "not text. Send valid Unicode.",
        ) from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, UnicodeEncodeError
        raise ApiError(
            400,
            f"We could not parse the JSON body of your request ({e}). The API expects a JSON "
            "object; send it with Content-Type: application/json.",
        ) from None
    if not isinstance(value, dict):
        raise ApiError(400, f"The JSON body of this request must be an object, not {_kind(value)}.")
    return value


class RequestGuard:
    """Body size, content type, JSON and the completion routes' parameters, before any route runs.

    The body is read here and handed on whole: a body over `max_body` is refused as soon as the
    bytes counted pass it (or at once when Content-Length says so), whatever Content-Length said.
    """

    def __init__(
        self,
        app,
        post_paths: frozenset[str],
        max_body: int,
        embeddings: bool = True,
        model_checks: ModelChecks | None = None,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        self.app = app
        self.body_timeout = body_timeout
        self.post_paths = post_paths
        self.max_body = max_body
        self.embeddings = embeddings
        self.model_checks = model_checks

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.post_paths:
            await self.app(scope, receive, send)
            return
        try:
            self._check_headers(scope)
            raw = await self._read_body(receive)
        except ApiError as e:
            await send_error(send, e, close=True)
            return
        try:
            body = parse_json_object(raw)
            if scope["path"] == "/v1/embeddings" and not self.embeddings:
                # llama-cpp-python would answer a 500 ("must be created with embedding=True")
                raise ApiError(
                    400,
                    "This server does not compute embeddings: vramc run loads the model for text generation.",
                    code="unsupported_endpoint",
                )
            if scope["path"] in CHAT_PATHS:
                check_chat(body)
            elif scope["path"] in COMPLETION_PATHS:
                check_completion(body)
            if self.model_checks is not None:
                if scope["path"] in CHAT_PATHS | COMPLETION_PATHS:
                    self.model_checks.check(body)
                elif scope["path"] == DETOKENIZE_PATH:
                    self.model_checks.check_detokenize(body)
        except ApiError as e:
            await send_error(send, e)
            return
        if scope["path"] in CHAT_PATHS | COMPLETION_PATHS:
            raw = json.dumps(body).encode()  # as mended
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()  # then http.disconnect, which the routes watch for

        await self.app(scope, replay, send)

    def _check_headers(self, scope) -> None:
        ctype = (_header(scope, b"content-type") or b"").decode("latin-1").partition(";")[0].strip().lower()
        if not JSON_TYPE.match(ctype):
            raise ApiError(
                415,
                f"Content-Type must be application/json, not {ctype or 'missing'!r}.",
                param=None,
                code="unsupported_media_type",
            )
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                raise ApiError(400, "Content-Length is not a number.")
            if int(declared) > self.max_body:
                raise self._too_large()

    async def _read_body(self, receive) -> bytes:
        # One deadline for the whole body, not per chunk: a client trickling a byte a second would
        # otherwise hold its connection (and a uvicorn task) for as long as it likes.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                raise ApiError(
                    408,
                    f"The request body did not arrive within {self.body_timeout:g} s (vramc run --body-timeout).",
                    code="request_timeout",
                ) from None
            if message["type"] == "http.disconnect":
                raise ApiError(400, "Client closed request")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            f"Request body too large: this server takes at most {self.max_body} bytes (vramc run --max-body).",
            code="request_too_large",
        )


# --- the queue ---------------------------------------------------------------------------------


class ModelQueue:
    """One request uses the model at a time (llama_cpp.server.app's lock); at most `limit` wait.

    Counted from admission (after the body was read and checked) until the whole answer, a stream
    included, has been sent: the ASGI call returns only then. One event loop: no locking needed.
    """

    SERVICE_WEIGHT = 0.3

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.admitted = 0  # counts, for /health: requests let through to the model, and refused
        self.refused = 0
        self.service: float | None = None  # a moving average of seconds per request, for Retry-After
        self.last_done = 0.0

    @property
    def waiting(self) -> int:
        return max(0, self.active - 1)

    def enter(self) -> float | None:
        if self.active > self.limit:
            self.refused += 1
            return None
        self.active += 1
        self.admitted += 1
        return time.monotonic()

    def leave(self, admitted: float) -> None:
        now = time.monotonic()
        self.active -= 1
        took = now - max(admitted, self.last_done)  # one at a time: its turn began when the last ended
        self.last_done = now
        w = self.SERVICE_WEIGHT
        self.service = took if self.service is None else (1 - w) * self.service + w * took

    def retry_after(self) -> int:
        """Seconds until a place is likely free: about one request's time."""
        return min(600, max(1, math.ceil(self.service or 1)))


class QueueMiddleware:
    def __init__(self, app, queue: ModelQueue, post_paths: frozenset[str]) -> None:
        self.app = app
        self.queue = queue
        self.post_paths = post_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.post_paths:
            await self.app(scope, receive, send)
            return
        admitted = self.queue.enter()
        if admitted is None:
            wait = self.queue.retry_after()
            await send_error(
                send,
                ApiError(
                    503,
                    f"The server is busy: one request is running and {self.queue.waiting} are waiting, the most "
                    f"it queues (vramc run --queue {self.queue.limit}). Retry after {wait} s.",
                    kind="server_error",
                    code="queue_full",
                    headers={"Retry-After": str(wait)},
                ),
            )
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.queue.leave(admitted)


# --- Host and API key --------------------------------------------------------------------------


def split_host(value: str) -> tuple[str, int | None]:
    """'Name:port' or '[v6]:port' into (name, port), lower-cased, without a trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    else:
        name, colon, port = value.rpartition(":")
        if not colon:
            name, port = value, None
    name = name.rstrip(".")
    if port is not None and not port.isdigit():
        return value, -1  # not a valid Host: matches nothing
    return name, int(port) if port is not None else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class HostCheck:
    """421 unless the Host header names this server.

    Accepted: the --host value, localhost, 127.0.0.1 and ::1 with the port served; on a wildcard
    address (0.0.0.0, ::) any IP address with that port (a DNS rebinding attack needs a DNS name);
    and each --allow-host NAME (any port) or NAME:PORT; `*` accepts any Host.
    """

    def __init__(self, app, host: str, port: int, allow: list[str]) -> None:
        self.app = app
        self.port = port
        bound = split_host(host if not (":" in host and not host.startswith("[")) else f"[{host}]")[0]
        self.wildcard = bound in ("0.0.0.0", "::", "")
        self.names = {"localhost", "127.0.0.1", "::1"} | ({bound} if not self.wildcard else set())
        self.any = "*" in allow
        self.allowed = [split_host(a) for a in allow if a != "*"]

    def accepts(self, value: str) -> bool:
        if self.any:
            return True
        name, port = split_host(value)
        if port == -1:
            return False
        for a_name, a_port in self.allowed:
            if name == a_name and a_port in (None, port if port is not None else 80):
                return True
        served = port if port is not None else 80
        if served != self.port:
            return False
        return name in self.names or (self.wildcard and _is_ip(name))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = _header(scope, b"host")
        value = raw.decode("latin-1") if raw is not None else ""
        if raw is not None and self.accepts(value):
            await self.app(scope, receive, send)
            return
        shown = json.dumps(value[:100]) if raw is not None else "missing"
        await send_error(
            send,
            ApiError(
                421,
                f"Host {shown} is not a name of this server (a DNS rebinding attack looks like this). Use "
                f"http://localhost:{self.port}/, or start vramc run with --allow-host NAME for a name that "
                "reaches it.",
                code="invalid_host",
            ),
        )


class ApiKeyMiddleware:
    """401 for any HTTP request without `Authorization: Bearer <key>` (constant-time compare)."""

    def __init__(self, app, keys: list[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        await send_error(
            send,
            ApiError(401, "Invalid or missing API key", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}),
        )

    def _authorized(self, scope) -> bool:
        value = _header(scope, b"authorization")
        if value is None:
            return False
        scheme, _, token = value.partition(b" ")
        token = token.strip()
        ok = False
        for key in self.keys:  # check them all: the time taken does not say which matched
            ok |= hmac.compare_digest(token, key)
        return scheme.lower() == b"bearer" and ok


# --- the app -----------------------------------------------------------------------------------


def validation_error(exc) -> ApiError:
    """FastAPI's RequestValidationError (pydantic's list) as OpenAI's one 400."""
    errors = exc.errors() or [{"loc": (), "msg": "invalid request", "type": "value_error"}]
    body = getattr(exc, "body", None)
    # pydantic's locations name the union member tried ('stop.str', 'messages.0.ChatCompletion
    # RequestSystemMessage.role'): keep the parts that are in the request, and report the error that
    # got deepest into it (for a message, the member of its role)
    paths = [_request_path(body, [p for p in e.get("loc", ()) if p != "body"]) for e in errors]
    deepest = max(range(len(errors)), key=lambda i: (len(paths[i]), -i))
    first, loc = errors[deepest], paths[deepest]
    param = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))
    kind = str(first.get("type", ""))
    code = (
        "missing_required_parameter"
        if kind == "missing"
        else "invalid_type"
        if kind.endswith(("_type", "_parsing"))
        else "invalid_value"
    )
    where = f"'{param}'" if param else "the request body"
    return ApiError(400, f"Invalid {where}: {first.get('msg', 'invalid')}.", param=param or None, code=code)


def _request_path(body, loc: list) -> list:
    """The parts of a pydantic location that index into the request body."""
    path, here = [], body
    for part in loc:
        if isinstance(here, dict) and part in here:
            path.append(part)
            here = here[part]
        elif isinstance(here, list) and isinstance(part, int) and 0 <= part < len(here):
            path.append(part)
            here = here[part]
        elif (
            isinstance(here, dict)
            and isinstance(part, str)
            and part.isidentifier()
            and part[:1].islower()
            and "[" not in part
            and part not in ("str", "int", "float", "bool", "list", "dict")
        ):
            path.append(part)  # a missing field: no further
            break
    return path


def openai_router(server_app, alias: str):
    """The server module's routes, with OpenAI's 400 for invalid bodies and a lock-free /v1/models."""
    from fastapi import APIRouter
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.routing import APIRoute
    from llama_cpp.server.errors import RouteErrorHandler

    class ValidationAs400(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()

            async def route_handler(request):
                try:
                    return await handler(request)
                except RequestValidationError as e:
                    err = validation_error(e)
                    return JSONResponse(json.loads(err.body()), status_code=err.status)

            return route_handler

    class OpenAIRoute(RouteErrorHandler, ValidationAs400):  # RouteErrorHandler wraps ours
        pass

    router = APIRouter(route_class=OpenAIRoute)
    for r in server_app.router.routes:
        if r.path == "/v1/models":
            continue
        router.add_api_route(
            r.path,
            r.endpoint,
            methods=list(r.methods),
            response_model=r.response_model,
            status_code=r.status_code,
            tags=r.tags,
            dependencies=r.dependencies,
            summary=r.summary,
            description=r.description,
            responses=r.responses,
            name=r.name,
            include_in_schema=r.include_in_schema,
            openapi_extra=r.openapi_extra,
        )

    @router.get("/v1/models", summary="Models", tags=["OpenAI V1"])
    async def get_models() -> dict:
        # llama_cpp.server.app's answer, without waiting for the model lock
        return {"object": "list", "data": [{"id": alias, "object": "model", "owned_by": "me", "permissions": []}]}

    return router


def build_app(
    llm,
    alias: str,
    api_keys: list[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    allow_hosts: list[str] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    queue: int = DEFAULT_QUEUE,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
):
    import llama_cpp
    import llama_cpp.server.app as server_app
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from llama_cpp.server.settings import ServerSettings
    from starlette.exceptions import HTTPException

    if not hasattr(server_app, "_llama_proxy") or not hasattr(server_app, "router"):
        raise RuntimeError(
            "this llama-cpp-python has no llama_cpp.server.app._llama_proxy/router; "
            "vramc run needs llama-cpp-python 0.3.36 (pip install 'vramc[run]')"
        )
    # api_key stays None here: ApiKeyMiddleware checks every path, the routes need not repeat it
    server_app.set_server_settings(ServerSettings(api_key=None, interrupt_requests=False))
    server_app._llama_proxy = LoadedModel(llm, alias)
    app = FastAPI(title=f"vramc run {alias}", version=llama_cpp.__version__)
    router = openai_router(server_app, alias)
    app.include_router(router)
    model_queue = ModelQueue(queue)

    @app.get("/health", tags=["vramc"])
    async def health() -> dict:
        # The model is loaded before the socket listens, so a server that answers is ready.
        return {
            "status": "ok",
            "model": alias,
            "busy": model_queue.active > 0,
            "waiting": model_queue.waiting,
            "queue": model_queue.limit,
            "admitted": model_queue.admitted,
            "refused": model_queue.refused,
        }

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, exc):  # routes outside OpenAIRoute (none take a body today)
        err = validation_error(exc)
        return JSONResponse(json.loads(err.body()), status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        # Starlette's 404/405 and the routes' own HTTPExceptions, in OpenAI's format
        where = f"{request.method} {request.url.path}"
        message = {404: f"Invalid URL ({where})", 405: f"Invalid method for URL ({where})"}.get(
            exc.status_code, str(exc.detail)
        )
        code = {404: "unknown_url", 405: "method_not_allowed"}.get(exc.status_code)
        kind = "server_error" if exc.status_code >= 500 else "invalid_request_error"
        return JSONResponse(
            json.loads(error_body(message, kind=kind, code=code)), status_code=exc.status_code, headers=exc.headers
        )

    post_paths = frozenset(r.path for r in router.routes if "POST" in r.methods)
    if not post_paths >= CHAT_PATHS | COMPLETION_PATHS:
        raise RuntimeError(f"llama_cpp.server.app's routes are not the expected ones: {sorted(post_paths)}")
    # add_middleware wraps: the last added is the outermost
    app.add_middleware(QueueMiddleware, queue=model_queue, post_paths=post_paths)
    app.add_middleware(
        RequestGuard,
        post_paths=post_paths,
        max_body=max_body,
        embeddings=bool(getattr(getattr(llm, "context_params", None), "embeddings", False)),
        model_checks=ModelChecks(llm),
        body_timeout=body_timeout,
    )
    if api_keys:
        app.add_middleware(ApiKeyMiddleware, keys=api_keys)
    app.add_middleware(HostCheck, host=host, port=port, allow=list(allow_hosts or []))
    return app


def valid_allow_host(value: str) -> bool:
    name, port = split_host(value)
    return bool(HOST_NAME.match(value.strip().lower())) and port != -1 and (port is None or 0 < port < 65536)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class BindError(Exception):
    pass


def bind(host: str, port: int) -> socket.socket:
    """Bind (not yet listen) before the model loads: a taken port fails in a second, not after
    minutes of loading; clients get 'connection refused' until the model is ready."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise BindError(f"cannot resolve --host {host!r}: {e.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: survive TIME_WAIT
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise BindError(
                f"port {port} on {host} is already in use (another server?); "
                "choose another with --port, or stop the other one"
            ) from None
        if e.errno == errno.EACCES:
            raise BindError(
                f"not allowed to bind port {port} on {host} (ports below 1024 need "
                "privileges); choose another with --port"
            ) from None
        raise BindError(f"cannot bind {host}:{port}: {e.strerror or e}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(app, sock: socket.socket, console) -> None:
    """Run uvicorn on the bound socket until SIGINT/SIGTERM, then shut down gracefully.

    uvicorn catches both signals, finishes in-flight requests (at most 5 s), and then re-raises the
    signal it caught against the handler that was installed before it: those are set here to
    handlers that only record it, so control comes back for an orderly exit.
    """
    import signal

    import uvicorn

    sock.listen(2048)
    config = uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=5, lifespan="off")
    server = uvicorn.Server(config)
    caught: list[int] = []
    previous = {
        s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        server.run(sockets=[sock])
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        sock.close()
