"""The learner's worker process's guard: a PEP 578 audit hook that refuses (and reports) what a learner's code must
not do while it is graded -- write outside its folder, read other files, signals, new processes, sockets, ctypes, the
program's frames, importing the reference solutions -- and the removal of the signal functions the hook cannot see.
Audit hooks are not a security boundary; see ``sandbox``'s docstring and lessons/TEACHER.md.
"""
from __future__ import annotations

import os
import signal
import site
import sys
import sysconfig
from pathlib import Path
from typing import Callable, Sequence


def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


# Always refused: other processes, signals, the network, raw memory, other hooks, tracing, the object graph.
_REFUSED_EVENTS = {
    "os.kill": "send a signal", "os.killpg": "send a signal", "os.fork": "start a process",
    "os.forkpty": "start a process", "os.exec": "start a program", "os.posix_spawn": "start a program",
    "os.spawn": "start a program", "os.system": "run a shell command", "subprocess.Popen": "start a program",
    "pty.spawn": "start a program", "os.startfile": "start a program",
    "socket.bind": "use the network", "socket.connect": "use the network", "socket.getaddrinfo": "use the network",
    "socket.sendto": "use the network", "socket.sendmsg": "use the network",
    "ctypes.dlopen": "use ctypes", "ctypes.dlsym": "use ctypes", "ctypes.dlsym/handle": "use ctypes",
    "ctypes.cdata": "use ctypes", "ctypes.cdata/buffer": "use ctypes", "ctypes.call_function": "use ctypes",
    "ctypes.string_at": "use ctypes", "ctypes.wstring_at": "use ctypes", "ctypes.addressof": "use ctypes",
    "sys.addaudithook": "add an audit hook", "sys.settrace": "trace the program", "sys.setprofile": "trace the program",
    "sys._current_frames": "read other frames", "gc.get_objects": "list the program's objects",
    "gc.get_referrers": "list the program's objects", "gc.get_referents": "list the program's objects",
    "resource.setrlimit": "change resource limits", "resource.prlimit": "change resource limits",
    "os.setuid": "change user", "os.setgid": "change user", "os.chroot": "change the root folder",
}
# Refused outside the worker's folder: operations that change files (the first argument, and a second for renames).
_PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.truncate", "os.chmod",
                "os.chown", "os.chflags", "os.utime", "os.setxattr", "os.removexattr", "os.mkfifo", "os.mknod",
                "shutil.rmtree", "shutil.copyfile", "shutil.copymode", "shutil.copystat", "shutil.copytree",
                "shutil.move", "shutil.chown", "shutil.make_archive", "shutil.unpack_archive", "os.chdir"}
_LISTING_EVENTS = {"os.listdir", "os.scandir", "glob.glob", "glob.glob/2"}
_FRAME_ATTRIBUTES = {"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"}
_DENIED_MODULES = {"lessons", "solutions", "ctypes", "_ctypes", "_posixsubprocess", "_testcapi", "_xxsubinterpreters"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _library_roots() -> list[str]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *site.getsitepackages()}
    paths.update(sysconfig.get_paths().get(key, "") for key in ("stdlib", "platstdlib", "purelib", "platlib"))
    return sorted(os.path.realpath(p) for p in paths if p)


