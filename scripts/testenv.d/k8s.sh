# Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager. Sourced by
# scripts/testenv. The node (kubelet, containerd, kube-scheduler, kube-proxy, CoreDNS) is the
# service "node" (node.sh); without it Pods are created but stay Pending.
#
# kube-apiserver, kube-controller-manager and kubectl are built from the Go module proxy at the
# release pinned in scripts/testenv.d/k8s/go.mod, and etcd at the release pinned in
# scripts/testenv.d/k8s/etcd/go.mod (the go.sum files pin every dependency), once, into
# $TE_CACHE/k8s-<version>/bin. Debian's etcd 3.4 is not used: Kubernetes 1.35 runs on it but
# logs that it lacks RequestWatchProgress, so consistent reads from the watch cache stay off.
#
#   etcd            client 127.0.0.1:12379, peer 127.0.0.1:12380, data $TE_STATE/k8s/etcd
#   kube-apiserver  https://$TE_NODE_IP:16443 (client certificates, RBAC), on the test bridge so
#                   that Pods reach it through the `kubernetes` Service as in any cluster
#   kube-controller-manager  https://127.0.0.1:10257 (health only)
#   admin kubeconfig $TE_STATE/k8s/kubeconfig (CN=kubernetes-admin, O=system:masters)

K8S_MODDIR=$TE_ROOT/scripts/testenv.d/k8s
# The release comes from go.mod so the pin lives in one place.
K8S_VERSION=$(awk '$1 == "k8s.io/kubernetes" { sub(/^v/, "", $2); print $2; exit }' "$K8S_MODDIR/go.mod")
ETCD_VERSION=$(awk '$1 == "go.etcd.io/etcd/server/v3" { sub(/^v/, "", $2); print $2; exit }' "$K8S_MODDIR/etcd/go.mod")
K8S_DIR=$TE_CACHE/k8s-$K8S_VERSION
K8S_BIN_DIR=$K8S_DIR/bin
K8S_STATE=$TE_STATE/k8s
K8S_PKI=$K8S_STATE/pki
K8S_KUBECONFIG=$K8S_STATE/kubeconfig
K8S_KCM_KUBECONFIG=$K8S_STATE/controller-manager.kubeconfig
K8S_API_PORT=16443
K8S_KCM_PORT=10257
K8S_ETCD_PORT=12379
K8S_ETCD_PEER_PORT=12380
K8S_GOCACHE_DIR=$TE_CACHE/go

# Go for the build: the one on PATH, else the usual install location.
k8s__go() {
  local g
  for g in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go; do
    if [ -n "$g" ] && [ -x "$g" ]; then
      printf '%s\n' "$g"
      return 0
    fi
  done
  te_die "k8s: Go (1.21 or newer; go.mod asks for $(awk '$1 == "go" { print $2 }' "$K8S_MODDIR/go.mod")) is needed to build Kubernetes; none found"
}

# k8s_go_build OUTDIR CMD...: builds k8s.io/kubernetes/cmd/CMD... of the pinned release into
# OUTDIR, with the version stamps kubernetes/hack/lib/version.sh sets (the date is the tag's time).
# Also used by node.sh for kubelet, kube-scheduler and kube-proxy.
k8s_go_build() {
  local out=$1 go meta build_date commit ld p c pkgs=()
  shift
  go=$(k8s__go)
  for c in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  (
    cd "$K8S_MODDIR"
    export GOMODCACHE=$K8S_GOCACHE_DIR/mod GOCACHE=$K8S_GOCACHE_DIR/build
    export GOFLAGS="-mod=mod -modcacherw -buildvcs=false" CGO_ENABLED=0
    meta=$("$go" list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}} {{with .Origin}}{{.Hash}}{{end}}' k8s.io/kubernetes)
    build_date=${meta%% *}
    commit=${meta#* }
    ld="-s -w"
    for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
      ld+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=${K8S_VERSION%%.*}"
      ld+=" -X $p.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X $p.gitTreeState=clean"
      ld+=" -X $p.buildDate=$build_date -X $p.gitCommit=$commit"
    done
    "$go" build -trimpath -ldflags "$ld" -o "$out/" "${pkgs[@]}"
  )
}

