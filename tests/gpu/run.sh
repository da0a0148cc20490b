#!/usr/bin/env bash
# tests/gpu/run.sh - everything layerkv checks on the GPU machine, in one go
# (see docs/cuda.md and ../shared/device/README.md):
#   1. unpack the carried Debian libraries (.debs/) into a private prefix
#   2. configure with CUDA and build the GPU programs and the layerkv binary
#   3. correctness: op parity CUDA vs CPU, offload/reload exactness, NCCL
#      one-rank smoke test, stories260K greedy generation CUDA == CPU
#   4. performance, each against the hardware measured in the same run:
#      (a) decode of a Llama-2-7B-shaped bf16 model at batch 1 and 32
#      (b) mover D2H/H2D vs pinned cudaMemcpyAsync peak
#      (c) step time with layer offload vs max(compute, copy)
#      (d) baseline vs layerkv serving on the dummy 7B, capped device KV pool
# Every section is guarded: a missing piece marks its line and the rest runs.
# Writes $OUT/summary.md (markdown) and $OUT/log. Budget: < 8 minutes on an
# H100 (each section has its own timeout).
#
# Usage (from the repository root, on the GPU machine):
#   OUT=/some/dir bash tests/gpu/run.sh
# Environment: OUT (default /tmp/lkv-gpu-out), LKV_DEPS (default /tmp/deps),
# LKV_GPU_BUILD (default build-gpu), LKV_GPU_QUICK=1 (small sizes).
set -u
OUT=${OUT:-/tmp/lkv-gpu-out}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
P=${LKV_DEPS:-/tmp/deps}
BUILD=${LKV_GPU_BUILD:-$ROOT/build-gpu}
QUICK=${LKV_GPU_QUICK:-0}
T_START=$(date +%s)
NO_GPU=0

say() { echo "$@" | tee -a "$SUMMARY"; }
row() { echo "| $1 | $2 |" >> "$SUMMARY"; }
elapsed() { echo $(( $(date +%s) - T_START )); }

setup_deps() {
    local D=$P/usr/lib/x86_64-linux-gnu
    if [ -d "$ROOT/.debs" ] && ! [ -f "$P/.unpacked" ]; then
        mkdir -p "$P"
        for f in "$ROOT"/.debs/*.deb; do dpkg -x "$f" "$P"; done
        touch "$P/.unpacked"
    fi
    export LD_LIBRARY_PATH=$D:$D/openblas-pthread:$D/openmpi/lib:${LD_LIBRARY_PATH:-}
    export PKG_CONFIG_SYSROOT_DIR=$P
    export PKG_CONFIG_LIBDIR=$D/pkgconfig:$D/openblas-pthread/pkgconfig:$P/usr/share/pkgconfig:$P/stubpc
    export CMAKE_PREFIX_PATH=$P/usr
    # .pc files name -dev packages of static-link-only dependencies (krb5,
    # nettle, ...) that were not packed; shared linking never needs them, so
    # satisfy pkg-config with empty stubs
    mkdir -p "$P/stubpc"
    for _ in 1 2 3; do
        for m in $(cat $(find "$P" -name '*.pc' 2>/dev/null) 2>/dev/null |
                   grep -E '^Requires' | sed 's/^Requires[^:]*://' | tr ',' '\n' |
                   sed 's/[<>=].*//' | awk '{print $1}' | sort -u); do
            pkg-config --exists "$m" 2>/dev/null ||
                printf 'Name: %s\nDescription: stub\nVersion: 99\n' "$m" > "$P/stubpc/$m.pc"
        done
    done
    MPI_ARGS=()
    if ! command -v mpicc >/dev/null 2>&1 && [ -f "$D/openmpi/lib/libmpi.so" ]; then
        MPI_ARGS=(-DMPI_SKIP_COMPILER_WRAPPER=ON -DMPI_C_HEADER_DIR=$D/openmpi/include
                  -DMPI_C_LIB_NAMES=mpi -DMPI_mpi_LIBRARY=$D/openmpi/lib/libmpi.so)
    fi
}

