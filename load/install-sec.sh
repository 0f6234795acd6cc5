#!/usr/bin/env bash
# Install Debian's SEC (Simple Event Correlator) for `make bench`, if it is missing.
# Needs root (or passwordless sudo) and apt-get; prints every step it takes.
set -euo pipefail

if command -v sec >/dev/null 2>&1; then
    echo "install-sec: sec already installed: $(command -v sec)"
    exit 0
fi
"$(dirname "$0")/apt-install.sh" install-sec sec
echo "install-sec: installed $(command -v sec)"
