"""The warm parent (started clean by the supervisor) and the per-candidate child (jail side).

The warm parent imports torch once, maps the inputs read-only/copy-on-write from a sealed
memfd, enters fresh user/net/ipc namespaces, drops capabilities, applies rlimits,
no_new_privs, a Landlock layer and a seccomp filter, and then forks one child per
candidate. It never runs candidate code itself. The supervisor boots it with
``python -I -c "...; from selfdev.sandbox.jail.worker import main; main(fd)"``.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import json
import marshal
import math
import mmap
import os
import resource
import selectors
import signal
import socket
import sys
import sysconfig
import time
import traceback

import torch  # imported once here; children inherit it

from selfdev.sandbox import protocol
from selfdev.sandbox.jail import oslayers as osl
from selfdev.sandbox.jail.facade import PolicyViolation, build_env

TORCH_DTYPE = {name: getattr(torch, name) for name in protocol.DTYPES}  # wire name -> dtype
MSG_CAP = 2000
# tasks (the main thread included) one child may have: its ``threads`` compute threads twice
# over, plus room for a runtime's helpers. Counted by the kernel in the child's own user
# namespace (RLIMIT_NPROC), so nothing else's threads count against it.
TASKS_BASE = 32
RLIMITS = sorted({getattr(resource, n) for n in dir(resource) if n.startswith("RLIMIT_")})


def max_tasks(threads: int) -> int:
    return TASKS_BASE + 2 * max(1, threads)


def own_state() -> tuple:
    """What another process could change about this one from outside (prlimit, setpriority,
    sched_setaffinity/scheduler, ioprio_set): compared before every fork, so a warm parent
    that was tampered with never hands that on to a child."""
    return (tuple(resource.getrlimit(r) for r in RLIMITS), os.getpriority(os.PRIO_PROCESS, 0),
            os.sched_getscheduler(0), os.sched_getparam(0).sched_priority,
            tuple(sorted(os.sched_getaffinity(0))), osl.ioprio_get())


def state_changes(was: tuple, now: tuple) -> str:
    names = ("resource limits", "nice value", "scheduling policy", "scheduling priority",
             "CPU affinity", "I/O priority")
    return ", ".join(n for n, a, b in zip(names, was, now) if a != b)


def _cap(s: str, n: int = MSG_CAP) -> str:
    s = str(s)
    return s if len(s) <= n else s[:n] + f"... [{len(s) - n} more chars]"


def read_paths() -> list[str]:
    paths = set()
    for k in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(k)
        if p:
            paths.add(os.path.realpath(p))
    for p in (sys.base_prefix, sys.prefix, "/usr/lib", "/lib", "/lib64", "/usr/lib64", "/usr/local/lib"):
        if os.path.isdir(p):
            paths.add(os.path.realpath(p))
    return sorted(paths)


class Inputs:
    def __init__(self, fd: int):
        size = os.fstat(fd).st_size
        # private anonymous memory (transparent huge pages where the kernel allows): children
        # inherit the page tables at fork, so reading inputs costs them no page faults, and a
        # candidate writing to its inputs only ever touches its own copy-on-write pages
        self.mm = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                            prot=mmap.PROT_READ | mmap.PROT_WRITE)
        if hasattr(mmap, "MADV_HUGEPAGE") and size >= (2 << 20):
            try:
                self.mm.madvise(mmap.MADV_HUGEPAGE)
            except OSError:
                pass
        view = memoryview(self.mm)
        done = 0
        while done < size:
            n = os.preadv(fd, [view[done:done + (64 << 20)]], done)
            if n <= 0:
                raise OSError("short read of the inputs")
            done += n
        del view
        hdr = protocol.decode_header(self.mm)
        self.names: list[str] = hdr["names"]
        self.result_offsets: list[int] = hdr["result_offsets"]
        self.experts: list[str] = hdr["experts"]
        self.base: dict[str, torch.Tensor] = {}
        self.tv: dict[str, dict[str, torch.Tensor]] = {e: {} for e in self.experts}
        for ent in hdr["tensors"]:
            dt = TORCH_DTYPE[ent["dtype"]]
            shape = ent["shape"]
            numel = math.prod(shape)
            if numel == 0:
                t = torch.zeros(shape, dtype=dt)
            else:
                t = torch.frombuffer(self.mm, dtype=dt, count=numel, offset=ent["offset"]).view(shape)
            if ent["kind"] == "base":
                self.base[ent["name"]] = t
            else:
                self.tv[ent["expert"]][ent["name"]] = t
        # a streaming warm parent holds no tensors: its header says how large they will be
        hinted = hdr.get("max_numel", 1)
        self.max_numel = max([t.numel() for t in self.base.values()] + [hinted if type(hinted) is int else 1, 1])


MADV_COLLAPSE = 25  # Linux >= 6.1; not in Python 3.11's mmap module
HUGE = 2 << 20


def _collapse_huge_pages() -> None:
    """Back the warm parent's private anonymous memory (torch's ~150 MB: the malloc heap,
    libraries' data) with 2 MiB pages where the kernel allows.

    A fork copies the page tables of every private writable mapping, and a child's exit tears
    its copy down: with 4 KiB pages that is ~37,000 entries per candidate, a huge page is one
    (measured on digits: system time per candidate 4.8 -> 2.2 ms in the warm parent, 9 -> 5.5
    ms in the child). A child's write still copies only the 4 KiB it touches (the kernel splits
    its own mapping of a shared huge page), so nothing it does reaches the parent or a sibling.
    Only memory that exists now is collapsed (no ``MADV_HUGEPAGE``): a child's own allocations
    stay on small pages. Best effort: an older kernel, THP ``never`` or a region that cannot be
    collapsed keeps small pages, which is only slower."""
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    try:
        with open("/proc/self/maps") as f:
            maps = [line.split() for line in f]
    except OSError:  # no /proc here: small pages
        return
    for parts in maps:
        if parts[1] != "rw-p" or (len(parts) > 5 and parts[5] != "[heap]"):
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        lo, hi = -(-start // HUGE) * HUGE, end // HUGE * HUGE
        if hi > lo:
            madvise(lo, hi - lo, MADV_COLLAPSE)


def _warm_up(threads: int) -> None:
    """Pay the first-call costs of common ops once, here, instead of in every child. Tiny
    tensors only (below the intra-op grain size), so no OpenMP thread pool is created."""
    g = torch.Generator().manual_seed(0)
    a = torch.linspace(-1, 1, 12).reshape(3, 4)
    b = torch.ones(3, 4)
    for r in (a + b, a - b, a * b, a / b, a * 0.5, -a, abs(a), a > 0, a == b, a.abs(), a.sign(), a.sum(), a.mean(),
              a.sum(dim=0), torch.stack([a, b]), torch.stack([a, b]).sum(0), torch.where(a > 0, a, b),
              a.flatten().kthvalue(3), a.flatten().sort(), a.topk(2), torch.zeros_like(a), a.clone(),
              a.norm(), torch.rand(3, generator=g), torch.bernoulli(b * 0.5, generator=g), a.clamp(-0.5, 0.5),
              a.float(), a.to(torch.float64), a.median(), torch.cat([a, b]), a.abs().flatten().quantile(0.5),
              a.item() if a.numel() == 1 else a[0, 0].item(), a.tolist()):
        del r
    c = a.clone()
    c[a > 0] = 0
    c[0] = 1.0
    str(a)
    if threads == 1:  # BLAS/LAPACK paths may start a thread pool when threads > 1
        _ = a @ b.T
        _ = torch.linalg.svd(a, full_matrices=False)
        _ = torch.linalg.norm(a)


# ============================================================================ warm parent
class Parent:
    """State of the warm parent. It never executes candidate code and never reads anything a
    child produced: it forks spare children, hands their private channel to the supervisor,
    and reports exits (it reaps a child only when the supervisor says so, so the supervisor
    can always signal the child's process group without a pid-reuse race)."""

    def __init__(self, sock: socket.socket, cfg: dict, inputs: Inputs, layers: dict,
                 ruleset_fd: int | None, statm: int, factory):
        self.sock = sock
        self.cfg = cfg
        self.inputs = inputs
        self.layers = layers
        self.ruleset_fd = ruleset_fd
        self.statm = statm
        self.factory = factory
        self.sel = selectors.DefaultSelector()
        self.zombies: set[int] = set()
        self.state = own_state()  # as set up; every child starts from exactly this
        # the children's seccomp program, their pid left open (see oslayers.fill_filter)
        self.filter_template = osl.child_filter_template() if layers.get("seccomp") else None
        self.tainted: str | None = None

    def check_state(self) -> bool:
        """False (and the supervisor told, once) if anything in ``own_state`` changed since
        start-up. A tainted parent forks no more children; the supervisor replaces it."""
        if self.tainted is None:
            now = own_state()
            if now != self.state:
                self.tainted = state_changes(self.state, now)
                protocol.send(self.sock, {protocol.TAINTED: self.tainted})
        return self.tainted is None

    def fork_spare(self) -> None:
        """Fork a child that waits for its candidate on a private channel, and give the
        supervisor the other end of that channel. Checked before and after the fork: a child
        forked while the parent's state was not its own is killed unannounced."""
        if not self.check_state():
            return
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        vmsize = int(os.pread(self.statm, 64, 0).split()[0]) * os.sysconf("SC_PAGE_SIZE")
        gc.freeze()
        parent_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # ------------------------------------------------------- child
            code = 70
            try:
                a.close()
                code = child_main(self, b, parent_pid, vmsize)
            except BaseException:
                code = 71
            finally:
                os._exit(code)
        b.close()
        if not self.check_state():
            a.close()
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)  # never announced, so the supervisor holds no claim on its pid
            return
        pidfd = os.pidfd_open(pid)
        self.sel.register(pidfd, selectors.EVENT_READ, pid)
        try:
            protocol.send(self.sock, {protocol.SPARE: pid}, [a.fileno()])
        finally:
            a.close()

    def loop(self) -> None:
        self.sel.register(self.sock, selectors.EVENT_READ, None)
        for _ in range(protocol.POOL):  # a fork is never on a candidate's critical path
            self.fork_spare()
        while True:
            for key, _ in self.sel.select():
                if key.data is not None:  # a child exited (it stays a zombie until "reap")
                    pid = key.data
                    self.sel.unregister(key.fd)
                    os.close(key.fd)
                    st = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
                    ex = {"code": None, "signal": None}
                    if st is not None:
                        if st.si_code == os.CLD_EXITED:
                            ex["code"] = st.si_status
                        else:
                            ex["signal"] = st.si_status
                    self.zombies.add(pid)
                    protocol.send(self.sock, {protocol.EXIT: ex, "pid": pid})
                    continue
                msg, fds = protocol.recv(self.sock)
                for fd in fds:
                    os.close(fd)
                if msg is None:
                    return
                op = msg.get("op")
                if op == protocol.OP_REAP:
                    pid = int(msg.get("pid", -1))
                    if pid in self.zombies:
                        self.zombies.discard(pid)
                        os.waitpid(pid, 0)
                elif op == protocol.OP_USED:  # a spare got its candidate: fork its replacement
                    del msg
                    self.fork_spare()


