"""Contacts: imports of generic and Mailchimp CSVs (bad rows by line, idempotent, all or nothing), states read
from the suppression list, the last human open, tags, export round trips, ``campaign send --to-tag`` against a
real SMTP server, forget, and the API with its roles."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select
from starlette.testclient import TestClient

from deadpixel.bounces.parse import Failure, Report
from deadpixel.bounces.record import record, report_key
from deadpixel.config import Settings
from deadpixel.contacts.csvfile import ImportProblem, read_contacts
from deadpixel.errors import DeadpixelError
from deadpixel.events import ClickEvent
from deadpixel.server.app import Deadpixel
from deadpixel.store.api_tokens import create_token
from deadpixel.store.clicks import write_clicks
from deadpixel.store.contacts import last_human_opens
from deadpixel.store.messages import create_message
from deadpixel.store.roles import Role
from deadpixel.store.schema import contacts
from deadpixel.store.writes import write_opens

from .helpers import Ran, deadpixel
from .smtp_sink import SMTPServerHandle, smtp_fixture  # noqa: F401  (the fixture)
from .test_analytics import HUMAN_TB, LABELS, PREFETCH, SCANNER, T0, opened
from .test_dashboard import client, sign_in  # noqa: F401  (client: the fixture)

DATA = Path(__file__).parent / "data" / "contacts"
SUBSCRIBED, UNSUBSCRIBED, CLEANED = (
    DATA / f"{kind}_members_export.csv" for kind in ("subscribed", "unsubscribed", "cleaned")
)
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def ok(*args: str) -> Ran:
    return deadpixel(*args, check=True)


def as_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json").stdout)


def imported(path: Path, *extra: str) -> dict[str, Any]:
    ran = deadpixel("contacts", "import", str(path), "--json", *extra)
    assert "Traceback" not in ran.stderr, ran.stderr
    result: dict[str, Any] = json.loads(ran.stdout)
    assert ran.returncode == (1 if result["bad"] else 0)
    return result


def listed(*extra: str) -> dict[str, dict[str, Any]]:
    return {row["address"].lower(): row for row in as_json("contacts", "list", *extra)}


def counts(result: dict[str, Any]) -> tuple[int, int, int, int]:
    return result["added"], result["updated"], result["unchanged"], len(result["bad"])


def test_mailchimp_exports_come_in_with_names_fields_tags_and_states(env: dict[str, str]) -> None:
    first = imported(SUBSCRIBED, "--tag", "from-mailchimp")
    assert first["kind"] == "mailchimp" and counts(first) == (3, 0, 0, 0)
    assert imported(UNSUBSCRIBED)["kind"] == "mailchimp-unsubscribed"
    assert imported(CLEANED)["kind"] == "mailchimp-cleaned"
    found = listed()
    assert {a: row["state"] for a, row in found.items()} == {
        "ann@example.org": "subscribed", "bob.bee@example.org": "subscribed",
        "carol@example.org": "subscribed", "dan@example.org": "unsubscribed", "erin@example.net": "bounced",
    }  # fmt: skip
    bob = found["bob.bee@example.org"]
    assert bob["address"] == "Bob.Bee@Example.org"  # the spelling kept, the key lower-cased
    assert bob["name"] == "Bob Bee" and bob["tags"] == ["Customers", "from-mailchimp"]
    assert bob["fields"]["first_name"] == "Bob" and bob["fields"]["member_rating"] == "4"
    assert bob["fields"]["notes"] == "met at the fair, 2023" and "tags" not in bob["fields"]
    assert found["ann@example.org"]["tags"] == ["Customers", "VIP", "from-mailchimp"]
    assert found["carol@example.org"]["tags"] == ["from-mailchimp"] and bob["last_human_open_at"] is None
    assert set(listed("--tag", "VIP")) == {"ann@example.org"}
    assert set(listed("--state", "bounced")) == {"erin@example.net"}
    # the unsubscribed and cleaned exports went onto the one suppression list
    suppressed = {row["address"]: row["source"] for row in as_json("suppression", "list")}
    assert suppressed == {"dan@example.org": "import-unsubscribed", "erin@example.net": "import-cleaned"}
    shown = ok("contacts", "show", "BOB.BEE@example.org").stdout
    assert "state: subscribed" in shown and "field optin_ip: 198.51.100.7" in shown


GENERIC = """\
email,name,first_name,plan
ann@example.org,Ann Lee,Ann,pro
,No Address,Nobody,free
not-an-address,Bad,Bad,free
"Ann Again <ANN@example.org>",Ann,Ann,free
bob@example.org,"Bob
Bee",Bob,free
ANN@EXAMPLE.ORG,Ann Twice,Ann,free
carol@example.org,Carol
dave@example.org,Dave,Dave,"=HYPERLINK(""http://evil.example"")"
"""


@SQLITE_ONLY
def test_bad_rows_are_listed_with_line_and_reason_and_the_good_ones_go_in(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "list.csv"
    path.write_text(GENERIC, encoding="utf-8")
    ran = deadpixel("contacts", "import", str(path))
    assert ran.returncode == 1 and "3 added, 0 updated, 0 unchanged, 5 bad" in ran.stdout
    assert "line 3: '': no address" in ran.stderr
    result = imported(path)
    bad = {row["line"]: row["reason"] for row in result["bad"]}
    assert set(bad) == {3, 4, 5, 8, 9}  # bob's name spans lines 6 and 7, so ANN@ is on line 8
    assert bad[4].startswith("invalid address") and "display name" in bad[5]
    assert bad[8] == "duplicate of line 2" and "has 2 fields" in bad[9]
    found = listed()
    assert set(found) == {"ann@example.org", "bob@example.org", "dave@example.org"}
    assert found["bob@example.org"]["name"] == "Bob\nBee"
    assert found["ann@example.org"]["fields"] == {"first_name": "Ann", "plan": "pro"}


def test_importing_twice_changes_nothing_and_an_export_imports_back_as_it_was(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "list.csv"
    path.write_text(GENERIC, encoding="utf-8")
    assert counts(imported(path, "--tag", "spring")) == (3, 0, 0, 5)
    assert counts(imported(path, "--tag", "spring")) == (0, 0, 3, 5)
    assert counts(imported(SUBSCRIBED)) == (2, 1, 0, 0)  # ann was in both
    assert counts(imported(path, "--tag", "autumn")) == (0, 3, 0, 5)  # a new tag is a change
    ok("suppression", "add", "bob@example.org")
    before = listed()
    exported = tmp_path / "export.csv"
    ok("contacts", "export", str(exported))
    text = exported.read_text(encoding="utf-8")
    assert text.startswith("email,name,tags,state,") and "'=HYPERLINK" in text  # defused for spreadsheets
    assert counts(imported(exported)) == (0, 0, 5, 0)
    assert listed() == before
    assert before["dave@example.org"]["fields"]["plan"] == '=HYPERLINK("http://evil.example")'
    autumn = ok("contacts", "export", "--tag", "autumn").stdout
    rows = list(csv.reader(io.StringIO(autumn)))
    assert len(rows) == 4 and "carol@" not in autumn  # the header and three contacts


@SQLITE_ONLY
def test_a_file_that_breaks_off_midway_imports_nothing(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_bytes(
        b"email,name\n" + b"".join(b"p%d@example.org,P\n" % i for i in range(50)) + b"\xff\xfe,x\n"
    )
    ran = deadpixel("contacts", "import", str(path))
    assert ran.returncode == 1 and "not UTF-8" in ran.stderr and "Traceback" not in ran.stderr
    assert as_json("contacts", "list") == []
    path.write_text("name\nAnn\n", encoding="utf-8")
    ran = deadpixel("contacts", "import", str(path))
    assert ran.returncode == 1 and "no 'email' or 'email address' column" in ran.stderr


def test_bounds_on_size_and_rows_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("email\n" + "".join(f"p{i}@example.org\n" for i in range(20)), encoding="utf-8")
    with pytest.raises(ImportProblem, match="over the limit of 100; split the file"):
        read_contacts(path, max_bytes=100)
    with pytest.raises(ImportProblem, match="more than 10 rows; split the file"):
        read_contacts(path, max_rows=10)
    assert len(read_contacts(path, max_rows=20).rows) == 20


def test_states_follow_the_suppression_list(env: dict[str, str], engine: Engine) -> None:
    """Unsubscribes, bounces and complaints, recorded as they are for anyone, are the contacts' states; an
    import never takes an address off the list."""
    imported(SUBSCRIBED)
    with engine.begin() as conn:
        ids = {
            name: create_message(conn, recipient=f"{name}@example.org", campaign="spring", sent_at=T0)
            for name in ("ann", "carol")
        }
    hard = Failure.of("ann@example.org", None, True, "5.1.1", "550 5.1.1 user unknown")
    complaint = Report("complaint", "abuse report", feedback_type="abuse")
    bounce = Report("bounce", "DSN", (hard,))
    with engine.begin() as conn:
        for name, report in (("ann", bounce), ("carol", complaint)):
            key = report_key(ids[name], name.encode())
            assert record(conn, report, ids[name], source="smtp", key=key, soft_limit=3, at=T0).suppressed
    ok("suppression", "add", "Bob.Bee@example.org")
    states = {a: row["state"] for a, row in listed().items()}
    assert states == {
        "ann@example.org": "bounced", "bob.bee@example.org": "unsubscribed", "carol@example.org": "complained"
    }  # fmt: skip
    assert counts(imported(SUBSCRIBED)) == (0, 0, 3, 0)  # a subscribed export brings nobody back
    assert listed()["bob.bee@example.org"]["state"] == "unsubscribed"
    ok("suppression", "remove", "bob.bee@example.org")
    assert listed()["bob.bee@example.org"]["state"] == "subscribed"
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(contacts)).scalar_one() == 3


def test_the_last_human_open_is_the_newest_human_or_proxy_open_or_human_click(
    env: dict[str, str], engine: Engine
) -> None:
    imported(SUBSCRIBED)
    with engine.begin() as conn:
        first = create_message(conn, recipient="Ann@Example.org", campaign="a", sent_at=T0)
        second = create_message(conn, recipient="ann@example.org", campaign="b", sent_at=T0)
        carol = create_message(conn, recipient="carol@example.org", campaign="a", sent_at=T0)
        write_opens(conn, [opened(first, 60, HUMAN_TB), opened(first, 120, PREFETCH)], LABELS)
        write_opens(conn, [opened(second, 30, HUMAN_TB), opened(second, 500, SCANNER)], LABELS)
        write_opens(conn, [opened(carol, 10, PREFETCH), opened(carol, 20, SCANNER)], LABELS)
        write_opens(conn, [opened(first, 90, "proxy/Gmail///US")], LABELS)
    with engine.connect() as conn:
        seen = last_human_opens(conn, ["ann@example.org", "carol@example.org", "bob.bee@example.org"])
    assert seen == {"ann@example.org": T0 + 90}  # machines after it and machines only do not count
    with engine.begin() as conn:
        write_clicks(conn, [ClickEvent(carol, 0, T0 + 700, "192.0.2.1", HUMAN_TB, "GET")], LABELS)
    shown = listed()
    assert shown["carol@example.org"]["last_human_open_at"].startswith("2026-03-02T08:11:40")
    assert shown["ann@example.org"]["last_human_open_at"].startswith("2026-03-02T08:01:30")


@SQLITE_ONLY
def test_tag_untag_delete_and_forget(env: dict[str, str]) -> None:
    imported(SUBSCRIBED)
    ran = deadpixel(
        "contacts", "tag", "ann@example.org", "CAROL@example.org", "x@example.org", "--tag", "vip"
    )
    assert ran.returncode == 1 and "2 contact(s) tagged 'vip'" in ran.stdout
    assert "x@example.org is not a contact" in ran.stderr
    assert set(listed("--tag", "vip")) == {"ann@example.org", "carol@example.org"}
    assert "0 contact(s) tagged" in ok("contacts", "tag", "ann@example.org", "--tag", "vip").stdout
    assert "1 contact(s) untagged" in ok("contacts", "untag", "ann@example.org", "--tag", "vip").stdout
    assert set(listed("--tag", "vip")) == {"carol@example.org"}
    assert deadpixel("contacts", "tag", "ann@example.org", "--tag", "a,b").returncode != 0
    ok("contacts", "delete", "carol@example.org")
    assert deadpixel("contacts", "delete", "carol@example.org").returncode == 1
    ok("forget", "ann@example.org", "--yes")
    assert set(listed()) == {"bob.bee@example.org"}
    assert listed("--tag", "vip") == {}


HTML = "<html><body><p>Hello {{ first_name }} ({{ name }}, {{ member_rating }})</p></body></html>"


def send_to_tag(tmp_path: Path, tag: str, *extra: str) -> Ran:
    template = tmp_path / "mail.html"
    template.write_text(HTML, encoding="utf-8")
    return deadpixel(
        "campaign", "send", "spring", "--to-tag", tag, "--subject", "Hi {{ first_name }}",
        "--html", str(template), "--retry-backoff", "0.01", "--json", *extra,
    )  # fmt: skip


def test_send_to_a_tag_reaches_each_subscribed_contact_once_and_a_rerun_sends_nothing(
    env: dict[str, str], smtp: SMTPServerHandle, tmp_path: Path
) -> None:
    imported(SUBSCRIBED, "--tag", "news")
    imported(UNSUBSCRIBED, "--tag", "news")  # dan: tagged but unsubscribed
    imported(CLEANED)  # erin: not tagged at all
    ok("suppression", "add", "carol@example.org")
    ran = send_to_tag(tmp_path, "news")
    summary = json.loads(ran.stdout)
    assert ran.returncode == 0, ran.stderr
    assert summary["sent"] == 2 and summary["problems"] == []
    got = smtp.sink.by_recipient()
    assert sorted(got) == ["Bob.Bee@Example.org", "ann@example.org"]
    assert all(len(copies) == 1 for copies in got.values())
    bob = got["Bob.Bee@Example.org"][0]
    assert bob.message["Subject"] == "Hi Bob" and "Hello Bob (Bob Bee, 4)" in bob.html()
    assert bob.message["List-Unsubscribe"]
    again = json.loads(send_to_tag(tmp_path, "news").stdout)
    assert again["sent"] == 0 and again["already_sent"] == 2 and len(smtp.sink.messages) == 2
    assert (
        deadpixel("campaign", "send", "x", "--subject", "s", "--html", str(tmp_path / "mail.html")).returncode
        == 2
    )
    nobody = json.loads(send_to_tag(tmp_path, "no-such-tag").stdout)
    assert nobody["sent"] == 0 and len(smtp.sink.messages) == 2


@SQLITE_ONLY
def test_a_one_click_unsubscribe_from_a_tag_send_makes_the_contact_unsubscribed(
    env: dict[str, str], smtp: SMTPServerHandle, tmp_path: Path, settings: Settings
) -> None:
    imported(SUBSCRIBED, "--tag", "news")
    assert send_to_tag(tmp_path, "news").returncode == 0
    url = smtp.sink.by_recipient()["ann@example.org"][0].message["List-Unsubscribe"].strip("<>")
    with TestClient(Deadpixel(settings)) as web:
        answer = web.post(url.removeprefix(settings.base_url), data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200
    assert listed()["ann@example.org"]["state"] == "unsubscribed"
    assert json.loads(send_to_tag(tmp_path, "news").stdout)["suppressed"] == 0  # not a row any more


@pytest.fixture
def api(settings: Settings, engine: Engine) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    with engine.begin() as conn:
        tokens = {
            role.label: create_token(conn, role.label, role=role)[1] for role in (Role.VIEWER, Role.SENDER)
        }
    with TestClient(Deadpixel(settings)) as web:
        yield web, {role: {"authorization": f"Bearer {secret}"} for role, secret in tokens.items()}


def test_the_api_lists_and_shows_contacts_and_senders_import(
    api: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    web, auth = api
    body = SUBSCRIBED.read_bytes()
    url = "/api/v1/contacts/import?tag=api"
    assert web.post(url, content=body, headers=auth["viewer"]).status_code == 403
    answer = web.post(url, content=body, headers={**auth["sender"], "content-type": "text/csv"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"kind": "mailchimp", "added": 3, "updated": 0, "unchanged": 0, "bad": []}
    page = web.get("/api/v1/contacts", params={"limit": 2, "tag": "Customers"}, headers=auth["viewer"])
    assert page.status_code == 200
    first = page.json()
    assert [c["address"] for c in first["items"]] == ["ann@example.org", "Bob.Bee@Example.org"]
    assert first["next"] is None
    page = web.get("/api/v1/contacts", params={"limit": 1}, headers=auth["viewer"]).json()
    rest = web.get(page["next"], headers=auth["viewer"]).json()
    assert rest["items"][0]["address"] == "Bob.Bee@Example.org" and "@" not in page["next"]
    one = web.get(f"/api/v1/contacts/{rest['items'][0]['id']}", headers=auth["viewer"]).json()
    assert one["name"] == "Bob Bee" and one["state"] == "subscribed" and one["tags"] == ["Customers", "api"]
    assert web.get("/api/v1/contacts/999", headers=auth["viewer"]).status_code == 404
    assert web.get("/api/v1/contacts?state=gone", headers=auth["viewer"]).json()["parameter"] == "state"
    summary = web.get("/api/v1/contacts/summary", headers=auth["viewer"]).json()
    assert summary["total"] == 3 and summary["states"]["subscribed"] == 3 and summary["tags"]["api"] == 3
    refused = web.post(url, content=b"name\nAnn\n", headers=auth["sender"])
    assert refused.status_code == 422 and "the body" in refused.json()["error"]
    assert "import-" not in refused.json()["error"]


@given(st.text(alphabet=st.sampled_from('e@x.o,"\n\r ;\x00\ufeffmailEMAIL Addres\xe9'), max_size=200))
@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_reader_never_fails_with_anything_but_a_clear_problem(tmp_path_factory: Any, text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "list.csv"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        found = read_contacts(path)
    except DeadpixelError as exc:
        assert str(exc)
        return
    assert all(row.key == row.key.lower() and "@" in row.key for row in found.rows)
    assert all(bad.line >= 2 and bad.reason for bad in found.bad)


@given(st.binary(max_size=300))
@hypothesis_settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_reader_takes_any_bytes(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("bytes") / "list.csv"
    path.write_bytes(b"email,name,tags,state\n" + data)
    with contextlib.suppress(DeadpixelError):
        read_contacts(path)


@SQLITE_ONLY
def test_the_contacts_page_counts_and_filters(client: TestClient) -> None:  # noqa: F811
    assert client.get("/contacts", follow_redirects=False).status_code == 303  # signed in only
    assert sign_in(client) == 303
    imported(SUBSCRIBED, "--tag", "fair")
    imported(UNSUBSCRIBED)
    page = client.get("/contacts")
    assert page.status_code == 200 and 'href="/contacts"' in page.text
    assert "Bob.Bee@Example.org" in page.text and "dan@example.org" in page.text
    assert '<span class="value">4</span><span class="label">contacts</span>' in page.text
    only = client.get("/contacts", params={"state": "unsubscribed"}).text
    assert "dan@example.org" in only and "ann@example.org" not in only
    tagged = client.get("/contacts", params={"tag": "VIP"}).text
    assert "ann@example.org" in tagged and "carol@example.org" not in tagged
    assert client.get("/contacts", params={"state": "gone"}).status_code == 400
    assert client.get("/contacts", params={"after": "x"}).status_code == 400
