#!/usr/bin/env bash
# Installs Debian's Prometheus Alertmanager (prometheus-alertmanager) for the notifier's
# tests (tests/test_notify.py start their own on a free 127.0.0.1 port). Its system service
# is not started: the tests run it themselves. Does nothing when the binary is there.
set -euo pipefail
if command -v prometheus-alertmanager >/dev/null 2>&1; then
    exit 0
fi
"$(dirname "$0")/apt-install.sh" install-alertmanager --no-service-start prometheus-alertmanager >/dev/null
command -v prometheus-alertmanager >/dev/null 2>&1
