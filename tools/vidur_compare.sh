#!/bin/bash
# vidur_compare.sh - run Vidur's vLLM scheduler (PyPI `vidur`, 0.0.26 here)
# and `layerkv sim --policy baseline` on the same requests: the first 2000
# Azure-conversation requests (arrival times x2, prompts cut so prompt +
# output <= 4096, data/vidur/traces/azure-conv-2000-cut4096.csv),
# CodeLlama-34B at TP2 on A100 (the head shape of the one attention profile
# we have), batch cap 128, 4096 batch tokens, block 16, Vidur's own
# num_blocks (77056). Writes docs/results/data/vidur_compare.json.
#
# usage: tools/vidur_compare.sh LAYERKV_BINARY [VIDUR_PYTHON]
#   VIDUR_PYTHON: a python with `pip install vidur` (default: python3).
# PyPI vidur fetches profiles from HuggingFace, which is unreachable here;
# tools/vidur_run.py points it at ../shared/data/vidur instead (the same
# profiles our cost model uses) and needs HF_HUB_OFFLINE=1.
# Runtime: ~6 minutes (Vidur trains its random forests on 2 cores).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$1"; PY="${2:-python3}"
SHARED="${LKV_VIDUR_DATA:-$ROOT/../shared/data/vidur}"
W="$(mktemp -d)"
trap 'rm -rf "$W"' EXIT
TRACE="$ROOT/data/vidur/traces/azure-conv-2000-cut4096.csv"
python3 - "$TRACE" "$W/trace_v.csv" <<'PY'
import csv, sys
with open(sys.argv[2], 'w') as f:
    f.write('Date,Time,PromptTokenCount,CompletionTokenCount\n')
    for r in csv.DictReader(open(sys.argv[1])):
        f.write('2023-11-16,%s,%s,%s\n' % (r['arrived_at'], r['num_prefill_tokens'], r['num_decode_tokens']))
PY
ln -s "$SHARED/data" "$W/data"
cp "$ROOT/tools/vidur_run.py" "$W/"
( cd "$W" && HF_HUB_OFFLINE=1 WANDB_MODE=disabled LKV_VIDUR_PROFILES="$SHARED/data/profiling" \
  "$PY" vidur_run.py --seed 42 \
  --replica_config_model_name codellama/CodeLlama-34b-Instruct-hf --replica_config_device a100 \
  --replica_config_network_device a100_dgx --replica_config_tensor_parallel_size 2 \
  --replica_config_num_pipeline_stages 1 --cluster_config_num_replicas 1 \
  --replica_scheduler_config_type vllm --vllm_scheduler_config_batch_size_cap 128 \
  --cache_config_block_size 16 --cache_config_watermark_blocks_fraction 0.01 \
  --vllm_scheduler_config_max_tokens_in_batch 4096 \
  --request_generator_config_type trace_replay --trace_request_generator_config_trace_file ./trace_v.csv \
  --trace_request_generator_config_date 2023-11-16 --trace_request_generator_config_prefill_scale_factor 1 \
  --trace_request_generator_config_decode_scale_factor 1 --trace_request_generator_config_max_tokens 4096 \
  --trace_request_generator_config_time_scale_factor 2.0 \
  --execution_time_predictor_config_type random_forrest \
  --random_forrest_execution_time_predictor_config_num_estimators 50 \
  --random_forrest_execution_time_predictor_config_max_depth 16 \
  --random_forrest_execution_time_predictor_config_min_samples_split 2 \
  --random_forrest_execution_time_predictor_config_k_fold_cv_splits 2 \
  --random_forrest_execution_time_predictor_config_num_training_job_threads 1 \
  --random_forrest_execution_time_predictor_config_prediction_max_tokens_per_request 4096 \
  --random_forrest_execution_time_predictor_config_kv_cache_prediction_granularity 64 \
  --metrics_config_output_dir "$W/out" --no-metrics_config_store_plots \
  --no-metrics_config_enable_chrome_trace > "$W/vidur.log" 2>&1 ) || { tail -20 "$W/vidur.log"; exit 1; }
"$BIN" sim --model codellama-34b --gpu a100 --tp 2 --policy baseline --trace "$TRACE" --rate 0 \
    --time-scale 2 --n-requests 2000 --num-blocks 77056 --max-batch 128 --max-batch-tokens 4096 \
    --quiet --out "$W/ours.json"
python3 - "$W" "$TRACE" "$ROOT/docs/results/data/vidur_compare.json" <<'PY'
import csv, glob, json, statistics as st, sys
W, trace, out = sys.argv[1:4]
rm = glob.glob(W + '/out/*/request_metrics.csv')[0]
rows = list(csv.DictReader(open(rm)))
arr = [float(r['arrived_at']) * 2 for r in csv.DictReader(open(trace))]
end = max(arr[int(r['Request Id'])] + float(r['request_e2e_time']) for r in rows)
dec = sum(float(r['request_num_decode_tokens']) for r in rows)
tp = [(float(r['request_e2e_time']) - float(r['prefill_e2e_time'])) /
      (float(r['request_num_decode_tokens']) - 1)
      for r in rows if float(r['request_num_decode_tokens']) > 1]
vid = {'mean_ttft_s': st.mean(float(r['prefill_e2e_time']) for r in rows),
       'mean_tpot_s': st.mean(tp),
       'mean_tpot_vidur_definition_s': st.mean(float(r['decode_time_execution_plus_preemption_normalized']) for r in rows),
       'throughput_tok_s': dec / end, 'mean_e2e_s': st.mean(float(r['request_e2e_time']) for r in rows),
       'mean_queue_s': st.mean(float(r['request_scheduling_delay']) for r in rows),
       'n_requests': len(rows), 'restarts': sum(float(r['request_num_restarts']) for r in rows)}
ours = json.load(open(W + '/ours.json'))
json.dump({'setting': 'codellama-34b tp2 a100, azure-conv first 2000 requests x2 time, vllm policy',
           'vidur': vid, 'ours': ours}, open(out, 'w'), indent=1)
for k in ('mean_ttft_s', 'mean_tpot_s', 'throughput_tok_s', 'mean_e2e_s'):
    print('%-18s vidur %10.4f  ours %10.4f  %+6.1f%%' % (k, vid[k], ours[k], (ours[k] - vid[k]) / vid[k] * 100))
PY
