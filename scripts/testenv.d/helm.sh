# Helm: the helm v3 CLI, which lints and renders the operator's chart (deploy/helm/kafka-backup)
# and the plain manifests made from it. Sourced by scripts/testenv.
#
# A program, not a server: `up` builds it once from the Go module proxy, at the release pinned
# below, into $TE_CACHE/helm-<version>/bin; `env` exports HELM; `status` says whether it is built;
# `down` has nothing to stop. The build stamps the version as Helm's own Makefile does, including
# the Kubernetes version `helm template` and `helm lint` assume (that of Helm's client-go).

TE_HELM_MODULE=helm.sh/helm/v3
TE_HELM_VERSION=v3.22.0
TE_HELM_DIR=$TE_CACHE/helm-$TE_HELM_VERSION
TE_HELM_BIN=$TE_HELM_DIR/bin/helm

# shellcheck source-path=SCRIPTDIR source=stores/lib.sh
source "$TE_ROOT/scripts/testenv.d/stores/lib.sh"

# helm__ldflags: the -X stamps of Helm's Makefile, from the pinned module's go.mod.
helm__ldflags() {
  local go gomod client_go major minor p ld
  go=$(command -v go || true)
  if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go; fi
  [ -n "$go" ] || te_die "helm: Go is needed to build $TE_HELM_MODULE $TE_HELM_VERSION (install Go >= 1.26)"
  mkdir -p "$TE_CACHE/go"
  gomod=$(GOMODCACHE=$TE_CACHE/go/mod GOFLAGS=-modcacherw GO111MODULE=on \
    "$go" mod download -json "$TE_HELM_MODULE@$TE_HELM_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p') \
    || te_die "helm: downloading $TE_HELM_MODULE@$TE_HELM_VERSION from the Go module proxy failed"
  [ -f "$gomod" ] || te_die "helm: no go.mod for $TE_HELM_MODULE@$TE_HELM_VERSION"
  client_go=$(awk '$1 == "k8s.io/client-go" { sub(/^v/, "", $2); print $2; exit }' "$gomod")
  [ -n "$client_go" ] || te_die "helm: k8s.io/client-go not found in $gomod"
  # client-go v0.X.Y goes with Kubernetes 1.X.
  major=$((${client_go%%.*} + 1))
  minor=$(echo "$client_go" | cut -d. -f2)
  ld="-s -w -X $TE_HELM_MODULE/internal/version.version=$TE_HELM_VERSION"
  ld+=" -X $TE_HELM_MODULE/internal/version.gitTreeState=clean"
  for p in pkg/lint/rules pkg/chartutil; do
    ld+=" -X $TE_HELM_MODULE/$p.k8sVersionMajor=$major -X $TE_HELM_MODULE/$p.k8sVersionMinor=$minor"
  done
  printf '%s\n' "$ld"
}

helm_install() {
  [ -f "$TE_HELM_DIR/.installed" ] && [ -x "$TE_HELM_BIN" ] && return 0
  rm -f "$TE_HELM_DIR/.installed"
  te_store_go_install "$TE_HELM_MODULE/cmd/helm@$TE_HELM_VERSION" "$TE_HELM_DIR" "$(helm__ldflags)"
  "$TE_HELM_BIN" version --short >/dev/null 2>&1 || te_die "helm: the built $TE_HELM_BIN does not run"
}

helm_up() { te_log "helm: $("$TE_HELM_BIN" version --short) at $TE_HELM_BIN"; }

helm_down() { :; }

helm_env() { echo "export HELM='$TE_HELM_BIN'"; }

helm_status() {
  if [ -f "$TE_HELM_DIR/.installed" ] && [ -x "$TE_HELM_BIN" ]; then
    echo "helm: $TE_HELM_VERSION built at $TE_HELM_BIN (a program; nothing runs)"
  else
    echo "helm: $TE_HELM_VERSION not built (scripts/testenv up helm)"
    return 1
  fi
}
