# S3: MinIO (single drive) built from the Go module proxy, on 127.0.0.1:19000 (console :19001),
# and a second MinIO that speaks HTTPS, as S3 itself does, on 127.0.0.1:19002 (console :19003):
# same credentials and bucket, its own data, a certificate from a CA made here
# ($TE_STATE/s3-tls/ca.crt). Sourced by scripts/testenv.
#
# MinIO's RELEASE.* tags are not semantic versions, so the Go proxy serves MinIO only as
# pseudo-versions; the pin below is the last commit of github.com/minio/minio the proxy has
# (2026-02-12). No `replace` directives in its go.mod, so `go install module@version` builds it.
# The build stamps MinIO's version variables the way its own buildscripts/gen-ldflags.go does.

# shellcheck source-path=SCRIPTDIR source=stores/lib.sh
source "$TE_ROOT/scripts/testenv.d/stores/lib.sh"

TE_S3_MODULE=github.com/minio/minio
TE_S3_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
TE_S3_COMMIT=7aac2a2c5b7c
TE_S3_COMMIT_TIME=2026-02-12T20:18:48Z
TE_S3_DIR=$TE_CACHE/minio-$TE_S3_VERSION
TE_S3_PORT=19000
TE_S3_CONSOLE_PORT=19001
TE_S3_URL=http://127.0.0.1:$TE_S3_PORT
TE_S3_BUCKET=kafka-backup-test
TE_S3_REGION=us-east-1
TE_S3_USER=kafka-backup-admin
TE_S3_PASSWORD_FILE=$TE_STATE/s3-root-password
TE_S3_SECRET_DIR=$TE_SECRETS/s3-credentials
TE_S3_TLS_PORT=19002
TE_S3_TLS_CONSOLE_PORT=19003
TE_S3_TLS_URL=https://127.0.0.1:$TE_S3_TLS_PORT
TE_S3_TLS_DIR=$TE_STATE/s3-tls

