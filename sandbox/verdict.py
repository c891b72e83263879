"""L4: the verdict on one candidate, from what its child sent (trusted side; no I/O, no torch).

The supervisor's pump (``Sandbox._pump``) gathers what one child sent, bounded, into a
:class:`ChildRecord`; :func:`verdict` maps that record to a :class:`SandboxResult`. Every byte
of the report and of the output came from the candidate's process, so this module is the one
place where they are parsed and validated: types checked, numbers bounded, text capped and
stripped of control characters. Nothing here raises on hostile input; a malformed report
rejects that candidate and nothing else. The result tensors are checked apart from this, by
the supervisor, once it has sealed the result buffer (an ``ok`` verdict carries no tensors
until then).
"""
from __future__ import annotations

import json
import math
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from selfdev.sandbox import protocol

if TYPE_CHECKING:
    import torch

STDOUT_CAP = 16 * 1024  # what the candidate print()ed, as its child reports it
OUTPUT_CAP = 16 * 1024  # what was written to file descriptors 1 and 2 directly
REASON_CAP = 1000
VIOLATIONS_KEPT = 20  # policy violations listed in the details (300 characters each)
ETYPE_CAP = 100

# how a child that sent no report died, by the signal that ended it
_DEATHS = {signal.SIGXCPU: "CPU time limit exceeded", signal.SIGXFSZ: "file size limit exceeded",
           signal.SIGKILL: "killed (CPU hard limit or out of memory)",
           signal.SIGSEGV: "crashed (segmentation fault)", signal.SIGSYS: "blocked system call",
           signal.SIGALRM: "wall-clock backstop", signal.SIGBUS: "crashed (bus error)",
           signal.SIGABRT: "aborted"}


@dataclass
class SandboxResult:
    status: str  # "ok" | "rejected" | "error" | "timeout" | "killed"
    reason: str | None
    tensors: dict[str, torch.Tensor] | None
    stdout: str
    duration_ms: float
    details: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict:
        return {"status": self.status, "reason": self.reason, "duration_ms": round(self.duration_ms, 3),
                "stdout": self.stdout, "details": self.details}


@dataclass(frozen=True)
class ChildRecord:
    """What the pump received from one child: raw and bounded, not yet believed."""

    pid: int | None
    timeout: float  # the wall-clock limit it ran under, in seconds
    duration_ms: float  # from the start of Sandbox.run to the end of the pump
    output: bytes = b""  # file descriptors 1 and 2: the first OUTPUT_CAP bytes
    output_dropped: int = 0  # bytes after those, read and thrown away
    report: bytes = b""  # the report pipe: the first protocol.MAX_REPORT bytes
    report_over: bool = False  # the report was longer than that
    exit: dict | None = None  # the warm parent's exit notice ({"code", "signal"}), if it came
    timed_out: bool = False  # the pump killed the child at its deadline
    parent_died: bool = False  # the control channel to the warm parent broke
    limit: str | None = None  # with timed_out: which limit it exceeded, in words (streaming)


def clean_text(s: str, cap: int) -> str:
    """Untrusted text: strip control characters (keep \\n and \\t) and cap its length."""
    if not isinstance(s, str):
        s = str(s)
    extra = len(s) - cap
    if extra > 0:
        s = s[:cap]
    s = "".join(ch if (ch in "\n\t" or (ord(ch) >= 32 and ord(ch) != 127 and not 0x80 <= ord(ch) < 0xA0)) else "\ufffd" for ch in s)
    if extra > 0:
        s += f"\n... [{extra} more characters dropped]"
    return s


def signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _int(x) -> int | None:
    return x if type(x) is int else None


def _number(x) -> float | None:
    """A finite float from a JSON number, or None (JSON also parses NaN, Infinity and
    integers too large for a float)."""
    if type(x) not in (int, float):
        return None
    try:
        x = float(x)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None


def _text(x) -> str:
    """A report field as text: scalars as str() writes them, any other JSON value by its type
    only (str() of a deeply nested value could itself fail)."""
    if x is None or type(x) in (str, int, float, bool):
        return str(x)
    return f"<{type(x).__name__}>"


