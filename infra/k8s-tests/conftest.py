"""Session fixtures of the k8s tests: one private Kubernetes control plane for the whole session
(infra/dev/k8s.sh start in a temporary K8S_STATE_DIR, stopped at the end), its StorageClass and
node labels, the cert-manager CRD, and the chart installed once per profile.
"""
import dataclasses
import os
import shlex
import shutil
import subprocess
import tempfile
import time

import pytest
import yaml

import kubetools as kt


@pytest.fixture(scope="session")
def cluster():
    """A new, empty cluster (3 kwok nodes) for this session only.

    K8S_TESTS_STATE_DIR (set by run.sh, which also stops the cluster if pytest itself is killed)
    or a fresh temporary directory. K8S_TESTS_KEEP=1 leaves it running at the end (the test
    prints how to reach it); otherwise it is stopped, and its directory removed unless a test
    failed (the component logs are in it)."""
    state = os.environ.get("K8S_TESTS_STATE_DIR") or tempfile.mkdtemp(prefix="auditlog-k8s-tests.")
    # 6 kwok nodes of 8 CPU / 32Gi (infra/dev/k8s.sh's size): the profiles stay installed until
    # the uninstall tests at the end and together request ~37 CPUs.
    env = dict(os.environ, K8S_STATE_DIR=state, K8S_NODES=os.environ.get("K8S_TESTS_NODES", "6"))
    kt.log("starting a private Kubernetes control plane in %s" % state)
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(kt.K8S_SH), "start"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        subprocess.run(["bash", str(kt.K8S_SH), "stop"], env=env, capture_output=True)
        pytest.fail("infra/dev/k8s.sh start failed (%d):\n%s" % (proc.returncode, proc.stderr[-4000:]),
                    pytrace=False)
    exports = {}
    for line in proc.stdout.splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export "):].partition("=")
            exports[k] = shlex.split(v)[0]
    c = kt.Cluster(exports["KUBECONFIG"], state)
    kt.log("cluster up in %.1fs: %s" % (time.monotonic() - t0, exports.get("K8S_API_SERVER")))
    setup_cluster(c)
    failed_before = _session_failures[0]
    yield c
    if os.environ.get("K8S_TESTS_KEEP") == "1":
        print("\nK8S_TESTS_KEEP=1: the cluster still runs. KUBECONFIG=%s; stop it with "
              "K8S_STATE_DIR=%s infra/dev/k8s.sh stop" % (exports["KUBECONFIG"], state))
        return
    subprocess.run(["bash", str(kt.K8S_SH), "stop"], env=env, capture_output=True, text=True)
    if os.environ.get("K8S_TESTS_STATE_DIR"):
        return  # run.sh removes it, or says where it is when a test failed
    if _session_failures[0] == failed_before:
        shutil.rmtree(state, ignore_errors=True)
    else:
        print("\nthe cluster's logs are in %s" % state)


_session_failures = [0]


def pytest_runtest_logreport(report):
    if report.failed:
        _session_failures[0] += 1


def setup_cluster(c):
    """What the chart's documented profiles expect of a cluster, beyond the control plane:
    - a default StorageClass (the chart's `storageClass: ""` means the cluster default), with no
      provisioner: kubetools.provision makes the local PVs each install needs;
    - node labels the production profile (tls-3x3) schedules by: its shards have the nodeSelector
      node-role/db=true and spread over topology.kubernetes.io/zone (three zones here);
    - the cert-manager Certificate CRD (crds/cert-manager.yaml), for the profiles with
      mongodb.tls.certManager.enabled. (The monitoring CRDs are installed only by the test that
      needs them, so every other install runs without them.)"""
    c.apply([kt.storage_class(kt.DEFAULT_STORAGE_CLASS, default=True)])
    for i, node in enumerate(kt.nodes(c)):
        c.kubectl("label", "node", node, "--overwrite", "node-role/db=true",
                  "topology.kubernetes.io/zone=zone-%s" % "abc"[i % 3])
    c.kubectl("apply", "-f", str(kt.CRDS_DIR / "cert-manager.yaml"))
    c.kubectl("wait", "--for=condition=Established", "--timeout=60s",
              "crd/certificates.cert-manager.io")


@pytest.fixture(scope="session")
def install(cluster):
    """install(profile) -> Install: the profile installed once per session (in p-<profile>)."""
    cache = {}
    files = dict(kt.profiles())

    def get(profile):
        if profile not in cache:
            cache[profile] = kt.install_profile(cluster, profile, files[profile])
        return cache[profile]
    return get


@dataclasses.dataclass
class DryRun:
    namespace: str
    docs: list
    unresolved: list
    proc: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def dry_run(cluster):
    """dry_run(profile) -> DryRun: `helm template ... | kubectl apply --dry-run=server -f -` in a
    restricted namespace of its own (dry-<profile>), once per profile.

    Before it, the profile's inputs (existing Secrets, ConfigMaps) and the chart's ServiceAccount
    are created for real: a dry run persists nothing, and the ServiceAccount admission plugin
    refuses a bare Pod (the `helm test` pod) whose ServiceAccount does not exist yet — helm
    creates the test pod long after the ServiceAccount, so that refusal would be an artefact
    of the dry run, not something a real install meets. kubectl validates strictly (the
    default, said explicitly): an unknown field is an error; any other API warning is printed."""
    cache = {}
    files = dict(kt.profiles())

    def get(profile):
        if profile not in cache:
            ns = ("dry-" + profile)[:63]
            cluster.create_namespace(ns)
            docs = kt.render(cluster, ns, files[profile])
            create, unresolved = kt.external_inputs(docs, files[profile])
            sas = [d for d in docs if d["kind"] == "ServiceAccount"]
            if create or sas:
                cluster.apply(create + sas, "-n", ns)
            proc = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-",
                                   input=yaml.safe_dump_all(docs), check=False)
            cache[profile] = DryRun(ns, docs, unresolved, proc)
        return cache[profile]
    return get
