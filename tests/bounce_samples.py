"""Bounce, complaint and auto-reply messages as real servers write them, built here with the stdlib so each
test can put its own bounce address and recipient in. ``write_samples`` keeps a copy of each in a folder.
Line ends are CRLF, as on the wire."""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path


def _original(return_path: str, recipient: str) -> str:
    return (
        f"Return-Path: <{return_path}>\n"
        f"From: News <news@sender.example>\nTo: {recipient}\nSubject: Spring news\n"
        "Message-ID: <abc.123@sender.example>\nDate: Mon, 30 Nov 2026 12:00:00 +0000\n"
    )


def dsn(
    verp: str,
    recipient: str,
    *,
    status: str = "5.1.1",
    action: str = "failed",
    diagnostic: str = "smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in local table",
    final_recipient: str | None = None,
) -> bytes:
    """An RFC 3464 delivery status notification, laid out as Postfix writes one."""
    return (
        (
            "From: MAILER-DAEMON@mx.receiver.example (Mail Delivery System)\n"
            f"To: {verp}\nSubject: Undelivered Mail Returned to Sender\nAuto-Submitted: auto-replied\n"
            "MIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="B1"\n\n'
            "--B1\nContent-Type: text/plain\n\n"
            "I'm sorry to have to inform you that your message could not be delivered.\n\n"
            "--B1\nContent-Type: message/delivery-status\n\n"
            "Reporting-MTA: dns; mx.receiver.example\nArrival-Date: Mon, 30 Nov 2026 12:00:01 +0000\n\n"
            f"Final-Recipient: rfc822; {final_recipient or recipient}\n"
            f"Original-Recipient: rfc822;{recipient}\n"
            f"Action: {action}\nStatus: {status}\n"
            f"Diagnostic-Code: {diagnostic.format(rcpt=recipient)}\n\n"
            "--B1\nContent-Type: text/rfc822-headers\n\n"
            f"{_original(verp, recipient)}\n"
            "--B1--\n"
        )
        .encode()
        .replace(b"\n", b"\r\n")
    )


def arf(return_path: str, *, feedback_type: str = "abuse", to: str = "fbl@sender.example") -> bytes:
    """An RFC 5965 feedback report as a mailbox provider's feedback loop sends one."""
    return (
        (
            f"From: fbl@mailbox.example\nTo: {to}\nSubject: complaint about message from 192.0.2.1\n"
            "MIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=feedback-report; boundary="B2"\n\n'
            "--B2\nContent-Type: text/plain\n\n"
            "This is an email abuse report for an email message received from IP 192.0.2.1.\n\n"
            "--B2\nContent-Type: message/feedback-report\n\n"
            f"Feedback-Type: {feedback_type}\nUser-Agent: SomeGenerator/1.0\nVersion: 1\n"
            f"Original-Mail-From: <{return_path}>\nArrival-Date: Mon, 30 Nov 2026 12:00:01 +0000\n"
            "Source-IP: 192.0.2.1\nReported-Domain: sender.example\n\n"
            "--B2\nContent-Type: message/rfc822\nContent-Disposition: inline\n\n"
            f"{_original(return_path, 'redacted@mailbox.example')}\nHello!\n\n"
            "--B2--\n"
        )
        .encode()
        .replace(b"\n", b"\r\n")
    )


def auto_reply(to: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Pat <pat@receiver.example>"
    message["To"] = to
    message["Subject"] = "Automatic reply: Spring news"
    message["Auto-Submitted"] = "auto-replied"
    message.set_content("I am out of the office until Monday and will read your message then.\n")
    return message.as_bytes(policy=SMTP)


def qmail_bounce(to: str, recipient: str) -> bytes:
    """qmail's free-form bounce: no report structure, only words (flufl.bounce knows them)."""
    message = EmailMessage()
    message["From"] = "MAILER-DAEMON@qmail.receiver.example"
    message["To"] = to
    message["Subject"] = "failure notice"
    message.set_content(
        "Hi. This is the qmail-send program at qmail.receiver.example.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        f"<{recipient}>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
        "--- Below this line is a copy of the message.\n\n" + _original(to, recipient)
    )
    return message.as_bytes(policy=SMTP)


def write_samples(folder: Path, verp: str, recipient: str) -> dict[str, Path]:
    """Each kind of sample as a .eml file in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = {
        "hard": dsn(verp, recipient),
        "soft": dsn(
            verp, recipient, status="4.2.2", action="delayed", diagnostic="smtp; 452 4.2.2 Mailbox full"
        ),
        "complaint": arf(verp),
        "auto-reply": auto_reply(verp),
        "qmail": qmail_bounce(verp, recipient),
    }
    paths = {}
    for name, data in samples.items():
        paths[name] = folder / f"{name}.eml"
        paths[name].write_bytes(data)
    return paths
