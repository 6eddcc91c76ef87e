"""The OpenAPI 3.1 document for /api/v1, written as data rather than generated.

The routes are few and plain Starlette, so a framework that derives schemas from type hints would cost a
dependency and a second way of declaring every endpoint. Written by hand, the document says exactly what
clients may rely on; tests/test_api.py checks it against the live routes and fuzzes the server with it. Every
reported number's description is its definition from deadpixel.reports.analytics, so the two cannot drift
apart.
"""

from __future__ import annotations

import functools
from typing import Any

from deadpixel.api import segments as segments_api
from deadpixel.api.params import DEFAULT_LIMIT, MAX_LIMIT
from deadpixel.events import KINDS
from deadpixel.reports.abtest import METRICS
from deadpixel.reports.analytics import BREAKDOWNS, DEFINITIONS, MESSAGE_COUNTERS
from deadpixel.reports.variants import DEFINITION as AB_DEFINITION
from deadpixel.send.preview import WARNING_CODES
from deadpixel.store.campaign_jobs import STATES as SEND_STATES
from deadpixel.store.contacts import MAX_TAG, STATES

TIME = {"type": "string", "format": "date-time", "description": "ISO 8601, UTC"}
OPTIONAL_TIME = {"type": ["string", "null"], "format": "date-time", "description": "ISO 8601, UTC"}
OPTIONAL_TEXT = {"type": ["string", "null"]}
COUNT = {"type": "integer", "minimum": 0}
RATE = {"type": "number", "minimum": 0, "maximum": 1}
RATES = (
    "open_rate", "human_open_rate", "machine_open_rate", "click_rate", "click_to_open_rate", "bounce_rate",
)  # fmt: skip
RATIOS = ("opens_per_opener",)
# Definitions of the chart data in a campaign's stats, described by their own schemas below.
SERIES = ("bounces", "time_to_first_open", "opens_over_time", "heatmap", "breakdowns", "top_links")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], description: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": sorted(properties),
        "additionalProperties": False,
    }
    if description:
        found["description"] = description
    return found


def _figures() -> dict[str, Any]:
    """The report's numbers, each described by its definition."""
    figures: dict[str, Any] = {
        name: {**_figure_type(name), "description": definition}
        for name, definition in DEFINITIONS.items()
        if name not in SERIES
    }
    figures["first_open_at"] = {**OPTIONAL_TIME, "description": "the earliest open of a sent message"}
    figures["last_open_at"] = {**OPTIONAL_TIME, "description": "the latest open of a sent message"}
    return figures


def _figure_type(name: str) -> dict[str, Any]:
    if name in RATES:
        return RATE
    if name in RATIOS:
        return {"type": "number", "minimum": 0}
    return COUNT


def _series() -> dict[str, Any]:
    """The chart data of a campaign's stats, each described by its definition."""
    split = {"opens": COUNT, "human": COUNT, "machine": COUNT}
    local_hour = {"type": "string", "description": "the hour's start, local time with its UTC offset"}
    local_day = {"type": "string", "format": "date", "description": "the local day"}
    return {
        "bounces": _object(
            {
                "by_reason": {
                    "type": "object",
                    "description": "bounced messages per reason (bounces.md's vocabulary, or unclassified)",
                    "additionalProperties": COUNT,
                },
                "sender_side": {**COUNT, "description": "of them, failed for a sender-side reason"},
            },
            DEFINITIONS["bounces"],
        ),
        "time_to_first_open": _object(
            {
                "messages": {**COUNT, "description": "opened messages with a known send time"},
                "median_seconds": {"type": ["number", "null"], "minimum": 0},
                "buckets": {
                    "type": "array",
                    "items": _object(
                        {
                            "label": {"type": "string"},
                            "below_seconds": {
                                "type": ["number", "null"],
                                "description": "the bucket's upper bound; null for the last, open-ended one",
                            },
                            "messages": COUNT,
                        }
                    ),
                },
            },
            DEFINITIONS["time_to_first_open"],
        ),
        "opens_over_time": _object(
            {
                "timezone": {"type": "string", "description": "DEADPIXEL_TIMEZONE"},
                "hourly": {"type": "array", "items": _object({"hour": local_hour, **split})},
                "daily": {"type": "array", "items": _object({"day": local_day, **split})},
            },
            DEFINITIONS["opens_over_time"],
        ),
        "heatmap": _object(
            {
                "timezone": {"type": "string", "description": "DEADPIXEL_TIMEZONE"},
                "weekdays": {"type": "array", "items": {"type": "string"}, "minItems": 7, "maxItems": 7},
                "cells": {
                    "type": "array",
                    "description": "cells[weekday][hour], Monday first",
                    "minItems": 7,
                    "maxItems": 7,
                    "items": {"type": "array", "items": COUNT, "minItems": 24, "maxItems": 24},
                },
            },
            DEFINITIONS["heatmap"],
        ),
        "breakdowns": _object(
            {
                field: {
                    "type": "array",
                    "items": _object({"value": OPTIONAL_TEXT, "opens": COUNT}),
                }
                for field in BREAKDOWNS
            },
            DEFINITIONS["breakdowns"],
        ),
        "top_links": {
            "type": "array",
            "description": DEFINITIONS["top_links"],
            "items": _object(
                {"url": {"type": "string"}, "clicks": COUNT, "human_clicks": COUNT, "unique_clickers": COUNT}
            ),
        },
    }


