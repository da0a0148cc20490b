#!/usr/bin/env bash
# demo.sh - README's first command: install dependencies, build, and generate
# a continuation with the bundled stories260K model on the CPU backend.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
exec ./build/layerkv run --model models/stories260K/stories260K.gguf \
    --prompt "${1:-Tom and his dog}" --max-tokens "${2:-40}" --temperature 0
