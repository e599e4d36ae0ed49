#!/usr/bin/env bash
# Owns the local Kubernetes control plane, for tests that `helm install` the chart against a real
# API server, without Docker: etcd, kube-apiserver, kube-controller-manager and kube-scheduler as
# plain processes, and kwok (sigs.k8s.io/kwok) standing in for the nodes and their kubelets — it
# keeps fake nodes Ready and moves pods through their phases (Running, and Succeeded for a Job's
# pods, so hook Jobs complete) without running any container. Everything listens on 127.0.0.1
# only, on free ports; the certificates, the service-account key and the kubeconfigs are made
# here at every start. Every `start` is a new, empty cluster.
#
#   infra/dev/k8s.sh build     build the pinned binaries into $K8S_BIN_DIR unless they are there
#                              (idempotent; the first time ~15 min of CPU, niced): etcd,
#                              kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#                              (infra/dev/k8s/go.mod), kwok, and helm (infra/helm-tests/install-tools.sh)
#   infra/dev/k8s.sh build-cluster   the same without helm: CI starts it in the background
#                              early, while the Rust build and tests run (it never touches what
#                              they use; helm comes from the chart checks' installer)
#   infra/dev/k8s.sh start     build if needed; start a new cluster in $K8S_STATE_DIR (unless ours
#                              runs there and is ready: then reuse it), create $K8S_NODES fake
#                              nodes, wait until /readyz is ok and the nodes are Ready; print
#                              shell lines `export KUBECONFIG=...`, K8S_API_SERVER, K8S_STATE_DIR.
#                              Use it as  vars="$(infra/dev/k8s.sh start)"; eval "$vars"
#   infra/dev/k8s.sh stop      stop it (`make stop` runs this); keeps the logs in $K8S_STATE_DIR
#   infra/dev/k8s.sh status    each component's pid, /readyz and the nodes; exit 1 unless all up
#   infra/dev/k8s.sh env       print the same lines as `start` for the running cluster
#   infra/dev/k8s.sh kubectl ARGS...   kubectl against it (e.g. `k8s.sh kubectl get pods -A`)
#   infra/dev/k8s.sh bin-dir   print where the binaries are (after building them if needed)
#
# In $K8S_STATE_DIR: kubeconfig (cluster-admin, system:masters), pki/, etcd/ (data), and
# NAME.log / NAME.pid of each component; ports (the chosen ports, as shell assignments).
# The API server runs its default admission plugins, PodSecurity among them, so a namespace
# labelled pod-security.kubernetes.io/enforce=restricted is enforced; authorization is
# Node,RBAC. There is no StorageClass and no volume provisioner: a test that needs PVCs bound
# creates its StorageClass and PVs (e.g. `local` PVs with node affinity to kwok-node-N).
# No container runs and no pod IP is reachable, so this checks what the API server and the
# controllers accept and do (validation, admission, RBAC, scheduling, PVC binding, hook order),
# not what the pods do: kwok marks a pod Running and Ready at once whatever its probes say (so
# `helm install --wait` passes here where a real cluster would wait for the service to be
# Ready), completes only pods that a Job owns and `helm test` hook pods
# (infra/dev/k8s/kwok-stages-extra.yaml), and there is no metrics API (an HPA reports
# FailedGetResourceMetric); `kubectl logs/exec/port-forward` do not work.
#
# Settings (environment): K8S_STATE_DIR (<repo>/target/k8s), K8S_BIN_DIR (<repo>/target/tools/bin),
# K8S_NODES (3: kwok-node-0..2, 8 CPU / 32Gi / 110 pods each), K8S_START_TIMEOUT (seconds a
# component may take to be up, 120).
#
# Pins: Kubernetes v1.37.2 and etcd v3.7.0 (the etcd that Kubernetes v1.37.2 pins and kubeadm's
# default for it), built from the wrapper module infra/dev/k8s/go.mod, because k8s.io/kubernetes
# cannot be `go install`ed (its go.mod replaces the k8s.io/* staging modules with local paths);
# kwok v0.8.0 by `go install`, with its own "fast" stages (node-initialize,
# node-heartbeat-with-lease, pod-ready, pod-complete, pod-delete) copied from its module, plus
# infra/dev/k8s/kwok-stages-extra.yaml (a `helm test` hook pod completes, as a Job's pod does).
set -euo pipefail

K8S_VERSION="v1.37.2"
ETCD_VERSION="v3.7.0"   # must match infra/dev/k8s/go.mod
KWOK_VERSION="v0.8.0"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=infra/dev/lib/server.sh
source "$here/lib/server.sh"

