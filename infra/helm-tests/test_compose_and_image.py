"""Checks of infra/compose/docker-compose.yml and the Dockerfile that need no Docker engine.

The Compose file is validated against the Compose Specification schema by run.sh
(check-jsonschema); these tests check that its topology is consistent: the bootstrap gets every
member of every replica set, mongos every config-server member, and the apps start after the
bootstrap.
"""
import pathlib
import re
from collections import defaultdict

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
COMPOSE = yaml.safe_load((REPO / "infra" / "compose" / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def arg(cmd, flag):
    """Values of --flag=value or --flag value in a command list."""
    out = []
    for i, a in enumerate(cmd):
        if a.startswith(flag + "="):
            out.append(a.split("=", 1)[1])
        elif a == flag:
            out.append(cmd[i + 1])
    return out


def replica_sets(role):
    sets = defaultdict(list)
    for name, svc in SERVICES.items():
        cmd = svc.get("command") or []
        if isinstance(cmd, list) and cmd[:1] == ["mongod"] and role in cmd:
            (rs,) = arg(cmd, "--replSet")
            sets[rs].append("%s:27017" % svc.get("hostname", name))
    return {rs: sorted(m) for rs, m in sets.items()}


def parse_replset(spec):
    name, hosts = spec.split("/", 1)
    return name, sorted(hosts.split(","))


def test_compose_has_the_sharded_cluster_and_the_apps():
    assert {"keyfile", "mongos", "bootstrap", "service", "archiver"} <= set(SERVICES)
    assert len(replica_sets("--configsvr")) == 1
    assert len(replica_sets("--shardsvr")) == 2


def test_bootstrap_gets_every_member_of_every_replica_set():
    cmd = SERVICES["bootstrap"]["command"]
    assert SERVICES["bootstrap"]["entrypoint"] == ["/usr/local/bin/auditlog-ops"]
    assert cmd[:2] == ["cluster", "bootstrap"]
    (cfg,) = arg(cmd, "--config-replset")
    assert dict([parse_replset(cfg)]) == replica_sets("--configsvr")
    assert dict(parse_replset(s) for s in arg(cmd, "--shard-replset")) == replica_sets("--shardsvr")
    assert arg(cmd, "--keyfile") == ["/keys/keyfile"]
    env = SERVICES["bootstrap"]["environment"]
    assert env["MONGODB_URI"].startswith("mongodb://mongos:27017")
    assert "AUDIT_SHARD_KEY" in env and "MONGODB_ADMIN_PASSWORD" in env


def test_mongos_lists_every_config_member():
    cmd = SERVICES["mongos"]["command"]
    (configdb,) = arg(cmd, "--configdb")
    assert dict([parse_replset(configdb)]) == replica_sets("--configsvr")


def test_every_mongod_uses_the_keyfile_and_its_own_volume():
    data_volumes = []
    for name, svc in SERVICES.items():
        cmd = svc.get("command") or []
        if isinstance(cmd, list) and cmd[:1] in (["mongod"], ["mongos"]):
            assert arg(cmd, "--keyFile") == ["/keys/keyfile"], name
            assert svc["depends_on"]["keyfile"]["condition"] == "service_completed_successfully"
            if cmd[0] == "mongod":
                assert arg(cmd, "--dbpath") == ["/data/db"]
                data = [v for v in svc["volumes"] if v.endswith(":/data/db")]
                assert len(data) == 1, name
                data_volumes.append(data[0])
    assert len(set(data_volumes)) == len(data_volumes)


def test_apps_start_after_the_bootstrap_and_run_locked_down():
    for name in ("service", "archiver"):
        svc = SERVICES[name]
        assert svc["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully"
        assert "authSource=admin" in svc["environment"]["MONGODB_URI"]
    for name in ("bootstrap", "service", "archiver"):
        svc = SERVICES[name]
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
        assert svc["user"] != "0:0" if "user" in svc else True
    assert SERVICES["service"]["environment"]["AUDIT_API_KEY"]
    # Published ports bind to loopback only.
    for svc in SERVICES.values():
        for p in svc.get("ports", []):
            assert p.startswith("127.0.0.1:"), p


def test_queue_mode_is_opt_in_with_a_healthchecked_rabbitmq():
    rmq = SERVICES["rabbitmq"]
    # Not started by a plain `docker compose up`: the default run stays in direct mode.
    assert rmq["profiles"] == ["queue"]
    assert re.fullmatch(r"\$\{RABBITMQ_IMAGE:-rabbitmq:3\.13-management\}", rmq["image"])
    assert rmq["healthcheck"]["test"] == ["CMD", "rabbitmq-diagnostics", "-q", "ping"]
    # Its data survives re-creation: a named volume, and a fixed host name (the node name).
    assert "rabbitmq:/var/lib/rabbitmq" in rmq["volumes"] and "rabbitmq" in COMPOSE["volumes"]
    assert rmq["hostname"] == "rabbitmq"
    env = SERVICES["service"]["environment"]
    assert env["AUDIT_INGEST_MODE"] == "${AUDIT_INGEST_MODE:-direct}"
    assert "@rabbitmq:5672/" in env["AUDIT_AMQP_URL"]
    # Nothing outside the profile needs RabbitMQ to start.
    for name, svc in SERVICES.items():
        assert "rabbitmq" not in (svc.get("depends_on") or {}), name


def test_docker_waits_for_the_services_shutdown_in_either_mode():
    # The service's default grace is 30 s (AUDIT_SHUTDOWN_GRACE_SECS, not set here); queue mode
    # may use it three times (open requests, the drain, the writer), then 15 s to spare: the
    # chart's terminationGracePeriodSeconds rule. Docker's default (10 s) would kill it inside.
    env = SERVICES["service"]["environment"]
    assert "AUDIT_SHUTDOWN_GRACE_SECS" not in env
    grace = SERVICES["service"]["stop_grace_period"]
    assert re.fullmatch(r"\d+s", grace), grace
    assert int(grace[:-1]) >= 3 * 30 + 15


def test_dockerfile_builds_the_three_binaries_into_a_small_non_root_image():
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(stages) == 2 and stages[0].startswith("rust:")
    assert stages[-1] == "gcr.io/distroless/cc-debian12:nonroot"
    assert "--locked" in text
    for b in ("auditlog-service", "auditlog-archiver", "auditlog-ops"):
        assert "--bin %s" % b in text and "target/release/%s" % b in text
    assert re.search(r"^USER 65532:65532$", text, re.M)
    assert re.search(r"^ARG RUST_VERSION=1\.(8[8-9]|9\d)", text, re.M)
    ignored = (REPO / ".dockerignore").read_text().split()
    for d in ("target/", "data/", "archive/"):
        assert d in ignored
