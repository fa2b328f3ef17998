"""sched_probe.py: graph time of benchmark cases under other scheduler metadata (GPU machine,
diagnostics only). Two kinds of variants, timed against each other per case:
  --parts 0,128        the library's own scheduler with num_sm_parts = P (0: its default)
  --variants 5:4,8:4   the scheduler built with other FMLA_SPLIT_OVERHEAD:FMLA_COMBINE_COST (the decode
                       kernels do not depend on them): src/sched_host.c compiled with gcc into
                       build/sched_probe/ on first use, metadata made on the host and copied to the GPU
For each case (indices into bench/cases.json) the data is made once; each variant's call is timed
by bench.py's method (events around one graph replay, median of 30), rounds rotating the order so
the GPU's warming does not favour one. Prints the requests each variant splits, its longest part
(n-blocks) and the max |diff| of its output against the first variant's.

Usage: PYTHONPATH=python python3 dev/sched_probe.py --cases 18,26 --parts 0,128 [--rounds 3] [--kernel hopper]
       PYTHONPATH=python python3 dev/sched_probe.py --cases 0,4 --variants 5:4,2:4,8:4
"""
import argparse
import ctypes
import os
import statistics
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench  # noqa: E402

STUB = "#include <stdarg.h>\n#include \"params.h\"\n" \
       "flash_mla_status_t fmla_set_error(flash_mla_status_t s, const char *f, ...) { (void)f; return s; }\n" \
       "void fmla_clear_error(void) {}\n"


def host_twin(ovh, comb):
    """The scheduler's host twin built with other constants (a small shared library)."""
    d = os.path.join(ROOT, "build", "sched_probe")
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


def host_metadata(lib, lens, parts):
    import torch
    L = torch.tensor(lens, dtype=torch.int32)
    meta = torch.zeros(parts, 8, dtype=torch.int32)
    ns = torch.zeros(len(lens) + 1, dtype=torch.int32)
    st = lib.flash_mla_get_metadata_host(ctypes.c_void_p(L.data_ptr()), len(lens), parts,
                                         ctypes.c_void_p(meta.data_ptr()), ctypes.c_void_p(ns.data_ptr()))
    assert st == 0, st
    return meta.cuda(), ns.cuda()


def longest_part(meta, lens, splits):
    """Largest part in n-blocks; rows index positions of the part order (src/params.h)."""
    nb = [(x + 63) // 64 for x in lens]
    ns = splits.cpu().tolist()
    order = [x >> 16 for x in ns[:len(lens)]] if len(lens) <= 1024 else list(range(len(lens)))
    return max(sum((r[3] if k == r[2] else nb[order[k]]) - (r[1] if k == r[0] else 0) for k in range(r[0], r[2] + 1))
               for r in meta.tolist() if r[0] < len(lens))


def time_metadata_variants(torch, fm, timer, c, data, metas, rounds, kernel):
    """metas: {label: (meta, num_splits)} on the GPU. Returns {label: (median µs, [µs per round],
    max |out - first label's out|, split requests)}, the labels' order rotated every round."""
    labels = list(metas)
    times = {v: [] for v in labels}
    for r in range(rounds):
        for v in labels[r % len(labels):] + labels[:r % len(labels)]:
            data.meta, data.splits = metas[v]
            times[v].append(bench.time_case(torch, fm, timer, c, data, kernel, False)["graph_us"])
    out, ref = {}, None
    for v in labels:
        meta, splits = metas[v]
        o, _ = fm.flash_mla_with_kvcache(data.qs[0], data.kvs[0], data.block_table, data.L, bench.DV, meta, splits,
                                         causal=c["causal"], kernel=kernel)
        ref = o.float() if ref is None else ref
        slots = splits.cpu() & 0xFFFF if splits.shape[0] - 1 <= 1024 else splits.cpu()  # src/params.h encoding
        nsplit = int(((slots[1:] - slots[:-1]) > 1).sum())
        out[v] = (statistics.median(times[v]), times[v], (o.float() - ref).abs().max().item(), nsplit)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="18,19,22,23,26,27")
    ap.add_argument("--parts", default="", help="comma-separated num_sm_parts values (0: the default)")
    ap.add_argument("--variants", default="", help="comma-separated OVH:COMBINE scheduler constants")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kernel", default="hopper")
    args = ap.parse_args()
    if not args.parts and not args.variants:
        args.parts = "0,128"
    import torch

    fm = bench.import_flash_mla()
    timer = bench.Timer(torch)
    cases = bench.load_cases()
    parts = [int(x) for x in args.parts.split(",") if x]
    variants = [tuple(int(x) for x in v.split(":")) for v in args.variants.split(",") if v]
    libs = {v: host_twin(*v) for v in variants}
    print("library %s, empty graph %.1f us" % (fm.library_path, bench.graph_floor_us(torch, timer)))
    for idx in [int(x) for x in args.cases.split(",")]:
        c = cases[idx]
        lens = bench.case_seqlens(c)
        data = bench.CaseData(torch, c, lens, torch.bfloat16, 1, 1234 + idx)
        rows = c["s_q"] * c["h_q"] // c["h_kv"]
        default_parts = fm.get_mla_metadata(data.L, rows, c["h_kv"])[0].shape[0]
        metas = {}
        for P in parts:
            metas["P%s" % (P or "def")] = fm.get_mla_metadata(data.L, rows, c["h_kv"], **({"num_sm_parts": P} if P else {}))
        for v in variants:
            metas["%d:%d" % v] = host_metadata(libs[v], lens, default_parts)
        res = time_metadata_variants(torch, fm, timer, c, data, metas, args.rounds, args.kernel)
        cells = ["%s (%d parts, %d split, longest %d blocks): %.1f us [%s] d=%.2g" % (
            v, metas[v][0].shape[0], res[v][3], longest_part(metas[v][0].cpu(), lens, metas[v][1]), res[v][0],
            " ".join("%.1f" % t for t in res[v][1]), res[v][2]) for v in metas]
        print("case %d %s b=%d s_q=%d s_k=%d h_q=%d: %s" % (idx, c["set"], c["b"], c["s_q"], c["s_k"], c["h_q"],
                                                          "; ".join(cells)), flush=True)
        del data


if __name__ == "__main__":
    main()
