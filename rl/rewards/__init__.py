"""Verifiers: score a response's final answer against a prompt row's reference (issue 4).

    from rl.rewards import verify, verify_batch, VerifierPool

    verify(r"<think>...</think> The answer is \boxed{303}.", "303").score   # 1.0
    with VerifierPool(num_workers=2, timeout_s=5.0) as pool:
        results = verify_batch(list(zip(rows, responses)), pool=pool)

Which verifier scores a row is `row.verifier`: "math" (default), "integer", "multiple_choice",
"string", "judge" or "math_or_judge". Rule-based checks run in killable worker processes with a
per-item deadline; the judge is a CoT model verdict over a vLLM engine or an HTTP endpoint.
Importing this package starts nothing: pools start when created (or on the first `verify`).
Whether a score is a right answer is `is_correct(score)`, the one definition every module uses.
"""

from rl.rewards.api import close_default_pool, default_pool, verify, verify_batch
from rl.rewards.base import KINDS, Reason, Verifier, VerifyItem, VerifyResult
from rl.rewards.compose import compose_reward, compose_rewards
from rl.rewards.config import JudgeConfig, RewardConfig, VerifierConfig
from rl.rewards.judge import JudgeVerifier, TextGenerator, parse_verdict
from rl.rewards.math_verifier import MathVerifier
from rl.rewards.pool import VerifierPool
from rl.rewards.rule_verifiers import IntegerVerifier, MultipleChoiceVerifier, StringVerifier
from rl.rewards.scores import CORRECT_THRESHOLD, is_correct, is_correct_tensor
from rl.rewards.transports import EngineTransport, OpenAICompatibleTransport

__all__ = [
    "CORRECT_THRESHOLD", "KINDS", "EngineTransport", "IntegerVerifier", "JudgeConfig", "JudgeVerifier", "MathVerifier",
    "MultipleChoiceVerifier", "OpenAICompatibleTransport", "Reason", "RewardConfig", "StringVerifier",
    "TextGenerator", "Verifier", "VerifierConfig", "VerifierPool", "VerifyItem", "VerifyResult",
    "close_default_pool", "compose_reward", "compose_rewards", "default_pool", "parse_verdict",
    "is_correct", "is_correct_tensor", "verify", "verify_batch",
]
