"""Find-over-the-archive benchmark driver (run by benchmarks/find-archive/run.sh).

Runs each query against the service (GET /v1/find, every page at limit 1000) and against DuckDB
(read_parquet over the same files with hive_partitioning, the same filters, the same order),
alternating, BENCH_REPEAT times after one warm-up each; checks that both return the same events
in the same order; prints p50/p95 latencies, the ratio, the service's peak RSS, and each goal
with met / not met.
"""
import argparse
import json
import os
import statistics
import time
import urllib.parse
import urllib.request

import duckdb


def nearest_rank(values, q):
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q * len(s) + 0.5)) - 1))
    return s[k]


def service_find(base, key, params):
    """Every page of a find; returns (ids, pages, seconds of the first page)."""
    ids, pages, first = [], 0, None
    cursor = None
    while True:
        q = dict(params, limit="1000")
        if cursor:
            q["cursor"] = cursor
        req = urllib.request.Request(base + "/v1/find?" + urllib.parse.urlencode(q), headers={"X-Api-Key": key})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=60) as r:
            body = json.load(r)
        if first is None:
            first = time.perf_counter() - t0
        pages += 1
        ids += [e["id"] for e in body["events"]]
        cursor = body.get("next_cursor")
        if not cursor or not body["events"]:
            return ids, pages, first


def duckdb_find(con, glob, params, partitions=None):
    where, args = [], [glob]
    for col in ("consumer", "type"):
        if col in params:
            where.append(f"{col} = ?")
            args.append(params[col])
    where.append("created_at >= ?::TIMESTAMPTZ AND created_at < ?::TIMESTAMPTZ")
    args += [params["created_from"], params["created_to"]]
    if partitions:
        where.append("dt BETWEEN ? AND ?")
        args += partitions
    sql = (
        "SELECT id, type, consumer, created_at, payload FROM read_parquet(?, hive_partitioning = true) "
        "WHERE " + " AND ".join(where) + " ORDER BY created_at, id"
    )
    return [row[0] for row in con.execute(sql, args).fetchall()]


def service_histogram(base, key, params):
    """One `/v1/histogram` answer."""
    req = urllib.request.Request(base + "/v1/histogram?" + urllib.parse.urlencode(params), headers={"X-Api-Key": key})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def duckdb_histogram(con, glob, params, bucket_ms):
    """{bucket start in epoch ms: count} for the same filters, from the Parquet rows."""
    where, args = [], [glob]
    for col in ("consumer", "type"):
        if col in params:
            where.append(f"{col} = ?")
            args.append(params[col])
    where.append("created_at >= ?::TIMESTAMPTZ AND created_at < ?::TIMESTAMPTZ")
    args += [params["created_from"], params["created_to"]]
    sql = (
        f"SELECT epoch_ms(created_at) // {bucket_ms} * {bucket_ms} AS b, count(*) "
        "FROM read_parquet(?, hive_partitioning = true) WHERE " + " AND ".join(where) + " GROUP BY b"
    )
    return dict(con.execute(sql, args).fetchall())


def histogram_counts(answer):
    from datetime import datetime

    return {
        int(datetime.fromisoformat(b["start"].replace("Z", "+00:00")).timestamp() * 1000): b["count"]
        for b in answer["buckets"] if b["count"]
    }


