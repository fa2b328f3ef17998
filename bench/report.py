#!/usr/bin/env python3
"""Markdown tables for BENCHMARKS.md from a bench.py results JSON (and the anchor it was compared to).

    python3 bench/report.py bench/results/h200-v1.json bench/anchors/flashmla-h200.json
"""
import json
import math
import sys


def key(c):
    return (c["set"], c["b"], c["s_q"], c["s_k"], c["h_q"], c["h_kv"], bool(c["causal"]), bool(c["varlen"]))


def main(res_path, anchor_path=None):
    res = json.load(open(res_path))
    anchor = {key(c): c for c in json.load(open(anchor_path))["cases"]} if anchor_path else {}
    ceil = res["ceilings_same_run"]
    floor = ceil.get("graph_floor_us")
    print("Card: **%s**; ceilings measured in the same run: copy %.0f GB/s, bf16 GEMM %.0f TFLOPS%s. "
          "Times are CUDA-graph medians (µs). Ratio = FlashMLA time / ours (> 1: we are faster)." %
          (res["device"], ceil["copy_GBps"], ceil["bf16_gemm_TFLOPs"],
           ", graph floor (one empty kernel, same timing) %.1f µs" % floor if floor else ""))
    print()
    print("| set | b | s_q | s_k | h_q | causal | hopper µs | TFLOPS | GB/s | % copy | % GEMM | FlashMLA µs | ratio | portable µs | ratio | call−graph µs (latency set) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ratios = {}
    for c in res["cases"]:
        k = c.get("kernels", {})
        h = k.get("hopper") or k.get("auto") or c
        p = k.get("portable")
        a = anchor.get(key(c))
        ag = a["graph_us"] if a else None
        r = ag / h["graph_us"] if ag else None
        if r:
            ratios.setdefault(c["set"], []).append(r)
        print("| %s | %d | %d | %d | %d | %s | %.1f | %.1f | %.0f | %.1f | %.1f | %s | %s | %s | %s | %s |" % (
            c["set"], c["b"], c["s_q"], c["s_k"], c["h_q"], "yes" if c["causal"] else "no", h["graph_us"],
            h["TFLOPs"], h["GBps"], 100 * h["GBps"] / ceil["copy_GBps"], 100 * h["TFLOPs"] / ceil["bf16_gemm_TFLOPs"],
            "%.1f" % ag if ag else "-", "%.2f" % r if r else "-",
            "%.1f" % p["graph_us"] if p else "-", "%.2f" % (ag / p["graph_us"]) if (p and ag) else "-",
            "%.1f" % (h["call_us"] - h["graph_us"]) if c["set"] == "latency" else "-"))
    print()
    for s, rs in ratios.items():
        g = math.exp(sum(math.log(x) for x in rs) / len(rs))
        print("- `%s`: hopper vs FlashMLA geomean %.2fx, min %.2fx, max %.2fx over %d cases" % (s, g, min(rs), max(rs), len(rs)))


if __name__ == "__main__":
    main(*sys.argv[1:3])
