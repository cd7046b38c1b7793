"""The dev SMTP sink: every accepted message becomes <mail-dir>/<n>.eml,
with the envelope recipients in an X-Delivered-To header."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from servicekit.lifecycle import wait_for_termination_signal


class MailDirectory:
    """An aiosmtpd handler that writes each message atomically to a file."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        header = "".join(f"X-Delivered-To: {to}\r\n" for to in envelope.rcpt_tos).encode()
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
        partial = self.directory / f".{name}.partial"
        partial.write_bytes(header + content)
        # A reader never sees half a message.
        os.replace(partial, self.directory / name)
        return "250 Message accepted for delivery"


async def serve(host: str, port: int, directory: Path) -> None:
    loop = asyncio.get_running_loop()
    handler = MailDirectory(directory)

    def protocol() -> Any:
        return SMTP(handler, hostname="devsmtp.localhost")

    server = await loop.create_server(protocol, host, port)
    await wait_for_termination_signal()
    server.close()
    await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description="DEVELOPMENT ONLY SMTP sink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--mail-dir", type=Path, required=True)
    options = parser.parse_args()
    asyncio.run(serve(options.host, options.port, options.mail_dir))