def _ab_test() -> dict[str, Any]:
    """A campaign's A/B test and its standing (``deadpixel.reports.variants.ab_test``)."""
    variant = _object(
        {
            "label": {"type": "string"}, "subject": {"type": "string"}, "sent": COUNT, "human_opens": COUNT,
            "clicks": COUNT, "human_open_rate": RATE, "click_rate": RATE,
        }
    )  # fmt: skip
    probability = {"type": "number", "minimum": 0, "maximum": 1}
    return _object(
        {
            "metric": {"type": "string", "enum": list(METRICS)},
            "test_share": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "variants": {"type": "array", "items": variant},
            "leader": {**OPTIONAL_TEXT, "description": "the variant the model favours; null on a tie"},
            "probability": {**probability, "description": "P(the leader beats its closest rival)"},
            "beats": {"type": "object", "additionalProperties": probability,
                      "description": "per other variant: P(the leader's rate is above its rate)"},
            "status": {"type": "string", "enum": ["decided", "tie", "too little data"]},
            "decided": {"type": "boolean", "description": "probability >= 0.95"},
            "statement": {"type": "string", "description": "the standing in one sentence"},
            "winner": {**OPTIONAL_TEXT, "description": "the variant chosen for the rest, once chosen"},
            "winner_chosen_at": OPTIONAL_TIME,
            "waiting": {**COUNT, "description": "recipients kept for the winner"},
            "pick_winner_after_seconds": {"type": ["number", "null"]},
            "pick_winner_at": {**OPTIONAL_TIME, "description": "the server's next check for a winner"},
            "last_check": {**OPTIONAL_TEXT, "description": "the server's last check: why no winner went yet,"
                           " or what it sent"},
            "definition": {"type": "string"},
        },
        AB_DEFINITION,
    )  # fmt: skip


def _page(item: str) -> dict[str, Any]:
    return _object(
        {
            "items": {"type": "array", "items": _ref(item)},
            "next": {
                "type": ["string", "null"],
                "description": "the URL (path and query) of the next page, or null on the last page",
            },
        }
    )


MESSAGE_COUNTER_TEXT = {
    "open_count": "opens recorded for this message, whatever their verdict (total_opens counts these)",
    "human_open_count": "opens with verdict human or proxy",
    "machine_open_count": "opens with verdict prefetch or scanner",
    "self_open_count": "opens by the sender (verdict self)",
    "capped_open_count": DEFINITIONS["capped_opens"],
    "click_count": "clicks recorded for this message, whatever their verdict (total_clicks counts these)",
    "human_click_count": "clicks with verdict human",
    "machine_click_count": "clicks with verdict prefetch or scanner",
    "self_click_count": "clicks by the sender (verdict self)",
}

EVENT_DETAIL = {
    "ip": {**OPTIONAL_TEXT, "description": "as kept under DEADPIXEL_IP_MODE (truncated by default)"},
    "user_agent": OPTIONAL_TEXT,
    "method": {"type": "string", "enum": ["GET", "HEAD"]},
    "kind": {"type": ["string", "null"], "enum": [*KINDS, None], "description": "the verdict"},
    "reason": {**OPTIONAL_TEXT, "description": "why the verdict, in words"},
    "client": OPTIONAL_TEXT,
    "device": OPTIONAL_TEXT,
    "os": OPTIONAL_TEXT,
    "country": OPTIONAL_TEXT,
    "network_owner": OPTIONAL_TEXT,
    "recipient": OPTIONAL_TEXT,
    "subject": OPTIONAL_TEXT,
    "campaign": OPTIONAL_TEXT,
}


