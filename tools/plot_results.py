#!/usr/bin/env python3
"""plot_results.py - PNG plots and markdown tables for docs/results.md from
the JSON files tools/run_experiments.sh writes (docs/results/data/*.json).

usage: plot_results.py [RESULTS_DIR=docs/results]

Tables are written between <!-- BEGIN:x --> and <!-- END:x --> markers in
docs/results.md (x = a7, a70, achunk, a7hi, aw, bsharegpt, barxiv, c, d, vidur, scale), so the document is
regenerated in place; plots go to RESULTS_DIR/*.png. Needs matplotlib
(Debian python3-matplotlib) for the plots; tables are written without it.
"""
import glob
import json
import os
import re
import sys

RES = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), '..', 'docs', 'results')
DATA = os.path.join(RES, 'data')
DOC = os.path.join(RES, '..', 'results.md')

try:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
except ImportError:  # tables only
    plt = None


def load(name):
    p = os.path.join(DATA, name + '.json')
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def ratio(a, b):
    return a / b if b > 0 else float('inf')


LENS = [1024, 2048, 4096, 8192, 16384, 32768]
RATES = ['0.5', '1', '1.25', '1.5', '1.75', '2', '2.25', '2.5', '3', '4']


def table_a(prefix, title_model):
    rows = ['| context | baseline TTFT s (queue) | layerkv TTFT s (queue) | TTFT ratio '
            '| TPOT attain. base / lkv | throughput tok/s base / lkv | requests offloaded '
            '| bound: 10x KV memory TTFT s (ratio, TPOT attain.) |',
            '|---:|---:|---:|---:|---:|---:|---:|---:|']
    xs, yb, yl, yi = [], [], [], []
    for L in LENS:
        b = load('%s_baseline_%d' % (prefix, L))
        l = load('%s_layerkv_%d' % (prefix, L))
        if b is None or l is None:
            continue
        inf = load('%s_infmem_%d' % (prefix, L))
        xs.append(L)
        yb.append(b['mean_ttft_s'])
        yl.append(l['mean_ttft_s'])
        yi.append(inf['mean_ttft_s'] if inf else None)
        rows.append('| %dK | %.2f (%.2f) | %.2f (%.2f) | %.2fx | %.3f / %.3f | %.1f / %.1f | %.0f%% | %s |' % (
            L // 1024, b['mean_ttft_s'], b['mean_queue_s'], l['mean_ttft_s'],
            l['mean_queue_s'], ratio(b['mean_ttft_s'], l['mean_ttft_s']),
            b['tpot_attainment'], l['tpot_attainment'], b['throughput_tok_s'],
            l['throughput_tok_s'], 100 * l['frac_offloaded'],
            ('%.2f (%.1fx, %.3f)' % (inf['mean_ttft_s'], ratio(b['mean_ttft_s'], inf['mean_ttft_s']),
                                     inf['tpot_attainment'])) if inf else 'n/a'))
    return '\n'.join(rows), (xs, yb, yl, yi)