# -O3 finds maybe-uninitialized & co. that -O0 CI misses; they must not stop
# a GPU run (CI enforces zero warnings; the log still shows them)
RELAXED="-Wno-error=maybe-uninitialized -Wno-error=stringop-overflow \
-Wno-error=stringop-truncation -Wno-error=format-truncation -Wno-error=array-bounds \
-Wno-error=unused-result -Wno-error=restrict"

build() {
    local gen=()
    command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
    [ -f "$BUILD/CMakeCache.txt" ] && gen=()
    cmake -S "$ROOT" -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
        -DLKV_WITH_CUDA=ON -DLKV_NATIVE=OFF -DCMAKE_CUDA_ARCHITECTURES=90 \
        "${MPI_ARGS[@]}" "-DCMAKE_C_FLAGS=$RELAXED" || return 1
    # the GPU programs first (they only need kernels + kvstore), then the
    # rest; a broken module elsewhere must not stop the kernel checks
    cmake --build "$BUILD" -j "$(nproc)" --target test_cuda_parity \
        test_cuda_offload test_nccl_smoke bench_cuda || return 1
    cmake --build "$BUILD" -j "$(nproc)" --target layerkv ||
        echo "run.sh: layerkv binary did not build; sections that need it are skipped"
    return 0
}

# run NAME TIMEOUT CMD...: one correctness check, PASS/FAIL/SKIP to summary
run_check() {
    local name=$1 limit=$2; shift 2
    local t0=$(date +%s) rc
    echo "=== $name: $*"
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    rc=$?
    cat "$OUT/$name.txt"
    case $rc in
    0) row "$name" "PASS ($(( $(date +%s) - t0 )) s)";;
    77) row "$name" "SKIP (no GPU)"; NO_GPU=1;;
    124) row "$name" "FAIL (timeout ${limit}s)";;
    *) row "$name" "FAIL (exit $rc; see $name.txt)";;
    esac
}

bench_rows() { # collect "| ... |" rows a benchmark printed
    grep '^| ' "$1" >> "$SUMMARY" || true
}

stories_greedy() {
    local bin=$BUILD/layerkv m=$ROOT/models/stories260K/stories260K.gguf
    local name="stories260K greedy cuda == cpu"
    [ -x "$bin" ] || { row "$name" "SKIP (no layerkv binary)"; return; }
    local args=(run --model "$m" --prompt "Once upon a time" --max-tokens 96 --temperature 0)
    echo "=== stories260K: layerkv ${args[*]} --backend cpu|cuda"
    timeout 120 "$bin" "${args[@]}" --backend cpu > "$OUT/stories_cpu.txt" 2> "$OUT/stories_cpu.err"
    local rc1=$?
    local v
    for v in plain offload; do
        local extra=()
        [ $v = offload ] && extra=(--offload-layers all-but-one --device-kv-blocks 64)
        timeout 120 "$bin" "${args[@]}" --backend cuda "${extra[@]}" \
            > "$OUT/stories_cuda_$v.txt" 2> "$OUT/stories_cuda_$v.err"
        local rc2=$?
        head -c 400 "$OUT/stories_cuda_$v.txt"; echo; tail -3 "$OUT/stories_cuda_$v.err"
        if [ $rc1 -ne 0 ] || [ $rc2 -ne 0 ]; then
            row "$name ($v)" "FAIL (exit cpu $rc1 / cuda $rc2; see stories_*.err)"
        elif cmp -s "$OUT/stories_cpu.txt" "$OUT/stories_cuda_$v.txt"; then
            row "$name ($v)" "PASS (96 tokens identical)"
        else
            row "$name ($v)" "FAIL (outputs differ; see stories_*.txt)"
        fi
    done
}