def main(ctrl_fd: int) -> None:
    sock = socket.socket(fileno=ctrl_fd)
    sock.set_inheritable(False)
    msg, fds = protocol.recv(sock)
    if msg is None:
        return
    try:
        cfg = msg
        # the parent stays single-threaded (namespaces and Landlock need that, and a parent
        # that never ran a parallel region is safe to fork); children set their own count
        torch.set_num_threads(1)
        inputs = Inputs(fds[0])
        os.close(fds[0])
        statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        # the element cap: room to stack every expert's largest tensor with the base
        factory = build_env(max(1 << 24, max(4, len(inputs.experts) + 1) * inputs.max_numel))
        try:  # cpuinfo reads /proc and /sys: do it before Landlock hides them
            torch.backends.cpu.get_cpu_capability()
        except Exception:
            pass
        _warm_up(1)
        _collapse_huge_pages()  # torch's memory is all there now; reads /proc: before Landlock
        layers = {"process": True}
        off = set(cfg.get("disable", ()))
        ns = osl.enter_namespaces() if not off & {"userns", "netns", "ipcns"} else {}
        layers["userns"] = bool(ns.get("userns"))
        layers["netns"] = bool(ns.get("netns")) and osl.loopback_isolated()
        layers["ipcns"] = bool(ns.get("ipcns"))
        osl.set_rlimit(resource.RLIMIT_CORE, 0)
        osl.set_rlimit(resource.RLIMIT_NOFILE, 256)
        layers["rlimits"] = True
        osl.set_not_dumpable()
        layers["no_new_privs"] = osl.set_no_new_privs()
        rpaths = read_paths()
        abi = osl.landlock_abi()
        layers["landlock_abi"] = abi
        layers["landlock"] = layers["landlock_net"] = layers["landlock_scope"] = False
        n_threads = len(os.listdir("/proc/self/task"))
        ruleset_fd = None
        if abi >= 1 and layers["no_new_privs"] and n_threads == 1 and not off & {"landlock", "landlock_net", "landlock_scope"}:
            ruleset_fd, info = osl.landlock_ruleset(rpaths, abi)  # the children's own layer
            osl.landlock_restrict(rpaths, abi)
            layers["landlock"] = True
            layers["landlock_net"] = info["net"]
            layers["landlock_scope"] = info["scope"]
        layers["seccomp"] = False
        if osl.NR and layers["no_new_privs"] and "seccomp" not in off:
            try:
                osl.install_seccomp(child=False)
                layers["seccomp"] = True
            except OSError as e:
                layers["seccomp_error"] = str(e)
        layers["tasks"] = bool(layers["userns"]) and "tasks" not in off and osl.tasks_cap_holds()
        missing = [k for k in cfg.get("require", []) if not layers.get(k)]
        gc.collect()
        gc.freeze()
        protocol.send(sock, {protocol.READY: True, "layers": layers, "missing": missing, "pid": os.getpid()})
        if missing:
            return
    except Exception as e:
        traceback.print_exc()  # to SELFDEV_SANDBOX_LOG when the operator set it
        try:
            protocol.send(sock, {protocol.READY: False, "error": _cap(f"{type(e).__name__}: {e}")})
        finally:
            return
    Parent(sock, cfg, inputs, layers, ruleset_fd, statm, factory).loop()


