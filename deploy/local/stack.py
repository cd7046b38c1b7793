"""The local stack: Kafka (KRaft), Cassandra and Redis, real and self-installed.

python -m deploy.local.stack fetch                 jars and redis-server
python -m deploy.local.stack up [component...]     start and wait until ready
python -m deploy.local.stack down [component...]   stop what `up` started (by pid)
python -m deploy.local.stack kill COMPONENT        SIGKILL, as a crash would
python -m deploy.local.stack status
python -m deploy.local.stack env                   export lines for the services
python -m deploy.local.stack reset                 down, then delete the data
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from deploy.local import processes
from deploy.local.components import COMPONENTS, Component
from deploy.local.fetch import FetchFailed
from deploy.local.layout import REPO, Layout
from deploy.local.processes import ProcessFiles, StartFailed

# Started in this order, stopped in reverse: nothing here depends on another,
# but stopping the slowest last keeps the others' logs tidy.
ORDER = ("redis", "kafka", "cassandra")


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    port: int
    log_file: str


class Stack:
    def __init__(self, layout: Layout, components: Mapping[str, Component] | None = None):
        self.layout = layout
        self.components = dict(components or COMPONENTS)
        self.order = [n for n in ORDER if n in self.components] or list(self.components)

    def files(self, name: str) -> ProcessFiles:
        return ProcessFiles.under(self.layout.run_dir, name)

    def fetch(self, names: Sequence[str]) -> None:
        for name in names:
            self.components[name].fetch(self.layout)

    def up(self, names: Sequence[str]) -> dict[str, str]:
        """Starts the components that are not running, all at once, then
        waits for each to answer a real request. Returns a line per component."""
        self.fetch(names)
        report: dict[str, str] = {}
        waiting: list[Component] = []
        to_start: list[Component] = []
        for name in names:
            component = self.components[name]
            files = self.files(name)
            pid = processes.running_pid(files)
            if pid is not None and component.ready(self.layout):
                report[name] = f"already running (pid {pid})"
                continue
            if pid is None and processes.running_pid(files) is None and _port_taken(component, self.layout):
                raise StartFailed(
                    f"{name}: port {component.port(self.layout)} is in use by a process this stack did not start"
                )
            if pid is None:
                to_start.append(component)
            waiting.append(component)
        began = time.monotonic()
        # Prepared side by side: a Kafka node's prepare formats its storage
        # with a JVM of its own, and three of those one after another took
        # minutes on a busy 2-core machine. The first node of each kind goes
        # in a round before the others, as it makes what the nodes of a
        # cluster share (Kafka's cluster id, its CA and passwords).
        # All start once all are prepared: a Kafka node started while the
        # others were still formatting gave up waiting for its controller
        # quorum and exited.
        first_of_kind = list({type(c): c for c in reversed(to_start)}.values())
        rest = [c for c in to_start if c not in first_of_kind]
        argvs: dict[str, list[str]] = {}
        for round_ in (first_of_kind, rest):
            with ThreadPoolExecutor(max_workers=max(1, len(round_))) as pool:
                prepared = list(pool.map(lambda c: c.prepare(self.layout), round_))
            argvs.update(zip([c.name for c in round_], prepared, strict=True))
        for component in to_start:
            processes.start(self.files(component.name), argvs[component.name], os.environ, REPO)
        with ThreadPoolExecutor(max_workers=max(1, len(waiting))) as pool:
            waits = {
                c.name: pool.submit(
                    processes.wait_ready, self.files(c.name), partial(c.ready, self.layout), c.start_timeout
                )
                for c in waiting
            }
            errors = []
            for name, future in waits.items():
                try:
                    future.result()
                    report[name] = f"ready after {time.monotonic() - began:.1f} s (pid {self._pid(name)})"
                except StartFailed as error:
                    errors.append(str(error))
        if errors:
            raise StartFailed("\n\n".join(errors))
        return report

    def _pid(self, name: str) -> int | None:
        return processes.running_pid(self.files(name))

    def down(self, names: Sequence[str]) -> dict[str, str]:
        report = {}
        for name in reversed([n for n in self.order if n in names]):
            stopped = processes.stop(self.files(name), self.components[name].stop_timeout)
            report[name] = "stopped" if stopped else "was not running"
        return report

    def kill(self, name: str) -> bool:
        return processes.kill(self.files(name))

    def status(self) -> list[ComponentStatus]:
        return [
            ComponentStatus(
                name,
                processes.running_pid(self.files(name)),
                self.components[name].port(self.layout),
                str(self.files(name).log_file),
            )
            for name in self.order
        ]

    def reset(self) -> None:
        self.down(self.order)
        shutil.rmtree(self.layout.run_dir / "data", ignore_errors=True)


def _port_taken(component: Component, layout: Layout) -> bool:
    from deploy.local.components import port_open

    return port_open(component.port(layout))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local.stack", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("command", choices=["fetch", "up", "down", "kill", "status", "env", "reset"])
    parser.add_argument("components", nargs="*", metavar="component", help=", ".join(ORDER))
    options = parser.parse_args(argv)
    unknown = set(options.components) - set(ORDER)
    if unknown:
        parser.error(f"unknown component(s): {', '.join(sorted(unknown))}; choose from {', '.join(ORDER)}")
    names = [n for n in ORDER if n in options.components] or list(ORDER)
    stack = Stack(Layout.from_environment())
    try:
        if options.command == "fetch":
            stack.fetch(names)
            print("jars and redis-server present")
        elif options.command == "up":
            for name, line in stack.up(names).items():
                print(f"{name:10} {line}")
        elif options.command == "down":
            for name, line in stack.down(names).items():
                print(f"{name:10} {line}")
        elif options.command == "kill":
            if len(options.components) != 1:
                parser.error("kill takes exactly one component")
            print("killed" if stack.kill(names[0]) else "was not running")
        elif options.command == "status":
            for item in stack.status():
                state = f"running (pid {item.pid})" if item.pid else "stopped"
                print(f"{item.name:10} {state:22} port {item.port:<6} log {item.log_file}")
        elif options.command == "env":
            for key, value in stack.layout.service_env().items():
                print(f"export {key}={value}")
        elif options.command == "reset":
            stack.reset()
            print(f"stopped, and deleted {stack.layout.run_dir / 'data'}")
    except (StartFailed, FetchFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
