"""Driver of archiver/bench/run.sh: load events, run both tools as child processes, and
report wall-clock throughput and each child's own peak RSS (wait4 rusage, so one tool's
peak never leaks into the other's figure)."""
import datetime as dt
import os
import shutil
import subprocess
import sys
import time

from pymongo import MongoClient

uri = os.environ["MONGODB_URI"]
db_name = os.environ["AUDIT_DB_NAME"]
coll_name = os.environ["AUDIT_COLLECTION"]
n = int(os.environ["BENCH_EVENTS"])
work = os.environ["BENCH_DIR"]
compression = os.environ["BENCH_COMPRESSION"]
archiver = os.environ["ARCHIVER_BIN"]

# One hourly window two days ago holds all events: the window is as large as it gets, which
# is what the memory bound is about, and each tool makes one pass over the data.
now = dt.datetime.now(dt.timezone.utc)
start = (now - dt.timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
end = start + dt.timedelta(hours=1)


def log(msg):
    print(f"bench-archive: {msg}", file=sys.stderr, flush=True)


def load():
    coll = MongoClient(uri)[db_name][coll_name]
    if coll.estimated_document_count() == n:
        log(f"reusing {n} loaded events")
        return
    coll.drop()
    log(f"loading {n} events")
    t0 = time.time()
    step_ms = max(1, 3_600_000 // n) if n < 3_600_000 else 1
    consumers = [f"service-{i}" for i in range(40)]
    types = ["login", "logout", "payment.created", "payment.failed", "profile.updated", "order.shipped"]
    batch = []
    for i in range(n):
        batch.append({
            "type": types[i % len(types)],
            "consumer": consumers[i % len(consumers)],
            "created_at": start + dt.timedelta(milliseconds=(i * step_ms) % 3_600_000),
            "payload": {"user": f"user-{i % 10007}", "ip": f"10.0.{i % 256}.{(i * 7) % 256}",
                        "amount": (i % 1000) * 1.25, "n": i, "ok": i % 3 != 0,
                        "tags": ["a", "b", f"t{i % 17}"], "meta": {"agent": "bench/1.0", "retry": i % 4}},
        })
        if len(batch) == 10_000:
            coll.insert_many(batch, ordered=False)
            batch = []
    if batch:
        coll.insert_many(batch, ordered=False)
    log(f"loaded in {time.time() - t0:.1f} s")


def measure(name, argv, env=None):
    t0 = time.time()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.time() - t0
    err = proc.stderr.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        log(f"{name} failed (exit {code}):\n{err[-4000:]}")
        sys.exit(1)
    return elapsed, usage.ru_maxrss / 1024.0  # KiB → MiB


PEER = r"""
import os, sys, pyarrow.parquet as pq, datetime as dt
from pymongo import MongoClient
from pymongoarrow.api import find_arrow_all
coll = MongoClient(os.environ["MONGODB_URI"])[os.environ["AUDIT_DB_NAME"]][os.environ["AUDIT_COLLECTION"]]
start = dt.datetime.fromisoformat(sys.argv[1]); end = dt.datetime.fromisoformat(sys.argv[2])
table = find_arrow_all(coll, {"created_at": {"$gte": start, "$lt": end}})
# ObjectId is an extension type pyarrow cannot write; users convert it (to a hex string here).
import pyarrow as pa, pyarrow.compute as pc
if "_id" in table.column_names:
    ids = [v.hex() if hasattr(v, "hex") else str(v) for v in table.column("_id").to_pylist()]
    table = table.set_column(table.column_names.index("_id"), "_id", pa.array(ids, pa.string()))
pq.write_table(table, sys.argv[3], compression=sys.argv[4])
print(table.num_rows)
"""


def main():
    load()
    client = MongoClient(uri)
    client[db_name]["archive_windows"].drop()
    client[db_name]["archive_lease"].drop()
    out = os.path.join(work, "archive")
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, AUDIT_ARCHIVE_URL=out, AUDIT_ARCHIVE_COMPRESSION=compression,
               AUDIT_LOG_FORMAT="json", AUDIT_RETENTION_DAYS="30")
    log("running auditlog-archiver once")
    ours_s, ours_mib = measure("auditlog-archiver", [archiver, "once"], env)
    windows = list(client[db_name]["archive_windows"].find())
    archived = sum(w["rows"] for w in windows)
    if archived != n:
        log(f"archiver recorded {archived} rows, expected {n}")
        sys.exit(1)

    peer_out = os.path.join(work, "peer.parquet")
    log("running pymongoarrow find_arrow_all + pyarrow.parquet.write_table")
    peer_s, peer_mib = measure("peer", [sys.executable, "-c", PEER, start.isoformat(),
                                        end.isoformat(), peer_out, compression])

    ours_rate, peer_rate = n / ours_s, n / peer_s
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    print()
    print(f"archive benchmark: {n:,} events in one hourly window, FerretDB (SQLite), {compression}")
    print(f"{'':34}{'events/s':>12}{'seconds':>10}{'peak RSS MiB':>14}")
    print(f"{'auditlog-archiver once':34}{ours_rate:>12,.0f}{ours_s:>10.1f}{ours_mib:>14.1f}")
    print(f"{'pymongoarrow + pyarrow.parquet':34}{peer_rate:>12,.0f}{peer_s:>10.1f}{peer_mib:>14.1f}")
    print(f"{'ratio (archiver / peer)':34}{ours_rate / peer_rate:>12.2f}{'':>10}{ours_mib / peer_mib:>14.2f}")
    print(f"archive: {size / 1048576:.1f} MiB Parquet; peer file: "
          f"{os.path.getsize(peer_out) / 1048576:.1f} MiB")
    print(f"targets: throughput ratio >= 1.00 -> {'met' if ours_rate >= peer_rate else 'NOT met'}; "
          f"memory ratio <= 0.25 -> {'met' if ours_mib <= peer_mib / 4 else 'NOT met'}; "
          f"peak RSS < 256 MiB -> {'met' if ours_mib < 256 else 'NOT met'}")


main()
