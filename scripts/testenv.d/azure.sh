# Azure Blob: Azurite (blob service only) from npm, on 127.0.0.1:10000. Sourced by scripts/testenv.
#
# Azurite 3.35.0 is the newest release that runs on Node 20 (3.37 needs Node 22). The dependency
# tree is pinned by stores/azurite/package-lock.json and installed with `npm ci`.
# Account: Azurite's well-known development account devstoreaccount1 and its published key.

# shellcheck source-path=SCRIPTDIR source=stores/lib.sh
source "$TE_ROOT/scripts/testenv.d/stores/lib.sh"

TE_AZ_VERSION=3.35.0
TE_AZ_DIR=$TE_CACHE/azurite-$TE_AZ_VERSION
TE_AZ_PORT=10000
TE_AZ_URL=http://127.0.0.1:$TE_AZ_PORT
TE_AZ_ACCOUNT=devstoreaccount1
# Published development key of devstoreaccount1 (not a secret; same in every Azurite).
TE_AZ_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
TE_AZ_CONTAINER=kafka-backup-test
TE_AZ_KEY_FILE=$TE_SECRETS/azure-storage/AZURE_STORAGE_KEY
TE_AZ_SAS_FILE=$TE_SECRETS/azure-sas/AZURE_SAS_TOKEN

azure_install() {
  [ -f "$TE_AZ_DIR/.installed" ] && return 0
  command -v npm >/dev/null || te_die "npm is needed to install Azurite (Node >= 18)"
  te_log "installing Azurite $TE_AZ_VERSION from npm (first run only)"
  rm -rf "$TE_AZ_DIR"
  mkdir -p "$TE_AZ_DIR"
  cp "$TE_STORES_DIR/azurite/package.json" "$TE_STORES_DIR/azurite/package-lock.json" "$TE_AZ_DIR/"
  if ! (cd "$TE_AZ_DIR" && npm ci --no-audit --no-fund --loglevel=error) >"$TE_AZ_DIR/install.log" 2>&1; then
    tail -n 30 "$TE_AZ_DIR/install.log" >&2
    te_die "npm ci for Azurite failed (log: $TE_AZ_DIR/install.log)"
  fi
  [ -x "$TE_AZ_DIR/node_modules/.bin/azurite-blob" ] || te_die "azurite-blob missing after npm ci"
  echo "azurite@$TE_AZ_VERSION" >"$TE_AZ_DIR/.installed"
}

azure_req() {
  te_store_req azure "$@" --account "$TE_AZ_ACCOUNT" --key-file "$TE_AZ_KEY_FILE"
}

# A signed "list containers" proves the service answers and SharedKey works.
azure_ready() { azure_req GET "$TE_AZ_URL/$TE_AZ_ACCOUNT?comp=list" >/dev/null 2>&1; }

# 409 ContainerAlreadyExists means it exists already.
azure_make_container() {
  azure_req PUT "$TE_AZ_URL/$TE_AZ_ACCOUNT/$TE_AZ_CONTAINER?restype=container" --ok 409 >/dev/null 2>&1
}

azure_up() {
  te_write_secret azure-storage AZURE_STORAGE_KEY "$TE_AZ_KEY"
  if ! te_running azure; then
    if te_port_open "$TE_AZ_PORT"; then
      te_die "port $TE_AZ_PORT is in use by a process testenv did not start"
    fi
    mkdir -p "$TE_STATE/azure"
    te_start azure "$TE_AZ_DIR/node_modules/.bin/azurite-blob" \
      --blobHost 127.0.0.1 --blobPort "$TE_AZ_PORT" --location "$TE_STATE/azure" \
      --skipApiVersionCheck --loose --disableTelemetry --disableProductStyleUrl
  fi
  te_wait azure 60 azure_ready
  te_wait azure 30 azure_make_container
  # SAS tokens signed with the dev key, valid until 2099, permissions racwdl (deterministic, so
  # written once): AZURE_SAS_TOKEN for the container (service SAS), AZURE_ACCOUNT_SAS_TOKEN for
  # the account (blob service, all resource types).
  if [ ! -s "$TE_AZ_SAS_FILE" ]; then
    te_write_secret azure-sas AZURE_SAS_TOKEN "$(te_store_req azure-sas container \
      --account "$TE_AZ_ACCOUNT" --key-file "$TE_AZ_KEY_FILE" --container "$TE_AZ_CONTAINER")"
  fi
  if [ ! -s "$TE_SECRETS/azure-sas/AZURE_ACCOUNT_SAS_TOKEN" ]; then
    te_write_secret azure-sas AZURE_ACCOUNT_SAS_TOKEN "$(te_store_req azure-sas account \
      --account "$TE_AZ_ACCOUNT" --key-file "$TE_AZ_KEY_FILE")"
  fi
  te_log "azure: Azurite $TE_AZ_VERSION on $TE_AZ_URL/$TE_AZ_ACCOUNT, container $TE_AZ_CONTAINER"
}

azure_down() { te_stop azure; }

azure_env() {
  # object_store's emulator mode (with_use_emulator) reads only AZURITE_BLOB_STORAGE_URL.
  echo "export AZURITE_BLOB_STORAGE_URL='$TE_AZ_URL'"
  echo "export AZURE_STORAGE_ACCOUNT='$TE_AZ_ACCOUNT'"
  echo "export AZURE_CONTAINER='$TE_AZ_CONTAINER'"
  echo "export AZURE_STORAGE_KEY_FILE='$TE_AZ_KEY_FILE'"
  echo "export AZURE_SAS_TOKEN_FILE='$TE_AZ_SAS_FILE'"
  echo "export AZURE_SERVER='azurite-$TE_AZ_VERSION'"
}

azure_status() {
  if te_running azure; then
    echo "azure: running (pid $(cat "$TE_PIDS/azure.pid")) azurite-$TE_AZ_VERSION $TE_AZ_URL"
  else
    echo "azure: stopped"
    return 1
  fi
}
