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
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_BODY = 1 << 20


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


def handler(chat: Chat, token: str) -> type[BaseHTTPRequestHandler]:
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
            size = int(self.headers.get("Content-Length") or 0)
            try:
                if size > MAX_BODY:
                    raise ValueError(f"a body of {size} bytes is over {MAX_BODY}")
                body = json.loads(self.rfile.read(size))
                messages = [
                    {"role": str(m["role"]), "content": str(m["content"])} for m in body["messages"]
                ]
                max_tokens = min(int(body.get("max_tokens") or 256), 4096)
                temperature = float(body.get("temperature") or 0.0)
            except (ValueError, KeyError, TypeError) as exc:
                self._send(
                    400,
                    {"error": {"message": f"bad request: {exc}", "type": "invalid_request_error"}},
                )
                return
            text, reason, prompt_tokens, made = chat.complete(messages, max_tokens, temperature)
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

    return Handler


def serve(folder: Path, name: str, port: int, token: str) -> None:
    """Serve until interrupted; the first line on stdout says where (port 0: any free one)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler(Chat(folder, name), token))
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
    args = parser.parse_args(argv)
    serve(args.model, args.name, args.port, args.token)


if __name__ == "__main__":
    main(sys.argv[1:])
