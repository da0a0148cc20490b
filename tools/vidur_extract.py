#!/usr/bin/env python3
"""vidur_extract.py - build the compact, median-only cost-model tables in
data/vidur/ from Vidur's profiling data and traces (../shared/data/vidur/,
itself a byte-exact copy of microsoft/vidur files; see data/vidur/README.md).

Usage: python3 tools/vidur_extract.py [SRC=../shared/data/vidur] [DST=data/vidur]

Output (all times are ms per transformer layer on one GPU, Vidur's medians):
  profiles/<gpu>/<model>.mlp.csv      tp,num_tokens,ms   (sum of every token-level
                                       operator of mlp.csv except `emb`)
  profiles/a100/attention_h8192_q64_kv8_tp2.csv
                                      kind,batch,chunk,kv,ms (decode: batch,kv;
                                       prefill: chunk,kv)
  profiles/network/<node>/{all_reduce,send_recv}.csv
                                      num_workers,devices_per_node,bytes,ms
                                       (median over the reporting ranks)
  profiles/a100/cpu_overheads.csv     model,tp,batch,ms (sum of the per-iteration
                                       CPU medians + ray residual mean)
  traces/<name>.csv                   [arrived_at,]num_prefill_tokens,num_decode_tokens
"""
import csv
import os
import statistics
import sys
from collections import defaultdict

SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), '..', '..', 'shared', 'data', 'vidur')
DST = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
    os.path.dirname(__file__), '..', 'data', 'vidur')
D = os.path.join(SRC, 'data')

MODELS = {
    'llama2-7b': 'meta-llama/Llama-2-7b-hf',
    'llama2-70b': 'meta-llama/Llama-2-70b-hf',
    'llama3-8b': 'meta-llama/Meta-Llama-3-8B',
    'llama3-70b': 'meta-llama/Meta-Llama-3-70B',
    'codellama-34b': 'codellama/CodeLlama-34b-Instruct-hf',
    'qwen-72b': 'Qwen/Qwen-72B',
}
TOKEN_OPS = ['input_layernorm', 'attn_pre_proj', 'attn_rope', 'attn_post_proj',
             'post_attention_layernorm', 'mlp_up_proj', 'mlp_act',
             'mlp_down_proj', 'add']
TRACES = {
    'sharegpt': 'sharegpt_8k_filtered_stats_llama2_tokenizer.csv',
    'arxiv': 'arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv',
    'bwb': 'bwb_stats_llama2_tokenizer_filtered_v2.csv',
    'azure-conv': 'splitwise_conv.csv',
    'azure-code': 'splitwise_code.csv',
}


def out(path):
    p = os.path.join(DST, path)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    return open(p, 'w', newline='')


def fmt(x):
    return '%.5g' % x


def mlp():
    for gpu in ('a100', 'h100'):
        for short, hf in MODELS.items():
            src = os.path.join(D, 'profiling', 'compute', gpu, hf, 'mlp.csv')
            if not os.path.exists(src):
                continue
            seen = {}
            for r in csv.DictReader(open(src)):
                key = (int(r['num_tensor_parallel_workers']), int(r['num_tokens']))
                ms = sum(float(r['time_stats.%s.median' % op]) for op in TOKEN_OPS)
                seen.setdefault(key, ms)  # duplicate grid rows: keep the first
            with out('profiles/%s/%s.mlp.csv' % (gpu, short)) as f:
                f.write('tp,num_tokens,ms\n')
                for (tp, t) in sorted(seen):
                    f.write('%d,%d,%s\n' % (tp, t, fmt(seen[(tp, t)])))


def attention():
    src = os.path.join(D, 'profiling', 'a100', 'attention.csv')
    rows = {}
    for r in csv.DictReader(open(src)):
        if r['is_prefill'] == 'True':
            key = ('prefill', 1, int(r['prefill_chunk_size']), int(r['kv_cache_size']))
            ms = float(r['time_stats.attn_prefill.median'])
        else:
            key = ('decode', int(r['batch_size']), 0, int(r['kv_cache_size']))
            ms = float(r['time_stats.attn_decode.median'])
        rows.setdefault(key, ms)
    with out('profiles/a100/attention_h8192_q64_kv8_tp2.csv') as f:
        f.write('kind,batch,chunk,kv,ms\n')
        for k in sorted(rows):
            f.write('%s,%d,%d,%d,%s\n' % (k + (fmt(rows[k]),)))


def network():
    for node in ('a100_dgx', 'h100_dgx', 'a100_pairwise_nvlink', 'h100_pairwise_nvlink'):
        for coll in ('all_reduce', 'send_recv'):
            src = os.path.join(D, 'profiling', 'network', node, coll + '.csv')
            g = defaultdict(list)
            for r in csv.DictReader(open(src)):
                g[(int(r['num_workers']), int(r['devices_per_node']),
                   int(r['size']))].append(float(r['time_stats.%s.median' % coll]))
            with out('profiles/network/%s/%s.csv' % (node, coll)) as f:
                f.write('num_workers,devices_per_node,bytes,ms\n')
                for k in sorted(g):
                    f.write('%d,%d,%d,%s\n' % (k + (fmt(statistics.median(g[k])),)))


def cpu():
    src = os.path.join(D, 'profiling', 'a100', 'cpu_overheads.csv')
    inv = {v: k for k, v in MODELS.items()}
    with out('profiles/a100/cpu_overheads.csv') as f:
        f.write('model,tp,batch,ms\n')
        for r in csv.DictReader(open(src)):
            if r['model_name'] not in inv:
                continue
            ms = sum(float(r[c + '_median']) for c in
                     ('schedule', 'sampler_e2e', 'prepare_inputs_e2e',
                      'process_model_outputs')) + float(r['ray_comm_time_mean'])
            f.write('%s,%s,%s,%s\n' % (inv[r['model_name']], r['tensor_parallel_degree'],
                                       r['batch_size'], fmt(ms)))


def traces():
    for short, name in TRACES.items():
        src = os.path.join(D, 'processed_traces', name)
        rd = csv.DictReader(open(src))
        has_t = 'arrived_at' in rd.fieldnames
        with out('traces/%s.csv' % short) as f:
            f.write(('arrived_at,' if has_t else '') +
                    'num_prefill_tokens,num_decode_tokens\n')
            for r in rd:
                pre = ('%s,' % r['arrived_at']) if has_t else ''
                f.write('%s%d,%d\n' % (pre, int(float(r['num_prefill_tokens'])),
                                       int(float(r['num_decode_tokens']))))


def vidur_compare_trace():
    """First 2000 Azure-conv requests, prompt cut so prompt + output <= 4096
    (Vidur's trace_replay rule), for tools/vidur_compare.sh."""
    src = os.path.join(D, 'processed_traces', 'splitwise_conv.csv')
    with out('traces/azure-conv-2000-cut4096.csv') as f:
        f.write('arrived_at,num_prefill_tokens,num_decode_tokens\n')
        for i, r in enumerate(csv.DictReader(open(src))):
            if i == 2000:
                break
            p, d = int(r['num_prefill_tokens']), int(r['num_decode_tokens'])
            if p + d > 4096:
                p = 4096 - d
            f.write('%s,%d,%d\n' % (r['arrived_at'], p, d))


if __name__ == '__main__':
    vidur_compare_trace()
    mlp()
    attention()
    network()
    cpu()
    traces()
    print('wrote', os.path.abspath(DST))