s3_install() {
  local tag=${TE_S3_COMMIT_TIME//:/-} ld
  ld="-s -w -X $TE_S3_MODULE/cmd.Version=$TE_S3_COMMIT_TIME"
  ld+=" -X $TE_S3_MODULE/cmd.ReleaseTag=DEVELOPMENT.$tag"
  ld+=" -X $TE_S3_MODULE/cmd.CopyrightYear=${TE_S3_COMMIT_TIME%%-*}"
  ld+=" -X $TE_S3_MODULE/cmd.CommitID=$TE_S3_COMMIT -X $TE_S3_MODULE/cmd.ShortCommitID=$TE_S3_COMMIT"
  te_store_go_install "$TE_S3_MODULE@$TE_S3_VERSION" "$TE_S3_DIR" "$ld"
}

# s3_healthy URL, s3_make_bucket URL: for either MinIO (the CA is used for https URLs only).
s3_healthy() {
  te_store_curl -f -o /dev/null --cacert "$TE_S3_TLS_DIR/ca.crt" "$1/minio/health/live"
}

s3_req() {
  te_store_req s3 "$@" --region "$TE_S3_REGION" \
    --access-key-file "$TE_S3_SECRET_DIR/accessKey" --secret-key-file "$TE_S3_SECRET_DIR/secretKey"
}

# 409 BucketAlreadyOwnedByYou means it exists already.
s3_make_bucket() {
  s3_req PUT "$1/$TE_S3_BUCKET" --ok 409 --cacert "$TE_S3_TLS_DIR/ca.crt" >/dev/null 2>&1
}

# _s3_tls_certs: a CA, and a server certificate for 127.0.0.1 and localhost, once. MinIO reads
# public.crt and private.key from its --certs-dir.
_s3_tls_certs() {
  local d=$TE_S3_TLS_DIR
  [ -s "$d/ca.crt" ] && [ -s "$d/certs/public.crt" ] && [ -s "$d/certs/private.key" ] && return 0
  command -v openssl >/dev/null 2>&1 || te_apt_install openssl
  te_log "generating CA and certificate for the HTTPS MinIO in $d"
  mkdir -p "$d/certs" "$d/data"
  (
    cd "$d" && umask 077 &&
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout ca.key -out ca.crt \
      -subj "/CN=kafka-backup testenv S3 CA" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign &&
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout certs/private.key -out server.csr \
      -subj "/CN=127.0.0.1" &&
    printf '%s\n' basicConstraints=CA:FALSE keyUsage=critical,digitalSignature,keyEncipherment \
      extendedKeyUsage=serverAuth subjectAltName=IP:127.0.0.1,DNS:localhost >server.ext &&
    openssl x509 -req -sha256 -days 3650 -in server.csr -CA ca.crt -CAkey ca.key \
      -CAcreateserial -CAserial ca.srl -extfile server.ext -out certs/public.crt
  ) >/dev/null 2>&1 || te_die "openssl could not make the HTTPS MinIO's certificates"
  chmod 644 "$d/ca.crt" "$d/certs/public.crt"
  # The system's roots plus this CA: what SSL_CERT_FILE names for clients that should trust it.
  cat /etc/ssl/certs/ca-certificates.crt "$d/ca.crt" >"$d/trust.pem" 2>/dev/null ||
    cp "$d/ca.crt" "$d/trust.pem"
}

# _s3_start NAME ADDRESS CONSOLE_ADDRESS SERVER_URL DATA [ARGS...]
_s3_start() {
  local name=$1 address=$2 console=$3 url=$4 data=$5
  shift 5
  mkdir -p "$data"
  # Exported in a subshell so the password never appears on a command line.
  (
    export MINIO_ROOT_USER=$TE_S3_USER
    MINIO_ROOT_PASSWORD=$(cat "$TE_S3_PASSWORD_FILE")
    export MINIO_ROOT_PASSWORD
    export MINIO_SITE_REGION=$TE_S3_REGION
    export MINIO_SERVER_URL=$url
    export MINIO_BROWSER_REDIRECT_URL=${url%:*}:${console##*:}
    export MINIO_UPDATE=off MINIO_CALLHOME_ENABLE=off
    te_start "$name" "$TE_S3_DIR/bin/minio" server --anonymous "$@" \
      --address "$address" --console-address "$console" "$data"
  )
}

s3_up() {
  # The root password is generated once and kept with the data it protects.
  local pw
  if [ ! -s "$TE_S3_PASSWORD_FILE" ]; then
    pw=$(te_random_password)
    [ "${#pw}" -ge 16 ] || te_die "could not generate the MinIO root password"
    (umask 077 && printf '%s\n' "$pw" >"$TE_S3_PASSWORD_FILE")
  fi
  te_write_secret s3-credentials accessKey "$TE_S3_USER"
  te_write_secret s3-credentials secretKey "$(cat "$TE_S3_PASSWORD_FILE")"

  if ! te_running s3; then
    if te_port_open "$TE_S3_PORT" || te_port_open "$TE_S3_CONSOLE_PORT"; then
      te_die "port $TE_S3_PORT or $TE_S3_CONSOLE_PORT is in use by a process testenv did not start"
    fi
    _s3_start s3 "127.0.0.1:$TE_S3_PORT" "127.0.0.1:$TE_S3_CONSOLE_PORT" "$TE_S3_URL" \
      "$TE_STATE/s3"
  fi
  _s3_tls_certs
  if ! te_running s3-tls; then
    if te_port_open "$TE_S3_TLS_PORT" || te_port_open "$TE_S3_TLS_CONSOLE_PORT"; then
      te_die "port $TE_S3_TLS_PORT or $TE_S3_TLS_CONSOLE_PORT is in use by a process testenv did not start"
    fi
    _s3_start s3-tls "127.0.0.1:$TE_S3_TLS_PORT" "127.0.0.1:$TE_S3_TLS_CONSOLE_PORT" \
      "$TE_S3_TLS_URL" "$TE_S3_TLS_DIR/data" --certs-dir "$TE_S3_TLS_DIR/certs"
  fi
  te_wait s3 60 s3_healthy "$TE_S3_URL"
  te_wait s3-tls 60 s3_healthy "$TE_S3_TLS_URL"
  # Right after "live" MinIO may still answer 503 while it initialises.
  te_wait s3 30 s3_make_bucket "$TE_S3_URL"
  te_wait s3-tls 30 s3_make_bucket "$TE_S3_TLS_URL"
  te_log "s3: MinIO $TE_S3_VERSION on $TE_S3_URL and $TE_S3_TLS_URL, bucket $TE_S3_BUCKET"
}

s3_down() {
  te_stop s3
  te_stop s3-tls
}

s3_env() {
  echo "export S3_ENDPOINT='$TE_S3_URL'"
  echo "export S3_BUCKET='$TE_S3_BUCKET'"
  echo "export S3_REGION='$TE_S3_REGION'"
  echo "export S3_ACCESS_KEY_FILE='$TE_S3_SECRET_DIR/accessKey'"
  echo "export S3_SECRET_KEY_FILE='$TE_S3_SECRET_DIR/secretKey'"
  echo "export S3_SERVER='minio-$TE_S3_VERSION'"
  echo "export S3_TLS_ENDPOINT='$TE_S3_TLS_URL'"
  echo "export S3_TLS_CA_FILE='$TE_S3_TLS_DIR/ca.crt'"
  echo "export S3_TLS_TRUST_FILE='$TE_S3_TLS_DIR/trust.pem'"
}

s3_status() {
  local rc=0 name url
  for name in s3 s3-tls; do
    url=$TE_S3_URL
    [ "$name" = s3-tls ] && url=$TE_S3_TLS_URL
    if te_running "$name"; then
      echo "$name: running (pid $(cat "$TE_PIDS/$name.pid")) minio-$TE_S3_VERSION $url"
    else
      echo "$name: stopped"
      rc=1
    fi
  done
  return $rc
}
