# Shared helpers for scripts/testenv and the service modules in scripts/testenv.d/.
# Sourced, never run. Services listen on 127.0.0.1, and where Pods of the test node must reach them,
# on the test bridge's address (TE_NODE_IP), which only this machine and its Pods can reach.

TE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Downloads and builds: reused across runs and clones.
TE_CACHE=${KB_TESTENV_CACHE:-$HOME/.cache/kafka-backup-testenv}
# Runtime state of started services: data dirs, logs, pid files, certificates, secrets.
TE_STATE=${KB_TESTENV_STATE:-$TE_CACHE/run}
TE_PIDS=$TE_STATE/pids
TE_LOGS=$TE_STATE/logs
# Secrets in the layout Kubernetes uses when it mounts a Secret: $TE_SECRETS/<secret-name>/<key>.
TE_SECRETS=$TE_STATE/secrets

mkdir -p "$TE_CACHE" "$TE_STATE" "$TE_PIDS" "$TE_LOGS" "$TE_SECRETS"

te_log() { printf '[testenv] %s\n' "$*" >&2; }
te_die() { printf '[testenv] ERROR: %s\n' "$*" >&2; exit 1; }

# te_show_log NAME: print the tail of a service's log, for failures.
te_show_log() {
  local f=$TE_LOGS/$1.log
  if [ -f "$f" ]; then
    printf '[testenv] ---- last 40 lines of %s ----\n' "$f" >&2
    tail -n 40 "$f" >&2
    printf '[testenv] ---- end of %s ----\n' "$f" >&2
  fi
}

# te_running NAME: true if the process recorded in NAME's pid file is alive.
te_running() {
  local pidf=$TE_PIDS/$1.pid pid
  [ -f "$pidf" ] || return 1
  pid=$(cat "$pidf" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# te_start NAME CMD...: start CMD detached in its own session, log to $TE_LOGS/NAME.log,
# record its pid. The caller waits for readiness.
te_start() {
  local name=$1; shift
  if te_running "$name"; then
    te_log "$name already running (pid $(cat "$TE_PIDS/$name.pid"))"
    return 0
  fi
  : >"$TE_LOGS/$name.log"
  # 9>&-: the daemon must not inherit the lock `scripts/testenv up` holds on fd 9.
  setsid nohup "$@" >>"$TE_LOGS/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$TE_PIDS/$name.pid"
  te_log "started $name (pid $!)"
}

# te_stop NAME: stop the process group started by te_start, TERM then KILL after 20 s.
te_stop() {
  local name=$1 pidf=$TE_PIDS/$1.pid pid i
  [ -f "$pidf" ] || return 0
  pid=$(cat "$pidf")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 200); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      te_log "$name did not stop in 20 s, killing"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    te_log "stopped $name (pid $pid)"
  fi
  rm -f "$pidf"
}

# te_port_open PORT: true if something accepts TCP connections on 127.0.0.1:PORT.
te_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# te_wait NAME TIMEOUT_SECS CMD...: poll CMD until it succeeds; on timeout or if NAME's
# process died, print the tail of its log and fail.
te_wait() {
  local name=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  while ! "$@" >/dev/null 2>&1; do
    if ! te_running "$name"; then
      te_show_log "$name"
      te_die "$name exited before it became ready"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      te_show_log "$name"
      te_die "$name not ready after ${timeout}s"
    fi
    sleep 0.5
  done
}

# te_wait_port NAME PORT TIMEOUT_SECS
te_wait_port() { te_wait "$1" "$3" te_port_open "$2"; }

# te_write_secret SECRET KEY VALUE: write one key of a Secret in the mounted layout, mode 0600.
te_write_secret() {
  mkdir -p "$TE_SECRETS/$1"
  (umask 077 && printf '%s' "$3" >"$TE_SECRETS/$1/$2")
}

# te_random_password: 24 random alphanumerics.
te_random_password() { od -An -N18 -tx1 /dev/urandom | tr -d ' \n'; }

# te_apt_install PKG...: install Debian packages that are not yet installed.
te_apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  te_log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  if [ ! -f "$TE_CACHE/.apt-updated" ] || [ -n "$(find "$TE_CACHE/.apt-updated" -mmin +1440 2>/dev/null)" ]; then
    $sudo apt-get update -qq >&2 && touch "$TE_CACHE/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
}

# The test bridge: the node's address for its Pods (the API server, the cluster DNS, the Kafka
# listeners for Pods and the storage servers' forwarded ports are there), and the CNI bridge the
# Pods are attached to. Nothing routes from it to another network (node.sh drops forwarding).
TE_BRIDGE=kb-br0
TE_NODE_IP=10.213.0.1
TE_POD_CIDR=10.213.0.0/24
TE_NODE_NAME=kb-node

# te_bridge_up: create the bridge with TE_NODE_IP if it is not there (needs CAP_NET_ADMIN).
te_bridge_up() {
  if ! ip link show "$TE_BRIDGE" >/dev/null 2>&1; then
    ip link add "$TE_BRIDGE" type bridge || te_die "cannot create the bridge $TE_BRIDGE (root needed)"
    te_log "created bridge $TE_BRIDGE ($TE_NODE_IP)"
  fi
  ip -4 addr show dev "$TE_BRIDGE" | grep -q "inet $TE_NODE_IP/" \
    || ip addr add "$TE_NODE_IP/${TE_POD_CIDR#*/}" dev "$TE_BRIDGE"
  ip link set "$TE_BRIDGE" up
}

# te_bridge_release: delete the bridge once no service that binds to it runs.
te_bridge_release() {
  local n
  for n in k8s-apiserver kafka node-kubelet node-containerd node-coredns; do
    te_running "$n" && return 0
  done
  if ip link show "$TE_BRIDGE" >/dev/null 2>&1; then
    ip link del "$TE_BRIDGE" && te_log "deleted bridge $TE_BRIDGE"
  fi
}
