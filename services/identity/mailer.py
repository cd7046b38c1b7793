"""Sends the one-time code by SMTP."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib


class MailNotSent(Exception):
    pass


class CodeMailer:
    def __init__(self, host: str, port: int, sender: str, starttls: bool, username: str, password: str):
        self._host = host
        self._port = port
        self._sender = sender
        self._starttls = starttls
        self._username = username or None
        self._password = password or None

    async def send_code(self, to: str, code: str, valid_minutes: int) -> None:
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = to
        message["Subject"] = f"Your signature code: {code}"
        message.set_content(
            f"Your code to confirm your signature is {code}.\n\n"
            f"It is valid for {valid_minutes} minutes. If you did not ask to sign a petition, ignore this email.\n"
        )
        try:
            await aiosmtplib.send(
                message,
                hostname=self._host,
                port=self._port,
                start_tls=self._starttls,
                username=self._username,
                password=self._password,
                timeout=10,
            )
        except (aiosmtplib.SMTPException, OSError) as error:
            raise MailNotSent(f"SMTP {self._host}:{self._port}: {error}") from error
