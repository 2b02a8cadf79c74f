# shellcheck shell=bash
# Service "kafka" for scripts/testenv: one genuine Apache Kafka broker (KRaft, combined
# broker+controller, node.id=1) with one listener per security protocol, all on 127.0.0.1:
#
#   19092 PLAINTEXT         (also the broker-internal listener)
#   19093 SASL_SSL          PLAIN, SCRAM-SHA-256, SCRAM-SHA-512; server certificate from our CA
#   19094 SSL               mTLS: clients must present a certificate signed by our CA
#   19095 SASL_PLAINTEXT    PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
#   19090 CONTROLLER        KRaft controller (not for clients)
#
# and two for the test node's Pods, on the test bridge's address ($TE_NODE_IP, common.sh),
# advertised by the broker's name in the cluster DNS (node.sh's Service testenv/kafka):
#
#   19096 PODS              PLAINTEXT   kafka-0.kafka.testenv.svc.cluster.local:19096
#   19097 PODS_SASL_SSL     SASL_SSL    kafka-0.kafka.testenv.svc.cluster.local:19097
#
# Jars come from Maven Central (scripts/testenv.d/kafka/pom.xml) into $TE_CACHE/kafka-<version>/libs.
# State lives in $TE_STATE/kafka: data/ (log dir, kept across down/up), tls/ (CA, broker keystore),
# clients/ (librdkafka/kcat property files for each listener, e.g. `kcat -F clients/scram256.conf -L`).
# Client credentials are written in the Kubernetes Secret layout under $TE_SECRETS:
# kafka-tls/{ca.crt,tls.crt,tls.key}, kafka-tls-ca/ca.crt, kafka-scram-sha-256/, kafka-scram-sha-512/, kafka-plain/{username,password}.
# No authorizer, no ACLs. Topics are not auto-created (auto.create.topics.enable=false).
# Sourced by scripts/testenv (and by kafka-cluster.sh, scripts/kafka-run-class); defines functions only.

KTE_VERSION=3.9.1
KTE_HOME=$TE_CACHE/kafka-$KTE_VERSION
KTE_LIBS=$KTE_HOME/libs
KTE_CONF=$TE_ROOT/scripts/testenv.d/kafka
KTE_RUN_CLASS=$TE_ROOT/scripts/kafka-run-class

KTE_DIR=$TE_STATE/kafka
KTE_HOST=127.0.0.1
KTE_PORT_CONTROLLER=19090
KTE_PORT_PLAINTEXT=19092
KTE_PORT_SASL_SSL=19093
KTE_PORT_SSL=19094
KTE_PORT_SASL_PLAINTEXT=19095
KTE_PORT_PODS=19096
KTE_PORT_PODS_SASL_SSL=19097
# The broker's name for Pods (node.sh makes the cluster DNS answer it with $TE_NODE_IP).
KTE_POD_HOST=kafka-0.kafka.testenv.svc.cluster.local
# Names and addresses of the broker's certificate; a certificate without them is made anew.
KTE_TLS_SAN="IP:127.0.0.1,DNS:localhost,IP:$TE_NODE_IP,DNS:$KTE_POD_HOST,DNS:kafka.testenv.svc.cluster.local,DNS:kafka.testenv.svc"
KTE_SCRAM256_USER=kb-scram256
KTE_SCRAM512_USER=kb-scram512
KTE_PLAIN_USER=kb-plain
# A broker stopped uncleanly first recovers its logs; with the benchmark data sets (several GiB)
# in its log directory, on 2 cores with a build running alongside, that took over two minutes.
KTE_READY_TIMEOUT=300

# ---------------------------------------------------------------------------------------------
# Install (shared with kafka-cluster and scripts/kafka-run-class)

_kafka_pom_sum() { sha256sum "$KTE_CONF/pom.xml" | cut -d' ' -f1; }

# kafka_installed: the jars for the current pom.xml are in $KTE_LIBS.
kafka_installed() {
  [ -f "$KTE_HOME/.installed" ] && [ "$(cat "$KTE_HOME/.installed")" = "$(_kafka_pom_sum)" ]
}

