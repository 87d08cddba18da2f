"""`curate review serve ID`: the reviewers' web app over one build.

Starlette, server-rendered pages, a little inline JavaScript, nothing fetched from the
network. It binds 127.0.0.1 only (there is no option to bind anything else) and answers
only requests that carry its random token (`?token=` or the `X-Curate-Token` header);
others get 403. Decisions go through `review.loop.decide` into the same decisions file as
`curate review --decide` (one locked append each), so the next build's `[[overrides]]`
reads them.
"""

from __future__ import annotations

import hmac
import json
import secrets
import socket
import threading
from pathlib import Path
from typing import Any

from curate.errors import UserError
from curate.manifests.manifest import Manifest
from curate.review.browse import PAGE, Browser, Filters
from curate.review.decisions import Decision, latest, read
from curate.review.loop import decide, decisions_path, stats
from curate.review.pages import TEMPLATE_REASONS, failing_turn, list_page, row_page

HOST = "127.0.0.1"
MAX_BODY = 64 << 10  # a decision is a few hundred bytes
MAX_INDEX = 10**12  # past any list's end (a 404), and far inside what the ledger's SQL takes


class Review:
    """The app's state: the build, its ledger connection, the decisions file."""

    def __init__(self, manifest: Manifest, decisions: str | Path | None, token: str | None = None):
        self.manifest = manifest
        self.path = decisions_path(manifest, decisions)
        self.token = token or secrets.token_urlsafe(18)
        self.standing()  # a damaged decisions file: refused now, naming its file and line
        self.browser = Browser(manifest)
        self._stats: tuple[Any, list[dict[str, Any]]] | None = None
        self._tokenizer: Any = None

    def standing(self) -> dict[str, Decision]:
        return latest(read(self.path)) if self.path.exists() else {}

    def stats(self) -> list[dict[str, Any]]:
        """Precision per rule, recomputed only when the decisions file changed."""
        try:
            seen = self.path.stat()
            key: tuple[int, int] | None = (seen.st_mtime_ns, seen.st_size)
        except FileNotFoundError:
            key = None
        if self._stats is None or self._stats[0] != key:
            self._stats = (key, stats(self.manifest, [self.path]))
        return self._stats[1]

    def tokens(self, rec: dict[str, Any]) -> list[str] | None:
        """The failing turn's tokens under the build's tokenizer (None without one)."""
        turn, messages = failing_turn(rec), rec.get("messages") or []
        if turn is None:
            return None
        if self._tokenizer is None:
            from curate.review.inspect import manifest_tokenizer
            from curate.validators.target import load_tokenizer_dir

            entry = self.manifest.data.get("tokenizer")
            try:
                self._tokenizer = (
                    manifest_tokenizer(self.manifest, entry, load_tokenizer_dir, False)
                    if entry
                    else False
                )
            except UserError:
                self._tokenizer = False
        if not self._tokenizer:
            return None
        ids = self._tokenizer(messages[turn]["content"], add_special_tokens=False)["input_ids"]
        return [self._tokenizer.decode([i]) for i in ids[:2000]]


