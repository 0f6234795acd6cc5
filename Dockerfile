# The tunnelwatch image: every command of the CLI (`docker run tunnelwatch <command> ...`).
# docker-compose.yml runs the receiver and the worker from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY load ./load
COPY schemas ./schemas
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /data tunnelwatch \
    && mkdir -p /data \
    && chown tunnelwatch /data

USER tunnelwatch
WORKDIR /data
# Syslog (UDP and TCP) and the receiver's Prometheus metrics.
EXPOSE 5514/udp 5514/tcp 9514/tcp
ENTRYPOINT ["tunnelwatch"]
CMD ["--help"]
