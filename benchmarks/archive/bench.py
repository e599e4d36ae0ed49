"""Driver of benchmarks/archive/run.sh: two scenarios, each archived by `auditlog-archiver once`
and by the peer a user would pick instead (pymongoarrow find_arrow_all +
pyarrow.parquet.write_table) over the same range:

  one day        24 hourly windows, BENCH_EVENTS events (default 1,000,000)
  7-day backlog  168 hourly windows, BENCH_BACKLOG_EVENTS events (default 2,000,000)

Each scenario has a database of its own, so a tool reads exactly the scenario's events. Per
tool and scenario: wall-clock events/s; client CPU seconds (utime + stime of the tool's own
process, from /proc/<pid>/stat once it has exited, before it is reaped); peak RSS (VmHWM,
sampled, and the kernel's ru_maxrss of the reaped child — the larger); and the server's
(FerretDB's) CPU seconds over the same run, which says where the rest of the time went."""
import datetime as dt
import os
import shutil
import subprocess
import sys
import time

from pymongo import MongoClient

uri = os.environ["MONGODB_URI"]
coll_name = os.environ["AUDIT_COLLECTION"]
day_events = int(os.environ["BENCH_EVENTS"])
week_events = int(os.environ["BENCH_BACKLOG_EVENTS"])
work = os.environ["BENCH_DIR"]
compression = os.environ["BENCH_COMPRESSION"]
archiver = os.environ["ARCHIVER_BIN"]
server_pid = int(os.environ.get("BENCH_SERVER_PID") or 0)
only = os.environ.get("BENCH_SCENARIOS", "day,backlog,integrity").split(",")
integrity_events = int(os.environ.get("BENCH_INTEGRITY_EVENTS", "500000"))
TICK = os.sysconf("SC_CLK_TCK")

# Whole UTC days ending three days ago: every hourly window is due for the archiver.
now = dt.datetime.now(dt.timezone.utc)
last_day_end = (now - dt.timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)


def log(msg):
    print(f"bench-archive: {msg}", file=sys.stderr, flush=True)


