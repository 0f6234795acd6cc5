#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium (used by tests/test_load.py to render the
# load report). Does nothing when a chromium binary is already on PATH.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
"$(dirname "$0")/apt-install.sh" install-chromium chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null 2>&1
