"""How long a task waits before its next try."""

from __future__ import annotations

import random


def backoff_seconds(retries: int, base: float = 1.0, cap: float = 300.0) -> int:
    """Exponential backoff with full jitter, in whole seconds, at least 1: delayed delivery on
    quorum queues counts whole seconds and refuses less than 1, which dead-letters the retry."""
    # A float power: past 2**1023 an int would not convert (OverflowError); inf is capped.
    return random.randint(1, max(1, int(min(cap, base * 2.0 ** min(retries, 1023)))))
