"""verdict(): what a child sent -> SandboxResult, with every field of it hostile. Pure: no
process is started here."""
import json
import signal

import pytest

from selfdev.sandbox.verdict import OUTPUT_CAP, REASON_CAP, ChildRecord, verdict

CLEAN_EXIT = {"code": 0, "signal": None}


def record(report=None, *, raw=None, exit=CLEAN_EXIT, **kw):
    data = raw if raw is not None else (b"" if report is None else json.dumps(report).encode())
    return ChildRecord(pid=1234, timeout=kw.pop("timeout", 10.0), duration_ms=5.0, report=data,
                       exit=exit, **kw)


def test_ok_report():
    res = verdict(record({"status": "ok", "stdout": "hi\n", "timings": {"setup_ms": 1, "run_ms": 2.5}}))
    assert (res.status, res.reason, res.tensors, res.stdout) == ("ok", None, None, "hi\n")
    assert res.details["child_timings"] == {"setup_ms": 1.0, "run_ms": 2.5}
    assert res.details["exit_code"] == 0 and res.details["pid"] == 1234
    assert res.duration_ms == 5.0


def test_ok_before_the_exit_notice_is_still_ok():
    assert verdict(record({"status": "ok"}, exit=None)).status == "ok"


def test_ok_report_but_unclean_exit_is_killed():
    res = verdict(record({"status": "ok"}, exit={"code": 1, "signal": None}))
    assert res.status == "killed" and "did not exit cleanly" in res.reason


def test_timeout_wins_over_any_report():
    res = verdict(record({"status": "ok"}, timed_out=True, timeout=2.5))
    assert res.status == "timeout" and "2.5 s" in res.reason


def test_parent_died():
    res = verdict(record(None, exit=None, parent_died=True))
    assert res.status == "killed" and "parent" in res.reason


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000, b'"ok"'])
def test_malformed_report_is_rejected(raw):
    res = verdict(record(raw=raw))
    assert res.status == "rejected" and "malformed" in res.reason


def test_oversized_report_is_rejected():
    res = verdict(record(raw=b"{}", report_over=True))
    assert res.status == "rejected" and "too large" in res.reason


@pytest.mark.parametrize("sig, why", [(signal.SIGXCPU, "CPU time limit"), (signal.SIGSYS, "blocked system call"),
                                      (signal.SIGKILL, "out of memory"), (signal.SIGUSR1, "killed by a signal")])
def test_death_by_signal_without_a_report(sig, why):
    res = verdict(record(None, exit={"code": None, "signal": int(sig)}))
    assert res.status == "killed" and why in res.reason and sig.name in res.reason
    assert res.details["signal"] == sig.name


def test_exit_without_a_report():
    res = verdict(record(None, exit={"code": 3, "signal": None}))
    assert res.status == "killed" and "code 3" in res.reason


def test_candidate_error():
    res = verdict(record({"status": "error", "etype": "ValueError", "message": "boom", "line": 7}))
    assert (res.status, res.reason) == ("error", "ValueError (line 7): boom")
    assert res.details["exception_type"] == "ValueError"


def test_rejection_and_violations():
    res = verdict(record({"status": "rejected", "reason": "policy violation: x", "violations": ["a", "b"]}))
    assert (res.status, res.reason, res.details["violations"]) == ("rejected", "policy violation: x", ["a", "b"])


def test_unavailable_is_a_killed_result_not_an_exception():
    res = verdict(record({"status": "unavailable", "reason": "seccomp missing"}))
    assert res.status == "killed" and "seccomp missing" in res.reason and res.details["sandbox_error"] is True


@pytest.mark.parametrize("status", ["OK", None, 1, ["ok"], {"status": "ok"}])
def test_unknown_status_is_rejected(status):
    res = verdict(record({"status": status}))
    assert res.status == "rejected" and "malformed status" in res.reason


def test_hostile_fields_are_bounded_and_never_raise():
    huge = int("9" * 400)  # a float() of it overflows
    report = {"status": "error", "etype": "E\x1b[31m" * 100, "message": "m\x00" * 5000, "line": 10**12,
              "stdout": ["not", "text"], "timings": {"setup_ms": huge, "run_ms": float("nan")},
              "violations": [{"deep": [[[]]]}] * 50 + ["x" * 1000]}
    res = verdict(record(raw=json.dumps(report).encode(), exit={"code": "zero", "signal": [9]}))
    assert res.status == "error"
    assert "(line" not in res.reason and "\x00" not in res.reason
    assert len(res.reason) <= REASON_CAP + 60
    assert "\x1b" not in res.details["exception_type"] and len(res.details["exception_type"]) <= 100 + 60
    assert res.stdout == "<list>"
    assert res.details["child_timings"] == {}
    assert res.details["violations"] == ["<dict>"] * 20
    assert res.details["exit_code"] is None and "signal" not in res.details
    json.dumps(res.to_json())  # whatever came in, the result serialises


def test_output_is_capped_and_cleaned():
    rec = record({"status": "ok"}, output=b"\x07bell " + b"A" * OUTPUT_CAP, output_dropped=99)
    out = verdict(rec).details["fd_output"]
    assert "\x07" not in out and out.endswith("[99 more bytes dropped]") and "more characters dropped" in out
