"""Drives auditlog-service through a Python client that openapi-python-client generated from
the service's own /openapi.json (testcontainers-tests/tests/clients_generated.rs runs it).

    generated_client.py PACKAGE_DIR BASE_URL API_KEY CONSUMER
    generated_client.py --check-imports PACKAGE_DIR

With --check-imports it only imports every generated module and prints, as JSON, those that
fail (module, error): generated code that does not even import.

PACKAGE_DIR is the generated package (`--meta none --output-path PACKAGE_DIR`). Everything
goes through the generated code: its AuthenticatedClient (the API key in `X-Api-Key`), its
operation modules and its models; nothing here builds a request or parses an answer by hand.
Prints one JSON object of what was sent and what came back, for the Rust test to check.
"""

import importlib
import json
import pathlib
import re
import sys


def operation_module(pkg, package_dir, method, url):
    """The generated module of the operation `method url`.

    The generator names a module after the operation's operationId, or after its method and
    path when there is none, and files it under its first tag; the module's `_get_kwargs`
    says which request it sends, so this finds it whatever the document calls it.
    """
    found = []
    for path in sorted((package_dir / "api").rglob("*.py")):
        text = path.read_text()
        if re.search(r'"method":\s*"%s"' % method, text) and re.search(
            r'"url":\s*"%s"' % re.escape(url), text
        ):
            found.append(path)
    if len(found) != 1:
        raise SystemExit(f"expected one generated module for {method.upper()} {url}, got {found}")
    rel = found[0].relative_to(package_dir).with_suffix("")
    return importlib.import_module(".".join([pkg, *rel.parts])), ".".join(rel.parts)


def check_imports(package_dir):
    sys.path.insert(0, str(package_dir.parent))
    broken = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        name = ".".join([package_dir.name, *parts])
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            broken.append({"module": name, "error": f"{type(e).__name__}: {e}"})
    print(json.dumps(broken))


