#!/usr/bin/env python3
"""The main benchmark: FlashMLA's dense-decode cases (bench/cases.json) on this GPU.

    python3 bench/bench.py [--kernel auto|portable|hopper|all] [--set standard,tp,latency]
                           [--compare ANCHOR.json] [--out RESULT.json] [--roofline PLOT.png]
                           [--repeat-case N]

Method (the anchors' "method", flashmla-h100.json / flashmla-h200.json, followed exactly):
  data      q = clamp(randn/10, -1, 1) bf16 [b, s_q, h_q, 576]; kv = clamp(randn/10, -1, 1) bf16
            [blocks, 64, h_kv, 576], blocks = b * ceil(max(cache_seqlens) / 64); block table = a
            random permutation of the blocks; cache_seqlens: s_k each, or for varlen cases
            random.seed(0) then max(int(random.normalvariate(s_k, s_k/2)), s_q) per request.
  graph_us  one flash_mla_with_kvcache call (metadata from get_mla_metadata, reused) captured in a
            CUDA graph; 3 warm-up replays, then 30 replays each timed with CUDA events and
            synchronized; median. Cases run back to back in the listed order.
  call_us   median of 30 Python calls, each timed with CUDA events around the call (after 3
            warm-up calls): host overhead shows when the GPU work is small.
  TFLOPs    b*h_q*s_q*mean(cache_seqlens)*2*(576+512) / graph time
  GBps      b*(s_q*h_q*576*2 + mean(cache_seqlens)*576*2 + s_q*h_q*512*2) / graph time
  ceilings  measured in the same run, before the cases: device-to-device copy GB/s (1 GiB copy,
            bytes read + written) and bf16 GEMM TFLOPS (8192^3 torch.matmul on random data),
            each the median of 10 timed repeats after 3 warm-ups.
  L2        a case whose bytes (the GBps numerator) fit in the L2 cache is timed a second way too:
            graph_us_rotated, with enough q/kv/out copies that the copies together span >= 2x the
            L2 size, one graph per copy, replayed round-robin (3 warm-up + 30 timed replays), so
            each replay reads cold data as in a real model (other layers evict the cache). The
            anchors did not rotate, so graph_us (hot, same method as the anchor) is the number
            compared with them; graph_us_rotated is the honest cold-cache figure.

The table: set, b, s_q, s_k, h_q, causal, graph µs, call µs, TFLOPS, GB/s, % of the copy ceiling,
% of the GEMM ceiling, and with --compare "x anchor" = anchor graph_us / ours (> 1: we are faster).
With --kernel all, the auto kernel gets the full columns and each explicit kernel its µs and ratio.
Without a CUDA GPU it prints a message and exits with status 2.
"""
import argparse
import json
import math
import os
import random
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CASES_FILE = os.path.join(HERE, "cases.json")
D, DV, PAGE = 576, 512, 64
DEVICE = "cuda"
KEY_FIELDS = ("set", "b", "s_q", "s_k", "varlen", "causal", "h_q", "h_kv")


# ---------------------------------------------------------------------------------------------
# Cases (no torch needed: tests/python/test_cpu.py checks these against the anchors)
# ---------------------------------------------------------------------------------------------
def load_cases(path=CASES_FILE):
    with open(path) as f:
        return json.load(f)["cases"]


def case_key(c):
    return tuple(c[k] for k in KEY_FIELDS)


def case_seqlens(c):
    """cache_seqlens of a case, per the anchors' recipe (reproduces their lists exactly)."""
    if not c["varlen"]:
        return [c["s_k"]] * c["b"]
    random.seed(0)
    return [max(int(random.normalvariate(c["s_k"], c["s_k"] / 2)), c["s_q"]) for _ in range(c["b"])]


def flops_bytes(c, mean_len):
    b, s_q, h_q = c["b"], c["s_q"], c["h_q"]
    flops = b * h_q * s_q * mean_len * 2 * (D + DV)
    nbytes = b * (s_q * h_q * D * 2 + mean_len * D * 2 + s_q * h_q * DV * 2)
    return flops, nbytes


# ---------------------------------------------------------------------------------------------
# GPU side
# ---------------------------------------------------------------------------------------------
def import_flash_mla():
    """This repository's package first (python/, library from `make python` or `make lib`)."""
    if os.path.isfile(os.path.join(REPO, "python", "flash_mla", "__init__.py")):
        sys.path.insert(0, os.path.join(REPO, "python"))
    import flash_mla

    return flash_mla


