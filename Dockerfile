# aviary as a container step: one image for GitHub Actions (run as root, WORKDIR ignored, the
# workspace mounted at /github/workspace), Cloud Deploy custom targets (Cloud Build) and the
# Tekton Task (run as 65532 through its securityContext). Nothing in it needs a particular user or
# working directory: the binary is static and writes only where it is told (reports, results).
#
# This file is for registries (the release workflow builds it for linux/amd64 and linux/arm64).
# `scripts/image` builds the same image on a machine without a Docker engine (buildah); both
# assemble the root filesystem with scripts/rootfs, so both hold the same files.

# --- build: a static release binary, without the sandbox ------------------------------------
# glibc with `crt-static` and a non-PIE executable (`ldd`: "not a dynamic executable"); the
# image has no libc. `--no-default-features` leaves out the `sandbox` feature (the API
# emulator, the embedded Prometheus, the traffic split and the demo app). The `step` profile
# (Cargo.toml) is the release profile built for size.
#
# The build runs on the builder's own platform and cross-compiles for the image's (TARGETARCH):
# an arm64 image is built by a cross linker, not by a compiler under QEMU.
FROM --platform=$BUILDPLATFORM rust:1-bookworm AS build
ARG TARGETARCH=amd64
RUN case "$TARGETARCH" in \
      amd64) triple=x86_64-unknown-linux-gnu; pkgs="gcc-x86-64-linux-gnu libc6-dev-amd64-cross"; cc=x86_64-linux-gnu-gcc ;; \
      arm64) triple=aarch64-unknown-linux-gnu; pkgs="gcc-aarch64-linux-gnu libc6-dev-arm64-cross"; cc=aarch64-linux-gnu-gcc ;; \
      *) echo "no build for TARGETARCH=$TARGETARCH (amd64 or arm64)" >&2; exit 1 ;; \
    esac \
 && if [ "$triple" != "$(rustc -vV | sed -n 's/^host: //p')" ]; then \
      apt-get update && apt-get install -y --no-install-recommends $pkgs && rustup target add "$triple"; \
    else cc=gcc; fi \
 && printf '%s\n%s\n' "$triple" "$cc" > /target
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY benches ./benches
COPY tests ./tests
RUN triple="$(sed -n 1p /target)" cc="$(sed -n 2p /target)" \
 && env_triple="$(echo "$triple" | tr 'a-z-' 'A-Z_')" \
 && export "CARGO_TARGET_${env_triple}_LINKER=$cc" "CC_$(echo "$triple" | tr - _)=$cc" \
 && RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
    cargo build --profile step --locked --no-default-features --target "$triple" --bin aviary \
 && cp "target/$triple/step/aviary" /aviary \
 && if readelf --program-headers /aviary | grep -Eq 'INTERP|DYNAMIC'; then echo "/aviary is dynamic" >&2; exit 1; fi

# --- kustomize, pinned by version ----------------------------------------------------------
# The archive is checked against the release's checksums.txt. To pin the bytes as well, pass
# --build-arg KUSTOMIZE_SHA256=<sum> (the build then also checks it).
FROM --platform=$BUILDPLATFORM debian:bookworm-slim AS kustomize
ARG KUSTOMIZE_VERSION=5.4.3
ARG KUSTOMIZE_SHA256=
ARG TARGETARCH=amd64
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && base="https://github.com/kubernetes-sigs/kustomize/releases/download/kustomize%2Fv${KUSTOMIZE_VERSION}" \
 && file="kustomize_v${KUSTOMIZE_VERSION}_linux_${TARGETARCH}.tar.gz" \
 && cd /tmp && curl -fsSLO "$base/$file" && curl -fsSLO "$base/checksums.txt" \
 && grep " $file\$" checksums.txt | sha256sum -c - \
 && if [ -n "$KUSTOMIZE_SHA256" ]; then echo "$KUSTOMIZE_SHA256  $file" | sha256sum -c -; fi \
 && tar -xzf "$file" -C /usr/local/bin kustomize

# --- the root filesystem, by the script scripts/image uses too ------------------------------
FROM --platform=$BUILDPLATFORM debian:bookworm-slim AS rootfs
COPY --from=build /aviary /aviary
COPY --from=kustomize /usr/local/bin/kustomize /kustomize
COPY --from=kustomize /etc/ssl/certs/ca-certificates.crt /ca-certificates.crt
COPY scripts/rootfs /rootfs.sh
COPY examples /examples
RUN sh /rootfs.sh /rootfs /aviary /kustomize /ca-certificates.crt /examples

# --- the image: static binaries and CA roots, no shell, no libc -----------------------------
FROM scratch
COPY --from=rootfs /rootfs/ /
ENV PATH=/usr/local/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
ENTRYPOINT ["/usr/local/bin/aviary"]