def main():
    if sys.argv[1] == "--check-imports":
        return check_imports(pathlib.Path(sys.argv[2]).resolve())
    package_dir = pathlib.Path(sys.argv[1]).resolve()
    base_url, key, consumer = sys.argv[2], sys.argv[3], sys.argv[4]
    sys.path.insert(0, str(package_dir.parent))
    pkg = package_dir.name
    client_mod = importlib.import_module(f"{pkg}.client")
    models = importlib.import_module(f"{pkg}.models")
    types = importlib.import_module(f"{pkg}.types")

    post_event, post_event_name = operation_module(pkg, package_dir, "post", "/v1/event")
    post_events, post_events_name = operation_module(pkg, package_dir, "post", "/v1/events")
    get_find, get_find_name = operation_module(pkg, package_dir, "get", "/v1/find")
    post_find, post_find_name = operation_module(pkg, package_dir, "post", "/v1/find")
    get_event, get_event_name = operation_module(pkg, package_dir, "get", "/v1/event/{id}")
    get_histogram, get_histogram_name = operation_module(pkg, package_dir, "get", "/v1/histogram")

    # The security scheme is an API key in the `X-Api-Key` header: the generated
    # AuthenticatedClient sends `token` in `auth_header_name`, with no prefix.
    client = client_mod.AuthenticatedClient(
        base_url=base_url, token=key, prefix="", auth_header_name="X-Api-Key",
        raise_on_unexpected_status=True,
    )
    out = {
        "modules": {
            "post_event": post_event_name,
            "post_events": post_events_name,
            "get_find": get_find_name,
            "post_find": post_find_name,
            "get_event": get_event_name,
            "get_histogram": get_histogram_name,
        }
    }

    def ack(resp, model):
        parsed = resp.parsed
        assert isinstance(parsed, model), f"{resp.status_code}: {resp.content!r} parsed as {parsed!r}"
        return parsed.to_dict()

    # One event, with a payload of every JSON kind.
    payload = {"user": "ada", "ok": True, "n": 42, "big": 2**40, "x": 1.5, "tags": ["a", "b"],
               "nested": {"k": None, "list": [{"deep": "yes"}]}}
    one = models.EventIn(type_="login", consumer=consumer, payload=payload)
    resp = post_event.sync_detailed(client=client, body=one)
    out["single"] = {"status": int(resp.status_code), "ack": ack(resp, models.EventAck),
                     "sent": one.to_dict()}

    # The same event with a producer id, sent twice: a retry is answered 200 with the stored
    # created_at.
    retried = models.EventIn(type_="logout", consumer=consumer, payload={"why": "retry"},
                             id="65f0c0ffee0123456789abcd")
    first = post_event.sync_detailed(client=client, body=retried)
    again = post_event.sync_detailed(client=client, body=retried)
    out["retry"] = {"first_status": int(first.status_code), "first": ack(first, models.EventAck),
                    "again_status": int(again.status_code), "again": ack(again, models.EventAck),
                    "sent": retried.to_dict()}

    # A refused event: the answer parses as the generated ErrorBody.
    bad = models.EventIn(type_="", consumer=consumer)
    resp = post_event.sync_detailed(client=client, body=bad)
    out["refused"] = {"status": int(resp.status_code), "body": ack(resp, models.ErrorBody)}

    # A batch of three.
    batch = [models.EventIn(type_="batched", consumer=consumer, payload={"i": i}) for i in range(3)]
    resp = post_events.sync_detailed(client=client, body=batch)
    out["batch"] = {"status": int(resp.status_code), "answer": ack(resp, models.BatchResponse),
                    "sent": [e.to_dict() for e in batch]}

    # Find them again: by consumer, by consumer and type (GET), and with the JSON body (POST).
    found = get_find.sync(client=client, consumer=consumer, include_incomplete=True, limit=100)
    assert isinstance(found, models.FindResponse), found
    out["find_consumer"] = found.to_dict()
    found = get_find.sync(client=client, consumer=consumer, type_="batched",
                          include_incomplete=True)
    assert isinstance(found, models.FindResponse), found
    out["find_type"] = found.to_dict()
    body = models.FindRequest(consumer=consumer, type_="login", include_incomplete=True,
                              order=models.Order("asc"))
    found = post_find.sync(client=client, body=body)
    assert isinstance(found, models.FindResponse), found
    out["find_post"] = found.to_dict()
    # The typed view of the events, as a user of the client reads them.
    out["find_typed"] = [
        {"id": e.id, "type": e.type_, "consumer": e.consumer, "created_at": e.created_at,
         "payload": None if isinstance(e.payload, types.Unset) else e.payload}
        for e in get_find.sync(client=client, consumer=consumer, include_incomplete=True).events
    ]

    # The histogram of the same events, by type, through the generated enum and answer model.
    hist = get_histogram.sync(client=client, consumer=consumer, by=models.HistogramBy("type"))
    out["histogram"] = {
        "total": hist.total, "series": list(hist.series), "by": hist.by.value,
        "bucket_sum": sum(b.count for b in hist.buckets),
    }

    # The single event's status.
    resp = get_event.sync_detailed(client=client, id=out["single"]["ack"]["id"])
    out["status"] = {"status": int(resp.status_code), "body": ack(resp, models.EventStatus)}

    # A client without the key: the generated code parses the 401 as ErrorBody.
    anonymous = client_mod.Client(base_url=base_url)
    resp = get_find.sync_detailed(client=anonymous, consumer=consumer)
    out["unauthorized"] = {"status": int(resp.status_code), "body": ack(resp, models.ErrorBody)}

    # Client(headers=...) is the generator's other way to send a header: it works as well.
    plain = client_mod.Client(base_url=base_url, headers={"X-Api-Key": key})
    resp = get_find.sync_detailed(client=plain, consumer=consumer, include_incomplete=True)
    out["headers_client_count"] = len(resp.parsed.events)

    print(json.dumps(out))


if __name__ == "__main__":
    main()
