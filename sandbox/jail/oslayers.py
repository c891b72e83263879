"""L3 OS layers: namespaces, rlimits, no_new_privs, Landlock, seccomp (stdlib + ctypes only).

Jail side. This module must stay importable without torch and without the rest of the
package: it is also run as a stand-alone script (``python -I jail/oslayers.py``) by
``selfdev.sandbox.doctor()`` to probe what the kernel offers.
"""
from __future__ import annotations

import ctypes
import errno as _errno
import json
import os
import platform
import resource
import struct
import sys

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

MACHINE = platform.machine()

# --------------------------------------------------------------------------- syscall numbers
# x86_64 only (the machine kind this project runs on). On other architectures seccomp and
# Landlock report "unavailable" and a configuration that requires them fails closed.
if MACHINE == "x86_64":
    NR = dict(
        read=0, write=1, close=3, mmap=9, mprotect=10, munmap=11, brk=12, pread64=17,
        pwrite64=18, sched_yield=24, madvise=28, futex=202, ioctl=16, socket=41, connect=42, accept=43, sendto=44, recvfrom=45,
        sendmsg=46, recvmsg=47, shutdown=48, bind=49, listen=50, getsockname=51, getpeername=52,
        socketpair=53, setsockopt=54, getsockopt=55, clone=56, fork=57, vfork=58, execve=59,
        kill=62, ptrace=101, syslog=103, setuid=105, setgid=106, setpgid=109, setsid=112,
        setreuid=113, setregid=114, setgroups=116, setresuid=117, setresgid=119, setfsuid=122,
        setfsgid=123, capset=126, rt_sigqueueinfo=129, mknod=133, personality=135, vhangup=153,
        pivot_root=155, adjtimex=159, chroot=161, acct=163, settimeofday=164, mount=165,
        umount2=166, swapon=167, swapoff=168, reboot=169, sethostname=170, setdomainname=171,
        iopl=172, ioperm=173, init_module=175, delete_module=176, quotactl=179, tkill=200,
        lookup_dcookie=212, clock_settime=227, tgkill=234, kexec_load=246, add_key=248,
        request_key=249, keyctl=250, mknodat=259, unshare=272, rt_tgsigqueueinfo=297,
        perf_event_open=298, recvmmsg=299, name_to_handle_at=303, open_by_handle_at=304,
        sendmmsg=307, setns=308, process_vm_readv=310, process_vm_writev=311, kcmp=312,
        finit_module=313, seccomp=317, memfd_create=319, kexec_file_load=320, bpf=321,
        execveat=322, userfaultfd=323, accept4=288, pidfd_send_signal=424, io_uring_setup=425,
        io_uring_enter=426, io_uring_register=427, open_tree=428, move_mount=429, fsopen=430,
        fsconfig=431, fsmount=432, fspick=433, pidfd_open=434, clone3=435, pidfd_getfd=438,
        mount_setattr=442, landlock_create_ruleset=444, landlock_add_rule=445,
        landlock_restrict_self=446, memfd_secret=447,
        # calls that take a pid (allowed on the calling process only)
        getpriority=140, setpriority=141, sched_setparam=142, sched_getparam=143,
        sched_setscheduler=144, sched_getscheduler=145, sched_rr_get_interval=148,
        sched_setaffinity=203, sched_getaffinity=204, ioprio_set=251, ioprio_get=252,
        migrate_pages=256, get_robust_list=274, move_pages=279, prlimit64=302, sched_setattr=314,
        sched_getattr=315, process_madvise=440, process_mrelease=448,
        # SysV IPC and POSIX message queues
        shmget=29, shmat=30, shmctl=31, semget=64, semop=65, semctl=66, shmdt=67, msgget=68,
        msgsnd=69, msgrcv=70, msgctl=71, semtimedop=220, mq_open=240, mq_unlink=241,
        mq_timedsend=242, mq_timedreceive=243, mq_notify=244, mq_getsetattr=245,
        # file metadata: mode, owner, times, extended attributes, inode flags
        chmod=90, fchmod=91, chown=92, fchown=93, lchown=94, utime=132, setxattr=188,
        lsetxattr=189, fsetxattr=190, removexattr=197, lremovexattr=198, fremovexattr=199,
        utimes=235, fchownat=260, futimesat=261, fchmodat=268, utimensat=280, fchmodat2=452,
        setxattrat=463, removexattrat=466, file_setattr=469,
        quotactl_fd=443, lsm_set_self_attr=460, open_tree_attr=467,
    )
    AUDIT_ARCH = 0xC000003E
