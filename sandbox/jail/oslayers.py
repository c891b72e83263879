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
        read=0, write=1, ioctl=16, socket=41, connect=42, accept=43, sendto=44, recvfrom=45,
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
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000


def _err(what: str) -> OSError:
    e = ctypes.get_errno()
    return OSError(e, f"{what}: {os.strerror(e)}")


# --------------------------------------------------------------------------- namespaces
def enter_namespaces() -> dict:
    """unshare(user+net+ipc) and map our own uid/gid; drop every capability afterwards.

    Works rootless where unprivileged user namespaces are allowed; as root it removes all
    capabilities in the initial namespace (they only exist inside the new user namespace,
    and are then dropped too)."""
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
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "personality", "open_by_handle_at", "name_to_handle_at",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "acct", "settimeofday", "clock_settime", "adjtimex",
    "sethostname", "setdomainname", "iopl", "ioperm", "quotactl", "lookup_dcookie",
    "vhangup", "syslog", "mknod", "mknodat", "pidfd_getfd", "memfd_secret",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
    "setfsuid", "setfsgid", "capset",
]
# additionally denied to a candidate child
DENY_CHILD = [
    "socketpair", "fork", "vfork", "tkill", "pidfd_open", "pidfd_send_signal", "setsid", "setpgid",
    "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown",
    "getsockname", "getpeername", "setsockopt", "getsockopt", "memfd_create",
]
SELF_ONLY_CHILD = ["kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"]


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def build_filter(child: bool, self_pid: int | None = None) -> bytes:
    eperm = RET_ERRNO | _errno.EPERM
    prog = [
        _ins(_LD_ABS, 0, 0, 4),                    # arch
        _ins(_JEQ, 1, 0, AUDIT_ARCH),
        _ins(_RET, 0, 0, RET_KILL_PROCESS),
        _ins(_LD_ABS, 0, 0, 0),                    # nr
        _ins(_JGE, 0, 1, 0x40000000),              # x32 ABI
        _ins(_RET, 0, 0, eperm),
    ]
    deny = list(DENY_ALWAYS) + (list(DENY_CHILD) if child else [])
    for name in deny:
        prog += [_ins(_JEQ, 0, 1, NR[name]), _ins(_RET, 0, 0, eperm)]
    # ioctl(fd, TIOCSTI / TIOCLINUX)
    prog += [
        _ins(_JEQ, 0, 4, NR["ioctl"]),
        _ins(_LD_ABS, 0, 0, 24),                   # arg1 low word
        _ins(_JEQ, 1, 0, 0x5412),
        _ins(_JEQ, 0, 1, 0x541C),
        _ins(_RET, 0, 0, eperm),
        _ins(_LD_ABS, 0, 0, 0),                    # reload nr
    ]
    if child:
        assert self_pid is not None
        prog += [_ins(_JEQ, 0, 1, NR["clone3"]), _ins(_RET, 0, 0, RET_ERRNO | _errno.ENOSYS)]
        prog += [
            _ins(_JEQ, 0, 4, NR["clone"]),
            _ins(_LD_ABS, 0, 0, 16),
            _ins(_JSET, 0, 1, CLONE_THREAD),
            _ins(_RET, 0, 0, RET_ALLOW),
            _ins(_RET, 0, 0, eperm),
        ]
        for name in SELF_ONLY_CHILD:
            prog += [
                _ins(_JEQ, 0, 6, NR[name]),
                _ins(_LD_ABS, 0, 0, 20),           # arg0 high word
                _ins(_JEQ, 0, 3, 0),
                _ins(_LD_ABS, 0, 0, 16),           # arg0 low word
                _ins(_JEQ, 0, 1, self_pid),
                _ins(_RET, 0, 0, RET_ALLOW),
                _ins(_RET, 0, 0, eperm),
            ]
    prog.append(_ins(_RET, 0, 0, RET_ALLOW))
    return b"".join(prog)


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


def install_seccomp(child: bool, self_pid: int | None = None) -> int:
    """Install the deny-list filter (needs no_new_privs). Returns the instruction count."""
    if not NR:
        raise OSError(_errno.ENOSYS, f"seccomp filter not implemented for {MACHINE}")
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
