# The image of the operator and of its Job pods: one binary, `kafka-backup`.
#   docker build -t ghcr.io/kafka-backup/kafka-backup:0.1.0 .
# Runs as uid 65532 with a read-only root file system (the chart and the Jobs mount /tmp).
FROM rust:1.89-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config libssl-dev \
      libsasl2-dev libzstd-dev zlib1g-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kafka-backup-cli \
 && install -m 0755 target/release/kafka-backup /usr/local/bin/kafka-backup

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libsasl2-2 \
      libsasl2-modules libsasl2-modules-gssapi-mit krb5-user libzstd1 zlib1g libcurl4 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/kafka-backup /usr/local/bin/kafka-backup
USER 65532:65532
ENTRYPOINT ["kafka-backup"]
