# The tunnelwatch image: every command of the CLI (`docker run tunnelwatch <command> ...`).
# docker-compose.yml runs the receiver and the worker from it.
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
# The pinned, hash-checked versions of `make lock` (every one has a manylinux wheel: no
# compiler needed), then the project itself without resolving anything again. The native
# extension (native/, Rust) is not built here: the image runs the Python paths.
RUN pip install --require-hashes -r requirements.lock \
    && pip install --no-deps --no-build-isolation . \
    && useradd --system --uid 10001 --home-dir /data tunnelwatch \
    && mkdir -p /data \
    && chown tunnelwatch /data

USER tunnelwatch
WORKDIR /data
# Syslog (UDP and TCP) and the receiver's Prometheus metrics.
EXPOSE 5514/udp 5514/tcp 9514/tcp
ENTRYPOINT ["tunnelwatch"]
CMD ["--help"]
