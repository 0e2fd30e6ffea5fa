"""Ways to reach a judge model, all with the `TextGenerator.generate_text` shape (judge.py).

- `EngineTransport`: a vLLM engine with `generate_text` (rollout.engine.VLLMEngine) used
  in-process, or the same engine as a Ray actor, where each call is bounded by
  `ray.get(..., timeout=timeout_s)`. One call carries the whole batch; vLLM batches it.
- `OpenAICompatibleTransport`: any OpenAI-compatible HTTP server (`vllm serve`, SGLang, a hosted
  API), stdlib only. Each prompt is one request (concurrent, `max_concurrency` at a time) with a
  socket timeout and bounded retries with backoff on connection errors, timeouts, 408/429/5xx.
  The verdict schema goes in `response_format` (json_schema), which vLLM honours on both the
  chat and the completions endpoints.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

log = logging.getLogger(__name__)
_RETRYABLE_HTTP = {408, 429, 500, 502, 503, 504}


class EngineTransport:
    """Wraps an engine object or a Ray actor handle of one."""

    def __init__(self, engine: Any, timeout_s: float = 300.0) -> None:
        self.engine, self.timeout_s = engine, timeout_s

    def generate_text(self, prompts: list[str], **kw: Any) -> list[list[str]]:
        method = self.engine.generate_text
        if not hasattr(method, "remote"):
            # In-process: the call is bounded by max_tokens; run the engine as an actor for a
            # wall-clock bound that holds even if the engine hangs.
            return method(prompts, **kw)
        import ray  # Ray takes seconds to import; in-process runs never need it

        ref = method.remote(prompts, **kw)
        try:
            return ray.get(ref, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref)
            raise TimeoutError(f"judge engine gave no answer within {self.timeout_s}s") from None


class OpenAICompatibleTransport:
    """POST /v1/chat/completions (default) or /v1/completions on an OpenAI-compatible server."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        endpoint: Literal["chat", "completions"] = "chat",
        timeout_s: float = 60.0,
        max_retries: int = 2,
        backoff_s: float = 0.5,
        max_concurrency: int = 8,
    ) -> None:
        self.url = base_url.rstrip("/") + ("/chat/completions" if endpoint == "chat" else "/completions")
        self.model, self.api_key, self.endpoint = model, api_key, endpoint
        self.timeout_s, self.max_retries, self.backoff_s = timeout_s, max_retries, backoff_s
        self.max_concurrency = max_concurrency
        self.requests_sent = 0  # including retries; for tests and metrics

    def generate_text(
        self,
        prompts: list[str],
        *,
        max_tokens: int,
        temperature: float,
        n: int = 1,
        seed: int | None = None,
        json_schema: dict | None = None,
    ) -> list[list[str]]:
        """n texts per prompt; [] for a prompt whose request failed after retries. Raises only if
        every prompt failed (a wrong URL or model should be loud, not a batch of zeros)."""

        def one(i: int) -> list[str] | Exception:
            body: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "temperature": temperature, "n": n}
            if seed is not None:
                body["seed"] = seed + i
            if self.endpoint == "chat":
                body["messages"] = [{"role": "user", "content": prompts[i]}]
            else:
                body["prompt"] = prompts[i]
            if json_schema is not None:
                body["response_format"] = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": json_schema}}
            try:
                out = self._post(body)
            except Exception as e:
                return e
            key = "message" if self.endpoint == "chat" else None
            return [(c[key]["content"] if key else c["text"]) or "" for c in sorted(out["choices"], key=lambda c: c["index"])]

        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(prompts))) as pool:
            outs = list(pool.map(one, range(len(prompts))))
        errors = [o for o in outs if isinstance(o, Exception)]
        if errors and len(errors) == len(outs):
            raise errors[0]
        for e in errors:
            log.warning("judge request failed after %d retries: %s", self.max_retries, e)
        return [[] if isinstance(o, Exception) else o for o in outs]

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.max_retries + 1):
            self.requests_sent += 1
            req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode(errors="replace")
                if e.code not in _RETRYABLE_HTTP or attempt == self.max_retries:
                    raise RuntimeError(f"HTTP {e.code} from {self.url}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt == self.max_retries:
                    raise ConnectionError(f"{self.url}: {e}") from None
            time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")
