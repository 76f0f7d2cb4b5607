# syntax=docker/dockerfile:1
# Runway container image (BuildKit, the default builder of Docker 23+ and of `docker buildx`).
#
#   docker build -t runway:dev .
#   docker run --rm runway:dev --version
#   docker run --rm -p 8443:8443 -p 9901:9901 \
#     -e RUNWAY__ADMIN__LISTEN=0.0.0.0:9901 \
#     -v "$PWD/runway:/etc/runway:ro" runway:dev
#
# The runtime image holds the binary and nothing else: no shell, no package manager, no curl. It runs as the
# distroless `nonroot` user (uid/gid 65532) and reads its configuration from /etc/runway/runway.toml (mount
# it; every key can also be overridden with RUNWAY__SECTION__KEY environment variables). Kubernetes
# manifests: deploy/kubernetes/.

# ---------------------------------------------------------------------------------------------------------
# Builder: the official Rust image on Debian 12, the same Debian release (and glibc) as the runtime image.
# ---------------------------------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src

# The build context is Cargo.toml, Cargo.lock, src/ and benches/ (.dockerignore). Cargo.toml declares its
# benches by name, so cargo refuses the manifest unless every benches/<name>.rs exists: the real files are
# copied rather than placeholders, which drifted from the manifest once already. Dependencies are kept
# between builds in BuildKit cache mounts (the registry and target/), so a change to src/ recompiles only
# Runway; the binary is copied out of the cache mount, which is not part of the layer.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/runway /usr/local/bin/runway \
    && /usr/local/bin/runway --version

# ---------------------------------------------------------------------------------------------------------
# Runtime: distroless "cc" (glibc, libgcc, CA certificates, tzdata, /etc/passwd with `nonroot`). Runway is
# not a static binary (glibc; aws-lc is linked in), so the "static" image would not do. The system CA
# certificates are what verifies the identity providers' discovery and JWKS endpoints.
# ---------------------------------------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime

LABEL org.opencontainers.image.title="runway" \
      org.opencontainers.image.description="Identity-aware reverse proxy in front of Kong" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /usr/local/bin/runway /usr/local/bin/runway

# The distroless `nonroot` user and group (nonroot:nonroot), written numerically: with a user name here, a
# Kubernetes pod with runAsNonRoot but no runAsUser is refused ("image has non-numeric user, cannot verify
# user is non-root"), since the kubelet cannot look names up in the image.
USER 65532:65532

# 8443: the TLS listener ([server] listen). 9901: the admin listener (/healthz, /readyz, /metrics). The admin
# listener binds 127.0.0.1:9901 by default, which is unreachable from outside the container: set
# RUNWAY__ADMIN__LISTEN=0.0.0.0:9901 (or [admin] listen) where probes or Prometheus must reach it. It is
# plain, unauthenticated HTTP: never publish it beyond the pod or host network.
EXPOSE 8443 9901

# No HEALTHCHECK: a Docker HEALTHCHECK runs a command inside the container, and this image has no shell and
# no HTTP client, and runway has no self-check subcommand yet. Health is checked from outside: Kubernetes
# liveness (GET /healthz) and readiness (GET /readyz) probes on the admin port (deploy/kubernetes/), or any
# external monitor of those URLs. `HEALTHCHECK NONE` also disables a check inherited from a base image.
HEALTHCHECK NONE

ENTRYPOINT ["/usr/local/bin/runway"]
CMD ["serve", "-c", "/etc/runway/runway.toml"]
