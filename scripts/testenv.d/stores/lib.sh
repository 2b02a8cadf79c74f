# Helpers shared by the object-store modules (s3.sh, azure.sh, gcs.sh). Sourced, never run.
# Requires scripts/lib/common.sh to be sourced first.

TE_STORES_DIR=$TE_ROOT/scripts/testenv.d/stores

# te_store_req ARGS...: signed S3/Azure requests and SAS tokens (Python standard library only).
te_store_req() { python3 "$TE_STORES_DIR/objreq.py" "$@"; }

# te_store_curl ARGS...: curl for the local services, never through a proxy.
te_store_curl() { curl --noproxy '*' -sS --max-time 30 "$@"; }

# te_store_go_install MODULE@VERSION DEST [LDFLAGS]: build a pinned Go command from the module
# proxy into DEST/bin, with module and build caches under $TE_CACHE/go. Marker DEST/.installed
# is written last; an existing marker skips the build.
te_store_go_install() {
  local modver=$1 dest=$2 ldflags=${3:-}
  local go
  [ -f "$dest/.installed" ] && return 0
  go=$(command -v go || true)
  if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go; fi
  [ -n "$go" ] || te_die "Go is needed to build $modver (install Go >= 1.26)"
  te_log "building $modver with $("$go" version | cut -d' ' -f3) (first run only; several minutes)"
  rm -rf "$dest"
  mkdir -p "$dest/bin" "$TE_CACHE/go"
  if ! GOMODCACHE=$TE_CACHE/go/mod GOCACHE=$TE_CACHE/go/build GOBIN=$dest/bin \
      GOFLAGS=-buildvcs=false GO111MODULE=on \
      "$go" install -trimpath ${ldflags:+-ldflags="$ldflags"} "$modver" >"$dest/build.log" 2>&1; then
    tail -n 30 "$dest/build.log" >&2
    te_die "building $modver failed (log: $dest/build.log)"
  fi
  echo "$modver" >"$dest/.installed"
}
