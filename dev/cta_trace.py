"""Where the whole call's time goes, per CTA, for benchmark cases (64-row Hopper kernel).

    dev/build_variant.sh trace "-DFMLA_SM90_TRACE=1"
    FLASH_MLA_LIBRARY=$PWD/variants/trace.so python3 dev/cta_trace.py [CASE_INDEX ...]
    python3 dev/cta_trace.py --profile [CASE_INDEX ...]     (any build: kernel durations, torch.profiler)

Trace mode: the case is captured in a CUDA graph (bench.py's data and method), replayed 30 times
back to back (timed with events, median), and the per-CTA stamps of the last replay are read back
(fmla_debug_cta_trace; src/decode_sm90.cu, SM90_CT). Printed: the SM clock (clock64 over
globaltimer), the kernel span against the graph time, how far apart the CTAs start and end, and
where a CTA's clocks go: prologue, per-segment Q load, the block loop, the epilogue.
Profile mode: the graph replayed under torch.profiler; the GPU time of each kernel in it.
"""
import ctypes
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
import bench  # noqa: E402
import torch  # noqa: E402
import flash_mla  # noqa: E402
from flash_mla import _lib  # noqa: E402

CTA_MAX, SLOTS = 1024, 64


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]


def case_graph(idx):
    """Benchmark case idx as bench.py builds it, one hopper call captured in a CUDA graph.
    Returns (case, seqlens, data, meta, graph)."""
    c = bench.load_cases()[idx]
    lens = bench.case_seqlens(c)
    data = bench.CaseData(torch, c, lens, torch.bfloat16, 1, 0)
    meta, splits = flash_mla.get_mla_metadata(data.L, c["s_q"] * c["h_q"] // c["h_kv"], c["h_kv"])
    fn = lambda: flash_mla.flash_mla_with_kvcache(data.qs[0], data.kvs[0], data.block_table, data.L, 512, meta, splits,
                                                  causal=c["causal"], kernel="hopper")
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return c, lens, data, meta, splits, g


def part_order(splits, batch):
    """The request at each position of the part order (src/params.h: num_splits' high bits for
    batch <= 1024, else the identity)."""
    ns = splits.tolist()
    return [x >> 16 for x in ns[:batch]] if batch <= 1024 else list(range(batch))


def segments(meta_row, lens, batch, page_cap, order):
    """(lo, hi) block ranges of a part's segments, as sm90_get_segment computes them."""
    out = []
    b0, lo0, e0, hi0 = meta_row[0], meta_row[1], meta_row[2], meta_row[3]
    for pos in range(b0, min(e0, batch - 1) + 1):
        i = order[pos]
        L = max(0, min(lens[i], page_cap))
        nb = -(-L // 64)
        lo = lo0 if pos == b0 else 0
        hi = hi0 if pos == e0 else nb
        hi = min(hi, nb)
        lo = min(max(lo, 0), hi)
        out.append((lo, hi))
    return out


def run(idx, profile):
    c, lens, data, meta, splits, g = case_graph(idx)
    order = part_order(splits, c["b"])
    rows = c["s_q"] * c["h_q"] // c["h_kv"]
    timer = bench.Timer(torch)
    us = timer.median_us([g.replay], warmup=3, iters=30)
    name = " ".join(f"{k}={c[k]}" for k in ("set", "b", "s_q", "s_k", "h_q", "causal"))
    print(f"== case {idx}: {name}: graph {us:.1f} us ({torch.cuda.get_device_name()})")
    if profile:
        from torch.profiler import ProfilerActivity, profile as tprof

        with tprof(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                g.replay()
            torch.cuda.synchronize()
        per = {}
        for e in prof.events():
            if e.device_type.name == "CUDA":
                per.setdefault(e.name[:60], []).append(e.device_time if hasattr(e, "device_time") else e.cuda_time)
        for k, v in sorted(per.items(), key=lambda kv: -sum(kv[1])):
            print(f"  kernel {k:60s} n={len(v):3d} median {statistics.median(v):8.1f} us")
        return
    fn = _lib.lib.fmla_debug_cta_trace
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int]
    fn.restype = ctypes.c_int
    assert fn(None, 1) == 0
    for _ in range(30):
        g.replay()
    torch.cuda.synchronize()
    buf = (ctypes.c_longlong * (CTA_MAX * SLOTS))()
    assert fn(ctypes.addressof(buf), 0) == 0
    tr = [list(buf[k * SLOTS:(k + 1) * SLOTS]) for k in range(CTA_MAX)]
    mrows = meta.cpu().tolist()
    parts = len(mrows)
    mb = -(-rows // 64)
    ncta = mb * c["h_kv"] * parts
    cap = data.block_table.shape[1] * 64
    ctas = [t for t in tr[:ncta]]
    assert all(t[0] and t[2] for t in ctas), "some CTA left no stamp (narrow kernel? trace build?)"
    t0 = min(t[0] for t in ctas)
    mhz = [(t[3] - t[1]) / ((t[2] - t[0]) * 1e-3) for t in ctas if t[2] > t[0]]
    starts = [(t[0] - t0) * 1e-3 for t in ctas]
    ends = [(t[2] - t0) * 1e-3 for t in ctas]
    print(f"  SM clock {statistics.median(mhz):.0f} MHz (CTA median; min {min(mhz):.0f}, max {max(mhz):.0f})")
    print(f"  kernel span {max(ends):.1f} us of the graph's {us:.1f}; CTA starts within {max(starts):.1f} us;"
          f" CTA ends: min {min(ends):.1f}, p10 {pct(ends, .1):.1f}, median {pct(ends, .5):.1f}, p90 {pct(ends, .9):.1f}")
    agg = {"prologue": [], "qload": [], "body": [], "epi": [], "gap": [], "blocks": [], "segs": []}
    per_block = []
    seg_fit = []  # (n-blocks, body clocks) of every segment, for the per-segment intercept
    for b_, t in enumerate(ctas):
        z = b_ // (mb * c["h_kv"])
        segs = segments(mrows[z], lens, c["b"], cap, order)
        nseg = t[4]
        assert nseg == len(segs), (b_, nseg, len(segs))
        agg["prologue"].append(t[8] - t[1] if nseg else 0)
        q = body = epi = gap = 0
        for s in range(min(nseg, 14)):
            a = t[8 + 4 * s: 12 + 4 * s]
            q += a[1] - a[0]
            body += a[2] - a[1]
            epi += a[3] - a[2]
            if s + 1 < min(nseg, 14):
                gap += t[8 + 4 * (s + 1)] - a[3]
            nb = segs[s][1] - segs[s][0]
            seg_fit.append((nb, a[2] - a[1], a[1] - a[0], a[3] - a[2]))
            if nb >= 8:
                per_block.append((a[2] - a[1]) / nb)
        agg["qload"].append(q)
        agg["body"].append(body)
        agg["epi"].append(epi)
        agg["gap"].append(gap)
        agg["blocks"].append(sum(h - l for l, h in segs))
        agg["segs"].append(nseg)
    tot = [t[3] - t[1] for t in ctas]
    print(f"  per CTA (SM clocks, median over {ncta} CTAs): total {statistics.median(tot):.0f}"
          f" (max {max(tot)}, min {min(tot)}), segments {statistics.median(agg['segs'])}"
          f" (max {max(agg['segs'])}), blocks {statistics.median(agg['blocks'])} (max {max(agg['blocks'])},"
          f" min {min(agg['blocks'])})")
    for k in ("prologue", "qload", "body", "epi", "gap"):
        v = agg[k]
        print(f"    {k:9s} median {statistics.median(v):9.0f}  max {max(v):9.0f}  ({100 * statistics.median(v) / statistics.median(tot):.1f}% of total)")
    if per_block:
        print(f"  body clocks per block (segments of >= 8 blocks): median {statistics.median(per_block):.0f},"
              f" p10 {pct(per_block, .1):.0f}, p90 {pct(per_block, .9):.0f}")
    if len(seg_fit) > 2:
        # least squares body = slope * n-blocks + intercept: the intercept is what a segment costs
        # the block loop beyond its blocks (pipeline ramp and drain, the odd pair, the last block)
        xs = [f[0] for f in seg_fit]
        ys = [f[1] for f in seg_fit]
        mx, my = statistics.mean(xs), statistics.mean(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        if sxx > 0:
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
            print(f"  body per segment ~ {slope:.0f} clk/block x n-blocks + {my - slope * mx:.0f} clk"
                  f" ({len(seg_fit)} segments, n-blocks {min(xs)}..{max(xs)}); per segment median: Q wait"
                  f" {statistics.median(f[2] for f in seg_fit):.0f}, epilogue {statistics.median(f[3] for f in seg_fit):.0f}")
    # per CTA: total ~ a * n-blocks + b * segments + c (least squares): what the scheduler's cost model
    # should charge; the residual is what no static schedule sees (per-block speed of the CTA)
    X = [[float(agg["blocks"][k]), float(agg["segs"][k]), 1.0] for k in range(ncta)]
    A = [[sum(x[i] * x[j] for x in X) for j in range(3)] for i in range(3)]
    y = [sum(x[i] * tot[k] for k, x in enumerate(X)) for i in range(3)]
    try:
        sol = torch.linalg.solve(torch.tensor(A, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)).tolist()
        res = [tot[k] - sum(a * b for a, b in zip(sol, X[k])) for k in range(ncta)]
        print(f"  per CTA total ~ {sol[0]:.0f} clk x n-blocks + {sol[1]:.0f} clk x segments + {sol[2]:.0f}"
              f" (a segment = {sol[1] / sol[0]:.2f} n-blocks); residual p10 {pct(res, .1):.0f}, p90 {pct(res, .9):.0f},"
              f" max {max(res):.0f} clk")
    except RuntimeError:
        pass
    # the slowest CTA
    w = max(range(ncta), key=lambda k: tot[k])
    print(f"  slowest CTA {w}: total {tot[w]}, blocks {agg['blocks'][w]}, segments {agg['segs'][w]},"
          f" qload {agg['qload'][w]}, epi {agg['epi'][w]}, start {starts[w]:.1f} us")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    profile = "--profile" in sys.argv
    for a in args or ["0", "4"]:
        run(int(a), profile)