kafka_install() {
  command -v java >/dev/null 2>&1 || te_apt_install openjdk-17-jre-headless
  command -v kcat >/dev/null 2>&1 || te_apt_install kcat
  command -v openssl >/dev/null 2>&1 || te_apt_install openssl
  # MIT Kerberos KDC, kinit and the Cyrus SASL GSSAPI plugin: crates/cli/tests/auth_gssapi.rs starts
  # a KDC and a GSSAPI broker of its own (the shared broker has no GSSAPI listener).
  te_apt_install krb5-kdc krb5-admin-server krb5-user libsasl2-modules-gssapi-mit
  kafka_installed && return 0
  command -v mvn >/dev/null 2>&1 || te_apt_install maven
  te_log "installing Apache Kafka $KTE_VERSION jars from Maven Central into $KTE_LIBS"
  mkdir -p "$KTE_HOME"
  rm -rf "$KTE_HOME/libs.tmp" "$KTE_HOME/.installed"
  mvn -q -B -Dstyle.color=never -f "$KTE_CONF/pom.xml" -Dmaven.repo.local="$TE_CACHE/m2" \
    dependency:copy-dependencies -DoutputDirectory="$KTE_HOME/libs.tmp" -DincludeScope=runtime \
    >"$TE_LOGS/kafka-install.log" 2>&1 || {
    tail -n 40 "$TE_LOGS/kafka-install.log" >&2
    te_die "mvn could not fetch the Kafka $KTE_VERSION jars (log: $TE_LOGS/kafka-install.log)"
  }
  if [ ! -f "$KTE_HOME/libs.tmp/kafka_2.13-$KTE_VERSION.jar" ] || [ ! -f "$KTE_HOME/libs.tmp/kafka-tools-$KTE_VERSION.jar" ]; then
    te_die "Kafka jars missing after mvn in $KTE_HOME/libs.tmp"
  fi
  rm -rf "$KTE_LIBS"
  mv "$KTE_HOME/libs.tmp" "$KTE_LIBS"
  _kafka_pom_sum >"$KTE_HOME/.installed" # marker, written last
  te_log "Kafka $KTE_VERSION jars installed ($(find "$KTE_LIBS" -name '*.jar' | wc -l) jars)"
}

# ---------------------------------------------------------------------------------------------
# Helpers shared with kafka-cluster.sh

