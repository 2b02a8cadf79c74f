# GCS: fake-gcs-server built from the Go module proxy, on 127.0.0.1:14443 (plain HTTP).
# Sourced by scripts/testenv.
#
# fake-gcs-server serves the JSON API (buckets, lists, reads, media/multipart uploads) but not the
# resumable-upload and XML paths object_store writes through, so tests use it for the GCS builder
# and read paths, with objects uploaded here through its JSON upload API.
# DANGER: a GCS client without credentials asks the cloud metadata server (169.254.169.254).
# The credentials file written here sets gcs_base_url and disable_oauth, so no traffic leaves
# loopback; always pass it.

# shellcheck source-path=SCRIPTDIR source=stores/lib.sh
source "$TE_ROOT/scripts/testenv.d/stores/lib.sh"

TE_GCS_MODULE=github.com/fsouza/fake-gcs-server
TE_GCS_VERSION=v1.56.1
TE_GCS_DIR=$TE_CACHE/fake-gcs-server-$TE_GCS_VERSION
TE_GCS_PORT=14443
TE_GCS_URL=http://127.0.0.1:$TE_GCS_PORT
TE_GCS_BUCKET=kafka-backup-test
TE_GCS_KEY=$TE_STATE/gcs-service-account.pem
TE_GCS_CREDS=$TE_SECRETS/gcs-credentials/credentials.json
# Written at every up; tests may rely on it to prove reads work.
TE_GCS_SAMPLE=testenv/sample.txt

gcs_install() {
  te_store_go_install "$TE_GCS_MODULE@$TE_GCS_VERSION" "$TE_GCS_DIR"
}

gcs_ready() { te_store_curl -f -o /dev/null "$TE_GCS_URL/storage/v1/b"; }

# 409 means the bucket exists already.
gcs_make_bucket() {
  local code
  code=$(te_store_curl -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data "{\"name\":\"$TE_GCS_BUCKET\"}" "$TE_GCS_URL/storage/v1/b") || return 1
  [ "$code" = 200 ] || [ "$code" = 409 ]
}

gcs_upload_sample() {
  printf 'kafka-backup testenv sample object\n' | te_store_curl -f -o /dev/null -X POST \
    -H 'Content-Type: text/plain' --data-binary @- \
    "$TE_GCS_URL/upload/storage/v1/b/$TE_GCS_BUCKET/o?uploadType=media&name=${TE_GCS_SAMPLE//\//%2F}"
}

# Service-account JSON in the shape object_store's GoogleCloudStorageBuilder reads
# (with_service_account_path / google_service_account), pointing at the local server.
gcs_write_credentials() {
  [ -s "$TE_GCS_CREDS" ] && [ -s "$TE_GCS_KEY" ] && [ "$TE_GCS_CREDS" -nt "$TE_GCS_KEY" ] && return 0
  if [ ! -s "$TE_GCS_KEY" ]; then
    (umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TE_GCS_KEY" 2>/dev/null) \
      || te_die "openssl could not generate the GCS service-account key"
  fi
  te_write_secret gcs-credentials credentials.json "$(python3 - "$TE_GCS_KEY" "$TE_GCS_URL" <<'EOF'
import hashlib, json, sys
key = open(sys.argv[1]).read()
print(json.dumps({
    "type": "service_account",
    "project_id": "kafka-backup-test",
    "private_key_id": hashlib.sha1(key.encode()).hexdigest(),
    "private_key": key,
    "client_email": "testenv@kafka-backup-test.iam.gserviceaccount.com",
    "client_id": "100000000000000000000",
    "auth_uri": sys.argv[2] + "/oauth2/auth",
    "token_uri": sys.argv[2] + "/token",
    "gcs_base_url": sys.argv[2],
    "disable_oauth": True,
}, indent=2))
EOF
)"
}

gcs_up() {
  gcs_write_credentials
  if ! te_running gcs; then
    if te_port_open "$TE_GCS_PORT"; then
      te_die "port $TE_GCS_PORT is in use by a process testenv did not start"
    fi
    mkdir -p "$TE_STATE/gcs"
    te_start gcs "$TE_GCS_DIR/bin/fake-gcs-server" -scheme http -host 127.0.0.1 -port "$TE_GCS_PORT" \
      -public-host "127.0.0.1:$TE_GCS_PORT" -external-url "$TE_GCS_URL" \
      -backend filesystem -filesystem-root "$TE_STATE/gcs" -log-level warn
  fi
  te_wait gcs 60 gcs_ready
  te_wait gcs 30 gcs_make_bucket
  gcs_upload_sample || te_die "gcs: uploading the sample object failed"
  te_log "gcs: fake-gcs-server $TE_GCS_VERSION on $TE_GCS_URL, bucket $TE_GCS_BUCKET"
}

gcs_down() { te_stop gcs; }

gcs_env() {
  echo "export GCS_ENDPOINT='$TE_GCS_URL'"
  echo "export GCS_BUCKET='$TE_GCS_BUCKET'"
  echo "export GCS_CREDENTIALS_FILE='$TE_GCS_CREDS'"
  echo "export GCS_SERVER='fake-gcs-server-$TE_GCS_VERSION'"
  echo "export GCS_SAMPLE_OBJECT='$TE_GCS_SAMPLE'"
}

gcs_status() {
  if te_running gcs; then
    echo "gcs: running (pid $(cat "$TE_PIDS/gcs.pid")) fake-gcs-server-$TE_GCS_VERSION $TE_GCS_URL"
  else
    echo "gcs: stopped"
    return 1
  fi
}
