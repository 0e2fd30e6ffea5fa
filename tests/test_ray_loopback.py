"""rl.ray_loopback: which Ray addresses keep a client on 127.0.0.1."""

from __future__ import annotations

import pytest

from rl.ray_loopback import is_loopback_address


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1:6379", True),
    ("localhost:6379", True),
    ("ray://127.0.0.1:10001", True),
    ("[::1]:6379", True),
    ("10.0.0.2:6379", False),
    ("head.cluster.internal:6379", False),
    ("auto", False),
    ("local", False),
    (None, False),
    ("", False),
])
def test_is_loopback_address(address, loopback):
    assert is_loopback_address(address) is loopback
