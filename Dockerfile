# aviary as a container step: one image for GitHub Actions (run as root, WORKDIR ignored, the
# workspace mounted at /github/workspace), Cloud Deploy custom targets (Cloud Build) and the
# Tekton Task (run as 65532 through its securityContext). Nothing in it needs a particular user or
# working directory: the binary is static and writes only where it is told (reports, results).
#
# Size target: under 40 MB uncompressed (a ~20 MB static binary, kustomize ~15 MB, CA roots).

# --- build: a static (musl) release binary, without the sandbox --------------------------------
# `--no-default-features` leaves out the `sandbox` feature (the API emulator, the embedded
# Prometheus, the traffic split and the demo app): a pipeline step needs none of it. The `step`
# profile (Cargo.toml) is the release profile built for size.
FROM rust:1-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
RUN cargo build --profile step --locked --no-default-features --target x86_64-unknown-linux-musl --bin aviary \
 && cp target/x86_64-unknown-linux-musl/step/aviary /aviary

# --- kustomize, pinned by version ----------------------------------------------------------
# The archive is checked against the release's checksums.txt. To pin the bytes as well, pass
# --build-arg KUSTOMIZE_SHA256=<sum> (the build then also checks it).
FROM debian:bookworm-slim AS kustomize
ARG KUSTOMIZE_VERSION=5.4.3
ARG KUSTOMIZE_SHA256=
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && base="https://github.com/kubernetes-sigs/kustomize/releases/download/kustomize%2Fv${KUSTOMIZE_VERSION}" \
 && file="kustomize_v${KUSTOMIZE_VERSION}_linux_amd64.tar.gz" \
 && cd /tmp && curl -fsSLO "$base/$file" && curl -fsSLO "$base/checksums.txt" \
 && grep " $file\$" checksums.txt | sha256sum -c - \
 && if [ -n "$KUSTOMIZE_SHA256" ]; then echo "$KUSTOMIZE_SHA256  $file" | sha256sum -c -; fi \
 && tar -xzf "$file" -C /usr/local/bin kustomize

# --- the image: static binaries and CA roots, no shell needed ------------------------------
FROM gcr.io/distroless/static-debian12
COPY --from=build /aviary /usr/local/bin/aviary
COPY --from=kustomize /usr/local/bin/kustomize /usr/local/bin/kustomize
COPY examples /usr/share/aviary/examples
ENV PATH=/usr/local/bin:/usr/bin:/bin
ENTRYPOINT ["/usr/local/bin/aviary"]