def _schemas() -> dict[str, Any]:
    figures = _figures()
    return {
        "Error": {
            "type": "object",
            "properties": {
                "error": {"type": "string", "description": "what went wrong, in words"},
                "parameter": {"type": "string", "description": "the query parameter or body field to blame"},
            },
            "required": ["error"],
            "additionalProperties": False,
        },
        "Report": _object(
            {
                "campaign": {**OPTIONAL_TEXT, "description": "the campaign's name"},
                **figures,
                **_series(),
                "ab_test": {
                    "anyOf": [_ab_test(), {"type": "null"}],
                    "description": "the campaign's A/B test and its standing; null when it is not one",
                },
                "definitions": {
                    "type": "object",
                    "description": "each number's definition, as in this document",
                    "additionalProperties": {"type": "string"},
                },
            },
            "Headline figures of a campaign and its chart data. Only messages with status sent count.",
        ),
        "Campaign": _object(
            {"name": {"type": "string"}, "created_at": TIME, **figures},
            "A campaign with its report's figures.",
        ),
        "CampaignList": _object({"items": {"type": "array", "items": _ref("Campaign")}}),
        "Message": _object(
            {
                "id": {"type": "string", "description": "the public message id the pixel token carries"},
                "recipient": OPTIONAL_TEXT,
                "subject": OPTIONAL_TEXT,
                "campaign": OPTIONAL_TEXT,
                "status": {
                    "type": "string",
                    "enum": ["draft", "sent", "failed", "bounced"],
                    "description": (
                        "only sent messages count in reports; bounced: sent, then a hard bounce came back"
                        " (counted in sent and bounced, not in delivered)"
                    ),
                },
                "bounce": {
                    "type": ["string", "null"],
                    "enum": ["hard", "soft", None],
                    "description": "what came back: hard (in bounced), soft (only temporary failures so far)",
                },
                "soft_bounce_count": {**COUNT, "description": "temporary-failure reports for this message"},
                "bounce_reason": {
                    **OPTIONAL_TEXT,
                    "description": "the latest bounce's status code and the receiving server's words",
                },
                "bounced_at": {**OPTIONAL_TIME, "description": "when the latest bounce report came in"},
                "complained_at": {
                    **OPTIONAL_TIME,
                    "description": "when the recipient reported it as spam (a feedback-loop report)",
                },
                "created_at": TIME,
                "sent_at": {**OPTIONAL_TIME, "description": "when the SMTP server took it; null for pixels"},
                "first_open_at": OPTIONAL_TIME,
                "last_open_at": OPTIONAL_TIME,
                "first_click_at": OPTIONAL_TIME,
                "last_click_at": OPTIONAL_TIME,
                **{name: {**COUNT, "description": MESSAGE_COUNTER_TEXT[name]} for name in MESSAGE_COUNTERS},
                "opened": {
                    "type": "boolean",
                    "description": "counts in unique_opens: " + DEFINITIONS["unique_opens"],
                },
                "opened_by_human": {
                    "type": "boolean",
                    "description": "counts in human_opens: " + DEFINITIONS["human_opens"],
                },
            }
        ),
        "MessagePage": _page("Message"),
        **_contact_schemas(),
        "PreviewRequest": _preview_request(test=False),
        "TestSendRequest": _preview_request(test=True),
        "Preview": _object(
            {
                "subject": {"type": "string", "description": "the merged subject"},
                "html": {
                    "type": "string",
                    "description": "the HTML part as sent; pixel, click, unsubscribe URLs are placeholders",
                },
                "text": {"type": "string", "description": "the text part as sent"},
                "text_derived": {
                    "type": "boolean",
                    "description": "true when the text part was made from the HTML",
                },
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "html_bytes": {"type": "integer", "description": "UTF-8 size of the HTML part"},
                "warnings": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "code": {"type": "string", "enum": list(WARNING_CODES)},
                            "message": {"type": "string"},
                        },
                        "required": ["code", "message"],
                    },
                },
            },
            "One recipient's message as it would be sent, and what to fix first (warnings never block).",
        ),
        "TestSent": _object(
            {"sent": {"type": "boolean"}, "to": {"type": "string"}, "subject": {"type": "string"}},
            "The test copy went to the SMTP server: subject marked [Test], untracked, counted nowhere.",
        ),
        "NewCampaign": {
            "type": "object",
            "description": "A campaign to store (and send now, at a time, or keep as a draft): docs/api.md",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "from": {"type": ["string", "null"], "description": "default DEADPIXEL_MAIL_FROM"},
                "subject": {"type": "string", "minLength": 1, "description": "a Jinja2 template"},
                "html": {"type": "string", "minLength": 1, "description": "a Jinja2 template"},
                "text": {"type": ["string", "null"]},
                "options": {
                    "type": "object",
                    "properties": {
                        "notify": {"type": "string", "enum": ["off", "each", "digest"]},
                        "rate": {"type": "string", "description": "e.g. 10/s or 600/m"},
                        "concurrency": {"type": "integer", "minimum": 1, "maximum": 32},
                        "retries": {"type": "integer", "minimum": 0, "maximum": 20},
                        "retry_backoff": {"type": "number", "minimum": 0, "maximum": 3600},
                        "retry_uncertain": {"type": "boolean"},
                    },
                    "additionalProperties": False,
                },
                "recipients": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "email": {"type": "string"},
                            "fields": {"type": "object", "additionalProperties": {"type": "string"}},
                            "track": {"type": "boolean"},
                            "at": {"type": "string", "description": "this row goes no earlier (ISO 8601)"},
                        },
                        "required": ["email"],
                        "additionalProperties": False,
                    },
                },
                "recipients_csv": {"type": "string", "description": "CSV text with an email column"},
                "at": {"type": "string", "description": "ISO 8601; without an offset, DEADPIXEL_TIMEZONE"},
                "after": {"type": "string", "description": "a duration: 90m, 4h, 2d, 1h30m"},
                "send_now": {"type": "boolean"},
            },
            "required": ["name", "subject", "html"],
            "additionalProperties": False,
        },
        "Schedule": {
            "type": "object",
            "properties": {"at": {"type": "string"}, "after": {"type": "string"}},
            "additionalProperties": False,
        },
        "CampaignSend": _object(
            {
                "id": COUNT,
                "campaign": {"type": "string"},
                "state": {"type": "string", "enum": list(SEND_STATES)},
                "due_at": OPTIONAL_TIME,
                "created_at": TIME,
                "updated_at": TIME,
                "created_by": {"type": "string"},
                "total": {**COUNT, "description": "recipient rows stored"},
                "sent": {**COUNT, "description": "rows sent, by this run or an earlier one"},
                "failed": {
                    **COUNT,
                    "description": "rows not delivered (a resume or a new send retries them)",
                },
                "skipped": {**COUNT, "description": "invalid, duplicate, suppressed, uncertain or busy rows"},
                "left": {**COUNT, "description": "rows not reached yet"},
                "problems": {**COUNT, "description": "rows listed by /problems"},
                "note": {**OPTIONAL_TEXT, "description": "why the server stopped or paused the send"},
            },
            "A stored campaign's send: its state and progress.",
        ),
        "SendProblems": _object(
            {
                "items": {
                    "type": "array",
                    "items": _object(
                        {
                            "line": COUNT,
                            "value": {"type": "string"},
                            "kind": {"type": "string"},
                            "reason": {"type": "string"},
                        }
                    ),
                }
            }
        ),
        "NewMessage": {
            "type": "object",
            "properties": {
                "to": {"type": "string", "description": "the recipient: `addr` or `Name <addr>`"},
                "subject": {"type": ["string", "null"], "maxLength": 998},
                "campaign": {
                    "type": ["string", "null"],
                    "maxLength": 200,
                    "description": "created on first use",
                },
            },
            "required": ["to"],
            "additionalProperties": False,
        },
        "CreatedMessage": _object(
            {
                "message_id": {"type": "string"},
                "to": {"type": "string", "description": "the bare address stored"},
                "subject": OPTIONAL_TEXT,
                "campaign": OPTIONAL_TEXT,
                "url": {"type": "string", "description": "the pixel URL"},
                "html": {
                    "type": "string",
                    "description": "an invisible <img> to paste at the end of the HTML",
                },
            },
            "A tracked message, counted as sent: send it from your own tool with the pixel in it.",
        ),
        "Open": _object(
            {
                "id": {"type": "integer", "description": "the event's id; the cursor of the next page"},
                "message_id": {"type": "string"},
                "at": TIME,
                **EVENT_DETAIL,
                "region": OPTIONAL_TEXT,
                "city": OPTIONAL_TEXT,
            },
            "One recorded open. " + DEFINITIONS["total_opens"].capitalize() + " counts these.",
        ),
        "OpenPage": _page("Open"),
        "Click": _object(
            {
                "id": {"type": "integer", "description": "the event's id; the cursor of the next page"},
                "message_id": {"type": "string"},
                "link": {"type": "integer", "description": "the link's number in its message"},
                "url": {**OPTIONAL_TEXT, "description": "where the link led"},
                "at": TIME,
                **EVENT_DETAIL,
            },
            "One recorded click. " + DEFINITIONS["unique_clicks"].capitalize() + ".",
        ),
        "ClickPage": _page("Click"),
    }


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    if headers:
        found["headers"] = headers
    return found


