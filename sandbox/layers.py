"""The isolation layers: which exist, which a Sandbox requires by default, and which this
kernel offers (``selfdev sandbox doctor``, probed in a throw-away process). Trusted side.

(Not named ``doctor.py``: a submodule of that name would shadow the package's ``doctor()``.)
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

from selfdev.sandbox.protocol import ALL_LAYERS

# the strictest set that works on this project's machine kind (kernel 6.18, rootless userns)
DEFAULT_REQUIRE = ("rlimits", "no_new_privs", "netns", "tasks", "seccomp", "landlock", "landlock_net",
                   "landlock_scope")

_CACHE: dict | None = None

LAYER_DOC = {
    "static": "L1 AST policy + RestrictedPython compile_restricted",
    "facade": "L2 torch/math facades, attribute allowlists, guarded writes",
    "process": "one forked child per candidate, own session, killed with its group",
    "rlimits": "RLIMIT_AS/CPU/FSIZE/NOFILE/CORE/MEMLOCK in the child",
    "no_new_privs": "PR_SET_NO_NEW_PRIVS",
    "userns": "fresh user namespace (no capabilities in the host namespace)",
    "netns": "fresh network namespace (no interfaces)",
    "ipcns": "fresh IPC namespace (and one per child)",
    "tasks": "task cap per child: own user namespace + RLIMIT_NPROC (threads included)",
    "seccomp": "seccomp-bpf deny list (no sockets, exec, fork, ptrace, mount, ...)",
    "landlock": "Landlock filesystem: read-only system/python dirs, no writes",
    "landlock_net": "Landlock TCP bind/connect denied (ABI >= 4)",
    "landlock_scope": "Landlock signal + abstract-unix scoping (ABI >= 6)",
}


def doctor(refresh: bool = False) -> dict:
    """Which isolation layers this kernel offers (cached after the first probe)."""
    global _CACHE
    if _CACHE is not None and not refresh:
        return dict(_CACHE)
    from selfdev.sandbox.policy import screen  # noqa: F401  (L1 importable)
    import RestrictedPython
    # the jail's OS layers, applied to a throw-away interpreter that reports what held
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jail", "oslayers.py")
    probe: dict = {}
    err = None
    try:
        cp = subprocess.run([sys.executable, "-I", script], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, close_fds=True, cwd="/")
        if cp.returncode == 0:
            probe = json.loads(cp.stdout.strip().splitlines()[-1])
        else:
            err = (cp.stderr or cp.stdout).strip()[-500:]
    except Exception as e:  # pragma: no cover
        err = f"{type(e).__name__}: {e}"
    layers = {"static": True, "facade": True, "process": True}
    for k in ALL_LAYERS:
        layers[k] = bool(probe.get(k, False))
    rep = {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "restrictedpython": getattr(RestrictedPython, "__version__", None) or _rp_version(),
        "euid": os.geteuid(),
        "landlock_abi": probe.get("landlock_abi", 0),
        "layers": layers,
        "descriptions": LAYER_DOC,
        "default_require": list(DEFAULT_REQUIRE),
        "missing_for_default": [k for k in DEFAULT_REQUIRE if not layers.get(k)],
    }
    for k in ("namespace_error", "tasks_error", "landlock_error", "seccomp_error"):
        if probe.get(k):
            rep[k] = probe[k]
    if err:
        rep["probe_error"] = err
    rep["ok"] = not rep["missing_for_default"]
    _CACHE = rep
    return dict(rep)


def _rp_version():
    try:
        from importlib.metadata import version
        return version("RestrictedPython")
    except Exception:
        return None
