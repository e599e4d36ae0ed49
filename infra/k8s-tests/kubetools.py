"""Helpers of the k8s tests: run kubectl and helm against the private cluster, render the chart,
read what a profile needs from outside the chart (Secrets, ConfigMaps, volumes), and list what a
namespace holds.

Nothing here talks to any cluster but the one the session fixture (conftest.py) started: every
command gets that cluster's KUBECONFIG and a helm home inside its state directory.
"""
import base64
import dataclasses
import json
import os
import pathlib
import re
import subprocess
import time

import yaml

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
CHART = REPO / "helm" / "auditlog"
VALUES_DIR = REPO / "infra" / "helm-tests" / "values"
EXAMPLES_DIR = CHART / "examples"
BIN = pathlib.Path(os.environ.get("K8S_BIN_DIR", REPO / "target" / "tools" / "bin"))
KUBECTL = str(BIN / "kubectl")
HELM = str(BIN / "helm")
K8S_SH = REPO / "infra" / "dev" / "k8s.sh"
CRDS_DIR = HERE / "crds"

RELEASE = "auditlog"
# The StorageClass the tests make the cluster default (there is none: k8s.sh has no provisioner).
DEFAULT_STORAGE_CLASS = "k8s-tests-local"
# Pod Security Admission at `restricted` for every namespace the chart is installed in: enforce
# (pods that violate it are refused), and warn + audit so a Deployment/StatefulSet/Job/CronJob
# whose pod template violates it already draws an API warning when it is created.
RESTRICTED_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
    "pod-security.kubernetes.io/audit": "restricted",
    "pod-security.kubernetes.io/audit-version": "latest",
}


def profiles():
    """The chart's documented value sets, as the offline checks (infra/helm-tests/run.sh) find
    them: the defaults, each file of infra/helm-tests/values/, each example of the chart.
    Returns [(id, values file or None)]."""
    out = [("default", None)]
    out += [(p.stem, p) for p in sorted(VALUES_DIR.glob("*.yaml"))]
    out += [("example-" + p.stem, p) for p in sorted(EXAMPLES_DIR.glob("*.yaml"))]
    return out


def log(msg):
    # Shown by pytest with the output of a failing test (and always with -s).
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def api_warnings(stderr):
    """The warning lines the API server sent, as helm prints them (klog:
    `warnings.go:NN] "Warning: ..."`) or kubectl does (`Warning: ...`). Not client-go's own
    log lines that happen to say "Warning" (a watch helm ends when a hook Job is deleted logs
    `reflector.go:NN] "Warning: watch ended with error"`): those are not the server's."""
    return [line for line in stderr.splitlines()
            if re.search(r"warnings\.go:\d+\]", line) or re.match(r"\s*Warning:", line)]


class Cluster:
    def __init__(self, kubeconfig, state_dir):
        self.kubeconfig = kubeconfig
        self.state_dir = pathlib.Path(state_dir)
        home = self.state_dir / "helm-home"
        self.env = dict(
            os.environ,
            KUBECONFIG=kubeconfig,
            HELM_CACHE_HOME=str(home / "cache"),
            HELM_CONFIG_HOME=str(home / "config"),
            HELM_DATA_HOME=str(home / "data"),
        )

    # --- running commands ----------------------------------------------------------------------

    def run(self, cmd, input=None, check=True, timeout=600):
        t0 = time.monotonic()
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, env=self.env,
                              timeout=timeout)
        shown = " ".join(str(c) for c in cmd)
        log("%s -> %d (%.1fs)" % (shown if len(shown) < 300 else shown[:300] + " ...",
                                  proc.returncode, time.monotonic() - t0))
        if check and proc.returncode != 0:
            raise AssertionError("command failed (%d): %s\nstdout:\n%s\nstderr:\n%s"
                                 % (proc.returncode, shown, proc.stdout, proc.stderr))
        return proc

    def kubectl(self, *args, **kw):
        return self.run([KUBECTL, *args], **kw)

    def helm(self, *args, **kw):
        return self.run([HELM, *args], **kw)

    def popen_helm(self, *args):
        log("%s (background)" % " ".join([HELM, *args]))
        return subprocess.Popen([HELM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=self.env)

    # --- reading objects -----------------------------------------------------------------------

    def get(self, kind, namespace=None, name=None):
        """One object (None when it does not exist) or, without name, the list of items."""
        args = ["get", kind]
        if name:
            args.append(name)
        if namespace:
            args += ["-n", namespace]
        proc = self.kubectl(*args, "-o", "json", "--ignore-not-found", check=True)
        if not proc.stdout.strip():
            return None if name else []
        obj = json.loads(proc.stdout)
        return obj if name else obj["items"]

    def apply(self, docs, *extra):
        text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs)
        return self.kubectl("apply", *extra, "-f", "-", input=text)

    def namespaced_resources(self):
        """Every namespaced resource type that can be listed, events excluded (they record what
        happened; they are not objects anyone made)."""
        out = self.kubectl("api-resources", "--namespaced=true", "--verbs=list", "-o", "name").stdout
        return [r for r in out.split() if r not in ("events", "events.events.k8s.io")]

    def namespace_contents(self, namespace):
        """{(kind, name)} of everything the namespace holds, events excluded."""
        items = json.loads(self.kubectl("get", ",".join(self.namespaced_resources()), "-n", namespace,
                                        "-o", "json").stdout)["items"]
        return {(o["kind"], o["metadata"]["name"]) for o in items}

    def create_namespace(self, name, labels=RESTRICTED_LABELS):
        self.apply([{"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": name, "labels": dict(labels)}}])
        # The service-account controller makes `default` in every new namespace; wait for it, so
        # a snapshot taken now already holds it.
        deadline = time.monotonic() + 30
        while self.get("serviceaccount", name, "default") is None:
            assert time.monotonic() < deadline, "no ServiceAccount default in namespace %s" % name
            time.sleep(0.2)

    def wait_until(self, what, fn, timeout=60, interval=0.5):
        deadline = time.monotonic() + timeout
        while True:
            value = fn()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
            time.sleep(interval)