def _parse_report(raw: bytes) -> dict | None:
    try:
        msg = json.loads(raw.decode("utf-8"))
    except Exception:  # ValueError, RecursionError (deeply nested JSON), ...
        return None
    return msg if isinstance(msg, dict) else None


def stream_answer(payload: bytes, want: dict | None) -> tuple[str, str | None]:
    """A streaming child's frame, judged (``sandbox/stream.py`` reads them, bounded, and asks
    here): ``("answer", None)`` when it is exactly ``want`` (``{READY: true}`` or ``{STEP:
    k}``; None when only the report may come), ``("report", None)`` when it is a report (the
    candidate stopped, or finished: :func:`verdict` reads it), ``("bad", why)`` otherwise."""
    msg = _parse_report(payload)
    if msg is None:
        return "bad", "malformed message from the candidate process"
    if "status" in msg:
        return "report", None
    if want is None:
        return "bad", "malformed message from the candidate process"
    if len(msg) != len(want) or any(type(msg.get(k)) is not type(v) or msg.get(k) != v for k, v in want.items()):
        return "bad", "candidate process answered out of turn"
    return "answer", None


def verdict(rec: ChildRecord) -> SandboxResult:
    """The result of one candidate's run, from what its child sent (see the module doc)."""
    output = clean_text(rec.output.decode("utf-8", "replace"), OUTPUT_CAP)
    if rec.output_dropped:
        output += f"\n... [{rec.output_dropped} more bytes dropped]"
    details: dict = {"fd_output": output, "pid": rec.pid}
    ex = rec.exit if isinstance(rec.exit, dict) else None
    code, sig = (_int(ex.get("code")), _int(ex.get("signal"))) if ex else (None, None)
    if ex:
        details["exit_code"] = code
        if sig:
            details["signal"] = signame(sig)
    report = _parse_report(rec.report) if rec.report and not rec.report_over else None
    stdout = ""
    if report is not None:
        stdout = clean_text(_text(report.get("stdout") or ""), STDOUT_CAP)
        tm = report.get("timings")
        if isinstance(tm, dict):
            timings = {k: _number(tm.get(k)) for k in ("setup_ms", "run_ms")}
            details["child_timings"] = {k: v for k, v in timings.items() if v is not None}
        if isinstance(report.get("violations"), list):
            details["violations"] = [clean_text(_text(v), 300) for v in report["violations"][:VIOLATIONS_KEPT]]

    def result(status, reason):
        return SandboxResult(status, None if reason is None else clean_text(reason, REASON_CAP),
                             None, stdout, rec.duration_ms, details)

    if rec.timed_out:
        if rec.limit:  # the trusted side's own words (a stream's per-tensor limit or budget)
            return result("timeout", rec.limit)
        return result("timeout", f"candidate exceeded the {rec.timeout:g} s wall-clock limit and was killed")
    if rec.parent_died and rec.exit is None:
        return result("killed", "sandbox parent process died; candidate killed")
    if rec.report_over:
        return result("rejected", "status message from the candidate process is too large")
    if report is None and rec.report:
        return result("rejected", "malformed result report from the candidate process")
    if report is None:
        if sig:
            why = _DEATHS.get(sig, "killed by a signal")
            return result("killed", f"candidate process {why} ({signame(sig)})")
        return result("killed", f"candidate process exited (code {code}) without reporting a result")
    st = report.get("status")
    if st == protocol.UNAVAILABLE:
        # the child refused to run the candidate because a layer could not be applied (fail
        # closed). Not raised: a report is untrusted, it must not be able to abort the caller.
        details["sandbox_error"] = True
        return result("killed", "sandbox refused to run the candidate: " + _text(report.get("reason")))
    if st == protocol.REJECTED:
        return result("rejected", _text(report.get("reason") or "rejected"))
    if st == protocol.ERROR:
        et = clean_text(_text(report.get("etype") or "Exception"), ETYPE_CAP)
        details["exception_type"] = et
        line = _int(report.get("line"))
        where = f" (line {line})" if line is not None and 0 < line < 10**9 else ""
        return result("error", f"{et}{where}: {_text(report.get('message', ''))}")
    if st != protocol.OK:
        return result("rejected", "malformed status from the candidate process")
    if rec.exit is not None and code != 0:
        return result("killed", "candidate process did not exit cleanly after reporting")
    return result("ok", None)