state="${K8S_STATE_DIR:-$repo/target/k8s}"
mkdir -p "$(dirname "$state")"
state="$(cd "$(dirname "$state")" && pwd)/$(basename "$state")"
bin_dir="${K8S_BIN_DIR:-$repo/target/tools/bin}"
nodes="${K8S_NODES:-3}"
start_timeout="${K8S_START_TIMEOUT:-120}"
pki="$state/pki"
kubeconfig="$state/kubeconfig"
kwok_stages="$bin_dir/kwok-$KWOK_VERSION-stages.yaml"

K8S_BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)
# Started in this order, stopped in the reverse one.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { printf 'k8s.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# --- build ------------------------------------------------------------------------------------

# What the cached binaries were built from: the pins and the wrapper module's exact contents.
k8s_stamp() {
  echo "$K8S_VERSION etcd $ETCD_VERSION $(cat "$here/k8s/go.mod" "$here/k8s/go.sum" | sha256sum | cut -c1-16)"
}

k8s_built() {
  local b
  for b in "${K8S_BINARIES[@]}"; do [ -x "$bin_dir/$b" ] || return 1; done
  [ -f "$bin_dir/.k8s-version" ] && [ "$(cat "$bin_dir/.k8s-version")" = "$(k8s_stamp)" ]
}

kwok_built() {
  [ -x "$bin_dir/kwok" ] && [ -f "$kwok_stages" ] &&
    [ -f "$bin_dir/.kwok-version" ] && [ "$(cat "$bin_dir/.kwok-version")" = "$KWOK_VERSION" ]
}

# The version flags Kubernetes' own build sets (hack/lib/version.sh): without them the binaries
# call themselves v0.0.0-master, which `helm` and kubectl's version checks would see.
k8s_ldflags() {
  local minor p flags="-s -w"
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    flags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    flags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

# A subshell: its lock (fd 8) and its temporary directory end with it.
build_k8s() (
  k8s_built && exit 0
  mkdir -p "$bin_dir"
  exec 8>"$bin_dir/.k8s-build.lock"
  flock 8
  k8s_built && exit 0
  command -v go >/dev/null || die "Go is required to build Kubernetes (infra/dev/prereqs.sh run says how to install it)"
  log "building Kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl) and etcd $ETCD_VERSION into $bin_dir"
  log "  first time: ~15 min of CPU on 2 cores, run at nice 19"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  local_start=$SECONDS
  # The etcd binary is the main package at the root of go.etcd.io/etcd/server/v3 (go build names
  # it "server"). CGO off, as Kubernetes and etcd build their release binaries.
  (cd "$here/k8s" && GOWORK=off CGO_ENABLED=0 nice -n 19 go build -mod=readonly -trimpath \
    -ldflags "$(k8s_ldflags)" -o "$tmp/" \
    go.etcd.io/etcd/server/v3 \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl)
  mv "$tmp/server" "$tmp/etcd"
  # Each version is read whole before it is matched: `etcd --version | grep -q` under pipefail
  # fails at random, when grep quits before etcd has written its later lines (SIGPIPE).
  local apiserver_version etcd_version
  apiserver_version="$("$tmp/kube-apiserver" --version)"
  etcd_version="$("$tmp/etcd" --version)"
  [ "$apiserver_version" = "Kubernetes $K8S_VERSION" ] || die "built kube-apiserver says: $apiserver_version"
  [[ "$etcd_version" == *"etcd Version: ${ETCD_VERSION#v}"* ]] || die "built etcd says: ${etcd_version%%$'\n'*}"
  for b in "${K8S_BINARIES[@]}"; do mv -f "$tmp/$b" "$bin_dir/$b"; done
  k8s_stamp >"$bin_dir/.k8s-version"
  log "built Kubernetes $K8S_VERSION and etcd $ETCD_VERSION in $((SECONDS - local_start))s"
)

build_kwok() (
  kwok_built && exit 0
  mkdir -p "$bin_dir"
  exec 8>"$bin_dir/.kwok-build.lock"
  flock 8
  kwok_built && exit 0
  command -v go >/dev/null || die "Go is required to build kwok"
  log "building kwok $KWOK_VERSION into $bin_dir (first time: a few minutes, niced)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  GOWORK=off CGO_ENABLED=0 GOBIN="$tmp" nice -n 19 go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # Its stages ship in its module (kustomize/stage), not in the binary: the "fast" set kwokctl
  # uses by default, with node leases.
  src="$(GOWORK=off go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  {
    echo "# kwok $KWOK_VERSION stages, copied by infra/dev/k8s.sh from $src/kustomize/stage"
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      echo "---"
      cat "$src/kustomize/stage/$f"
    done
  } >"$tmp/stages.yaml"
  mv -f "$tmp/kwok" "$bin_dir/kwok"
  mv -f "$tmp/stages.yaml" "$kwok_stages"
  echo "$KWOK_VERSION" >"$bin_dir/.kwok-version"
  log "built kwok $KWOK_VERSION"
)

