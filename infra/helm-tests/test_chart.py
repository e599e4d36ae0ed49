"""Tests over the rendered manifests of helm/auditlog (no cluster: `helm template` only).

Run through run.sh, which installs the pinned helm and sets $HELM. Each test names the
operator-facing property it protects; docs/architecture.md §7 ("Deployment: what the chart
guarantees, and why") lists why each one matters.
"""
import base64
import json
import os
import pathlib
import re
import subprocess

import pytest
import yaml

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
CHART = REPO / "helm" / "auditlog"
VALUES_DIR = HERE / "values"
EXAMPLES_DIR = CHART / "examples"
HELM = os.environ.get("HELM", str(REPO / "target" / "tools" / "bin" / "helm"))
NAMESPACE = "audit"
RELEASE = "auditlog"
DOMAIN_DEFAULT = "cluster.local"
KUBE_VERSION = "1.33.0"

VALUE_SETS = (["default"] + sorted(p.stem for p in VALUES_DIR.glob("*.yaml"))
              + sorted("example-" + p.stem for p in EXAMPLES_DIR.glob("*.yaml")))
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "CronJob", "Pod"}


# Rendered as for a cluster with the Prometheus Operator's CRDs, unless a test says otherwise:
# the chart creates those kinds only where the cluster serves them.
MONITORING_APIS = ("monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule")