# ============================================================================ child
def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks, done = [], 0
    while done < size:
        b = os.pread(fd, size - done, done)
        if not b:
            break
        chunks.append(b)
        done += len(b)
    return b"".join(chunks)


def _send_status(st_w: int, status: dict, framed: bool = False) -> None:
    """The report (framed when streaming, where more messages share the pipe)."""
    data = protocol.encode_frame(status) if framed else json.dumps(status, separators=(",", ":")).encode()
    view = memoryview(data)
    while view:
        n = os.write(st_w, view)
        view = view[n:]


def child_main(par: Parent, chan: socket.socket, parent_pid: int, vmsize: int) -> int:
    os.setsid()
    osl.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent_pid:
        return 72
    if own_state() != par.state:  # inherited from a parent tampered with during the fork
        return 74
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGALRM, signal.SIGXCPU, signal.SIGXFSZ):
        signal.signal(s, signal.SIG_DFL)
    # stdin: an empty pipe of its own, never a host file (a descriptor on a host file would
    # let it change that file's metadata, which Landlock does not govern)
    r, w = os.pipe()
    os.dup2(r, 0)
    os.close(r)
    os.close(w)
    cfg, layers = par.cfg, par.layers
    applied = {"rlimits": True, "no_new_privs": layers.get("no_new_privs", False),
               "netns": layers.get("netns", False), "userns": layers.get("userns", False),
               "ipcns": layers.get("ipcns", False)}
    setup_error = None
    try:
        if layers.get("tasks"):
            # its own user + IPC namespaces and a task cap counted there (see oslayers)
            osl.enter_child_namespaces(max_tasks(int(cfg["threads"])))
            applied["tasks"] = True
        if par.ruleset_fd is not None:
            # our own nested Landlock domain: besides the filesystem rules this scopes
            # signals and abstract sockets away from the warm parent and the supervisor
            osl.landlock_restrict_fd(par.ruleset_fd)
            applied.update(landlock=True, landlock_net=layers.get("landlock_net", False),
                           landlock_scope=layers.get("landlock_scope", False))
    except Exception as e:
        setup_error = f"{type(e).__name__}: {e}"
    # again after the credential change of the new user namespace (which may clear it), and
    # the parent must still be the one we were forked by
    osl.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent_pid:
        return 72
    # our seccomp program, assembled now (the filter names our pid) and installed once the
    # candidate's descriptors have arrived (receiving them is one of the calls it denies)
    filter_prog = osl.fill_filter(par.filter_template, os.getpid()) if layers.get("seccomp") else None
    # wait for the candidate (the parent forks us ahead of time)
    try:
        msg, fds = protocol.recv(chan)
    except Exception:
        return 73
    stream = msg.get("stream") if msg is not None else None
    want = protocol.RUN_FDS_STREAM if isinstance(stream, dict) else protocol.RUN_FDS
    if msg is None or len(fds) != want or msg.get("op") != protocol.OP_RUN:
        for fd in fds:
            os.close(fd)
        return 0
    t0 = time.perf_counter()
    # out of the way first (a received descriptor may sit where another one goes), then each
    # to its place: 1 and 2 output, 3 report, 4 result, and when streaming 5 commands, 6 inputs
    fds = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) for fd in fds]
    out_w, st_w, res_fd, code_fd = fds[:4]
    try:
        blob = _read_all(code_fd)
    finally:
        os.close(code_fd)
    msg["blob"] = blob
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    os.dup2(st_w, 3, inheritable=False)
    os.dup2(res_fd, 4, inheritable=False)
    st_w, res_fd = 3, 4
    cmd_fd = in_fd = None
    if stream is not None:
        os.dup2(fds[4], 5, inheritable=False)
        os.dup2(fds[5], 6, inheritable=False)
        cmd_fd, in_fd = 5, 6
    os.closerange(7 if stream is not None else 5, 1 << 16)  # the channel, the parent's socket, ...
    framed = stream is not None
    require = set(cfg.get("require", []))
    timeout = float(msg["timeout"])
    threads = int(cfg["threads"])
    try:
        if setup_error:
            raise RuntimeError(setup_error)
        osl.set_rlimit(resource.RLIMIT_AS, vmsize + int(cfg["memory_mb"]) * 1024 * 1024)
        cpu = int(math.ceil(timeout * max(1, threads))) + 1
        osl.set_rlimit(resource.RLIMIT_CPU, cpu, cpu + 1)
        osl.set_rlimit(resource.RLIMIT_FSIZE, int(msg["result_bytes"]))
        osl.set_rlimit(resource.RLIMIT_NOFILE, 16)
        osl.set_rlimit(resource.RLIMIT_CORE, 0)
        osl.set_rlimit(resource.RLIMIT_MEMLOCK, 0)
        osl.set_rlimit(resource.RLIMIT_MSGQUEUE, 0)
        # a wall-clock backstop that holds even if the supervisor has gone away (streaming:
        # per tensor, and while waiting for the next one; see _stream_steps)
        signal.setitimer(signal.ITIMER_REAL, (float(stream["tensor_timeout"]) if framed else timeout) + 5.0)
        steps = _stream_steps(stream, cmd_fd, in_fd, st_w, len(par.inputs.experts)) if framed else None
        torch.set_num_threads(threads)  # threads are created lazily, after seccomp, via clone()
        if layers.get("seccomp"):
            osl.install_seccomp(child=True, raw=filter_prog)
            applied["seccomp"] = True
        missing = [k for k in require if not applied.get(k)]
        if missing:
            _send_status(st_w, {"status": protocol.UNAVAILABLE, "reason": f"required layers not active in the child: {missing}"}, framed)
            return 0
    except Exception as e:
        _send_status(st_w, {"status": protocol.UNAVAILABLE, "reason": _cap(f"sandbox setup failed: {type(e).__name__}: {e}")}, framed)
        return 0
    t_setup = time.perf_counter()
    try:
        status = run_candidate(msg, par, res_fd, steps)
    except BaseException as e:  # e.g. MemoryError while building the report
        status = {"status": protocol.ERROR, "etype": type(e).__name__, "message": _cap(str(e), 500)}
    status["timings"] = {"setup_ms": (t_setup - t0) * 1e3, "run_ms": (time.perf_counter() - t_setup) * 1e3}
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    # close the output pipe first: when the report arrives the supervisor sees both EOFs at once
    os.dup2(0, 1)
    os.dup2(0, 2)
    _send_status(st_w, status, framed)
    os.close(st_w)
    return 0


