"""latency_probe.py: where the time of a small decode call goes (GPU machine, diagnostics only).

For the latency cases (and tp b=8) it prints, in one run:
  graph_us   one call in a CUDA graph, bench.py's method (events around one replay, median of 30)
  empty_us   the same method around a graph holding one trivial kernel: the floor of any call
  host_us    enqueue cost of one eager call: 300 calls back to back, no sync inside, perf_counter
  c_us       the same for the bare ctypes call (arguments packed once), i.e. the C library alone
  alloc_us   the three torch allocations of a call (out, lse, workspace)
  call_us    bench.py's call_us (events around one eager call)
  --ws-ab          host_us with flash_mla.interface's workspace cache on and off, alternated
  --parts 4,8,...  also graph_us of each case with the metadata split into that many parts
                   (the split count a fixed per-split cost makes worth it, with the combine)
Usage: PYTHONPATH=python python3 dev/latency_probe.py [--kernel hopper] [--sets latency,tp] [--parts ...]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import bench  # noqa: E402


def host_loop_us(torch, fn, n=300):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    best = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        best.append((t1 - t0) / n * 1e6)
    return statistics.median(best)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", default="hopper")
    ap.add_argument("--sets", default="latency,tp")
    ap.add_argument("--parts", default="")
    ap.add_argument("--ws-ab", action="store_true", help="host_us with the workspace cache on / off, alternated")
    args = ap.parse_args()
    import torch

    fm = bench.import_flash_mla()
    from flash_mla import _lib, interface

    timer = bench.Timer(torch)
    empty = bench.graph_floor_us(torch, timer)
    print("library %s\nempty graph %.1f us" % (fm.library_path, empty))
    print("%-8s %3s %6s %4s | %8s %8s %8s %8s %8s" % ("set", "b", "s_k", "h_q", "graph", "call", "host", "c_only", "alloc"))
    sets = args.sets.split(",")
    for idx, c in enumerate(bench.load_cases()):
        if c["set"] not in sets or (c["set"] == "tp" and c["b"] != 8):
            continue
        lens = bench.case_seqlens(c)
        data = bench.CaseData(torch, c, lens, torch.bfloat16, 1, 1234 + idx)
        data.meta, data.splits = fm.get_mla_metadata(data.L, c["s_q"] * c["h_q"] // c["h_kv"], c["h_kv"])
        r = bench.time_case(torch, fm, timer, c, data, args.kernel, False)
        q, kv, bt, L = data.qs[0], data.kvs[0], data.block_table, data.L
        meta, splits = data.meta, data.splits
        call = lambda: fm.flash_mla_with_kvcache(q, kv, bt, L, 512, meta, splits, causal=c["causal"], kernel=args.kernel)
        host = host_loop_us(torch, call)
        out, lse = call()
        b, s_q, h_q, _ = q.shape
        parts = meta.shape[0]
        wsb = interface._workspace_bytes(b, s_q, h_q, parts)
        ws = q.new_empty(wsb, dtype=torch.uint8)
        qs, ks = q.stride(), kv.stride()
        params = _lib.pack_decode_params(
            _lib.DTYPE_BF16, b, s_q, h_q, kv.shape[2], 576, 512, kv.shape[0], kv.shape[1], bt.shape[1], int(c["causal"]),
            576 ** -0.5, _lib.KERNELS[args.kernel], q.data_ptr(), qs[0], qs[1], qs[2], kv.data_ptr(), ks[0], ks[1], ks[2],
            bt.data_ptr(), bt.stride(0), L.data_ptr(), out.data_ptr(), s_q * h_q * 512, h_q * 512, 512, lse.data_ptr())
        stream = torch.cuda.current_stream().cuda_stream
        mp, sp, wp = meta.data_ptr(), splits.data_ptr(), ws.data_ptr()
        c_only = host_loop_us(torch, lambda: _lib.decode(params, mp, parts, sp, wp, wsb, stream))

        def alloc():
            q.new_empty(b, s_q, h_q, 512)
            q.new_empty(b, h_q, s_q, dtype=torch.float32)
            q.new_empty(wsb, dtype=torch.uint8)

        al = host_loop_us(torch, alloc)
        print("%-8s %3d %6d %4d | %8.1f %8.1f %8.1f %8.1f %8.1f" % (c["set"], c["b"], c["s_k"], c["h_q"], r["graph_us"], r["call_us"], host, c_only, al))
        if args.ws_ab:
            on, off = [], []
            for _ in range(4):
                interface.WORKSPACE_CACHE_MAX_BYTES = 32 << 20
                on.append(host_loop_us(torch, call))
                interface.WORKSPACE_CACHE_MAX_BYTES = 0
                off.append(host_loop_us(torch, call))
            interface.WORKSPACE_CACHE_MAX_BYTES = 32 << 20
            print("   workspace cache host_us on %.1f off %.1f (medians of 4 alternated)" % (statistics.median(on), statistics.median(off)))
        sweep = []
        for P in [int(x) for x in args.parts.split(",") if x]:
            data.meta, data.splits = fm.get_mla_metadata(data.L, c["s_q"] * c["h_q"] // c["h_kv"], c["h_kv"], num_sm_parts=P)
            sweep.append("P%d:%.1f" % (P, bench.time_case(torch, fm, timer, c, data, args.kernel, False)["graph_us"]))
        if sweep:
            print("   parts sweep graph_us: " + " ".join(sweep))
        del data


if __name__ == "__main__":
    main()
