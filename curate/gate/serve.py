"""A small OpenAI-compatible chat server for a local model (`curate serve MODEL`): a judge
for `curate gate` where no vLLM / llama.cpp server is at hand, and what the judge's tests
talk to. It binds 127.0.0.1 only and answers only requests that carry its token.

`POST /v1/chat/completions` (messages, max_tokens, temperature: 0 = greedy) and
`GET /v1/models`. One request generates at a time: the model is shared.
"""

from __future__ import annotations

import argparse
import hmac
import json
import math
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_BODY = 1 << 20
MAX_TOKENS = 4096
MAX_CONNECTIONS = 32
IDLE_SECONDS = 10.0


class Chat:
    """The model and tokenizer, and one completion at a time."""

    def __init__(self, folder: Path, name: str):
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        from curate.train.model import load_model
        from curate.train.serving import stop_ids

        hf_logging.disable_progress_bar()
        self.name = name
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = load_model(folder, quantize=False).eval()
        self.stops = stop_ids(self.tokenizer)
        self.lock = threading.Lock()

    def complete(
        self, messages: list[dict[str, str]], max_tokens: int, temperature: float
    ) -> tuple[str, str, int, int]:
        import torch

        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        sampling = (
            {"do_sample": True, "temperature": temperature}
            if temperature > 0
            else {"do_sample": False}
        )
        with self.lock, torch.no_grad():
            out = self.model.generate(
                input_ids=ids.to(self.model.device),
                attention_mask=torch.ones_like(ids).to(self.model.device),
                max_new_tokens=max_tokens,
                eos_token_id=self.stops,
                pad_token_id=self.stops[0],
                **sampling,
            )
        new = out[0, ids.shape[1] :].tolist()
        end = next((i for i, t in enumerate(new) if t in self.stops), None)
        kept = new if end is None else new[:end]
        reason = "length" if end is None else "stop"
        answer = str(self.tokenizer.decode(kept, skip_special_tokens=True))
        return answer, reason, int(ids.shape[1]), len(new)


def handler(chat: Chat, token: str, idle: float = IDLE_SECONDS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _allowed(self) -> bool:
            given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if hmac.compare_digest(given.encode(), token.encode()):
                return True
            self._send(401, {"error": {"message": "a bearer token is required", "type": "auth"}})
            return False

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if not self._allowed():
                return
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": chat.name, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802
            if not self._allowed():
                return
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                messages, max_tokens, temperature = parse_request(self._body())
            except BadRequest as exc:
                self._send(
                    exc.status,
                    {"error": {"message": f"bad request: {exc}", "type": "invalid_request_error"}},
                )
                self.close_connection = True  # what is left of the body is never read
                return
            try:
                text, reason, prompt_tokens, made = chat.complete(messages, max_tokens, temperature)
            except Exception as exc:  # the model failed on this request; the server stays up
                self._send(500, {"error": {"message": f"generation failed: {exc}"[:300]}})
                return
            self._send(
                200,
                {
                    "id": "chatcmpl-" + secrets.token_hex(8),
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": chat.name,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": reason,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": made,
                        "total_tokens": prompt_tokens + made,
                    },
                },
            )

        def _body(self) -> bytes:
            """The request's body: a Content-Length of digits, at most MAX_BODY."""
            given = self.headers.get("Content-Length")
            if given is None:
                raise BadRequest("a Content-Length header is required", 411)
            if not given.strip().isdigit():
                raise BadRequest(f"Content-Length {given[:20]!r} is not a byte count")
            size = int(given)
            if size > MAX_BODY:
                raise BadRequest(f"a body of {size} bytes is over {MAX_BODY}", 413)
            return self.rfile.read(size)

    Handler.timeout = idle  # a connection that sends nothing for this long is closed
    return Handler


class BadRequest(ValueError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_request(body: bytes) -> tuple[list[dict[str, str]], int, float]:
    """(messages, max_tokens, temperature) of a chat request, or BadRequest saying why."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not JSON ({str(exc)[:80]})") from None
    if not isinstance(request, dict):
        raise BadRequest("the body is a JSON object")
    turns = request.get("messages")
    if not isinstance(turns, list) or not turns:
        raise BadRequest("`messages` is a non-empty list of {role, content}")
    for k, m in enumerate(turns):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)):  # fmt: skip
            raise BadRequest(f"`messages[{k}]` is not a {{role, content}} object of text")
    messages = [{"role": m["role"], "content": m["content"]} for m in turns]
    max_tokens = request.get("max_tokens", 256)
    if max_tokens is None:
        max_tokens = 256
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise BadRequest("`max_tokens` is a whole number")
    if not 1 <= max_tokens <= MAX_TOKENS:
        raise BadRequest(f"`max_tokens` {max_tokens} is not between 1 and {MAX_TOKENS}")
    temperature = request.get("temperature", 0.0)
    if temperature is None:
        temperature = 0.0
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise BadRequest("`temperature` is a number")
    if not (math.isfinite(temperature) and 0.0 <= temperature <= 2.0):
        raise BadRequest(f"`temperature` {temperature} is not between 0 and 2")
    return messages, max_tokens, float(temperature)


class CappedServer(ThreadingHTTPServer):
    """At most `MAX_CONNECTIONS` connections served at once (each a thread); one more is
    closed at once, not queued: idle clients cannot pile up threads."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def serve(folder: Path, name: str, port: int, token: str, idle: float = IDLE_SECONDS) -> None:
    """Serve until interrupted; the first line on stdout says where (port 0: any free one).
    A connection silent for `idle` seconds is closed."""
    server = CappedServer(("127.0.0.1", port), handler(Chat(folder, name), token, idle))
    print(f"serving {name} at http://127.0.0.1:{server.server_address[1]}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m curate.gate.serve", description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("--name", default="judge")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token", required=True)
    parser.add_argument("--idle-seconds", type=float, default=IDLE_SECONDS)
    args = parser.parse_args(argv)
    serve(args.model, args.name, args.port, args.token, args.idle_seconds)


if __name__ == "__main__":
    main(sys.argv[1:])