k8s_install() {
  te_apt_install openssl curl
  # The marker names both pins, so changing either go.mod rebuilds.
  local want="kubernetes $K8S_VERSION etcd $ETCD_VERSION"
  [ "$(cat "$K8S_DIR/.installed" 2>/dev/null)" = "$want" ] && return 0

  local go
  go=$(k8s__go)
  te_log "k8s: building Kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kubectl) and etcd $ETCD_VERSION from the Go module proxy; 10-20 min the first time"
  mkdir -p "$K8S_DIR" "$K8S_GOCACHE_DIR"
  rm -rf "$K8S_DIR/bin.tmp"
  mkdir -p "$K8S_DIR/bin.tmp"
  (
    k8s_go_build "$K8S_DIR/bin.tmp" kube-apiserver kube-controller-manager kubectl
    cd "$K8S_MODDIR/etcd"
    export GOMODCACHE=$K8S_GOCACHE_DIR/mod GOCACHE=$K8S_GOCACHE_DIR/build
    export GOFLAGS="-mod=mod -modcacherw -buildvcs=false" CGO_ENABLED=0
    "$go" build -trimpath -ldflags "-s -w" -o "$K8S_DIR/bin.tmp/etcd" go.etcd.io/etcd/server/v3
  ) >&2 || te_die "k8s: building Kubernetes $K8S_VERSION / etcd $ETCD_VERSION failed"
  rm -f "$K8S_DIR/.installed"
  rm -rf "$K8S_BIN_DIR"
  mv "$K8S_DIR/bin.tmp" "$K8S_BIN_DIR"
  echo "$want" >"$K8S_DIR/.installed"
  te_log "k8s: Kubernetes $K8S_VERSION and etcd $ETCD_VERSION installed in $K8S_BIN_DIR"
}

# k8s__cert NAME SUBJECT EXTENSIONS: key and certificate signed by the testenv CA.
k8s__cert() {
  local name=$1 subj=$2 ext=$3
  openssl genrsa -out "$K8S_PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$K8S_PKI/$name.key" -subj "$subj" -out "$K8S_PKI/$name.csr"
  printf '%s\n' "$ext" >"$K8S_PKI/$name.ext"
  openssl x509 -req -in "$K8S_PKI/$name.csr" -CA "$K8S_PKI/ca.crt" -CAkey "$K8S_PKI/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$K8S_PKI/$name.ext" -out "$K8S_PKI/$name.crt" 2>/dev/null
  rm -f "$K8S_PKI/$name.csr" "$K8S_PKI/$name.ext"
}

# k8s__kubeconfig FILE USER CERT: kubeconfig with the CA and client certificate embedded.
k8s__kubeconfig() {
  local file=$1 user=$2 cert=$3
  (
    umask 077
    cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: https://$TE_NODE_IP:$K8S_API_PORT
    certificate-authority-data: $(base64 -w0 <"$K8S_PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$K8S_PKI/$cert.crt")
    client-key-data: $(base64 -w0 <"$K8S_PKI/$cert.key")
contexts:
- name: testenv
  context:
    cluster: testenv
    user: $user
current-context: testenv
EOF
  )
}

# Certificates and service-account keys: generated once, kept across down/up (a new layout of
# them, K8S_PKI_LAYOUT, makes them anew). Kubeconfigs are written at every start.
K8S_PKI_LAYOUT=2
k8s__pki() {
  if [ "$(cat "$K8S_PKI/.done" 2>/dev/null)" != "$K8S_PKI_LAYOUT" ]; then
    te_log "k8s: generating CA, certificates and service-account keys in $K8S_PKI"
    rm -rf "$K8S_PKI"
    mkdir -p "$K8S_PKI"
    chmod 700 "$K8S_PKI"
    openssl genrsa -out "$K8S_PKI/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$K8S_PKI/ca.key" -subj "/CN=kafka-backup-testenv-ca" -days 3650 -sha256 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$K8S_PKI/ca.crt"
    k8s__cert apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$TE_NODE_IP,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    k8s__cert admin "/O=system:masters/CN=kubernetes-admin" "$client"
    k8s__cert controller-manager "/CN=system:kube-controller-manager" "$client"
    k8s__cert scheduler "/CN=system:kube-scheduler" "$client"
    k8s__cert kube-proxy "/CN=system:kube-proxy" "$client"
    k8s__cert kubelet "/O=system:nodes/CN=system:node:$TE_NODE_NAME" "$client"
    # The API server's identity towards kubelets (logs, exec): the kubelet accepts only it.
    k8s__cert apiserver-kubelet-client "/O=kubelet-api-clients/CN=kube-apiserver-kubelet-client" "$client"
    openssl genrsa -out "$K8S_PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$K8S_PKI/sa.key" -pubout -out "$K8S_PKI/sa.pub" 2>/dev/null
    echo "$K8S_PKI_LAYOUT" >"$K8S_PKI/.done"
  fi
  k8s__kubeconfig "$K8S_KUBECONFIG" kubernetes-admin admin
  k8s__kubeconfig "$K8S_KCM_KUBECONFIG" system:kube-controller-manager controller-manager
}