def table_aw():
    rows = ['| rate req/s | W | mean TTFT s (queue) | vs baseline | mean TPOT ms '
            '| TPOT attain. | SLO viol. | throughput tok/s | requests offloaded |',
            '|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r, base in (('0.06', 'a_7b_baseline_32768'), ('0.08', 'a_7bhi_baseline_32768')):
        b = load(base)
        for w in (0, 1, 2, 4, 8):
            d = load('aw_7b_%s_w%d' % (r, w))
            if d is None or b is None:
                continue
            rows.append('| %s | %d | %.2f (%.2f) | %.2fx | %.1f | %.3f | %.3f | %.1f | %.0f%% |' % (
                r, w, d['mean_ttft_s'], d['mean_queue_s'],
                ratio(b['mean_ttft_s'], d['mean_ttft_s']), d['mean_tpot_s'] * 1e3,
                d['tpot_attainment'], d['slo_violation_rate'], d['throughput_tok_s'],
                d['frac_offloaded'] * 100))
    return '\n'.join(rows)


def table_b(trace):
    rows = ['| rate req/s | baseline SLO viol. | layerkv SLO viol. | relative change '
            '| mean TTFT s base / lkv | mean TPOT ms base / lkv | thr tok/s base / lkv '
            '| bound: 10x KV memory viol. (TTFT s) |',
            '|---:|---:|---:|---:|---:|---:|---:|---:|']
    xs, vb, vl = [], [], []
    for r in RATES:
        b = load('b_%s_baseline_%s' % (trace, r))
        l = load('b_%s_layerkv_%s' % (trace, r))
        if b is None or l is None:
            continue
        xs.append(float(r))
        vb.append(b['slo_violation_rate'])
        vl.append(l['slo_violation_rate'])
        rel = ((l['slo_violation_rate'] - b['slo_violation_rate']) /
               b['slo_violation_rate'] * 100) if b['slo_violation_rate'] > 0 else 0.0
        inf = load('b_%s_infmem_%s' % (trace, r))
        rows.append('| %s | %.3f | %.3f | %+.1f%% | %.2f / %.2f | %.1f / %.1f | %.0f / %.0f | %s |' % (
            r, b['slo_violation_rate'], l['slo_violation_rate'], rel,
            b['mean_ttft_s'], l['mean_ttft_s'], b['mean_tpot_s'] * 1e3,
            l['mean_tpot_s'] * 1e3, b['throughput_tok_s'], l['throughput_tok_s'],
            ('%.3f (%.2f)' % (inf['slo_violation_rate'], inf['mean_ttft_s'])) if inf else ''))
    knee = None
    for x, v in zip(xs, vb):
        if v >= 0.10:
            knee = x
            break
    return '\n'.join(rows), (xs, vb, vl), knee


def table_c():
    rows = ['| setting | policy | throughput tok/s | req/s | mean TPOT ms | p99 TPOT ms '
            '| mean TTFT s | offloaded GB | reloaded GB |',
            '|---|---|---:|---:|---:|---:|---:|---:|---:|']
    bars = []
    for name, label in (('c_sharegpt_sat', 'ShareGPT, 7B A100, 6 req/s'),
                        ('c_arxiv_sat', 'arXiv, 7B A100, 6 req/s'),
                        ('c_70b_sharegpt_sat', 'ShareGPT, 70B A100 TP4, 6 req/s')):
        res = {}
        for pol in ('baseline', 'layerkv'):
            d = load('%s_%s' % (name, pol))
            if d is None:
                continue
            res[pol] = d
            rows.append('| %s | %s | %.0f | %.2f | %.1f | %.1f | %.1f | %.1f | %.1f |' % (
                label, pol, d['throughput_tok_s'], d['throughput_req_s'],
                d['mean_tpot_s'] * 1e3, d['p99_tpot_s'] * 1e3, d['mean_ttft_s'],
                d['offloaded_bytes'] / 1e9, d['reloaded_bytes'] / 1e9))
        if len(res) == 2:
            bars.append((label, res['baseline'], res['layerkv']))
            rows.append('| %s | layerkv / baseline | %.3f | | %.3f | | %.3f | | |' % (
                label, ratio(res['layerkv']['throughput_tok_s'], res['baseline']['throughput_tok_s']),
                ratio(res['layerkv']['mean_tpot_s'], res['baseline']['mean_tpot_s']),
                ratio(res['layerkv']['mean_ttft_s'], res['baseline']['mean_ttft_s'])))
    return '\n'.join(rows), bars


ABL = [('baseline', 'baseline (vLLM)'), ('layerkv', 'layerkv'),
       ('noslo', 'offload, no SLO-aware admission'),
       ('sync', 'synchronous offload'), ('offmax', 'offload as many layers as Eq. 4 allows'),
       ('contig', 'contiguous retained layers')]


def table_d():
    rows = ['| setting | variant | mean TTFT s | p99 TTFT s | mean TPOT ms | SLO viol. '
            '| thr tok/s | offloaded GB | copy tail s |',
            '|---|---|---:|---:|---:|---:|---:|---:|---:|']
    bars = {}
    for name, label in (('d_7b_32k', '7B A100, 32K prompts, 0.08 req/s'),
                        ('d_sharegpt', '7B A100, ShareGPT, 1.5 req/s (knee)')):
        for key, vlabel in ABL:
            d = load('%s_%s' % (name, key))
            if d is None:
                continue
            bars.setdefault(label, []).append((vlabel, d))
            rows.append('| %s | %s | %.2f | %.2f | %.1f | %.3f | %.0f | %.1f | %.2f |' % (
                label, vlabel, d['mean_ttft_s'], d['p99_ttft_s'], d['mean_tpot_s'] * 1e3,
                d['slo_violation_rate'], d['throughput_tok_s'], d['offloaded_bytes'] / 1e9,
                d['copy_tail_s']))
    return '\n'.join(rows), bars


def table_vidur():
    p = os.path.join(DATA, 'vidur_compare.json')
    if not os.path.exists(p):
        return '(no Vidur comparison data: run tools/vidur_compare.sh)'
    v = json.load(open(p))
    rows = ['| metric | Vidur (vLLM scheduler) | layerkv sim baseline | difference |',
            '|---|---:|---:|---:|']
    for key, label, scale in (('mean_ttft_s', 'mean TTFT (s)', 1),
                              ('mean_tpot_s', 'mean TPOT (ms)', 1e3),
                              ('throughput_tok_s', 'throughput (output tok/s)', 1),
                              ('mean_e2e_s', 'mean E2E latency (s)', 1)):
        a, b = v['vidur'].get(key), v['ours'].get(key)
        if a is None or b is None:
            continue
        rows.append('| %s | %.4g | %.4g | %+.1f%% |' % (label, a * scale, b * scale,
                                                       (b - a) / a * 100 if a else 0))
    return '\n'.join(rows)


def table_scale():
    d = load('scale_1m')
    if d is None:
        return '(not run)'
    log = os.path.join(DATA, 'scale_1m.log')
    elapsed, user, cpu, rss = 'n/a', 'n/a', 'n/a', 'n/a'
    if os.path.exists(log):
        txt = open(log).read()
        for pat, key in ((r'Elapsed \(wall clock\) time.*: (\S+)', 'elapsed'),
                         (r'User time \(seconds\): (\S+)', 'user'),
                         (r'Percent of CPU this job got: (\S+)', 'cpu'),
                         (r'Maximum resident set size \(kbytes\): (\S+)', 'rss')):
            m = re.search(pat, txt)
            if m:
                if key == 'elapsed':
                    elapsed = m.group(1)
                elif key == 'user':
                    user = m.group(1) + ' s'
                elif key == 'cpu':
                    cpu = m.group(1)
                else:
                    rss = '%.0f MiB' % (int(m.group(1)) / 1024)
    return ('| requests | instances | completed | simulated time | steps | CPU (user) time '
            '| wall time | share of a core it got | max RSS | mean TTFT s | throughput tok/s |\n'
            '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
            '| %d | %d | %d | %.0f s | %d | %s | %s | %s | %s | %.3f | %.0f |' % (
                d['n_requests'], d['instances'], d['n_completed'], d['makespan_s'],
                d['steps'], user, elapsed, cpu, rss, d['mean_ttft_s'], d['throughput_tok_s']))


def splice(doc, key, text):
    pat = re.compile(r'(<!-- BEGIN:%s -->\n).*?(<!-- END:%s -->)' % (key, key), re.S)
    if not pat.search(doc):
        return doc
    return pat.sub(lambda m: m.group(1) + text + '\n' + m.group(2), doc)


def main():
    ta7, pa7 = table_a('a_7b', 'Llama-2-7B')
    ta70, pa70 = table_a('a_70b', 'Llama-2-70B')
    tac, pac = table_a('a_7b_chunk', 'Llama-2-7B chunked')
    tah, pah = table_a('a_7bhi', 'Llama-2-7B 0.08 req/s')
    tbs, pbs, knee_s = table_b('sharegpt')
    tba, pba, knee_a = table_b('arxiv')
    tc, bars_c = table_c()
    td, bars_d = table_d()
    if os.path.exists(DOC):
        doc = open(DOC).read()
        doc = splice(doc, 'a7', ta7)
        doc = splice(doc, 'a70', ta70)
        doc = splice(doc, 'achunk', tac)
        doc = splice(doc, 'a7hi', tah)
        doc = splice(doc, 'aw', table_aw())
        doc = splice(doc, 'bsharegpt', tbs + '\n\nKnee (first rate with baseline violation >= 10%%): %s req/s' % knee_s)
        doc = splice(doc, 'barxiv', tba + '\n\nKnee (first rate with baseline violation >= 10%%): %s req/s' % knee_a)
        doc = splice(doc, 'c', tc)
        doc = splice(doc, 'd', td)
        doc = splice(doc, 'vidur', table_vidur())
        doc = splice(doc, 'scale', table_scale())
        open(DOC, 'w').write(doc)
    if plt is None:
        print('plot_results: matplotlib missing; tables only')
        return
    fig, axs = plt.subplots(1, 4, figsize=(19, 4.2))
    for ax, (xs, yb, yl, yi), title in ((axs[0], pa7, 'Llama-2-7B, A100-80GB, 0.06 req/s'),
                                        (axs[1], pah, 'Llama-2-7B, A100-80GB, 0.08 req/s'),
                                        (axs[2], pa70, 'Llama-2-70B, 4xA100 TP4, 0.04 req/s'),
                                        (axs[3], pac, 'Llama-2-7B, 0.06 req/s, chunked prefill 4096')):
        if xs:
            ax.plot(xs, yb, 'o-', label='baseline (vLLM)')
            ax.plot(xs, yl, 's-', label='layerkv')
            if any(v is not None for v in yi):
                ax.plot([x for x, v in zip(xs, yi) if v is not None],
                        [v for v in yi if v is not None], 'k:', label='bound: 10x KV memory')
        ax.set_xscale('log', base=2)
        ax.set_yscale('log')
        ax.set_xlabel('prompt length (tokens)')
        ax.set_ylabel('mean TTFT (s)')
        ax.set_title(title, fontsize=10)
        ax.grid(True, which='both', alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(RES, 'a_ttft_vs_context.png'), dpi=110)
    plt.close(fig)

    fig, axs = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (xs, vb, vl), title in ((axs[0], pbs, 'ShareGPT (<= 8K), Llama-2-7B A100'),
                                    (axs[1], pba, 'arXiv summarization, Llama-2-7B A100')):
        if xs:
            ax.plot(xs, vb, 'o-', label='baseline (vLLM)')
            ax.plot(xs, vl, 's-', label='layerkv')
        ax.set_xlabel('request rate (req/s)')
        ax.set_ylabel('SLO violation rate (TTFT 5 s or TPOT 100 ms)')
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(RES, 'b_slo_vs_rate.png'), dpi=110)
    plt.close(fig)

    if bars_c:
        fig, axs = plt.subplots(1, 2, figsize=(11, 4))
        labels = [b[0] for b in bars_c]
        x = range(len(labels))
        for ax, key, scale, yl in ((axs[0], 'throughput_tok_s', 1, 'throughput (tok/s)'),
                                   (axs[1], 'mean_tpot_s', 1e3, 'mean TPOT (ms)')):
            ax.bar([i - 0.2 for i in x], [b[1][key] * scale for b in bars_c], 0.4, label='baseline')
            ax.bar([i + 0.2 for i in x], [b[2][key] * scale for b in bars_c], 0.4, label='layerkv')
            ax.set_xticks(list(x))
            ax.set_xticklabels(labels, fontsize=7)
            ax.set_ylabel(yl)
            ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(RES, 'c_throughput_tpot.png'), dpi=110)
        plt.close(fig)

    if bars_d:
        fig, axs = plt.subplots(1, len(bars_d), figsize=(6 * len(bars_d), 4.5))
        if len(bars_d) == 1:
            axs = [axs]
        for ax, (label, items) in zip(axs, bars_d.items()):
            names = [i[0] for i in items]
            ax.bar(range(len(items)), [i[1]['mean_ttft_s'] for i in items], color='C0',
                   label='mean TTFT (s)')
            ax2 = ax.twinx()
            ax2.plot(range(len(items)), [i[1]['mean_tpot_s'] * 1e3 for i in items], 'rs',
                     label='mean TPOT (ms)')
            ax.set_xticks(range(len(items)))
            ax.set_xticklabels(names, rotation=25, ha='right', fontsize=7)
            ax.set_ylabel('mean TTFT (s)')
            ax2.set_ylabel('mean TPOT (ms)', color='r')
            ax.set_title(label, fontsize=10)
        fig.tight_layout()
        fig.savefig(os.path.join(RES, 'd_ablations.png'), dpi=110)
        plt.close(fig)
    print('plot_results: wrote plots to', os.path.abspath(RES))


if __name__ == '__main__':
    main()
