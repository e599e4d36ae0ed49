"""Find-over-the-archive benchmark driver (run by benchmarks/find-archive/run.sh).

Runs each query against the service (GET /v1/find, every page at limit 1000) and against DuckDB
(read_parquet over the same files with hive_partitioning, the same filters, the same order),
alternating, BENCH_REPEAT times after one warm-up each; checks that both return the same events
in the same order; prints p50/p95 latencies, the ratio, the service's peak RSS, and each goal
with met / not met.
"""
import argparse
import json
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
