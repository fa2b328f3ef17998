"""Sustained-load probe: replay one benchmark case's CUDA graph for SECONDS while nvidia-smi samples
the SM clock, power draw and throttle reasons (GPU machine, diagnostics only).

    python3 dev/power_probe.py CASE_INDEX [SECONDS]     (library: FLASH_MLA_LIBRARY or the package's)
Prints the graph time over the run (per 0.25 s window) next to the samples, so a slowdown can be
matched with the clock and its reason (power cap, thermal).
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
import bench  # noqa: E402
import torch  # noqa: E402
import flash_mla  # noqa: E402

idx = int(sys.argv[1]) if len(sys.argv) > 1 else 0
secs = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
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
smi = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active",
                        "--format=csv,noheader", "-lms", "250"], stdout=subprocess.PIPE, text=True)
time.sleep(0.6)
t0 = time.time()
win = []
e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
while time.time() - t0 < secs:
    n = 0
    e0.record()
    ts = time.time()
    while time.time() - ts < 0.25:
        for _ in range(4):
            g.replay()
        n += 4
        torch.cuda.synchronize()
    e1.record()
    e1.synchronize()
    win.append((round(time.time() - t0, 2), round(e0.elapsed_time(e1) * 1000 / n, 1)))
time.sleep(0.3)
smi.terminate()
out = smi.communicate()[0]
print("case", idx, {k: c[k] for k in ("set", "b", "s_q", "s_k", "h_q", "causal")}, torch.cuda.get_device_name())
print("graph us per window (t, us):", win)
print("nvidia-smi samples (timestamp, SM MHz, W, C, throttle reasons):")
print(out)