class Timer:
    def __init__(self, torch):
        self.torch = torch
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def once_us(self, fn):
        self.start.record()
        fn()
        self.end.record()
        self.end.synchronize()
        return self.start.elapsed_time(self.end) * 1000.0

    def median_us(self, fns, warmup=3, iters=30):
        """fns: callables used round-robin (one for plain timing); the timed calls continue the
        rotation where the warm-up stopped, so with rotation none repeats a warm-up's data."""
        n = len(fns)
        for i in range(warmup):
            fns[i % n]()
        self.torch.cuda.synchronize()
        return statistics.median(self.once_us(fns[(warmup + i) % n]) for i in range(iters))


def fill_randn_(torch, t, gen, chunk=1 << 27):
    """t = clamp(randn/10, -1, 1) in chunks (bounded temporary memory for multi-GB caches)."""
    flat = t.view(-1)
    for i in range(0, flat.numel(), chunk):
        n = min(chunk, flat.numel() - i)
        flat[i : i + n] = (torch.randn(n, device=t.device, generator=gen) / 10).clamp_(-1, 1)
    return t


def measure_ceilings(torch, timer):
    nbytes = 1 << 30
    src = torch.empty(nbytes, dtype=torch.uint8, device=DEVICE).random_(0, 255)
    dst = torch.empty_like(src)
    copy_us = timer.median_us([lambda: dst.copy_(src)], warmup=3, iters=10)
    src = dst = None
    n = 8192
    a = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    gemm_us = timer.median_us([lambda: torch.matmul(a, b)], warmup=3, iters=10)
    a = b = None
    torch.cuda.empty_cache()
    return {"copy_GBps": round(2 * nbytes / copy_us / 1e3, 1), "bf16_gemm_TFLOPs": round(2 * n ** 3 / gemm_us / 1e6, 1),
            "graph_floor_us": round(graph_floor_us(torch, timer), 1)}


def graph_floor_us(torch, timer):
    """The floor of the timing method itself: a graph holding one trivial kernel, timed like a case
    (events around one replay, median of 30). No call can time below it."""
    x = torch.zeros(1, device=DEVICE)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        x.add_(1)
    return timer.median_us([g.replay])


def available_kernels(torch, fm, dtype):
    """Kernels that run on this device: a tiny call per kernel."""
    q = torch.zeros(1, 1, 128, D, dtype=dtype, device=DEVICE)
    kv = torch.zeros(1, PAGE, 1, D, dtype=dtype, device=DEVICE)
    bt = torch.zeros(1, 1, dtype=torch.int32, device=DEVICE)
    L = torch.full((1,), 10, dtype=torch.int32, device=DEVICE)
    meta, splits = fm.get_mla_metadata(L, 128, 1)
    ok, why = [], {}
    for k in ("hopper", "portable"):  # the compared column's pass right after auto's
        try:
            fm.flash_mla_with_kvcache(q, kv, bt, L, DV, meta, splits, kernel=k)
            ok.append(k)
        except fm.FlashMLAError as e:
            why[k] = str(e)
    torch.cuda.synchronize()
    return ok, why


