"""The name a program goes by, when its executable is an interpreter or a multi-call binary.

``python3 manage.py runserver`` is the ``manage.py`` service, not ``python3``; gunicorn started
as ``/venv/bin/gunicorn`` runs as ``/usr/bin/python3.11 /venv/bin/gunicorn app:app`` and is
``gunicorn``; ``java -jar orders.jar`` is ``orders``; busybox applets go by argv[0].

Pure functions over (executable path, argv); the runtime of a native binary (Go) needs a look at
the file and lives in ``go_binary``.
"""

from __future__ import annotations

import os
import re
import struct
from typing import Optional

_PYTHON = re.compile(r"^(?:python|pypy)[0-9.]*[dmu]?$")
_RUNTIME_BY_KIND = {
    "python": "cpython",  # sys.implementation.name, as the Python SDK reports it
    "pypy": "pypy",
    "java": "java",
    "node": "nodejs",  # what the Node.js SDK reports
    "ruby": "ruby",
    "perl": "perl",
    "php": "php",
}
_MULTICALL = frozenset({"busybox", "toybox"})
# A name as typed on a command line: no path, no spaces, no "postgres: checkpointer" rewrite.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
COMM_LEN = 15  # the kernel keeps the first 15 bytes of the name execve() was given (TASK_COMM_LEN)

# Options that consume the next argument, per interpreter (the script is the first argument
# that is neither an option nor an option's value).
_PY_ARG_OPTS = frozenset({"-W", "-X", "-Q", "--check-hash-based-pycs"})
_JAVA_ARG_OPTS = frozenset(
    {"-cp", "-classpath", "--class-path", "-p", "--module-path", "--upgrade-module-path",
     "--add-modules", "--add-opens", "--add-exports", "--add-reads", "--patch-module",
     "--limit-modules", "--enable-native-access"}
)
_NODE_ARG_OPTS = frozenset({"-r", "--require", "--import", "--loader", "--experimental-loader",
                            "--env-file", "--inspect-port", "--title", "--conditions", "-C"})
_RUBY_ARG_OPTS = frozenset({"-I", "-r", "-C", "-E", "-F", "-T", "-x"})
_PERL_ARG_OPTS = frozenset({"-I", "-M", "-m", "-x"})
_PHP_ARG_OPTS = frozenset({"-c", "-d", "-z", "-t"})


def interpreter_kind(exe_name: str) -> Optional[str]:
    """"python" | "pypy" | "java" | "node" | "ruby" | "perl" | "php" | None."""
    if _PYTHON.match(exe_name):
        return "pypy" if exe_name.startswith("pypy") else "python"
    base = re.sub(r"[0-9.]+$", "", exe_name)  # ruby3.1, perl5.36.0, php8.2
    if base in ("java", "node", "nodejs", "ruby", "perl", "php"):
        return "node" if base == "nodejs" else base
    return None


def runtime_name(exe_name: str) -> Optional[str]:
    kind = interpreter_kind(exe_name)
    return _RUNTIME_BY_KIND.get(kind) if kind else None


def _first_operand(args: tuple[str, ...], arg_opts: frozenset[str]) -> Optional[str]:
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--":
            continue
        if arg.startswith("-"):
            skip = arg in arg_opts
            continue
        return arg
    return None


def _python_name(args: tuple[str, ...]) -> Optional[str]:
    skip = False
    for index, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == "-m":
            return args[index + 1] if index + 1 < len(args) else None
        if arg.startswith("-m") and not arg.startswith("--"):
            return arg[2:]
        if arg == "-c" or (arg.startswith("-c") and not arg.startswith("--")):
            return None  # inline code: nothing better than the interpreter
        if arg == "-":
            return None
        if arg.startswith("-"):
            skip = arg in _PY_ARG_OPTS
            continue
        return os.path.basename(arg)
    return None


def _java_name(args: tuple[str, ...]) -> Optional[str]:
    for index, arg in enumerate(args):
        if arg == "-jar" and index + 1 < len(args):
            jar = os.path.basename(args[index + 1])
            return jar[:-4] if jar.endswith(".jar") else jar
        if arg in ("-m", "--module") and index + 1 < len(args):
            return args[index + 1].split("/")[-1]  # module/main.Class -> main.Class
    return _first_operand(args, _JAVA_ARG_OPTS)  # the main class, as `jps -l` shows it


