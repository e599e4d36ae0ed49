"""The chart's own RabbitMQ (rabbitmq.enabled) on the private API server of conftest.py.

The value set infra/helm-tests/values/queue-mode-rabbitmq.yaml is also a profile of
test_chart_on_k8s.py (install, server-side dry run, uninstall like every profile). This module
installs it once more, in a namespace of its own, to look at what is particular to RabbitMQ:
where the scheduler put the nodes, their PVCs, how the service is wired to it, and that
`helm upgrade` keeps its credentials. As everywhere here, kwok marks pods Ready without running
them: this checks what Kubernetes accepts and does, not that RabbitMQ forms a cluster.

Run after test_chart_on_k8s.py (run.sh lists it second): by then that module's uninstall tests
have freed the nodes its profiles held.
"""
import base64

import pytest
import yaml

import kubetools as kt

NS = "rabbitmq-on-k8s"
PROFILE = "queue-mode-rabbitmq"
FULLNAME = kt.RELEASE
RABBITMQ = FULLNAME + "-rabbitmq"
# MongoDB at its smallest beside RabbitMQ: this module is about the latter.
SMALL_MONGODB = {"mongodb": {
    "configsvr": {"replicas": 1, "persistence": {"enabled": False}},
    "shards": {"count": 1, "members": 1, "persistence": {"enabled": False}},
    "mongos": {"replicas": 1},
}}
UPGRADE = {
    "service": {"autoscaling": {"enabled": False}, "replicas": 3},
    "rabbitmq": {"resources": {"requests": {"cpu": "300m", "memory": "1Gi"},
                               "limits": {"cpu": "1500m", "memory": "1Gi"}}},
}


def helm_ok(proc, what):
    assert proc.returncode == 0, "%s failed (%d):\n%s" % (what, proc.returncode, proc.stderr)
    warnings = kt.api_warnings(proc.stderr)
    assert not warnings, "%s: the API server sent warnings:\n%s" % (what, "\n".join(warnings))


def profile_file():
    files = dict(kt.profiles())
    assert PROFILE in files, "infra/helm-tests/values/%s.yaml is missing" % PROFILE
    return files[PROFILE]


