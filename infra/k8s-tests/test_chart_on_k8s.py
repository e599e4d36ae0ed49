"""helm/auditlog on a real Kubernetes API server (infra/dev/k8s.sh: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok for the nodes), one private cluster per session.

The profiles are the chart's documented value sets, found as infra/helm-tests/run.sh finds them:
  default                     the chart's defaults (2 shards x 3 members, 3 config servers)
  archiver-cronjob-hdfs       small/dev: 1 config server, 1 shard of 1 member, no PVCs, CronJob archiver
  tls-3x3                     production sizing: 3 x 3, cert-manager TLS, hard anti-affinity, Ingress
  external-mongodb            no MongoDB in the release: an external URI
  queue-mode                  queue mode with an external RabbitMQ URL, NetworkPolicies
  existing-secrets            every credential from Secrets made outside the chart
  archive-signing             a signed archive: generated signing key, public keys, verify CronJob
  example-scoped-api-keys     helm/auditlog/examples/scoped-api-keys.yaml

What this checks is what the API server and the controllers accept and do — validation,
admission (Pod Security `restricted`), scheduling, PVC binding, hook order, what helm upgrade,
rollback and uninstall change — not what the containers do: kwok marks pods Running and Ready
without running them, and completes only pods a Job owns.

Run with `make test-k8s` (infra/k8s-tests/run.sh). The tests are meant to run in file order
(the uninstall tests come last and remove the installs the earlier ones looked at; any one test
also runs alone, installing what it needs).
"""
import base64
import copy
import re

import pytest
import yaml

import kubetools as kt

PROFILE_IDS = [p for p, _ in kt.profiles()]
FULLNAME = kt.RELEASE  # the release is named like the chart, so <fullname> is "auditlog"

# The Secrets helm/auditlog/README.md ("Secrets" table: "generated? once ... keep leaves it on
# uninstall") and docs/deployment.md §3/§6 ("the generated Secrets are kept") say survive
# `helm uninstall`, when the chart renders them.
DOCUMENTED_KEPT_SECRETS = [FULLNAME + s for s in ("-mongodb", "-mongodb-service", "-mongodb-archiver", "-api-key", "-rabbitmq",
                                                   "-archive-signing")]


def helm_output_ok(proc, what):
    assert proc.returncode == 0, "%s failed (%d):\n%s" % (what, proc.returncode, proc.stderr)
    warnings = kt.api_warnings(proc.stderr)
    assert not warnings, "%s: the API server sent warnings:\n%s" % (what, "\n".join(warnings))


def hook_names(docs, kind, hook_re=r"post-install|pre-install|post-upgrade|pre-upgrade"):
    return {d["metadata"]["name"] for d in docs if d["kind"] == kind
            and re.search(hook_re, (d["metadata"].get("annotations") or {}).get("helm.sh/hook", ""))}


# --- 0. the checks can fail -----------------------------------------------------------------


def test_canaries_restricted_policy_and_warnings_are_seen(cluster, tmp_path):
    """The checks below are not vacuous on this cluster: in a namespace labelled like theirs, a
    pod without a security context is refused (PodSecurity admission enforces `restricted`), a
    Deployment with such a template draws a PodSecurity warning, and helm's stderr carries
    the API server's warnings (an unknown field) where api_warnings() finds them."""
    ns = "canary"
    cluster.create_namespace(ns)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain", "namespace": ns},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod), check=False)
    assert proc.returncode != 0 and 'violates PodSecurity "restricted:latest"' in proc.stderr, proc.stderr
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "plain", "namespace": ns},
           "spec": {"selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod["spec"]}}}
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(dep))
    assert any("would violate PodSecurity" in w for w in kt.api_warnings(proc.stderr)), proc.stderr

    chart = tmp_path / "canary"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: canary\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: canary\nnotAField: 1\ndata: {a: b}\n")
    proc = cluster.helm("install", "canary", str(chart), "-n", ns, "--wait")
    assert any('unknown field \\"notAField\\"' in w or 'unknown field "notAField"' in w
               for w in kt.api_warnings(proc.stderr)), proc.stderr
    cluster.helm("uninstall", "canary", "-n", ns, "--wait")


# --- 1. install under restricted Pod Security -----------------------------------------------