def load(db, n, days):
    coll = MongoClient(uri)[db][coll_name]
    start = last_day_end - dt.timedelta(days=days)
    if coll.estimated_document_count() == n and coll.find_one(
            {"created_at": {"$gte": start, "$lt": start + dt.timedelta(hours=1)}}) is not None:
        log(f"{db}: reusing {n:,} loaded events")
        return start
    coll.drop()
    log(f"{db}: loading {n:,} events over {days} day(s)")
    t0 = time.time()
    span_ms = days * 86_400_000
    consumers = [f"service-{i}" for i in range(40)]
    types = ["login", "logout", "payment.created", "payment.failed", "profile.updated", "order.shipped"]
    batch = []
    for i in range(n):
        batch.append({
            "type": types[i % len(types)],
            "consumer": consumers[i % len(consumers)],
            "created_at": start + dt.timedelta(milliseconds=i * span_ms // n),
            "payload": {"user": f"user-{i % 10007}", "ip": f"10.0.{i % 256}.{(i * 7) % 256}",
                        "amount": (i % 1000) * 1.25, "n": i, "ok": i % 3 != 0,
                        "tags": ["a", "b", f"t{i % 17}"], "meta": {"agent": "bench/1.0", "retry": i % 4}},
        })
        if len(batch) == 10_000:
            coll.insert_many(batch, ordered=False)
            batch = []
    if batch:
        coll.insert_many(batch, ordered=False)
    log(f"{db}: loaded in {time.time() - t0:.1f} s")
    return start


def proc_cpu(pid):
    """utime + stime of a process (its threads included), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def vm_hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def measure(name, argv, env=None):
    """Runs a tool; returns wall seconds, its CPU seconds, its peak RSS MiB, the server's CPU
    seconds meanwhile."""
    server0 = proc_cpu(server_pid) if server_pid else 0.0
    # A file, not a pipe: a long run logs more than a pipe holds, and nobody reads it meanwhile.
    errors = open(os.path.join(work, f"{name}.log"), "w+b")
    t0 = time.time()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=errors)
    peak = 0.0
    while True:
        peak = max(peak, vm_hwm(proc.pid))
        # Exited, but not reaped: /proc/<pid>/stat still holds its CPU times.
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            break
        time.sleep(0.05)
    elapsed = time.time() - t0
    cpu = proc_cpu(proc.pid)
    server = (proc_cpu(server_pid) - server0) if server_pid else float("nan")
    _, status, usage = os.wait4(proc.pid, 0)
    peak = max(peak, usage.ru_maxrss / 1024.0)  # KiB -> MiB
    errors.seek(0)
    err = errors.read().decode(errors="replace")
    errors.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        log(f"{name} failed (exit {code}):\n{err[-4000:]}")
        sys.exit(1)
    return {"s": elapsed, "cpu": cpu, "rss": peak, "server": server}


PEER = r"""
import os, sys, pyarrow.parquet as pq, datetime as dt
from pymongo import MongoClient
from pymongoarrow.api import find_arrow_all
coll = MongoClient(os.environ["MONGODB_URI"])[sys.argv[5]][os.environ["AUDIT_COLLECTION"]]
start = dt.datetime.fromisoformat(sys.argv[1]); end = dt.datetime.fromisoformat(sys.argv[2])
table = find_arrow_all(coll, {"created_at": {"$gte": start, "$lt": end}})
# ObjectId is an extension type pyarrow cannot write; users convert it (to a hex string here).
import pyarrow as pa
if "_id" in table.column_names:
    ids = [v.hex() if hasattr(v, "hex") else str(v) for v in table.column("_id").to_pylist()]
    table = table.set_column(table.column_names.index("_id"), "_id", pa.array(ids, pa.string()))
pq.write_table(table, sys.argv[3], compression=sys.argv[4])
print(table.num_rows)
"""


def scenario(key, title, n, days):
    db = f"bench_{key}"
    start = load(db, n, days)
    end = start + dt.timedelta(days=days)
    client = MongoClient(uri)
    for c in ("archive_windows", "archive_lease", "archive_runs"):
        client[db][c].drop()
    out = os.path.join(work, f"archive-{key}")
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, AUDIT_DB_NAME=db, AUDIT_ARCHIVE_URL=out,
               AUDIT_ARCHIVE_COMPRESSION=compression, AUDIT_LOG_FORMAT="json",
               AUDIT_RETENTION_DAYS="30")
    log(f"{title}: auditlog-archiver once")
    ours = measure("auditlog-archiver", [archiver, "once"], env)
    windows = list(client[db]["archive_windows"].find())
    archived = sum(w["rows"] for w in windows)
    if archived != n or len(windows) != 24 * days:
        log(f"archiver recorded {len(windows)} windows / {archived:,} rows, expected "
            f"{24 * days} / {n:,}")
        sys.exit(1)
    peer_out = os.path.join(work, f"peer-{key}.parquet")
    log(f"{title}: pymongoarrow find_arrow_all + pyarrow.parquet.write_table")
    peer = measure("peer", [sys.executable, "-c", PEER, start.isoformat(), end.isoformat(),
                            peer_out, compression, db])
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    ours["size"], peer["size"] = size, os.path.getsize(peer_out)
    for r in (ours, peer):
        r["rate"] = n / r["s"]
    return {"title": title, "n": n, "days": days, "ours": ours, "peer": peer}


def integrity():
    """The signed archive's costs: one day archived with signing off and on (twice each,
    alternating, the faster of each pair kept), then `verify --public-key` over the signed
    archive against `sha256sum` over the same Parquet files."""
    db = "bench_integrity"
    start = load(db, integrity_events, 1)
    client = MongoClient(uri)
    keys = os.path.join(work, "integrity-keys")
    shutil.rmtree(keys, ignore_errors=True)
    subprocess.run([archiver, "keys", "new", "--out", keys], check=True, stdout=subprocess.DEVNULL)
    runs = {"off": [], "on": []}
    for signing in ("off", "on", "off", "on"):
        for c in ("archive_windows", "archive_lease", "archive_runs"):
            client[db][c].drop()
        out = os.path.join(work, f"archive-integrity-{signing}")
        shutil.rmtree(out, ignore_errors=True)
        env = dict(os.environ, AUDIT_DB_NAME=db, AUDIT_ARCHIVE_URL=out,
                   AUDIT_ARCHIVE_COMPRESSION=compression, AUDIT_LOG_FORMAT="json",
                   AUDIT_RETENTION_DAYS="30")
        if signing == "on":
            env["AUDIT_ARCHIVE_SIGNING_KEY_FILE"] = os.path.join(keys, "archive-signing.key")
        log(f"integrity: auditlog-archiver once, signing {signing}")
        runs[signing].append(measure(f"archiver-signing-{signing}", [archiver, "once"], env))
    signed = os.path.join(work, "archive-integrity-on")
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(signed) for f in fs if f.endswith(".parquet"))
    size = sum(os.path.getsize(f) for f in files)
    env = dict(os.environ, AUDIT_DB_NAME=db, AUDIT_ARCHIVE_URL=signed, AUDIT_LOG_FORMAT="json")
    log("integrity: verify --public-key, then sha256sum over the same files")
    verify = measure("verify", [archiver, "verify", "--public-key",
                                os.path.join(keys, "archive-signing.pub")], env)
    sha = measure("sha256sum", ["sha256sum", *files])
    off = min(runs["off"], key=lambda r: r["s"])
    on = min(runs["on"], key=lambda r: r["s"])
    return {"n": integrity_events, "files": len(files), "size": size, "off": off, "on": on,
            "verify": verify, "sha": sha}


def integrity_table(r):
    mib = r["size"] / 1048576
    print(f"\nintegrity: {r['n']:,} events in 24 hourly windows, {r['files']} Parquet files, "
          f"{mib:.1f} MiB")
    print(f"  archive run, signing off: {r['off']['s']:.2f} s (client CPU {r['off']['cpu']:.2f} s)")
    print(f"  archive run, signing on:  {r['on']['s']:.2f} s (client CPU {r['on']['cpu']:.2f} s)")
    print(f"  verify --public-key:      {r['verify']['s']:.2f} s = {mib / r['verify']['s']:.0f} MiB/s "
          f"(client CPU {r['verify']['cpu']:.2f} s, peak RSS {r['verify']['rss']:.0f} MiB)")
    print(f"  sha256sum, same files:    {r['sha']['s']:.2f} s = {mib / r['sha']['s']:.0f} MiB/s")


def table(r):
    o, p = r["ours"], r["peer"]
    print(f"\n{r['title']}: {r['n']:,} events in {24 * r['days']} hourly windows "
          f"(FerretDB on SQLite, {compression})")
    print(f"{'':32}{'events/s':>10}{'seconds':>9}{'client CPU s':>14}{'peak RSS MiB':>14}"
          f"{'server CPU s':>14}{'Parquet MiB':>13}")
    for name, x in (("auditlog-archiver once", o), ("pymongoarrow + pyarrow.parquet", p)):
        print(f"{name:32}{x['rate']:>10,.0f}{x['s']:>9.1f}{x['cpu']:>14.1f}{x['rss']:>14.1f}"
              f"{x['server']:>14.1f}{x['size'] / 1048576:>13.1f}")
    print(f"{'ratio (archiver / peer)':32}{o['rate'] / p['rate']:>10.2f}{'':>9}"
          f"{o['cpu'] / p['cpu']:>14.2f}{o['rss'] / p['rss']:>14.2f}"
          f"{o['server'] / p['server'] if p['server'] else float('nan'):>14.2f}")


def verdict(ok):
    return "met" if ok else "NOT met"


def main():
    results = {}
    if "day" in only:
        results["day"] = scenario("day", "one day", day_events, 1)
    if "backlog" in only:
        results["backlog"] = scenario("backlog", "7-day backlog", week_events, 7)
    if "integrity" in only:
        results_integrity = integrity()
    else:
        results_integrity = None
    print()
    print(f"archive benchmark: one day = {day_events:,} events; 7-day backlog = "
          f"{week_events:,} events" + ("" if week_events == 7 * day_events else
                                       f" (scaled down from {7 * day_events:,})"))
    for r in results.values():
        table(r)
    if results_integrity:
        integrity_table(results_integrity)
    print("\ntargets:")
    if "day" in results:
        o, p = results["day"]["ours"], results["day"]["peer"]
        print(f"  one day, events/s >= 1.00x the peer's:   {o['rate'] / p['rate']:.2f}x -> "
              f"{verdict(o['rate'] >= p['rate'])}")
        print(f"  one day, client CPU <= 0.50x the peer's: {o['cpu'] / p['cpu']:.2f}x -> "
              f"{verdict(o['cpu'] <= 0.5 * p['cpu'])}")
        print(f"  one day, peak RSS <= 0.25x the peer's:   {o['rss'] / p['rss']:.2f}x -> "
              f"{verdict(o['rss'] <= 0.25 * p['rss'])}")
    if "day" in results and "backlog" in results:
        d, w = results["day"], results["backlog"]
        # The backlog's cost per event against the day's, times the 7 days' worth of events
        # the issue compares: linear in events gives 7x.
        scale = 7 * d["n"] / w["n"]
        wall = w["ours"]["s"] / d["ours"]["s"] * scale
        cpu = w["ours"]["cpu"] / d["ours"]["cpu"] * scale
        print(f"  7-day backlog costs <= 7.5x one day (wall, scaled to 7x one day's events): "
              f"{wall:.2f}x -> {verdict(wall <= 7.5)}  (client CPU: {cpu:.2f}x; peer's wall: "
              f"{w['peer']['s'] / d['peer']['s'] * scale:.2f}x)")

    if results_integrity:
        r = results_integrity
        speed = r["sha"]["s"] / r["verify"]["s"]
        cost = r["on"]["s"] / r["off"]["s"] - 1
        print(f"  verify at >= 0.80x sha256sum's rate:      {speed:.2f}x -> {verdict(speed >= 0.8)}")
        print(f"  signing adds < 2% to an archive run:     {cost * 100:+.1f}% -> {verdict(cost < 0.02)}")


main()
