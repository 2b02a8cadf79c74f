# shellcheck shell=bash
# Service "node" for scripts/testenv: one Kubernetes node for the control plane of k8s.sh, so that
# Pods really run: containerd (CRI, runc, overlayfs, cgroupfs) with a CNI bridge, kubelet,
# kube-scheduler, kube-proxy (iptables mode) and CoreDNS as the cluster DNS.
#
#   node name        $TE_NODE_NAME, address $TE_NODE_IP on the bridge $TE_BRIDGE (common.sh)
#   Pods             $TE_POD_CIDR on $TE_BRIDGE; nothing is forwarded from the bridge to any
#                    other network, so Pods reach only this machine's test services
#   containerd       unix socket $TE_STATE/node/containerd.sock, namespace k8s.io; images are
#                    kept in $TE_CACHE/node/containerd across down/up
#   kubelet          https://$TE_NODE_IP:10250 (client certificates of the test CA only)
#   kube-scheduler   https://127.0.0.1:10259 (health only)
#   kube-proxy       iptables mode; health 127.0.0.1:10256
#   CoreDNS          $TE_NODE_IP:53, the Service kube-system/kube-dns (10.0.0.10) in front of it;
#                    answers cluster.local only
#   test services    namespace `testenv`: headless Services with EndpointSlices on $TE_NODE_IP,
#                    e.g. kafka-0.kafka.testenv.svc.cluster.local (the Kafka listener for Pods),
#                    minio.testenv.svc.cluster.local (MinIO, forwarded to its 127.0.0.1 port)
#
# kubelet, kube-scheduler and kube-proxy are built from the Kubernetes module of k8s.sh (same
# release), CoreDNS from scripts/testenv.d/node/coredns/go.mod; the sandbox (pause) image from a
# small static C program. kubelet changes a few sysctls: they are saved at `up` and put back at
# `down`, which also removes the Pods' containers, mounts and network namespaces, the iptables
# rules and the bridge (once nothing else uses it).

# shellcheck source=k8s.sh
source "$TE_ROOT/scripts/testenv.d/k8s.sh"

NODE_DIR=$TE_ROOT/scripts/testenv.d/node
NODE_BIN=$TE_CACHE/node-$K8S_VERSION/bin
NODE_STATE=$TE_STATE/node
NODE_IMAGES=$TE_CACHE/node/containerd
NODE_SOCK=$NODE_STATE/containerd.sock
NODE_RUNC_ROOT=$NODE_STATE/runc
NODE_PAUSE_IMAGE=localhost/kafka-backup-testenv/pause:1
NODE_DNS_IP=10.0.0.10
NODE_KUBECONFIG_KUBELET=$NODE_STATE/kubelet.kubeconfig
NODE_KUBECONFIG_SCHEDULER=$NODE_STATE/scheduler.kubeconfig
NODE_KUBECONFIG_PROXY=$NODE_STATE/kube-proxy.kubeconfig
# kubelet sets these (and refuses to start on other values of the first three); `down` restores.
NODE_SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes net.ipv4.ip_forward net.ipv4.conf.all.route_localnet
  net.bridge.bridge-nf-call-iptables)
# Host ports on 127.0.0.1 that Pods reach at $TE_NODE_IP (MinIO, MinIO TLS, Azurite, fake-gcs).
NODE_FORWARDED_PORTS=(19000 19002 10000 14443)
NODE_RULE_TAG=kafka-backup-testenv

node__ctr() { ctr --address "$NODE_SOCK" --namespace k8s.io "$@"; }

node_install() {
  te_apt_install containerd runc containernetworking-plugins iptables conntrack podman buildah \
    debootstrap gcc libc6-dev
  local want="kubernetes $K8S_VERSION coredns $(node__coredns_version)"
  [ "$(cat "$NODE_BIN/../.installed" 2>/dev/null)" = "$want" ] && return 0
  te_log "node: building kubelet, kube-scheduler and kube-proxy $K8S_VERSION and CoreDNS from the Go module proxy; several minutes the first time"
  rm -rf "$NODE_BIN.tmp"
  mkdir -p "$NODE_BIN.tmp"
  k8s_go_build "$NODE_BIN.tmp" kubelet kube-scheduler kube-proxy >&2 \
    || te_die "node: building kubelet, kube-scheduler, kube-proxy failed"
  (
    cd "$NODE_DIR/coredns"
    export GOMODCACHE=$K8S_GOCACHE_DIR/mod GOCACHE=$K8S_GOCACHE_DIR/build
    export GOFLAGS="-mod=mod -modcacherw -buildvcs=false" CGO_ENABLED=0
    "$(k8s__go)" build -trimpath -ldflags "-s -w" -o "$NODE_BIN.tmp/coredns" github.com/coredns/coredns
  ) >&2 || te_die "node: building CoreDNS failed"
  gcc -static -Os -s -o "$NODE_BIN.tmp/pause" "$NODE_DIR/pause.c" || te_die "node: building pause failed"
  rm -rf "$NODE_BIN"
  mv "$NODE_BIN.tmp" "$NODE_BIN"
  echo "$want" >"$NODE_BIN/../.installed"
}

