"""ab_libs.py: same-process A/B of several builds of libflash_mla.so (GPU machine, diagnostics only).

Each case's data is made once; each library's flash_mla_decode is swapped into the Python layer in
turn, captured in its own CUDA graph and timed by bench.py's method (events around one replay,
median of 30). Rounds alternate the libraries and rotate which goes first (A B C, B C A, ...): on
these machines a case drifted by up to 10% between rounds as the GPU warmed, and the first library
of a round always had the coolest GPU. For effects of 1-3%, prefer the clock64 trace
(dev/test_wgmma.cu trace), which counts SM clocks. Every library's output
is compared with the first library's (max |diff|), so a broken variant cannot look fast.

Usage: PYTHONPATH=python python3 dev/ab_libs.py LIB.so [LIB.so ...] [--cases 0,4,..] [--rounds 2] [--page-size P]
       (case indices into bench/cases.json; default: a mix of standard, tp and latency cases)
"""
import argparse
import ctypes
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import bench  # noqa: E402


class Energy:
    """The GPU's total energy counter (NVML, millijoules) through the driver's libnvidia-ml, or None."""

    def __init__(self):
        self.h = None
        try:
            self.nv = ctypes.CDLL("libnvidia-ml.so.1")
            if self.nv.nvmlInit_v2() == 0:
                h = ctypes.c_void_p()
                if self.nv.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(h)) == 0:
                    self.h = h
        except OSError:
            pass

    def mj(self):
        if self.h is None:
            return None
        v = ctypes.c_ulonglong()
        return v.value if self.nv.nvmlDeviceGetTotalEnergyConsumption(self.h, ctypes.byref(v)) == 0 else None


ENERGY = None


def replay_windows(torch, g, secs, window, before_window=None):
    """Replay graph g back to back for `secs` seconds in windows of `window` seconds (4 replays, then
    a sync, until the window is over); returns [(seconds since start, µs per replay, replays)] per
    window. before_window(t) is called before each window starts (t: seconds since start).
    Shared with dev/power_probe.py."""
    import time
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out, t0 = [], time.time()
    while time.time() - t0 < secs:
        if before_window is not None:
            before_window(time.time() - t0)
        n, ts = 0, time.time()
        e0.record()
        while time.time() - ts < window:
            for _ in range(4):
                g.replay()
            n += 4
            torch.cuda.synchronize()
        e1.record()
        e1.synchronize()
        out.append((round(time.time() - t0, 2), e0.elapsed_time(e1) * 1000.0 / n, n))
    return out


def sustained_us(torch, g, secs):
    """Mean replay time per 0.2 s window over `secs` seconds of back-to-back replays; the median of
    the windows after the first quarter (power-capped steady state). Also returns the energy per
    call over that last three quarters (mJ, from NVML's counter; None where it cannot be read)."""
    global ENERGY
    if ENERGY is None:
        ENERGY = Energy()
    starts, mark = [], {}  # window start times; the energy counter and window index at secs / 4

    def before(t):
        if not mark and t >= secs / 4:
            torch.cuda.synchronize()
            mark["mj"], mark["idx"] = ENERGY.mj(), len(starts)
        starts.append(t)

    wins = replay_windows(torch, g, secs, 0.2, before)
    ej1 = ENERGY.mj()
    times = [us for _, us, _ in wins]
    tail = sorted(times[len(times) // 4:])
    calls = sum(n for _, _, n in wins[mark["idx"]:]) if mark else 0
    ej0 = mark.get("mj")
    mj = (ej1 - ej0) / calls if ej0 is not None and ej1 is not None and calls else None
    return tail[len(tail) // 2], mj


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("libs", nargs="+")
    ap.add_argument("--cases", default="0,1,4,5,13,26,27,33,35")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kernel", default="hopper")
    ap.add_argument("--page-size", type=int, default=bench.PAGE, metavar="P", help="KV cache page size (default 64)")
    ap.add_argument("--sustain", type=float, default=0.0, metavar="SECONDS",
                    help="instead of 30 replays: replay back to back for SECONDS (the GPU reaches its power cap), "
                         "time 0.2 s windows, report the median window of the last 3/4 and the energy per call "
                         "(NVML counter, mJ) over them")
    args = ap.parse_args()
    import torch

    fm = bench.import_flash_mla()
    from flash_mla import interface

    from flash_mla import _lib as flib

    funcs, metafns = [], []  # each library's decode and its own metadata (the formats may differ)
    for path in args.libs:
        lib = ctypes.CDLL(os.path.abspath(path))
        f = lib.flash_mla_decode
        f.restype = interface._c_decode.restype
        f.argtypes = interface._c_decode.argtypes
        funcs.append(f)
        g = lib.flash_mla_get_metadata
        g.restype = flib.get_metadata.restype
        g.argtypes = flib.get_metadata.argtypes
        metafns.append(g)
    names = [os.path.basename(p) for p in args.libs]
    timer = bench.Timer(torch)
    print("libraries:", ", ".join(os.path.abspath(p) for p in args.libs))
    print("empty graph %.1f us, page size %d" % (bench.graph_floor_us(torch, timer), args.page_size))
    cases = bench.load_cases()
    print("%-4s %-8s %3s %2s %6s %4s %3s | %s" % ("idx", "set", "b", "sq", "s_k", "h_q", "cau", " | ".join("%-22s" % n for n in names)))
    for idx in [int(x) for x in args.cases.split(",")]:
        c = cases[idx]
        lens = bench.case_seqlens(c)
        data = bench.CaseData(torch, c, lens, torch.bfloat16, 1, 0, args.page_size)
        metas = []
        default_meta = flib.get_metadata
        for g in metafns:
            flib.get_metadata = g
            metas.append(fm.get_mla_metadata(data.L, c["s_q"] * c["h_q"] // c["h_kv"], c["h_kv"]))
        flib.get_metadata = default_meta

        def call():
            return fm.flash_mla_with_kvcache(data.qs[0], data.kvs[0], data.block_table, data.L, bench.DV, data.meta,
                                             data.splits, causal=c["causal"], kernel=args.kernel)

        graphs, outs = [], []
        pool = torch.cuda.graph_pool_handle()
        for f, m in zip(funcs, metas):
            interface._c_decode = f
            data.meta, data.splits = m
            o, _ = call()  # eager once, outside the capture
            torch.cuda.synchronize()
            outs.append(o.float().clone())
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=pool):
                call()
            graphs.append(g)
        times = [[] for _ in funcs]
        energy = [[] for _ in funcs]
        for r in range(args.rounds):
            # round r starts at library r % n: the first-timed library (coolest GPU) rotates
            for jj in range(len(graphs)):
                j = (r + jj) % len(graphs)
                if args.sustain > 0:
                    t, mj = sustained_us(torch, graphs[j], args.sustain)
                    times[j].append(t)
                    energy[j].append(mj)
                else:
                    times[j].append(timer.median_us([graphs[j].replay]))
        diffs = [(o - outs[0]).abs().max().item() for o in outs]
        cells = []
        for j in range(len(funcs)):
            e = "".join(" %.1fmJ" % x for x in energy[j] if x is not None)
            cells.append("%-22s" % ("/".join("%.1f" % t for t in times[j]) + e + (" d=%.0e" % diffs[j] if j else "")))
        print("%-4d %-8s %3d %2d %6d %4d %3s | %s" % (idx, c["set"], c["b"], c["s_q"], c["s_k"], c["h_q"],
                                                   "T" if c["causal"] else "F", " | ".join(cells)), flush=True)
        del graphs, data, outs
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