ERRORS = {
    "400": _error("a query parameter is not valid; `parameter` names it"),
    "401": _error(
        "no token, or one that is unknown or revoked",
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    "403": _error(
        "the token's role is below the route's: viewer for reading, sender for POST /messages and imports"
    ),
    "429": _error(
        "too many requests with this token (DEADPIXEL_API_RATE a minute)",
        {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}},
    ),
    "503": _error(
        "the database is busy or unreachable; try again",
        {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}},
    ),
}


def _ok(schema: str, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


PAGING = [
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "items per page",
    ),
]
CAMPAIGN = _query("campaign", {"type": "string", "minLength": 1, "maxLength": 200}, "only this campaign")
MESSAGE_ID = {"type": "string", "pattern": "^[0-9a-vA-V]{16}$"}
CURSOR = _query("cursor", {"type": "string", "pattern": "^[0-9]{1,18}$"}, "from a previous `next`")


def _events(summary: str, schema: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "description": "Newest first. Times are ISO 8601; one without an offset is UTC.",
            "parameters": [
                CAMPAIGN,
                _query("message", MESSAGE_ID, "only this message"),
                _query("since", {"type": "string", "format": "date-time"}, "at or after this time"),
                _query("until", {"type": "string", "format": "date-time"}, "before this time"),
                _query("kind", {"type": "string", "enum": list(KINDS)}, "only this verdict"),
                *PAGING,
                CURSOR,
            ],
            "responses": {"200": _ok(schema), **ERRORS},
        }
    }


