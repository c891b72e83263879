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

from pydantic import field_validator

from selfdev import Completion, ConfigError, Context, Field, Generator, SelfdevError, derive_seed
from selfdev import hookimpl
from selfdev.plugins.factory.options import Stop, System, TopP

log = logging.getLogger("selfdev.generators.openai")

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
DEFAULT_BASE_URL = "https://api.openai.com/v1"
HTTP_URL = re.compile(r"^https?://")


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIGenerator(Generator):
    """Completions from an OpenAI-compatible ``/chat/completions`` (or ``/completions``) API."""

    name = "openai"

    class Options(Generator.Options):
        model: str = Field(min_length=1, description="the served model's name")
        base_url: str = Field("", description="the API's base URL (empty: "
                                              "$SELFDEV_OPENAI_BASE_URL, else the OpenAI API)")
        api_key_env: str = Field(
            "OPENAI_API_KEY", description="the NAME of the environment variable holding the key "
                                          "(unset variable: no Authorization header)",
            json_schema_extra={"hide_value": True})
        chat: bool = Field(True, description="use /chat/completions (false: /completions)")
        system: System = ""
        max_tokens: int = Field(1024, ge=1, description="most tokens per completion")
        top_p: TopP = 1.0
        n_per_request: int = Field(8, ge=1, description="choices asked for per request")
        concurrency: int = Field(4, ge=1, description="requests in flight at once")
        timeout: float = Field(120.0, ge=0.001, description="seconds per request")
        max_retries: int = Field(6, ge=0, description="retries of 408/409/429/5xx and network "
                                                      "errors")
        backoff: float = Field(1.0, ge=0, description="first retry delay in seconds (doubles "
                                                      "each attempt)")
        backoff_max: float = Field(60.0, ge=0, description="longest retry delay in seconds")
        send_seed: bool = Field(True, description="send a per-request seed")
        stop: Stop = []
        extra_body: dict[str, Any] = Field({}, description="more fields for every request body")

        @field_validator("base_url")
        @classmethod
        def _url(cls, value: str) -> str:
            if value and not HTTP_URL.match(value):
                raise ValueError("must start with http:// or https://")
            return value

        @field_validator("api_key_env")
        @classmethod
        def _variable_name(cls, value: str) -> str:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
                raise ValueError("must be the NAME of an environment variable holding the key "
                                 "(the key itself never goes in the config)")
            return value

    def __init__(self, ctx: Context, **options: Any) -> None:
        super().__init__(ctx, **options)
        env_url = os.environ.get("SELFDEV_OPENAI_BASE_URL")
        self.base_url = (self.options.base_url or env_url or DEFAULT_BASE_URL).rstrip("/")
        if not HTTP_URL.match(self.base_url):
            raise ConfigError(f"SELFDEV_OPENAI_BASE_URL must start with http:// or https://; "
                              f"got {env_url!r}")
        self.requests_sent = 0
        self.retries = 0

    # ---- HTTP ------------------------------------------------------------------------------

    def _key(self) -> str | None:
        return os.environ.get(self.options.api_key_env) or None

    def _scrub(self, text: str) -> str:
        key = self._key()
        if key:
            text = text.replace(key, "***")
        return text[:300]

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        endpoint = "/chat/completions" if self.options.chat else "/completions"
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": "selfdev"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.base_url + endpoint, data=json.dumps(body).encode(),
                                     headers=headers, method="POST")
        self.requests_sent += 1
        try:
            with urllib.request.urlopen(req, timeout=self.options.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = self._error_detail(exc)
            where = f"POST {self.base_url}{endpoint} returned {exc.code}"
            if exc.code in RETRY_STATUS:
                raise _Retryable(f"{where}: {detail}", _retry_after(exc.headers)) from None
            hint = (f" (is ${self.options.api_key_env} set to a valid key?)"
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
                if attempt >= self.options.max_retries:
                    raise SelfdevError(f"openai generator: giving up after {attempt + 1} "
                                       f"attempts: {exc}") from None
                delay = min(self.options.backoff_max, self.options.backoff * (2 ** attempt))
                delay = delay * (0.5 + rng.random() / 2)
                if exc.retry_after is not None:
                    delay = min(self.options.backoff_max, max(delay, exc.retry_after))
                attempt += 1
                self.retries += 1
                log.warning("openai generator: %s; retry %d/%d in %.1f s", exc, attempt,
                            self.options.max_retries, delay)
                time.sleep(delay)

    # ---- sampling --------------------------------------------------------------------------

    def _body(self, prompt: str, n: int, temperature: float, seed: int | None) -> dict[str, Any]:
        o = self.options
        body: dict[str, Any] = {"model": o.model, "n": n, "temperature": float(temperature),
                                "max_tokens": o.max_tokens}
        if o.top_p < 1.0:
            body["top_p"] = o.top_p
        if o.stop:
            body["stop"] = list(o.stop)
        if seed is not None:
            body["seed"] = seed
        if o.chat:
            messages = [{"role": "system", "content": o.system}] if o.system else []
            body["messages"] = messages + [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        body.update(o.extra_body)
        return body

    def _request_chunk(self, prompt: str, count: int, temperature: float, seed: int,
                       prompt_index: int, chunk: int) -> list[tuple[str, dict[str, Any]]]:
        rng = random.Random(derive_seed(seed, "backoff", prompt_index, chunk))
        out: list[tuple[str, dict[str, Any]]] = []
        round_ = 0
        while len(out) < count:
            want = count - len(out)
            req_seed = (derive_seed(seed, prompt_index, chunk, round_) % (2 ** 31)
                        if self.options.send_seed else None)
            data = self._call(self._body(prompt, want, temperature, req_seed), rng)
            choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
            if not choices:
                raise SelfdevError(f"openai generator: {self.base_url} answered with no choices")
            usage = data.get("usage") or {}
            for c in choices[:want]:
                if self.options.chat:
                    text = ((c.get("message") or {}).get("content")) or ""
                else:
                    text = c.get("text") or ""
                meta = {"finish": c.get("finish_reason"),
                        "model": data.get("model", self.options.model),
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
            for chunk, start in enumerate(range(0, n, self.options.n_per_request)):
                jobs.append((p, chunk, min(self.options.n_per_request, n - start), prompt))
        task = self.ctx.progress.task("factory: requests", total=len(jobs))
        try:
            with ThreadPoolExecutor(max_workers=self.options.concurrency) as pool:
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
