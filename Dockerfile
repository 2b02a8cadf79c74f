# The image of the operator and of its Job pods: one binary, `kafka-backup`.
#
#   docker build -t ghcr.io/kafka-backup/kafka-backup:0.1.0 .     release: built from source here
#   scripts/image                                                  a binary built on the host
#
# The default target (`release`) compiles the binary in the Rust toolchain image. The `prebuilt`
# target takes a `kafka-backup` binary from the build context instead, compiled on a Debian
# bookworm host (the runtime's release, so its shared libraries match); scripts/image uses it where
# the toolchain image cannot be pulled. Both end in the same runtime stage.
#
# Runs as uid 65532 with a read-only root file system (the chart and the Jobs mount /tmp).
FROM rust:1.89-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config libssl-dev \
      libsasl2-dev libzstd-dev zlib1g-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Symbols stay (a panic names its functions); the line tables of the release profile do not.
RUN cargo build --release --locked -p kafka-backup-cli \
 && strip --strip-debug target/release/kafka-backup \
 && install -m 0755 target/release/kafka-backup /usr/local/bin/kafka-backup

# What the worker needs at run time: the CA bundle (S3, Azure, GCS and token endpoints over TLS),
# the shared libraries of the bundled librdkafka (OpenSSL, Cyrus SASL with its SCRAM, PLAIN and
# GSSAPI plugins, zstd, zlib, libcurl for OIDC) and `kinit` for GSSAPI.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
      libssl3 libsasl2-2 libsasl2-modules libsasl2-modules-gssapi-mit krb5-user libzstd1 zlib1g \
      libcurl4 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
 && mkdir -p /etc/kafka-backup-krb5
# Kerberos reads every file of this list that exists: a krb5.conf from a ConfigMap or Secret
# mounted at /etc/kafka-backup-krb5 comes first, the image's /etc/krb5.conf after it.
ENV KRB5_CONFIG=/etc/kafka-backup-krb5/krb5.conf:/etc/krb5.conf
USER 65532:65532
ENTRYPOINT ["kafka-backup"]

FROM runtime AS prebuilt
COPY kafka-backup /usr/local/bin/kafka-backup

FROM runtime AS release
COPY --from=build /usr/local/bin/kafka-backup /usr/local/bin/kafka-backup
