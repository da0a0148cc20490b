#!/usr/bin/env bash
# install-deps.sh - install every build and test dependency of layerkv from
# Debian 12 packages. Idempotent; safe to run again. Needs root (or sudo).
#   tools/install-deps.sh          build + test dependencies
#   tools/install-deps.sh --python also the Python packages the interop tests use
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

PKGS=(
    build-essential cmake pkg-config git ca-certificates
    libopenblas-dev libcjson-dev libzmq3-dev libmsgpack-dev libcmocka-dev
    libopenmpi-dev openmpi-bin libucx-dev ucx-utils libmicrohttpd-dev
    python3 python3-zmq python3-msgpack python3-prometheus-client
    iproute2 clang libclang-rt-14-dev valgrind
    python3-matplotlib
)

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "install-deps: all Debian packages present" >&2
fi