else:  # pragma: no cover - other architectures
    NR = {}
    AUDIT_ARCH = None

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PRIO_PROCESS = 0
IOPRIO_WHO_PROCESS = 1
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000
# what each child unshares for itself before it gets a candidate (see ``enter_child_namespaces``);
# the warm parent's seccomp filter allows unshare() with exactly these flags and nothing else
CHILD_UNSHARE = CLONE_NEWUSER | CLONE_NEWIPC
# The real uid a warm parent started as root runs under (its effective uid stays 0 so that it
# still reads the interpreter wherever root installed it). RLIMIT_NPROC is never enforced for
# real uid 0, so without this a child's task cap would not hold. A uid from the range that
# systemd leaves unallocated (1879048192-2147352575): no account and no file has it.
ACCOUNTING_UID = 2_000_000_000


def _err(what: str) -> OSError:
    e = ctypes.get_errno()
    return OSError(e, f"{what}: {os.strerror(e)}")


# --------------------------------------------------------------------------- namespaces
def enter_namespaces() -> dict:
    """unshare(user+net+ipc) and map our own uid/gid; drop every capability afterwards.

    Works rootless where unprivileged user namespaces are allowed; as root it removes all
    capabilities in the initial namespace (they only exist inside the new user namespace,
    and are then dropped too). Started as root, the process first moves its *real* uid to
    ``ACCOUNTING_UID`` (effective and saved uid stay 0, so file access is unchanged): the
    kernel counts tasks against RLIMIT_NPROC by real uid and exempts real uid 0."""
    if os.getuid() == 0 and os.geteuid() == 0:
        os.setresuid(ACCOUNTING_UID, 0, 0)
    uid, gid = os.geteuid(), os.getegid()
    out = {"userns": False, "netns": False, "ipcns": False}
    flags = CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    if _libc.unshare(flags) != 0:
        # fall back: user + net only
        flags = CLONE_NEWUSER | CLONE_NEWNET
        if _libc.unshare(flags) != 0:
            out["error"] = os.strerror(ctypes.get_errno())
            return out
    out["userns"] = True
    out["netns"] = bool(flags & CLONE_NEWNET)
    out["ipcns"] = bool(flags & CLONE_NEWIPC)
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
    except OSError:
        pass
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")
    drop_capabilities()
    return out


def enter_child_namespaces(max_tasks: int) -> None:
    """A child's own user and IPC namespaces, then RLIMIT_NPROC = ``max_tasks``.

    The kernel counts RLIMIT_NPROC per (user namespace, real uid), so in a namespace of its
    own a child's count is its own threads and nothing else (not the warm parent's, not the
    other children's). Its own IPC namespace means a SysV object, should one ever be created
    (seccomp denies the calls), dies with the child and is invisible to the next one. No uid
    map is written (the warm parent's Landlock domain forbids it anyway): inside, the child
    is the overflow uid and cannot become anyone. Every capability the new namespace grants
    is dropped at once. Call it single-threaded, in a fresh fork, before anything else."""
    if _libc.unshare(CHILD_UNSHARE) != 0:
        raise _err("unshare(CLONE_NEWUSER|CLONE_NEWIPC)")
    drop_capabilities()
    resource.setrlimit(resource.RLIMIT_NPROC, (max_tasks, max_tasks))


def tasks_cap_holds() -> bool:
    """Whether a child's task cap is enforced on this kernel, for this process: a throw-away
    fork sets itself up as a child does, with room for 3 tasks, and must start exactly two
    threads. (Not where the real uid is 0: the kernel never enforces RLIMIT_NPROC there.)"""
    import threading
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            enter_child_namespaces(3)
            ev = threading.Event()
            code = 0
            for _ in range(4):
                threading.Thread(target=ev.wait, daemon=True).start()
                code += 1
        except BaseException:
            pass
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 2


def ioprio_get() -> int:
    """This process's I/O priority (part of the state a warm parent checks before a fork)."""
    return int(_libc.syscall(NR["ioprio_get"], IOPRIO_WHO_PROCESS, 0)) if NR else 0


def drop_capabilities() -> None:
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == _errno.EINVAL:
            break
    # capset(v3 header, zeroed data) -> no effective/permitted/inheritable caps
    hdr = struct.pack("Ii", 0x20080522, 0)
    data = bytes(24)
    hb = ctypes.create_string_buffer(hdr)
    db = ctypes.create_string_buffer(data)
    if NR:
        _libc.syscall(NR["capset"], hb, db)


