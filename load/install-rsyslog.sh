#!/usr/bin/env bash
# Install Debian's rsyslog and its Kafka output (rsyslog-kafka: omkafka) for
# `make bench-ingest`, if they are missing. Needs root (or passwordless sudo) and apt-get;
# prints every step it takes. Exit 0: both present; 1: could not install them.
set -euo pipefail

have_omkafka() {
    local dir
    for dir in /usr/lib/*/rsyslog /usr/lib/rsyslog /usr/lib64/rsyslog; do
        [ -f "$dir/omkafka.so" ] && return 0
    done
    return 1
}

if command -v rsyslogd >/dev/null 2>&1 && have_omkafka; then
    echo "install-rsyslog: rsyslogd and omkafka already installed: $(command -v rsyslogd)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-rsyslog: apt-get not found; install rsyslog and rsyslog-kafka by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-rsyslog: not root and no passwordless sudo; run: apt-get install -y rsyslog rsyslog-kafka" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-rsyslog: + ${SUDO:+$SUDO }apt-get update -qq"
$SUDO apt-get update -qq
# policy-rc.d 101: do not start the system's rsyslog service while installing it.
POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod +x "$POLICY"
    CREATED_POLICY=1
fi
trap '[ "$CREATED_POLICY" -eq 1 ] && $SUDO rm -f "$POLICY"' EXIT
echo "install-rsyslog: + ${SUDO:+$SUDO }apt-get install -y -qq --no-install-recommends rsyslog rsyslog-kafka"
$SUDO apt-get install -y -qq --no-install-recommends rsyslog rsyslog-kafka
if ! have_omkafka; then
    echo "install-rsyslog: rsyslog-kafka installed but omkafka.so not found" >&2
    exit 1
fi
echo "install-rsyslog: installed $(command -v rsyslogd) with omkafka"