def _script_name(args: tuple[str, ...], arg_opts: frozenset[str], inline: tuple[str, ...]) -> Optional[str]:
    if any(arg in inline for arg in args):
        return None
    script = _first_operand(args, arg_opts)
    return os.path.basename(script) if script else None


def program_name(exe: str, cmdline: tuple[str, ...], comm: str = "") -> str:
    """The executable name identity falls back to (precedence rule 6)."""
    exe_name = os.path.basename(exe) if exe else ""
    argv0 = os.path.basename(cmdline[0]) if cmdline else ""
    if not exe_name:
        exe_name = argv0 or comm
    if exe_name in _MULTICALL and argv0 and argv0 not in _MULTICALL:
        return argv0
    kind = interpreter_kind(exe_name)
    if kind is None and cmdline:
        called = _called_as(cmdline[0])
        if _started_through_link(exe_name, called, comm):
            return called
    args = cmdline[1:]
    name: Optional[str] = None
    if kind in ("python", "pypy"):
        name = _python_name(args)
    elif kind == "java":
        name = _java_name(args)
    elif kind == "node":
        name = _script_name(args, _NODE_ARG_OPTS, ("-e", "--eval", "-p", "--print"))
    elif kind == "ruby":
        name = _script_name(args, _RUBY_ARG_OPTS, ("-e",))
    elif kind == "perl":
        name = _script_name(args, _PERL_ARG_OPTS, ("-e", "-E"))
    elif kind == "php":
        name = _script_name(args, _PHP_ARG_OPTS, ("-r", "-S"))
    return name or exe_name or comm


def _called_as(argv0: str) -> str:
    """The program name in argv[0], also after a process retitled itself: redis writes
    ``redis-server 127.0.0.1:6379`` there, nginx ``nginx: worker process``."""
    return os.path.basename(argv0.split(" ", 1)[0]).rstrip(":")


def _started_through_link(exe_name: str, called: str, comm: str) -> bool:
    """Started as ``called``, a link to ``exe_name``: Debian's ``redis-server`` is a link to
    ``redis-check-rdb`` (one binary that acts on the name it was called by), ``mysql`` one to
    ``mariadb``. /proc/PID/exe names the link's target, but the kernel names the task (comm)
    after the path execve() was given, as argv[0] usually does: when both say the same other
    name, that is the name the program was started by, and goes by (ps, systemd, the logs)."""
    return (bool(called) and bool(comm) and called != exe_name and comm == called[:COMM_LEN]
            and comm != exe_name[:COMM_LEN] and _PLAIN_NAME.match(called) is not None)


# --- Go binaries -------------------------------------------------------------------------------
_GO_SECTIONS = (b".go.buildinfo", b".note.go.buildid", b".gopclntab")


def go_binary(path: str) -> bool:
    """True when the ELF file at ``path`` has a Go section. Reads the ELF and section headers
    only (a few KiB, never the whole binary). Any error -> False."""
    try:
        with open(path, "rb") as handle:
            ident = handle.read(64)
            if len(ident) < 64 or ident[:4] != b"\x7fELF" or ident[4] != 2:  # ELF64 only
                return False
            endian = "<" if ident[5] == 1 else ">"
            shoff = struct.unpack_from(endian + "Q", ident, 0x28)[0]
            shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", ident, 0x3A)
            if not shoff or shentsize < 64 or shnum == 0 or shnum > 4096 or shstrndx >= shnum:
                return False
            handle.seek(shoff)
            table = handle.read(shentsize * shnum)
            str_off, str_size = struct.unpack_from(endian + "QQ", table, shstrndx * shentsize + 0x18)
            if str_size > 1 << 20:
                return False
            handle.seek(str_off)
            names = handle.read(str_size)
    except (OSError, struct.error, ValueError):
        return False
    return any(b"\0" + section + b"\0" in b"\0" + names for section in _GO_SECTIONS)