k8s__readyz() {
  [ "$(curl -sf --max-time 5 --cacert "$K8S_PKI/ca.crt" --cert "$K8S_PKI/admin.crt" --key "$K8S_PKI/admin.key" \
    "https://$TE_NODE_IP:$K8S_API_PORT/readyz")" = ok ]
}

k8s__kcm_healthz() {
  [ "$(curl -sfk --max-time 5 "https://127.0.0.1:$K8S_KCM_PORT/healthz")" = ok ]
}

k8s__kubectl() { "$K8S_BIN_DIR/kubectl" --kubeconfig "$K8S_KUBECONFIG" --request-timeout 5s "$@"; }

k8s_up() {
  te_bridge_up
  k8s__pki
  mkdir -p "$K8S_STATE/etcd"
  chmod 700 "$K8S_STATE/etcd"

  # etcd reads ETCD_<FLAG> variables as flags: an exported ETCD_VERSION (from `testenv env`) would
  # act as --version.
  te_start k8s-etcd env -u ETCD_VERSION "$K8S_BIN_DIR/etcd" --name testenv --data-dir "$K8S_STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$K8S_ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$K8S_ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$K8S_ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$K8S_ETCD_PEER_PORT" \
    --initial-cluster "testenv=http://127.0.0.1:$K8S_ETCD_PEER_PORT" \
    --initial-cluster-state new --initial-cluster-token kafka-backup-testenv
  te_wait k8s-etcd 60 curl -sf --max-time 5 "http://127.0.0.1:$K8S_ETCD_PORT/health"

  te_start k8s-apiserver "$K8S_BIN_DIR/kube-apiserver" \
    --bind-address "$TE_NODE_IP" --advertise-address "$TE_NODE_IP" --secure-port "$K8S_API_PORT" \
    --etcd-servers "http://127.0.0.1:$K8S_ETCD_PORT" \
    --cert-dir "$K8S_STATE/apiserver" \
    --tls-cert-file "$K8S_PKI/apiserver.crt" --tls-private-key-file "$K8S_PKI/apiserver.key" \
    --client-ca-file "$K8S_PKI/ca.crt" \
    --authorization-mode Node,RBAC \
    --service-account-key-file "$K8S_PKI/sa.pub" \
    --service-account-signing-key-file "$K8S_PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --api-audiences https://kubernetes.default.svc \
    --service-cluster-ip-range 10.0.0.0/24 \
    --allow-privileged \
    --kubelet-client-certificate "$K8S_PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$K8S_PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --profiling=false
  te_wait k8s-apiserver 180 k8s__readyz
  te_wait k8s-apiserver 180 k8s__kubectl get namespace default

  te_start k8s-controller-manager "$K8S_BIN_DIR/kube-controller-manager" \
    --bind-address 127.0.0.1 --secure-port "$K8S_KCM_PORT" \
    --kubeconfig "$K8S_KCM_KUBECONFIG" \
    --authentication-kubeconfig "$K8S_KCM_KUBECONFIG" \
    --authorization-kubeconfig "$K8S_KCM_KUBECONFIG" \
    --use-service-account-credentials \
    --service-account-private-key-file "$K8S_PKI/sa.key" \
    --root-ca-file "$K8S_PKI/ca.crt" \
    --cluster-signing-cert-file "$K8S_PKI/ca.crt" --cluster-signing-key-file "$K8S_PKI/ca.key" \
    --controllers '*' \
    --leader-elect=false \
    --profiling=false
  te_wait k8s-controller-manager 180 k8s__kcm_healthz
  # The service-account controller creates `default` in every namespace; Pods need it.
  te_wait k8s-controller-manager 180 k8s__kubectl -n default get serviceaccount default
  te_log "k8s: Kubernetes $K8S_VERSION ready at https://$TE_NODE_IP:$K8S_API_PORT (KUBECONFIG=$K8S_KUBECONFIG)"
}

k8s_down() {
  te_stop k8s-controller-manager
  te_stop k8s-apiserver
  te_stop k8s-etcd
  te_bridge_release
}

k8s_env() {
  echo "export KUBECONFIG='$K8S_KUBECONFIG'"
  echo "export K8S_API_SERVER='https://$TE_NODE_IP:$K8S_API_PORT'"
  echo "export K8S_VERSION='$K8S_VERSION'"
  echo "export K8S_BIN_DIR='$K8S_BIN_DIR'"
  echo "export KUBECTL='$K8S_BIN_DIR/kubectl'"
  echo "export ETCD_VERSION='$ETCD_VERSION'"
}

k8s_status() {
  local rc=0 name what
  for name in k8s-etcd k8s-apiserver k8s-controller-manager; do
    case $name in
      k8s-etcd) what="etcd $ETCD_VERSION http://127.0.0.1:$K8S_ETCD_PORT" ;;
      k8s-apiserver) what="kube-apiserver $K8S_VERSION https://$TE_NODE_IP:$K8S_API_PORT" ;;
      *) what="kube-controller-manager $K8S_VERSION https://127.0.0.1:$K8S_KCM_PORT" ;;
    esac
    if te_running "$name"; then
      echo "k8s: $what: running (pid $(cat "$TE_PIDS/$name.pid"))"
    else
      echo "k8s: $what: stopped"
      rc=1
    fi
  done
  return $rc
}