build() {
  build_k8s
  build_kwok
  # helm is pinned and built by the chart checks' installer (quick when it is there).
  bash "$repo/infra/helm-tests/install-tools.sh"
}

# --- the components ----------------------------------------------------------------------------

# Describe component $1 to lib/server.sh. MATCH is an argument only our process of that
# component has (it names this state directory).
comp_define() {
  local match
  case "$1" in
    etcd) match="--data-dir=$state/etcd" ;;
    kube-apiserver) match="--tls-cert-file=$pki/apiserver.crt" ;;
    kube-controller-manager | kube-scheduler | kwok) match="--kubeconfig=$state/$1.kubeconfig" ;;
    *) die "unknown component $1" ;;
  esac
  srv_define "$1" k8s.sh "$state" "$state/$1.pid" "$state/$1.log" "$match"
}

any_running() {
  local c
  for c in "${COMPONENTS[@]}"; do comp_define "$c"; srv_pid >/dev/null && return 0; done
  return 1
}

all_running() {
  local c
  for c in "${COMPONENTS[@]}"; do comp_define "$c"; srv_pid >/dev/null || return 1; done
}

load_ports() {
  [ -f "$state/ports" ] || return 1
  # shellcheck disable=SC1091
  source "$state/ports"
}

k() { "$bin_dir/kubectl" --kubeconfig="$kubeconfig" "$@"; }

# The API server's /readyz, as the cluster admin.
api_ready() {
  curl -fsS --max-time 5 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1
}

# /healthz of a component serving HTTPS with its own self-signed certificate (anonymous; the
# path is allowed without authorization).
https_healthz() { curl -fsSk --max-time 5 "https://127.0.0.1:$1/healthz" >/dev/null 2>&1; }
http_get() { curl -fsS --max-time 5 "http://127.0.0.1:$1$2" >/dev/null 2>&1; }

# --- certificates and kubeconfigs -------------------------------------------------------------

