# syntax=docker/dockerfile:1
# Build stage: compile the release binary with the dependency layer cached.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src bench && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > bench/ceiling.rs \
    && cargo fetch --locked
COPY src ./src
COPY bench ./bench
RUN cargo build --release --locked --bin orchestrator \
    && strip target/release/orchestrator

# Runtime stage: slim Debian with node and python3 for the local function runtime, and
# bubblewrap for its sandbox. The service runs as root inside the container so that each
# function worker can run as a user of its own (see README, Security model); run it with
# `--cap-add SYS_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined`
# for the sandbox, or `--user 10001` with functions.isolation = none / functions.backend = aws.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates nodejs python3 tini bubblewrap \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin orchestrator \
    && mkdir -p /data /jobs && chown orchestrator /data && chmod 0700 /data
COPY --from=build /src/target/release/orchestrator /usr/local/bin/orchestrator
WORKDIR /data
ENV ORCHESTRATOR_LISTEN=0.0.0.0:8080 \
    ORCHESTRATOR_DATA_DIR=/data \
    ORCHESTRATOR_JOBS_DIR=/jobs \
    ORCHESTRATOR_LOG_FORMAT=json
EXPOSE 8080
VOLUME ["/data"]
ENTRYPOINT ["/usr/bin/tini", "--", "orchestrator"]
CMD ["serve"]
