from tinyimg.core.drain import EXIT_SLACK_SECONDS, PRESTOP_SECONDS, build_drain_timing, build_upstream_timeout


def test_drain_timing_follows_the_longest_request_timeout():
    timing = build_drain_timing([30.0, 299.5])
    assert timing.drain_seconds == 300
    assert timing.prestop_seconds == PRESTOP_SECONDS
    assert timing.grace_seconds == PRESTOP_SECONDS + 300 + EXIT_SLACK_SECONDS


def test_drain_timing_with_no_models_is_just_the_prestop_and_slack():
    assert build_drain_timing([]).grace_seconds == PRESTOP_SECONDS + EXIT_SLACK_SECONDS


def test_upstream_timeout_outlasts_the_model_deadline():
    assert build_upstream_timeout(86_400) > 86_400