def _candidate_line(tb) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<candidate>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class _StreamError(Exception):
    """The supervisor's side of a stream broke (not the candidate's doing)."""


def _stream_steps(stream: dict, cmd_fd: int, in_fd: int, st_w: int, n_experts: int):
    """The tensors of a streaming candidate, as ``run_candidate`` consumes them: for each
    command read from the supervisor, ``(name, base, task vectors, result offset)`` over this
    child's private copy-on-write mapping of the inputs memfd. Before reading the next
    command it tells the supervisor that the previous result is written. First of all it says
    the module ran (``READY``); it ends at ``OP_END``."""
    size = int(stream["inputs_bytes"])
    tensor_limit = float(stream["tensor_timeout"]) + 5.0
    idle = float(stream["idle"])
    # MAP_PRIVATE: the candidate may write into its inputs (its own pages); MADV_DONTNEED
    # before each tensor drops those pages so the next inputs show through
    mm = mmap.mmap(in_fd, max(size, 1), flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    os.close(in_fd)
    buf = bytearray()
    _send_status(st_w, {protocol.READY: True}, True)
    done = None
    while True:
        if done is not None:
            _send_status(st_w, {protocol.STEP: done}, True)
        signal.setitimer(signal.ITIMER_REAL, idle)  # waiting costs no compute; a bound anyway
        while True:
            payload, ok = protocol.split_frame(buf)
            if not ok:
                raise _StreamError("oversized command frame")
            if payload is not None:
                break
            chunk = os.read(cmd_fd, 1 << 16)
            if not chunk:
                raise _StreamError("the supervisor closed the command pipe")
            buf += chunk
        signal.setitimer(signal.ITIMER_REAL, tensor_limit)
        cmd = json.loads(payload)
        if cmd.get("op") == protocol.OP_END:
            return
        step, dt, shape = int(cmd[protocol.STEP]), TORCH_DTYPE[cmd["dtype"]], [int(x) for x in cmd["shape"]]
        numel = math.prod(shape)
        offs = [int(cmd["base"])] + [int(o) for o in cmd["tvs"]]
        if len(offs) != n_experts + 1 or any(o < 0 or o + numel * dt.itemsize > size for o in offs):
            raise _StreamError("tensor command outside the inputs buffer")
        mm.madvise(mmap.MADV_DONTNEED)
        ts = [torch.frombuffer(mm, dtype=dt, count=numel, offset=o).view(shape) if numel else torch.zeros(shape, dtype=dt)
              for o in offs]
        yield str(cmd["name"]), ts[0], ts[1:], int(cmd["result"])
        del ts
        done = step


def run_candidate(msg, par: Parent, res_fd: int, steps=None) -> dict:
    """Run the candidate's module, then ``merge_models`` once per tensor: every tensor of the
    warm parent's inputs (``steps`` None), or each tensor a stream hands over (``steps``,
    from :func:`_stream_steps`), writing each result into the result memfd."""
    inputs = par.inputs
    env, make_globals = par.factory  # built in the parent; this process has a private copy
    cap_mode = contextlib.nullcontext()
    if msg.get("os_only"):
        # test hook (Sandbox(_os_only=True)): full Python, no L1/L2, to show that the OS
        # layers hold on their own. Never used for real candidates.
        import builtins
        try:
            code_obj = compile(msg["blob"].decode("utf-8", "surrogatepass"), "<candidate>", "exec")
        except SyntaxError as e:
            return {"status": protocol.REJECTED, "reason": _cap(f"syntax error: {e}")}
        glb = {"__name__": "candidate", "__builtins__": builtins}
    else:
        # the code object compiled (with RestrictedPython) by the supervisor's own screen,
        # marshalled trusted -> untrusted only: the jail never parses candidate source
        code_obj = marshal.loads(msg["blob"])
        glb = make_globals()
        cap_mode = env.result_cap  # the element cap on every torch call the candidate makes

    def printed():
        s = "".join(env.printed)
        if env.truncated:
            s += f"\n... [{env.truncated} more characters of output dropped]"
        return s

    def violation_result(extra: str = "", exc: BaseException | None = None) -> dict:
        if not env.violations:
            env.violations.append(_cap(str(exc), 300))
        v = env.violations[0]
        n = len(env.violations)
        return {"status": protocol.REJECTED, "reason": _cap(f"policy violation{extra}: {v}" + (f" (+{n - 1} more)" if n > 1 else "")),
                "violations": env.violations, "stdout": printed()}

    if steps is None:
        offsets = inputs.result_offsets
        steps = ((name, inputs.base[name], [inputs.tv[e][name] for e in inputs.experts], int(offsets[i]))
                 for i, name in enumerate(inputs.names))
    try:
        with cap_mode:
            exec(code_obj, glb)
        fn = glb.get("merge_models")
        if not callable(fn):
            return {"status": protocol.REJECTED, "reason": "merge_models is not a function after executing the module", "stdout": printed()}
        for name, base, tv_list, offset in steps:
            tvs = dict(zip(inputs.experts, tv_list))
            with cap_mode:
                r = fn(tvs, base, name)
            if env.violations:
                return violation_result(" (caught by the candidate)")
            reason = check_result(r, base, name)
            if reason:
                return {"status": protocol.REJECTED, "reason": reason, "stdout": printed()}
            write_tensor(res_fd, r, offset)
            del r, tvs, base, tv_list
    except _StreamError as e:  # not the candidate's: the supervisor went away or broke
        return {"status": protocol.ERROR, "etype": "StreamError", "message": _cap(str(e), 500), "stdout": printed()}
    except PolicyViolation as e:
        return violation_result(exc=e)
    except BaseException as e:  # the candidate's own exception, reported as data
        if env.violations:
            return violation_result(" (caught by the candidate)")
        tb = e.__traceback__
        line = _candidate_line(tb)
        return {"status": protocol.ERROR, "etype": type(e).__name__, "message": _cap(str(e), 1000),
                "line": line, "stdout": printed()}
    if env.violations:
        return violation_result(" (caught by the candidate)")
    return {"status": protocol.OK, "stdout": printed()}


def check_result(r, base: torch.Tensor, name: str) -> str | None:
    if type(r) is not torch.Tensor:
        return f"merge_models returned {type(r).__name__} for {name!r}; expected torch.Tensor"
    if r.layout != torch.strided or r.is_sparse or r.device.type != "cpu":
        return f"result for {name!r} must be a dense CPU tensor (got layout {r.layout}, device {r.device})"
    if r.dtype != base.dtype:
        return f"result for {name!r} has dtype {str(r.dtype).replace('torch.', '')}; expected {str(base.dtype).replace('torch.', '')}"
    if tuple(r.shape) != tuple(base.shape):
        return f"result for {name!r} has shape {tuple(r.shape)}; expected {tuple(base.shape)}"
    if r.requires_grad:
        return f"result for {name!r} requires grad; return a plain tensor (use .detach())"
    return None


def write_tensor(fd: int, t: torch.Tensor, offset: int) -> None:
    t = t.contiguous()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    n = t.numel() * t.element_size()
    if n == 0:
        return
    buf = (ctypes.c_char * n).from_address(t.data_ptr())
    view = memoryview(buf).cast("B")
    done = 0
    while done < n:
        done += os.pwrite(fd, view[done:], offset + done)