@pytest.mark.parametrize("profile", PROFILE_IDS)
def test_install_under_restricted_pod_security(cluster, install, dry_run, profile):
    """helm install --wait --wait-for-jobs into a namespace that enforces (and warns and audits)
    Pod Security `restricted`, with a StorageClass and local PVs the test made: the install
    succeeds with no API warning, every hook Job completes, every Deployment and StatefulSet
    has its ready replicas, every PVC is Bound — and the same objects pass
    `kubectl apply --dry-run=server` without a warning.

    `--wait` passes here because kwok reports every pod Ready at once. On a real cluster with
    the chart's own MongoDB it would not: helm runs the post-install bootstrap Job only after
    `--wait` is satisfied, and the service is not Ready before the bootstrap has run — which is
    why helm/auditlog/README.md and NOTES.txt say not to pass `--wait` to `helm install`."""
    inst = install(profile)
    assert not inst.unresolved, (
        "the pods use Secrets/ConfigMaps that the chart does not render and the profile's values do "
        "not name (nobody provides them): %s" % inst.unresolved)
    helm_output_ok(inst.proc, "helm install (%s)" % profile)
    kt.log("%s: installed in %.1fs; made first: %s" % (profile, inst.seconds, inst.created or "nothing"))

    dr = dry_run(profile)
    assert dr.proc.returncode == 0 and not kt.api_warnings(dr.proc.stderr), (
        "kubectl apply --dry-run=server (%s):\n%s" % (profile, dr.proc.stderr))

    ns = inst.namespace
    # Every hook Job ran to completion — the job controller's "Completed" event says so — and
    # helm then deleted it (hook-delete-policy hook-succeeded), so none is left to linger.
    hooks = hook_names(inst.docs, "Job")
    assert hooks, "no hook Job rendered"
    completed = {e["involvedObject"]["name"] for e in cluster.get("events", ns)
                 if e["involvedObject"].get("kind") == "Job" and e.get("reason") == "Completed"}
    assert hooks <= completed, "hook Jobs without a Completed event: %s" % (hooks - completed)
    left = hooks & {j["metadata"]["name"] for j in cluster.get("jobs", ns)}
    assert not left, "succeeded hook Jobs still there: %s" % left

    for kind, res in (("Deployment", "deployments"), ("StatefulSet", "statefulsets")):
        live = {o["metadata"]["name"] for o in cluster.get(res, ns)}
        assert live == kt.rendered_names(inst.docs, kind), "%ss: live %s, rendered %s" % (
            kind, sorted(live), sorted(kt.rendered_names(inst.docs, kind)))
    kt.assert_settled(cluster, ns)

    pvcs = {c["metadata"]["name"]: c for c in cluster.get("persistentvolumeclaims", ns)}
    assert set(pvcs) == {c[3] for c in kt.claims(inst.docs)}
    assert all(c["status"]["phase"] == "Bound" for c in pvcs.values())

    # Every pod was admitted by the restricted policy (the namespace enforces it) and scheduled.
    kwok = set(kt.nodes(cluster))
    for p in cluster.get("pods", ns):
        assert p["spec"].get("nodeName") in kwok, "pod %s not scheduled" % p["metadata"]["name"]


# --- 6. server-side validation of every profile -------------------------------------------------


