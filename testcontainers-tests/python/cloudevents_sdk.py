"""Sends CloudEvents to auditlog-service with the CloudEvents Python SDK (`cloudevents`, pinned
in the tools venv) and reads them back with it (testcontainers-tests/tests/clients_cloudevents.rs
runs it).

    cloudevents_sdk.py BASE_URL API_KEY TAG

TAG makes this run's sources unique. The SDK builds every request it can build: structured
mode (`to_structured`), binary mode (`to_binary`), and each event of a batch (`JSONFormat.write`);
what comes back from find is parsed with it (`JSONFormat.read`). Requests the SDK refuses to
build (an event without `source`) are written by hand, and say so.

Prints one JSON object: `answers` (status and body of every request, by name), `problems`
(every attribute or data that did not round-trip, with both sides; the Rust test asserts it
empty) and `checked` (what was compared, so the test can tell the comparisons ran).
"""

import base64
import hashlib
import json
import sys
from datetime import datetime, timezone

import httpx
from cloudevents.core.bindings.http import HTTPMessage, from_http, to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v03.event import CloudEvent as CloudEventV03
from cloudevents.core.v1.event import CloudEvent

FORMAT = JSONFormat()
BATCH = "application/cloudevents-batch+json"
STRUCTURED = "application/cloudevents+json"
# Attributes the service adds to a CloudEvent it reads back.
EXT_ID, EXT_CREATED_AT = "auditlogid", "auditlogcreatedat"

problems = []
checked = []
answers = {}


def stored_id(source, event_id):
    """The service's id of the CloudEvent (source, id): SHA-256 over source + "\\n" + id."""
    return hashlib.sha256(f"{source}\n{event_id}".encode()).hexdigest()[:24]


def body_of(resp):
    try:
        return resp.json()
    except ValueError:
        return resp.text


def send(http, name, path, message):
    """POSTs an SDK-built HTTPMessage (headers and body as the SDK made them)."""
    resp = http.post(path, headers=message.headers, content=message.body)
    answers[name] = {"status": resp.status_code, "body": body_of(resp),
                     "request_headers": message.headers}
    return resp


def expect(cond, what, **detail):
    checked.append(what)
    if not cond:
        problems.append({"what": what, **{k: repr(v) for k, v in detail.items()}})


def find_cloudevents(http, source, limit=None, cursor=None):
    """GET /v1/find for `source` asking for CloudEvents back; each parsed with the SDK."""
    params = {"consumer": source, "include_incomplete": "true"}
    if limit is not None:
        params["limit"] = str(limit)
    if cursor is not None:
        params["cursor"] = cursor
    resp = http.get("/v1/find", params=params, headers={"Accept": BATCH})
    if resp.status_code != 200:
        raise SystemExit(f"find {source} as CloudEvents: {resp.status_code} {resp.text}")
    expect(resp.headers.get("content-type", "").split(";")[0].strip() == BATCH,
           f"find {source}: Content-Type is {BATCH}", got=resp.headers.get("content-type"))
    expect("x-complete-until" in resp.headers, f"find {source}: X-Complete-Until header",
           headers=dict(resp.headers))
    raw = resp.json()
    if not isinstance(raw, list):
        raise SystemExit(f"find {source} as CloudEvents did not answer a JSON array: {raw!r}")
    # The SDK has no batch format: each element is one structured CloudEvent, read as such.
    events = [FORMAT.read(None, json.dumps(item).encode()) for item in raw]
    return events, raw, resp.headers.get("x-next-cursor")


def utc_text(text):
    """An RFC 3339 time as the service writes it: UTC, `Z`, fractional seconds in groups of
    three digits only as far as needed (chrono's SecondsFormat::AutoSi)."""
    t = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond == 0:
        return base + "Z"
    if t.microsecond % 1000 == 0:
        return f"{base}.{t.microsecond // 1000:03d}Z"
    return f"{base}.{t.microsecond:06d}Z"


def compare(found, sent, ack, mode):
    """The CloudEvent found (SDK-parsed) against the one sent: every attribute, the data, and
    the service's extensions. Binary mode's extensions were headers, so they come back as the
    strings the SDK wrote."""
    name = f"{mode} {sent.get_source()} {sent.get_id()}"
    got, want = found.get_attributes(), sent.get_attributes()
    for attr, value in want.items():
        if mode == "binary" and attr not in ("specversion", "id", "source", "type", "subject",
                                             "time", "datacontenttype", "dataschema"):
            value = str(value)
        expect(got.get(attr) == value, f"{name}: attribute {attr}", sent=value,
               found=got.get(attr))
    extra = set(got) - set(want) - {EXT_ID, EXT_CREATED_AT}
    expect(not extra, f"{name}: no attribute that was not sent", extra=sorted(extra))
    expect(got.get(EXT_ID) == stored_id(sent.get_source(), sent.get_id()),
           f"{name}: {EXT_ID} is the stored id", found=got.get(EXT_ID))
    if ack is not None:
        expect(got.get(EXT_ID) == ack.get("id"), f"{name}: {EXT_ID} is the acknowledged id",
               found=got.get(EXT_ID), ack=ack)
        expect(got.get(EXT_CREATED_AT) == ack.get("created_at"),
               f"{name}: {EXT_CREATED_AT} is the acknowledged created_at",
               found=got.get(EXT_CREATED_AT), ack=ack)
    expect(found.get_data() == sent.get_data(), f"{name}: data", sent=sent.get_data(),
           found=found.get_data())
    expect(type(found.get_data()) is type(sent.get_data()), f"{name}: data's kind",
           sent=type(sent.get_data()).__name__, found=type(found.get_data()).__name__)


