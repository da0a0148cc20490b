#!/usr/bin/env bash
# fuzz_wire.sh LAYERKV SRCDIR - bounded libFuzzer run (20 s, LKV_FUZZ_SECONDS
# overrides) of the wire decoder; skipped (77) without clang/libFuzzer.
set -euo pipefail
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
work=$(mktemp -d /tmp/lkv-fuzz-ci.XXXXXX)
trap 'rm -rf "$work"' EXIT
set +e
bash "$src/tests/fuzz/run.sh" "${LKV_FUZZ_SECONDS:-20}" "$work"
rc=$?
set -e
if [ $rc -eq 1 ]; then
    mkdir -p /tmp/lkv-fuzz-crashes
    cp "$work"/crash-* "$work"/leak-* "$work"/timeout-* /tmp/lkv-fuzz-crashes/ 2>/dev/null || true
    echo "fuzz_wire: crash found; inputs copied to /tmp/lkv-fuzz-crashes" >&2
fi
exit $rc
