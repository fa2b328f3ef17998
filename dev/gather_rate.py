"""gather_rate.py: what HBM delivers when the KV rows come one token at a time from random places
(page size 1), against whole 64-token pages (GPU machine, diagnostics only).

Reads R rows of 576 bf16 (1152 bytes) out of a 2.4 GB pool through torch.index_select, the rows
picked (a) one by one at random, (b) as random 64-row pages, (c) contiguous; prints the read rate
(read bytes / time) and the total rate (read + the output written). CUDA events around 20
back-to-back calls, median of 5 repeats. Usage: python3 dev/gather_rate.py
"""
import statistics

import torch


def timed(fn, reps=5, inner=20):
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        e0.record()
        for _ in range(inner):
            fn()
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1) / inner * 1e-3)
    return statistics.median(ts)


def main():
    dev = "cuda"
    n_pool = 2 * 1024 * 1024  # rows: 2.4 GB
    pool = torch.randn(n_pool, 576, dtype=torch.bfloat16, device=dev)
    rows = 1024 * 1024  # 1.2 GB read per call (the tp b=128 s_k=8K case)
    g = torch.Generator(device=dev).manual_seed(0)
    one = torch.randint(0, n_pool, (rows,), device=dev, generator=g)
    pages = torch.randint(0, n_pool // 64, (rows // 64,), device=dev, generator=g)
    paged = (pages[:, None] * 64 + torch.arange(64, device=dev)[None, :]).reshape(-1)
    contig = torch.arange(rows, device=dev)
    out = torch.empty(rows, 576, dtype=torch.bfloat16, device=dev)
    print(torch.cuda.get_device_name(), "rows %d x 1152 B = %.2f GB per call" % (rows, rows * 1152 / 1e9))
    for name, idx in (("page 1 (random rows)", one), ("page 64 (random pages)", paged), ("contiguous", contig)):
        t = timed(lambda: torch.index_select(pool, 0, idx, out=out))
        rb = rows * 1152
        print("%-24s %8.1f us  read %6.0f GB/s  read+write %6.0f GB/s" % (name, t * 1e6, rb / t / 1e9, 2 * rb / t / 1e9))


if __name__ == "__main__":
    main()
