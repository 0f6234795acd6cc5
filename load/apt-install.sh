#!/usr/bin/env bash
# Install Debian packages with apt-get, as root or with passwordless sudo, printing every
# step: `apt-install.sh TAG [--no-service-start] PACKAGE...`. TAG prefixes the messages.
# --no-service-start keeps apt from starting the packages' system services (policy-rc.d).
# Shared by the install-*.sh scripts of the benchmarks and tests.
set -euo pipefail

tag=$1
shift
no_start=0
if [ "${1:-}" = "--no-service-start" ]; then
    no_start=1
    shift
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "$tag: apt-get not found; install $* by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "$tag: not root and no passwordless sudo; run: apt-get install -y $*" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
echo "$tag: + ${SUDO:+$SUDO }apt-get update -qq"
$SUDO apt-get update -qq
POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=0
if [ "$no_start" -eq 1 ] && [ ! -e "$POLICY" ]; then
    # policy-rc.d exiting 101: do not start services while installing.
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod +x "$POLICY"
    CREATED_POLICY=1
fi
trap '[ "$CREATED_POLICY" -eq 1 ] && $SUDO rm -f "$POLICY"' EXIT
echo "$tag: + ${SUDO:+$SUDO }apt-get install -y -qq --no-install-recommends $*"
$SUDO apt-get install -y -qq --no-install-recommends "$@"