worker_decode() { # (a') the real worker's decode on the same model shape
    local bin=$BUILD/layerkv
    [ -x "$bin" ] || { row "(a') layerkv run dummy:llama2-7b" "SKIP (no layerkv binary)"; return; }
    local args=(run --backend cuda --model dummy:llama2-7b --prompt "hello" --max-tokens 64
                --temperature 0)
    [ "$QUICK" = 1 ] && args=(run --backend cuda --model dummy:tiny --prompt "hello" --max-tokens 32 --temperature 0)
    echo "=== (a') layerkv ${args[*]}"
    timeout 150 "$bin" "${args[@]}" > "$OUT/worker_decode.txt" 2> "$OUT/worker_decode.err"
    local rc=$?
    tail -4 "$OUT/worker_decode.err"
    if [ $rc -eq 0 ]; then
        row "(a') layerkv run --backend cuda dummy:llama2-7b, batch 1" \
            "$(grep -iE 'decode' "$OUT/worker_decode.err" | tail -1 | cut -c1-300)"
    else
        row "(a') layerkv run dummy:llama2-7b" "FAIL (exit $rc; see worker_decode.err)"
    fi
}

bench_offload_step() { # (c)
    local bin=$BUILD/layerkv
    [ -x "$bin" ] || { row "(c) offload step" "SKIP (no layerkv binary)"; return; }
    local args=(bench-overlap --backend cuda --layers 32 --dim 4096 --hidden 11008
                --heads 32 --kv-heads 32 --tokens 512 --ctx 3584 --kv-dtype f16 --reps 5)
    [ "$QUICK" = 1 ] && args=(bench-overlap --backend cuda --layers 8 --tokens 256 --ctx 1024 --reps 3)
    echo "=== (c) layerkv ${args[*]}"
    timeout 180 "$bin" "${args[@]}" > "$OUT/bench_overlap.txt" 2>&1
    local rc=$?
    cat "$OUT/bench_overlap.txt"
    if [ $rc -ne 0 ]; then
        row "(c) offload step / max(compute, copy)" "FAIL or missing (exit $rc; see bench_overlap.txt)"
    else
        row "(c) offload step (32 x 7B layers, 512 new + 3584 ctx tokens, f16 KV)" \
            "$(grep -iE 'ratio|step|compute|copy' "$OUT/bench_overlap.txt" | tr '\n' ' ' | cut -c1-400)"
    fi
}

# first option of a subcommand's --help that exists: pick BIN SUB OPT...
pick() {
    local bin=$1 sub=$2 o; shift 2
    for o in "$@"; do
        if "$bin" "$sub" --help 2>&1 | grep -q -- "$o\b"; then echo "$o"; return 0; fi
    done
    return 1
}

