"""CoT judge: verdict parsing, the HTTP transport's timeouts and retries, the combined mode.

The HTTP tests run against a real HTTP server on 127.0.0.1 that speaks the OpenAI chat and
completions wire format and answers from a script keyed on the prompt (it plays the model; the
real-model tests are in test_rewards_judge_vllm.py). What is tested here is ours: the prompt,
the parsing, the counting, the routing, and that every network wait is bounded."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rl.rewards import (
    JudgeConfig,
    JudgeVerifier,
    OpenAICompatibleTransport,
    VerifierPool,
    VerifyItem,
    parse_verdict,
    verify_batch,
)
from rl.rewards.judge import TEMPLATE

VERDICTS = [
    ('Both are 1/2.\n{"reasoning": "equal", "verdict": "correct"}', True),
    ('{"reasoning": "6 != 5", "verdict": "incorrect"}', False),
    ('{"reasoning": "set {1, 2} vs {1,2}", "verdict": "Correct"}', True),
    ('{"verdict": "incorrect"} hmm, wait: {"reasoning": "re-checked", "verdict": "correct"}', True),
    ('{"reasoning": "raw\tcontrol\x01chars", "verdict": "correct"}', True),
    ("The verdict is correct.", None),
    ('{"reasoning": "cut off by max_tokens, "verdict": "corr', None),
    ('{"reasoning": "no verdict field"}', None),
    ('{"verdict": "maybe"}', None),
    ('{"verdict": true}', None),
    ("", None),
]


@pytest.mark.parametrize("text,want", VERDICTS)
def test_parse_verdict(text, want):
    assert parse_verdict(text) is want


class _Script(BaseHTTPRequestHandler):
    """Answers by the reference shown in the prompt: 42 -> correct, 13 -> garbage, 7 -> slow,
    503 -> fails twice then answers, 400 -> client error."""

    fails: dict[str, int] = {}
    seen: list[dict] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        prompt = body["messages"][0]["content"] if "messages" in body else body["prompt"]
        ref = prompt.split("Reference answer:\n", 1)[1].split("\n", 1)[0]
        if ref == "503" and self.fails.setdefault(prompt, 0) < 2:
            self.fails[prompt] += 1
            return self._send(503, {"error": "overloaded"})
        if ref == "400":
            return self._send(400, {"error": "bad request"})
        if ref == "7":
            time.sleep(3.0)
        right = '{"reasoning": "same number", "verdict": "correct"}'
        text = {"42": right, "503": right, "13": "I think it is fine!!"}.get(
            ref, '{"reasoning": "differs", "verdict": "incorrect"}'
        )
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "text": text}
        self._send(200, {"choices": [choice]})

    def _send(self, code: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except BrokenPipeError:  # the client timed out and left, as it should
            pass


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Script)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def _judge(url: str, **kw) -> JudgeVerifier:
    transport = OpenAICompatibleTransport(url, "judge", timeout_s=kw.pop("timeout_s", 1.0), max_retries=2, backoff_s=0.05, **kw)
    return JudgeVerifier(transport, JudgeConfig(max_tokens=64))


def test_judge_over_http_scores_counts_and_bounds(server):
    judge = _judge(server)
    items = [VerifyItem(f"<think>...</think> It is {r}.", r, kind="judge", question="q?") for r in ["42", "5", "13", "503", "7"]]
    _Script.seen.clear()
    t0 = time.monotonic()
    res = judge(items)
    elapsed = time.monotonic() - t0
    assert [(r.score, str(r.reason)) for r in res] == [
        (1.0, "judge_correct"),
        (0.0, "judge_incorrect"),
        (0.0, "judge_unparsable"),  # garbage is never a pass
        (1.0, "judge_correct"),  # two 503s, then answered within the retry budget
        (0.0, "judge_error"),  # 3 s reply vs a 1 s timeout, 3 attempts: gives up, bounded
    ]
    assert elapsed < 3 * 1.0 + 1.0
    assert judge.stats == {"correct": 2, "incorrect": 1, "unparsable": 1, "error": 1}
    # The verdict schema travels as response_format; the prompt shows only the answer part.
    body = _Script.seen[0]
    assert body["response_format"]["json_schema"]["schema"]["properties"]["verdict"]["enum"] == ["correct", "incorrect"]
    assert "<think>" not in body["messages"][0]["content"] and "It is " in body["messages"][0]["content"]


def test_completions_endpoint_and_unstructured_mode(server):
    transport = OpenAICompatibleTransport(server, "judge", endpoint="completions", timeout_s=2.0)
    judge = JudgeVerifier(transport, JudgeConfig(structured=False))
    _Script.seen.clear()
    (res,) = judge([VerifyItem("\\boxed{42}", "42", kind="judge")])
    assert res.reason == "judge_correct"
    assert "response_format" not in _Script.seen[0] and _Script.seen[0]["prompt"].startswith(TEMPLATE[:40])


def test_every_request_failing_is_loud(server):
    judge = _judge(server)
    (res,) = judge([VerifyItem("x", "400", kind="judge")])
    assert res.reason == "judge_error" and "HTTP 400" in res.metrics["error"]
    dead = _judge("http://127.0.0.1:9/v1", timeout_s=0.5)  # nothing listens on port 9
    t0 = time.monotonic()
    (res,) = dead([VerifyItem("x", "1", kind="judge")])
    assert res.reason == "judge_error" and time.monotonic() - t0 < 5.0


def test_unterminated_thinking_is_not_sent_to_the_judge(server):
    judge = _judge(server)
    _Script.seen.clear()
    (res,) = judge([VerifyItem("<think>still thinking about 42", "42", kind="judge")])
    assert res.reason == "unterminated_think" and not _Script.seen


def test_math_or_judge_sends_only_undecided_items(server):
    judge = _judge(server)
    items = [
        VerifyItem("<think>w</think> \\boxed{42}", "42", kind="math_or_judge"),  # rule: correct
        VerifyItem("<think>w</think> \\boxed{41}", "42", kind="math_or_judge"),  # rule: wrong, math ref
        VerifyItem("<think>w</think> I believe it is forty-two.", "42", kind="math_or_judge"),  # no box, no number
        VerifyItem("<think>w</think> \\boxed{\\text{the reflexive one}}", "\\text{reflexive}", kind="math_or_judge"),
        VerifyItem("<think>w</think> \\boxed{42}", "42", kind="judge"),
    ]
    _Script.seen.clear()
    with VerifierPool(num_workers=1) as pool:
        res = verify_batch(items, pool=pool, judge=judge)
    assert [str(r.reason) for r in res] == ["correct", "wrong", "judge_correct", "judge_incorrect", "judge_correct"]
    assert res[2].metrics["rule_reason"] == "no_answer" and res[3].metrics["rule_reason"] == "wrong"
    assert len(_Script.seen) == 3  # items 2, 3 and 4 only


def test_judge_rows_without_a_judge_are_a_config_error():
    with pytest.raises(ValueError, match="needs a judge"):
        verify_batch([VerifyItem("x", "1", kind="judge", item_id="j-1")])
