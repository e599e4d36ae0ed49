# syntax=docker/dockerfile:1.7
# One image with the three binaries: auditlog-service (default entrypoint), auditlog-archiver,
# auditlog-ops. Build:  docker build -t auditlog:0.1.0 .
# The Helm chart and infra/compose set the command of each container explicitly.

# The toolchain the project is developed and tested with. The floor is 1.89: the workspace's
# rust-version (Cargo.toml), which is also the highest rust-version among the locked crates.
ARG RUST_VERSION=1.95

# ---- build --------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS builder
# cmake + clang: aws-lc-sys (rustls' crypto provider) builds its C sources with them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and target/ between builds (BuildKit); the binaries are
# copied out of the cached target/ so they land in the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      --bin auditlog-service --bin auditlog-archiver --bin auditlog-ops \
 && mkdir -p /out \
 && cp target/release/auditlog-service target/release/auditlog-archiver target/release/auditlog-ops /out/

# ---- runtime ------------------------------------------------------------------------------
# distroless cc: glibc, libgcc, CA certificates, no shell, runs as uid/gid 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="auditlog" \
      org.opencontainers.image.description="auditlog: event/audit logging service, archiver and ops tool" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/ /usr/local/bin/
USER 65532:65532
# 8080: auditlog-service API; 9464: auditlog-archiver /healthz and /metrics (its default
# AUDIT_ARCHIVER_LISTEN_ADDR; the Helm chart and infra/compose set 9090 explicitly).
EXPOSE 8080 9464
ENTRYPOINT ["/usr/local/bin/auditlog-service"]