serving_experiment() { # (d)
    local bin=$BUILD/layerkv
    local name="(d) serving baseline vs layerkv (dummy:llama2-7b)"
    [ -x "$bin" ] || { row "$name" "SKIP (no layerkv binary)"; return; }
    if ! "$bin" serve --help > /dev/null 2>&1 || ! "$bin" bench --help > /dev/null 2>&1; then
        row "$name" "SKIP (layerkv serve/bench not available)"
        return
    fi
    # option names are looked up in --help so a renamed flag only drops
    # that flag, not the section
    local o_listen o_srv o_n o_plen o_olen o_rate o_dev o_host o_pol o_json
    o_listen=$(pick "$bin" serve --listen --bind --endpoint --frontend) || o_listen=--listen
    o_pol=$(pick "$bin" serve --policy --scheduler) || o_pol=--policy
    o_dev=$(pick "$bin" serve --device-kv-blocks) || o_dev=""
    o_host=$(pick "$bin" serve --host-kv-blocks) || o_host=""
    local o_met
    o_met=$(pick "$bin" serve --metrics-listen) || o_met=""
    o_srv=$(pick "$bin" bench --server --endpoint --connect) || o_srv=--server
    o_n=$(pick "$bin" bench --requests --n-requests --num-requests --num-prompts) || o_n=--requests
    o_plen=$(pick "$bin" bench --prompt-len --input-len) || o_plen=--prompt-len
    o_olen=$(pick "$bin" bench --output-len --max-tokens) || o_olen=--output-len
    o_rate=$(pick "$bin" bench --rate --qps --request-rate) || o_rate=--rate
    o_json=$(pick "$bin" bench --json --out --output) || o_json=""
    local pol port=5711 n=${LKV_GPU_D_REQUESTS:-32} plen=3072
    [ "$QUICK" = 1 ] && { n=12; plen=1024; }
    for pol in baseline layerkv; do
        port=$((port + 1))
        local sargs=(serve --backend cuda --model dummy:llama2-7b "$o_pol" "$pol"
                     "$o_listen" "tcp://127.0.0.1:$port")
        # a capped device KV pool: 8192 layer-blocks = 4096 tokens of all
        # 32 layers, i.e. about one long prompt plus decode room
        [ -n "$o_dev" ] && sargs+=("$o_dev" 8192)
        [ -n "$o_host" ] && sargs+=("$o_host" 32768)
        [ -n "$o_met" ] && sargs+=("$o_met" "127.0.0.1:$((port + 3000))")
        echo "=== (d) layerkv ${sargs[*]}"
        "$bin" "${sargs[@]}" > "$OUT/serve_$pol.log" 2>&1 &
        local spid=$!
        local ok=0
        for _ in $(seq 1 120); do
            sleep 1
            kill -0 $spid 2>/dev/null || break
            if timeout 5 "$bin" stats --server "tcp://127.0.0.1:$port" > /dev/null 2>&1; then ok=1; break; fi
        done
        if [ $ok = 1 ]; then
            local bargs=(bench "$o_srv" "tcp://127.0.0.1:$port" "$o_n" "$n" "$o_rate" 4
                         "$o_plen" "$plen" "$o_olen" 64)
            [ -n "$o_json" ] && bargs+=("$o_json" "$OUT/bench_$pol.json")
            echo "=== (d) layerkv ${bargs[*]}"
            timeout 150 "$bin" "${bargs[@]}" > "$OUT/bench_$pol.txt" 2>&1
            local rc=$?
            cat "$OUT/bench_$pol.txt"
            if [ $rc -eq 0 ]; then
                row "(d) $pol: $n requests, prompt $plen, output 64, 8192 device layer-blocks" \
                    "$(grep -iE 'ttft|tpot|throughput|tok/s' "$OUT/bench_$pol.txt" | tr '\n' ' ' | cut -c1-400)"
            else
                row "(d) $pol" "FAIL (bench exit $rc; see bench_$pol.txt)"
            fi
        else
            row "(d) $pol" "FAIL (server did not come up; see serve_$pol.log)"
            tail -5 "$OUT/serve_$pol.log"
        fi
        kill $spid 2>/dev/null; wait $spid 2>/dev/null
    done
}

main() {
    echo "# layerkv GPU run" > "$SUMMARY"
    say ""
    say "date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
    say "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'nvidia-smi not available')"
    say ""
    echo "| check | result |" >> "$SUMMARY"
    echo "|---|---|" >> "$SUMMARY"
    setup_deps
    if ! build; then
        row "build" "FAIL (see log)"
        return 1
    fi
    row "build" "ok ($(elapsed) s since start)"
    local G=$BUILD/tests/gpu
    run_check parity 240 "$G/test_cuda_parity"
    run_check offload_exactness 120 "$G/test_cuda_offload"
    run_check nccl_smoke 120 "$G/test_nccl_smoke"
    if [ $NO_GPU = 1 ]; then
        row "everything else" "SKIP (no usable GPU on this machine)"
        say ""
        say "total $(elapsed) s"
        return 0
    fi
    stories_greedy
    say ""
    echo "| benchmark | result |" >> "$SUMMARY"
    echo "|---|---|" >> "$SUMMARY"
    local bq=()
    [ "$QUICK" = 1 ] && bq=(--quick)
    echo "=== (a)+(b) bench_cuda all 1 32 ${bq[*]}"
    timeout 240 "$G/bench_cuda" all 1 32 "${bq[@]}" > "$OUT/bench_cuda.txt" 2>&1
    local rc=$?
    cat "$OUT/bench_cuda.txt"
    bench_rows "$OUT/bench_cuda.txt"
    case $rc in
    0) ;;
    77) row "bench_cuda" "SKIP (no GPU)";;
    *) row "bench_cuda" "FAIL (exit $rc; see bench_cuda.txt)";;
    esac
    worker_decode
    bench_offload_step
    serving_experiment
    say ""
    say "total $(elapsed) s"
}

set -o pipefail
main 2>&1 | tee "$OUT/log"