class CaseData:
    def __init__(self, torch, c, lens, dtype, copies, seed, page=PAGE):
        dev = DEVICE
        gen = torch.Generator(device=dev)
        gen.manual_seed(seed)
        b, s_q, h_q, h_kv = c["b"], c["s_q"], c["h_q"], c["h_kv"]
        max_blocks = max(1, -(-max(lens) // page))
        blocks = b * max_blocks
        self.L = torch.tensor(lens, dtype=torch.int32, device=dev)
        perm = torch.randperm(blocks, device=dev, generator=gen)
        self.block_table = perm.to(torch.int32).view(b, max_blocks)
        self.qs, self.kvs = [], []
        for _ in range(copies):
            self.qs.append(fill_randn_(torch, torch.empty(b, s_q, h_q, D, dtype=dtype, device=dev), gen))
            self.kvs.append(fill_randn_(torch, torch.empty(blocks, page, h_kv, D, dtype=dtype, device=dev), gen))
        self.meta, self.splits = None, None


def time_case(torch, fm, timer, c, data, kernel, rotate):
    """graph_us (hot, the anchors' method), call_us, and graph_us_rotated when rotate."""
    causal = c["causal"]
    meta, splits = data.meta, data.splits

    def call(i):
        return lambda: fm.flash_mla_with_kvcache(
            data.qs[i], data.kvs[i], data.block_table, data.L, DV, meta, splits, causal=causal, kernel=kernel
        )

    calls = [call(i) for i in range(len(data.qs))]
    calls[0]()  # eager once: errors surface here, lazy CUDA init happens outside the capture
    torch.cuda.synchronize()
    pool = torch.cuda.graph_pool_handle()
    graphs = []
    for fn in calls if rotate else calls[:1]:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=pool):
            fn()
        graphs.append(g)
    res = {}
    res["graph_us"] = timer.median_us([graphs[0].replay])
    res["call_us"] = timer.median_us([calls[0]])
    if rotate:
        res["graph_us_rotated"] = timer.median_us([g.replay for g in graphs])
        res["rotated_copies"] = len(graphs)
    del graphs
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default="auto", choices=["auto", "portable", "hopper", "all"])
    ap.add_argument("--set", default="standard,tp,latency", help="comma-separated sets from bench/cases.json")
    ap.add_argument("--compare", metavar="FILE", help="anchor JSON: adds the ratio anchor graph_us / ours per case")
    ap.add_argument("--out", metavar="FILE", help="write the results as JSON (the anchors' schema)")
    ap.add_argument("--roofline", metavar="FILE", help="write a roofline plot (PNG, needs matplotlib)")
    ap.add_argument("--repeat-case", type=int, metavar="N", help="time case N (0-based, of the selected cases) again at the end")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    ap.add_argument("--page-size", type=int, default=PAGE, metavar="P",
                    help="KV cache page size (default 64, FlashMLA's only one; --compare then still compares "
                    "with the anchor's page-64 times)")
    ap.add_argument("--no-rotate", action="store_true", help="skip the L2-rotated timing of cases that fit in L2")
    ap.add_argument("--cases", default=CASES_FILE, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    try:
        import torch
    except ImportError:
        print("no CUDA GPU found: the benchmark needs one (and PyTorch, which is not installed)")
        return 2
    if not torch.cuda.is_available():
        print("no CUDA GPU found: the benchmark needs one")
        return 2
    if args.page_size < 1:
        print("--page-size %d: must be at least 1" % args.page_size)
        return 1
    fm = import_flash_mla()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    sets = [s.strip() for s in args.set.split(",") if s.strip()]
    cases = [c for c in load_cases(args.cases) if c["set"] in sets]
    if not cases:
        print("no cases selected (--set %s)" % args.set)
        return 1
    if args.repeat_case is not None and not 0 <= args.repeat_case < len(cases):
        print("--repeat-case %d: there are %d selected cases" % (args.repeat_case, len(cases)))
        return 1
    anchor = None
    if args.compare:
        with open(args.compare) as f:
            anchor = json.load(f)
        anchor_by_key = {case_key(c): c for c in anchor["cases"]}

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    l2 = getattr(props, "L2_cache_size", 50 << 20) or (50 << 20)
    name = torch.cuda.get_device_name()
    print("device: %s (sm_%d%d, %d SMs, L2 %.0f MB)" % (name, props.major, props.minor, props.multi_processor_count, l2 / 2 ** 20))
    print("flash_mla %s from %s" % (fm.__version__, fm.library_path))
    timer = Timer(torch)

    kernels_ok, why = available_kernels(torch, fm, dtype)
    if args.kernel == "all":
        kernels = ["auto"] + kernels_ok
    else:
        kernels = [args.kernel]
        if args.kernel != "auto" and args.kernel not in kernels_ok:
            print("kernel %s does not run here: %s" % (args.kernel, why.get(args.kernel)))
            return 1
    for k, msg in why.items():
        print("note: kernel %s unavailable: %s" % (k, msg))

    ceil = measure_ceilings(torch, timer)
    print("ceilings (same run): copy %.0f GB/s, bf16 GEMM %.0f TFLOPS, graph floor (one empty kernel) %.1f us"
          % (ceil["copy_GBps"], ceil["bf16_gemm_TFLOPs"], ceil["graph_floor_us"]))
    if anchor:
        print("anchor: %s (%s), ceilings %s" % (args.compare, anchor.get("device"), anchor.get("ceilings_same_run")))
    if args.page_size != PAGE:
        print("page size %d%s" % (args.page_size, " (the anchor's times are FlashMLA's at page 64, the only size it takes)" if anchor else ""))

    # ---- table ----
    head = "%-8s %4s %3s %6s %4s %-6s | %8s %8s %7s %7s %6s %6s" % (
        "set", "b", "s_q", "s_k", "h_q", "causal", "graph us", "call us", "TFLOPS", "GB/s", "%copy", "%gemm")
    if anchor:
        head += " %8s" % "x anchor"
    for k in kernels[1:]:
        head += " | %10s" % ("us " + k)
        if anchor:
            head += " %8s" % "x anchor"
    if not args.no_rotate:
        head += " | %10s" % "rotated us"

    results = []
    seed = 1234

    def run_case(idx, c, ks):
        lens = case_seqlens(c)
        mean_len = sum(lens) / len(lens)
        flops, nbytes = flops_bytes(c, mean_len)
        rotate = (not args.no_rotate) and nbytes < l2
        copies = max(2, math.ceil(2 * l2 / max(nbytes, 1)) + 1) if rotate else 1
        copies = min(copies, 128)
        data = CaseData(torch, c, lens, dtype, copies, seed + idx, args.page_size)
        data.meta, data.splits = fm.get_mla_metadata(data.L, c["s_q"] * c["h_q"] // c["h_kv"], c["h_kv"])
        per_kernel = {}
        for k in ks:
            try:
                r = time_case(torch, fm, timer, c, data, k, rotate and k == kernels[0])
            except fm.FlashMLAError as e:
                if k != "auto" and e.status == fm._lib.ERROR_UNSUPPORTED_DEVICE:
                    per_kernel[k] = {"unsupported": str(e)}  # this kernel does not take the shape
                else:
                    per_kernel[k] = {"error": str(e)}
                continue
            r["TFLOPs"] = round(flops / r["graph_us"] / 1e6, 1)
            r["GBps"] = round(nbytes / r["graph_us"] / 1e3, 1)
            r["graph_us"] = round(r["graph_us"], 1)
            r["call_us"] = round(r["call_us"], 1)
            if "graph_us_rotated" in r:
                r["graph_us_rotated"] = round(r["graph_us_rotated"], 1)
            per_kernel[k] = r
        del data
        torch.cuda.empty_cache()
        return lens, flops, nbytes, per_kernel

    def fmt_row(c, per_kernel):
        a = anchor_by_key.get(case_key(c)) if anchor else None
        row = "%-8s %4d %3d %6d %4d %-6s |" % (c["set"], c["b"], c["s_q"], c["s_k"], c["h_q"], "yes" if c["causal"] else "no")
        r = per_kernel[kernels[0]]
        if "graph_us" not in r:
            row += " %8s %8s %7s %7s %6s %6s" % ("error" if "error" in r else "n/a", "", "", "", "", "")
            if anchor:
                row += " %8s" % ""
        else:
            row += " %8.1f %8.1f %7.1f %7.0f %6.1f %6.1f" % (
                r["graph_us"], r["call_us"], r["TFLOPs"], r["GBps"],
                100 * r["GBps"] / ceil["copy_GBps"], 100 * r["TFLOPs"] / ceil["bf16_gemm_TFLOPs"])
            if anchor:
                row += " %8s" % ("%.2f" % (a["graph_us"] / r["graph_us"]) if a else "-")
        for k in kernels[1:]:
            rk = per_kernel[k]
            if "graph_us" in rk:
                row += " | %10s" % ("%.1f" % rk["graph_us"])
            else:
                row += " | %10s" % ("error" if "error" in rk else "n/a")
            if anchor:
                row += " %8s" % ("%.2f" % (a["graph_us"] / rk["graph_us"]) if a and "graph_us" in rk else "-")
        if not args.no_rotate:
            row += " | %10s" % ("%.1f" % r["graph_us_rotated"] if "graph_us_rotated" in r else "-")
        return row

    # One pass per kernel, each running the cases back to back in the listed order (the anchors'
    # method: one kernel's cases with no pause), the compared column first. Timing the kernels of
    # a case one after another instead would run each after the others' load (the portable kernel
    # takes ~3x as long), at a different point of the power cap than the anchors'.
    runs = {}
    for k in kernels:
        for idx, c in enumerate(cases):
            lens, flops, nbytes, pk = run_case(idx, c, [k])
            runs.setdefault(idx, (lens, flops, nbytes, {}))[3].update(pk)
            r = pk[k]
            print("pass %-8s case %2d: %s" % (k, idx, "%.1f us" % r["graph_us"] if "graph_us" in r else r), flush=True)
    print()
    print(head)
    print("-" * len(head))
    errors = []
    for idx, c in enumerate(cases):
        lens, flops, nbytes, per_kernel = runs[idx]
        print(fmt_row(c, per_kernel), flush=True)
        for k, r in per_kernel.items():
            if "error" in r:
                errors.append("%s kernel=%s: %s" % (case_key(c), k, r["error"]))
        entry = dict((k, c[k]) for k in KEY_FIELDS)
        if c["varlen"]:
            entry["cache_seqlens"] = lens
        top = per_kernel[kernels[0]]
        entry.update(top)
        entry["arithmetic_intensity"] = round(flops / nbytes, 2)
        if anchor and anchor_by_key.get(case_key(c)) and "graph_us" in top:
            entry["anchor_graph_us"] = anchor_by_key[case_key(c)]["graph_us"]
            entry["ratio_vs_anchor"] = round(entry["anchor_graph_us"] / top["graph_us"], 3)
        if len(kernels) > 1:
            entry["kernels"] = per_kernel
        results.append(entry)

    if args.repeat_case is not None:
        idx = args.repeat_case
        c = cases[idx]
        _, _, _, per_kernel = run_case(idx, c, kernels)
        print("rerun of case %d:" % idx)
        print(fmt_row(c, per_kernel))
        first = results[idx].get("graph_us")
        again = per_kernel[kernels[0]].get("graph_us")
        if first and again:
            print("run-to-run: %.1f us then %.1f us (%.1f%%)" % (first, again, 100 * (again - first) / first))
            results[idx]["graph_us_rerun"] = again
            results[idx]["graph_us_rerun_spread"] = [first, again]
        if len(kernels) > 1:
            results[idx]["kernels_rerun"] = per_kernel
    for e in errors:
        print("error: " + e)

    if args.out:
        with open(args.cases) as f:
            method = {"data": json.load(f).get("data")}
        method["graph_us"] = (
            "one flash_mla_with_kvcache call (metadata reused, as in a decode step) captured in a CUDA graph; 3 warm-up "
            "replays, then 30 replays each timed with CUDA events and synchronized; median. Cases run back to back in the "
            "listed order, with no pause; with several kernels, one such pass per kernel (in the order of method.kernels)"
        )
        method["call_us"] = "median of 30 Python calls timed with CUDA events around the call, after 3 warm-up calls"
        method["TFLOPs"] = "b*h_q*s_q*mean(cache_seqlens)*2*(576+512) / graph time"
        method["GBps"] = "b*(s_q*h_q*576*2 + mean(cache_seqlens)*576*2 + s_q*h_q*512*2) / graph time"
        method["graph_us_rotated"] = (
            "cases whose bytes fit in L2 only: one graph per q/kv/out copy, enough copies to span >= 2x L2, replayed "
            "round-robin (3 warm-up + 30 timed replays, median): cold-cache time"
        )
        method["ceilings"] = "copy: 1 GiB device-to-device copy, bytes read + written; GEMM: 8192^3 bf16 torch.matmul; median of 10"
        method["kernels"] = kernels
        method["page_size"] = args.page_size
        out = {
            "what": "flash_mla %s (this repository), bench/bench.py --kernel %s, %s, page %d" % (
                fm.__version__, args.kernel, args.dtype, args.page_size),
            "device": name,
            "ceilings_same_run": ceil,
            "method": method,
            "cases": results,
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
        print("wrote " + args.out)
    if args.roofline:
        plot_roofline(args.roofline, name, ceil, results, kernels, anchor)
    return 1 if errors else 0


def plot_roofline(path, name, ceil, results, kernels, anchor):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--roofline: matplotlib is not installed, no plot written")
        return
    fig, ax = plt.subplots(figsize=(9, 6))
    ais = [r["arithmetic_intensity"] for r in results]
    lo, hi = min(ais + [1.0]) / 2, max(ais + [1000.0]) * 2
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    gemm, copy = ceil["bf16_gemm_TFLOPs"], ceil["copy_GBps"]
    ax.plot(xs, [min(gemm, x * copy / 1e3) for x in xs], "k-", lw=1.5,
            label="roofline: copy %.0f GB/s, bf16 GEMM %.0f TFLOPS" % (copy, gemm))
    markers = {"auto": "o", "portable": "s", "hopper": "^"}
    colors = {"standard": "tab:blue", "tp": "tab:orange", "latency": "tab:green"}
    for k in kernels:
        for s, col in colors.items():
            pts = [(r["arithmetic_intensity"], (r.get("kernels", {}).get(k) or r).get("TFLOPs"))
                   for r in results if r["set"] == s]
            pts = [p for p in pts if p[1]]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=markers.get(k, "o"), color=col,
                           label="%s (%s)" % (s, k), alpha=0.8)
    if anchor:
        akeys = {case_key(c): c for c in anchor["cases"]}
        pts = [(r["arithmetic_intensity"], akeys[case_key(r)]["TFLOPs"]) for r in results if case_key(r) in akeys]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker="x", color="gray",
                       label="anchor (%s)" % anchor.get("device", "?"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved TFLOPS (graph time)")
    ax.set_title("flash_mla decode on %s" % name)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    print("wrote " + path)


if __name__ == "__main__":
    sys.exit(main())
