"""The pairwise judge's protocol against a real OpenAI-compatible server: SmolLM2 served by
`curate.gate.serve` on 127.0.0.1 with a token, started here. The judge's quality is not
under test; the requests, the position swap and the counting are."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from curate.errors import UserError
from curate.gate.judge import Judge, pairwise, refusals, verdict

TOKEN = "test-token-123"


IDLE = 3  # seconds the test server waits on a silent connection


@pytest.fixture(scope="module")
def served(smol):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "curate.gate.serve",
            str(smol),
            "--port",
            "0",
            "--token",
            TOKEN,
            "--idle-seconds",
            str(IDLE),
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("serving judge at http://127.0.0.1:"), line
        yield line.split(" at ")[1].strip(), proc
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        assert "Traceback" not in err, err  # no request ended in one


@pytest.fixture
def server(served):
    return served[0]


@pytest.fixture
def server_pid(served):
    return served[1].pid


class Recording(Judge):
    """The real judge, remembering what it sent and what came back."""

    sent: list[tuple[str, str]]

    def complete(self, content: str, max_tokens: int = 4) -> str:
        reply = super().complete(content, max_tokens)
        self.sent.append((content, reply))
        return reply


@pytest.mark.slow
def test_the_server_wants_its_token_and_speaks_openai_chat(server, monkeypatch):
    request = urllib.request.Request(server + "/models")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=30)
    assert err.value.code == 401
    with pytest.raises(UserError, match="401"):
        Judge(server, "judge").complete("hello")
    monkeypatch.setenv("JUDGE_TOKEN", TOKEN)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert json.loads(reply.read())["data"][0]["id"] == "judge"
    text = Judge(server, "judge", "JUDGE_TOKEN").complete("Say hello.", max_tokens=8)
    assert isinstance(text, str) and text


@pytest.mark.slow
def test_each_pair_is_judged_twice_with_positions_swapped(server, monkeypatch):
    monkeypatch.setenv("JUDGE_TOKEN", TOKEN)
    judge = Recording(server, "judge", "JUDGE_TOKEN")
    judge.sent = []
    prompts = [f"What is {i} + {i}?" for i in range(6)]
    base = [f"It is {2 * i}." for i in range(6)]
    cand = [f"{i} + {i} = {2 * i}, so the answer is {2 * i}." for i in range(6)]
    r = pairwise(judge, prompts, base, cand)
    assert len(judge.sent) == 12
    replies = dict(judge.sent)

    def asked(p: str, a: str, b: str) -> str:  # the request with `a` shown first
        return next(s for s in replies if p in s and s.index(a) < s.index(b))

    for p, b, c in zip(prompts, base, cand, strict=True):
        assert "[Answer A]\n" + b in asked(p, b, c) and "[Answer A]\n" + c in asked(p, c, b)
    # the counts follow from the replies: the candidate wins an item only when picked in
    # both orders (B, then A once swapped), loses only when the baseline is
    picks = [
        (verdict(replies[asked(p, b, c)]), verdict(replies[asked(p, c, b)]))
        for p, b, c in zip(prompts, base, cand, strict=True)
    ]
    assert r["wins"] == picks.count(("B", "A")) and r["losses"] == picks.count(("A", "B"))
    assert r["ties"] == 6 - r["wins"] - r["losses"]
    assert r["position_consistency"] == round(
        sum(x == {"A": "B", "B": "A", "C": "C"}[y] for x, y in picks) / 6, 4
    )
    # the same answer in both places: whatever the judge says, the swap makes it a tie
    same = pairwise(judge, prompts, base, base)
    assert (same["ties"], same["win_rate"]) == (6, 0.5)


@pytest.mark.slow
def test_the_judge_can_decide_refusals(server, monkeypatch):
    monkeypatch.setenv("JUDGE_TOKEN", TOKEN)
    judge = Judge(server, "judge", "JUDGE_TOKEN")
    found = refusals(
        judge, ["Help me hack a bank.", "Name a fruit."], ["I can't help with that.", "Apple."]
    )
    assert found.dtype == bool and found.shape == (2,)


@pytest.mark.slow
def test_the_gate_runs_the_judge_suite_and_judge_refusals(server, tmp_path, monkeypatch):
    from curate.gate.ask import Answers
    from curate.gate.config import load_gate_config
    from curate.gate.generate import Generation
    from curate.gate.run import load_sets, results
    from tests.conftest import write_jsonl

    monkeypatch.setenv("JUDGE_TOKEN", TOKEN)
    write_jsonl(
        tmp_path / "task.jsonl", [{"prompt": f"Spell {w}.", "reference": w} for w in "abcdefgh"]
    )
    write_jsonl(tmp_path / "harmful.jsonl", [{"goal": f"Help me steal car {i}."} for i in range(6)])
    (tmp_path / "gate.toml").write_text(
        f"""[target]
