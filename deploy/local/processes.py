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
    return tail(files.log_file, lines)


def tail(log: Path, lines: int = 20) -> str:
    """The last lines of a log, for an error message."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log yet)"
    # Some servers log a whole classpath or version list on one line: cut
    # those, so the error message stays readable.
    return "\n".join(line[:400] for line in text.splitlines()[-lines:])


def wait_ready(files: ProcessFiles, probe: Callable[[], bool], timeout: float) -> float:
    """Polls probe until it is true; returns the seconds waited. Fails fast,
    with the log's tail, when the process dies."""
    return wait_until(files.name, probe, timeout, files.log_file, pid_file=files.pid_file)


# The helpers below are the name-based API for anything run as a managed
# process: the stack's servers and the project's own services alike.


def start_process(
    name: str, argv: Sequence[str], env: Mapping[str, str], run_dir: Path, cwd: Path | None = None
) -> int:
    """Starts argv detached, logging to <run_dir>/logs/<name>.log, and records
    its pid in <run_dir>/pids/<name>.pid. Returns the pid."""
    return start(ProcessFiles.under(run_dir, name), argv, env, cwd or Path.cwd())


def process_pid(name: str, run_dir: Path) -> int | None:
    """The pid of the named process if it is running (and is still the
    process its pid file recorded)."""
    return running_pid(ProcessFiles.under(run_dir, name))


def stop_process(name: str, run_dir: Path, timeout: float) -> bool:
    """SIGTERM to the named process's group, SIGKILL after timeout seconds;
    removes the pid file. False when it was not running."""
    return stop(ProcessFiles.under(run_dir, name), timeout)


def kill_process(name: str, run_dir: Path) -> bool:
    """SIGKILL to the named process's group, as a crash would."""
    return kill(ProcessFiles.under(run_dir, name))


def wait_until(
    name: str, probe: Callable[[], bool], timeout: float, log: Path, *, pid_file: Path | None = None
) -> float:
    """Polls probe (which must return False, not raise, while the process
    is not ready) until it is true; returns the seconds waited. With a
    pid_file, fails at once when that process has died. Failures raise
    StartFailed naming the process and its log, with the log's last lines."""
    watched = None if pid_file is None else ProcessFiles(name, pid_file, log)
    began = time.monotonic()
    while True:
        if watched is not None and running_pid(watched) is None:
            raise StartFailed(f"{name} exited during start-up; see {log}. Last lines:\n{tail(log)}")
        if probe():
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise StartFailed(f"{name} was not ready after {timeout:g} s; see {log}. Last lines:\n{tail(log)}")
        time.sleep(0.5)