# --- the chart ------------------------------------------------------------------------------


def values_args(values_file=None, extra_values=()):
    args = []
    if values_file:
        args += ["--values", str(values_file)]
    for f in extra_values:
        args += ["--values", str(f)]
    return args


def render(cluster, namespace, values_file=None, extra_values=()):
    """`helm template` of the release: the list of objects (hooks and the test pod included)."""
    out = cluster.helm("template", RELEASE, str(CHART), "--namespace", namespace,
                       *values_args(values_file, extra_values)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def pod_specs(docs):
    """(object, pod spec) of every object that makes pods."""
    for d in docs:
        kind = d.get("kind")
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            yield d, d["spec"]["template"]["spec"]
        elif kind == "CronJob":
            yield d, d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif kind == "Pod":
            yield d, d["spec"]


def references(docs):
    """{(kind, name): {"keys": set, "optional": bool}} of the Secrets and ConfigMaps that the pods
    of these objects use (env, envFrom, volumes, projected volumes, image pull secrets)."""
    refs = {}

    def add(kind, name, key=None, optional=False):
        r = refs.setdefault((kind, name), {"keys": set(), "optional": True})
        if key:
            r["keys"].add(key)
        r["optional"] = r["optional"] and bool(optional)

    for _, spec in pod_specs(docs):
        for s in spec.get("imagePullSecrets") or []:
            add("Secret", s["name"])
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            for e in c.get("env") or []:
                vf = e.get("valueFrom") or {}
                if "secretKeyRef" in vf:
                    r = vf["secretKeyRef"]
                    add("Secret", r["name"], r.get("key"), r.get("optional"))
                if "configMapKeyRef" in vf:
                    r = vf["configMapKeyRef"]
                    add("ConfigMap", r["name"], r.get("key"), r.get("optional"))
            for e in c.get("envFrom") or []:
                if "secretRef" in e:
                    add("Secret", e["secretRef"]["name"], None, e["secretRef"].get("optional"))
                if "configMapRef" in e:
                    add("ConfigMap", e["configMapRef"]["name"], None, e["configMapRef"].get("optional"))
        for v in spec.get("volumes") or []:
            sources = [v] + [s for s in (v.get("projected") or {}).get("sources") or []]
            for s in sources:
                if "secret" in s:
                    name = s["secret"].get("secretName") or s["secret"].get("name")
                    keys = [i["key"] for i in s["secret"].get("items") or []] or [None]
                    for k in keys:
                        add("Secret", name, k, s["secret"].get("optional"))
                if "configMap" in s:
                    keys = [i["key"] for i in s["configMap"].get("items") or []] or [None]
                    for k in keys:
                        add("ConfigMap", s["configMap"]["name"], k, s["configMap"].get("optional"))
    return refs


def rendered_names(docs, kind):
    return {d["metadata"]["name"] for d in docs if d.get("kind") == kind}


def external_inputs(docs, values_file):
    """What the profile's pods use that the chart does not render: (create, unresolved).

    create: the Secrets/ConfigMaps (documents to apply) a user provides for this profile — the
    ones its values file names (existingSecret, hdfs.configMap, ...). A Secret that cert-manager
    makes from a Certificate the chart renders is neither: no cert-manager runs here, and kwok
    starts the pods without their volumes.
    unresolved: required references that are neither rendered, nor issued by a rendered
    Certificate, nor named in the values file — a chart bug (a pod that could never start)."""
    text = values_file.read_text() if values_file else ""
    issued = {d["spec"]["secretName"] for d in docs if d.get("kind") == "Certificate"}
    create, unresolved = [], []
    for (kind, name), r in sorted(references(docs).items()):
        if name in rendered_names(docs, kind) or (kind == "Secret" and name in issued):
            continue
        if r["optional"]:
            continue
        if not re.search(r"(?<![\w.-])%s(?![\w.-])" % re.escape(name), text):
            unresolved.append("%s/%s" % (kind, name))
            continue
        keys = sorted(k for k in r["keys"] if k) or ["placeholder"]
        data = {k: base64.b64encode(b"k8s-tests placeholder").decode() for k in keys}
        doc = {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}
        if kind == "Secret":
            doc.update(type="Opaque", data=data)
        else:
            doc["data"] = {k: "k8s-tests placeholder" for k in keys}
        create.append(doc)
    return create, unresolved


def claims(docs):
    """The PersistentVolumeClaims the objects will make: [(storageClassName or None, size,
    accessModes, claim name)]. None = the cluster's default class."""
    out = []
    for d in docs:
        if d.get("kind") == "PersistentVolumeClaim":
            s = d["spec"]
            out.append((s.get("storageClassName"), s["resources"]["requests"]["storage"],
                        tuple(s["accessModes"]), d["metadata"]["name"]))
        elif d.get("kind") == "StatefulSet":
            for t in d["spec"].get("volumeClaimTemplates") or []:
                s = t["spec"]
                for i in range(int(d["spec"].get("replicas", 1))):
                    out.append((s.get("storageClassName"), s["resources"]["requests"]["storage"],
                                tuple(s["accessModes"]),
                                "%s-%s-%d" % (t["metadata"]["name"], d["metadata"]["name"], i)))
    return out


_pv_seq = [0]


def provision(cluster, docs, nodes, skip=()):
    """Local PersistentVolumes for every claim the objects will make: one on each node per claim,
    of exactly the requested size and access modes, in the claim's StorageClass (made here when
    missing: no provisioner, WaitForFirstConsumer, so the scheduler binds each claim on the node
    it picks for the pod, which keeps hard anti-affinity satisfiable). Unused PVs stay Available.
    skip: names of claims already provided for (an upgrade provides for its new claims only)."""
    classes = {c[0] for c in claims(docs)}
    for sc in sorted(c for c in classes if c):
        if cluster.get("storageclass", name=sc) is None:
            cluster.apply([storage_class(sc, default=False)])
    pvs = []
    for sc, size, modes, claim in claims(docs):
        if claim in skip:
            continue
        _pv_seq[0] += 1
        for node in nodes:
            name = "k8s-tests-%d-%s" % (_pv_seq[0], node)
            pvs.append({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": name, "labels": {"k8s-tests/for-claim": claim[:63].rstrip("-_.")}},
                "spec": {
                    "capacity": {"storage": size},
                    "accessModes": list(modes),
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": DEFAULT_STORAGE_CLASS if sc is None else sc,
                    "local": {"path": "/mnt/k8s-tests/%s" % name},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
                },
            })
    if pvs:
        cluster.apply(pvs)


def storage_class(name, default):
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
          "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer",
          "reclaimPolicy": "Retain"}
    if default:
        sc["metadata"]["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
    return sc


# --- installing a profile ---


def nodes(c):
    return sorted(n["metadata"]["name"] for n in c.get("nodes"))


@dataclasses.dataclass
class Install:
    profile: str
    values_file: pathlib.Path
    namespace: str
    docs: list            # what `helm template` renders for it (hooks and the test pod included)
    created: list         # the profile's inputs made before the install ("kind/name")
    unresolved: list      # Secrets/ConfigMaps the pods use that nobody provides
    baseline: set         # the namespace's contents just before `helm install`
    proc: subprocess.CompletedProcess
    seconds: float
    uninstalled: bool = False


def install_profile(c, profile, values_file, namespace=None, extra_values=(), extra_args=()):
    """A restricted namespace, the profile's inputs and PVs, then
    `helm install --wait --wait-for-jobs --timeout 5m`. Does not assert: the tests do."""
    ns = namespace or ("p-" + profile)[:63]
    c.create_namespace(ns)
    docs = render(c, ns, values_file, extra_values)
    create, unresolved = external_inputs(docs, values_file)
    if create:
        c.apply(create, "-n", ns)
    provision(c, docs, nodes(c))
    baseline = c.namespace_contents(ns)
    t0 = time.monotonic()
    proc = c.helm("install", RELEASE, str(CHART), "-n", ns, "--wait", "--wait-for-jobs",
                  "--timeout", "5m", *values_args(values_file, extra_values), *extra_args,
                  check=False, timeout=420)
    return Install(profile, values_file, ns, docs, ["%s/%s" % (d["kind"], d["metadata"]["name"]) for d in create],
                   unresolved, baseline, proc, time.monotonic() - t0)


# --- state of a namespace -------------------------------------------------------------------


def condition(obj, ctype):
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return c["status"]
    return None


def workload_problems(cluster, namespace):
    """What is not as `helm install --wait` promises: Deployments/StatefulSets without their
    ready (and updated) replicas, Jobs not complete, PVCs not Bound, pods not Running/Succeeded."""
    problems = []
    for d in cluster.get("deployments", namespace):
        want, st = d["spec"].get("replicas", 1), d.get("status") or {}
        if (st.get("readyReplicas", 0), st.get("updatedReplicas", 0), st.get("replicas", 0)) != (want,) * 3 \
                or st.get("observedGeneration") != d["metadata"]["generation"]:
            problems.append("Deployment %s: want %d, status %s" % (d["metadata"]["name"], want, st))
    for s in cluster.get("statefulsets", namespace):
        want, st = s["spec"].get("replicas", 1), s.get("status") or {}
        if (st.get("readyReplicas", 0), st.get("updatedReplicas", 0)) != (want, want) \
                or st.get("observedGeneration") != s["metadata"]["generation"]:
            problems.append("StatefulSet %s: want %d, status %s" % (s["metadata"]["name"], want, st))
    for j in cluster.get("jobs", namespace):
        if condition(j, "Complete") != "True":
            problems.append("Job %s not complete: %s" % (j["metadata"]["name"], j.get("status")))
    for c in cluster.get("persistentvolumeclaims", namespace):
        if c["status"].get("phase") != "Bound":
            problems.append("PVC %s is %s" % (c["metadata"]["name"], c["status"].get("phase")))
    for p in cluster.get("pods", namespace):
        if p["status"].get("phase") not in ("Running", "Succeeded") or p["metadata"].get("deletionTimestamp"):
            problems.append("Pod %s is %s" % (p["metadata"]["name"], p["status"].get("phase")))
    return problems


def assert_settled(cluster, namespace, timeout=60):
    """workload_problems() is empty, or becomes so within timeout (right after `helm upgrade
    --wait` an old ReplicaSet may still be scaling down)."""
    try:
        cluster.wait_until("the workloads in %s to settle" % namespace,
                           lambda: not workload_problems(cluster, namespace), timeout=timeout, interval=1)
    except AssertionError:
        raise AssertionError("not settled after %ss:\n%s" % (timeout, "\n".join(workload_problems(cluster, namespace))))


def secret_data(cluster, namespace, names):
    """{name: (uid, data)} of these Secrets, exactly as stored (base64 strings)."""
    out = {}
    for n in names:
        s = cluster.get("secret", namespace, n)
        out[n] = None if s is None else (s["metadata"]["uid"], s.get("data"))
    return out


def container(pod_spec, name):
    for c in pod_spec.get("containers") or []:
        if c["name"] == name:
            return c
    raise AssertionError("no container %s in %s" % (name, [c["name"] for c in pod_spec["containers"]]))


def env_of(c):
    """{name: value or ("secret", name, key)} of a container's environment."""
    out = {}
    for e in c.get("env") or []:
        vf = e.get("valueFrom") or {}
        if "secretKeyRef" in vf:
            out[e["name"]] = ("secret", vf["secretKeyRef"]["name"], vf["secretKeyRef"]["key"])
        else:
            out[e["name"]] = e.get("value")
    return out
