"""The OTP rules as pure functions: no Flask, no database, no clock (SPEC section 2)."""
from __future__ import annotations

import pytest

from otp_service.domain import errors
from otp_service.domain.codes import codes_match, new_code
from otp_service.domain.policy import Block, Blocked, Limits, Send, check_code, plan_send

LIMITS = Limits(code_length=6, code_ttl=600, max_verify_attempts=3, max_sends=4, send_window=86400,
                resend_cooldown=30, block_seconds=86400)
T0 = 1_700_000_000.0


def test_first_generate_makes_a_new_code_and_counts_one_send():
    plan = plan_send(None, T0, LIMITS)
    assert isinstance(plan, Send) and not plan.resend
    assert len(plan.state.code) == 6 and plan.state.code.isdigit()
    assert plan.state.send_count == 1 and plan.state.window_start == T0
    assert plan.state.expires_on == T0 + 600 and plan.state.retry_count == 0


def test_resend_sends_the_same_code_without_resetting_attempts_or_expiry():
    first = plan_send(None, T0, LIMITS).state
    guessed = check_code(first, "x" * 6, T0 + 1, LIMITS).state
    plan = plan_send(guessed, T0 + 60, LIMITS)
    assert plan.resend and plan.state.code == first.code
    assert plan.state.retry_count == 1 and plan.state.expires_on == first.expires_on
    assert plan.state.send_count == 2 and plan.state.last_sent_on == T0 + 60


def test_resend_within_cooldown_is_rate_limited_with_retry_after():
    first = plan_send(None, T0, LIMITS).state
    with pytest.raises(errors.OtpError) as caught:
        plan_send(first, T0 + 10, LIMITS)
    assert caught.value.err == "ERROR_RATE_LIMIT_EXCEEDED" and caught.value.retry_after == 20


def test_cooldown_zero_turns_it_off():
    limits = Limits(resend_cooldown=0)
    first = plan_send(None, T0, limits).state
    assert plan_send(first, T0, limits).resend


def test_new_code_after_expiry_keeps_counting_the_window():
    first = plan_send(None, T0, LIMITS).state
    plan = plan_send(first, T0 + 601, LIMITS)
    assert not plan.resend and plan.state.send_count == 2 and plan.state.window_start == T0
    assert plan.state.expires_on == T0 + 601 + 600


def test_send_over_the_window_limit_blocks_the_key():
    state = None
    for i in range(4):
        state = plan_send(state, T0 + i * 31, LIMITS).state
    plan = plan_send(state, T0 + 200, LIMITS)
    assert isinstance(plan, Block) and plan.until == T0 + 200 + 86400


def test_a_block_is_a_state_of_the_record_without_a_code_that_lives_as_long_as_the_block():
    state = None
    for i in range(4):
        state = plan_send(state, T0 + i * 31, LIMITS).state
    block = plan_send(state, T0 + 200, LIMITS)
    assert block.state.blocked_until == block.until and block.state.code is None
    assert block.state.keep_until(LIMITS) >= max(state.keep_until(LIMITS), block.until)  # expiries never move earlier
    with pytest.raises(errors.OtpError) as caught:
        check_code(block.state, state.code, T0 + 201, LIMITS)
    assert caught.value.err == "ERROR_INVALID_OTP"  # the code issued before the block is gone
    assert plan_send(block.state, T0 + 300, LIMITS) == Blocked(until=block.until)


def test_after_a_block_ends_the_next_send_starts_a_new_window():
    limits = Limits(max_sends=1, send_window=86400, block_seconds=3600, resend_cooldown=0)
    first = plan_send(None, T0, limits).state
    block = plan_send(first, T0 + 10, limits)
    assert isinstance(block, Block)
    after = plan_send(block.state, block.until, limits)
    assert isinstance(after, Send) and not after.resend
    assert after.state.send_count == 1 and after.state.window_start == block.until
    assert after.state.blocked_until is None
    assert after.state.keep_until(limits) >= block.state.keep_until(limits)


def test_window_is_fixed_from_first_send_and_survives_use():
    state = plan_send(None, T0, LIMITS).state
    state = check_code(state, state.code, T0 + 5, LIMITS).state  # used
    state = plan_send(state, T0 + 100, LIMITS).state
    assert state.send_count == 2 and state.window_start == T0
    reopened = plan_send(state, T0 + 86400, LIMITS).state
    assert reopened.send_count == 1 and reopened.window_start == T0 + 86400


def test_right_code_is_consumed():
    state = plan_send(None, T0, LIMITS).state
    verdict = check_code(state, state.code, T0 + 1, LIMITS)
    assert verdict.accepted and verdict.state.code is None
    with pytest.raises(errors.OtpError) as caught:
        check_code(verdict.state, state.code, T0 + 2, LIMITS)
    assert caught.value.err == "ERROR_INVALID_OTP"


def test_wrong_codes_count_down_and_lock_at_zero():
    state = plan_send(None, T0, LIMITS).state
    remaining = []
    for _ in range(3):
        verdict = check_code(state, "999999" if state.code != "999999" else "000000", T0 + 1, LIMITS)
        state = verdict.state
        remaining.append(verdict.remaining)
    assert remaining == [2, 1, 0]
    assert state.is_locked and state.locked_on == T0 + 1 and state.code is None


@pytest.mark.parametrize("case", ["never", "expired", "used", "locked"])
def test_no_live_code_is_one_indistinguishable_error(case):
    state = plan_send(None, T0, LIMITS).state
    now = T0 + 1
    if case == "never":
        state = None
    elif case == "expired":
        now = T0 + 600
    elif case == "used":
        state = check_code(state, state.code, T0 + 1, LIMITS).state
    else:
        for _ in range(3):
            state = check_code(state, "x", T0 + 1, LIMITS).state
    with pytest.raises(errors.OtpError) as caught:
        check_code(state, "123456", now, LIMITS)
    assert (caught.value.err, caught.value.message, caught.value.result) == ("ERROR_INVALID_OTP", "Invalid OTP.", {})


def test_record_is_kept_until_the_later_of_code_expiry_and_window_end():
    state = plan_send(None, T0, LIMITS).state
    assert state.keep_until(LIMITS) == T0 + 86400
    long_code = Limits(code_ttl=7200, send_window=3600)
    assert plan_send(None, T0, long_code).state.keep_until(long_code) == T0 + 7200


def test_codes_keep_leading_zeros_and_are_uniform_over_digits():
    codes = [new_code(6) for _ in range(5000)]
    assert all(len(c) == 6 and c.isdigit() for c in codes)
    first_digits = [c[0] for c in codes]
    assert first_digits.count("0") > 300  # about 500 expected: leading zeros are not dropped
    assert len(set(first_digits)) == 10


def test_codes_are_compared_in_constant_time_helper():
    assert codes_match("012345", "012345") and not codes_match("012345", "012346")
