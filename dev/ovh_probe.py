"""ovh_probe.py: graph time of benchmark cases under scheduler metadata made with other values of
FMLA_SPLIT_OVERHEAD / FMLA_COMBINE_COST (GPU machine, diagnostics only).

The decode kernels do not depend on those constants, only the scheduler does, so each variant is
just the host twin (src/sched_host.c) built as a small shared library with -D overrides (built here
with gcc on first use, under build/ovh/). The metadata of each variant is made on the host from the
case's lengths and copied to the GPU; every variant is timed with the default library by bench.py's
method (median of 30 graph replays), rounds rotating the order. Outputs are compared with the first
variant's.

Usage: PYTHONPATH=python python3 dev/ovh_probe.py --variants 5:4,8:4,12:4 --cases 0,1,4 [--rounds 3]
       (each variant OVH:COMBINE; the library's own values are 5:4)
"""
import argparse
import ctypes
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench  # noqa: E402
from parts_probe import time_metadata_variants  # noqa: E402

STUB = "#include <stdarg.h>\n#include \"params.h\"\n" \
       "flash_mla_status_t fmla_set_error(flash_mla_status_t s, const char *f, ...) { (void)f; return s; }\n" \
       "void fmla_clear_error(void) {}\n"


def host_twin(ovh, comb):
    d = os.path.join(ROOT, "build", "ovh")
    os.makedirs(d, exist_ok=True)
    so = os.path.join(d, "sched_%d_%d.so" % (ovh, comb))
    if not os.path.exists(so):
        stub = os.path.join(d, "stub.c")
        with open(stub, "w") as f:
            f.write(STUB)
        subprocess.check_call(["gcc", "-std=c11", "-O2", "-shared", "-fPIC", "-I" + os.path.join(ROOT, "include"),
                               "-I" + os.path.join(ROOT, "src"), "-DFMLA_SPLIT_OVERHEAD=%d" % ovh,
                               "-DFMLA_COMBINE_COST=%d" % comb, os.path.join(ROOT, "src", "sched_host.c"), stub, "-o", so])
    lib = ctypes.CDLL(so)
    lib.flash_mla_get_metadata_host.restype = ctypes.c_int
    return lib


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="5:4,8:4,12:4")
    ap.add_argument("--cases", default="0,1,4,5")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kernel", default="hopper")
    args = ap.parse_args()
    import torch

    fm = bench.import_flash_mla()
    timer = bench.Timer(torch)
    cases = bench.load_cases()
    variants = [tuple(int(x) for x in v.split(":")) for v in args.variants.split(",")]
    libs = {v: host_twin(*v) for v in variants}
    print("library %s, empty graph %.1f us" % (fm.library_path, bench.graph_floor_us(torch, timer)))
    for idx in [int(x) for x in args.cases.split(",")]:
        c = cases[idx]
        lens = bench.case_seqlens(c)
        data = bench.CaseData(torch, c, lens, torch.bfloat16, 1, 1234 + idx)
        rows = c["s_q"] * c["h_q"] // c["h_kv"]
        P = fm.get_mla_metadata(data.L, rows, c["h_kv"])[0].shape[0]
        Lh = torch.tensor(lens, dtype=torch.int32)
        nb = [(x + 63) // 64 for x in lens]
        metas, longest = {}, {}
        for v in variants:
            meta = torch.zeros(P, 8, dtype=torch.int32)
            ns = torch.zeros(len(lens) + 1, dtype=torch.int32)
            st = libs[v].flash_mla_get_metadata_host(ctypes.c_void_p(Lh.data_ptr()), len(lens), P,
                                                      ctypes.c_void_p(meta.data_ptr()), ctypes.c_void_p(ns.data_ptr()))
            assert st == 0, st
            longest[v] = max(sum((r[3] if i == r[2] else nb[i]) - (r[1] if i == r[0] else 0) for i in range(r[0], r[2] + 1))
                             for r in meta.tolist() if r[0] < len(lens))
            metas[v] = (meta.cuda(), ns.cuda())
        res = time_metadata_variants(torch, fm, timer, c, data, metas, args.rounds, args.kernel)
        cells = ["%d:%d %.1f us [%s] (%d split, max part %d blocks) d=%.1g" % (
            v[0], v[1], res[v][0], " ".join("%.1f" % t for t in res[v][1]), res[v][3], longest[v], res[v][2]) for v in variants]
        print("case %d %s b=%d s_q=%d s_k=%d h_q=%d P=%d: %s" % (idx, c["set"], c["b"], c["s_q"], c["s_k"], c["h_q"], P,
                                                               "; ".join(cells)), flush=True)
        del data


if __name__ == "__main__":
    main()