def app(review: Review, port: int | None = None) -> Any:
    """The app; `port`: the only one its Host header may name (None: any)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    def filters(request: Request) -> Filters:
        q = request.query_params
        return Filters(
            q.get("reason") or None,
            q.get("source") or None,
            q.get("stage") or None,
            q.get("q") or None,
        )

    def home(request: Request) -> Response:
        f = filters(request)
        offset = _int(request.query_params.get("offset"), 0)
        total = review.browser.count(f)
        rows = review.browser.page(f, offset)
        html = list_page(
            review.manifest.id[:12], review.token, f, review.browser.groups, rows, total,
            offset, review.standing(), review.stats(),
        )  # fmt: skip
        return HTMLResponse(html)

    def row(request: Request) -> Response:
        f = filters(request)
        index = _int(request.query_params.get("i"), 0)
        rec = review.browser.row(f, index)
        if rec is None:
            return PlainTextResponse("no such row in this list", status_code=404)
        tokens = review.tokens(rec) if rec["reason"] in TEMPLATE_REASONS else None
        total = review.browser.count(f)
        decision = review.standing().get(rec["id"])
        return HTMLResponse(
            row_page(review.manifest.id[:12], review.token, f, index, total, rec, decision, tokens)
        )

    async def decide_route(request: Request) -> Response:
        try:
            raw = b""
            async for chunk in request.stream():  # never more than MAX_BODY held
                raw += chunk
                if len(raw) > MAX_BODY:
                    return JSONResponse({"error": f"a body over {MAX_BODY} bytes"}, status_code=413)
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return JSONResponse({"error": "the body must be JSON"}, status_code=400)
        if not isinstance(body, dict) or body.get("decision") not in ("keep", "reject", "undo"):
            return JSONResponse({"error": "decision must be keep, reject or undo"}, status_code=400)
        note = body.get("note") if isinstance(body.get("note"), str) else None
        try:
            rec = decide(
                review.manifest, str(body.get("id")), body["decision"], note, path=review.path
            )
        except UserError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True, "written": rec})

    def stats_route(request: Request) -> Response:
        return JSONResponse(review.stats())

    routes = [
        Route("/", home),
        Route("/row", row),
        Route("/decide", decide_route, methods=["POST"]),
        Route("/stats", stats_route),
    ]

    async def refused(request: Request, exc: Exception) -> Response:
        # bad input met while serving (the decisions file damaged meanwhile): its message
        return PlainTextResponse(str(exc), status_code=400)

    starlette = Starlette(routes=routes, exception_handlers={UserError: refused})
    return _guarded(starlette, review.token, port)


def _guarded(inner: Any, token: str, port: int | None) -> Any:
    """ASGI middleware: 403 for a request without the token, addressed to another host than
    this app's (DNS rebinding), or a POST from a page of another origin."""
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse

    async def guard(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            given = request.query_params.get("token") or request.headers.get("x-curate-token") or ""
            problem = (
                "this app needs its token"
                if not hmac.compare_digest(given.encode(), token.encode())
                else _foreign(request, port)
            )
            if problem:
                await PlainTextResponse(f"forbidden: {problem}", status_code=403)(
                    scope, receive, send
                )
                return
        await inner(scope, receive, send)

    return guard


def _foreign(request: Any, port: int | None) -> str | None:
    """Why a request comes from elsewhere than this app's own pages, or None."""
    hosts = {f"{name}:{port}" if port else name for name in ("127.0.0.1", "localhost")}
    host = (request.headers.get("host") or "").lower()
    if (host if port else host.rsplit(":", 1)[0]) not in hosts:
        return f"Host {host[:60]!r} is not this app's address"
    if request.method not in ("GET", "HEAD"):
        origin = request.headers.get("origin")
        if origin is not None and origin.lower().removeprefix("http://") not in hosts:
            return f"a request from the page of another origin ({origin[:60]})"
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return "a request from the page of another site"
    return None


def _int(value: str | None, default: int) -> int:
    """A row index or offset from the query: a whole number from 0 up to a bound any list
    fits in; anything else is a 400 naming it."""
    if value is None:
        return default
    if not value.isdigit() or len(value) > 12:
        raise UserError(f"{value[:30]!r} is not a row index (0 to {MAX_INDEX})")
    return min(int(value), MAX_INDEX)


def loopback_socket(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 (port 0: the system picks one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {HOST}:{port}: {exc.strerror}") from None
    sock.listen(64)
    return sock


class Server:
    """The app on a loopback socket, served by uvicorn on a thread (`start`) or in the
    foreground (`run`)."""

    def __init__(self, review: Review, port: int = 0):
        import uvicorn

        self.review = review
        self.sock = loopback_socket(port)
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app(review, self.port), log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/?token={self.review.token}"

    def run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.close()

    def start(self) -> Server:
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        while not self.server.started and self.thread.is_alive():
            threading.Event().wait(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
        self.close()

    def close(self) -> None:
        self.sock.close()
        self.review.browser.close()


__all__ = ["PAGE", "Review", "Server", "app", "loopback_socket"]