def helm_template(values_file=None, sets=(), check=True, api_versions=MONITORING_APIS):
    cmd = [HELM, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    for a in api_versions:
        cmd += ["--api-versions", a]
    if values_file:
        cmd += ["--values", str(values_file)]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError("helm template failed: %s\n%s" % (" ".join(cmd), proc.stderr))
    return proc


_cache = {}


def values_file(value_set):
    """The file of a value set: none for the defaults, the chart's examples, the test sets."""
    if value_set == "default":
        return None
    if value_set.startswith("example-"):
        return EXAMPLES_DIR / (value_set[len("example-"):] + ".yaml")
    return VALUES_DIR / (value_set + ".yaml")


def render(value_set="default", sets=()):
    key = (value_set, tuple(sets))
    if key not in _cache:
        out = helm_template(values_file(value_set), sets).stdout
        _cache[key] = [d for d in yaml.safe_load_all(out) if d]
    return _cache[key]


def values_of(value_set="default"):
    """The chart's values merged with a value set (a plain deep merge, like helm's)."""
    def merge(a, b):
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(a.get(k), dict):
                merge(a[k], v)
            else:
                a[k] = v
        return a
    base = yaml.safe_load((CHART / "values.yaml").read_text())
    if value_set != "default":
        merge(base, yaml.safe_load(values_file(value_set).read_text()))
    return base


def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, "expected one %s/%s, found %d" % (kind, name, len(found))
    return found[0]


def pod_spec(doc):
    if doc["kind"] == "Pod":
        return doc["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def pod_labels(doc):
    if doc["kind"] == "Pod":
        return doc["metadata"]["labels"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return doc["spec"]["template"]["metadata"]["labels"]


def containers(doc):
    spec = pod_spec(doc)
    return [("init", c) for c in spec.get("initContainers", [])] + [("main", c) for c in spec["containers"]]


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def members(sts, n, domain=DOMAIN_DEFAULT):
    return ["%s-%d.%s-hl.%s.svc.%s:27017" % (sts, i, sts, NAMESPACE, domain) for i in range(n)]


def flag_values(args, flag):
    out = []
    for i, a in enumerate(args):
        if a.startswith(flag + "="):
            out.append(a.split("=", 1)[1])
        elif a == flag:
            out.append(args[i + 1])
    return out


# ------------------------------------------------------------------------ MongoDB topology

@pytest.mark.parametrize("value_set", ["default", "tls-3x3", "archiver-cronjob-hdfs"])
def test_one_statefulset_per_replica_set(value_set):
    v = values_of(value_set)["mongodb"]
    docs = render(value_set)
    sts = {d["metadata"]["name"]: d for d in of_kind(docs, "StatefulSet")}
    expected = {"auditlog-cfg"} | {"auditlog-shard%d" % i for i in range(v["shards"]["count"])}
    assert set(sts) == expected
    cfg = sts["auditlog-cfg"]
    assert cfg["spec"]["replicas"] == v["configsvr"]["replicas"]
    cfg_args = pod_spec(cfg)["containers"][0]["args"]
    assert "--configsvr" in cfg_args and "--replSet=cfg" in cfg_args
    for i in range(v["shards"]["count"]):
        s = sts["auditlog-shard%d" % i]
        assert s["spec"]["replicas"] == v["shards"]["members"]
        args = pod_spec(s)["containers"][0]["args"]
        assert "--shardsvr" in args and "--replSet=shard%d" % i in args
        # Each replica set is its own selector: the PDB and anti-affinity of one shard never
        # count the pods of another.
        assert s["spec"]["selector"]["matchLabels"]["auditlog/replica-set"] == "shard%d" % i
        assert s["spec"]["serviceName"] == "auditlog-shard%d-hl" % i
        assert s["spec"]["podManagementPolicy"] == "Parallel"


def test_persistence_size_and_storage_class():
    docs = render("tls-3x3")
    s = one(docs, "StatefulSet", "auditlog-shard2")
    claim = s["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "fast-ssd"
    assert claim["resources"]["requests"]["storage"] == "200Gi"
    dev = render("archiver-cronjob-hdfs")
    assert "volumeClaimTemplates" not in one(dev, "StatefulSet", "auditlog-shard0")["spec"]


@pytest.mark.parametrize("value_set,sets", [
    ("default", ()),
    ("tls-3x3", ()),
    ("archiver-cronjob-hdfs", ()),
    ("default", ("mongodb.configsvr.replicas=5",)),
])
def test_mongos_configdb_lists_every_config_member(value_set, sets):
    v = values_of(value_set)
    n = v["mongodb"]["configsvr"]["replicas"]
    for s in sets:
        if s.startswith("mongodb.configsvr.replicas="):
            n = int(s.split("=")[1])
    docs = render(value_set, sets)
    mongos = one(docs, "Deployment", "auditlog-mongos")
    c = pod_spec(mongos)["containers"][0]
    assert c["command"] == ["mongos"]
    (configdb,) = flag_values(c["args"], "--configdb")
    name, hosts = configdb.split("/", 1)
    assert name == "cfg"
    assert hosts.split(",") == members("auditlog-cfg", n, v["clusterDomain"])


@pytest.mark.parametrize("value_set", ["default", "tls-3x3"])
def test_pre_rollback_hook_checks_the_revisions_own_shards(value_set):
    """helm rollback runs the target revision's pre-rollback hook before changing anything:
    it must name exactly that revision's shards, reach mongos as bootstrap does, and be
    deleted once it passes."""
    docs = render(value_set)
    job = one(docs, "Job", "auditlog-check-shards")
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "pre-rollback"
    assert ann["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert job["spec"]["backoffLimit"] == 0
    spec = pod_spec(job)
    c = spec["containers"][0]
    assert c["command"] == ["/usr/local/bin/auditlog-ops"] and c["args"][:2] == ["cluster", "check-shards"]
    boot = pod_spec(one(docs, "Job", "auditlog-bootstrap"))["containers"][0]
    shard_specs = lambda args, flag: [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]
    assert shard_specs(c["args"], "--shard") == shard_specs(boot["args"], "--shard-replset")
    assert len(shard_specs(c["args"], "--shard")) == values_of(value_set)["mongodb"]["shards"]["count"]
    assert env_of(c)["MONGODB_URI"] == env_of(boot)["MONGODB_URI"]
    assert [a for a in c["args"] if a.startswith("--tls") or a.startswith("--keyfile")] == \
        [a for a in boot["args"] if a.startswith("--tls") or a.startswith("--keyfile")]
    assert spec.get("initContainers") == pod_spec(one(docs, "Job", "auditlog-bootstrap")).get("initContainers")
    # The NetworkPolicies let the bootstrap component reach mongos; the check is one of it.
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "bootstrap"
    more = render(value_set, ("mongodb.shards.count=3",))
    assert len(shard_specs(pod_spec(one(more, "Job", "auditlog-check-shards"))["containers"][0]["args"], "--shard")) == 3


def test_no_shard_check_with_an_external_mongodb():
    assert [d for d in render("external-mongodb") if d["kind"] == "Job"
            and d["metadata"]["name"] == "auditlog-check-shards"] == []


@pytest.mark.parametrize("value_set", ["default", "tls-3x3", "archiver-cronjob-hdfs", "existing-secrets"])
def test_bootstrap_job_gets_every_member_and_the_shard_key(value_set):
    v = values_of(value_set)
    m = v["mongodb"]
    docs = render(value_set)
    job = one(docs, "Job", "auditlog-bootstrap")
    ann = job["metadata"]["annotations"]
    assert set(ann["helm.sh/hook"].split(",")) == {"post-install", "post-upgrade"}
    # Deleted by helm once it succeeds (helm uninstall never deletes hooks); a failed one stays.
    assert ann["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    c = pod_spec(job)["containers"][0]
    assert c["command"] == ["/usr/local/bin/auditlog-ops"]
    assert c["args"][:2] == ["cluster", "bootstrap"]
    domain = v["clusterDomain"]
    assert flag_values(c["args"], "--config-replset") == [
        "cfg/" + ",".join(members("auditlog-cfg", m["configsvr"]["replicas"], domain))]
    assert flag_values(c["args"], "--shard-replset") == [
        "shard%d/%s" % (i, ",".join(members("auditlog-shard%d" % i, m["shards"]["members"], domain)))
        for i in range(m["shards"]["count"])]
    (keyfile,) = flag_values(c["args"], "--keyfile")
    assert keyfile.startswith("/etc/mongodb/auth/")
    env = env_of(c)
    assert env["AUDIT_SHARD_KEY"]["value"] == v["shardKey"]
    assert env["AUDIT_RETENTION_DAYS"]["value"] == str(v["retentionDays"])
    assert env["AUDIT_BOOTSTRAP_DEADLINE"]["value"] == m["bootstrap"]["deadline"]
    assert env["MONGODB_URI"]["value"].startswith("mongodb://auditlog-mongos.%s.svc.%s:27017/" % (NAMESPACE, domain))
    secret = m["auth"]["existingSecret"] or "auditlog-mongodb"
    assert env["MONGODB_ADMIN_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "mongodb-root-username"}
    assert env["MONGODB_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "mongodb-root-password"}
    if m["tls"]["enabled"]:
        assert flag_values(c["args"], "--tls-ca-file") == ["/etc/mongodb/tls/ca.crt"]
        assert flag_values(c["args"], "--tls-certificate-key-file")
        assert "tls=true" in env["MONGODB_URI"]["value"]


def test_shard_count_drives_bootstrap_and_statefulsets_together():
    docs = render("default", ("mongodb.shards.count=5", "mongodb.shards.members=1", "shardKey=hashed-consumer"))
    assert len(of_kind(docs, "StatefulSet")) == 6
    c = pod_spec(one(docs, "Job", "auditlog-bootstrap"))["containers"][0]
    shards = flag_values(c["args"], "--shard-replset")
    assert [s.split("/")[0] for s in shards] == ["shard%d" % i for i in range(5)]
    assert all(len(s.split("/")[1].split(",")) == 1 for s in shards)
    assert env_of(c)["AUDIT_SHARD_KEY"]["value"] == "hashed-consumer"


def test_headless_services_publish_not_ready_addresses():
    for vs in VALUE_SETS:
        docs = render(vs)
        headless = {d["metadata"]["name"]: d for d in of_kind(docs, "Service") if d["spec"].get("clusterIP") == "None"}
        for name, svc in headless.items():
            assert svc["spec"]["publishNotReadyAddresses"] is True, name
        for sts in of_kind(docs, "StatefulSet"):
            svc = headless[sts["spec"]["serviceName"]]
            assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]


def test_mongodb_probes_are_light():
    """No mongosh per probe: tcpSocket (or a tiny exec), never a database shell."""
    for vs in VALUE_SETS:
        for d in render(vs):
            if d["kind"] not in WORKLOAD_KINDS:
                continue
            for _, c in containers(d):
                for p in ("livenessProbe", "readinessProbe", "startupProbe"):
                    probe = c.get(p)
                    if not probe:
                        continue
                    cmd = " ".join(probe.get("exec", {}).get("command", []))
                    assert "mongosh" not in cmd and "mongo " not in cmd, (d["metadata"]["name"], c["name"], p)
        for d in of_kind(render(vs), "StatefulSet"):
            c = pod_spec(d)["containers"][0]
            assert "tcpSocket" in c["readinessProbe"] and "tcpSocket" in c["livenessProbe"]


def test_mongod_uses_keyfile_copied_with_strict_permissions():
    docs = render("default")
    s = one(docs, "StatefulSet", "auditlog-shard0")
    spec = pod_spec(s)
    init = spec["initContainers"][0]
    script = init["command"][-1]
    assert "chmod 0400 /var/run/mongodb/keyfile" in script
    assert "--keyFile=/var/run/mongodb/keyfile" in spec["containers"][0]["args"]
    assert spec["containers"][0]["command"] == ["mongod"]  # not the image entrypoint


def test_mongo_image_is_pinned_official_and_configurable():
    v = values_of()["mongodb"]["image"]
    assert v["repository"] == "mongo" and re.fullmatch(r"(7|8)\.0\.\d+", v["tag"])
    docs = render("default", ("mongodb.image.tag=7.0.21",))
    for d in of_kind(docs, "StatefulSet"):
        assert {c["image"] for _, c in containers(d)} == {"mongo:7.0.21"}


# --------------------------------------------------------------------------- TLS

def test_tls_everywhere_when_enabled():
    docs = render("tls-3x3")
    cert = one(docs, "Certificate", "auditlog-mongodb-tls")
    names = cert["spec"]["dnsNames"]
    for sts in of_kind(docs, "StatefulSet"):
        assert "*.%s-hl.%s.svc.k8s.example" % (sts["metadata"]["name"], NAMESPACE) in names
        spec = pod_spec(sts)
        args = spec["containers"][0]["args"]
        assert "--tlsMode=requireTLS" in args
        assert "--tlsCAFile=/etc/mongodb/tls/ca.crt" in args
        assert any(v.get("secret", {}).get("secretName") == "auditlog-mongodb-tls" for v in spec["volumes"])
    assert "auditlog-mongos.%s.svc.k8s.example" % NAMESPACE in names
    assert {"server auth", "client auth"} <= set(cert["spec"]["usages"])
    assert cert["spec"]["issuerRef"] == {"name": "internal-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    mongos = pod_spec(one(docs, "Deployment", "auditlog-mongos"))["containers"][0]
    assert "--tlsMode=requireTLS" in mongos["args"]
    svc = pod_spec(one(docs, "Deployment", "auditlog-service"))["containers"][0]
    assert "tls=true&tlsCAFile=/etc/mongodb/tls/ca.crt" in env_of(svc)["MONGODB_URI"]["value"]


def test_tls_from_existing_secret_renders_no_certificate():
    docs = render("existing-secrets")
    assert not of_kind(docs, "Certificate")
    s = pod_spec(one(docs, "StatefulSet", "auditlog-cfg"))
    assert any(v.get("secret", {}).get("secretName") == "auditlog-mongodb-tls" for v in s["volumes"])


def test_no_tls_by_default():
    docs = render("default")
    assert not of_kind(docs, "Certificate")
    for sts in of_kind(docs, "StatefulSet"):
        assert not any(a.startswith("--tls") for a in pod_spec(sts)["containers"][0]["args"])


# ------------------------------------------------------------------- pods: security

@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_container_has_resources_and_a_non_root_security_context(value_set):
    checked = 0
    for d in render(value_set):
        if d["kind"] not in WORKLOAD_KINDS:
            continue
        pod_sc = pod_spec(d).get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, d["metadata"]["name"]
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert pod_spec(d).get("automountServiceAccountToken") is False
        for where, c in containers(d):
            what = "%s/%s %s container %s" % (d["kind"], d["metadata"]["name"], where, c["name"])
            r = c.get("resources", {})
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(r.get(section, {})), what + ": resources." + section
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot") is True, what
            assert isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] > 0, what
            assert sc.get("allowPrivilegeEscalation") is False, what
            assert sc.get("readOnlyRootFilesystem") is True, what
            assert sc.get("privileged", False) is False, what
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], what
            assert not sc.get("capabilities", {}).get("add"), what
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", what
            checked += 1
    assert checked >= 4


def test_writable_paths_are_volumes():
    """readOnlyRootFilesystem needs /tmp (mongod's socket, the apps' temp files) as a volume."""
    for d in render("default"):
        if d["kind"] in ("Deployment", "StatefulSet"):
            for _, c in containers(d):
                if c["name"] in ("mongod", "mongos", "service", "archiver"):
                    assert "/tmp" in [m["mountPath"] for m in c.get("volumeMounts", [])], c["name"]


# ----------------------------------------------------------------------- secrets

def test_generated_secrets_are_kept_and_reuse_the_cluster_copy():
    docs = render("default")
    secrets = {d["metadata"]["name"]: d for d in of_kind(docs, "Secret")}
    assert set(secrets) == {"auditlog-mongodb", "auditlog-mongodb-service", "auditlog-mongodb-archiver", "auditlog-api-key"}
    for s in secrets.values():
        assert s["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    m = secrets["auditlog-mongodb"]["data"]
    assert set(m) == {"mongodb-root-username", "mongodb-root-password", "mongodb-keyfile"}
    import base64
    key = base64.b64decode(m["mongodb-keyfile"]).decode()
    assert 6 <= len(key) <= 1024 and re.fullmatch(r"[A-Za-z0-9+/=]+", key)
    assert len(base64.b64decode(m["mongodb-root-password"])) >= 24
    # Offline there is no cluster to look up, so each render generates; in a cluster the
    # template reads the existing Secret first. Check the template does that, per Secret.
    src = (CHART / "templates" / "secrets.yaml").read_text()
    blocks = src.split("---")
    for component in ("service", "archiver"):
        u = secrets["auditlog-mongodb-%s" % component]["data"]
        assert base64.b64decode(u["username"]).decode() == "auditlog-%s" % component
        assert len(base64.b64decode(u["password"])) >= 24
    for name_helper in ("auditlog.mongodb.secretName", "auditlog.componentUser.secretName", "auditlog.apiKey.secretName"):
        block = next(b for b in blocks if name_helper in b)
        assert re.search(r'lookup "v1" "Secret" \.Release\.Namespace \$name', block), name_helper
        assert "get $old" in block and "randAlphaNum" in block
        assert "helm.sh/resource-policy: keep" in block


def test_existing_secrets_make_the_chart_render_none_of_its_own():
    docs = render("existing-secrets")
    assert of_kind(docs, "Secret") == []
    refs = set()
    for d in docs:
        if d["kind"] in WORKLOAD_KINDS:
            for _, c in containers(d):
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        refs.add((ref["name"], ref["key"]))
            for vol in pod_spec(d).get("volumes", []):
                if "secret" in vol:
                    refs.add((vol["secret"]["secretName"], None))
    names = {n for n, _ in refs}
    assert names == {"auditlog-mongodb-credentials", "auditlog-service-db-user", "auditlog-archiver-db-user",
                     "auditlog-api-keys", "auditlog-scoped-keys", "auditlog-archive-s3", "auditlog-mongodb-tls"}
    assert ("auditlog-api-keys", "keys") in refs
    volumes = pod_spec(one(docs, "Deployment", "auditlog-service"))["volumes"]
    (keys,) = [v["secret"] for v in volumes if v.get("secret", {}).get("secretName") == "auditlog-scoped-keys"]
    assert keys["items"] == [{"key": "scoped.toml", "path": "keys.toml"}]


def test_service_gets_api_key_and_mongos_uri_from_secrets():
    docs = render("default")
    c = pod_spec(one(docs, "Deployment", "auditlog-service"))["containers"][0]
    env = env_of(c)
    assert env["AUDIT_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "auditlog-api-key", "key": "api-key"}
    names = list(env)
    # $(VAR) expansion only sees variables defined earlier in the list.
    assert names.index("MONGODB_USERNAME") < names.index("MONGODB_URI")
    assert names.index("MONGODB_PASSWORD") < names.index("MONGODB_URI")
    assert env["MONGODB_URI"]["value"] == (
        "mongodb://$(MONGODB_USERNAME):$(MONGODB_PASSWORD)@auditlog-mongos.audit.svc.cluster.local:27017/?authSource=admin")
    assert env["AUDIT_LISTEN_ADDR"]["value"] == "0.0.0.0:8080"
    assert env["AUDIT_WRITE_CONCERN"]["value"] == "majority"
    assert "AUDIT_MAX_BODY_BYTES" not in env  # null keeps the binary's default


def secret_refs(doc):
    """Names of the Secrets a workload's containers read (env and volumes)."""
    names = set()
    for _, c in containers(doc):
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
        for e in c.get("envFrom", []):
            if "secretRef" in e:
                names.add(e["secretRef"]["name"])
    for vol in pod_spec(doc).get("volumes", []):
        if "secret" in vol:
            names.add(vol["secret"]["secretName"])
    return names


@pytest.mark.parametrize("value_set", ["default", "archiver-cronjob-hdfs"])
def test_each_component_reads_only_its_own_mongodb_user_and_only_bootstrap_reads_root(value_set):
    docs = render(value_set)
    workloads = [d for d in docs if d["kind"] in WORKLOAD_KINDS]
    service = one(docs, "Deployment", "auditlog-service")
    assert "auditlog-mongodb-service" in secret_refs(service)
    archiver = next(d for d in workloads if d["metadata"]["name"] == "auditlog-archiver")
    assert "auditlog-mongodb-archiver" in secret_refs(archiver)
    for d in workloads:
        refs = secret_refs(d)
        name = d["metadata"]["name"]
        if name not in ("auditlog-service", "auditlog-bootstrap"):
            assert "auditlog-mongodb-service" not in refs, name
        if name not in ("auditlog-archiver", "auditlog-bootstrap"):
            assert "auditlog-mongodb-archiver" not in refs, name
        if "auditlog-mongodb" in refs:
            # Root (and the keyfile) only where MongoDB itself runs and in the bootstrap Job.
            comp = pod_labels(d)["app.kubernetes.io/component"]
            assert comp in {"bootstrap", "configsvr", "shard", "mongos"}, (name, comp)
    env = env_of(pod_spec(service)["containers"][0])
    assert env["MONGODB_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": "auditlog-mongodb-service", "key": "username"}
    job = next(d for d in workloads if d["kind"] == "Job" and "bootstrap" in d["metadata"]["name"])
    jenv = env_of(pod_spec(job)["containers"][0])
    for component in ("SERVICE", "ARCHIVER"):
        ref = jenv["AUDIT_%s_MONGODB_PASSWORD" % component]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "auditlog-mongodb-%s" % component.lower(), "key": "password"}


def test_network_policies_only_when_enabled_and_only_the_listed_peers():
    assert of_kind(render("default"), "NetworkPolicy") == []
    docs = render("default", ("networkPolicy.enabled=true", "mongodb.metrics.enabled=true"))
    policies = {d["metadata"]["name"]: d["spec"] for d in of_kind(docs, "NetworkPolicy")}
    assert set(policies) == {"auditlog-mongos", "auditlog-mongodb"}

    def components(selector):
        (expr,) = selector["matchExpressions"]
        assert expr["key"] == "app.kubernetes.io/component" and expr["operator"] == "In"
        return set(expr["values"])

    for name, targets, peers in [
        ("auditlog-mongos", {"mongos"}, {"service", "archiver", "bootstrap"}),
        ("auditlog-mongodb", {"configsvr", "shard"}, {"mongos", "configsvr", "shard", "bootstrap"}),
    ]:
        spec = policies[name]
        assert components(spec["podSelector"]) == targets
        mongo_rule = next(r for r in spec["ingress"] if r["ports"][0]["port"] == 27017)
        (peer,) = mongo_rule["from"]
        assert components(peer["podSelector"]) == peers
        assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
        assert any(r["ports"][0]["port"] == 9216 for r in spec["ingress"]), "exporters stay scrapeable"
    # Every pod the policies name really carries that component label.
    labels = {pod_labels(d)["app.kubernetes.io/component"] for d in docs if d["kind"] in WORKLOAD_KINDS}
    assert {"mongos", "configsvr", "shard", "service", "archiver", "bootstrap"} <= labels


def test_monitoring_objects_only_when_enabled_with_the_four_alerts():
    assert of_kind(render("default"), "PrometheusRule") == []
    assert of_kind(render("default"), "ServiceMonitor") == []
    docs = render("default", ("monitoring.serviceMonitor.enabled=true", "monitoring.prometheusRule.enabled=true",
                              "monitoring.serviceMonitor.labels.release=kps"))
    monitors = {d["metadata"]["name"]: d for d in of_kind(docs, "ServiceMonitor")}
    assert set(monitors) == {"auditlog-service", "auditlog-archiver"}
    # Each selects its component's Service and scrapes the port /metrics is served on: the
    # service's own metrics port (its API port answers 404 there), the archiver's http port.
    for name, component, port in [("auditlog-service", "service", "metrics"), ("auditlog-archiver", "archiver", "http")]:
        sm = monitors[name]
        assert sm["metadata"]["labels"]["release"] == "kps"
        (endpoint,) = sm["spec"]["endpoints"]
        assert (endpoint["path"], endpoint["port"]) == ("/metrics", port)
        services = [d for d in of_kind(docs, "Service") if selects(sm["spec"]["selector"], d["metadata"]["labels"])]
        assert [s["metadata"]["name"] for s in services] == [name]
        assert any(p["name"] == port for p in services[0]["spec"]["ports"]), name
        assert services[0]["metadata"]["labels"]["app.kubernetes.io/component"] == component
    (rule,) = of_kind(docs, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {"AuditlogUnarchivedEventsNearExpiry", "AuditlogArchiveLagging",
                           "AuditlogServerErrors", "AuditlogWriteQueueNearlyFull",
                           "AuditlogCompleteUntilLagging"}
    assert "max(auditlog_complete_until_lag_seconds" in alerts["AuditlogCompleteUntilLagging"]["expr"]
    assert "> 300" in alerts["AuditlogCompleteUntilLagging"]["expr"]
    near = alerts["AuditlogUnarchivedEventsNearExpiry"]["expr"]
    assert "auditlog_archive_ttl_headroom_seconds" in near and "< 21600" in near
    assert "auditlog_archiver_ttl_guard_triggered_total" in near
    assert "2 * max(auditlog_archive_schedule_period_seconds" in alerts["AuditlogArchiveLagging"]["expr"]
    assert 'status=~"5.."' in alerts["AuditlogServerErrors"]["expr"]
    assert "> 0.8" in alerts["AuditlogWriteQueueNearlyFull"]["expr"]
    assert 'namespace="audit"' in near

    # Queue mode adds the queue's alerts, on the metrics it exports.
    docs = render("default", ("monitoring.prometheusRule.enabled=true", "queue.enabled=true",
                              "externalAmqp.url=amqp://u:p@rabbitmq:5672/%2f",
                              "monitoring.prometheusRule.queueVisibilitySeconds=120",
                              "monitoring.prometheusRule.completeUntilLagSeconds=90"))
    (rule,) = of_kind(docs, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"AuditlogQueueVisibilityLagging", "AuditlogQueueDeadLetters"} <= set(alerts)
    lag = alerts["AuditlogQueueVisibilityLagging"]["expr"]
    assert "auditlog_queue_visibility_seconds_bucket" in lag and "> 120" in lag
    assert "auditlog_queue_drained_total" in lag and "auditlog_queue_depth" in lag
    assert "> 90" in alerts["AuditlogCompleteUntilLagging"]["expr"]
    assert "auditlog_queue_dead_letters_total" in alerts["AuditlogQueueDeadLetters"]["expr"]
    assert "auditlog.events.dead" in alerts["AuditlogQueueDeadLetters"]["annotations"]["summary"]


# -------------------------------------------------------------------- the service

def test_service_probes_hpa_and_ingress():
    docs = render("tls-3x3")
    dep = one(docs, "Deployment", "auditlog-service")
    assert "replicas" not in dep["spec"]  # the HPA owns it
    c = pod_spec(dep)["containers"][0]
    assert c["command"] == ["/usr/local/bin/auditlog-service"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    hpa = one(docs, "HorizontalPodAutoscaler", "auditlog-service")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "auditlog-service"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    ing = one(docs, "Ingress", "auditlog-service")
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "auditlog-service", "port": {"number": 8080}}


def test_service_limits_are_passed_when_set():
    docs = render("external-mongodb")
    dep = one(docs, "Deployment", "auditlog-service")
    assert dep["spec"]["replicas"] == 3
    env = env_of(pod_spec(dep)["containers"][0])
    assert env["AUDIT_MAX_BODY_BYTES"]["value"] == "1048576"
    assert env["AUDIT_MAX_EVENT_BYTES"]["value"] == "65536"
    assert env["AUDIT_MAX_BATCH_EVENTS"]["value"] == "500"
    assert env["AUDIT_FIND_MAX_LIMIT"]["value"] == "1000"
    assert env["AUDIT_GROUP_COMMIT"]["value"] == "true"
    assert env["AUDIT_WRITE_CONCERN"]["value"] == "1"


# What the service waits for after SIGTERM when its settings do not say (service/src/config.rs),
# and the driver's server selection, which bounds a write's last attempt (common/src/store.rs).
SERVICE_DEFAULT_GRACE_SECS = 30
SERVICE_DEFAULT_WRITE_DEADLINE_SECS = 15
SERVER_SELECTION_SECS = 5


@pytest.mark.parametrize("value_set,sets", [
    ("default", ()),
    ("default", ("service.shutdownGraceSecs=10", "service.writeDeadlineSecs=40")),
    ("queue-mode", ()),
    ("queue-mode", ("service.shutdownGraceSecs=45",)),
    ("default", ("queue.enabled=true", "externalAmqp.url=amqp://u:p@rabbitmq:5672/%2f",
                 "service.shutdownGraceSecs=5")),
])
def test_the_pods_grace_outlasts_every_wait_of_the_services_shutdown(value_set, sets):
    """Kubernetes kills a pod terminationGracePeriodSeconds after SIGTERM. The service's shutdown
    (service/src/http/server.rs) waits, one after the other: in direct mode for the open requests
    (AUDIT_SHUTDOWN_GRACE_SECS), then for the writes still queued, each retried until
    AUDIT_WRITE_DEADLINE_SECS after it was queued plus one server selection; in queue mode for
    the open requests, the drain's last writes and the writer's last writes, the grace each.
    Then it closes the RabbitMQ link, the metrics listener and the MongoDB client: 10 s at
    least are left for those."""
    dep = one(render(value_set, sets), "Deployment", "auditlog-service")
    env = env_of(pod_spec(dep)["containers"][0])
    value = lambda name, default: int(env[name]["value"]) if name in env else default
    grace = value("AUDIT_SHUTDOWN_GRACE_SECS", SERVICE_DEFAULT_GRACE_SECS)
    deadline = value("AUDIT_WRITE_DEADLINE_SECS", SERVICE_DEFAULT_WRITE_DEADLINE_SECS)
    queue = env.get("AUDIT_INGEST_MODE", {}).get("value") == "queue"
    assert queue == (value_set == "queue-mode" or "queue.enabled=true" in sets)
    waits = 3 * grace if queue else grace + deadline + SERVER_SELECTION_SECS
    pod_grace = pod_spec(dep)["terminationGracePeriodSeconds"]
    assert pod_grace >= waits + 10, (
        "%s %s: the pod is killed %d s after SIGTERM, but the service may wait %d s"
        % (value_set, sets, pod_grace, waits))
    # ... and not much longer: a stuck pod holds a rollout up for all of it.
    assert pod_grace <= waits + 30, (value_set, sets, pod_grace, waits)


def test_external_mongodb_renders_no_cluster_and_runs_db_setup():
    docs = render("external-mongodb")
    assert not of_kind(docs, "StatefulSet")
    assert not [d for d in docs if "mongos" in d["metadata"]["name"]]
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "auditlog-mongodb"]
    secret = one(docs, "Secret", "auditlog-external-mongodb")
    assert "mongodb-uri" in secret["data"]
    job = one(docs, "Job", "auditlog-bootstrap")
    c = pod_spec(job)["containers"][0]
    assert c["args"][:2] == ["db", "setup"]
    assert env_of(c)["AUDIT_SHARD_KEY"]["value"] == "hashed-consumer"
    for name in ("auditlog-service", "auditlog-archiver"):
        env = env_of(pod_spec(one(docs, "Deployment", name))["containers"][0])
        assert env["MONGODB_URI"]["valueFrom"]["secretKeyRef"] == {"name": "auditlog-external-mongodb", "key": "mongodb-uri"}


# -------------------------------------------------------------------- queue mode

AMQP_ENV = {"AUDIT_INGEST_MODE", "AUDIT_AMQP_URL", "AUDIT_AMQP_QUEUE", "AUDIT_AMQP_MAX_DEPTH", "AUDIT_AMQP_PREFETCH"}
AMQP_URL = "amqp://auditlog:s3cret@rabbitmq.mq.svc:5672/%2f"
QUEUE_ON = ("queue.enabled=true",)


def service_env(docs):
    return env_of(pod_spec(one(docs, "Deployment", "auditlog-service"))["containers"][0])


@pytest.mark.parametrize("value_set,sets", [
    ("default", ()),
    ("external-mongodb", ()),
    ("existing-secrets", ()),
    # A URL alone does not turn queue mode on.
    ("default", ("externalAmqp.url=" + AMQP_URL,)),
])
def test_queue_mode_off_renders_no_amqp_env_and_no_amqp_secret(value_set, sets):
    docs = render(value_set, sets)
    for d in docs:
        if d["kind"] in WORKLOAD_KINDS:
            for _, c in containers(d):
                assert not AMQP_ENV & set(env_of(c)), (d["metadata"]["name"], c["name"])
    assert not [d for d in of_kind(docs, "Secret") if d["metadata"]["name"] == "auditlog-amqp"]
    assert not [d for d in of_kind(docs, "NetworkPolicy") if d["metadata"]["name"] == "auditlog-service-egress"]


def test_queue_mode_with_a_url_renders_the_env_and_the_secret_holding_it():
    docs = render("default", QUEUE_ON + ("externalAmqp.url=" + AMQP_URL,))
    env = service_env(docs)
    assert env["AUDIT_INGEST_MODE"]["value"] == "queue"
    # The URL carries credentials: from the chart's Secret, never inline.
    assert env["AUDIT_AMQP_URL"] == {"name": "AUDIT_AMQP_URL",
                                     "valueFrom": {"secretKeyRef": {"name": "auditlog-amqp", "key": "url"}}}
    assert env["AUDIT_AMQP_QUEUE"]["value"] == "auditlog.events"
    assert env["AUDIT_AMQP_MAX_DEPTH"]["value"] == "1000000"  # an integer, not 1e+06
    assert env["AUDIT_AMQP_PREFETCH"]["value"] == "1000"
    # The drain task still writes to MongoDB through the service's own user.
    assert env["MONGODB_USERNAME"]["valueFrom"]["secretKeyRef"]["name"] == "auditlog-mongodb-service"
    secret = one(docs, "Secret", "auditlog-amqp")
    assert base64.b64decode(secret["data"]["url"]).decode() == AMQP_URL
    assert secret["metadata"]["labels"]["app.kubernetes.io/component"] == "service"
    # Only the service reads the RabbitMQ credentials.
    for d in docs:
        if d["kind"] in WORKLOAD_KINDS and d["metadata"]["name"] != "auditlog-service":
            assert "auditlog-amqp" not in secret_refs(d), d["metadata"]["name"]
            for _, c in containers(d):
                assert not AMQP_ENV & set(env_of(c)), d["metadata"]["name"]


def test_queue_mode_values_reach_the_service():
    v = values_of("queue-mode")["queue"]
    env = service_env(render("queue-mode"))
    assert env["AUDIT_AMQP_QUEUE"]["value"] == v["name"] == "audit.ingest"
    assert env["AUDIT_AMQP_MAX_DEPTH"]["value"] == str(v["maxDepth"])
    assert env["AUDIT_AMQP_PREFETCH"]["value"] == str(v["prefetch"])


@pytest.mark.parametrize("sets,key", [
    (("externalAmqp.existingSecret=auditlog-rabbitmq",), "url"),
    (("externalAmqp.existingSecret=auditlog-rabbitmq", "externalAmqp.existingSecretKey=connection-url"), "connection-url"),
    # The existing Secret wins over an inline URL.
    (("externalAmqp.existingSecret=auditlog-rabbitmq", "externalAmqp.url=" + AMQP_URL), "url"),
])
def test_queue_mode_with_an_existing_secret_uses_it(sets, key):
    docs = render("default", QUEUE_ON + sets)
    env = service_env(docs)
    assert env["AUDIT_INGEST_MODE"]["value"] == "queue"
    assert env["AUDIT_AMQP_URL"]["valueFrom"]["secretKeyRef"] == {"name": "auditlog-rabbitmq", "key": key}
    assert not [d for d in of_kind(docs, "Secret") if d["metadata"]["name"] == "auditlog-amqp"]


def test_queue_mode_network_policy_lets_the_service_reach_rabbitmq():
    docs = render("default", QUEUE_ON + ("externalAmqp.existingSecret=auditlog-rabbitmq", "networkPolicy.enabled=true"))
    policies = {d["metadata"]["name"]: d["spec"] for d in of_kind(docs, "NetworkPolicy")}
    assert set(policies) == {"auditlog-mongos", "auditlog-mongodb", "auditlog-service-egress"}
    spec = policies["auditlog-service-egress"]
    assert spec["policyTypes"] == ["Egress"] and "ingress" not in spec
    # It selects the service's pods and no other workload's.
    for d in docs:
        if d["kind"] in WORKLOAD_KINDS:
            assert selects(spec["podSelector"], pod_labels(d)) == (d["metadata"]["name"] == "auditlog-service")

    def ports(rule):
        return {(p["protocol"], p["port"]) for p in rule["ports"]}

    rules = spec["egress"]
    # Restricting egress must keep what the service already needs: DNS and mongos.
    (dns,) = [r for r in rules if ports(r) == {("UDP", 53), ("TCP", 53)}]
    assert "to" not in dns
    (mongo,) = [r for r in rules if ports(r) == {("TCP", 27017)}]
    (peer,) = mongo["to"]
    assert selects(peer["podSelector"], pod_labels(one(docs, "Deployment", "auditlog-mongos")))
    (amqp,) = [r for r in rules if ports(r) == {("TCP", 5672)}]
    assert "to" not in amqp  # anywhere on the AMQP port unless networkPolicy.amqp.to says where
    assert len(rules) == 3
    # mongos still admits the service.
    mongos_from = policies["auditlog-mongos"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]["values"]
    assert "service" in mongos_from

    # The port, the peers and extra rules come from the values.
    v = values_of("queue-mode")["networkPolicy"]
    rules = one(render("queue-mode"), "NetworkPolicy", "auditlog-service-egress")["spec"]["egress"]
    (amqp,) = [r for r in rules if ports(r) == {("TCP", 5671)}]
    assert amqp["to"] == v["amqp"]["to"]
    for extra in v["serviceExtraEgress"]:
        assert extra in rules


# ------------------------------------------------------------- RabbitMQ from the chart

RMQ = "queue-mode-rabbitmq"
RMQ_ON = ("rabbitmq.enabled=true",)


def rabbitmq_conf(docs):
    """rabbitmq.conf of the chart's RabbitMQ as {key: value} (comments skipped)."""
    text = one(docs, "ConfigMap", "auditlog-rabbitmq-config")["data"]["rabbitmq.conf"]
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def test_chart_rabbitmq_is_off_by_default_and_with_external_amqp():
    for docs in (render("default"), render("queue-mode")):
        assert not [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "rabbitmq"]
        assert [d["metadata"]["name"] for d in of_kind(docs, "StatefulSet") if "rabbitmq" in d["metadata"]["name"]] == []


def test_chart_rabbitmq_renders_its_objects():
    docs = render(RMQ)
    v = values_of(RMQ)["rabbitmq"]
    sts = one(docs, "StatefulSet", "auditlog-rabbitmq")
    assert sts["spec"]["replicas"] == v["replicas"] == 3
    assert sts["spec"]["serviceName"] == "auditlog-rabbitmq-hl"
    # 4.1+ peer discovery joins node -0 and retries: no node waits for another to be Ready.
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert re.fullmatch(r"rabbitmq:4\.\d+\.\d+", pod_spec(sts)["containers"][0]["image"])
    hl = one(docs, "Service", "auditlog-rabbitmq-hl")
    assert hl["spec"]["clusterIP"] == "None" and hl["spec"]["publishNotReadyAddresses"] is True
    assert {p["port"] for p in hl["spec"]["ports"]} == {4369, 25672}
    client = one(docs, "Service", "auditlog-rabbitmq")
    assert {(p["name"], p["port"]) for p in client["spec"]["ports"]} >= {("amqp", 5672), ("prometheus", 15692)}
    for svc in (hl, client):
        assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    pdb = one(docs, "PodDisruptionBudget", "auditlog-rabbitmq")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == sts["spec"]["selector"]
    # Its PDB and anti-affinity count RabbitMQ's pods only.
    for w in docs:
        if w["kind"] in ("Deployment", "StatefulSet") and w is not sts:
            assert not selects(pdb["spec"]["selector"], pod_labels(w)), w["metadata"]["name"]
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == v["persistence"]["size"]
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    mounts = {m["mountPath"]: m["name"] for m in pod_spec(sts)["containers"][0]["volumeMounts"]}
    assert mounts["/var/lib/rabbitmq/mnesia"] == "data" and mounts["/etc/rabbitmq"] == "config"
    # No pod of the chart talks to the API server, RabbitMQ included: no RBAC at all.
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]
    assert pod_spec(sts)["automountServiceAccountToken"] is False


def test_chart_rabbitmq_conf_has_k8s_discovery_quorum_default_and_the_alarms():
    docs = render(RMQ)
    v = values_of(RMQ)["rabbitmq"]
    conf = rabbitmq_conf(docs)
    assert conf["cluster_formation.peer_discovery_backend"] == "k8s"
    assert conf["default_queue_type"] == "quorum"
    assert conf["quorum_queue.continuous_membership_reconciliation.enabled"] == "true"
    assert conf["quorum_queue.continuous_membership_reconciliation.target_group_size"] == "3"
    assert conf["disk_free_limit.absolute"] == v["diskFreeLimit"]["absolute"] == "3GB"
    assert conf["vm_memory_high_watermark.relative"] == str(v["memoryHighWatermark"]["relative"])
    assert "vm_memory_high_watermark.absolute" not in conf
    # The watermark is a share of the pod's memory limit, not of the host's memory.
    # In bytes: RabbitMQ parses "2GiB" or "2G" but not Kubernetes' "2Gi", and would not start.
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    mem = re.fullmatch(r"(\d+)([A-Za-z]*)", str(v["resources"]["limits"]["memory"]))
    assert conf["total_memory_available_override_value"] == str(int(mem.group(1)) * units.get(mem.group(2), 1))
    assert re.fullmatch(r"\d+", conf["total_memory_available_override_value"])
    for given, expected in (("1536Mi", 1536 * 2**20), ("3G", 3 * 10**9), ("1073741824", 2**30)):
        c = rabbitmq_conf(render(RMQ, ("rabbitmq.resources.limits.memory=" + given,
                                      "rabbitmq.resources.requests.memory=64Mi")))
        assert c["total_memory_available_override_value"] == str(expected), given
    plugins = one(docs, "ConfigMap", "auditlog-rabbitmq-config")["data"]["enabled_plugins"].strip()
    assert plugins == "[rabbitmq_peer_discovery_k8s,rabbitmq_prometheus,rabbitmq_management]."
    # An absolute watermark and extra lines replace or extend the chart's.
    docs = render(RMQ, ("rabbitmq.memoryHighWatermark.absolute=700MiB", "rabbitmq.extraConfig=channel_max = 64"))
    conf = rabbitmq_conf(docs)
    assert conf["vm_memory_high_watermark.absolute"] == "700MiB" and "vm_memory_high_watermark.relative" not in conf
    assert conf["channel_max"] == "64"
    # A changed configuration rolls the nodes (rabbitmq.conf is read at boot only).
    ann = lambda d: one(d, "StatefulSet", "auditlog-rabbitmq")["spec"]["template"]["metadata"]["annotations"]
    assert ann(docs)["checksum/config"] != ann(render(RMQ))["checksum/config"]


def test_chart_rabbitmq_nodes_are_named_for_k8s_peer_discovery():
    c = pod_spec(one(render(RMQ), "StatefulSet", "auditlog-rabbitmq"))["containers"][0]
    env = env_of(c)
    assert env["MY_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["RABBITMQ_USE_LONGNAME"]["value"] == "true"
    # rabbit@<sts>-<n>.<domain>: the plugin derives the seed rabbit@<sts>-0.<domain> from it.
    assert env["RABBITMQ_NODENAME"]["value"] == "rabbit@$(MY_POD_NAME).auditlog-rabbitmq-hl.%s.svc.%s" % (
        NAMESPACE, DOMAIN_DEFAULT)
    assert list(env).index("MY_POD_NAME") < list(env).index("RABBITMQ_NODENAME")
    for var, key in (("RABBITMQ_DEFAULT_USER", "username"), ("RABBITMQ_DEFAULT_PASS", "password")):
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "auditlog-rabbitmq", "key": key}
    # Cheap probes; readiness on AMQP, liveness on the distribution port (up from the start of
    # boot, so a node waiting for its peers is not killed).
    assert c["readinessProbe"]["tcpSocket"]["port"] == "amqp"
    assert c["livenessProbe"]["tcpSocket"]["port"] == "cluster-links"
    assert "exec" not in c["readinessProbe"] and "exec" not in c["livenessProbe"]
    assert "await_online_quorum_plus_one" in c["lifecycle"]["preStop"]["exec"]["command"][-1]


def test_chart_rabbitmq_secret_is_generated_once_and_kept():
    docs = render(RMQ)
    secret = one(docs, "Secret", "auditlog-rabbitmq")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(data) == {"username", "password", "erlang-cookie", "url"}
    assert data["username"] == "auditlog"
    assert re.fullmatch(r"[A-Za-z0-9]{32}", data["password"])
    assert re.fullmatch(r"[A-Za-z0-9]{64}", data["erlang-cookie"])
    assert data["url"] == "amqp://auditlog:%s@auditlog-rabbitmq.%s.svc.%s:5672/%%2f" % (
        data["password"], NAMESPACE, DOMAIN_DEFAULT)
    # Offline each render generates; in a cluster the template reuses the Secret it finds.
    src = (CHART / "templates" / "secrets.yaml").read_text()
    start = src.index("{{- if and .Values.rabbitmq.enabled")
    block = src[start:src.index("\n{{- end }}", start)]
    assert re.search(r'lookup "v1" "Secret" \.Release\.Namespace \$name', block)
    for key in ("username", "password", "erlang-cookie"):
        assert 'get $old "%s"' % key in block, key
    assert "randAlphaNum" in block and "helm.sh/resource-policy: keep" in block
    # Only RabbitMQ's pods and the service read it.
    for d in docs:
        if d["kind"] in WORKLOAD_KINDS and "auditlog-rabbitmq" in secret_refs(d):
            assert pod_labels(d)["app.kubernetes.io/component"] in {"rabbitmq", "service"}, d["metadata"]["name"]


def test_chart_rabbitmq_existing_secret():
    docs = render(RMQ, ("rabbitmq.auth.existingSecret=my-rabbitmq",))
    assert not [d for d in of_kind(docs, "Secret") if "rabbitmq" in d["metadata"]["name"]]
    env = service_env(docs)
    assert env["AUDIT_AMQP_URL"]["valueFrom"]["secretKeyRef"] == {"name": "my-rabbitmq", "key": "url"}
    spec = pod_spec(one(docs, "StatefulSet", "auditlog-rabbitmq"))
    (cookie,) = [v for v in spec["volumes"] if v["name"] == "cookie"]
    assert cookie["secret"]["secretName"] == "my-rabbitmq"


def test_queue_mode_with_the_chart_rabbitmq_gets_its_url_from_the_chart_secret():
    docs = render(RMQ)
    env = service_env(docs)
    assert env["AUDIT_INGEST_MODE"]["value"] == "queue"
    assert env["AUDIT_AMQP_URL"]["valueFrom"]["secretKeyRef"] == {"name": "auditlog-rabbitmq", "key": "url"}
    assert not [d for d in of_kind(docs, "Secret") if d["metadata"]["name"] == "auditlog-amqp"]
    # Without queue mode RabbitMQ is rendered anyway (it can form before queue mode declares
    # its queues) and the service stays in direct mode.
    docs = render("default", RMQ_ON)
    one(docs, "StatefulSet", "auditlog-rabbitmq")
    env = service_env(docs)
    assert "AUDIT_INGEST_MODE" not in env and "AUDIT_AMQP_URL" not in env


@pytest.mark.parametrize("sets", [
    ("externalAmqp.url=" + AMQP_URL,),
    ("externalAmqp.existingSecret=auditlog-rabbitmq",),
])
def test_chart_rabbitmq_and_external_amqp_together_are_refused(sets):
    for extra in ((), QUEUE_ON):
        proc = helm_template(sets=RMQ_ON + extra + sets, check=False)
        assert proc.returncode != 0
        assert "rabbitmq.enabled=true and externalAmqp.url/externalAmqp.existingSecret are both set" in proc.stderr


def test_chart_rabbitmq_memory_limit_must_be_readable_by_rabbitmq():
    proc = helm_template(sets=RMQ_ON + ("rabbitmq.resources.limits.memory=1.5Gi",), check=False)
    assert proc.returncode != 0 and 'rabbitmq.resources.limits.memory "1.5Gi"' in proc.stderr


def test_chart_rabbitmq_anti_affinity_spreads_nodes_over_hosts():
    hard = pod_spec(one(render(RMQ), "StatefulSet", "auditlog-rabbitmq"))["affinity"]["podAntiAffinity"]
    (term,) = hard["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "rabbitmq"
    soft = pod_spec(one(render("default", RMQ_ON), "StatefulSet", "auditlog-rabbitmq"))["affinity"]["podAntiAffinity"]
    (pref,) = soft["preferredDuringSchedulingIgnoredDuringExecution"]
    assert pref["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_chart_rabbitmq_runs_restricted_with_the_cookie_copied_0600():
    spec = pod_spec(one(render(RMQ), "StatefulSet", "auditlog-rabbitmq"))
    sc = spec["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (999, 999, 999)
    assert sc["runAsNonRoot"] is True and sc["seccompProfile"]["type"] == "RuntimeDefault"
    for c in spec["initContainers"] + spec["containers"]:
        csc = c["securityContext"]
        assert csc["runAsUser"] == 999 and csc["readOnlyRootFilesystem"] is True, c["name"]
        assert csc["allowPrivilegeEscalation"] is False and csc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert {"cpu", "memory"} <= set(c["resources"]["limits"]) and {"cpu", "memory"} <= set(c["resources"]["requests"])
    (init,) = spec["initContainers"]
    script = init["command"][-1]
    assert "/var/lib/rabbitmq/.erlang.cookie" in script and "chmod 0600 /var/lib/rabbitmq/.erlang.cookie" in script
    # The writable paths are volumes: HOME (the cookie), the data, the crash dumps, /tmp.
    mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"] if not m.get("readOnly")}
    assert mounts == {"/var/lib/rabbitmq", "/var/lib/rabbitmq/mnesia", "/var/log/rabbitmq", "/tmp"}


def test_chart_rabbitmq_network_policies():
    docs = render(RMQ)
    policies = {d["metadata"]["name"]: d["spec"] for d in of_kind(docs, "NetworkPolicy")}
    assert set(policies) == {"auditlog-mongos", "auditlog-mongodb", "auditlog-service-egress", "auditlog-rabbitmq"}
    sts = one(docs, "StatefulSet", "auditlog-rabbitmq")
    service = one(docs, "Deployment", "auditlog-service")

    def ports(rule):
        return {(p["protocol"], p["port"], p.get("endPort")) for p in rule["ports"]}

    # The service's queue-mode egress reaches the chart's RabbitMQ pods, on AMQP only.
    egress = policies["auditlog-service-egress"]["egress"]
    (amqp,) = [r for r in egress if ports(r) == {("TCP", 5672, None)}]
    (peer,) = amqp["to"]
    assert selects(peer["podSelector"], pod_labels(sts)) and not selects(peer["podSelector"], pod_labels(service))
    spec = policies["auditlog-rabbitmq"]
    assert spec["policyTypes"] == ["Ingress"] and selects(spec["podSelector"], pod_labels(sts))
    rules = {frozenset(ports(r)): r for r in spec["ingress"]}
    client = rules[frozenset({("TCP", 5672, None)})]
    (frm,) = client["from"]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob")]
    assert [w["metadata"]["name"] for w in workloads if selects(frm["podSelector"], pod_labels(w))] == ["auditlog-service"]
    cluster = rules[frozenset({("TCP", 4369, None), ("TCP", 25672, None), ("TCP", 35672, 35682), ("TCP", 5672, None)})]
    (frm,) = cluster["from"]
    assert [w["metadata"]["name"] for w in workloads if selects(frm["podSelector"], pod_labels(w))] == ["auditlog-rabbitmq"]
    metrics = rules[frozenset({("TCP", 15692, None)})]
    assert "from" not in metrics  # networkPolicy.metricsFrom empty: any scraper in the cluster
    assert len(spec["ingress"]) == 3
    scraper = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    docs = render(RMQ, ("networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",))
    spec = one(docs, "NetworkPolicy", "auditlog-rabbitmq")["spec"]
    (metrics,) = [r for r in spec["ingress"] if ports(r) == {("TCP", 15692, None)}]
    assert metrics["from"] == [scraper]
    # Without the chart's MongoDB the RabbitMQ policy still renders.
    docs = render(RMQ, ("mongodb.enabled=false", "externalMongodb.uri=mongodb://m:27017"))
    one(docs, "NetworkPolicy", "auditlog-rabbitmq")


# -------------------------------------------------------------------- the archiver

def test_archiver_daemon_is_a_single_recreated_replica_with_a_pvc():
    docs = render("default")
    dep = one(docs, "Deployment", "auditlog-archiver")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    spec = pod_spec(dep)
    c = spec["containers"][0]
    assert c["args"] == ["run"]
    env = env_of(c)
    assert env["AUDIT_ARCHIVE_URL"]["value"] == "file:///archive"
    assert env["AUDIT_ARCHIVE_SCHEDULE"]["value"] == "0 0 2 * * *"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pvc = one(docs, "PersistentVolumeClaim", "auditlog-archiver")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert {"name": "archive", "persistentVolumeClaim": {"claimName": "auditlog-archiver"}} in spec["volumes"]
    assert not of_kind(docs, "CronJob")


def test_archiver_cronjob_to_hdfs():
    docs = render("archiver-cronjob-hdfs")
    assert not [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "auditlog-archiver"]
    cj = one(docs, "CronJob", "auditlog-archiver")
    assert cj["spec"]["schedule"] == "15 * * * *"
    assert cj["spec"]["timeZone"] == "Etc/UTC"
    assert cj["spec"]["concurrencyPolicy"] == "Forbid"
    c = pod_spec(cj)["containers"][0]
    assert c["args"] == ["once"]
    env = env_of(c)
    assert env["AUDIT_ARCHIVE_URL"]["value"] == "hdfs://namenode.hadoop.svc:8020/warehouse/auditlog"
    assert env["HADOOP_CONF_DIR"]["value"] == "/etc/hadoop/conf"
    # The CronJob and the archiver's guard run on one schedule.
    assert env["AUDIT_ARCHIVE_SCHEDULE"]["value"] == "0 15 * * * *"
    assert env["AUDIT_ARCHIVE_COMPRESSION"]["value"] == "zstd"
    assert env["AUDIT_ARCHIVE_GRACE"]["value"] == "10m"
    assert not of_kind(docs, "PersistentVolumeClaim")  # no PVC for a non-file URL


def test_archiver_s3_credentials_from_secret():
    docs = render("external-mongodb")
    env = env_of(pod_spec(one(docs, "Deployment", "auditlog-archiver"))["containers"][0])
    assert env["AUDIT_ARCHIVE_URL"]["value"] == "s3://audit-archive/prod"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "auditlog-archiver-s3"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "auditlog-archiver-s3"
    # The binary's own variables, which win over its defaults (a bare AWS_REGION lost to the
    # binary's built-in us-east-1).
    assert env["AUDIT_S3_REGION"]["value"] == "eu-west-1"
    assert env["AUDIT_S3_ENDPOINT"]["value"] == "https://minio.example.internal:9000"
    assert env["AUDIT_S3_ALLOW_HTTP"]["value"] == "false"


@pytest.mark.parametrize("sets, allow", [
    (("archiver.s3.endpoint=http://minio.storage:9000",), "true"),
    (("archiver.s3.endpoint=https://minio.storage:9000",), "false"),
    (("archiver.s3.endpoint=http://minio.storage:9000", "archiver.s3.allowHttp=false"), "false"),
    (("archiver.s3.allowHttp=true",), "true"),
])
def test_plain_http_s3_endpoints_are_allowed_by_the_chart(sets, allow):
    docs = render("default", ("archiver.url=s3://bucket/p",) + sets)
    env = env_of(pod_spec(one(docs, "Deployment", "auditlog-archiver"))["containers"][0])
    assert env["AUDIT_S3_ALLOW_HTTP"]["value"] == allow


def service_container(docs):
    return pod_spec(one(docs, "Deployment", "auditlog-service"))["containers"][0]


ARCHIVE_ENV = ("AUDIT_ARCHIVE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AUDIT_S3_REGION",
               "AUDIT_S3_ENDPOINT", "AUDIT_S3_ALLOW_HTTP", "HADOOP_CONF_DIR")


def test_service_reads_an_s3_archive_with_the_archivers_settings_and_credentials():
    docs = render("external-mongodb")
    archiver = env_of(pod_spec(one(docs, "Deployment", "auditlog-archiver"))["containers"][0])
    service = env_of(service_container(docs))
    # One location, one set of credentials: find reads exactly what the archiver writes.
    for name in ARCHIVE_ENV:
        assert service.get(name) == archiver.get(name), name
    assert service["AUDIT_ARCHIVE_URL"]["value"] == "s3://audit-archive/prod"
    assert service["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "auditlog-archiver-s3"
    assert "AUDIT_ARCHIVE_FIND_MARGIN_SECS" not in service
    docs = render("external-mongodb", ("service.archiveFind.marginSecs=7200",))
    assert env_of(service_container(docs))["AUDIT_ARCHIVE_FIND_MARGIN_SECS"]["value"] == "7200"


def test_service_reads_an_hdfs_archive_with_the_hadoop_configuration():
    docs = render("archiver-cronjob-hdfs")
    c = service_container(docs)
    env = env_of(c)
    assert env["AUDIT_ARCHIVE_URL"]["value"] == "hdfs://namenode.hadoop.svc:8020/warehouse/auditlog"
    assert env["HADOOP_CONF_DIR"]["value"] == "/etc/hadoop/conf"
    assert {"name": "hadoop-conf", "mountPath": "/etc/hadoop/conf", "readOnly": True} in c["volumeMounts"]
    volumes = pod_spec(one(docs, "Deployment", "auditlog-service"))["volumes"]
    assert {"name": "hadoop-conf", "configMap": {"name": "hadoop-client-conf"}} in volumes


@pytest.mark.parametrize("sets", [
    (),  # file:// on the archiver's ReadWriteOnce PVC: the replicas cannot mount it
    ("archiver.url=s3://bucket/p", "service.archiveFind.enabled=false"),
    ("archiver.url=s3://bucket/p", "archiver.enabled=false"),
])
def test_service_reads_mongodb_only_when_it_cannot_or_may_not_read_the_archive(sets):
    docs = render("default", sets)
    c = service_container(docs)
    assert not set(env_of(c)) & set(ARCHIVE_ENV)
    assert "archive" not in [m["name"] for m in c["volumeMounts"]]


def test_service_mounts_a_shared_file_archive_read_only():
    docs = render("default", ("archiver.persistence.accessModes={ReadWriteMany}",))
    c = service_container(docs)
    assert env_of(c)["AUDIT_ARCHIVE_URL"]["value"] == "file:///archive"
    assert {"name": "archive", "mountPath": "/archive", "readOnly": True} in c["volumeMounts"]
    volumes = pod_spec(one(docs, "Deployment", "auditlog-service"))["volumes"]
    assert {"name": "archive", "persistentVolumeClaim": {"claimName": "auditlog-archiver", "readOnly": True}} in volumes


# ------------------------------------------------------- the archive's integrity (signing)

SIGNING = "archive-signing"
SIGNING_DIR = "/etc/auditlog/signing"
PUBLIC_KEYS_DIR = "/etc/auditlog/public-keys"
# PKCS#8 PrivateKeyInfo of an Ed25519 key up to the 32-byte seed (RFC 8410): what
# `openssl genpkey -algorithm ed25519` writes and the archiver reads.
ED25519_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")


def archiver_workload(docs):
    (w,) = [d for d in docs if d["kind"] in ("Deployment", "CronJob") and d["metadata"]["name"] == "auditlog-archiver"]
    return w


def verify_cronjob(docs):
    return one(docs, "CronJob", "auditlog-archive-verify")


def test_archive_signing_and_verify_are_off_by_default():
    docs = render("default")
    assert "auditlog-archive-signing" not in {d["metadata"]["name"] for d in of_kind(docs, "Secret")}
    assert not [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "auditlog-archive-public-keys"]
    assert not [d for d in of_kind(docs, "CronJob") if d["metadata"]["name"] == "auditlog-archive-verify"]
    c = pod_spec(archiver_workload(docs))["containers"][0]
    assert "AUDIT_ARCHIVE_SIGNING_KEY_FILE" not in env_of(c)
    assert SIGNING_DIR not in [m["mountPath"] for m in c["volumeMounts"]]


def test_archive_signing_key_is_generated_once_as_ed25519_pkcs8_and_kept():
    secret = one(render(SIGNING), "Secret", "auditlog-archive-signing")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert set(secret["data"]) == {"archive-signing.key"}
    pem = base64.b64decode(secret["data"]["archive-signing.key"]).decode()
    m = re.fullmatch(r"-----BEGIN PRIVATE KEY-----\n([A-Za-z0-9+/=\n]+)-----END PRIVATE KEY-----\n?", pem)
    assert m, pem
    der = base64.b64decode(m.group(1))
    assert len(der) == 48 and der.startswith(ED25519_PKCS8_PREFIX), der.hex()
    # Offline every render generates; in a cluster the template reads the existing Secret first.
    src = (CHART / "templates" / "secrets.yaml").read_text()
    block = src[src.index('include "auditlog.archiveSigning.secretName"'):]
    block = block[:block.index("{{- end }}")]
    assert re.search(r'lookup "v1" "Secret" \.Release\.Namespace \$name', block)
    assert 'get $old "archive-signing.key"' in block and 'genPrivateKey "ed25519"' in block
    assert "helm.sh/resource-policy: keep" in block


@pytest.mark.parametrize("mode", ["daemon", "cronjob"])
def test_the_archiver_mounts_its_signing_key_read_only_in_both_modes(mode):
    docs = render(SIGNING, ("archiver.mode=%s" % mode,))
    w = archiver_workload(docs)
    assert w["kind"] == {"daemon": "Deployment", "cronjob": "CronJob"}[mode]
    spec = pod_spec(w)
    c = spec["containers"][0]
    assert env_of(c)["AUDIT_ARCHIVE_SIGNING_KEY_FILE"]["value"] == SIGNING_DIR + "/archive-signing.key"
    assert {"name": "signing", "mountPath": SIGNING_DIR, "readOnly": True} in c["volumeMounts"]
    (vol,) = [v for v in spec["volumes"] if v["name"] == "signing"]
    assert vol["secret"] == {"secretName": "auditlog-archive-signing", "defaultMode": 0o440,
                             "items": [{"key": "archive-signing.key", "path": "archive-signing.key"}]}
    assert spec["securityContext"]["fsGroup"] == 65532  # 0440 + fsGroup: readable by the archiver only
    # The private key reaches the archiver and nothing else: not the verify Job, not the service.
    for d in docs:
        if d["kind"] in WORKLOAD_KINDS and d is not w:
            assert "auditlog-archive-signing" not in secret_refs(d), d["metadata"]["name"]
            for _, other in containers(d):
                assert "AUDIT_ARCHIVE_SIGNING_KEY_FILE" not in env_of(other), d["metadata"]["name"]


def test_archive_signing_key_from_an_existing_secret():
    docs = render(SIGNING, ("archiver.signing.existingSecret=archive-key",
                            "archiver.signing.existingSecretKey=ed25519.pem"))
    assert "auditlog-archive-signing" not in {d["metadata"]["name"] for d in of_kind(docs, "Secret")}
    spec = pod_spec(archiver_workload(docs))
    assert env_of(spec["containers"][0])["AUDIT_ARCHIVE_SIGNING_KEY_FILE"]["value"] == SIGNING_DIR + "/ed25519.pem"
    (vol,) = [v for v in spec["volumes"] if v["name"] == "signing"]
    assert vol["secret"]["secretName"] == "archive-key"
    assert vol["secret"]["items"] == [{"key": "ed25519.pem", "path": "ed25519.pem"}]


def test_public_keys_become_a_configmap_of_pub_files():
    v = values_of(SIGNING)["archiver"]["signing"]["publicKeys"]
    cm = one(render(SIGNING), "ConfigMap", "auditlog-archive-public-keys")
    assert cm["data"] == {"%s.pub" % k: pem for k, pem in v.items()}
    assert all(pem.startswith("-----BEGIN PUBLIC KEY-----\n") for pem in cm["data"].values())


def test_verify_cronjob_checks_with_the_public_keys_and_the_archivers_settings():
    docs = render(SIGNING)
    cj = verify_cronjob(docs)
    assert cj["spec"]["schedule"] == values_of(SIGNING)["archiver"]["verify"]["schedule"]
    assert cj["spec"]["timeZone"] == "Etc/UTC"
    assert cj["spec"]["concurrencyPolicy"] == "Forbid"
    assert cj["spec"]["failedJobsHistoryLimit"] >= 1
    spec = pod_spec(cj)
    (c,) = spec["containers"]
    assert c["command"] == ["/usr/local/bin/auditlog-archiver"]
    assert c["args"] == ["verify", "--public-key", PUBLIC_KEYS_DIR, "--json"]
    assert {"name": "public-keys", "mountPath": PUBLIC_KEYS_DIR, "readOnly": True} in c["volumeMounts"]
    assert {"name": "public-keys", "configMap": {"name": "auditlog-archive-public-keys"}} in spec["volumes"]
    # The archive as the archiver sees it, read-only; MongoDB as the archiver's own user.
    archiver = pod_spec(archiver_workload(docs))["containers"][0]
    env, aenv = env_of(c), env_of(archiver)
    for name in ARCHIVE_ENV + ("MONGODB_USERNAME", "MONGODB_PASSWORD", "MONGODB_URI", "AUDIT_DB_NAME",
                               "AUDIT_COLLECTION"):
        assert env.get(name) == aenv.get(name), name
    assert env["MONGODB_USERNAME"]["valueFrom"]["secretKeyRef"]["name"] == "auditlog-mongodb-archiver"
    assert {"name": "archive", "mountPath": "/archive", "readOnly": True} in c["volumeMounts"]
    assert {"name": "archive", "persistentVolumeClaim": {"claimName": "auditlog-archiver", "readOnly": True}} in spec["volumes"]
    assert "/tmp" in [m["mountPath"] for m in c["volumeMounts"]]
    # No signing key: checking needs none.
    assert "AUDIT_ARCHIVE_SIGNING_KEY_FILE" not in env
    assert SIGNING_DIR not in [m["mountPath"] for m in c["volumeMounts"]]
    # A ReadWriteOnce archive volume is on the daemon's node: the verify pod goes there too.
    (term,) = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert selects(term["labelSelector"], pod_labels(archiver_workload(docs)))
    assert pod_labels(cj)["app.kubernetes.io/component"] == "archive-verify"
    assert spec["restartPolicy"] == "Never"


def test_verify_cronjob_reads_s3_and_hdfs_archives_without_a_volume():
    docs = render(SIGNING, ("archiver.url=s3://audit-archive/prod", "archiver.s3.existingSecret=s3-creds",
                            "archiver.s3.region=eu-west-1"))
    spec = pod_spec(verify_cronjob(docs))
    env = env_of(spec["containers"][0])
    assert env["AUDIT_ARCHIVE_URL"]["value"] == "s3://audit-archive/prod"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    assert env["AUDIT_S3_REGION"]["value"] == "eu-west-1"
    assert "archive" not in [v["name"] for v in spec["volumes"]]
    assert "affinity" not in spec
    docs = render("archiver-cronjob-hdfs", ("archiver.verify.enabled=true",
                                            "archiver.signing.publicKeys.k1=-----BEGIN PUBLIC KEY-----\nx\n"))
    spec = pod_spec(verify_cronjob(docs))
    c = spec["containers"][0]
    assert env_of(c)["HADOOP_CONF_DIR"]["value"] == "/etc/hadoop/conf"
    assert {"name": "hadoop-conf", "mountPath": "/etc/hadoop/conf", "readOnly": True} in c["volumeMounts"]
    assert "affinity" not in spec


def test_verify_cronjob_reaches_a_tls_mongodb_and_passes_the_network_policy():
    docs = render("tls-3x3", ("archiver.verify.enabled=true", "networkPolicy.enabled=true",
                              "archiver.signing.publicKeys.k1=-----BEGIN PUBLIC KEY-----\nx\n"))
    spec = pod_spec(verify_cronjob(docs))
    c = spec["containers"][0]
    assert "tlsCAFile=/etc/mongodb/tls/ca.crt" in env_of(c)["MONGODB_URI"]["value"]
    assert {"name": "tls", "mountPath": "/etc/mongodb/tls", "readOnly": True} in c["volumeMounts"]
    policy = one(docs, "NetworkPolicy", "auditlog-mongos")["spec"]
    mongo_rule = next(r for r in policy["ingress"] if r["ports"][0]["port"] == 27017)
    (peer,) = mongo_rule["from"]
    assert "archive-verify" in peer["podSelector"]["matchExpressions"][0]["values"]


def test_verify_cronjob_name_fits_a_cronjob_with_a_long_release_name():
    long_name = "a" * 40
    docs = [d for d in yaml.safe_load_all(helm_template(values_file(SIGNING), ("fullnameOverride=%s" % long_name,)).stdout) if d]
    (cj,) = [d for d in of_kind(docs, "CronJob") if d["metadata"]["name"].endswith("-archive-verify")]
    assert len(cj["metadata"]["name"]) <= 52


def test_verify_alert_fires_on_the_newest_failed_job_only_when_verify_runs():
    rule = one(render(SIGNING, ("monitoring.prometheusRule.enabled=true",)), "PrometheusRule", "auditlog")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    alert = alerts["AuditlogArchiveVerifyFailed"]
    expr = alert["expr"]
    jobs = 'namespace="audit", job_name=~"auditlog-archive-verify-.+"'
    assert 'kube_job_failed{%s, condition="true"}' % jobs in expr
    # Only the newest Job counts: a kept failed Job must not fire after a later success.
    assert "max by (namespace) (kube_job_created{%s})" % jobs in expr
    assert alert["labels"]["severity"] == "critical"
    assert "kube-state-metrics" in alert["annotations"]["description"]
    rule = one(render("default", ("monitoring.prometheusRule.enabled=true",)), "PrometheusRule", "auditlog")
    assert "AuditlogArchiveVerifyFailed" not in {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}


def test_notes_say_how_to_print_the_public_key(tmp_path):
    signing = ["--values", str(values_file(SIGNING))]
    notes = render_notes(tmp_path, signing)
    assert ("kubectl -n audit exec deploy/auditlog-archiver -- /usr/local/bin/auditlog-archiver keys public "
            "--key /etc/auditlog/signing/archive-signing.key") in notes, notes
    assert "create job --from=cronjob/auditlog-archive-verify" in notes
    notes = render_notes(tmp_path, signing + ["--set", "archiver.mode=cronjob"])
    assert "in a pod that mounts the Secret" in notes, notes
    assert ("get secret auditlog-archive-signing -o jsonpath='{.data.archive-signing\\.key}' | base64 -d "
            "| openssl pkey -pubout") in notes, notes
    notes = render_notes(tmp_path)
    assert "keys public" not in notes and "signed" not in notes and "archive-verify" not in notes


# ------------------------------------------------------------------ PDBs and labels

def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


@pytest.mark.parametrize("value_set", ["default", "tls-3x3"])
def test_a_pdb_per_component(value_set):
    docs = render(value_set)
    pdbs = of_kind(docs, "PodDisruptionBudget")
    long_running = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    for w in long_running:
        matching = [p for p in pdbs if selects(p["spec"]["selector"], pod_labels(w))]
        assert len(matching) == 1, "%s/%s has %d PDBs" % (w["kind"], w["metadata"]["name"], len(matching))
        # A PDB selects exactly one workload: one replica set's budget is not shared.
        others = [o for o in long_running if o is not w and selects(matching[0]["spec"]["selector"], pod_labels(o))]
        assert not others
    components = {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pdbs}
    assert components == {"configsvr", "shard", "mongos", "service", "archiver"}


def test_anti_affinity_and_topology_spread():
    soft = pod_spec(one(render("default"), "StatefulSet", "auditlog-shard1"))["affinity"]["podAntiAffinity"]
    term = soft["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["labelSelector"]["matchLabels"]["auditlog/replica-set"] == "shard1"
    spec = pod_spec(one(render("tls-3x3"), "StatefulSet", "auditlog-shard1"))
    hard = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert hard["topologyKey"] == "kubernetes.io/hostname"
    assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert spec["tolerations"][0]["value"] == "mongodb"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_recommended_labels_on_every_object(value_set):
    required = ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                "app.kubernetes.io/managed-by", "app.kubernetes.io/component", "app.kubernetes.io/part-of",
                "helm.sh/chart"]
    for d in render(value_set):
        labels = d["metadata"].get("labels", {})
        for k in required:
            assert labels.get(k), "%s/%s lacks %s" % (d["kind"], d["metadata"]["name"], k)
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/part-of"] == "auditlog"
        if d["kind"] in WORKLOAD_KINDS and d["kind"] != "Pod":
            assert pod_labels(d)["app.kubernetes.io/component"] == labels["app.kubernetes.io/component"]


# ------------------------------------------------------ scoped API keys, the metrics port

def test_the_scoped_keys_example_mounts_a_key_file_of_hashes_that_reloads_in_place():
    import tomllib
    docs = render("example-scoped-api-keys")
    v = values_of("example-scoped-api-keys")["service"]
    secrets = {d["metadata"]["name"]: d for d in of_kind(docs, "Secret")}
    assert "auditlog-api-key" not in secrets, "apiKey.enabled=false: no key with every right"
    text = base64.b64decode(secrets["auditlog-api-keys"]["data"]["keys.toml"]).decode()
    assert text == v["apiKeys"]["file"]
    keys = tomllib.loads(text)["key"]
    assert [(k["name"], k["rights"]) for k in keys] == [("billing-producer", ["ingest"]), ("billing-reader", ["read"])]
    for k in keys:
        assert re.fullmatch(r"[0-9a-f]{64}", k["sha256"]), "hashes only"
    assert keys[0]["rate"] == {"events_per_second": 200, "burst": 1000}
    dep = one(docs, "Deployment", "auditlog-service")
    c = pod_spec(dep)["containers"][0]
    env = env_of(c)
    assert "AUDIT_API_KEY" not in env
    assert env["AUDIT_API_KEYS_FILE"]["value"] == "/etc/auditlog/api-keys/keys.toml"
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "api-keys"]
    # A directory mount: a subPath mount would never see the Secret's updates.
    assert mount == {"name": "api-keys", "mountPath": "/etc/auditlog/api-keys", "readOnly": True}
    (vol,) = [x for x in pod_spec(dep)["volumes"] if x["name"] == "api-keys"]
    assert vol["secret"]["secretName"] == "auditlog-api-keys"
    assert vol["secret"]["items"] == [{"key": "keys.toml", "path": "keys.toml"}]
    # No checksum annotation: changing keys must not roll the pods (the service reloads).
    annotations = dep["spec"]["template"]["metadata"].get("annotations", {})
    assert not any("checksum" in a for a in annotations), annotations
    assert of_kind(docs, "Pod") == [], "helm test needs a key with every right; none is configured"


def test_the_default_keeps_a_generated_key_with_every_right_and_no_key_file():
    docs = render("default")
    env = env_of(pod_spec(one(docs, "Deployment", "auditlog-service"))["containers"][0])
    assert "AUDIT_API_KEY" in env and "AUDIT_API_KEYS_FILE" not in env
    both = render("default", ("service.apiKeys.file=[[key]]",))
    env = env_of(pod_spec(one(both, "Deployment", "auditlog-service"))["containers"][0])
    assert "AUDIT_API_KEY" in env and "AUDIT_API_KEYS_FILE" in env, "both forms together"


@pytest.mark.parametrize("value_set", ["default", "example-scoped-api-keys"])
def test_metrics_on_their_own_port_which_the_ingress_never_routes(value_set):
    docs = render(value_set, ("service.ingress.enabled=true",))
    port = values_of(value_set)["service"]["metricsPort"]
    dep = one(docs, "Deployment", "auditlog-service")
    c = pod_spec(dep)["containers"][0]
    assert env_of(c)["AUDIT_METRICS_LISTEN_ADDR"]["value"] == "0.0.0.0:%d" % port
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in c["ports"]
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    svc = one(docs, "Service", "auditlog-service")
    assert {"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"} in svc["spec"]["ports"]
    ing = one(docs, "Ingress", "auditlog-service")
    paths = [p for r in ing["spec"]["rules"] for p in r["http"]["paths"]]
    assert {p["path"] for p in paths} == {"/v1", "/docs", "/openapi.json", "/ui"}
    assert all(p["backend"]["service"]["port"] == {"number": 8080} for p in paths), "the API port only"


def test_monitoring_objects_skipped_where_the_cluster_lacks_their_crds(tmp_path):
    sets = ("monitoring.serviceMonitor.enabled=true", "monitoring.prometheusRule.enabled=true")
    args = [a for s in sets for a in ("--set", s)]
    without = [d for d in yaml.safe_load_all(helm_template(None, sets, api_versions=()).stdout) if d]
    assert of_kind(without, "ServiceMonitor") == [] and of_kind(without, "PrometheusRule") == []
    assert one(without, "Deployment", "auditlog-service"), "the rest still renders"
    notes = render_notes(tmp_path, args)
    assert "Monitoring: ServiceMonitor, PrometheusRule not created" in notes, notes
    # Only the kind the cluster lacks is skipped, and named.
    only_sm = ("monitoring.coreos.com/v1/ServiceMonitor",)
    docs = [d for d in yaml.safe_load_all(helm_template(None, sets, api_versions=only_sm).stdout) if d]
    assert len(of_kind(docs, "ServiceMonitor")) == 2 and of_kind(docs, "PrometheusRule") == []
    notes = render_notes(tmp_path, args + [a for v in only_sm for a in ("--api-versions", v)])
    assert "Monitoring: PrometheusRule not created" in notes, notes
    # With both CRDs, or monitoring off, no such line.
    notes = render_notes(tmp_path, args + [a for v in MONITORING_APIS for a in ("--api-versions", v)])
    assert "Monitoring:" not in notes and "Monitoring:" not in render_notes(tmp_path, [])


def test_notes_say_how_to_check_the_charts_rabbitmq(tmp_path):
    notes = render_notes(tmp_path, ["--values", str(values_file("queue-mode-rabbitmq"))])
    assert "RabbitMQ: 3 nodes (statefulset/auditlog-rabbitmq)" in notes, notes
    assert "exec auditlog-rabbitmq-0 -- rabbitmq-diagnostics cluster_status" in notes
    assert "direct mode" not in notes
    assert "RabbitMQ: " not in render_notes(tmp_path, [])


def test_metrics_on_the_api_port_when_asked():
    docs = render("default", ("service.metricsPort=null", "service.ingress.enabled=true",
                              "monitoring.serviceMonitor.enabled=true"))
    dep = one(docs, "Deployment", "auditlog-service")
    c = pod_spec(dep)["containers"][0]
    assert "AUDIT_METRICS_LISTEN_ADDR" not in env_of(c)
    assert [p["name"] for p in c["ports"]] == ["http"]
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    assert [p["name"] for p in one(docs, "Service", "auditlog-service")["spec"]["ports"]] == ["http"]
    sm = one(docs, "ServiceMonitor", "auditlog-service")
    assert sm["spec"]["endpoints"][0]["port"] == "http"


# -------------------------------------------------------------------- helm test, NOTES

def test_helm_test_pod_posts_and_finds_an_event():
    pod = one(render("default"), "Pod", "auditlog-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = pod["spec"]["containers"][0]
    script = c["command"][-1]
    assert "/v1/event" in script and "/v1/find" in script and "X-Api-Key" in script
    assert env_of(c)["BASE_URL"]["value"] == "http://auditlog-service.audit.svc.cluster.local:8080"
    assert env_of(c)["AUDIT_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "auditlog-api-key"


def render_notes(tmp_path, args=()):
    """NOTES.txt as `helm install` would print it, with extra `helm template` arguments.
    `helm template` skips NOTES.txt and `helm install --dry-run` wants a cluster: render a
    copy of the chart in which NOTES.txt is an ordinary template."""
    import shutil
    copy = tmp_path / "auditlog"
    if not copy.exists():
        shutil.copytree(CHART, copy)
        (copy / "templates" / "NOTES.txt").rename(copy / "notes-copy.txt")
        (copy / "templates" / "notes-render.yaml").write_text(
            'notes: {{ tpl (.Files.Get "notes-copy.txt") . | toJson }}\n')
    proc = subprocess.run([HELM, "template", RELEASE, str(copy), "--namespace", NAMESPACE,
                           "--kube-version", KUBE_VERSION, "--show-only", "templates/notes-render.yaml"]
                          + list(args), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)["notes"]


def test_notes_tell_how_to_reach_swagger_and_get_the_key(tmp_path):
    notes = render_notes(tmp_path)
    assert "port-forward svc/auditlog-service 8080:8080" in notes
    assert "http://127.0.0.1:8080/docs" in notes
    assert "get secret auditlog-api-key -o jsonpath='{.data.api-key}' | base64 -d" in notes
    assert "job/auditlog-bootstrap" in notes


# -------------------------------------------------------------------- schema rejection

@pytest.mark.parametrize("args,why", [
    (["--set", "mongodb.shards.count=two"], "wrong type"),
    (["--set", "mongodb.shards.count=0"], "below minimum"),
    (["--set", "replicaCount=3"], "unknown top-level key"),
    (["--set", "mongodb.shard.count=3"], "misspelled section"),
    (["--set", "service.autoscaling.maxReplica=3"], "unknown key in a section"),
    (["--set", "archiver.mode=sometimes"], "not in the enum"),
    (["--set", "shardKey=consumer"], "unknown shard key"),
    (["--set", "service.writeConcern=2"], "unknown write concern"),
    (["--set-string", "retentionDays=30"], "string for an integer"),
    (["--set", "archiver.url=ftp://x/y"], "unsupported archive URL"),
    (["--set", "mongodb.configsvr.resources.limits=null"], "resources without limits"),
    (["--set", "queue.enable=true"], "misspelled queue key"),
    (["--set", "queue.prefetch=0"], "prefetch below 1"),
    (["--set", "queue.prefetch=70000"], "prefetch over AMQP's 16-bit prefetch-count"),
    (["--set", "queue.name=amq.events"], "queue name in RabbitMQ's reserved amq. namespace"),
    (["--set", "externalAmqp.url=http://rabbitmq:15672"], "not an amqp:// URL"),
    (["--set", "networkPolicy.amqp.port=0"], "port out of range"),
    (["--set", "rabbitmq.enable=true"], "misspelled rabbitmq key"),
    (["--set", "rabbitmq.replicas=0"], "no RabbitMQ node"),
    (["--set", "rabbitmq.auth.username=audit@log"], "username that would need percent-encoding in the URL"),
    (["--set", "rabbitmq.diskFreeLimit.absolute=lots"], "disk limit RabbitMQ cannot read"),
    (["--set", "rabbitmq.memoryHighWatermark.relative=1.5"], "memory watermark over the whole memory"),
    (["--set", "rabbitmq.diskFreeLimit.absolute=2Gi"], "a Kubernetes unit RabbitMQ cannot parse"),
    (["--set", "rabbitmq.memoryHighWatermark.absolute=1TB"], "a unit RabbitMQ does not have"),
    (["--set", "service.apiKeys.fil=x"], "misspelled key file value"),
    (["--set", "service.metricsPort=8080"], "metrics on the API's own container port"),
    (["--set", "service.metricsPort=70000"], "metrics port out of range"),
    (["--set", "service.shutdownGraceSecs=-1"], "negative shutdown grace"),
    (["--set-string", "service.writeDeadlineSecs=15"], "string for the write deadline"),
    (["--set", "archiver.signing.publicKeys.k=ssh-ed25519 AAAA"], "a public key that is not a PEM SPKI key"),
    (["--set", "archiver.signing.publicKeys.k/1=-----BEGIN PUBLIC KEY-----"], "a key name that is no ConfigMap key"),
    (["--set", "archiver.verify.failedJobsHistoryLimit=0"], "failed verify Jobs the alert cannot see"),
    (["--set", "archiver.verify.schedule=daily"], "not a 5-field cron"),
    (["--set", "archiver.signing.enable=true"], "misspelled signing key"),
])
def test_schema_rejects_bad_values(args, why):
    cmd = [HELM, "template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION] + args
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode != 0, why
    assert "schema" in proc.stderr, proc.stderr


@pytest.mark.parametrize("sets,message", [
    (["mongodb.tls.enabled=true"], "needs mongodb.tls.existingSecret or mongodb.tls.certManager.enabled"),
    (["mongodb.tls.enabled=true", "mongodb.tls.certManager.enabled=true"], "issuerRef.name"),
    (["mongodb.enabled=false"], "needs externalMongodb.uri"),
    (["queue.enabled=true"], "queue.enabled=true needs externalAmqp.url or externalAmqp.existingSecret"),
    (["service.apiKey.enabled=false"], "service.apiKey.enabled=false needs service.apiKeys.file or service.apiKeys.existingSecret"),
    (["service.metricsPort=null", "service.ingress.enabled=true", "service.ingress.hosts[0].host=a",
      "service.ingress.hosts[0].paths[0].path=/", "service.ingress.hosts[0].paths[0].pathType=Prefix"],
     'service.ingress path "/" would expose /metrics'),
    (["service.metricsPort=null", "service.ingress.enabled=true", "service.ingress.hosts[0].host=a",
      "service.ingress.hosts[0].paths[0].path=/metrics", "service.ingress.hosts[0].paths[0].pathType=Exact"],
     'service.ingress path "/metrics" would expose /metrics'),
    # The pod's grace is derived from these: set behind the chart's back, it would be too short.
    (["service.extraEnv[0].name=AUDIT_SHUTDOWN_GRACE_SECS", "service.extraEnv[0].value=90"],
     "service.extraEnv sets AUDIT_SHUTDOWN_GRACE_SECS: set service.shutdownGraceSecs instead"),
    (["service.extraEnv[0].name=AUDIT_INGEST_MODE", "service.extraEnv[0].value=queue"],
     "service.extraEnv sets AUDIT_INGEST_MODE: set queue.enabled instead"),
    # verify checks signatures: without a public key it could only fail.
    (["archiver.verify.enabled=true"], "archiver.verify.enabled needs archiver.signing.publicKeys"),
    (["archiver.verify.enabled=true", "archiver.signing.publicKeys.k=-----BEGIN PUBLIC KEY-----",
      "archiver.persistence.enabled=false"], "archiver.verify.enabled with a file:// archive needs archiver.persistence.enabled"),
])
def test_template_refuses_incomplete_settings(sets, message):
    proc = helm_template(sets=sets, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_schema_is_closed_at_the_top_and_for_the_main_sections():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    for section in ("image", "mongodb", "externalMongodb", "service", "archiver", "tests", "logging", "database",
                    "queue", "externalAmqp", "networkPolicy", "rabbitmq"):
        assert props[section]["additionalProperties"] is False, section
    for sub in ("apiKey", "apiKeys"):
        assert props["service"]["properties"][sub]["additionalProperties"] is False, sub
    for sub in ("signing", "verify"):
        assert props["archiver"]["properties"][sub]["additionalProperties"] is False, sub
    assert props["networkPolicy"]["properties"]["amqp"]["additionalProperties"] is False
    for sub in ("auth", "memoryHighWatermark", "diskFreeLimit"):
        assert props["rabbitmq"]["properties"][sub]["additionalProperties"] is False, sub
    for sub in ("auth", "tls", "configsvr", "shards", "mongos", "metrics", "bootstrap"):
        assert props["mongodb"]["properties"][sub]["additionalProperties"] is False, sub


def leaf_keys(d, prefix=""):
    for k, v in d.items():
        path = prefix + k
        if isinstance(v, dict) and v and k not in ("podAnnotations", "resources", "podSecurityContext",
                                                   "containerSecurityContext", "issuerRef", "annotations"):
            yield from leaf_keys(v, path + ".")
        else:
            yield path


def test_readme_lists_every_value():
    readme = (CHART / "README.md").read_text()
    missing = [k for k in leaf_keys(yaml.safe_load((CHART / "values.yaml").read_text()))
               if "`%s`" % k not in readme]
    assert not missing, "values missing from helm/auditlog/README.md: %s" % missing


def test_the_events_explorer_is_on_unless_switched_off():
    for sets, want in (((), "true"), (("service.ui.enabled=false",), "false")):
        dep = one(render("default", sets), "Deployment", "auditlog-service")
        assert env_of(pod_spec(dep)["containers"][0])["AUDIT_UI_ENABLED"]["value"] == want, sets
