"""The termination message: why models failed, bounded, written only where the kubelet made the file."""

from tinyimg.termination import MESSAGE_LIMIT, TerminationLog, build_termination_message


def test_one_line_per_failed_model_in_name_order():
    assert build_termination_message({"b": "out of memory", "a": "source /x not found"}) == (
        "model a failed: source /x not found\nmodel b failed: out of memory"
    )


def test_a_long_message_keeps_its_end_within_the_kubelets_limit():
    text = build_termination_message({"m": "x" * 10_000 + " the cause"})
    assert len(text.encode()) <= MESSAGE_LIMIT and text.startswith("...") and text.endswith("the cause")


def test_written_only_where_the_file_exists_and_cleared_when_the_model_recovers(tmp_path):
    missing = TerminationLog(tmp_path / "absent")
    missing.record("m", "failed", "boom")
    assert not (tmp_path / "absent").exists()  # a standalone server writes nothing

    path = tmp_path / "termination-log"
    path.write_text("")
    log = TerminationLog(path)
    log.record("m", "loading", None)
    assert path.read_text() == ""
    log.record("m", "failed", "boom")
    log.record("n", "failed", None)
    assert path.read_text() == "model m failed: boom\nmodel n failed: unknown reason"
    log.record("m", "ready", None)
    assert path.read_text() == "model n failed: unknown reason"


def test_no_path_no_writes():
    log = TerminationLog(None)
    log.record("m", "failed", "boom")
    assert log.failures == {}