EXPORTS = {
    "opens": "Every recorded open, oldest first",
    "clicks": "Every recorded click, oldest first, with the URL it led to",
    "recipients": "One row per message: its recipient, status (clicked, opened, machine only, not opened)",
}


def _export(kind: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": f"CSV export: {EXPORTS[kind].lower()}",
            "description": (
                "Streamed as it is read. RFC 4180 quoting, UTF-8, a header line; times are ISO 8601 in UTC."
                " A text cell starting with =, +, -, @, a tab or a carriage return gets a leading apostrophe"
                " so that a spreadsheet does not run it as a formula."
            ),
            "parameters": [CAMPAIGN],
            "responses": {
                "200": {"description": "the CSV", "content": {"text/csv": {"schema": {"type": "string"}}}},
                **ERRORS,
            },
        }
    }


SEND_ACTIONS = {
    "send": "Send the stored campaign now",
    "schedule": "Schedule the stored campaign (body: at or after)",
    "pause": "Pause the send: it stops within about a second, between messages",
    "resume": "Resume a paused send: it is due again (at once, or at its scheduled time)",
    "cancel": "Cancel the send for good",
}
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}


def _send_action(action: str) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": SEND_ACTIONS[action],
        "parameters": [NAME],
        "responses": {
            "200": _ok("CampaignSend", "the send as it is now"),
            **ERRORS,
            "403": _error("the token's role is below sender"),
            "404": _error("the campaign has no stored send"),
            "409": _error("the send's state does not allow this"),
            "413": _error("the body is larger than 8 MiB"),
            "422": _error("the body is not valid; `parameter` names the field"),
        },
    }
    if action == "schedule":
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref("Schedule")}},
        }
    return {"post": operation}


