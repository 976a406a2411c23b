# syntax=docker/dockerfile:1
#
# orchestrator: the service, and the interpreters its local function runtime runs handlers on.
#
#   docker build -t orchestrator .
#
# Stages: chef (Rust + cargo-chef), planner (the dependency recipe), builder (dependencies, then
# the binary), node (Node.js from nodejs.org, checked), runtime (what ships).

# Node.js major 22 (runtime nodejs22.x); any 22.x release from nodejs.org/dist works here.
ARG NODE_VERSION=22.23.2
ARG CARGO_CHEF_VERSION=0.1.77

# --- Rust toolchain with cargo-chef ------------------------------------------------------------
FROM rust:1-slim-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

# --- The recipe: manifests and target layout only, so it changes only when they do --------------
FROM chef AS planner
# Everything cargo needs to read the manifest: the [[example]] bench_ceiling points into bench/.
# (There is no build.rs; tests/ and examples/ are not needed for the binary.)
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY bench ./bench
RUN cargo chef prepare --recipe-path recipe.json

# --- Dependencies (cached layer), then the binary ----------------------------------------------
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Compiles every dependency of the orchestrator binary with the same profile, target and features
# as the build below. This layer is reused until Cargo.toml or Cargo.lock change.
RUN cargo chef cook --release --locked --bin orchestrator --recipe-path recipe.json
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY bench ./bench
RUN cargo build --release --locked --bin orchestrator \
    && strip target/release/orchestrator \
    && ./target/release/orchestrator --version

# --- Node.js ------------------------------------------------------------------------------------
# The official binary tarball from nodejs.org, checked against the release's SHASUMS256.txt.
# Chosen over NodeSource's apt repository: one exact, pinned release (NODE_VERSION), no third-party
# apt source or signing key in the image, and only the `node` binary is kept (no npm: functions
# bring their node_modules in their zip, as on Lambda). The checksum catches a truncated or
# mismatched download; the download itself is authenticated by TLS to nodejs.org.
FROM debian:bookworm-slim AS node
ARG NODE_VERSION
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Unpinned Debian packages (hadolint DL3008): the suite's current ones, security fixes included.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl xz-utils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /tmp/node
RUN case "$(dpkg --print-architecture)" in \
      amd64) arch=x64 ;; \
      arm64) arch=arm64 ;; \
      *) echo "no Node.js binary for $(dpkg --print-architecture) here" >&2; exit 1 ;; \
    esac \
    && tarball="node-v${NODE_VERSION}-linux-${arch}.tar.xz" \
    && curl -fsSLO "https://nodejs.org/dist/v${NODE_VERSION}/${tarball}" \
    && curl -fsSLO "https://nodejs.org/dist/v${NODE_VERSION}/SHASUMS256.txt" \
    && grep " ${tarball}\$" SHASUMS256.txt > expected.sha256 \
    && test "$(wc -l < expected.sha256)" = 1 \
    && sha256sum --check --strict expected.sha256 \
    && mkdir -p /opt/node \
    && tar -xJf "${tarball}" -C /opt/node --strip-components=1 --no-same-owner \
    && /opt/node/bin/node --version | grep -qx "v${NODE_VERSION}" \
    && rm -rf /tmp/node

# --- Runtime ------------------------------------------------------------------------------------
# Debian bookworm-slim carrying the official CPython 3.12 build: the python:3.12-slim-bookworm
# image is debian:bookworm-slim plus Python in /usr/local, together with the shared libraries it
# links (libssl, libsqlite3, libffi, ...) installed from Debian and the loader cache updated, so
# building on it keeps Python whole where copying /usr/local out of it would leave those behind.
# Bookworm's own python3 is 3.11 (runtime python3.11 only) and is not installed.
FROM python:3.12-slim-bookworm AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# curl: the README's bash `bootstrap` (provided.al2023) talks to the Runtime API with it, and the
#   HEALTHCHECK uses it. tini: PID 1 (signals, reaping). bubblewrap: the function sandbox; its
#   other half, setpriv, is in util-linux, which every Debian image has (Essential).
# libstdc++6: Node.js links it (already present; named so that it stays).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl tini bubblewrap libstdc++6 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=node /opt/node/bin/node /usr/local/bin/node
COPY --from=node /opt/node/LICENSE /usr/local/share/doc/node/LICENSE
# The service finds interpreters by name on PATH at start (node, nodejs, node24..node18, python3,
# python3.13..python3.9). All of them are in /usr/local/bin, which the function sandbox shows to
# workers (it shows /usr, /bin, /sbin, /lib, /lib64 and /opt). The checks fail the build if a
# name resolves elsewhere or an interpreter is not the version its runtime names.
RUN groupadd --system --gid 10001 orchestrator \
    && useradd --system --uid 10001 --gid orchestrator --home-dir /data --shell /usr/sbin/nologin orchestrator \
    && mkdir -p /data /jobs \
    && chown orchestrator:orchestrator /data && chmod 0700 /data \
    && ldconfig \
    && test "$(command -v node)" = /usr/local/bin/node \
    && test "$(command -v python3)" = /usr/local/bin/python3 \
    && test "$(command -v python3.12)" = /usr/local/bin/python3.12 \
    && node --version | grep -q '^v22\.' \
    && python3 -c 'import sys, ssl, sqlite3, ctypes, zlib, json; assert sys.version_info[:2] == (3, 12), sys.version' \
    && bwrap --version && setpriv --version && tini --version && curl --version > /dev/null
COPY --from=builder /src/target/release/orchestrator /usr/local/bin/orchestrator

# Settings by their environment names (README, Configuration). 0.0.0.0 is not loopback: the
# service refuses to start there without tokens, so pass ORCHESTRATOR_API_TOKENS (or, knowingly,
# ORCHESTRATOR_ALLOW_ANONYMOUS=true).
ENV ORCHESTRATOR_LISTEN=0.0.0.0:8080 \
    ORCHESTRATOR_DATA_DIR=/data \
    ORCHESTRATOR_JOBS_DIR=/jobs \
    ORCHESTRATOR_LOG_FORMAT=json
WORKDIR /data
EXPOSE 8080
VOLUME ["/data"]

# Runs as the unprivileged user orchestrator (uid 10001; numeric, so that Kubernetes'
# runAsNonRoot can check it). The function sandbox runs each worker as a user id of its own
# under bubblewrap, which needs the service to be root with what Docker withholds by default:
#   docker run --user 0 --cap-add SYS_ADMIN \
#     --security-opt seccomp=unconfined --security-opt apparmor=unconfined ...
# As uid 10001 the sandbox is unavailable: with the default functions.isolation = auto the
# service warns at start and runs functions as plain child processes (/health says
# "isolation": "none"). Say so explicitly with ORCHESTRATOR_FUNCTIONS_ISOLATION=none (trusted code
# only), make it refuse instead with ORCHESTRATOR_FUNCTIONS_ISOLATION=sandbox, or run functions on
# AWS Lambda (ORCHESTRATOR_FUNCTIONS_BACKEND=aws).
USER 10001:10001

# /health answers 200 while the process serves (it needs no token). It probes port 8080: change
# it with the listen address.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "--max-time", "4", "http://127.0.0.1:8080/health"]

ENTRYPOINT ["/usr/bin/tini", "--", "orchestrator"]
CMD ["serve"]
