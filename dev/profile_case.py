"""One benchmark case, run a few times, for a profiler: python3 dev/profile_case.py CASE_INDEX [kernel].

    ncu --set full --kernel-name regex:fmla_decode --launch-skip 2 --launch-count 1 \
        python3 dev/profile_case.py 0 hopper
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
import bench  # noqa: E402
import torch  # noqa: E402
import flash_mla  # noqa: E402

idx = int(sys.argv[1]) if len(sys.argv) > 1 else 0
kernel = sys.argv[2] if len(sys.argv) > 2 else "auto"
c = bench.load_cases()[idx]
lens = bench.case_seqlens(c)
data = bench.CaseData(torch, c, lens, torch.bfloat16, 1, 0)
meta, splits = flash_mla.get_mla_metadata(data.L, c["s_q"] * c["h_q"] // c["h_kv"], c["h_kv"])
for _ in range(4):
    flash_mla.flash_mla_with_kvcache(data.qs[0], data.kvs[0], data.block_table, data.L, 512, meta, splits,
                                     causal=c["causal"], kernel=kernel)
torch.cuda.synchronize()
print("case", {k: c[k] for k in ("set", "b", "s_q", "s_k", "h_q", "causal")}, "kernel", kernel)