def hot_events(mongodb_uri, db, n):
    """`n` events over one day in MongoDB (the hot tier: no archived window covers them),
    inserted on the first run and kept with the bench's store; returns the day they span."""
    from datetime import datetime, timedelta, timezone

    import pymongo
    from bson import ObjectId

    events = pymongo.MongoClient(mongodb_uri)[db]["events"]
    hot = {"type": {"$regex": "^hot-"}}
    have = events.count_documents(hot)
    if have:
        if have != n:
            raise SystemExit(f"the store holds {have:,} hot events, not BENCH_HOT_EVENTS={n:,}: "
                             "delete the bench's directory to start afresh")
        first = events.find_one(hot, sort=[("created_at", 1)])["created_at"].replace(tzinfo=timezone.utc)
        return first, first + timedelta(days=1)
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    step = 86_400_000 / n
    batch = []
    for i in range(n):
        batch.append({"_id": ObjectId(), "type": f"hot-{i % 12:02d}", "consumer": f"hot-consumer-{i % 997:04d}",
                      "created_at": start + timedelta(milliseconds=int(i * step)), "payload": {"i": i}})
        if len(batch) == 10_000:
            events.insert_many(batch, ordered=False)
            batch = []
    if batch:
        events.insert_many(batch, ordered=False)
    return start, start + timedelta(days=1)


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--archive", required=True, help="<root>/<db>/<collection>")
    ap.add_argument("--summary", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--metrics", action="store_true")
    a = ap.parse_args()
    summary = json.load(open(a.summary))
    start = summary["start"][:10]
    from datetime import datetime, timedelta, timezone

    t0 = datetime.fromisoformat(summary["start"]).astimezone(timezone.utc)
    mid_day = t0 + timedelta(days=15)
    mid_hour = mid_day + timedelta(hours=12)
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
    consumer, kind = "consumer-00100", "type-07"
    queries = [
        ("one consumer, one day", {"consumer": consumer, "created_from": iso(mid_day), "created_to": iso(mid_day + timedelta(days=1))},
         [mid_day.strftime("%Y-%m-%d"), mid_day.strftime("%Y-%m-%d")]),
        ("one consumer, 30 days", {"consumer": consumer, "created_from": summary["start"][:19] + "Z", "created_to": summary["end"][:19] + "Z"},
         [start, (datetime.fromisoformat(summary["end"]) - timedelta(days=1)).strftime("%Y-%m-%d")]),
        ("one type, one hour", {"type": kind, "created_from": iso(mid_hour), "created_to": iso(mid_hour + timedelta(hours=1))},
         [mid_hour.strftime("%Y-%m-%d"), mid_hour.strftime("%Y-%m-%d")]),
    ]
    glob = a.archive.rstrip("/") + "/**/*.parquet"
    con = duckdb.connect()
    print(f"archive: {summary['events']:,} events, {summary['files']} files, "
          f"{summary['bytes'] / 2**20:,.1f} MiB, {summary['start'][:10]} .. {summary['end'][:10]}; "
          f"DuckDB {duckdb.__version__} ({con.execute('SELECT current_setting(' + repr('threads') + ')').fetchone()[0]} threads)")
    rows = []
    for name, params, dts in queries:
        # Warm-up (page cache, connections), and the cross-check.
        s_ids, pages, _ = service_find(a.url, a.key, params)
        d_ids = duckdb_find(con, glob, params)
        assert s_ids == d_ids, f"{name}: the service and DuckDB disagree ({len(s_ids)} vs {len(d_ids)} events)"
        duckdb_find(con, glob, params, dts)
        svc, first, duck, duck_dt = [], [], [], []
        for _ in range(a.repeat):
            t = time.perf_counter()
            _, _, f = service_find(a.url, a.key, params)
            svc.append(time.perf_counter() - t)
            first.append(f)
            t = time.perf_counter()
            duckdb_find(con, glob, params)
            duck.append(time.perf_counter() - t)
            t = time.perf_counter()
            duckdb_find(con, glob, params, dts)
            duck_dt.append(time.perf_counter() - t)
        rows.append((name, len(s_ids), pages, svc, first, duck, duck_dt))

    ms = lambda v: f"{v * 1000:,.1f}"
    print()
    print("| query | events | pages | service p50 / p95 ms | first page p50 ms | DuckDB p50 / p95 ms | DuckDB + dt filter p50 ms | service / DuckDB (p50) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, n, pages, svc, first, duck, duck_dt in rows:
        print(f"| {name} | {n:,} | {pages} | {ms(statistics.median(svc))} / {ms(nearest_rank(svc, 0.95))} | "
              f"{ms(statistics.median(first))} | {ms(statistics.median(duck))} / {ms(nearest_rank(duck, 0.95))} | "
              f"{ms(statistics.median(duck_dt))} | {statistics.median(svc) / statistics.median(duck):.2f} |")

    # /v1/histogram, the explorer's chart: archive ranges (counted from the Parquet statistics
    # where they suffice) and a hot day in MongoDB; each checked against DuckDB or find first.
    hist = [
        ("histogram, one day, by type (archive)",
         {"created_from": iso(mid_day), "created_to": iso(mid_day + timedelta(days=1)), "by": "type"}),
        ("histogram, one day, one consumer (archive)",
         {"consumer": consumer, "created_from": iso(mid_day), "created_to": iso(mid_day + timedelta(days=1))}),
        ("histogram, 30 days, by type (archive)",
         {"created_from": summary["start"][:19] + "Z", "created_to": summary["end"][:19] + "Z", "by": "type"}),
    ]
    hist_rows = []
    for name, params in hist:
        answer = service_histogram(a.url, a.key, params)
        expected = duckdb_histogram(con, glob, params, answer["bucket_ms"])
        assert histogram_counts(answer) == expected, f"{name}: the service's buckets and DuckDB's disagree"
        times = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            service_histogram(a.url, a.key, params)
            times.append(time.perf_counter() - t)
        hist_rows.append((name, answer["total"], len(answer["buckets"]), answer["bucket"], answer["tiers"], times))
    hot_n = int(os.environ.get("BENCH_HOT_EVENTS", "100000"))
    if hot_n and os.environ.get("MONGODB_URI"):
        t = time.perf_counter()
        lo, hi = hot_events(os.environ["MONGODB_URI"], os.environ.get("AUDIT_DB_NAME", "bench"), hot_n)
        print(f"\nhot tier: {hot_n:,} events over the last day in MongoDB ({time.perf_counter() - t:,.1f} s to check or insert)")
        params = {"created_from": iso(lo), "created_to": iso(hi), "by": "type"}
        answer = service_histogram(a.url, a.key, params)
        assert answer["total"] == hot_n, f"hot histogram: {answer['total']} of {hot_n} events"
        times = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            service_histogram(a.url, a.key, params)
            times.append(time.perf_counter() - t)
        hist_rows.append((f"histogram, one day, by type (MongoDB, {hot_n:,} events)", answer["total"],
                          len(answer["buckets"]), answer["bucket"], answer["tiers"], times))
    print()
    print("| histogram | events counted | buckets | tiers | p50 / p95 ms | goal p50 <= 100 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, total, n, bucket, tiers, times in hist_rows:
        p50 = statistics.median(times)
        print(f"| {name} | {total:,} | {n} x {bucket} | {'+'.join(tiers)} | {ms(p50)} / {ms(nearest_rank(times, 0.95))} | "
              f"{'met' if p50 <= 0.1 else 'NOT MET'} |")

    rss = peak_rss_mib(a.pid)
    print(f"\nservice peak RSS (VmHWM): {rss:,.1f} MiB")
    day = rows[0]
    worst = max(statistics.median(r[3]) / statistics.median(r[5]) for r in rows)
    verdict = lambda ok: "met" if ok else "NOT MET"
    print()
    print("| goal | this run | |")
    print("| --- | --- | --- |")
    p50_day = statistics.median(day[3])
    print(f"| one consumer over one day: p50 < 1 s | {ms(p50_day)} ms | {verdict(p50_day < 1.0)} |")
    print(f"| no worse than 2x DuckDB (p50, every query) | worst {worst:.2f}x | {verdict(worst <= 2.0)} |")
    print(f"| service peak RSS < 512 MiB | {rss:,.1f} MiB | {verdict(rss < 512)} |")
    if a.metrics:
        with urllib.request.urlopen(a.url + "/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("auditlog_archive_find_") and not line.startswith("auditlog_archive_find_read_seconds_bucket"):
                    print(line)


if __name__ == "__main__":
    main()
