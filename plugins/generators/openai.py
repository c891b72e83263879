"""The ``openai`` generator: any OpenAI-compatible HTTP endpoint as the algorithm factory.

Works with the OpenAI API and with servers that speak its protocol (vLLM's ``vllm serve``,
llama.cpp's server, Ollama, LM Studio, TGI, ...). Standard library only (``urllib``).

* **the key** is read from the environment variable named by ``api_key_env`` (default
  ``OPENAI_API_KEY``) when a request is sent, and goes only into that request's
  ``Authorization`` header. It is never a configuration value (so it never reaches the event
  log), never logged, never in a completion's metadata or in an error message, and candidates
  never see it (the sandbox runs them with an empty environment). With the variable unset, no
  ``Authorization`` header is sent (local servers).
* **retries**: 408, 409, 429 and 5xx answers and network errors are retried up to
  ``max_retries`` times with exponential backoff (``backoff`` × 2^attempt, capped at
  ``backoff_max``, with jitter), honouring ``Retry-After``; other errors stop the run with one
  line.
* **n samples per prompt**: requests ask for ``n_per_request`` choices at a time (``n``); a
  server that returns fewer gets asked again for the rest. Requests run ``concurrency`` at a
  time; completions keep a fixed order (prompt, then request, then choice). Each request sends
  a ``seed`` derived from (seed, prompt index, request index) unless ``send_seed = false``;
  remote sampling is still not guaranteed reproducible, which is what ``replay`` is for.

    [generator]
    name = "openai"
    base_url = "http://127.0.0.1:8000/v1"
    model = "openchat-3.5-1210"
    api_key_env = "OPENAI_API_KEY"
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from selfdev import Completion, ConfigError, Context, Generator, SelfdevError, derive_seed
from selfdev import hookimpl
from selfdev.plugins.factory.checks import check_number

log = logging.getLogger("selfdev.generators.openai")

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
DEFAULT_BASE_URL = "https://api.openai.com/v1"


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIGenerator(Generator):
    """Completions from an OpenAI-compatible ``/chat/completions`` (or ``/completions``) API."""

    name = "openai"

    def __init__(self, ctx: Context, *, model: str = "", base_url: str = "",
                 api_key_env: str = "OPENAI_API_KEY", chat: bool = True, system: str = "",
                 max_tokens: int = 1024, top_p: float = 1.0, n_per_request: int = 8,
                 concurrency: int = 4, timeout: float = 120.0, max_retries: int = 6,
                 backoff: float = 1.0, backoff_max: float = 60.0, send_seed: bool = True,
                 stop: list[str] | None = None, extra_body: dict[str, Any] | None = None) -> None:
        super().__init__(ctx)
        k = "generator"
        if not model:
            raise ConfigError("config: [generator] openai needs model = \"NAME\" (the served model)")
        self.model = model
        self.base_url = (base_url or os.environ.get("SELFDEV_OPENAI_BASE_URL")
                         or DEFAULT_BASE_URL).rstrip("/")
        if not re.match(r"^https?://", self.base_url):
            raise ConfigError(f"config: [generator] base_url must start with http:// or https://; "
                              f"got {self.base_url!r}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env or ""):
            raise ConfigError("config: [generator] api_key_env must be the NAME of an environment "
                              "variable holding the key (the key itself never goes in the config)")
        self.api_key_env = api_key_env
        self.chat = bool(chat)
        self.system = system
        self.max_tokens = check_number(k, "max_tokens", max_tokens, lo=1, integer=True)
        self.top_p = check_number(k, "top_p", top_p, lo=0.0, hi=1.0)
        self.n_per_request = check_number(k, "n_per_request", n_per_request, lo=1, integer=True)
        self.concurrency = check_number(k, "concurrency", concurrency, lo=1, integer=True)
        self.timeout = check_number(k, "timeout", timeout, lo=0.001)
        self.max_retries = check_number(k, "max_retries", max_retries, lo=0, integer=True)
        self.backoff = check_number(k, "backoff", backoff, lo=0.0)
        self.backoff_max = check_number(k, "backoff_max", backoff_max, lo=0.0)
        self.send_seed = bool(send_seed)
        self.stop = list(stop or [])
        self.extra_body = dict(extra_body or {})
        self.requests_sent = 0
        self.retries = 0

    # ---- HTTP ------------------------------------------------------------------------------

    def _key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None

    def _scrub(self, text: str) -> str:
        key = self._key()
        if key:
            text = text.replace(key, "***")
        return text[:300]

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        endpoint = "/chat/completions" if self.chat else "/completions"
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": "selfdev"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.base_url + endpoint, data=json.dumps(body).encode(),
                                     headers=headers, method="POST")
        self.requests_sent += 1
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = self._error_detail(exc)
            where = f"POST {self.base_url}{endpoint} returned {exc.code}"
            if exc.code in RETRY_STATUS:
                raise _Retryable(f"{where}: {detail}", _retry_after(exc.headers)) from None
            hint = (f" (is ${self.api_key_env} set to a valid key?)"
                    if exc.code in (401, 403) else "")
            raise SelfdevError(f"openai generator: {where}: {detail}{hint}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Retryable(f"POST {self.base_url}{endpoint} failed: "
                             f"{self._scrub(str(reason))}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise _Retryable(f"POST {self.base_url}{endpoint}: the answer is not JSON") from None

    def _error_detail(self, exc: urllib.error.HTTPError) -> str:
        try:
            data = json.loads(exc.read() or b"{}")
            msg = data.get("error", data)
            if isinstance(msg, dict):
                msg = msg.get("message") or json.dumps(msg)
        except (ValueError, OSError, AttributeError):
            msg = exc.reason
        return self._scrub(str(msg))

    def _call(self, body: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                return self._post(body)
            except _Retryable as exc:
                if attempt >= self.max_retries:
                    raise SelfdevError(f"openai generator: giving up after {attempt + 1} "
                                       f"attempts: {exc}") from None
                delay = min(self.backoff_max, self.backoff * (2 ** attempt))
                delay = delay * (0.5 + rng.random() / 2)
                if exc.retry_after is not None:
                    delay = min(self.backoff_max, max(delay, exc.retry_after))
                attempt += 1
                self.retries += 1
                log.warning("openai generator: %s; retry %d/%d in %.1f s", exc, attempt,
                            self.max_retries, delay)
                time.sleep(delay)

    # ---- sampling --------------------------------------------------------------------------

    def _body(self, prompt: str, n: int, temperature: float, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "n": n, "temperature": float(temperature),
                                "max_tokens": self.max_tokens}
        if self.top_p < 1.0:
            body["top_p"] = self.top_p
        if self.stop:
            body["stop"] = self.stop
        if seed is not None:
            body["seed"] = seed
        if self.chat:
            messages = [{"role": "system", "content": self.system}] if self.system else []
            body["messages"] = messages + [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        body.update(self.extra_body)
        return body

    def _request_chunk(self, prompt: str, count: int, temperature: float, seed: int,
                       prompt_index: int, chunk: int) -> list[tuple[str, dict[str, Any]]]:
        rng = random.Random(derive_seed(seed, "backoff", prompt_index, chunk))
        out: list[tuple[str, dict[str, Any]]] = []
        round_ = 0
        while len(out) < count:
            want = count - len(out)
            req_seed = (derive_seed(seed, prompt_index, chunk, round_) % (2 ** 31)
                        if self.send_seed else None)
            data = self._call(self._body(prompt, want, temperature, req_seed), rng)
            choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
            if not choices:
                raise SelfdevError(f"openai generator: {self.base_url} answered with no choices")
            usage = data.get("usage") or {}
            for c in choices[:want]:
                if self.chat:
                    text = ((c.get("message") or {}).get("content")) or ""
                else:
                    text = c.get("text") or ""
                meta = {"finish": c.get("finish_reason"), "model": data.get("model", self.model),
                        "request": f"{prompt_index}.{chunk}.{round_}",
                        "temperature": round(float(temperature), 6)}
                if usage.get("completion_tokens") is not None:
                    meta["request_completion_tokens"] = usage["completion_tokens"]
                out.append((text, meta))
            round_ += 1
        return out

    def generate(self, prompts: list[str], n: int, temperature: float, seed: int,
                 checkpoint: Any = None, iteration: int = 1) -> list[Completion]:
        """``n`` completions per prompt; ``checkpoint`` is ignored (a remote model is not
        refined by selfdev: use ``optimizer = "none"``)."""
        jobs = []
        for p, prompt in enumerate(prompts):
            for chunk, start in enumerate(range(0, n, self.n_per_request)):
                jobs.append((p, chunk, min(self.n_per_request, n - start), prompt))
        task = self.ctx.progress.task("factory: requests", total=len(jobs))
        try:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                futures = [pool.submit(self._request_chunk, prompt, count, temperature, seed, p,
                                       chunk) for p, chunk, count, prompt in jobs]
                results = []
                for f in futures:
                    results.append(f.result())
                    task.advance()
        finally:
            task.close()
        completions = []
        for (p, _chunk, _count, _prompt), rows in zip(jobs, results):
            completions += [Completion(text=text, prompt_index=p, meta=meta) for text, meta in rows]
        return completions


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@hookimpl
def register_generators(register):
    register(OpenAIGenerator)