def rabbitmq_pods(cluster):
    return [p for p in cluster.get("pods", NS)
            if (p["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "rabbitmq"]


def decoded(secret):
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


@pytest.fixture(scope="module")
def rabbitmq(cluster, tmp_path_factory):
    """The profile with a small MongoDB, installed in NS under Pod Security `restricted`."""
    d = tmp_path_factory.mktemp("rabbitmq")
    small = d / "small-mongodb.yaml"
    small.write_text(yaml.safe_dump(SMALL_MONGODB))
    inst = kt.install_profile(cluster, "rabbitmq", profile_file(), namespace=NS, extra_values=[small])
    yield {"inst": inst, "dir": d, "values": [small], "upgraded": False}
    if not inst.uninstalled:
        cluster.helm("uninstall", kt.RELEASE, "-n", NS, "--wait", "--timeout", "2m", check=False)


def test_installs_three_nodes_on_three_hosts_under_restricted_pod_security(cluster, rabbitmq):
    inst = rabbitmq["inst"]
    assert not inst.unresolved, inst.unresolved
    helm_ok(inst.proc, "helm install (%s)" % PROFILE)
    ns = cluster.get("namespace", name=NS)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    kt.assert_settled(cluster, NS)

    sts = cluster.get("statefulset", NS, RABBITMQ)
    assert sts is not None, "no StatefulSet %s" % RABBITMQ
    assert (sts["spec"]["replicas"], sts["status"].get("readyReplicas")) == (3, 3), sts["status"]
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    pods = rabbitmq_pods(cluster)
    assert sorted(p["metadata"]["name"] for p in pods) == ["%s-%d" % (RABBITMQ, i) for i in range(3)]
    hosts = {p["spec"]["nodeName"] for p in pods}
    assert len(hosts) == 3, "RabbitMQ nodes share Kubernetes nodes: %s" % [
        (p["metadata"]["name"], p["spec"]["nodeName"]) for p in pods]
    assert all(kt.condition(p, "Ready") == "True" for p in pods)

    for i in range(3):
        pvc = cluster.get("persistentvolumeclaim", NS, "data-%s-%d" % (RABBITMQ, i))
        assert pvc is not None and pvc["status"]["phase"] == "Bound", pvc and pvc["status"]

    pdb = cluster.get("poddisruptionbudget", NS, RABBITMQ)
    assert pdb is not None and pdb["spec"]["maxUnavailable"] == 1
    assert pdb["status"].get("expectedPods") == 3, pdb.get("status")

    # Kubernetes peer discovery of RabbitMQ 4.1+ asks no API server: no RBAC, no token.
    for kind in ("roles", "rolebindings"):
        assert cluster.get(kind, NS) == []
    assert sts["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    headless = cluster.get("service", NS, RABBITMQ + "-hl")
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True


def test_service_reaches_the_chart_rabbitmq_through_its_secret(cluster, rabbitmq):
    dep = cluster.get("deployment", NS, FULLNAME + "-service")
    env = kt.env_of(kt.container(dep["spec"]["template"]["spec"], "service"))
    assert env["AUDIT_INGEST_MODE"] == "queue"
    assert env["AUDIT_AMQP_URL"] == ("secret", RABBITMQ, "url")
    secret = cluster.get("secret", NS, RABBITMQ)
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    data = decoded(secret)
    assert data["url"] == "amqp://%s:%s@%s.%s.svc.cluster.local:5672/%%2f" % (
        data["username"], data["password"], RABBITMQ, NS)
    assert cluster.get("secret", NS, FULLNAME + "-amqp") is None
    # The URL's host is the client Service, which selects the RabbitMQ pods on AMQP.
    svc = cluster.get("service", NS, RABBITMQ)
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]}["amqp"] == 5672
    for p in rabbitmq_pods(cluster):
        labels = p["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    # The nodes get their default user and cookie from the same Secret.
    sts = cluster.get("statefulset", NS, RABBITMQ)
    spec = sts["spec"]["template"]["spec"]
    renv = kt.env_of(kt.container(spec, "rabbitmq"))
    assert renv["RABBITMQ_DEFAULT_USER"] == ("secret", RABBITMQ, "username")
    assert renv["RABBITMQ_DEFAULT_PASS"] == ("secret", RABBITMQ, "password")
    (cookie,) = [v for v in spec["volumes"] if v["name"] == "cookie"]
    assert cookie["secret"]["secretName"] == RABBITMQ


def test_upgrade_keeps_the_rabbitmq_password_and_cookie(cluster, rabbitmq):
    before = cluster.get("secret", NS, RABBITMQ)
    old_template = cluster.get("statefulset", NS, RABBITMQ)["spec"]["template"]
    up = rabbitmq["dir"] / "upgrade.yaml"
    up.write_text(yaml.safe_dump(UPGRADE))
    proc = cluster.helm("upgrade", kt.RELEASE, str(kt.CHART), "-n", NS, "--wait", "--wait-for-jobs",
                        "--timeout", "5m", *kt.values_args(profile_file(), rabbitmq["values"] + [up]),
                        check=False, timeout=420)
    helm_ok(proc, "helm upgrade (%s)" % PROFILE)
    rabbitmq["upgraded"] = True
    kt.assert_settled(cluster, NS)
    # The change arrived: 3 service replicas, the nodes rolled with their new resources.
    assert cluster.get("deployment", NS, FULLNAME + "-service")["status"].get("readyReplicas") == 3
    sts = cluster.get("statefulset", NS, RABBITMQ)
    c = kt.container(sts["spec"]["template"]["spec"], "rabbitmq")
    assert c["resources"]["limits"]["cpu"] == "1500m"
    assert sts["spec"]["template"] != old_template
    assert sts["status"].get("updatedReplicas") == 3 and sts["status"].get("readyReplicas") == 3
    # ... and the credentials did not: the same object, the same password, cookie and URL.
    after = cluster.get("secret", NS, RABBITMQ)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    old, new = decoded(before), decoded(after)
    for key in ("username", "password", "erlang-cookie", "url"):
        assert new[key] == old[key], "%s changed on helm upgrade" % key


def test_external_rabbitmq_renders_no_rabbitmq_of_the_chart(cluster):
    files = dict(kt.profiles())
    docs = kt.render(cluster, "render-only", files["queue-mode"])
    assert not [d for d in docs if (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "rabbitmq"]
    assert not [d for d in docs if d["kind"] == "StatefulSet" and "rabbitmq" in d["metadata"]["name"]]
    (dep,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == FULLNAME + "-service"]
    env = kt.env_of(kt.container(dep["spec"]["template"]["spec"], "service"))
    assert env["AUDIT_AMQP_URL"] == ("secret", FULLNAME + "-amqp", "url")
    # Both at once is refused before anything reaches the cluster.
    proc = cluster.helm("template", kt.RELEASE, str(kt.CHART), "--namespace", "render-only",
                        "--values", str(profile_file()), "--set", "externalAmqp.url=amqp://u:p@mq:5672/%2f",
                        check=False)
    assert proc.returncode != 0
    assert "rabbitmq.enabled=true and externalAmqp.url/externalAmqp.existingSecret are both set" in proc.stderr


def test_uninstall_keeps_the_rabbitmq_secret_and_volumes(cluster, rabbitmq):
    inst = rabbitmq["inst"]
    before = cluster.get("secret", NS, RABBITMQ)
    assert before is not None
    proc = cluster.helm("uninstall", kt.RELEASE, "-n", NS, "--wait", "--timeout", "2m", check=False)
    helm_ok(proc, "helm uninstall (%s)" % PROFILE)
    inst.uninstalled = True
    cluster.wait_until("the RabbitMQ pods to go", lambda: not rabbitmq_pods(cluster), timeout=60)
    assert cluster.get("statefulset", NS, RABBITMQ) is None
    after = cluster.get("secret", NS, RABBITMQ)
    assert after is not None and after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["data"] == before["data"]
    for i in range(3):
        assert cluster.get("persistentvolumeclaim", NS, "data-%s-%d" % (RABBITMQ, i)) is not None
