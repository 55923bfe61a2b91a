from __future__ import annotations

import pytest

from zooscope.progress import EtaEstimator


def test_the_eta_of_steady_work_is_the_time_left() -> None:
    eta = EtaEstimator(started=0.0)
    estimates = [eta.update(step / 100, now=float(step)) for step in range(1, 100)]
    # 1 % a second: at step s, 100 - s seconds are left.
    assert estimates[9] == pytest.approx(90.0) and estimates[49] == pytest.approx(50.0)
    assert all(a > b for a, b in zip(estimates, estimates[1:], strict=False))  # decreasing
    assert eta.update(1.0, now=100.0) == 0.0


def test_the_eta_follows_the_pace_of_the_phase_it_is_in() -> None:
    eta = EtaEstimator(started=0.0)
    for second in range(1, 91):  # a fast phase: 0.9 in 90 s
        eta.update(0.01 * second, float(second))
    estimate = None
    for second in range(91, 191):  # then ten times slower
        estimate = eta.update(0.9 + 0.0005 * (second - 90), float(second))
    # 0.05 done of the slow phase's 0.1, at 0.0005 a second: 100 s left, not the 5 s the
    # whole run's average would say.
    assert estimate == pytest.approx(100.0, rel=0.05)


def test_no_estimate_without_progress() -> None:
    eta = EtaEstimator(started=0.0)
    assert eta.update(0.0, now=5.0) is None
    assert eta.update(0.0, now=10.0) is None
    assert eta.update(0.2, now=20.0) == pytest.approx(40.0)  # 0.2 in the last 10 s
    assert eta.update(0.1, now=21.0) is None  # went back: starts afresh


def test_memory_stays_bounded() -> None:
    eta = EtaEstimator(started=0.0)
    for step in range(1, 20_000):
        last = eta.update(step / 20_000, float(step))
    assert len(eta._samples) <= 513
    assert last == pytest.approx(1.0, rel=0.05)