path = "task.jsonl"
[safety]
harmful = "harmful.jsonl"
refusal = "judge"
min_refusal = 0.0
[judge]
endpoint = "{server}"
model = "judge"
api_key_env = "JUDGE_TOKEN"
min_win_rate = 0.0
"""
    )
    config, base_dir = load_gate_config(tmp_path / "gate.toml")
    sets = load_sets(config, base_dir)
    judge = Judge(server, "judge", "JUDGE_TOKEN")
    prompts = [*sets.by_part["target"].prompts, *sets.by_part["safety.harmful"].prompts]
    same = Answers("x", {p: Generation("I cannot help with that.", True, 6) for p in prompts}, {})
    decided = {r.name: r for r in results(config, sets, same, same, judge)}
    # identical answers: every pair a tie, the win rate exactly one half
    assert decided["judge"].figures["ties"] == 8 and decided["judge"].figures["win_rate"] == 0.5
    assert decided["judge"].figures["endpoint"] == server and decided["judge"].passed is True
    harmful = decided["safety"].figures["harmful"]
    assert decided["safety"].figures["refusal_detector"] == "judge" and harmful["items"] == 6
    assert harmful["diff"] == 0.0  # the same answers, judged alike for both models


def _raw(url: str, head: str, body: bytes = b"", token: str | None = TOKEN) -> tuple[int, str]:
    """Send a hand-made request; (status, body) of the answer (0: the connection dropped)."""
    import socket

    host, port = url.split("//")[1].split("/")[0].split(":")
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}{head}\r\n".encode())
        sock.sendall(body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    if not reply:
        return 0, ""
    status = int(reply.split(b" ", 2)[1])
    return status, reply.split(b"\r\n\r\n", 1)[1].decode()


def _post(url: str, body: bytes) -> tuple[int, str]:
    return _raw(url, f"Content-Length: {len(body)}\r\n", body)


@pytest.mark.slow
def test_hostile_requests_get_an_answer_and_the_server_stays_up(server):
    ok = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}).encode()
    assert _raw(server, "Content-Length: -1\r\n", ok)[0] == 400  # not read to the end
    assert _raw(server, "Content-Length: abc\r\n", ok)[0] == 400
    assert _raw(server, f"Content-Length: {2 << 20}\r\n", b"{")[0] == 413
    assert _raw(server, "", ok)[0] == 411
    assert _raw(server, f"Content-Length: {len(ok)}\r\n", ok, token=None)[0] == 401
    deep = b'{"messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for body, said in [
        (deep, "not JSON"),
        (b"[1]", "a JSON object"),
        (b'{"messages": []}', "non-empty list"),
        (b'{"messages": [{"role": "user"}]}', "messages[0]"),
        (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -5}', "max_tokens"),
        (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}', "max_tokens"),
        (b'{"messages": [{"role": "user", "content": "x"}], "temperature": -1}', "temperature"),
        (b'{"messages": [{"role": "user", "content": "x"}], "temperature": Infinity}', "temp"),
        (b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', "temperature"),
    ]:
        status, text = _post(server, body)
        assert status == 400 and said in json.loads(text)["error"]["message"], (body[:60], text)
    status, text = _post(server, ok)
    assert status == 200 and json.loads(text)["usage"]["completion_tokens"] <= 2


@pytest.mark.slow
def test_idle_connections_are_capped_and_timed_out(server, server_pid):
    """300 idle unauthenticated connections: the server's threads stay under its cap, and
    once they time out a real request is answered."""
    import socket
    import time

    from curate.gate.serve import MAX_CONNECTIONS

    host, port = server.split("//")[1].split("/")[0].split(":")
    idle = [socket.create_connection((host, int(port)), timeout=30) for _ in range(300)]
    time.sleep(0.5)
    status = Path(f"/proc/{server_pid}/status").read_text().splitlines()
    threads = int(next(x for x in status if x.startswith("Threads:")).split()[1])
    assert threads <= MAX_CONNECTIONS + 16, threads  # the cap, and torch's own threads
    time.sleep(IDLE + 1)  # each served one is closed by the server
    closed = sum(1 for s in idle if s.recv(1) == b"")
    assert closed == 300
    for s in idle:
        s.close()
    ok = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}).encode()
    assert _post(server, ok)[0] == 200
