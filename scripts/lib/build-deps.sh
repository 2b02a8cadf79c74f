# Build dependencies of the Rust workspace: the bundled librdkafka is compiled with CMake against
# the system's OpenSSL, Cyrus SASL (GSSAPI), zstd, zlib and libcurl (OAUTHBEARER/OIDC).
# Sourced by scripts/test and scripts/quickstart after scripts/lib/common.sh.

kb_build_deps() {
  te_apt_install build-essential cmake pkg-config libssl-dev libsasl2-dev libzstd-dev zlib1g-dev \
    libcurl4-openssl-dev python3 kcat
  command -v cargo >/dev/null 2>&1 || te_die "cargo not found: install Rust with rustup (https://rustup.rs) first"
}
