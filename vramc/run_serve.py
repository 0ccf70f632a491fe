"""Serve an already-loaded `llama_cpp.Llama` with llama-cpp-python's own OpenAI-compatible routes.

`llama_cpp.server.app.create_app` cannot take a loaded model: it builds a `LlamaProxy`, which
loads models itself from `ModelSettings` (its own defaults and argument mapping, not the plan's).
So the app here is a thin FastAPI around the server module's `router` (every endpoint, its error
handling and its request locks unchanged) with the module's two globals set directly:
`_server_settings` through `set_server_settings`, and `_llama_proxy` to `LoadedModel`, which hands
out the one model whatever name a request asks for (as LlamaProxy does with an unknown name).

The routes are re-registered with `OpenAIRoute`: the server's `RouteErrorHandler` turns *every*
exception into a 500, including FastAPI's request validation (a malformed body is the client's
error: 422), so validation errors are answered before its wrapper sees them.

Added: `GET /health`, and an API key check in front of *every* path (the routes' own check does not
cover FastAPI's /docs and /openapi.json, nor /health). Left out: create_app's CORS middleware with
`allow_origins=["*"]`, which would let any web page the user visits call the local model.
`interrupt_requests` is off: with it on, a streaming response is cut short as soon as another
request waits, so concurrent clients would get truncated answers.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import socket


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


class ApiKeyMiddleware:
    """401 for any HTTP request without `Authorization: Bearer <key>` (constant-time compare)."""

    def __init__(self, app, keys: list[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": {"message": "Invalid or missing API key", "type": "invalid_request_error",
                                     "code": "invalid_api_key"}}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _authorized(self, scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                token = token.strip()
                ok = False
                for key in self.keys:  # check them all: the time taken does not say which matched
                    ok |= hmac.compare_digest(token, key)
                return scheme.lower() == b"bearer" and ok
        return False


def openai_router(server_app):
    """The server module's routes, unchanged but for the route class (see the module doc)."""
    from fastapi import APIRouter
    from fastapi.exception_handlers import request_validation_exception_handler
    from fastapi.exceptions import RequestValidationError
    from fastapi.routing import APIRoute
    from llama_cpp.server.errors import RouteErrorHandler

    class ValidationAs422(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()

            async def route_handler(request):
                try:
                    return await handler(request)
                except RequestValidationError as e:
                    return await request_validation_exception_handler(request, e)

            return route_handler

    class OpenAIRoute(RouteErrorHandler, ValidationAs422):  # RouteErrorHandler wraps ours
        pass

    router = APIRouter(route_class=OpenAIRoute)
    for r in server_app.router.routes:
        router.add_api_route(
            r.path, r.endpoint, methods=list(r.methods), response_model=r.response_model,
            status_code=r.status_code, tags=r.tags, dependencies=r.dependencies, summary=r.summary,
            description=r.description, responses=r.responses, name=r.name,
            include_in_schema=r.include_in_schema, openapi_extra=r.openapi_extra)
    return router


def build_app(llm, alias: str, api_keys: list[str]):
    import llama_cpp
    import llama_cpp.server.app as server_app
    from fastapi import FastAPI
    from llama_cpp.server.settings import ServerSettings

    if not hasattr(server_app, "_llama_proxy") or not hasattr(server_app, "router"):
        raise RuntimeError("this llama-cpp-python has no llama_cpp.server.app._llama_proxy/router; "
                           "vramc run needs llama-cpp-python 0.3.36 (pip install 'vramc[run]')")
    # api_key stays None here: ApiKeyMiddleware checks every path, the routes need not repeat it
    server_app.set_server_settings(ServerSettings(api_key=None, interrupt_requests=False))
    server_app._llama_proxy = LoadedModel(llm, alias)
    app = FastAPI(title=f"vramc run {alias}", version=llama_cpp.__version__)
    app.include_router(openai_router(server_app))

    @app.get("/health", tags=["vramc"])
    async def health() -> dict:
        # The model is loaded before the socket listens, so a server that answers is ready.
        return {"status": "ok", "model": alias}

    if api_keys:
        app.add_middleware(ApiKeyMiddleware, keys=api_keys)
    return app


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
            raise BindError(f"port {port} on {host} is already in use (another server?); "
                            "choose another with --port, or stop the other one") from None
        if e.errno == errno.EACCES:
            raise BindError(f"not allowed to bind port {port} on {host} (ports below 1024 need "
                            "privileges); choose another with --port") from None
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
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        sock.close()