@pytest.mark.parametrize("profile", PROFILE_IDS)
def test_server_side_dry_run(cluster, dry_run, profile):
    """`helm template | kubectl apply --dry-run=server --validate=strict -f -` is clean: the API
    server (with its admission plugins, Pod Security `restricted` among them, and the
    cert-manager CRD for the TLS profile) accepts every object, with no warning (deprecated API,
    unknown field, PodSecurity)."""
    dr = dry_run(profile)
    assert not dr.unresolved, "nobody provides %s" % dr.unresolved
    assert dr.proc.returncode == 0, "kubectl apply --dry-run=server failed:\n%s" % dr.proc.stderr
    warnings = kt.api_warnings(dr.proc.stderr)
    assert not warnings, "API warnings:\n%s" % "\n".join(warnings)
    accepted = [line for line in dr.proc.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(dr.docs), "%d objects rendered, %d accepted:\n%s" % (
        len(dr.docs), len(accepted), dr.proc.stdout)


# --- 7. helm test ----------------------------------------------------------------------------


def test_helm_test_runs_its_hook_pod(cluster, install):
    """The chart's `helm test` hook (templates/tests/test-event.yaml) is a bare Pod running curl:
    GET /healthz and /readyz of the service, POST /v1/event with the generated API key, then
    GET /v1/find until the event is found. On a real cluster `helm test` passes when that pod
    exits 0, so it checks the service end to end: DNS and the Service's endpoints, the API key
    Secret, the service's connection to MongoDB (or RabbitMQ in queue mode), an insert and a
    read. kwok runs no container: its extra stage (infra/dev/k8s/kwok-stages-extra.yaml) moves
    the Running test pod to Succeeded. What this shows: helm creates the pod, the restricted
    policy admits it, it is scheduled, what it points at exists, helm sees it succeed and
    deletes it (hook-delete-policy hook-succeeded)."""
    inst = install("default")
    helm_output_ok(inst.proc, "helm install (default)")
    ns = inst.namespace
    tests = [d for d in inst.docs if d["kind"] == "Pod"
             and (d["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"]
    assert len(tests) == 1, "expected one test hook Pod, rendered %s" % [t["metadata"]["name"] for t in tests]
    name = tests[0]["metadata"]["name"]

    namespace = cluster.get("namespace", name=ns)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    spec = tests[0]["spec"]
    psc = spec["securityContext"]
    assert psc.get("runAsNonRoot") is True and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc.get("allowPrivilegeEscalation") is False and sc["capabilities"]["drop"] == ["ALL"]
    # What it talks to: the API key Secret and the service's Service, on the port it calls.
    env = kt.env_of(spec["containers"][0])
    _, secret, key = env["AUDIT_API_KEY"]
    assert key in (cluster.get("secret", ns, secret) or {}).get("data", {})
    m = re.fullmatch(r"http://([^.]+)\.%s\.svc\.cluster\.local:(\d+)" % re.escape(ns), env["BASE_URL"])
    assert m, env["BASE_URL"]
    svc = cluster.get("service", ns, m.group(1))
    assert svc and int(m.group(2)) in [p["port"] for p in svc["spec"]["ports"]]

    proc = cluster.helm("test", kt.RELEASE, "-n", ns, "--timeout", "2m", check=False, timeout=180)
    kt.log("helm test: rc %d\n%s%s" % (proc.returncode, proc.stdout, proc.stderr))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert re.search(r"TEST SUITE:\s+%s\s.*Phase:\s+Succeeded" % re.escape(name), proc.stdout, re.S), proc.stdout
    assert not kt.api_warnings(proc.stderr), proc.stderr
    # The pod lived for an instant: the scheduler's event says it was admitted and placed.
    placed = [e["message"] for e in cluster.get("events", ns)
              if e["involvedObject"].get("name") == name and e.get("reason") == "Scheduled"]
    assert placed and any(n in placed[-1] for n in kt.nodes(cluster)), placed
    assert cluster.get("pod", ns, name) is None, "helm did not delete the succeeded test pod"


# --- 5. monitoring ------------------------------------------------------------------------------

AMQP_URL = "amqp://auditlog:s3cret@rabbitmq.rabbitmq.svc:5672/%2f"
MONITORING_VALUES = {
    # External MongoDB (no PVCs) in queue mode, so the queue alerts are rendered too.
    "queue": {"enabled": True},
    "externalAmqp": {"url": AMQP_URL},
    "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                   "prometheusRule": {"enabled": True}},
}
MONITORING_CRDS = ["servicemonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com"]


def monitoring_crds_present(cluster):
    return [n for n in MONITORING_CRDS if cluster.get("crd", name=n) is not None]


@pytest.fixture
def monitoring_crds(cluster):
    """The minimal ServiceMonitor and PrometheusRule CRDs (crds/monitoring.coreos.com.yaml),
    removed again afterwards."""
    f = str(kt.CRDS_DIR / "monitoring.coreos.com.yaml")
    cluster.kubectl("apply", "-f", f)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *["crd/" + n for n in MONITORING_CRDS])
    yield
    cluster.kubectl("delete", "-f", f, "--wait=true", "--ignore-not-found")


def test_monitoring_objects_with_crds(cluster, monitoring_crds, tmp_path):
    """With the monitoring.coreos.com CRDs, monitoring.serviceMonitor/prometheusRule.enabled
    install a ServiceMonitor for the service (its `metrics` port) and the archiver (`http`), and
    a PrometheusRule, accepted by the CRDs' schemas without warnings."""
    vf = tmp_path / "monitoring.yaml"
    vf.write_text(yaml.safe_dump(MONITORING_VALUES))
    values = dict(kt.profiles())["external-mongodb"]
    inst = kt.install_profile(cluster, "monitoring", values, namespace="mon-with-crds", extra_values=[vf])
    try:
        helm_output_ok(inst.proc, "helm install with monitoring")
        ns = inst.namespace
        kt.assert_settled(cluster, ns)
        sms = {s["metadata"]["name"]: s for s in cluster.get("servicemonitors.monitoring.coreos.com", ns)}
        assert set(sms) == {FULLNAME + "-service", FULLNAME + "-archiver"}
        for comp, port in (("service", "metrics"), ("archiver", "http")):
            sm = sms["%s-%s" % (FULLNAME, comp)]
            assert sm["metadata"]["labels"]["release"] == "prometheus"
            assert [(e["port"], e["path"]) for e in sm["spec"]["endpoints"]] == [(port, "/metrics")]
            assert sm["spec"]["namespaceSelector"]["matchNames"] == [ns]
            # The selector finds the component's Service, and that Service has the named port.
            svc = cluster.get("service", ns, "%s-%s" % (FULLNAME, comp))
            sel = sm["spec"]["selector"]["matchLabels"]
            assert sel.items() <= svc["metadata"]["labels"].items(), (sel, svc["metadata"]["labels"])
            assert port in [p.get("name") for p in svc["spec"]["ports"]]
        rules = cluster.get("prometheusrules.monitoring.coreos.com", ns)
        assert [r["metadata"]["name"] for r in rules] == [FULLNAME]
        alerts = {r.get("alert") for g in rules[0]["spec"]["groups"] for r in g["rules"]}
        assert {"AuditlogServerErrors", "AuditlogQueueVisibilityLagging", "AuditlogQueueDeadLetters"} <= alerts
    finally:
        cluster.helm("uninstall", kt.RELEASE, "-n", "mon-with-crds", "--wait", check=False)


def test_monitoring_skipped_with_notes_line_without_crds(cluster, tmp_path):
    """Without the monitoring.coreos.com CRDs, the same values install (the monitoring objects
    skipped) and the NOTES say so."""
    assert not monitoring_crds_present(cluster), "the monitoring CRDs are installed"
    vf = tmp_path / "monitoring.yaml"
    vf.write_text(yaml.safe_dump(MONITORING_VALUES))
    values = dict(kt.profiles())["external-mongodb"]
    inst = kt.install_profile(cluster, "monitoring", values, namespace="mon-without-crds", extra_values=[vf])
    try:
        kt.log("helm install without the monitoring CRDs: rc %d, stderr:\n%s"
               % (inst.proc.returncode, inst.proc.stderr))
        helm_output_ok(inst.proc, "helm install with monitoring, without the CRDs")
        notes = inst.proc.stdout
        assert "Monitoring: ServiceMonitor, PrometheusRule not created" in notes, notes
        assert "monitoring.coreos.com/v1" in notes, notes
    finally:
        cluster.helm("uninstall", kt.RELEASE, "-n", "mon-without-crds", "--wait", check=False)


# --- 2. upgrades, 3. rollback -------------------------------------------------------------------

LIFECYCLE_NS = "lifecycle"
NEW_TAG = "0.1.1-k8s-tests"
# Applied one after the other, each on top of the ones before (one helm upgrade each).
STEPS = [
    ("retention", {"retentionDays": 90}),
    ("image-tag", {"image": {"tag": NEW_TAG}}),
    ("shards-2-to-3", {"mongodb": {"shards": {"count": 3}}}),
    ("service-replicas", {"service": {"autoscaling": {"enabled": False}, "replicas": 3}}),
    ("queue-mode", {"queue": {"enabled": True}, "externalAmqp": {"url": AMQP_URL}}),
]
# What a rollback must restore: the release's objects (Jobs and pods are runs, not
# configuration: helm rollback runs no post-install/post-upgrade hook, so the bootstrap Job of
# the last upgrade stays as it is).
SNAPSHOT_RESOURCES = ["deployments", "statefulsets", "services", "secrets", "configmaps", "serviceaccounts",
                      "horizontalpodautoscalers", "poddisruptionbudgets", "networkpolicies", "ingresses",
                      "persistentvolumeclaims", "cronjobs"]


def deep_merge(a, b):
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            deep_merge(a[k], v)
        else:
            a[k] = copy.deepcopy(v)
    return a


def snapshot(cluster, ns):
    """{(kind, name): the object's configuration} of the release's objects in ns."""
    items = yaml.safe_load(cluster.kubectl("get", ",".join(SNAPSHOT_RESOURCES), "-n", ns, "-o", "json").stdout)["items"]
    out = {}
    for o in items:
        kind, name = o["kind"], o["metadata"]["name"]
        if (kind, name) in (("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")) \
                or (kind == "Secret" and name.startswith("sh.helm.release.v1.")):
            continue
        if kind in ("Secret", "ConfigMap"):
            body = {"data": o.get("data"), "type": o.get("type")}
        elif kind == "ServiceAccount":
            body = {"automountServiceAccountToken": o.get("automountServiceAccountToken")}
        else:
            body = copy.deepcopy(o["spec"])
            if kind == "Service":
                body.pop("clusterIP", None)
                body.pop("clusterIPs", None)
        out[(kind, name)] = {"labels": o["metadata"].get("labels"), "body": body}
    return out


def obj(snap, kind, name):
    assert (kind, name) in snap, "%s/%s not there; have %s" % (kind, name, sorted(snap))
    return snap[(kind, name)]["body"]


def pod_spec_of(snap, kind, name):
    return obj(snap, kind, name)["template"]["spec"]


def bootstrap_job(cluster, ns):
    """The bootstrap hook Job of the release's current revision, as helm applied it: helm
    deletes it once it succeeds, so it is read from the release (`helm get hooks`)."""
    out = cluster.helm("get", "hooks", kt.RELEASE, "-n", ns).stdout
    jobs = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "Job"
            and d["metadata"]["name"] == FULLNAME + "-bootstrap"]
    assert len(jobs) == 1, "the release's hooks: %s" % out[:2000]
    return jobs[0]


def completed_runs(cluster, ns, job=FULLNAME + "-bootstrap"):
    """The uids of the Jobs named `job` that ran to completion (the job controller's Completed
    events outlive the Jobs helm deletes)."""
    return {e["involvedObject"]["uid"] for e in cluster.get("events", ns)
            if e["involvedObject"].get("kind") == "Job" and e["involvedObject"]["name"] == job
            and e.get("reason") == "Completed"}


def check_retention(cluster, ns, before, after):
    for dep, cont in (("service", "service"), ("archiver", "archiver")):
        env_before = kt.env_of(kt.container(pod_spec_of(before, "Deployment", "%s-%s" % (FULLNAME, dep)), cont))
        env_after = kt.env_of(kt.container(pod_spec_of(after, "Deployment", "%s-%s" % (FULLNAME, dep)), cont))
        assert (env_before["AUDIT_RETENTION_DAYS"], env_after["AUDIT_RETENTION_DAYS"]) == ("30", "90")
    job = bootstrap_job(cluster, ns)
    assert kt.env_of(kt.container(job["spec"]["template"]["spec"], "bootstrap"))["AUDIT_RETENTION_DAYS"] == "90"


def check_image_tag(cluster, ns, before, after):
    for dep, cont in (("service", "service"), ("archiver", "archiver")):
        c = kt.container(pod_spec_of(after, "Deployment", "%s-%s" % (FULLNAME, dep)), cont)
        assert c["image"] == "auditlog:" + NEW_TAG
    job = bootstrap_job(cluster, ns)
    assert kt.container(job["spec"]["template"]["spec"], "bootstrap")["image"] == "auditlog:" + NEW_TAG
    # MongoDB's images are not the project image: unchanged.
    for (kind, name), o in after.items():
        if kind == "StatefulSet" or (kind, name) == ("Deployment", FULLNAME + "-mongos"):
            assert o["body"]["template"] == before[(kind, name)]["body"]["template"], name


def check_shards(cluster, ns, before, after):
    sts = FULLNAME + "-shard2"
    assert ("StatefulSet", sts) not in before
    assert obj(after, "StatefulSet", sts)["replicas"] == 3
    obj(after, "Service", sts + "-hl")
    obj(after, "PodDisruptionBudget", sts)
    for i in range(3):
        obj(after, "PersistentVolumeClaim", "data-%s-%d" % (sts, i))
    args = kt.container(bootstrap_job(cluster, ns)["spec"]["template"]["spec"], "bootstrap")["args"]
    shard_args = [a for a in args if a.startswith("--shard-replset=")]
    assert len(shard_args) == 3 and any(sts + "-0." in a for a in shard_args[2:]), shard_args


def check_service_replicas(cluster, ns, before, after):
    name = FULLNAME + "-service"
    assert ("HorizontalPodAutoscaler", name) in before and ("HorizontalPodAutoscaler", name) not in after
    assert obj(after, "Deployment", name)["replicas"] == 3
    assert cluster.get("deployment", ns, name)["status"].get("readyReplicas") == 3


def check_queue_mode(cluster, ns, before, after):
    spec = pod_spec_of(after, "Deployment", FULLNAME + "-service")
    env = kt.env_of(kt.container(spec, "service"))
    assert env["AUDIT_INGEST_MODE"] == "queue"
    assert env["AUDIT_AMQP_URL"] == ("secret", FULLNAME + "-amqp", "url")
    assert env["AUDIT_AMQP_QUEUE"] == "auditlog.events"
    assert "AUDIT_INGEST_MODE" not in kt.env_of(kt.container(pod_spec_of(before, "Deployment", FULLNAME + "-service"), "service"))
    secret = obj(after, "Secret", FULLNAME + "-amqp")
    assert base64.b64decode(secret["data"]["url"]).decode() == AMQP_URL
    # README "Stopping a pod": 65 s in direct mode, 3 x grace + 15 = 105 s in queue mode.
    assert (pod_spec_of(before, "Deployment", FULLNAME + "-service")["terminationGracePeriodSeconds"],
            spec["terminationGracePeriodSeconds"]) == (65, 105)


CHECKS = {"retention": check_retention, "image-tag": check_image_tag, "shards-2-to-3": check_shards,
          "service-replicas": check_service_replicas, "queue-mode": check_queue_mode}


def current_revision(cluster, ns):
    history = yaml.safe_load(cluster.helm("history", kt.RELEASE, "-n", ns, "-o", "json").stdout)
    return history[-1]


@pytest.fixture(scope="module")
def lifecycle(cluster, tmp_path_factory):
    """The default profile installed in its own namespace for the upgrade/rollback sequence."""
    inst = kt.install_profile(cluster, "lifecycle", None, namespace=LIFECYCLE_NS)
    helm_output_ok(inst.proc, "helm install (lifecycle)")
    kt.assert_settled(cluster, LIFECYCLE_NS)
    generated = sorted(kt.rendered_names(inst.docs, "Secret") & set(DOCUMENTED_KEPT_SECRETS))
    # Every kept Secret the defaults generate (the RabbitMQ one only comes with rabbitmq.enabled,
    # the archive's signing key with archiver.signing.enabled).
    assert generated == sorted(n for n in DOCUMENTED_KEPT_SECRETS if not n.endswith(("-rabbitmq", "-archive-signing")))
    return {
        "values": {}, "dir": tmp_path_factory.mktemp("lifecycle"), "broken": None,
        "claims": {c[3] for c in kt.claims(inst.docs)},
        "generated": generated, "secrets": kt.secret_data(cluster, LIFECYCLE_NS, generated),
        "snapshots": {1: snapshot(cluster, LIFECYCLE_NS)}, "step_revision": {},
    }


@pytest.mark.parametrize("step", [s for s, _ in STEPS])
def test_upgrade(cluster, lifecycle, step):
    """Each `helm upgrade --wait --wait-for-jobs` succeeds without API warnings, the objects show
    the change, everything is ready again (the post-upgrade bootstrap Job ran and completed),
    and the generated Secrets — the MongoDB root password and keyfile, the service's and the
    archiver's MongoDB passwords, the API key — are byte-identical (same data, same object)."""
    st = lifecycle
    if st["broken"]:
        pytest.skip("an earlier upgrade step failed: %s" % st["broken"])
    st["broken"] = step
    ns = LIFECYCLE_NS
    before = snapshot(cluster, ns)
    deep_merge(st["values"], dict(STEPS)[step])
    vf = st["dir"] / ("%s.yaml" % step)
    vf.write_text(yaml.safe_dump(st["values"]))
    docs = kt.render(cluster, ns, None, [vf])
    kt.provision(cluster, docs, kt.nodes(cluster), skip=st["claims"])
    st["claims"] |= {c[3] for c in kt.claims(docs)}
    runs_before = completed_runs(cluster, ns)

    proc = cluster.helm("upgrade", kt.RELEASE, str(kt.CHART), "-n", ns, "--wait", "--wait-for-jobs",
                        "--timeout", "5m", "--values", str(vf), check=False, timeout=420)
    helm_output_ok(proc, "helm upgrade (%s)" % step)
    rev = current_revision(cluster, ns)
    assert rev["status"] == "deployed"
    kt.assert_settled(cluster, ns)
    assert completed_runs(cluster, ns) - runs_before, "the post-upgrade bootstrap Job did not run to completion"
    assert cluster.get("job", ns, FULLNAME + "-bootstrap") is None, "helm did not delete the succeeded hook"
    after = snapshot(cluster, ns)
    CHECKS[step](cluster, ns, before, after)
    assert kt.secret_data(cluster, ns, st["generated"]) == st["secrets"], "generated Secrets changed"
    st["snapshots"][rev["revision"]] = after
    st["step_revision"][step] = rev["revision"]
    st["broken"] = None


def diff(a, b):
    out = []
    for k in sorted(set(a) | set(b)):
        if k not in a:
            out.append("%s/%s: only before" % k)
        elif k not in b:
            out.append("%s/%s: only now" % k)
        elif a[k] != b[k]:
            out.append("%s/%s differs:\n  now:    %s\n  before: %s" % (k[0], k[1], a[k], b[k]))
    return out


def test_rollback_restores_previous_revision(cluster, lifecycle):
    """`helm rollback` to the previous revision (queue mode off again) restores that revision's
    objects: every Deployment's and StatefulSet's spec, every Service, Secret, PDB, PVC,
    NetworkPolicy as they were; the queue mode's Secret is gone; the generated Secrets are still
    byte-identical."""
    st = lifecycle
    if st["broken"] or "queue-mode" not in st["step_revision"]:
        pytest.skip("the upgrades did not all succeed")
    ns = LIFECYCLE_NS
    target = st["step_revision"]["queue-mode"] - 1
    proc = cluster.helm("rollback", kt.RELEASE, str(target), "-n", ns, "--wait", "--wait-for-jobs",
                        "--timeout", "5m", check=False, timeout=420)
    helm_output_ok(proc, "helm rollback to %d" % target)
    rev = current_revision(cluster, ns)
    assert rev["status"] == "deployed" and rev["description"] == "Rollback to %d" % target, rev
    kt.assert_settled(cluster, ns)
    now = snapshot(cluster, ns)
    assert len(now) > 20 and ("StatefulSet", FULLNAME + "-shard2") in now, sorted(now)
    differences = diff(now, st["snapshots"][target])
    assert not differences, "after rollback to %d:\n%s" % (target, "\n".join(differences))
    env = kt.env_of(kt.container(pod_spec_of(now, "Deployment", FULLNAME + "-service"), "service"))
    assert "AUDIT_INGEST_MODE" not in env and ("Secret", FULLNAME + "-amqp") not in now
    assert kt.secret_data(cluster, ns, st["generated"]) == st["secrets"], "generated Secrets changed"


def test_rollback_across_shard_addition_runs_the_shard_check_first(cluster, lifecycle):
    """docs/deployment.md §4: `helm rollback` to a revision with fewer shards runs that
    revision's pre-rollback hook (`auditlog-ops cluster check-shards` with its shard list)
    before changing anything, and a failed hook stops the rollback with every object in place.
    kwok runs no container, so the hook's refusal (exit 7 when mongos lists a shard beyond the
    list; infra/ops/src/shard_guard.rs's tests) is stood in for by a ResourceQuota that forbids
    its Job: the API server refuses it and helm must stop there."""
    st = lifecycle
    if "shards-2-to-3" not in st["step_revision"]:
        pytest.skip("the shard upgrade did not succeed")
    ns = LIFECYCLE_NS
    target = st["step_revision"]["shards-2-to-3"] - 1
    hooks = [d for d in yaml.safe_load_all(cluster.helm("get", "hooks", kt.RELEASE, "-n", ns,
                                                        "--revision", str(target)).stdout) if d]
    (check,) = [h for h in hooks if h["metadata"]["annotations"].get("helm.sh/hook") == "pre-rollback"]
    args = kt.container(check["spec"]["template"]["spec"], "check-shards")["args"]
    assert args[:2] == ["cluster", "check-shards"]
    shards = [a.split("=", 1)[1].split("/")[0] for a in args if a.startswith("--shard=")]
    assert shards == ["shard0", "shard1"], args  # the replica sets' names, as mongos lists them

    before = current_revision(cluster, ns)
    assert cluster.get("statefulset", ns, FULLNAME + "-shard2") is not None
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-jobs", "namespace": ns},
             "spec": {"hard": {"count/jobs.batch": "0"}}}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(quota), check=True)
    try:
        proc = cluster.helm("rollback", kt.RELEASE, str(target), "-n", ns, "--wait", "--timeout", "2m",
                            check=False, timeout=300)
    finally:
        cluster.kubectl("delete", "resourcequota", "no-jobs", "-n", ns, "--wait=true", check=True)
    kt.log("rollback to %d with the hook refused: rc %d\n%s" % (target, proc.returncode, proc.stderr))
    assert proc.returncode != 0 and "pre-rollback" in proc.stderr, proc.stderr
    assert cluster.get("statefulset", ns, FULLNAME + "-shard2") is not None, "shard2 deleted"
    refused = current_revision(cluster, ns)
    # Helm records the attempt and leaves it pending (docs/deployment.md §4 says what to do).
    assert refused["revision"] == before["revision"] + 1 and refused["status"] == "pending-rollback", refused
    assert diff(snapshot(cluster, ns), st["snapshots"][st["step_revision"]["queue-mode"] - 1]) == []

    # The documented way out (docs/deployment.md §4): nothing was changed, so drop the pending
    # record; the running revision is the release's last again and upgrades work.
    cluster.kubectl("delete", "secret", "sh.helm.release.v1.%s.v%d" % (kt.RELEASE, refused["revision"]),
                    "-n", ns, check=True)
    now = current_revision(cluster, ns)
    assert now["status"] == "deployed" and now["revision"] == before["revision"], now
    proc = cluster.helm("upgrade", kt.RELEASE, str(kt.CHART), "-n", ns, "--reuse-values", "--wait",
                        "--wait-for-jobs", "--timeout", "5m", check=False, timeout=420)
    helm_output_ok(proc, "helm upgrade after the refused rollback")
    assert current_revision(cluster, ns)["status"] == "deployed"
    kt.assert_settled(cluster, ns)
    assert cluster.get("statefulset", ns, FULLNAME + "-shard2") is not None


