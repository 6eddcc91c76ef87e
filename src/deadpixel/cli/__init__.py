"""The ``deadpixel`` command line: a root group that knows every command by name and loads it on use.

Starting Python and importing click is most of what ``deadpixel --help`` costs; the commands' modules, and
SQLAlchemy, the web stack and the enrichment data behind them, load only for the command that runs. To add
a command, add one entry to ``COMMANDS``: its name, the first paragraph of its help (what ``deadpixel
--help`` shows; a test checks it against the command's own) and where it lives.
"""

from __future__ import annotations

import click

from deadpixel.cli.lazy import Entry, LazyGroup

_WEBHOOK = Entry(
    "deadpixel.cli.webhook:webhook",
    "POST each open and click, signed, to URLs of your choice (see docs/webhooks.md).",
)
COMMANDS: dict[str, Entry] = {
    "backup": Entry(
        "deadpixel.cli.store:backup_command",
        "Copy the store and the signing keys into a new directory under INTO, while the server runs.",
    ),
    "bounces": Entry(
        "deadpixel.cli.bounces:bounces",
        "Learn which messages bounced and who complained; suppress those addresses (see docs/bounces.md).",
    ),
    "campaign": Entry(
        "deadpixel.cli.send:campaign",
        "Mail merges to a list: personalised, tracked, resumable.",
    ),
    "classify": Entry(
        "deadpixel.cli.verdicts:classify",
        "Explain how one request would be counted: client, device, OS, place and verdict with its reason.",
    ),
    "clicks": Entry(
        "deadpixel.cli.report:clicks",
        "List recorded clicks on tracked links, newest first, with their verdict.",
    ),
    "audit": Entry(
        "deadpixel.cli.users:audit_log", "Who sent or changed settings, tokens or accounts, and when."
    ),
    "contacts": Entry(
        "deadpixel.cli.contacts:contacts",
        "Your audience: contacts with fields, tags and a state (see docs/contacts.md).",
    ),
    "db": Entry("deadpixel.cli.store:db", "The database schema."),
    "demo": Entry(
        "deadpixel.cli.pixel:demo",
        "Seed a realistic demo campaign (people, Apple prefetches, scanners, proxies, clicks) to look "
        "around.",
    ),
    "doctor": Entry(
        "deadpixel.cli.doctor:doctor",
        "Check this deployment and say what is wrong and how to fix it (exit status 1 when a check fails).",
    ),
    "export": Entry(
        "deadpixel.cli.export:export_command",
        "Export opens, clicks or per-recipient status as CSV, oldest first, streamed (see docs/exports.md).",
    ),
    "forget": Entry(
        "deadpixel.cli.privacy:forget",
        "Erase every message to ADDRESS and every open of those messages.",
    ),
    "metrics": Entry(
        "deadpixel.cli.metrics:metrics",
        "Counters of the running server's processes, summed (pixel requests, invalid tokens, opens, "
        "batches).",
    ),
    "networks": Entry(
        "deadpixel.cli.verdicts:networks",
        "The lists of proxy and scanner networks that verdicts use.",
    ),
    "opens": Entry("deadpixel.cli.report:opens", "List recorded opens, newest first."),
    "pixel": Entry("deadpixel.cli.pixel:pixel", "Tracking pixels to paste into mail you send yourself."),
    "purge": Entry(
        "deadpixel.cli.privacy:purge",
        "Apply DEADPIXEL_RETENTION_DAYS now: drop raw detail (address, user agent, city) of older opens.",
    ),
    "reclassify": Entry(
        "deadpixel.cli.verdicts:reclassify",
        "Rerun enrichment and verdicts over every stored open and click (each by its own rules), and rebuild"
        " counts.",
    ),
    "relay": Entry(
        "deadpixel.cli.serve:relay",
        "Run the SMTP relay: point your mail client's outgoing server here.",
    ),
    "report": Entry(
        "deadpixel.cli.report:report",
        "Headline numbers for a campaign (or for all messages); with --json, every chart's data too.",
    ),
    "secret": Entry("deadpixel.cli.keys:secret", "The keys that sign pixel and link tokens."),
    "segment": Entry(
        "deadpixel.cli.segments:segment",
        "Who opened, who did not, who only a machine fetched: recipients by what they did "
        "(docs/segments.md).",
    ),
    "send": Entry(
        "deadpixel.cli.send:send",
        "Send one tracked message through your SMTP server (DEADPIXEL_SMTP_*).",
    ),
    "serve": Entry(
        "deadpixel.cli.serve:serve",
        "Run the pixel server (and everything else the web side offers).",
    ),
    "suppression": Entry(
        "deadpixel.cli.send:suppression",
        "The suppression list: addresses that unsubscribed, bounced or complained; campaign sends and the"
        " relay skip them.",
    ),
    "token": Entry("deadpixel.cli.users:token", "Bearer tokens for the JSON API (/api/v1)."),
    "user": Entry("deadpixel.cli.users:user", "Accounts for the dashboard and the relay, and their roles."),
    "webhook": _WEBHOOK,
    "webhooks": _WEBHOOK,
}


@click.group(cls=LazyGroup, entries=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="deadpixel")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Self-hosted email open tracking."""
    from deadpixel.cli.context import Cli

    ctx.ensure_object(Cli)
