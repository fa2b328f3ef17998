#!/usr/bin/env bash
# Offline install check (the GPU machine has no registry): pip install --no-build-isolation, then one
# GPU call through the installed package from outside the repository.
set -euo pipefail
python3 -m pip install -q --no-build-isolation --no-deps --target /tmp/fmla-site . > /tmp/pip.log 2>&1 || { tail -20 /tmp/pip.log; exit 1; }
cd /tmp && PYTHONPATH=/tmp/fmla-site python3 - <<'PY'
import torch, flash_mla
print("installed:", flash_mla.__file__, flash_mla.__version__)
b, s_q, h_q, L = 2, 1, 16, 300
q = torch.randn(b, s_q, h_q, 576, dtype=torch.bfloat16, device="cuda").clamp_(-1, 1)
k = (torch.randn(16, 64, 1, 576, dtype=torch.bfloat16, device="cuda") / 10).clamp_(-1, 1)
bt = torch.arange(16, dtype=torch.int32, device="cuda").view(2, 8)
cs = torch.tensor([L, 0], dtype=torch.int32, device="cuda")
meta, ns = flash_mla.get_mla_metadata(cs, s_q * h_q, 1)
out, lse = flash_mla.flash_mla_with_kvcache(q, k, bt, cs, 512, meta, ns)
ref, rlse = flash_mla.flash_mla_with_kvcache(q.cpu(), k.cpu(), bt.cpu(), cs.cpu(), 512, *flash_mla.get_mla_metadata(cs.cpu(), s_q * h_q, 1))
err = (out.float().cpu() - ref.float()).abs().max().item()
print("GPU vs C reference through the installed package: max abs err %.2e, lse[1] = %s" % (err, lse[1, 0, 0].item()))
assert err < 8e-4 and lse[1, 0, 0].item() == float("inf")
PY