# --- 4. uninstall -------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILE_IDS)
def test_uninstall_leaves_only_what_is_documented(cluster, install, profile):
    """`helm uninstall` leaves exactly what helm/auditlog/README.md and docs/deployment.md §6
    say it leaves — the generated Secrets (`helm.sh/resource-policy: keep`), the StatefulSets'
    PVCs and the archiver's PVC — and nothing else: every namespaced kind (events aside) is
    listed and compared with the namespace's contents before the install."""
    inst = install(profile)
    helm_output_ok(inst.proc, "helm install (%s)" % profile)
    ns = inst.namespace
    proc = cluster.helm("uninstall", kt.RELEASE, "-n", ns, "--wait", "--timeout", "2m", check=False)
    helm_output_ok(proc, "helm uninstall (%s)" % profile)
    inst.uninstalled = True

    expected = set(inst.baseline)
    expected |= {("Secret", n) for n in DOCUMENTED_KEPT_SECRETS if n in kt.rendered_names(inst.docs, "Secret")}
    expected |= {("PersistentVolumeClaim", c[3]) for c in kt.claims(inst.docs)}

    def settled():
        # The garbage collector removes pods, ReplicaSets, EndpointSlices after their owners.
        contents = cluster.namespace_contents(ns)
        return contents if not (contents - expected) else None

    try:
        contents = cluster.wait_until("the namespace to settle", settled, timeout=60, interval=1)
    except AssertionError:
        contents = cluster.namespace_contents(ns)
    missing = expected - contents
    assert not missing, "uninstall removed what the docs say it keeps: %s" % sorted(missing)
    # Hook objects included: helm never deletes them on uninstall, so the bootstrap Job deletes
    # itself on success (hook-delete-policy hook-succeeded).
    extra = contents - expected
    assert not extra, "uninstall left what the docs do not mention: %s" % sorted(extra)
    kept = sorted("%s/%s" % x for x in expected - inst.baseline)
    kt.log("%s: uninstall kept %s" % (profile, kept))
