"""The ``openai`` generator against a local OpenAI-compatible server (http.server in a thread)."""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from selfdev.engine.api import ConfigError, Context, NullProgress, SelfdevError
from selfdev.plugins.generators.openai import OpenAIGenerator

KEY = "sk-test-7f3a9c1e-never-log-me"


class FakeServer:
    """Answers /v1/chat/completions and /v1/completions; can fail the first requests."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.failures: list[tuple[int, dict]] = []  # (status, headers) to answer first
        self.max_n: int | None = None
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with server.lock:
                    server.requests.append({"path": self.path, "body": body,
                                            "auth": self.headers.get("Authorization")})
                    failure = server.failures.pop(0) if server.failures else None
                if failure:
                    status, headers = failure
                    payload = json.dumps({"error": {"message": f"try again ({status})"}}).encode()
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                n = body.get("n", 1)
                if server.max_n is not None:
                    n = min(n, server.max_n)
                choices = []
                for i in range(n):
                    code = (f"```python\nimport torch\n\ndef merge_models(task_vectors, base, name):\n"
                            f"    return {0.1 * (i + 1):.1f} * sum(task_vectors.values())\n```")
                    if self.path.endswith("/chat/completions"):
                        choices.append({"index": i, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": code}})
                    else:
                        choices.append({"index": i, "finish_reason": "stop", "text": code})
                payload = json.dumps({"id": "cmpl-1", "model": body["model"], "choices": choices,
                                      "usage": {"completion_tokens": 10 * n}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(run_id="t", seed=0, home=tmp_path, artifacts=tmp_path / "art",
                   progress=NullProgress())


def make(ctx, server, **kw):
    opts = {"model": "factory-7b", "base_url": server.url, "api_key_env": "SELFDEV_TEST_KEY",
            "backoff": 0.01, "backoff_max": 0.05}
    opts.update(kw)
    return OpenAIGenerator(ctx, **opts)


def test_n_samples_per_prompt_in_order(ctx, server, monkeypatch):
    monkeypatch.setenv("SELFDEV_TEST_KEY", KEY)
    gen = make(ctx, server, n_per_request=4, system="You write merge functions.")
    out = gen.generate(["prompt A", "prompt B"], 6, 0.9, seed=3)
    assert len(out) == 12
    assert [c.prompt_index for c in out] == [0] * 6 + [1] * 6
    assert all("def merge_models" in c.text for c in out)
    # 6 per prompt in requests of at most 4: n=4 then n=2
    ns = sorted(r["body"]["n"] for r in server.requests)
    assert ns == [2, 2, 4, 4]
    body = server.requests[0]["body"]
    assert body["model"] == "factory-7b" and body["temperature"] == 0.9
    assert body["messages"][0] == {"role": "system", "content": "You write merge functions."}
    assert body["messages"][1]["role"] == "user"
    assert isinstance(body["seed"], int)


def test_key_sent_in_header_but_never_recorded(ctx, server, monkeypatch, caplog, capsys):
    monkeypatch.setenv("SELFDEV_TEST_KEY", KEY)
    server.failures = [(500, {}), (429, {"Retry-After": "0"})]
    gen = make(ctx, server)
    with caplog.at_level(logging.DEBUG):
        out = gen.generate(["p"], 2, 1.0, seed=0)
    assert len(out) == 2
    assert all(r["auth"] == f"Bearer {KEY}" for r in server.requests)
    recorded = json.dumps([{"text": c.text, "meta": c.meta} for c in out])
    captured = capsys.readouterr()
    assert KEY not in recorded
    assert KEY not in caplog.text and KEY not in captured.out and KEY not in captured.err
    assert KEY not in json.dumps(vars(gen), default=str)
    assert "retry" in caplog.text  # the retries were logged (without the key)


def test_retries_500_and_429_with_backoff(ctx, server, monkeypatch):
    monkeypatch.delenv("SELFDEV_TEST_KEY", raising=False)
    server.failures = [(500, {}), (503, {}), (429, {"Retry-After": "0.01"})]
    gen = make(ctx, server, max_retries=5)
    out = gen.generate(["p"], 3, 0.7, seed=1)
    assert len(out) == 3
    assert len(server.requests) == 4 and gen.retries == 3
    assert server.requests[0]["auth"] is None  # no key: no Authorization header


def test_gives_up_with_one_line(ctx, server):
    server.failures = [(500, {})] * 5
    gen = make(ctx, server, max_retries=2)
    with pytest.raises(SelfdevError) as err:
        gen.generate(["p"], 1, 1.0, seed=0)
    msg = str(err.value)
    assert "giving up after 3 attempts" in msg and "\n" not in msg


def test_client_error_is_not_retried(ctx, server, monkeypatch):
    monkeypatch.setenv("SELFDEV_TEST_KEY", KEY)
    server.failures = [(401, {})]
    gen = make(ctx, server)
    with pytest.raises(SelfdevError) as err:
        gen.generate(["p"], 1, 1.0, seed=0)
    assert "401" in str(err.value) and "$SELFDEV_TEST_KEY" in str(err.value)
    assert KEY not in str(err.value)
    assert len(server.requests) == 1


def test_server_returning_fewer_choices_is_asked_again(ctx, server):
    server.max_n = 1  # a server that ignores n
    gen = make(ctx, server, n_per_request=3)
    out = gen.generate(["p"], 3, 1.0, seed=0)
    assert len(out) == 3 and len(server.requests) == 3


def test_completions_endpoint(ctx, server):
    gen = make(ctx, server, chat=False)
    out = gen.generate(["def merge_models"], 2, 1.0, seed=0)
    assert server.requests[0]["path"].endswith("/v1/completions")
    assert server.requests[0]["body"]["prompt"] == "def merge_models"
    assert len(out) == 2 and "merge_models" in out[0].text


def test_config_errors(ctx):
    with pytest.raises(ConfigError):
        OpenAIGenerator(ctx)  # no model
    with pytest.raises(ConfigError):
        OpenAIGenerator(ctx, model="m", api_key_env="sk-abc-123")  # a key, not a variable name
    with pytest.raises(ConfigError):
        OpenAIGenerator(ctx, model="m", base_url="ftp://x")
