# aviary as a container step (GitHub Actions, Cloud Deploy custom target, Tekton).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/aviary /usr/local/bin/aviary
COPY examples /usr/share/aviary/examples
ENTRYPOINT ["/usr/local/bin/aviary"]
