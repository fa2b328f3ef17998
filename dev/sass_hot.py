"""sass_hot.py: summarise an ncu source page (SASS, CSV) by executed instructions (diagnostics).

    ncu --section SourceCounters --kernel-name regex:fmla_decode --launch-skip 2 --launch-count 1 -o prof \
        python3 dev/profile_case.py 0 hopper
    ncu --import prof.ncu-rep --page source --csv --print-source sass > sass.csv
    python3 dev/sass_hot.py sass.csv

Prints the total executed (warp-level) instructions, the share of mbarrier wait instructions
(SYNCS.PHASECHK) and of the branches right after them (the retry loops), and the top lines.
"""
import csv
import sys


def main():
    rows = list(csv.reader(open(sys.argv[1])))
    hdr_i = next(i for i, r in enumerate(rows) if any("Source" == c.strip() for c in r))
    hdr = [c.strip() for c in rows[hdr_i]]
    src = hdr.index("Source")
    ex = next(i for i, c in enumerate(hdr) if c.startswith("Instructions Executed"))
    samp = next((i for i, c in enumerate(hdr) if c.startswith("Warp Stall Sampling (All")), None)
    lines = []
    for r in rows[hdr_i + 1:]:
        if len(r) <= max(src, ex):
            continue
        try:
            n = float(r[ex].replace(",", "") or 0)
        except ValueError:
            continue
        s = float(r[samp].replace(",", "") or 0) if samp is not None and r[samp].strip() else 0.0
        lines.append((r[src].strip(), n, s))
    total = sum(n for _, n, _ in lines) or 1
    tsamp = sum(s for _, _, s in lines) or 1
    wait = sum(n for t, n, _ in lines if "SYNCS.PHASECHK" in t)
    after = sum(lines[i + 1][1] for i, (t, _, _) in enumerate(lines[:-1]) if "SYNCS.PHASECHK" in t and "BRA" in lines[i + 1][0])
    print("executed warp instructions %.0f; SYNCS.PHASECHK %.1f%%, the branch after it %.1f%%" % (total, 100 * wait / total, 100 * after / total))
    cls = {}
    for t, n, s in lines:
        op = t.split()[0] if not t.startswith("@") else t.split()[1]
        op = op.split(".")[0]
        c = cls.setdefault(op, [0.0, 0.0])
        c[0] += n
        c[1] += s
    print("by opcode (executed %, stall samples %):")
    for op, (n, s) in sorted(cls.items(), key=lambda kv: -kv[1][0])[:25]:
        print("  %-12s %5.1f%% %5.1f%%" % (op, 100 * n / total, 100 * s / tsamp))
    print("top lines by stall samples:")
    for t, n, s in sorted(lines, key=lambda x: -x[2])[:25]:
        print("  %5.1f%% samples %9.0f exec  %s" % (100 * s / tsamp, n, t[:90]))


if __name__ == "__main__":
    main()
