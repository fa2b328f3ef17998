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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
from cta_trace import case_graph  # noqa: E402  (bench.py's case data, one call in a CUDA graph)
from ab_libs import replay_windows  # noqa: E402

idx = int(sys.argv[1]) if len(sys.argv) > 1 else 0
secs = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
c, _, _, _, _, g = case_graph(idx)
smi = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active",
                        "--format=csv,noheader", "-lms", "250"], stdout=subprocess.PIPE, text=True)
time.sleep(0.6)
win = [(t, round(us, 1)) for t, us, _ in replay_windows(torch, g, secs, 0.25)]
time.sleep(0.3)
smi.terminate()
out = smi.communicate()[0]
print("case", idx, {k: c[k] for k in ("set", "b", "s_q", "s_k", "h_q", "causal")}, torch.cuda.get_device_name())
print("graph us per window (t, us):", win)
print("nvidia-smi samples (timestamp, SM MHz, W, C, throttle reasons):")
print(out)
