"""Background processes with a pid file and a log file each.

A pid file holds the pid and the process's start time (from /proc), so a
stale file whose pid was reused by an unrelated process is recognised and
never signalled. Processes start in their own session, so stopping one
signals its whole process group and nothing else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class StartFailed(Exception):
    """A component did not become ready; the message names it and its log."""


@dataclass(frozen=True)
class ProcessFiles:
    name: str
    pid_file: Path
    log_file: Path

    @classmethod
    def under(cls, run_dir: Path, name: str) -> ProcessFiles:
        return cls(name, run_dir / "pids" / f"{name}.pid", run_dir / "logs" / f"{name}.log")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after it are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def running_pid(files: ProcessFiles) -> int | None:
    """The pid of the process this file describes, if it is still that process."""
    try:
        pid_text, started = files.pid_file.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if _start_time(pid) == started else None


def start(files: ProcessFiles, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> int:
    files.pid_file.parent.mkdir(parents=True, exist_ok=True)
    files.log_file.parent.mkdir(parents=True, exist_ok=True)
    with files.log_file.open("ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {files.name}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = _start_time(process.pid) or ""
    files.pid_file.write_text(f"{process.pid} {started}\n")
    return process.pid


def _wait_gone(pid: int, started: str | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if _start_time(pid) != started or started is None:
            return True
        time.sleep(0.1)
    return False


def _reap(pid: int) -> None:
    # Only our own children can be reaped; for others this is a no-op.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return


def stop(files: ProcessFiles, timeout: float) -> bool:
    """SIGTERM to the process group, SIGKILL after timeout. False when it
    was not running."""
    pid = running_pid(files)
    if pid is None:
        files.pid_file.unlink(missing_ok=True)
        return False
    started = _start_time(pid)
    _signal_group(pid, signal.SIGTERM)
    if not _wait_gone(pid, started, timeout):
        _signal_group(pid, signal.SIGKILL)
        _wait_gone(pid, started, 10)
    files.pid_file.unlink(missing_ok=True)
    return True


def kill(files: ProcessFiles) -> bool:
    """SIGKILL, as a crash would."""
    pid = running_pid(files)
    if pid is None:
        return False
    started = _start_time(pid)
    _signal_group(pid, signal.SIGKILL)
    _wait_gone(pid, started, 10)
    files.pid_file.unlink(missing_ok=True)
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return


def log_tail(files: ProcessFiles, lines: int = 20) -> str:
    """The last lines of a process's log, for an error message."""
    try:
        text = files.log_file.read_text(errors="replace")
    except OSError:
        return "(no log yet)"
    # Some servers log a whole classpath or version list on one line: cut
    # those, so the error message stays readable.
    return "\n".join(line[:400] for line in text.splitlines()[-lines:])


def wait_ready(files: ProcessFiles, probe: Callable[[], bool], timeout: float) -> float:
    """Polls probe (which must return False, not raise, while the process is
    not ready) until it is true; returns the seconds waited. Fails at once,
    naming the process, its log and the log's last lines, when it dies."""
    began = time.monotonic()
    while True:
        if running_pid(files) is None:
            raise StartFailed(
                f"{files.name} exited during start-up; see {files.log_file}. Last lines:\n{log_tail(files)}"
            )
        if probe():
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise StartFailed(
                f"{files.name} was not ready after {timeout:g} s; see {files.log_file}. Last lines:\n{log_tail(files)}"
            )
        time.sleep(0.5)