node__coredns_version() { awk '$1 == "require" && $2 == "github.com/coredns/coredns" { print $3 }' "$NODE_DIR/coredns/go.mod"; }

node_up() {
  te_running k8s-apiserver || te_die "node: the control plane is not running (scripts/testenv up k8s first)"
  te_bridge_up
  mkdir -p "$NODE_STATE" "$NODE_IMAGES"
  node__sysctls_save
  node__kubeconfigs
  node__network
  node__containerd
  node__pause_image
  node__coredns
  node__kubelet
  node__scheduler
  node__proxy
  node__cluster_objects
  te_wait node-kubelet 120 node__ready
  te_log "node: $TE_NODE_NAME Ready (Pods on $TE_POD_CIDR, DNS $NODE_DNS_IP)"
}

node__ready() {
  [ "$(k8s__kubectl get node "$TE_NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

node__sysctls_save() {
  [ -f "$NODE_STATE/sysctls.saved" ] && return 0
  modprobe br_netfilter 2>/dev/null || true
  local k
  for k in "${NODE_SYSCTLS[@]}"; do
    sysctl -n "$k" >/dev/null 2>&1 && printf '%s=%s\n' "$k" "$(sysctl -n "$k")"
  done >"$NODE_STATE/sysctls.saved.tmp"
  mv "$NODE_STATE/sysctls.saved.tmp" "$NODE_STATE/sysctls.saved"
}

node__sysctls_restore() {
  [ -f "$NODE_STATE/sysctls.saved" ] || return 0
  local line
  while IFS= read -r line; do sysctl -q -w "$line" >/dev/null 2>&1 || te_log "node: could not restore $line"; done \
    <"$NODE_STATE/sysctls.saved"
  rm -f "$NODE_STATE/sysctls.saved"
}

node__kubeconfigs() {
  k8s__kubeconfig "$NODE_KUBECONFIG_KUBELET" "system:node:$TE_NODE_NAME" kubelet
  k8s__kubeconfig "$NODE_KUBECONFIG_SCHEDULER" system:kube-scheduler scheduler
  k8s__kubeconfig "$NODE_KUBECONFIG_PROXY" system:kube-proxy kube-proxy
}

# The CNI configuration, and the rules that keep Pods' traffic on this machine: nothing is
# forwarded from the bridge to another interface, Service addresses without a kube-proxy rule go
# nowhere, and the storage servers' 127.0.0.1 ports are forwarded from $TE_NODE_IP.
node__network() {
  mkdir -p "$NODE_STATE/cni/net.d" "$NODE_STATE/cni/ipam"
  cat >"$NODE_STATE/cni/net.d/10-kafka-backup-testenv.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "kafka-backup-testenv",
  "plugins": [
    {
      "type": "bridge", "bridge": "$TE_BRIDGE", "isGateway": true, "isDefaultGateway": true,
      "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$NODE_STATE/cni/ipam",
        "ranges": [[{"subnet": "$TE_POD_CIDR", "rangeStart": "${TE_NODE_IP%.*}.10", "gateway": "$TE_NODE_IP"}]]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  node__rule filter FORWARD -i "$TE_BRIDGE" ! -o "$TE_BRIDGE" -j DROP
  node__rule filter FORWARD -o "$TE_BRIDGE" ! -i "$TE_BRIDGE" -j DROP
  ip route replace blackhole 10.0.0.0/24
  sysctl -q -w "net.ipv4.conf.$TE_BRIDGE.route_localnet=1"
  local p
  for p in "${NODE_FORWARDED_PORTS[@]}"; do
    node__rule nat PREROUTING -i "$TE_BRIDGE" -d "$TE_NODE_IP" -p tcp --dport "$p" -j DNAT --to-destination "127.0.0.1:$p"
  done
}

# node__rule TABLE CHAIN RULE...: insert RULE first in CHAIN once, tagged for removal at `down`.
node__rule() {
  local table=$1 chain=$2
  shift 2
  iptables -w -t "$table" -C "$chain" "$@" -m comment --comment "$NODE_RULE_TAG" 2>/dev/null \
    || iptables -w -t "$table" -I "$chain" 1 "$@" -m comment --comment "$NODE_RULE_TAG"
}

node__rules_delete() {
  local table line
  for table in filter nat; do
    iptables -w -t "$table" -S 2>/dev/null | grep -- "--comment $NODE_RULE_TAG" | sed 's/^-A /-D /' \
      | while IFS= read -r line; do eval "iptables -w -t $table $line" || true; done
  done
  ip route del blackhole 10.0.0.0/24 2>/dev/null || true
}

node__containerd() {
  te_running node-containerd && return 0
  mkdir -p "$NODE_STATE/containerd-state" "$NODE_RUNC_ROOT"
  cat >"$NODE_STATE/containerd.toml" <<EOF
version = 2
root = "$NODE_IMAGES"
state = "$NODE_STATE/containerd-state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$NODE_SOCK"
[ttrpc]
  address = "$NODE_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$NODE_PAUSE_IMAGE"
  # Test machines refuse negative oom_score_adj values.
  restrict_oom_score_adj = true
  enable_unprivileged_ports = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$NODE_RUNC_ROOT"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_STATE/cni/net.d"
EOF
  # Nothing is ever pulled (images are loaded): a proxy that refuses every connection keeps a pull
  # of a missing image from leaving this machine, resolving names included.
  te_start node-containerd env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
    http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 NO_PROXY= no_proxy= \
    containerd --config "$NODE_STATE/containerd.toml"
  te_wait node-containerd 60 node__ctr version
}

# The sandbox image: a static program that waits for a signal. Imported once; kept with the images.
node__pause_image() {
  node__ctr images ls -q | grep -qx "$NODE_PAUSE_IMAGE" && return 0
  export CONTAINERS_CONF=$NODE_DIR/containers.conf
  local c
  c=$(buildah from scratch)
  buildah copy "$c" "$NODE_BIN/pause" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --user 65535:65535 "$c"
  buildah commit --quiet "$c" "$NODE_PAUSE_IMAGE" >/dev/null
  buildah rm "$c" >/dev/null
  node_load_image "$NODE_PAUSE_IMAGE"
}

# node_load_image IMAGE: copy IMAGE from podman's store into the node's containerd. Other tags
# of the same repository that an earlier load left there go (the node never pulls, so nothing
# else would remove them); the name is recorded for `scripts/testenv env` (KB_TEST_IMAGE).
node_load_image() {
  local tar old
  te_running node-containerd || te_die "node: containerd is not running (scripts/testenv up node)"
  tar=$(mktemp --suffix=.tar)
  CONTAINERS_CONF=$NODE_DIR/containers.conf podman save --format docker-archive -o "$tar" "$1" >/dev/null 2>&1 \
    || { rm -f "$tar"; te_die "node: podman save $1 failed"; }
  node__ctr images import "$tar" >/dev/null || { rm -f "$tar"; te_die "node: importing $1 into containerd failed"; }
  rm -f "$tar"
  for old in $(node__ctr images ls -q | grep "^${1%:*}:" | grep -vx "$1"); do
    node__ctr images rm "$old" >/dev/null 2>&1 || true
  done
  [ "$1" = "$NODE_PAUSE_IMAGE" ] || echo "$1" >"$NODE_STATE/image"
  te_log "node: image $1 loaded"
}

node__coredns() {
  te_running node-coredns && return 0
  cat >"$NODE_STATE/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $TE_NODE_IP
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $K8S_KUBECONFIG
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
# Every other name: no answer (nothing outside this machine is asked).
.:53 {
    bind $TE_NODE_IP
    errors
}
EOF
  te_start node-coredns "$NODE_BIN/coredns" -conf "$NODE_STATE/Corefile"
  te_wait node-coredns 60 node__dns_up
}

node__dns_up() { (exec 3<>"/dev/tcp/$TE_NODE_IP/53") 2>/dev/null; }

node__kubelet() {
  te_running node-kubelet && return 0
  mkdir -p "$NODE_STATE/kubelet" "$NODE_STATE/pod-logs"
  # Pods get the cluster DNS only; none of this machine's search domains or resolvers.
  printf 'nameserver %s\n' "$NODE_DNS_IP" >"$NODE_STATE/resolv.conf"
  cat >"$NODE_STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $TE_NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $K8S_PKI/ca.crt}
authorization: {mode: AlwaysAllow}
# Test machines run cgroup v1 (hybrid); kubelet 1.35 refuses it unless told not to.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$NODE_SOCK
clusterDomain: cluster.local
clusterDNS: [$NODE_DNS_IP]
resolvConf: $NODE_STATE/resolv.conf
podCIDR: $TE_POD_CIDR
podLogsDir: $NODE_STATE/pod-logs
maxOpenFiles: $(ulimit -Hn)
failSwapOn: false
registerNode: true
serializeImagePulls: false
# Nothing is ever pulled: images are loaded into containerd. Keep them however full the disk is,
# and evict only when the machine is nearly out of memory or disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
rotateCertificates: false
serverTLSBootstrap: false
EOF
  te_start node-kubelet "$NODE_BIN/kubelet" --config "$NODE_STATE/kubelet.yaml" \
    --kubeconfig "$NODE_KUBECONFIG_KUBELET" --root-dir "$NODE_STATE/kubelet" \
    --cert-dir "$NODE_STATE/kubelet-pki" --hostname-override "$TE_NODE_NAME" --node-ip "$TE_NODE_IP"
  te_wait node-kubelet 120 curl -sf --max-time 5 "http://127.0.0.1:10248/healthz"
}

node__scheduler() {
  te_running node-scheduler && return 0
  te_start node-scheduler "$NODE_BIN/kube-scheduler" --kubeconfig "$NODE_KUBECONFIG_SCHEDULER" \
    --authentication-kubeconfig "$NODE_KUBECONFIG_SCHEDULER" \
    --authorization-kubeconfig "$NODE_KUBECONFIG_SCHEDULER" \
    --bind-address 127.0.0.1 --secure-port 10259 --leader-elect=false --profiling=false
  te_wait node-scheduler 60 curl -sfk --max-time 5 "https://127.0.0.1:10259/healthz"
}

node__proxy() {
  # Running: leave its configuration alone (kube-proxy exits when its file changes).
  te_running node-proxy && return 0
  cat >"$NODE_STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $NODE_KUBECONFIG_PROXY}
hostnameOverride: $TE_NODE_NAME
clusterCIDR: $TE_POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# NodePorts only on the bridge address; the machine's own interfaces stay untouched.
nodePortAddresses: ["$TE_NODE_IP/32"]
iptables: {localhostNodePorts: false, masqueradeAll: false}
# Leave the machine's conntrack settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  te_start node-proxy "$NODE_BIN/kube-proxy" --config "$NODE_STATE/kube-proxy.yaml"
  te_wait node-proxy 60 curl -sf --max-time 5 "http://127.0.0.1:10256/healthz"
}

# The Services a real cluster would have: kube-dns, and the test services in namespace testenv,
# each a Service without selector whose EndpointSlice names $TE_NODE_IP.
node__cluster_objects() {
  local f=$NODE_STATE/cluster-objects.yaml
  {
    node__service kube-system kube-dns "$NODE_DNS_IP" "" dns:53:UDP dns-tcp:53:TCP
    node__service testenv kafka None kafka-0 plaintext:19096:TCP sasl-ssl:19097:TCP
    node__service testenv minio None "" http:19000:TCP https:19002:TCP
    node__service testenv azurite None "" blob:10000:TCP
    node__service testenv fake-gcs None "" http:14443:TCP
  } >"$f"
  k8s__kubectl create namespace testenv --dry-run=client -o yaml | k8s__kubectl apply -f - >/dev/null
  k8s__kubectl apply --server-side --force-conflicts --field-manager kafka-backup-testenv -f "$f" >/dev/null \
    || te_die "node: applying the cluster's Services failed"
}

# node__service NS NAME CLUSTER_IP HOSTNAME PORT...: a Service (clusterIP None: headless) and its
# EndpointSlice with the one address $TE_NODE_IP (named HOSTNAME in DNS if not empty).
# PORT is name:number:protocol.
node__service() {
  local ns=$1 name=$2 ip=$3 host=$4 p
  shift 4
  printf -- '---\napiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: %s}\nspec:\n  clusterIP: %s\n  ports:\n' "$name" "$ns" "$ip"
  for p in "$@"; do IFS=: read -r pn pp pt <<<"$p"; printf '  - {name: %s, port: %s, protocol: %s}\n' "$pn" "$pp" "$pt"; done
  printf -- '---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: %s-testenv\n  namespace: %s\n' "$name" "$ns"
  printf '  labels: {kubernetes.io/service-name: %s, endpointslice.kubernetes.io/managed-by: kafka-backup-testenv}\n' "$name"
  printf 'addressType: IPv4\nendpoints:\n- addresses: ["%s"]\n  conditions: {ready: true}\n' "$TE_NODE_IP"
  [ -n "$host" ] && printf '  hostname: %s\n' "$host"
  printf 'ports:\n'
  for p in "$@"; do IFS=: read -r pn pp pt <<<"$p"; printf -- '- {name: %s, port: %s, protocol: %s}\n' "$pn" "$pp" "$pt"; done
}

node_down() {
  te_stop node-proxy
  te_stop node-scheduler
  te_stop node-kubelet
  node__containers_delete
  te_stop node-containerd
  node__shims_stop
  node__unmount "$NODE_STATE"
  node__unmount "$NODE_IMAGES"
  node__netns_delete
  te_stop node-coredns
  [ -x "$NODE_BIN/kube-proxy" ] && "$NODE_BIN/kube-proxy" --cleanup >/dev/null 2>&1
  node__rules_delete
  node__cgroups_delete
  node__sysctls_restore
  rm -rf "$NODE_STATE/cni/ipam" "$NODE_STATE/containerd-state" "$NODE_RUNC_ROOT"
  te_bridge_release
}

# Every container the node's runc started (Pods and sandboxes), killed and deleted.
node__containers_delete() {
  local ns id
  [ -d "$NODE_RUNC_ROOT" ] || return 0
  for ns in "$NODE_RUNC_ROOT"/*; do
    [ -d "$ns" ] || continue
    for id in $(runc --root "$ns" list -q 2>/dev/null); do
      runc --root "$ns" delete --force "$id" >/dev/null 2>&1 || true
    done
  done
}

# containerd's shims outlive it (they run in their own sessions): the ones of this node's socket.
node__shims_stop() {
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $NODE_SOCK" || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
}

# node__unmount DIR: unmount everything mounted below DIR, deepest first.
node__unmount() {
  local m
  findmnt -rn -o TARGET | awk -v d="$1/" 'index($0, d) == 1' | sort -r | while IFS= read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || te_log "node: could not unmount $m"
  done
}

# The Pods' network namespaces: the ones whose veth is attached to the bridge.
node__netns_delete() {
  local n
  for n in $(ip -o link show master "$TE_BRIDGE" 2>/dev/null | sed -n 's/.* link-netns \([^ ]*\).*/\1/p'); do
    ip netns del "$n" 2>/dev/null || true
  done
}

# The cgroups kubelet made (kubepods under every hierarchy), empty once the containers are gone.
node__cgroups_delete() {
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  return 0
}

node_env() {
  echo "export KB_NODE_NAME='$TE_NODE_NAME'"
  echo "export KB_NODE_IP='$TE_NODE_IP'"
  echo "export KB_NODE_CONTAINERD_SOCK='$NODE_SOCK'"
  echo "export KB_POD_KAFKA_BOOTSTRAP='kafka.testenv.svc.cluster.local:19096'"
  echo "export KB_POD_S3_ENDPOINT='http://minio.testenv.svc.cluster.local:19000'"
  [ -f "$NODE_STATE/image" ] && echo "export KB_TEST_IMAGE='$(cat "$NODE_STATE/image")'"
  return 0
}

node_status() {
  local rc=0 n
  for n in node-containerd node-coredns node-kubelet node-scheduler node-proxy; do
    if te_running "$n"; then
      echo "node: $n: running (pid $(cat "$TE_PIDS/$n.pid"))"
    else
      echo "node: $n: stopped"
      rc=1
    fi
  done
  return $rc
}