def _send_read(summary: str, schema: str | None) -> dict[str, Any]:
    ok = (
        _ok(schema)
        if schema
        else {
            "description": "the CSV: line, value, kind, reason",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    )
    return {
        "get": {
            "summary": summary,
            "parameters": [NAME],
            "responses": {"200": ok, **ERRORS, "404": _error("the campaign has no stored send")},
        }
    }


def _preview_request(*, test: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "from": {"type": "string", "maxLength": 320, "description": "default DEADPIXEL_MAIL_FROM"},
        "subject": {"type": "string", "description": "a Jinja2 template, at most 998 bytes"},
        "html": {"type": "string", "description": "a Jinja2 template, at most 512 KiB"},
        "text": {
            "type": ["string", "null"],
            "description": "the text part's template; made from the HTML if absent",
        },
        "row": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "maxProperties": 200,
            "description": "one recipient's columns, as the CSV gives them; `email` is the address",
        },
    }
    required = ["subject", "html", "row"]
    if test:
        properties["to"] = {"type": "string", "description": "where the test copy goes"}
        required.append("to")
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _preview_path(summary: str, request: str, answer: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": "Needs the sender role. Nothing is stored and nothing counts in any report.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(request)}}},
            "responses": {
                "200": _ok(answer),
                **ERRORS,
                "413": _error("the body is larger than 2 MiB"),
                "422": _error("the body is not a JSON object with valid fields; `parameter` names one"),
            },
        }
    }


STATE = {"type": "string", "enum": list(STATES)}
TAG = {"type": "string", "minLength": 1, "maxLength": MAX_TAG}


def _contact_schemas() -> dict[str, Any]:
    counts = {state: COUNT for state in STATES}
    return {
        "Contact": _object(
            {
                "id": {"type": "integer", "description": "names the contact in URLs (never the address)"},
                "address": {"type": "string", "description": "as it was imported (the key is lower-cased)"},
                "name": OPTIONAL_TEXT,
                "fields": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "any other columns of the import; merge fields in campaign templates",
                },
                "tags": {"type": "array", "items": {"type": "string"}},
                "state": {
                    **STATE,
                    "description": "from the suppression list: unsubscribed, bounced or complained there,"
                    " subscribed otherwise",
                },
                "created_at": TIME,
                "last_human_open_at": {
                    **OPTIONAL_TIME,
                    "description": "the newest open with verdict human or proxy, or human click, of any"
                    " message to the address",
                },
            },
            "A contact of the audience.",
        ),
        "ContactPage": _page("Contact"),
        "ContactSummary": _object(
            {
                "total": COUNT,
                "states": _object(counts, "contacts per state"),
                "tags": {"type": "object", "additionalProperties": COUNT, "description": "contacts per tag"},
            }
        ),
        "ImportResult": _object(
            {
                "kind": {
                    "type": "string",
                    "enum": ["generic", "mailchimp", "mailchimp-unsubscribed", "mailchimp-cleaned"],
                },
                "added": COUNT,
                "updated": COUNT,
                "unchanged": COUNT,
                "bad": {
                    "type": "array",
                    "items": _object(
                        {"line": COUNT, "value": {"type": "string"}, "reason": {"type": "string"}},
                        "a row left out, with its line in the file and why",
                    ),
                },
            },
            "What an import did; bad rows are left out, the others stored in one transaction.",
        ),
    }


