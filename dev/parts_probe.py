"""parts_probe.py: graph time of benchmark cases under several scheduler part counts (GPU machine,
diagnostics only).

For each case (indices into bench/cases.json) the data is made once; for each part count P the
metadata is made with get_mla_metadata(..., num_sm_parts=P) and the call is timed by bench.py's
method (events around one graph replay, median of 30). Rounds rotate the order of the P values, so
the GPU's warming does not favour one. Also prints how many requests each P splits. P = 0 means the
library's default. Outputs of every P are compared with the first one's (max |diff|).
`time_metadata_variants` is shared with dev/ovh_probe.py.

Usage: PYTHONPATH=python python3 dev/parts_probe.py --cases 18,26 --parts 0,128 [--rounds 3] [--kernel hopper]
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import bench  # noqa: E402


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
        nsplit = int(((splits[1:] - splits[:-1]).cpu() > 1).sum())
        out[v] = (statistics.median(times[v]), times[v], (o.float() - ref).abs().max().item(), nsplit)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="18,19,22,23,26,27")
    ap.add_argument("--parts", default="0,128")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kernel", default="hopper")
    args = ap.parse_args()
    import torch

    fm = bench.import_flash_mla()
    timer = bench.Timer(torch)
    cases = bench.load_cases()
    parts = [int(x) for x in args.parts.split(",")]
    print("library %s, empty graph %.1f us" % (fm.library_path, bench.graph_floor_us(torch, timer)))
    for idx in [int(x) for x in args.cases.split(",")]:
        c = cases[idx]
        data = bench.CaseData(torch, c, bench.case_seqlens(c), torch.bfloat16, 1, 1234 + idx)
        rows = c["s_q"] * c["h_q"] // c["h_kv"]
        metas = {P: fm.get_mla_metadata(data.L, rows, c["h_kv"], **({} if P == 0 else {"num_sm_parts": P})) for P in parts}
        res = time_metadata_variants(torch, fm, timer, c, data, metas, args.rounds, args.kernel)
        desc = ["P%s(%d parts, %d split): %.1f us [%s] d=%.2g" % (P or "def", metas[P][0].shape[0], res[P][3], res[P][0],
                                                               " ".join("%.1f" % t for t in res[P][1]), res[P][2])
                for P in parts]
        print("case %d %s b=%d s_q=%d s_k=%d h_q=%d: %s" % (idx, c["set"], c["b"], c["s_q"], c["s_k"], c["h_q"], "; ".join(desc)))
        del data


if __name__ == "__main__":
    main()