# _kafka_cluster_id: a random Kafka cluster id (base64url of 16 random bytes, not starting with '-').
_kafka_cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [ "${id:0:1}" != - ] && [ ${#id} -eq 22 ] && break
  done
  printf '%s' "$id"
}

# _kafka_start NAME HEAP PROPS: start a broker with te_start. fd 9 (the dispatcher's `up` lock)
# is closed so the long-running broker does not keep holding the lock.
_kafka_start() {
  te_start "$1" env KAFKA_HEAP_OPTS="$2" \
    KAFKA_LOG4J_OPTS="-Dlog4j.configuration=file:$KTE_CONF/log4j.properties" \
    KAFKA_OPTS="-Djava.net.preferIPv4Stack=true ${KAFKA_OPTS:-}" \
    "$KTE_RUN_CLASS" kafka.Kafka "$3" 9>&-
}

# _kafka_format NAME PROPS CLUSTER_ID [STORAGE-TOOL ARGS...]: format the log dir once.
_kafka_format() {
  local name=$1 props=$2 cid=$3; shift 3
  te_log "formatting $name storage (cluster id $cid)"
  KAFKA_HEAP_OPTS=-Xmx256m "$KTE_RUN_CLASS" kafka.tools.StorageTool format -t "$cid" -c "$props" "$@" \
    >>"$TE_LOGS/$name-format.log" 2>&1 || {
    tail -n 20 "$TE_LOGS/$name-format.log" >&2
    te_die "formatting $name storage failed (log: $TE_LOGS/$name-format.log)"
  }
}

# _kafka_metadata_ok CONF_FILE [MIN_BROKERS]: the broker answers a metadata request (kcat -L).
_kafka_metadata_ok() {
  local out n
  out=$(timeout 15 kcat -F "$1" -L -m 5 2>/dev/null) || return 1
  n=$(sed -n 's/^ *\([0-9][0-9]*\) brokers:.*/\1/p' <<<"$out" | head -n 1)
  [ -n "$n" ] && [ "$n" -ge "${2:-1}" ]
}

# ---------------------------------------------------------------------------------------------
# Single broker

# _kafka_user SECRET USERNAME: make sure the Secret holds username + password; returns 1 if the
# password was created just now.
_kafka_user() {
  te_write_secret "$1" username "$2"
  [ -s "$TE_SECRETS/$1/password" ] && return 0
  te_write_secret "$1" password "$(te_random_password)"
  return 1
}

_kafka_password() { cat "$TE_SECRETS/$1/password"; }

# _kafka_tls: CA, broker certificate (PKCS#12 keystore) and client certificate for mTLS, once.
_kafka_tls() {
  local d=$KTE_DIR/tls s=$TE_SECRETS/kafka-tls pw
  if [ -s "$d/broker.p12" ] && [ -s "$d/keystore.password" ] && [ -s "$d/ca.crt" ] &&
    [ -s "$s/ca.crt" ] && [ -s "$s/tls.crt" ] && [ -s "$s/tls.key" ] &&
    [ "$(cat "$d/broker.san" 2>/dev/null)" = "$KTE_TLS_SAN" ]; then
    _kafka_tls_ca_only
    return 0
  fi
  te_log "generating CA and certificates for kafka in $d"
  rm -rf "$d"
  mkdir -p "$d"
  pw=$(te_random_password)
  # One && chain: errexit does not apply inside a subshell that is the left side of ||.
  (
    umask 077 &&
    cd "$d" &&
    printf '%s' "$pw" >keystore.password &&
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout ca.key -out ca.crt \
      -subj "/CN=kafka-backup testenv Kafka CA" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign &&
    # Broker: server certificate for 127.0.0.1 and localhost, in a PKCS#12 keystore.
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout broker.key -out broker.csr -subj "/CN=localhost" &&
    printf '%s\n' basicConstraints=CA:FALSE keyUsage=critical,digitalSignature,keyEncipherment \
      extendedKeyUsage=serverAuth,clientAuth "subjectAltName=$KTE_TLS_SAN" >broker.ext &&
    printf '%s' "$KTE_TLS_SAN" >broker.san &&
    openssl x509 -req -sha256 -days 3650 -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -CAserial ca.srl -extfile broker.ext -out broker.crt &&
    openssl pkcs12 -export -name broker -inkey broker.key -in broker.crt -certfile ca.crt \
      -passout file:keystore.password -out broker.p12 &&
    # Client certificate for the mTLS listener; unencrypted PKCS#8 key (librdkafka, kcat).
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout client.key -out client.csr -subj "/CN=kb-client" &&
    printf '%s\n' basicConstraints=CA:FALSE keyUsage=critical,digitalSignature,keyEncipherment \
      extendedKeyUsage=clientAuth >client.ext &&
    openssl x509 -req -sha256 -days 3650 -in client.csr -CA ca.crt -CAkey ca.key -CAserial ca.srl \
      -extfile client.ext -out client.crt &&
    openssl verify -CAfile ca.crt broker.crt client.crt &&
    rm -f broker.csr client.csr
  ) >"$TE_LOGS/kafka-tls.log" 2>&1 || {
    cat "$TE_LOGS/kafka-tls.log" >&2
    te_die "generating the kafka certificates failed"
  }
  te_write_secret kafka-tls ca.crt "$(cat "$d/ca.crt")"$'\n'
  te_write_secret kafka-tls tls.crt "$(cat "$d/client.crt")"$'\n'
  te_write_secret kafka-tls tls.key "$(cat "$d/client.key")"$'\n'
  # A new CA: the CA-only Secret of the old one must go too.
  rm -f "$TE_SECRETS/kafka-tls-ca/ca.crt"
  _kafka_tls_ca_only
}

# kafka-tls-ca/ca.crt: the CA alone, as a user's Secret for server-authenticated TLS (SASL_SSL) has it.
_kafka_tls_ca_only() {
  [ -s "$TE_SECRETS/kafka-tls-ca/ca.crt" ] ||
    te_write_secret kafka-tls-ca ca.crt "$(cat "$KTE_DIR/tls/ca.crt")"$'\n'
}

_kafka_write_server_props() {
  local h=$KTE_HOST jaas_scram='org.apache.kafka.common.security.scram.ScramLoginModule required;'
  local jaas_plain l
  jaas_plain="org.apache.kafka.common.security.plain.PlainLoginModule required user_$KTE_PLAIN_USER=\"$(_kafka_password kafka-plain)\";"
  (
    umask 077
    cat >"$KTE_DIR/server.properties" <<EOF
# Generated by scripts/testenv.d/kafka.sh at every start; edits are lost.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$h:$KTE_PORT_CONTROLLER
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://$h:$KTE_PORT_PLAINTEXT,SASL_SSL://$h:$KTE_PORT_SASL_SSL,SSL://$h:$KTE_PORT_SSL,SASL_PLAINTEXT://$h:$KTE_PORT_SASL_PLAINTEXT,CONTROLLER://$h:$KTE_PORT_CONTROLLER,PODS://$TE_NODE_IP:$KTE_PORT_PODS,PODS_SASL_SSL://$TE_NODE_IP:$KTE_PORT_PODS_SASL_SSL
advertised.listeners=PLAINTEXT://$h:$KTE_PORT_PLAINTEXT,SASL_SSL://$h:$KTE_PORT_SASL_SSL,SSL://$h:$KTE_PORT_SSL,SASL_PLAINTEXT://$h:$KTE_PORT_SASL_PLAINTEXT,PODS://$KTE_POD_HOST:$KTE_PORT_PODS,PODS_SASL_SSL://$KTE_POD_HOST:$KTE_PORT_PODS_SASL_SSL
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT,PODS:PLAINTEXT,PODS_SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
log.dirs=$KTE_DIR/data

num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
# Tests of compacted topics and retention gaps need the cleaner and retention checks to act within
# seconds, not minutes.
log.cleaner.backoff.ms=500
# Tests write records with timestamps years in the past on purpose; time-based retention (7 days
# by default, checked every second here) would delete them under the tests' feet. Topics that
# want retention set retention.ms themselves.
log.retention.ms=-1
log.retention.check.interval.ms=1000
log.segment.delete.delay.ms=0
# Index files are preallocated sparse at log.index.size.max.bytes (10 MiB by default) and mapped
# into memory. The first touch of a new partition's index faults in the kernel's read-around
# window (the disk's read_ahead_kb, 8 MiB on some virtual machines), and every page of it is a
# hole the kernel zeroes: about 8 MiB of memset per index, two indexes per new partition. With
# tests and benchmarks creating hundreds of partitions that was half the broker's CPU. At 1 MiB an
# index still holds 87k (time) to 128k (offset) entries, at most one per 4 KiB of log, so a segment
# holds at least 340 MiB before a full index rolls it.
log.index.size.max.bytes=1048576

# TLS (SASL_SSL and SSL listeners). Truststore = our CA, used to verify mTLS client certificates.
ssl.keystore.type=PKCS12
ssl.keystore.location=$KTE_DIR/tls/broker.p12
ssl.keystore.password=$(cat "$KTE_DIR/tls/keystore.password")
ssl.key.password=$(cat "$KTE_DIR/tls/keystore.password")
ssl.truststore.type=PEM
ssl.truststore.location=$KTE_DIR/tls/ca.crt
ssl.client.auth=none
listener.name.ssl.ssl.client.auth=required

# SASL (SASL_SSL and SASL_PLAINTEXT listeners). SCRAM users live in the metadata log.
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
EOF
    for l in sasl_ssl sasl_plaintext pods_sasl_ssl; do
      printf 'listener.name.%s.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512\n' "$l"
      printf 'listener.name.%s.plain.sasl.jaas.config=%s\n' "$l" "$jaas_plain"
      printf 'listener.name.%s.scram-sha-256.sasl.jaas.config=%s\n' "$l" "$jaas_scram"
      printf 'listener.name.%s.scram-sha-512.sasl.jaas.config=%s\n' "$l" "$jaas_scram"
    done >>"$KTE_DIR/server.properties"
  )
}

# Client property files (librdkafka names) for kcat -F, one per listener/mechanism. Mode 0600.
_kafka_write_client_confs() {
  local c=$KTE_DIR/clients s=$TE_SECRETS/kafka-tls h=$KTE_HOST
  mkdir -p "$c"
  (
    umask 077
    printf 'bootstrap.servers=%s\n' "$h:$KTE_PORT_PLAINTEXT" >"$c/plaintext.conf"
    printf '%s\n' "bootstrap.servers=$h:$KTE_PORT_SSL" security.protocol=SSL "ssl.ca.location=$s/ca.crt" \
      "ssl.certificate.location=$s/tls.crt" "ssl.key.location=$s/tls.key" >"$c/mtls.conf"
    _kafka_sasl_conf SASL_SSL "$KTE_PORT_SASL_SSL" SCRAM-SHA-256 kafka-scram-sha-256 >"$c/scram256.conf"
    _kafka_sasl_conf SASL_SSL "$KTE_PORT_SASL_SSL" SCRAM-SHA-512 kafka-scram-sha-512 >"$c/scram512.conf"
    _kafka_sasl_conf SASL_SSL "$KTE_PORT_SASL_SSL" PLAIN kafka-plain >"$c/plain.conf"
    _kafka_sasl_conf SASL_PLAINTEXT "$KTE_PORT_SASL_PLAINTEXT" SCRAM-SHA-256 kafka-scram-sha-256 >"$c/sasl-plaintext-scram256.conf"
    _kafka_sasl_conf SASL_PLAINTEXT "$KTE_PORT_SASL_PLAINTEXT" SCRAM-SHA-512 kafka-scram-sha-512 >"$c/sasl-plaintext-scram512.conf"
    _kafka_sasl_conf SASL_PLAINTEXT "$KTE_PORT_SASL_PLAINTEXT" PLAIN kafka-plain >"$c/sasl-plaintext-plain.conf"
  )
}

# _kafka_sasl_conf PROTOCOL PORT MECHANISM SECRET
_kafka_sasl_conf() {
  printf '%s\n' "bootstrap.servers=$KTE_HOST:$2" "security.protocol=$1" "sasl.mechanisms=$3" \
    "sasl.username=$(cat "$TE_SECRETS/$4/username")" "sasl.password=$(_kafka_password "$4")"
  [ "$1" = SASL_SSL ] && printf 'ssl.ca.location=%s\n' "$TE_SECRETS/kafka-tls/ca.crt"
  return 0
}

# _kafka_ready: every client listener answers metadata, with every SASL mechanism.
_kafka_ready() {
  local f
  te_port_open "$KTE_PORT_PLAINTEXT" || return 1
  for f in plaintext scram256 scram512 plain mtls sasl-plaintext-scram256 sasl-plaintext-scram512 sasl-plaintext-plain; do
    _kafka_metadata_ok "$KTE_DIR/clients/$f.conf" || return 1
  done
}

# _kafka_set_scram SECRET MECHANISM: (re)create a SCRAM user through the running broker.
_kafka_set_scram() {
  te_log "setting $2 credentials of $(cat "$TE_SECRETS/$1/username")"
  "$KTE_RUN_CLASS" kafka.admin.ConfigCommand --bootstrap-server "$KTE_HOST:$KTE_PORT_PLAINTEXT" --alter \
    --entity-type users --entity-name "$(cat "$TE_SECRETS/$1/username")" \
    --add-config "$2=[password=$(_kafka_password "$1")]" >>"$TE_LOGS/kafka-format.log" 2>&1 ||
    te_die "could not set the $2 credentials (log: $TE_LOGS/kafka-format.log)"
}

kafka_up() {
  if te_running kafka; then
    te_log "kafka already running (pid $(cat "$TE_PIDS/kafka.pid"))"
    return 0
  fi
  local p new256=0 new512=0
  for p in "$KTE_PORT_CONTROLLER" "$KTE_PORT_PLAINTEXT" "$KTE_PORT_SASL_SSL" "$KTE_PORT_SSL" "$KTE_PORT_SASL_PLAINTEXT"; do
    ! te_port_open "$p" || te_die "kafka: port $p on 127.0.0.1 is already in use by another process"
  done
  mkdir -p "$KTE_DIR/data"
  te_bridge_up
  _kafka_tls
  _kafka_user kafka-scram-sha-256 "$KTE_SCRAM256_USER" || new256=1
  _kafka_user kafka-scram-sha-512 "$KTE_SCRAM512_USER" || new512=1
  _kafka_user kafka-plain "$KTE_PLAIN_USER" || true
  _kafka_write_server_props
  _kafka_write_client_confs
  if [ ! -f "$KTE_DIR/data/meta.properties" ]; then
    : >"$TE_LOGS/kafka-format.log"
    _kafka_format kafka "$KTE_DIR/server.properties" "$(_kafka_cluster_id)" \
      --add-scram "SCRAM-SHA-256=[name=$KTE_SCRAM256_USER,password=$(_kafka_password kafka-scram-sha-256)]" \
      --add-scram "SCRAM-SHA-512=[name=$KTE_SCRAM512_USER,password=$(_kafka_password kafka-scram-sha-512)]"
    new256=0 new512=0
  fi
  _kafka_start kafka "-Xmx512m -Xms128m" "$KTE_DIR/server.properties"
  if [ $new256 = 1 ] || [ $new512 = 1 ]; then
    # Data kept but the password files were lost: set the new passwords through the broker.
    te_wait kafka "$KTE_READY_TIMEOUT" _kafka_metadata_ok "$KTE_DIR/clients/plaintext.conf"
    [ $new256 = 0 ] || _kafka_set_scram kafka-scram-sha-256 SCRAM-SHA-256
    [ $new512 = 0 ] || _kafka_set_scram kafka-scram-sha-512 SCRAM-SHA-512
  fi
  te_wait kafka "$KTE_READY_TIMEOUT" _kafka_ready
  te_log "kafka ready: PLAINTEXT $KTE_HOST:$KTE_PORT_PLAINTEXT, SASL_SSL :$KTE_PORT_SASL_SSL, SSL(mTLS) :$KTE_PORT_SSL, SASL_PLAINTEXT :$KTE_PORT_SASL_PLAINTEXT"
}

kafka_down() {
  te_stop kafka
  te_bridge_release
}

kafka_env() {
  local s=$TE_SECRETS
  cat <<EOF
export KAFKA_VERSION='$KTE_VERSION'
export KAFKA_LIBS='$KTE_LIBS'
export KAFKA_BOOTSTRAP='$KTE_HOST:$KTE_PORT_PLAINTEXT'
export KAFKA_SASL_SSL_BOOTSTRAP='$KTE_HOST:$KTE_PORT_SASL_SSL'
export KAFKA_SSL_BOOTSTRAP='$KTE_HOST:$KTE_PORT_SSL'
export KAFKA_SASL_PLAINTEXT_BOOTSTRAP='$KTE_HOST:$KTE_PORT_SASL_PLAINTEXT'
export KAFKA_CA_FILE='$s/kafka-tls/ca.crt'
export KAFKA_CLIENT_CERT_FILE='$s/kafka-tls/tls.crt'
export KAFKA_CLIENT_KEY_FILE='$s/kafka-tls/tls.key'
export KAFKA_SCRAM256_USER='$KTE_SCRAM256_USER'
export KAFKA_SCRAM256_PASSWORD_FILE='$s/kafka-scram-sha-256/password'
export KAFKA_SCRAM512_USER='$KTE_SCRAM512_USER'
export KAFKA_SCRAM512_PASSWORD_FILE='$s/kafka-scram-sha-512/password'
export KAFKA_PLAIN_USER='$KTE_PLAIN_USER'
export KAFKA_PLAIN_PASSWORD_FILE='$s/kafka-plain/password'
EOF
}

kafka_status() {
  if te_running kafka; then
    echo "kafka: running (pid $(cat "$TE_PIDS/kafka.pid")) $KTE_VERSION PLAINTEXT $KTE_HOST:$KTE_PORT_PLAINTEXT SASL_SSL :$KTE_PORT_SASL_SSL SSL(mTLS) :$KTE_PORT_SSL SASL_PLAINTEXT :$KTE_PORT_SASL_PLAINTEXT log $TE_LOGS/kafka.log"
  else
    echo "kafka: stopped"
    return 1
  fi
}