def install_guard(folder: Path, deny: Sequence[Path]) -> tuple[Callable[[bool], None], Callable[[], list[str]]]:
    """Add the audit hook; return ``calling(on)`` (a learner's function is running: frames and varlite's source
    files are refused too) and ``refusals()`` (what was refused since the last call, emptied). Both are closures
    kept by the worker's own frames, which the learner's code cannot reach."""
    here = os.path.realpath(folder)
    varlite_dir = os.path.realpath(Path(__file__).parents[1])
    library = _library_roots()
    readable = library + [varlite_dir, here, "/proc", "/sys", "/dev/null", "/dev/urandom", "/dev/random",
                          "/dev/shm"]
    unreadable = [os.path.realpath(p) for p in deny] + [os.path.join(varlite_dir, "reference")]
    own = str(os.getpid())
    state = {"calling": False}
    refused: list[str] = []

    def refuse(what: str):
        refused.append(what)
        raise PermissionError(f"the grading sandbox refuses to {what}")

    def real(path) -> str | None:
        if isinstance(path, int) or path is None:
            return None
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        return os.path.realpath(os.path.join(os.getcwd(), os.fspath(path)))

    def may_read(path: str) -> bool:
        """Inside a readable root, not a denied one, and not another process's /proc entry."""
        if path.startswith("/proc/") and path.split("/")[2].isdigit() and path.split("/")[2] != own:
            return False
        return _inside(path, readable) and not _inside(path, unreadable)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = real(args[0]), args[1], args[2] or 0
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool(flags & _WRITE_FLAGS)
            if writes and path is not None and path != os.devnull and not _inside(path, [here]):
                refuse(f"write to {path} (outside its own folder)")
            if path is not None and not may_read(path):
                refuse(f"read {path}")
            if path is not None and state["calling"] and _inside(path, [varlite_dir]):
                # refused, not reported: a warning raised in varlite's code reads its source line this way too
                raise PermissionError("the grading sandbox refuses to read varlite's files while a check runs")
        elif event in _REFUSED_EVENTS:
            refuse(_REFUSED_EVENTS[event])
        elif event in _PATH_EVENTS:
            for path in [real(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]:
                if not _inside(path, [here]):
                    refuse(f"change {path} (outside its own folder)")
        elif event in _LISTING_EVENTS:         # refused, not reported: the import system lists folders on its own
            path = real(args[0]) if args and isinstance(args[0], (str, bytes, os.PathLike)) else here
            if not may_read(path):
                raise PermissionError(f"the grading sandbox refuses to list {path}")
        elif event == "import" and str(args[0]).split(".")[0] in _DENIED_MODULES:
            refuse(f"import {args[0]}")
        elif state["calling"]:
            if event == "sys._getframe":
                refuse("read the program's frames (sys._getframe)")
            elif event == "object.__getattr__" and args[1] in _FRAME_ATTRIBUTES:
                refuse(f"read the program's frames ({args[1]})")

    def calling(on: bool) -> None:
        state["calling"] = on

    def refusals() -> list[str]:
        out = list(refused)
        refused.clear()
        return out

    sys.addaudithook(hook)
    return calling, refusals


def remove_unaudited_signals() -> None:
    """Signals and processes that no audit event covers: pidfd (os.pidfd_open, signal.pidfd_send_signal) and
    thread signals."""
    import _signal
    import posix
    for module, names in ((os, ("pidfd_open",)), (posix, ("pidfd_open",)),
                          (signal, ("pidfd_send_signal", "pthread_kill")),
                          (_signal, ("pidfd_send_signal", "pthread_kill"))):
        for name in names:
            module.__dict__.pop(name, None)


def snapshot() -> list[tuple[str, dict, dict]]:
    """The checker as it is: (name, mapping, copy) for the globals of every ``varlite.exercises`` module and every
    dict among them (``EXERCISES``), to notice a learner changing them."""
    out = []
    for name, module in list(sys.modules.items()):
        if name.startswith("varlite.exercises") and module is not None:
            namespace = vars(module)
            out.append((name, namespace, dict(namespace)))
            out.extend((f"{name}.{key}", value, dict(value)) for key, value in namespace.items()
                       if isinstance(value, dict) and key != "__builtins__")
    return out


def changed_since(snapshot: list[tuple[str, dict, dict]]) -> str | None:
    """The first checker global that differs from the snapshot (all restored), or None."""
    first = None
    for name, mapping, saved in snapshot:
        key = next((k for k in set(saved) | set(mapping) if mapping.get(k) is not saved.get(k)), None)
        if key is not None:
            first = first or f"{name}.{key}"
            mapping.clear()
            mapping.update(saved)
    return first