# mkcert NAME "SUBJECT" EXT [CA]: an ECDSA P-256 key and a certificate signed by CA (default:
# the cluster CA, pki/ca.*).
mkcert() {
  local name="$1" subj="$2" ext="$3" ca="${4:-ca}"
  openssl ecparam -name prime256v1 -genkey -noout -out "$pki/$name.key" 2>/dev/null
  openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
  printf '%b\n' "$ext" >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 365 -sha256 -extfile "$pki/$name.ext" \
    -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

# mkca NAME CN: a self-signed CA.
mkca() {
  cat >"$pki/$1.cnf" <<EOF
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = $2
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
EOF
  openssl ecparam -name prime256v1 -genkey -noout -out "$pki/$1.key" 2>/dev/null
  openssl req -x509 -new -config "$pki/$1.cnf" -key "$pki/$1.key" -days 3650 -sha256 \
    -out "$pki/$1.crt" 2>/dev/null
  rm -f "$pki/$1.cnf"
}

make_pki() {
  mkdir -p "$pki"
  chmod 700 "$pki"
  mkca ca auditlog-local-kubernetes-ca
  # The aggregation layer's own CA and client (as kubeadm makes them): the controller-manager
  # and the scheduler read the request-header CA when they authenticate their callers.
  mkca front-proxy-ca auditlog-local-front-proxy-ca
  local client="basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth"
  mkcert apiserver "/CN=kube-apiserver" \
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  mkcert admin "/O=system:masters/CN=kubernetes-admin" "$client"
  mkcert front-proxy-client "/CN=front-proxy-client" "$client" front-proxy-ca
  mkcert kube-controller-manager "/CN=system:kube-controller-manager" "$client"
  mkcert kube-scheduler "/CN=system:kube-scheduler" "$client"
  # kwok plays every kubelet and patches pods, nodes and leases of all of them.
  mkcert kwok "/O=system:masters/CN=kwok-controller" "$client"
  # The service-account token signing key.
  openssl ecparam -name prime256v1 -genkey -noout -out "$pki/sa.key" 2>/dev/null
  openssl ec -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  chmod 600 "$pki"/*.key
}

b64() { base64 -w0 <"$1"; }

# write_kubeconfig FILE USER
write_kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: auditlog-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(b64 "$pki/$2.crt")
    client-key-data: $(b64 "$pki/$2.key")
contexts:
- name: auditlog-local
  context:
    cluster: auditlog-local
    user: $2
current-context: auditlog-local
EOF
  chmod 600 "$1"
}

# --- start / stop ------------------------------------------------------------------------------

# Distinct free ports on 127.0.0.1.
pick_ports() {
  local names=(ETCD_PORT ETCD_PEER_PORT API_PORT KCM_PORT SCHED_PORT KWOK_PORT) used=" " n p
  : >"$state/ports"
  for n in "${names[@]}"; do
    while :; do
      p="$(srv_free_port)"
      case "$used" in *" $p "*) continue ;; esac
      break
    done
    used+="$p "
    printf '%s=%s\n' "$n" "$p" >>"$state/ports"
  done
  load_ports
}

# launch COMPONENT CHECK... : start it, wait until CHECK succeeds.
launch() {
  local c="$1"
  shift
  local cmd=()
  case "$c" in
    etcd)
      cmd=("$bin_dir/etcd" --name=auditlog-local --data-dir="$state/etcd"
        --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT"
        --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT"
        --initial-cluster="auditlog-local=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state=new
        --unsafe-no-fsync --log-level=warn) ;;
    kube-apiserver)
      # shellcheck disable=SC2054 # the commas are inside flag values
      # --endpoint-reconciler-type=none: the `kubernetes` Service gets no endpoints, since
      # endpoints may not be loopback addresses and nothing here listens anywhere else.
      cmd=("$bin_dir/kube-apiserver" --bind-address=127.0.0.1 --secure-port="$API_PORT"
        --advertise-address=127.0.0.1 --endpoint-reconciler-type=none
        --etcd-servers="http://127.0.0.1:$ETCD_PORT" --cert-dir="$state/kube-apiserver-certs"
        --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key"
        --client-ca-file="$pki/ca.crt" --authorization-mode=Node,RBAC
        --enable-admission-plugins=NodeRestriction,PodSecurity --allow-privileged=true
        --service-account-issuer=https://kubernetes.default.svc.cluster.local
        --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key"
        --service-cluster-ip-range=10.96.0.0/16
        --requestheader-client-ca-file="$pki/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client
        --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group
        --requestheader-extra-headers-prefix=X-Remote-Extra-
        --proxy-client-cert-file="$pki/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy-client.key") ;;
    kube-controller-manager)
      cmd=("$bin_dir/kube-controller-manager" --kubeconfig="$state/$c.kubeconfig"
        --authentication-kubeconfig="$state/$c.kubeconfig" --authorization-kubeconfig="$state/$c.kubeconfig"
        --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$state/$c-certs"
        --flex-volume-plugin-dir="$state/$c-flexvolume"
        --leader-elect=false --use-service-account-credentials=true
        --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt"
        --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key") ;;
    kube-scheduler)
      cmd=("$bin_dir/kube-scheduler" --kubeconfig="$state/$c.kubeconfig"
        --authentication-kubeconfig="$state/$c.kubeconfig" --authorization-kubeconfig="$state/$c.kubeconfig"
        --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --cert-dir="$state/$c-certs"
        --leader-elect=false) ;;
    kwok)
      # HOME: kwok also reads ~/.kwok/kwok.yaml when it exists; this one must not.
      mkdir -p "$state/kwok-home"
      { cat "$kwok_stages"; echo "---"; cat "$here/k8s/kwok-stages-extra.yaml"; } >"$state/kwok-stages.yaml"
      cmd=(env HOME="$state/kwok-home" "$bin_dir/kwok" --kubeconfig="$state/$c.kubeconfig"
        --config="$state/kwok-stages.yaml" --manage-all-nodes=false
        --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake
        --server-address="127.0.0.1:$KWOK_PORT" --node-lease-duration-seconds=40) ;;
  esac
  comp_define "$c"
  log "starting $c (log: $SRV_LOG_FILE)"
  srv_launch "${cmd[@]}"
  srv_wait_up "$SRV_LAUNCHED" "$start_timeout" "$@" || return 1
}

node_manifest() {
  local i
  for ((i = 0; i < nodes; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "8", memory: 32Gi, pods: "110", ephemeral-storage: 100Gi}
  capacity: {cpu: "8", memory: 32Gi, pods: "110", ephemeral-storage: 100Gi}
EOF
  done
}

print_env() {
  printf 'export KUBECONFIG=%q\nexport K8S_API_SERVER=%q\nexport K8S_STATE_DIR=%q\n' \
    "$kubeconfig" "https://127.0.0.1:$API_PORT" "$state"
}

stop_all() {
  local i c
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c="${COMPONENTS[$i]}"
    comp_define "$c"
    srv_stop 30
  done
}

start() {
  # stdout carries only the lines the caller evals.
  build >&2
  mkdir -p "$state"
  comp_define etcd
  srv_lock
  if all_running && load_ports && api_ready; then
    log "already running (state: $state, API server https://127.0.0.1:$API_PORT)"
    print_env
    return 0
  fi
  if any_running; then
    log "a part of an earlier cluster still runs in $state; stopping it first"
    stop_all >&2
  fi
  # A new cluster: nothing of the last one but the lock stays.
  rm -rf "$pki" "$state/etcd" "$state/kwok-home" "$state"/*-certs "$state"/*-flexvolume "$state"/*.kubeconfig \
    "$kubeconfig" "$state/ports" "$state"/*.log "$state"/*.pid
  pick_ports
  make_pki
  write_kubeconfig "$kubeconfig" admin
  for c in kube-controller-manager kube-scheduler kwok; do write_kubeconfig "$state/$c.kubeconfig" "$c"; done

  local t0=$SECONDS
  # Whatever fails from here on (a component that does not come up, nodes not Ready) leaves
  # nothing running.
  start_ok=0
  trap '[ "$start_ok" = 1 ] || { log "start failed; stopping what it started"; stop_all >&2; }' EXIT
  launch etcd http_get "$ETCD_PORT" /health
  launch kube-apiserver api_ready
  launch kube-controller-manager https_healthz "$KCM_PORT"
  launch kube-scheduler https_healthz "$SCHED_PORT"
  launch kwok http_get "$KWOK_PORT" /healthz

  k get --raw /readyz >/dev/null || die "kubectl get --raw /readyz failed"
  node_manifest | k apply -f - >&2
  local deadline=$((SECONDS + start_timeout))
  until k wait --for=condition=Ready node --all --timeout=5s >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { k get nodes -o wide >&2 || true; die "the kwok nodes did not become Ready within ${start_timeout}s (log: $state/kwok.log)"; }
  done
  # The controller-manager's service-account controller is working once `default` has its SA.
  until k -n default get serviceaccount default >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "no ServiceAccount default/default within ${start_timeout}s (log: $state/kube-controller-manager.log)"
    sleep 0.5
  done
  start_ok=1
  log "ready in $((SECONDS - t0))s: Kubernetes $K8S_VERSION on https://127.0.0.1:$API_PORT, $nodes kwok node(s); stop with: $0 stop"
  print_env
}

stop() {
  # Nothing was ever started here: do not create the state directory just to say so.
  if [ ! -d "$state" ]; then echo "Kubernetes control plane: not running"; return 0; fi
  comp_define etcd
  srv_lock
  if ! any_running; then
    rm -f "$state"/*.pid
    echo "Kubernetes control plane: not running"
    return 0
  fi
  stop_all
}

status() {
  local c pid rc=0
  [ -d "$state" ] || { echo "Kubernetes control plane: not running ($state does not exist)"; return 1; }
  for c in "${COMPONENTS[@]}"; do
    comp_define "$c"
    if pid="$(srv_pid)"; then echo "$c: running (pid $pid)"; else echo "$c: not running"; rc=1; fi
  done
  if load_ports && api_ready; then
    echo "kube-apiserver https://127.0.0.1:$API_PORT/readyz: ok"
    k get nodes 2>&1 || rc=1
    echo "KUBECONFIG=$kubeconfig"
  else
    echo "kube-apiserver /readyz: not ok"
    rc=1
  fi
  return "$rc"
}

env_cmd() {
  if ! { all_running && load_ports && api_ready; }; then
    die "not running (state: $state); start it with: $0 start"
  fi
  print_env
}

case "${1:-}" in
  build) build ;;
  build-cluster) build_k8s; build_kwok ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) env_cmd ;;
  kubectl) shift; [ -x "$bin_dir/kubectl" ] || die "not built yet: $0 build"; exec "$bin_dir/kubectl" --kubeconfig="$kubeconfig" "$@" ;;
  bin-dir) build >&2; echo "$bin_dir" ;;
  *) echo "usage: $0 {build|build-cluster|start|stop|status|env|kubectl ARGS...|bin-dir}" >&2; exit 2 ;;
esac
