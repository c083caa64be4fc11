"""The image-steps budget's rule (GCRA, tinyimg.core.quota) and the headers a refusal carries."""

from __future__ import annotations

import pytest

from tinyimg.core.quota import WINDOW_SECONDS, LocalQuotas, OverBudget, build_rate_headers, decide


def test_a_full_minute_may_be_spent_at_once_then_it_refills_continuously():
    tat, now, limit = 0.0, 1000.0, 60.0  # one image-step a second
    admitted = 0
    while True:
        answer, tat = decide(tat, now, 1.0, limit)
        if not answer.allowed:
            break
        admitted += 1
    assert admitted == 60
    assert answer.retry_after == pytest.approx(1.0) and answer.remaining == pytest.approx(0.0)
    assert answer.reset_seconds == pytest.approx(WINDOW_SECONDS)
    answer, tat = decide(tat, now + 1.0, 1.0, limit)  # a second later: one more
    assert answer.allowed
    answer, _ = decide(tat, now + 1.0, 1.0, limit)
    assert not answer.allowed


def test_over_a_long_run_admitted_work_is_the_budget_plus_one_burst():
    quotas_tat, admitted, limit = 0.0, 0.0, 30.0
    for tick in range(600):  # ten minutes, a request of 0.7 image-steps every 0.1 s (7/s asked, 0.5/s allowed)
        answer, quotas_tat = decide(quotas_tat, tick * 0.1, 0.7, limit)
        admitted += 0.7 if answer.allowed else 0.0
    assert admitted == pytest.approx(limit + limit * 60 * 0.1 * 10 / 60, rel=0.03)


def test_a_request_bigger_than_the_whole_budget_is_refused_for_good_with_a_clear_message():
    answer, tat = decide(0.0, 50.0, 11.0, 10.0)
    assert not answer.allowed and tat == 50.0 and answer.retry_after == WINDOW_SECONDS
    err = OverBudget("studio", 11.0, answer)
    assert (err.status, err.code) == (429, "quota_exceeded")
    assert "costs 11 image-steps, more than the whole budget of 10 per minute" in err.message


def test_the_refusal_carries_retry_after_and_the_rate_limit_headers():
    answer, tat = decide(0.0, 0.0, 8.0, 10.0)
    answer, _ = decide(tat, 0.0, 5.0, 10.0)
    err = OverBudget("studio", 5.0, answer)
    assert err.headers == {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "2", "X-RateLimit-Reset": "48"}
    assert err.retry_after == pytest.approx(18.0)
    response = err.to_response()
    assert response.headers["retry-after"] == "18" and response.headers["x-ratelimit-remaining"] == "2"


def test_rate_headers_of_a_fresh_budget():
    answer, _ = decide(0.0, 10.0, 0.0, 600.0)
    assert build_rate_headers(answer) == {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "600", "X-RateLimit-Reset": "0"}


async def test_local_quotas_admit_refund_and_peek():
    clock = [100.0]
    quotas = LocalQuotas(clock=lambda: clock[0])
    assert (await quotas.admit("a", 6.0, 10.0)).allowed
    assert not (await quotas.admit("a", 6.0, 10.0)).allowed
    await quotas.refund("a", 6.0, 10.0)
    assert (await quotas.peek("a", 10.0)).remaining == pytest.approx(10.0)
    assert (await quotas.admit("b", 6.0, 10.0)).allowed  # budgets are per tenant
