"""A Debian bookworm machine booted with systemd as PID 1 in systemd-nspawn, for the e2e tests.

systemd is not PID 1 on the test host, but it boots in well under a second inside nspawn, and units
in it can load BPF programs (recipe and the reason for every flag: shared/SYSTEMD.md). The root
file system comes from debootstrap once per workspace (cached under build/e2e, keyed by the
package list) and is booted with --volatile=overlay, so every boot starts from the pristine tree
and nothing a test installs leaks into the next module's machine.

Commands run inside with nsenter. They keep the host's capabilities and escape the unit's
sandbox: what the *agent* may do is only ever checked through the unit itself.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

# What the agent's package depends on, plus what the tests drive inside: curl (the client),
# python3's http.server (the server), systemd-analyze (part of systemd), rpm (the .rpm's scriptlets
# run against this systemd too).
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "procps", "python3", "python3-venv", "python3-bpfcc", "curl", "rpm",
)
# Packages the host already downloaded (install-deps) are reused from its apt cache.
APT_CACHE = Path("/var/cache/apt/archives")
SUITE = "bookworm"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def debian_mirror(sources_dir: Path = Path("/etc/apt/sources.list.d"), suite: str = SUITE) -> str:
    """The host's own Debian mirror (deb822 .sources files): the only one reachable from here."""
    for path in sorted(sources_dir.glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                (m.group(1).lower(), m.group(2).strip())
                for m in re.finditer(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.M)
            )
            if suite in fields.get("suites", "").split() and "uris" in fields:
                return fields["uris"].split()[0]
    for path in [Path("/etc/apt/sources.list"), *sorted(sources_dir.glob("*.list"))]:
        if path.exists():
            m = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{suite}\s", path.read_text(), re.M)
            if m:
                return m.group(1)
    raise RuntimeError(f"no apt source for {suite} in {sources_dir}")


def ensure_rootfs(cache: Path) -> Path:
    """A bookworm minbase tree with PACKAGES, made once (mmdebstrap when installed, else
    debootstrap); later calls return the cached one.

    Built in a temporary directory and renamed when complete, so an interrupted run never leaves
    a half-made tree that a later run would trust.
    """
    key = hashlib.sha256(" ".join((SUITE, *PACKAGES)).encode()).hexdigest()[:12]
    root = cache / f"rootfs-{SUITE}-{key}"
    if (root / "etc" / "os-release").exists():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f"{root.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    mirror = debian_mirror()
    if shutil.which("mmdebstrap"):
        # mmdebstrap (apt-based, unsafe-io) takes about half debootstrap's time here.
        cmd = ["mmdebstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
               "--dpkgopt=force-unsafe-io", SUITE, str(tmp), mirror]
    else:
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
               *([f"--cache-dir={APT_CACHE}"] if APT_CACHE.is_dir() else []), SUITE, str(tmp), mirror]
    with open(cache / "rootfs.log", "w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=900)
    # An empty machine-id: systemd makes a fresh one at every boot (the overlay forgets it).
    (tmp / "etc" / "machine-id").write_text("")
    tmp.rename(root)
    return root


def ensure_host_tracefs(path: Path = Path("/sys/kernel/tracing")) -> None:
    """bcc in the container reads tracepoint formats from the host's tracefs, bound in."""
    if not (path / "events").is_dir():
        subprocess.run(["mount", "-t", "tracefs", "tracefs", str(path)], check=True)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class CommandFailed(AssertionError):
    pass


class Container:
    """One booted machine. ``boot()`` waits for the machine's systemd to be up; ``poweroff()``
    shuts it down cleanly, and kills the nspawn process by its PID if it does not end in time."""

    def __init__(self, rootfs: Path, binds: Sequence[tuple[str, str, bool]], log_path: Path) -> None:
        self.rootfs = rootfs
        self.binds = binds  # (host path, container path, read-only)
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.leader = 0  # the container's PID 1 (systemd), as seen from the host

    def boot(self, timeout: float = 60.0) -> Container:
        cmd = [
            "systemd-nspawn", "--register=no", "--keep-unit", "-q", "-D", str(self.rootfs), "-b",
            "--volatile=overlay", "--console=read-only",
            "--capability=CAP_SYSLOG,CAP_BPF,CAP_PERFMON",
            "--system-call-filter=bpf perf_event_open",
        ]
        for host, inside, ro in self.binds:
            cmd.append(f"--bind{'-ro' if ro else ''}={host}:{inside}")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        wait_for(lambda: self._find_leader() != 0, timeout, "the container's systemd to start",
                 on_fail=self.console)

        # Right after PID 1 appears, systemctl may not reach it yet (empty answer): ask again.
        def booted() -> str:
            state = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=timeout)
            return state.stdout.strip() if state.stdout.strip() in ("running", "degraded") else ""

        wait_for(booted, timeout, "the container to finish booting", on_fail=self.console)
        return self

    def _find_leader(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise CommandFailed(f"systemd-nspawn exited with {self.proc.returncode}:\n{self.console()}")
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except FileNotFoundError:
            return 0
        for child in children:
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    self.leader = int(child)
                    return self.leader
            except FileNotFoundError:
                continue
        return 0

    def console(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def run(
        self,
        argv: Union[Sequence[str], str],
        check: bool = True,
        timeout: float = 120.0,
        user: Optional[str] = None,
        input: Optional[str] = None,
    ) -> Result:
        """Run a command inside the machine (all its namespaces) with a clean environment.

        ``user``: run as that user with its groups (runuser), without any capability.
        A string is run with /bin/sh -c.
        """
        args = ["/bin/sh", "-c", argv] if isinstance(argv, str) else list(argv)
        if user is not None:
            args = ["runuser", "-u", user, "--", *args]
        cmd = ["nsenter", "-t", str(self.leader), "-a", "--", "env", "-i", f"PATH={PATH}", "LANG=C.UTF-8", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input, check=False)
        res = Result(done.returncode, done.stdout, done.stderr)
        if check and res.returncode != 0:
            raise CommandFailed(f"{args!r} exited {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}")
        return res

    def write(self, path: str, text: str) -> None:
        self.run(["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", path], input=text)

    def poweroff(self, timeout: float = 30.0) -> None:
        """SIGTERM to nspawn asks the machine's systemd for an orderly poweroff."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2,
    on_fail: Optional[Callable[[], str]] = None,
) -> object:
    """Poll until ``predicate()`` is truthy; fail naming ``what`` (and extra context) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{on_fail()}" if on_fail else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)
