# The tunnelwatch image: every command of the CLI (`docker run tunnelwatch <command> ...`).
# docker-compose.yml runs the receiver and the worker from it.

# Stage 1: the native extension (native/, Rust: the scanner of `analyze` and of the
# worker's batch path, the receiver's fast path) built as a wheel. The same pinned,
# hash-checked maturin as `make install`; Rust from rustup, the version pinned below.
FROM python:3.11-slim AS native

ARG RUST_VERSION=1.95.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CARGO_HOME=/opt/cargo \
    RUSTUP_HOME=/opt/rustup \
    PATH=/opt/cargo/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
       | sh -s -- -y --no-modify-path --profile minimal --default-toolchain "$RUST_VERSION"

WORKDIR /build
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY native ./native
RUN rm -rf native/target \
    && pip wheel --no-deps --no-build-isolation --wheel-dir /wheels ./native

# Stage 2: the image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md requirements.lock ./
COPY streams ./streams
COPY load ./load
COPY schemas ./schemas
COPY --from=native /wheels /wheels
# The pinned, hash-checked versions of `make lock` (every one has a manylinux wheel: no
# compiler needed), then the project itself and its native extension (stage 1) without
# resolving anything again. `tunnelwatch worker` logs which parse path it runs.
RUN pip install --require-hashes -r requirements.lock \
    && pip install --no-deps --no-build-isolation . \
    && pip install --no-deps /wheels/*.whl \
    && rm -rf /wheels \
    && python -c "import tunnelwatch_native" \
    && useradd --system --uid 10001 --home-dir /data tunnelwatch \
    && mkdir -p /data \
    && chown tunnelwatch /data

USER tunnelwatch
WORKDIR /data
# Syslog (UDP and TCP) and the receiver's Prometheus metrics.
EXPOSE 5514/udp 5514/tcp 9514/tcp
ENTRYPOINT ["tunnelwatch"]
CMD ["--help"]