def main():
    base_url, key, tag = sys.argv[1], sys.argv[2], sys.argv[3]
    http = httpx.Client(base_url=base_url, headers={"X-Api-Key": key}, timeout=30)
    src_structured = f"urn:auditlog-test:{tag}:structured"
    src_batch = f"urn:auditlog-test:{tag}:batch"
    src_binary = f"https://example.com/{tag}/binary"
    acks = {}

    # --- structured mode: one event, its retry, and a conflicting one ---------------------
    order = CloudEvent(
        {"type": "com.example.order.created", "source": src_structured, "id": "order-1",
         "subject": "orders/1", "time": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc),
         "datacontenttype": "application/json",
         "dataschema": "https://example.com/schemas/order.json",
         "tenant": "acme", "priority": 5, "urgent": True},
        {"order": 1, "items": ["a", "b"], "total": 12.5, "note": None},
    )
    message = to_structured(order, FORMAT)
    resp = send(http, "structured", "/v1/event", message)
    acks[("structured", "order-1")] = body_of(resp)
    send(http, "structured_retry", "/v1/event", to_structured(order, FORMAT))
    changed = CloudEvent(dict(order.get_attributes()), {"order": 1, "items": ["c"]})
    send(http, "structured_conflict", "/v1/event", to_structured(changed, FORMAT))
    sent_structured_body = json.loads(message.body)

    # --- batched mode ----------------------------------------------------------------------
    # The SDK has no batch helper (no `application/cloudevents-batch+json` format), so the
    # array is made of the SDK's own structured serialisation of each event (JSONFormat.write).
    batch = [
        CloudEvent({"type": "com.example.batch.json", "source": src_batch, "id": "b-1",
                    "subject": "json", "tenant": "acme", "datacontenttype": "application/json"},
                   {"i": 1, "nested": {"deep": [1, 2, 3]}}),
        CloudEvent({"type": "com.example.batch.text", "source": src_batch, "id": "b-2",
                    "datacontenttype": "text/plain"}, "plain text, ünïcödé"),
        CloudEvent({"type": "com.example.batch.bytes", "source": src_batch, "id": "b-3",
                    "datacontenttype": "application/octet-stream"}, bytes(range(256))),
    ]
    items = [json.loads(FORMAT.write(e)) for e in batch]
    # And one the service must refuse on its own: no `source` (the SDK refuses to build such
    # an event, so this one element is written by hand).
    items.append({"specversion": "1.0", "type": "com.example.batch.bad", "id": "b-4"})
    resp = http.post("/v1/events", headers={"Content-Type": BATCH},
                     content=json.dumps(items).encode())
    answers["batch"] = {"status": resp.status_code, "body": body_of(resp)}
    results = body_of(resp).get("results", []) if resp.status_code == 200 else []
    for event, result in zip(batch, results):
        acks[("batch", event.get_id())] = result

    # --- binary mode -----------------------------------------------------------------------
    binary = [
        CloudEvent({"type": "com.example.binary.json", "source": src_binary, "id": "bin-1",
                    "subject": "with spaces and ü", "datacontenttype": "application/json",
                    "tenant": "acme", "priority": 7},
                   {"k": "v", "n": [1, 2.5, True, None]}),
        CloudEvent({"type": "com.example.binary.bytes", "source": src_binary, "id": "bin-2",
                    "datacontenttype": "application/octet-stream"},
                   b"\x00\x01\xfe\xff not utf-8 \x80"),
        CloudEvent({"type": "com.example.binary.text", "source": src_binary, "id": "bin-3",
                    "datacontenttype": "text/plain; charset=utf-8"}, "héllo wörld"),
    ]
    for event in binary:
        resp = send(http, f"binary {event.get_id()}", "/v1/event", to_binary(event, FORMAT))
        acks[("binary", event.get_id())] = body_of(resp)

    # --- refused CloudEvents ---------------------------------------------------------------
    # No `source`: the SDK refuses to build it, so the structured body is written by hand.
    resp = http.post("/v1/event", headers={"Content-Type": STRUCTURED}, content=json.dumps(
        {"specversion": "1.0", "type": "com.example.bad", "id": "x-1", "data": {}}).encode())
    answers["bad_no_source"] = {"status": resp.status_code, "body": body_of(resp)}
    # specversion 0.3, which the SDK does build (its v0.3 event): structured and binary.
    old = CloudEventV03({"type": "com.example.old", "source": src_structured, "id": "old-1"},
                        {"old": True})
    send(http, "bad_v03_structured", "/v1/event", to_structured(old, FORMAT))
    send(http, "bad_v03_binary", "/v1/event", to_binary(old, FORMAT))

    # --- reading back as CloudEvents -------------------------------------------------------
    for mode, source, sent in [("structured", src_structured, [order]),
                               ("batch", src_batch, batch),
                               ("binary", src_binary, binary)]:
        events, raw, next_cursor = find_cloudevents(http, source)
        answers[f"find {mode}"] = {"count": len(events), "raw": raw, "next_cursor": next_cursor}
        expect(len(events) == len(sent), f"find {mode}: {len(sent)} CloudEvents",
               found=[e.get_id() for e in events])
        by_id = {e.get_id(): e for e in events}
        for event in sent:
            found = by_id.get(event.get_id())
            if found is None:
                expect(False, f"find {mode}: {event.get_id()} found", found=sorted(by_id))
                continue
            compare(found, event, acks.get((mode, event.get_id())), mode)

    # Paging through the batch's events one at a time, by X-Next-Cursor.
    paged, cursor, pages = [], None, 0
    while pages < 10:
        events, _, cursor = find_cloudevents(http, src_batch, limit=1, cursor=cursor)
        pages += 1
        paged.extend(e.get_id() for e in events)
        if cursor is None:
            break
    answers["paging"] = {"pages": pages, "ids": paged}
    # Find's order is (created_at, stored id), not the batch's: compare with the unpaged find.
    unpaged = [item.get("id") for item in answers["find batch"]["raw"]]
    expect(paged == unpaged and sorted(paged) == sorted(e.get_id() for e in batch),
           "paging by X-Next-Cursor gives each CloudEvent once, in find's order", got=paged,
           unpaged=unpaged)

    # A single event read back as an HTTP message, the way an SDK receiver gets it.
    raw_found = answers["find structured"]["raw"]
    echoed = [from_http(HTTPMessage({"content-type": STRUCTURED}, json.dumps(item).encode()),
                        FORMAT) for item in raw_found[:1]]
    expect(len(echoed) == 1 and echoed[0].get_id() == "order-1"
           and echoed[0].get_type() == order.get_type(),
           "a found CloudEvent parses with from_http (structured)", found=raw_found)

    # --- the same events as auditlog events (Accept: application/json) --------------------
    plain = {}
    for source in (src_structured, src_batch, src_binary):
        resp = http.get("/v1/find", params={"consumer": source, "include_incomplete": "true"},
                        headers={"Accept": "application/json"})
        plain[source] = {"status": resp.status_code, "body": body_of(resp)}
    answers["find_plain"] = plain
    events = plain[src_structured]["body"].get("events", [])
    expect(len(events) == 1, "the structured event and its retry are stored once", events=events)
    if events:
        stored = events[0]
        expected_attrs = {k: v for k, v in sent_structured_body.items()
                          if k not in ("type", "data", "data_base64")}
        # `time` is kept as the instant sent, written in UTC to the millisecond or finer as
        # needed (docs/api.md): the SDK writes microseconds ".678000Z", stored as ".678Z".
        if "time" in expected_attrs:
            expected_attrs["time"] = utc_text(expected_attrs["time"])
        expect(stored.get("id") == stored_id(src_structured, "order-1"),
               "stored id is SHA-256(source \\n id)[:12]", stored=stored)
        expect(stored.get("type") == order.get_type() and stored.get("consumer") == src_structured,
               "type is type, consumer is source", stored=stored)
        expect(stored.get("payload") == {"cloudevent": expected_attrs,
                                         "data": sent_structured_body["data"]},
               "payload is {cloudevent: attributes as sent, data}", stored=stored,
               expected={"cloudevent": expected_attrs, "data": sent_structured_body["data"]})
    by_id = {e.get("id"): e for e in plain[src_binary]["body"].get("events", [])}
    octets = by_id.get(stored_id(src_binary, "bin-2"), {}).get("payload", {})
    expect(octets.get("data_base64") == base64.b64encode(binary[1].get_data()).decode()
           and "data" not in octets,
           "octet-stream data is stored as data_base64", payload=octets)
    text = by_id.get(stored_id(src_binary, "bin-3"), {}).get("payload", {})
    expect(text.get("data") == "héllo wörld" and "data_base64" not in text,
           "UTF-8 text data is stored as a data string", payload=text)

    print(json.dumps({"answers": answers, "problems": problems, "checked": checked,
                      "ids": {f"{m} {i}": stored_id(s, i) for m, s, i in [
                          ("structured", src_structured, "order-1"),
                          ("batch", src_batch, "b-1"), ("batch", src_batch, "b-2"),
                          ("batch", src_batch, "b-3"),
                          ("binary", src_binary, "bin-1"), ("binary", src_binary, "bin-2"),
                          ("binary", src_binary, "bin-3")]}}))


if __name__ == "__main__":
    main()
