"""benchmarks/load_benchmark.py's measured window: the tables count the requests sent after the
warm-up, and the per-10-s p99 puts each request in the window it was sent in."""

from __future__ import annotations

import pytest

from tests.benchmark_scripts import benchmark_module


@pytest.fixture(scope="module")
def load_benchmark():
    with benchmark_module("load_benchmark") as module:
        yield module


def test_the_window_keeps_the_requests_sent_after_the_warm_up_with_their_errors(load_benchmark) -> None:
    samples = load_benchmark.Samples()
    samples.add(2.0, None, sent_at=0.5)  # the warm-up's burst
    samples.add(1.5, "ReadTimeout", sent_at=9.9)
    samples.add(0.010, None, sent_at=10.0)
    samples.add(0.020, "HTTP 503", sent_at=30.0)
    window = samples.sent_from(10.0)
    assert window.seconds == [0.010, 0.020]
    assert window.sent_at == [10.0, 30.0]
    assert dict(window.errors) == {"HTTP 503": 1}
    summary = load_benchmark.summary(window)
    assert summary["count"] == 2 and summary["errors"] == 1
    assert summary["max_ms"] == pytest.approx(20.0)
    assert load_benchmark.summary(samples)["max_ms"] == pytest.approx(2000.0)


def test_the_p99_per_window_follows_the_send_times(load_benchmark) -> None:
    samples = load_benchmark.Samples()
    for k in range(100):
        samples.add(1.0, None, sent_at=k * 0.09)  # 0-8.9 s: slow
        samples.add(0.005, None, sent_at=20 + k * 0.09)  # 20-28.9 s: fast
    by_window = load_benchmark.windows_p99(samples, length_s=30.0)
    assert by_window[0] == pytest.approx(1000.0)
    assert by_window[1] is None  # nothing was sent in 10-20 s
    assert by_window[2] == pytest.approx(5.0)


def test_the_machine_busy_clock_moves_forward(load_benchmark) -> None:
    busy, total = load_benchmark.machine_busy_seconds()
    assert 0 <= busy <= total
    sum(i * i for i in range(200_000))  # some work on this core
    busy_after, total_after = load_benchmark.machine_busy_seconds()
    assert total_after >= total and busy_after >= busy