def loopback_isolated() -> bool:
    """True when we are in a network namespace with no usable interface except a down lo."""
    try:
        with open("/proc/self/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return False
    names = [ln.split(":")[0].strip() for ln in lines]
    return names == ["lo"] or names == []


# --------------------------------------------------------------------------- prctl helpers
def set_no_new_privs() -> bool:
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    return _libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1


def set_pdeathsig(sig: int) -> None:
    _libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def set_not_dumpable() -> None:
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


# --------------------------------------------------------------------------- rlimits
def set_rlimit(which: int, soft: int, hard: int | None = None) -> None:
    cur_soft, cur_hard = resource.getrlimit(which)
    hard = soft if hard is None else hard
    if cur_hard != resource.RLIM_INFINITY:
        hard = min(hard, cur_hard)
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


# --------------------------------------------------------------------------- Landlock
LL_FS = [  # (bit, abi)
    (1 << 0, 1),   # EXECUTE
    (1 << 1, 1),   # WRITE_FILE
    (1 << 2, 1),   # READ_FILE
    (1 << 3, 1),   # READ_DIR
    (1 << 4, 1),   # REMOVE_DIR
    (1 << 5, 1),   # REMOVE_FILE
    (1 << 6, 1),   # MAKE_CHAR
    (1 << 7, 1),   # MAKE_DIR
    (1 << 8, 1),   # MAKE_REG
    (1 << 9, 1),   # MAKE_SOCK
    (1 << 10, 1),  # MAKE_FIFO
    (1 << 11, 1),  # MAKE_BLOCK
    (1 << 12, 1),  # MAKE_SYM
    (1 << 13, 2),  # REFER
    (1 << 14, 3),  # TRUNCATE
    (1 << 15, 5),  # IOCTL_DEV
]
LL_READ_FILE = 1 << 2
LL_READ_DIR = 1 << 3
LL_NET_BIND_TCP = 1 << 0
LL_NET_CONNECT_TCP = 1 << 1
LL_SCOPE_ABSTRACT_UNIX = 1 << 0
LL_SCOPE_SIGNAL = 1 << 1


def landlock_abi() -> int:
    if not NR:
        return 0
    r = _libc.syscall(NR["landlock_create_ruleset"], None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return int(r) if r > 0 else 0


def landlock_restrict(read_paths: list[str], abi: int | None = None) -> dict:
    fd, info = landlock_ruleset(read_paths, abi)
    try:
        landlock_restrict_fd(fd)
    finally:
        os.close(fd)
    return info


def landlock_restrict_fd(fd: int) -> None:
    if _libc.syscall(NR["landlock_restrict_self"], ctypes.c_int(fd), ctypes.c_uint32(0)) != 0:
        raise _err("landlock_restrict_self")


def landlock_ruleset(read_paths: list[str], abi: int | None = None) -> tuple[int, dict]:
    """Restrict the calling thread (and its future children) to read-only access to
    ``read_paths`` and no other filesystem access; no TCP bind/connect (ABI >= 4); no signals
    or abstract UNIX sockets outside the domain (ABI >= 6). Returns what was enforced."""
    abi = landlock_abi() if abi is None else abi
    if abi < 1:
        raise OSError(_errno.ENOSYS, "Landlock is not available on this kernel")
    handled_fs = 0
    for bit, need in LL_FS:
        if abi >= need:
            handled_fs |= bit
    handled_net = (LL_NET_BIND_TCP | LL_NET_CONNECT_TCP) if abi >= 4 else 0
    scoped = (LL_SCOPE_ABSTRACT_UNIX | LL_SCOPE_SIGNAL) if abi >= 6 else 0
    if abi >= 6:
        attr = struct.pack("QQQ", handled_fs, handled_net, scoped)
    elif abi >= 4:
        attr = struct.pack("QQ", handled_fs, handled_net)
    else:
        attr = struct.pack("Q", handled_fs)
    ab = ctypes.create_string_buffer(attr, len(attr))
    fd = _libc.syscall(NR["landlock_create_ruleset"], ab, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if fd < 0:
        raise _err("landlock_create_ruleset")
    try:
        for p in read_paths:
            try:
                pfd = os.open(p, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                is_dir = os.path.isdir(p)
                access = (LL_READ_FILE | LL_READ_DIR) if is_dir else LL_READ_FILE
                rule = struct.pack("=Qi", access, pfd)  # packed landlock_path_beneath_attr
                rb = ctypes.create_string_buffer(rule, len(rule))
                if _libc.syscall(NR["landlock_add_rule"], ctypes.c_int(fd), ctypes.c_int(1), rb, ctypes.c_uint32(0)) != 0:
                    raise _err(f"landlock_add_rule({p})")
            finally:
                os.close(pfd)
    except BaseException:
        os.close(fd)
        raise
    return fd, {"abi": abi, "fs": True, "net": bool(handled_net), "scope": bool(scoped)}


# --------------------------------------------------------------------------- seccomp
_LD_ABS = 0x20
_JEQ = 0x15
_JGE = 0x35
_JSET = 0x45
_RET = 0x06
RET_ALLOW = 0x7FFF0000
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1

# never needed by the warm parent once it is set up, nor by a candidate
DENY_ALWAYS = [
    "socket", "connect", "bind", "listen", "accept", "accept4",
    "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "process_madvise", "process_mrelease",
    "mount", "umount2", "pivot_root", "chroot", "setns", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "open_tree_attr",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "personality", "open_by_handle_at", "name_to_handle_at",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "acct", "settimeofday", "clock_settime", "adjtimex",
    "sethostname", "setdomainname", "iopl", "ioperm", "quotactl", "quotactl_fd", "lookup_dcookie",
    "vhangup", "syslog", "mknod", "mknodat", "pidfd_getfd", "memfd_secret", "lsm_set_self_attr",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
    "setfsuid", "setfsgid", "capset",
    # SysV IPC and POSIX message queues: state that would outlive a candidate and that the
    # next candidate could find (and SysV shared memory is not counted in RLIMIT_AS)
    "shmget", "shmat", "shmctl", "shmdt", "semget", "semop", "semctl", "semtimedop",
    "msgget", "msgsnd", "msgrcv", "msgctl",
    "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
    # metadata of files it may open (Landlock does not cover these): mode, owner, times, xattrs
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
    "utime", "utimes", "utimensat", "futimesat",
    "setxattr", "lsetxattr", "fsetxattr", "setxattrat",
    "removexattr", "lremovexattr", "fremovexattr", "removexattrat", "file_setattr",
]
# additionally denied to a candidate child
DENY_CHILD = [
    "socketpair", "fork", "vfork", "tkill", "pidfd_open", "pidfd_send_signal", "setsid", "setpgid",
    "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown",
    "getsockname", "getpeername", "setsockopt", "getsockopt", "memfd_create", "unshare",
]
# the child may signal itself only (its pid in arg0)
SELF_ONLY_CHILD = ["kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"]
# calls that act on (or read) another process named by the pid in arg0: the child's own pid or
# 0 (itself) only. Rootless, every other process of the same uid (the engine included) would
# otherwise be in reach: prlimit64 can kill a process by lowering its CPU limit.
SELF_OR_ZERO_CHILD = [
    "prlimit64", "sched_setaffinity", "sched_getaffinity", "sched_setparam", "sched_getparam",
    "sched_setscheduler", "sched_getscheduler", "sched_setattr", "sched_getattr",
    "sched_rr_get_interval", "get_robust_list", "migrate_pages", "move_pages",
]
# (which, who) calls: which must name a single process, who must be the child or 0
WHO_PROCESS_CHILD = {"getpriority": PRIO_PROCESS, "setpriority": PRIO_PROCESS,
                     "ioprio_get": IOPRIO_WHO_PROCESS, "ioprio_set": IOPRIO_WHO_PROCESS}
# ioctls refused on any descriptor: terminal input injection; inode flags and fsxattr
# (immutable/append-only, project ids) of files it may only read
DENY_IOCTL = [0x5412, 0x541C,                     # TIOCSTI, TIOCLINUX
              0x40086602, 0x40046602, 0x401C5820]  # FS_IOC_SETFLAGS (+32-bit), FS_IOC_FSSETXATTR


# allowed at once, before the lists: the calls a running candidate makes most (none of them
# appears in any list below)
FAST_ALLOW = ["read", "write", "futex", "mmap", "munmap", "mprotect", "madvise", "brk",
              "pread64", "pwrite64", "close", "sched_yield"]


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


class _Prog:
    """A tiny classic-BPF assembler: conditional jumps name labels, resolved at the end."""

    def __init__(self):
        self.ins: list[tuple] = []  # (code, jt, jf, k), jt/jf: int offsets or label names
        self.labels: dict[str, int] = {}
        self.n = 0

    def label(self, name: str) -> None:
        self.labels[name] = len(self.ins)

    def fresh(self) -> str:
        self.n += 1
        return f"L{self.n}"

    def add(self, code: int, k: int, jt=0, jf=0) -> None:
        self.ins.append((code, jt, jf, k))

    def ret(self, value: int) -> None:
        self.add(_RET, value)

    def load_arg(self, i: int, high: bool) -> None:
        # struct seccomp_data: nr (4), arch (4), ip (8), args[6] (8 each, little endian)
        self.add(_LD_ABS, 16 + 8 * i + (4 if high else 0))

    def arg_in(self, i: int, values, fail: str) -> None:
        """Fall through iff the 64-bit arg ``i`` is one of ``values`` (all < 2**32); else jump
        to ``fail``. The high word is checked too: the kernel would truncate a pid_t."""
        ok = self.fresh()
        self.load_arg(i, True)
        self.add(_JEQ, 0, jf=fail)
        self.load_arg(i, False)
        values = list(dict.fromkeys(values))
        for j, v in enumerate(values):
            last = j == len(values) - 1
            self.add(_JEQ, v, jt=ok, jf=fail if last else 0)
        self.label(ok)

    def only_if(self, nr: int, conds, deny: int) -> None:
        """For syscall ``nr``: allow iff every (arg index, allowed values) holds, else return
        ``deny``. Other syscalls skip the block with the syscall number still loaded."""
        skip, fail = self.fresh(), self.fresh()
        self.add(_JEQ, nr, jf=skip)
        for i, values in conds:
            self.arg_in(i, values, fail)
        self.ret(RET_ALLOW)
        self.label(fail)
        self.ret(deny)
        self.label(skip)

    def assemble(self) -> bytes:
        out = []
        for pc, (code, jt, jf, k) in enumerate(self.ins):
            offs = []
            for j in (jt, jf):
                if isinstance(j, str):
                    j = self.labels[j] - (pc + 1)
                if not 0 <= j <= 255:
                    raise ValueError("seccomp filter jump out of range")
                offs.append(j)
            out.append(_ins(code, offs[0], offs[1], k))
        return b"".join(out)


def build_filter(child: bool, self_pid: int | None = None) -> bytes:
    """The seccomp program: a deny list (EPERM), argument checks for the calls that name a
    process, and for the warm parent the one unshare() its children need (CHILD_UNSHARE)."""
    eperm = RET_ERRNO | _errno.EPERM
    p = _Prog()
    p.add(_LD_ABS, 4)                              # arch
    p.add(_JEQ, AUDIT_ARCH, jt=1)
    p.ret(RET_KILL_PROCESS)
    p.add(_LD_ABS, 0)                              # nr
    p.add(_JGE, 0x40000000, jf=1)                  # x32 ABI
    p.ret(eperm)
    fast = p.fresh()                               # the hot calls skip the lists below
    for name in FAST_ALLOW[:-1]:
        p.add(_JEQ, NR[name], jt=fast)
    p.add(_JEQ, NR[FAST_ALLOW[-1]], jf=1)
    p.label(fast)
    p.ret(RET_ALLOW)
    deny = list(DENY_ALWAYS) + (list(DENY_CHILD) if child else [])
    for name in deny:
        p.add(_JEQ, NR[name], jf=1)
        p.ret(eperm)
    skip = p.fresh()                               # ioctl(fd, request): deny a few requests
    p.add(_JEQ, NR["ioctl"], jf=skip)
    p.load_arg(1, False)
    for req in DENY_IOCTL:
        p.add(_JEQ, req, jf=1)
        p.ret(eperm)
    p.add(_LD_ABS, 0)                              # reload nr
    p.label(skip)
    if not child:
        p.only_if(NR["unshare"], [(0, [CHILD_UNSHARE])], eperm)
    else:
        assert self_pid is not None
        p.add(_JEQ, NR["clone3"], jf=1)
        p.ret(RET_ERRNO | _errno.ENOSYS)
        skip = p.fresh()                           # clone: threads only
        p.add(_JEQ, NR["clone"], jf=skip)
        p.load_arg(0, False)
        p.add(_JSET, CLONE_THREAD, jf=1)
        p.ret(RET_ALLOW)
        p.ret(eperm)
        p.label(skip)
        for name in SELF_ONLY_CHILD:
            p.only_if(NR[name], [(0, [self_pid])], eperm)
        for name in SELF_OR_ZERO_CHILD:
            p.only_if(NR[name], [(0, [0, self_pid])], eperm)
        for name, which in WHO_PROCESS_CHILD.items():
            p.only_if(NR[name], [(0, [which]), (1, [0, self_pid])], eperm)
    p.ret(RET_ALLOW)
    return p.assemble()


_PID_SLOT = 0x7FFFFFFF  # stands for the child's pid in a template (pids stay below 2**22)


def child_filter_template() -> tuple[bytes, list[int]]:
    """The child's program with its pid left open: (program, byte offsets of the pid slots).
    Assembled once in the warm parent; each child fills in its pid with ``fill_filter``
    instead of assembling ~500 instructions itself."""
    raw = build_filter(True, _PID_SLOT)
    slots = [i + 4 for i in range(0, len(raw), 8) if struct.unpack_from("I", raw, i + 4)[0] == _PID_SLOT]
    return raw, slots


def fill_filter(template: tuple[bytes, list[int]], pid: int) -> bytes:
    raw, slots = template
    prog = bytearray(raw)
    for off in slots:
        struct.pack_into("I", prog, off, pid)
    return bytes(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_available() -> bool:
    if not NR:
        return False
    try:
        with open("/proc/self/status") as f:
            return any(ln.startswith("Seccomp:") for ln in f)
    except OSError:
        return False


def install_seccomp(child: bool, self_pid: int | None = None, raw: bytes | None = None) -> int:
    """Install the deny-list filter (needs no_new_privs). Returns the instruction count.
    ``raw``: the program from ``build_filter``, built ahead of time (off a critical path)."""
    if not NR:
        raise OSError(_errno.ENOSYS, f"seccomp filter not implemented for {MACHINE}")
    if raw is None:
        raw = build_filter(child, self_pid)
    buf = ctypes.create_string_buffer(raw, len(raw))
    prog = _SockFprog(len(raw) // 8, ctypes.cast(buf, ctypes.c_void_p))
    r = _libc.syscall(NR["seccomp"], ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
                      ctypes.c_uint(SECCOMP_FILTER_FLAG_TSYNC), ctypes.byref(prog))
    if r != 0:
        raise _err("seccomp(SET_MODE_FILTER)")
    return len(raw) // 8


# --------------------------------------------------------------------------- probe
def probe() -> dict:
    """Apply every layer to *this* process (call it in a throw-away process) and report."""
    rep: dict = {
        "kernel": platform.release(), "machine": MACHINE, "euid": os.geteuid(),
        "python": sys.version.split()[0],
    }
    try:
        ns = enter_namespaces()
    except OSError as e:
        ns = {"userns": False, "netns": False, "ipcns": False, "error": str(e)}
    rep.update({k: ns.get(k, False) for k in ("userns", "netns", "ipcns")})
    if ns.get("error"):
        rep["namespace_error"] = ns["error"]
    rep["netns"] = bool(rep["netns"] and loopback_isolated())
    try:
        rep["tasks"] = bool(rep["userns"]) and tasks_cap_holds()
    except OSError as e:
        rep["tasks"] = False
        rep["tasks_error"] = str(e)
    try:
        set_rlimit(resource.RLIMIT_CORE, 0)
        set_rlimit(resource.RLIMIT_NOFILE, 256)
        rep["rlimits"] = True
    except (OSError, ValueError):
        rep["rlimits"] = False
    rep["no_new_privs"] = set_no_new_privs()
    have_seccomp = seccomp_available()
    abi = landlock_abi()
    rep["landlock_abi"] = abi
    rep["landlock"] = rep["landlock_net"] = rep["landlock_scope"] = False
    if abi >= 1 and rep["no_new_privs"]:
        try:
            r = landlock_restrict([sys.base_prefix, sys.prefix])
            rep["landlock"] = True
            rep["landlock_net"] = r["net"]
            rep["landlock_scope"] = r["scope"]
        except OSError as e:
            rep["landlock_error"] = str(e)
    rep["seccomp"] = False
    if have_seccomp and rep["no_new_privs"]:
        try:
            install_seccomp(child=True, self_pid=os.getpid())
            # verify: socket() must now fail
            import socket
            try:
                socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
            except OSError:
                rep["seccomp"] = True
        except OSError as e:
            rep["seccomp_error"] = str(e)
    return rep


if __name__ == "__main__":
    print(json.dumps(probe()))
