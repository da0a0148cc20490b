#!/usr/bin/env python3
"""plot.py - PNG plots of `layerkv bench` (and `layerkv sim`) results.

    python3 bench/plot.py --json results.json --csv per-request.csv --out bench.png
    python3 bench/plot.py --compare baseline.json layerkv.json [sim.json ...] --out cmp.png

Single run (--json/--csv): TTFT split into queueing and prefill per request
over arrival time, TTFT CDF, TPOT CDF, and a summary panel. A rate sweep
({"runs": [...]}) adds mean/p99 TTFT and SLO violation rate against rate.
--compare: bar charts of the shared top-level keys of several JSON files
(bench and sim write the same keys), labelled "source:policy".

Exit codes: 0 written, 2 bad arguments/input, 3 matplotlib not installed
(`layerkv bench --plot` then prints "plot skipped").
"""
import argparse
import csv
import json
import sys


def load_runs(path):
    with open(path) as f:
        d = json.load(f)
    return d["runs"] if isinstance(d, dict) and "runs" in d else [d]


def load_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def cdf(ax, values, label):
    v = sorted(values)
    if not v:
        return
    ax.plot(v, [(i + 1) / len(v) for i in range(len(v))], label=label)


def single(args, plt):
    runs = load_runs(args.json)
    rows = load_csv(args.csv) if args.csv else []
    sweep = len(runs) > 1
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0][0]
    rates = sorted({r["rate"] for r in rows}, key=float)
    for rate in (rates[-1:] if sweep else rates):  # a sweep: the highest rate
        ok = [r for r in rows if r["rate"] == rate and r["status"] == "ok"]
        if not ok:
            continue
        t = [float(r["arrival_s"]) for r in ok]
        q = [float(r["queue_s"]) for r in ok]
        p = [float(r["prefill_s"]) for r in ok]
        tag = " (rate %s)" % rate if sweep else ""
        ax.bar(t, q, width=0.02 * (max(t) - min(t) + 1e-3), label="queueing" + tag, alpha=0.7)
        ax.bar(t, p, bottom=q, width=0.02 * (max(t) - min(t) + 1e-3), label="prefill" + tag, alpha=0.7)
    ax.set_xlabel("arrival (s)")
    ax.set_ylabel("TTFT (s)")
    ax.set_title("TTFT = queueing + prefill per request")
    ax.legend(fontsize=7)
    ax = axes[0][1]
    for rate in rates:
        cdf(ax, [float(r["ttft_s"]) for r in rows if r["rate"] == rate and r["status"] == "ok"],
            "rate %s" % rate)
    ax.set_xlabel("TTFT (s)")
    ax.set_ylabel("CDF")
    ax.set_title("TTFT distribution")
    ax.legend(fontsize=7)
    ax = axes[1][0]
    if sweep:
        x = [r["rate"] for r in runs]
        ax.plot(x, [r["mean_ttft_s"] for r in runs], "o-", label="mean TTFT (s)")
        ax.plot(x, [r["p99_ttft_s"] for r in runs], "s-", label="p99 TTFT (s)")
        ax2 = ax.twinx()
        ax2.plot(x, [100 * r["slo_violation_rate"] for r in runs], "r^--", label="SLO violations (%)")
        ax2.set_ylabel("SLO violations (%)")
        ax.set_xlabel("request rate (req/s)")
        ax.set_title("rate sweep")
        ax.legend(loc="upper left", fontsize=7)
    else:
        for rate in rates:
            cdf(ax, [1e3 * float(r["tpot_s"]) for r in rows
                     if r["rate"] == rate and r["status"] == "ok" and int(r["n_generated"]) > 1],
                "rate %s" % rate)
        ax.set_xlabel("TPOT (ms)")
        ax.set_ylabel("CDF")
        ax.set_title("TPOT distribution")
    ax = axes[1][1]
    ax.axis("off")
    r = runs[-1]
    keys = ["policy", "rate", "n_requests", "n_completed", "n_rejected", "mean_ttft_s", "mean_queue_s",
            "mean_prefill_s", "p99_ttft_s", "mean_tpot_s", "slo_violation_rate", "throughput_req_s",
            "throughput_tok_s", "preemptions", "offloaded_bytes"]
    text = "\n".join("%-20s %s" % (k, ("%.4g" % r[k]) if isinstance(r.get(k), float) else r.get(k, "-"))
                     for k in keys)
    ax.text(0, 1, text, family="monospace", va="top", fontsize=9)
    fig.suptitle("layerkv bench: %s" % args.json)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)


def compare(args, plt):
    runs = []
    for p in args.compare:
        for r in load_runs(p):
            runs.append(("%s:%s@%s" % (r.get("source", "?"), r.get("policy", "?"), r.get("rate", "?")), r))
    keys = ["mean_ttft_s", "mean_queue_s", "p99_ttft_s", "mean_tpot_s", "slo_violation_rate", "throughput_tok_s"]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for ax, k in zip([a for row in axes for a in row], keys):
        ax.bar(range(len(runs)), [r.get(k, 0) for _, r in runs])
        ax.set_xticks(range(len(runs)))
        ax.set_xticklabels([n for n, _ in runs], rotation=30, ha="right", fontsize=7)
        ax.set_title(k)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json")
    ap.add_argument("--csv")
    ap.add_argument("--compare", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if not args.json and not args.compare:
        print("plot.py: give --json (and --csv) or --compare FILES", file=sys.stderr)
        return 2
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot.py: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return 3
    try:
        if args.compare:
            compare(args, plt)
        else:
            single(args, plt)
    except (OSError, ValueError, KeyError) as e:
        print("plot.py: cannot plot: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
