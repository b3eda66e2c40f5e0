# syntax=docker/dockerfile:1
# The Strata image: one `strata` binary (broker, bookie, standalone, operator, CLI) on a
# slim Debian with only the shared libraries it links. Build and push:
#
#   docker build -t registry.example.com/strata:0.1.0 --build-arg VERSION=0.1.0 .
#   docker push registry.example.com/strata:0.1.0
#
# Runs as the non-root user 10001 and needs no writable root filesystem: data lives in
# volumes (/var/lib/strata by default). The Helm chart and the operator render exactly
# this entrypoint, user and these ports (tests/helm.rs checks both against this file).
# Debian bookworm in both stages: RocksDB is Debian's librocksdb 7.8, linked, not built.

FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends librocksdb-dev libclang-dev protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# ROCKSDB_LIB_DIR for this architecture (.cargo/config.toml names x86_64's).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    ROCKSDB_LIB_DIR="/usr/lib/$(gcc -print-multiarch)" \
    cargo build --release --locked --bin strata \
    && cp target/release/strata /usr/local/bin/strata

FROM debian:bookworm-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="strata" \
      org.opencontainers.image.description="Strata: durable message streaming and queuing" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# What `ldd strata` lists (tests/helm.rs checks each library's package is named here),
# and CA certificates for S3 over HTTPS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates libbz2-1.0 libc6 libgcc-s1 libgflags2.2 liblz4-1 librocksdb7.8 \
        libsnappy1v5 libstdc++6 libzstd1 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 strata \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/strata --no-create-home \
        --shell /usr/sbin/nologin strata \
    && install -d -o 10001 -g 10001 /var/lib/strata
COPY --from=build /usr/local/bin/strata /usr/local/bin/strata
USER 10001:10001
WORKDIR /var/lib/strata
ENV STRATA_DATA_DIR=/var/lib/strata
VOLUME ["/var/lib/strata"]
# 6650 clients and admin (broker, standalone), 8080 broker/standalone/operator HTTP
# (/healthz, /readyz, /metrics), 3181 bookie, 8000 bookie HTTP.
EXPOSE 6650 8080 3181 8000
ENTRYPOINT ["strata"]
# `docker run -p 6650:6650 IMAGE` runs standalone; Kubernetes passes its own args.
CMD ["standalone", "--listen=0.0.0.0:6650", "--http-listen=0.0.0.0:8080"]
