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
# The system's rsyslog service is not started: the bench runs its own rsyslogd.
"$(dirname "$0")/apt-install.sh" install-rsyslog --no-service-start rsyslog rsyslog-kafka
if ! have_omkafka; then
    echo "install-rsyslog: rsyslog-kafka installed but omkafka.so not found" >&2
    exit 1
fi
echo "install-rsyslog: installed $(command -v rsyslogd) with omkafka"