def _contact_paths() -> dict[str, Any]:
    return {
        "/contacts": {
            "get": {
                "summary": "Contacts, in the order they were added",
                "parameters": [
                    _query("tag", TAG, "only contacts with this tag"),
                    _query("state", STATE, "only contacts in this state"),
                    *PAGING,
                    CURSOR,
                ],
                "responses": {"200": _ok("ContactPage"), **ERRORS},
            }
        },
        "/contacts/summary": {
            "get": {
                "summary": "How many contacts in each state (of a tag's, with `tag`) and per tag",
                "parameters": [_query("tag", TAG, "count only contacts with this tag")],
                "responses": {"200": _ok("ContactSummary"), **ERRORS},
            }
        },
        "/contacts/{id}": {
            "get": {
                "summary": "One contact",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _ok("Contact"), **ERRORS, "404": _error("no contact with that id")},
            }
        },
        "/contacts/import": {
            "post": {
                "summary": "Import contacts from a CSV file (the body), as `deadpixel contacts import` does",
                "description": (
                    "A CSV with an `email` column (the others become fields; `name`, `tags` and `state` are"
                    " read as such), or a Mailchimp audience export as it is. Importing the same file again"
                    " changes nothing. Needs the sender role."
                ),
                "parameters": [_query("tag", TAG, "give every imported contact this tag (repeatable)")],
                "requestBody": {
                    "required": True,
                    "content": {"text/csv": {"schema": {"type": "string"}}},
                },
                "responses": {
                    "200": _ok("ImportResult"),
                    **ERRORS,
                    "413": _error("the body is larger than 10 MiB"),
                    "422": _error("the file cannot be imported as a whole (no address column, not UTF-8)"),
                },
            }
        },
    }


@functools.cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "deadpixel API",
            "version": "1",
            "description": (
                "Reports and tracked messages of a deadpixel server. Every request but this document needs"
                " `Authorization: Bearer <token>` (`deadpixel token create NAME`). Rates are fractions"
                " from 0 to 1; times are ISO 8601 in UTC."
            ),
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**_schemas(), **segments_api.schemas()},
        },
        "paths": {
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "the OpenAPI 3.1 document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            "/campaigns/{name}/stats": {
                "get": {
                    "summary": "A campaign's report",
                    "parameters": [
                        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {"200": _ok("Report"), **ERRORS, "404": _error("no campaign by that name")},
                }
            },
            "/campaigns": {
                "get": {
                    "summary": "Every campaign with its figures",
                    "responses": {"200": _ok("CampaignList"), **ERRORS},
                },
                "post": {
                    "summary": "Store a campaign (content and rows): send it now, at a time, or keep a draft",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("NewCampaign")}},
                    },
                    "responses": {
                        "201": _ok("CampaignSend", "stored"),
                        **ERRORS,
                        "409": _error("the campaign has an unfinished send already"),
                        "413": _error("the body is larger than 8 MiB"),
                        "422": _error("the body is not a valid campaign; `parameter` names the field"),
                    },
                },
            },
            **{f"/campaigns/{{name}}/{action}": _send_action(action) for action in SEND_ACTIONS},
            "/campaigns/{name}/status": _send_read("A campaign's send: state and progress", "CampaignSend"),
            "/campaigns/{name}/problems": _send_read(
                "Rows of the send that were not sent, and why", "SendProblems"
            ),
            "/campaigns/{name}/problems.csv": _send_read("The same problems as CSV", None),
            "/messages": {
                "get": {
                    "summary": "Messages, newest first",
                    "parameters": [
                        CAMPAIGN,
                        *PAGING,
                        _query("cursor", MESSAGE_ID, "from a previous `next`"),
                    ],
                    "responses": {"200": _ok("MessagePage"), **ERRORS},
                },
                "post": {
                    "summary": "Create a tracked message and get its pixel",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("NewMessage")}},
                    },
                    "responses": {
                        "201": _ok("CreatedMessage", "created; Location is the message's URL"),
                        **ERRORS,
                        "413": _error("the body is larger than 64 KiB"),
                        "422": _error(
                            "the body is not a JSON object with valid fields; `parameter` names one"
                        ),
                    },
                },
            },
            "/messages/{id}": {
                "get": {
                    "summary": "One message with its counters",
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {"200": _ok("Message"), **ERRORS, "404": _error("no message with that id")},
                }
            },
            "/preview": _preview_path(
                "Render one recipient's campaign message, with warnings", "PreviewRequest", "Preview"
            ),
            "/test-send": _preview_path(
                "Send one recipient's message as a test copy to `to` through the configured SMTP server",
                "TestSendRequest",
                "TestSent",
            ),
            **_contact_paths(),
            "/opens": _events("Recorded opens", "OpenPage"),
            "/clicks": _events("Recorded clicks", "ClickPage"),
            **{f"/exports/{kind}.csv": _export(kind) for kind in EXPORTS},
            **segments_api.paths(_ok, _error, ERRORS, PAGING),
        },
    }
