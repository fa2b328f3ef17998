"""meta_time.py: GPU time of the metadata call (flash_mla_get_metadata) of one or more builds of
libflash_mla.so, on normal(4096, 2048) lengths (GPU machine, diagnostics only). Each call is captured
in a CUDA graph and timed by bench.py's method (events around one replay, median of 30); the
empty-graph floor of the machine (10-18 us on the H200 machines) is included.

Usage: PYTHONPATH=python python3 dev/meta_time.py LIB.so [LIB.so ...]
"""
import ctypes
import os
import random
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import torch  # noqa: E402
import flash_mla  # noqa: E402
from flash_mla import _lib  # noqa: E402

SHAPES = [(128, 128), (128, 256), (256, 128), (64, 128), (32, 64), (1024, 128)]  # (b, rows per KV head)


def main():
    libs = sys.argv[1:]
    fns = []
    for path in libs:
        g = ctypes.CDLL(os.path.abspath(path)).flash_mla_get_metadata
        g.restype, g.argtypes = _lib.get_metadata.restype, _lib.get_metadata.argtypes
        fns.append(g)
    default = _lib.get_metadata
    for b, rows in SHAPES:
        rng = random.Random(b)
        L = torch.tensor([max(1, int(rng.normalvariate(4096, 2048))) for _ in range(b)], dtype=torch.int32, device="cuda")
        res = []
        for path, g in zip(libs, fns):
            _lib.get_metadata = g
            flash_mla.get_mla_metadata(L, rows, 1)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                flash_mla.get_mla_metadata(L, rows, 1)
            ts = []
            for _ in range(30):
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                graph.replay()
                e1.record()
                torch.cuda.synchronize()
                ts.append(e0.elapsed_time(e1) * 1e3)
            res.append("%s %.1f us" % (os.path.basename(path), statistics.median(ts)))
        _lib.get_metadata = default
        print("metadata b=%d rows=%d (graph replay, median of 30): %s" % (b, rows, ", ".join(res)), flush=True)


if __name__ == "__main__":
    main()
