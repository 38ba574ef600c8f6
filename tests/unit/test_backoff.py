"""How long a task waits before its next try (tasks/backoff.py): whole seconds, at least 1,
spread over the whole window, which doubles with each retry up to the cap."""

from __future__ import annotations

import pytest

from tasks.backoff import backoff_seconds

DRAWS = 2_000


def draws(retries: int, **options: float) -> list[int]:
    return [backoff_seconds(retries, **options) for _ in range(DRAWS)]


@pytest.mark.parametrize(("retries", "window"), [(0, 1), (1, 2), (3, 8), (6, 64)])
def test_each_retry_doubles_the_window_and_the_jitter_covers_it(retries: int, window: int) -> None:
    # 2,000 draws miss one of at most 64 equally likely values with odds below 1e-13.
    assert set(draws(retries)) == set(range(1, window + 1))


def test_the_cap_bounds_the_window() -> None:
    waits = draws(12, cap=60)
    assert max(waits) <= 60
    assert max(waits) > 50


def test_a_delay_below_one_second_is_one_second() -> None:
    # Delayed delivery on quorum queues refuses less than a second.
    assert set(draws(0, base=0.1)) == {1}
    assert set(draws(3, base=0.1)) == {1}


def test_the_waits_are_whole_seconds() -> None:
    assert all(type(wait) is int for wait in draws(4, base=1.5))


def test_a_task_retried_for_days_still_gets_a_capped_wait() -> None:
    # persist_event retries without a cap on the count: a long outage means thousands of tries.
    for retries in (1_023, 1_024, 5_000, 1_000_000):
        waits = [backoff_seconds(retries, cap=60) for _ in range(200)]
        assert min(waits) >= 1 and max(waits) <= 60, retries
