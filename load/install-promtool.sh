#!/usr/bin/env bash
# Installs promtool (Debian's `prometheus` package) for the tests that check the alerting
# rules (monitoring/) and every /metrics output. The Prometheus service is not started.
# Does nothing when promtool is already on PATH.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
    exit 0
fi
"$(dirname "$0")/apt-install.sh" install-promtool --no-service-start prometheus >/dev/null
command -v promtool >/dev/null 2>&1
