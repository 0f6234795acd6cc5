#!/usr/bin/env bash
# Install Debian's SEC (Simple Event Correlator) for `make bench`, if it is missing.
# Needs root (or passwordless sudo) and apt-get; prints every step it takes.
set -euo pipefail

if command -v sec >/dev/null 2>&1; then
    echo "install-sec: sec already installed: $(command -v sec)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-sec: apt-get not found; install SEC (https://simple-evcorr.github.io) by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-sec: not root and no passwordless sudo; run: apt-get install -y sec" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-sec: + ${SUDO:+$SUDO }apt-get update -qq"
$SUDO apt-get update -qq
echo "install-sec: + ${SUDO:+$SUDO }apt-get install -y -qq --no-install-recommends sec"
$SUDO apt-get install -y -qq --no-install-recommends sec
echo "install-sec: installed $(command -v sec)"
