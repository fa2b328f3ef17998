"""CPU tests of the flash_mla Python package (no GPU needed).

CPU tensors run the library's C reference (flash_mla_decode_ref); it is checked here against a
float32 torch reference written in this file (pages gathered through block_table, masked softmax,
bottom-right causal mask), with the tolerances the GPU tests use. Also: the scheduler metadata
(classic and FlashMLASchedMeta forms), the ctypes mirror of flash_mla_decode_params_t against the C
compiler's layout, and the benchmark's case list against its recipe.

Run: PYTHONPATH=python python3 -m pytest -q tests/python/test_cpu.py   (after `make python`)
"""
import ctypes
import importlib.util
import json
import os
import random
import shutil
import subprocess

import pytest
import torch

import flash_mla
from flash_mla import _lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
D, DV = 576, 512
UNUSED_PAGE = 2147480000  # block-table entries past a sequence's last page


# ---------------------------------------------------------------------------------------------
# Reference and comparison (float32 torch; device-agnostic)
# ---------------------------------------------------------------------------------------------
def ref_mla(q, k_cache, block_table, cache_seqlens, causal, scale):
    """out [b, s_q, h_q, 512] fp32, lse [b, h_q, s_q] fp32; rows with no key: out 0, lse +inf.
    Computed in float64: a float32 matmul's own error on an lse near 0 (one visible key) reaches
    the 1e-6 lse tolerance."""
    b, s_q, h_q, d = q.shape
    _, page, h_kv, _ = k_cache.shape
    dev = q.device
    L = cache_seqlens.long()
    S = max(int(L.max()), 1)
    npg = -(-S // page)
    used_page = torch.arange(npg, device=dev)[None, :] * page < L[:, None]
    bt = torch.where(used_page, block_table[:, :npg].long(), torch.zeros((), dtype=torch.long, device=dev))
    K = k_cache[bt].reshape(b, npg * page, h_kv, d)[:, :S].double()
    key_ok = torch.arange(S, device=dev)[None, :] < L[:, None]
    K = torch.where(key_ok[:, :, None, None], K, torch.zeros((), device=dev))  # NaN slots never reach a product
    g = h_q // h_kv
    qf = q.double().reshape(b, s_q, h_kv, g, d)
    scores = torch.einsum("bthgd,bshd->bhtgs", qf, K) * scale
    t = torch.arange(s_q, device=dev)
    limit = L[:, None] - (s_q - 1 - t)[None, :] if causal else L[:, None].expand(b, s_q)
    vis = torch.arange(S, device=dev)[None, None, :] < limit[:, :, None]  # [b, s_q, S]
    scores = scores.masked_fill(~vis[:, None, :, None, :], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # [b, h_kv, s_q, g]
    p = torch.exp(scores - lse[..., None])
    p = torch.nan_to_num(p, nan=0.0)  # rows with no key: -inf - -inf
    out = torch.einsum("bhtgs,bshd->bthgd", p, K[..., :DV]).reshape(b, s_q, h_q, DV)
    lse = torch.where(torch.isinf(lse), torch.full_like(lse, float("inf")), lse)
    lse = lse.permute(0, 1, 3, 2).reshape(b, h_q, s_q)
    return out.float(), lse.float()


def cos_diff(x, y):
    x = x.double()
    y = y.double()
    den = (x * x + y * y).sum().item()
    if den == 0:
        return 0.0
    return 1 - 2 * (x * y).sum().item() / den


def check_close(out, lse, out_ref, lse_ref, what=""):
    """The project's tolerances: out abs 8e-4 or rel 2/128 and cos diff < 5e-6; lse abs 1e-6 or rel
    8/65536; +inf positions equal."""
    assert out.shape == out_ref.shape and lse.shape == lse_ref.shape, what
    o = out.float()
    assert not torch.isnan(o).any(), "NaN in out " + what
    err = (o - out_ref).abs()
    bad = err > torch.maximum(torch.full_like(err, 8e-4), out_ref.abs() * (2 / 128))
    assert not bad.any(), "out: %d elements off, max abs err %.3g %s" % (int(bad.sum()), float(err.max()), what)
    cd = cos_diff(o, out_ref)
    assert cd < 5e-6, "out cos diff %.3g %s" % (cd, what)
    inf, inf_ref = torch.isinf(lse), torch.isinf(lse_ref)
    assert torch.equal(inf, inf_ref), "lse +inf positions differ " + what
    assert not torch.isnan(lse).any(), "NaN in lse " + what
    fin = ~inf_ref
    le, lr = lse[fin], lse_ref[fin]
    lerr = (le - lr).abs()
    lbad = lerr > torch.maximum(torch.full_like(lerr, 1e-6), lr.abs() * (8 / 65536))
    assert not lbad.any(), "lse: %d elements off, max abs err %.3g %s" % (int(lbad.sum()), float(lerr.max()), what)


def make_case(b, s_q, h_q, h_kv, page, lens, dtype, seed=0, device="cpu", extra_cols=1):
    """Random q and paged KV; page slots no sequence covers hold NaN; block-table entries past each
    sequence's last page hold UNUSED_PAGE."""
    gen = torch.Generator().manual_seed(seed)
    L = torch.tensor(lens, dtype=torch.int32)
    pages_needed = [-(-x // page) for x in lens]
    max_pages = max(max(pages_needed), 1) + extra_cols
    num_blocks = b * max_pages + 3
    q = torch.randn(b, s_q, h_q, D, generator=gen).to(dtype)
    kv = torch.randn(num_blocks, page, h_kv, D, generator=gen).to(dtype)
    perm = torch.randperm(num_blocks, generator=gen)[: b * max_pages].view(b, max_pages)
    nvalid = (L.long()[:, None] - torch.arange(max_pages)[None, :] * page).clamp(0, page)  # [b, max_pages]
    slot_ok = torch.arange(page)[None, None, :] < nvalid[:, :, None]
    valid = torch.zeros(num_blocks, page, dtype=torch.bool)
    valid[perm.reshape(-1)] = slot_ok.reshape(-1, page)
    kv[~valid] = float("nan")
    bt = perm.to(torch.int32)
    bt[torch.arange(max_pages)[None, :] >= torch.tensor(pages_needed)[:, None]] = UNUSED_PAGE
    return q.to(device), kv.to(device), bt.to(device), L.to(device)


def run_and_check(q, kv, bt, L, causal, scale=None, what=""):
    h_q, h_kv, s_q = q.shape[2], kv.shape[2], q.shape[1]
    meta, splits = flash_mla.get_mla_metadata(L, s_q * h_q // h_kv, h_kv)
    out, lse = flash_mla.flash_mla_with_kvcache(q, kv, bt, L, DV, meta, splits, softmax_scale=scale, causal=causal)
    assert out.dtype == q.dtype and lse.dtype == torch.float32
    assert out.shape == (q.shape[0], s_q, h_q, DV) and lse.shape == (q.shape[0], h_q, s_q)
    out_ref, lse_ref = ref_mla(q, kv, bt, L, causal, D ** -0.5 if scale is None else scale)
    check_close(out, lse, out_ref, lse_ref, what)
    return out, lse


# (b, s_q, h_q, h_kv, page_size, lengths, causal)
CASES = [
    (1, 1, 16, 1, 64, [100], False),
    (3, 2, 16, 1, 64, [0, 65, 200], True),
    (4, 4, 8, 2, 16, [1, 3, 130, 64], True),  # L < s_q: causal rows with no key
    (4, 4, 8, 2, 16, [1, 3, 130, 64], False),
    (2, 1, 1, 1, 1, [5, 0], False),  # page size 1
    (5, 3, 6, 3, 32, [40, 0, 97, 2, 300], True),
    (2, 2, 128, 1, 64, [70, 129], False),
    (1, 1, 3, 3, 128, [257], False),  # h_q == h_kv
    (6, 2, 9, 1, 64, [0, 250, 31, 64, 128, 190], True),
    (3, 1, 16, 1, 64, [0, 0, 0], False),  # nothing to attend anywhere
    (2, 5, 64, 8, 48, [77, 5], True),  # page size not a power of two, s_q 5
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "b%d-sq%d-hq%d-hkv%d-p%d-%s" % (c[:5] + ("causal" if c[6] else "full",)))
def test_decode_ref_matches_torch(case, dtype):
    b, s_q, h_q, h_kv, page, lens, causal = case
    q, kv, bt, L = make_case(b, s_q, h_q, h_kv, page, lens, dtype, seed=CASES.index(case))
    out, lse = run_and_check(q, kv, bt, L, causal, what=str(case))
    # rows with no visible key: out exactly 0, lse +inf
    for i, n in enumerate(lens):
        for t in range(s_q):
            if n - (s_q - 1 - t if causal else 0) <= 0:
                assert torch.all(out[i, t] == 0)
                assert torch.all(lse[i, :, t] == float("inf"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_varlen_random(dtype):
    rng = random.Random(1)
    b, s_q, h_q, h_kv, page = 8, 2, 16, 2, 64
    lens = [max(int(rng.normalvariate(300, 150)), s_q) for _ in range(b)]
    lens[3] = 0
    q, kv, bt, L = make_case(b, s_q, h_q, h_kv, page, lens, dtype, seed=7)
    run_and_check(q, kv, bt, L, True, what="varlen")
    run_and_check(q, kv, bt, L, False, what="varlen")


def test_softmax_scale():
    q, kv, bt, L = make_case(2, 2, 16, 1, 64, [90, 33], torch.bfloat16, seed=3)
    run_and_check(q, kv, bt, L, True, scale=0.3, what="scale 0.3")


def test_strided_inputs():
    """q, k_cache and block_table as strided views (inner dims contiguous, strides multiples of 8)."""
    b, s_q, h_q, h_kv, page = 3, 2, 8, 2, 16
    q0, kv0, bt0, L = make_case(b, s_q, h_q, h_kv, page, [40, 0, 70], torch.bfloat16, seed=5)
    qbig = torch.zeros(b, s_q + 1, h_q, 640, dtype=q0.dtype)
    qbig[:, 1:, :, :D] = q0
    q = qbig[:, 1:, :, :D]
    kvbig = torch.full((kv0.shape[0], page, h_kv, 600), float("nan"), dtype=kv0.dtype)
    kvbig[..., :D] = kv0
    kv = kvbig[..., :D]
    btbig = torch.full((b, bt0.shape[1] + 5), UNUSED_PAGE, dtype=torch.int32)
    btbig[:, 2 : 2 + bt0.shape[1]] = bt0
    bt = btbig[:, 2 : 2 + bt0.shape[1]]
    assert not q.is_contiguous() and not kv.is_contiguous() and not bt.is_contiguous()
    out, lse = run_and_check(q, kv, bt, L, True, what="strided")
    out_c, lse_c = run_and_check(q0, kv0, bt0, L, True, what="contiguous")
    assert torch.equal(out, out_c) and torch.equal(lse, lse_c)


def test_deterministic():
    q, kv, bt, L = make_case(4, 2, 16, 1, 64, [300, 5, 0, 129], torch.bfloat16, seed=11)
    m, s = flash_mla.get_mla_metadata(L, 32, 1)
    o1, l1 = flash_mla.flash_mla_with_kvcache(q, kv, bt, L, DV, m, s, causal=True)
    o2, l2 = flash_mla.flash_mla_with_kvcache(q, kv, bt, L, DV, m, s, causal=True)
    assert torch.equal(o1, o2) and torch.equal(l1, l2)


# ---------------------------------------------------------------------------------------------
# Scheduler metadata
# ---------------------------------------------------------------------------------------------
PACK_MAX_BATCH, PACK_SHIFT = 1024, 16  # src/params.h


def decode_num_splits(raw):
    """num_splits as src/params.h lays it out: (slot base per request, b + 1 entries; the request at
    each position of the part order, b entries). Batches up to PACK_MAX_BATCH keep the order in the
    high bits."""
    b = len(raw) - 1
    if b > PACK_MAX_BATCH:
        return raw, list(range(b))
    mask = (1 << PACK_SHIFT) - 1
    return [x & mask for x in raw], [x >> PACK_SHIFT for x in raw[:b]]


def metadata_segments(meta, splits, lens, parts):
    """Decode the layout of src/params.h and check it: every n-block of every request covered once,
    in order; every request (also one without keys) has num_splits[i+1] - num_splits[i] segments,
    whose split indices run 0, 1, ... in key order. Returns the segments per request."""
    b = len(lens)
    assert meta.dtype == torch.int32 and splits.dtype == torch.int32
    assert meta.shape == (parts, 8) and splits.shape == (b + 1,)
    m = meta.tolist()
    raw = splits.tolist()
    ns, order = decode_num_splits(raw)
    assert sorted(order) == list(range(b)), "the part order in num_splits is not a permutation"
    assert ns[0] == 0 and all(ns[i] <= ns[i + 1] for i in range(b)) and ns[b] <= b + parts
    nb = [-(-x // 64) if x > 0 else 0 for x in lens]
    seen = [[] for _ in range(b)]  # (split index, lo, hi) per request
    for row in m:
        assert row[5:] == [0, 0, 0]
        br, bblk, er, eblk, bsplit = row[:5]
        if br >= b:
            continue
        assert 0 <= br <= er < b, row
        for pos in range(br, er + 1):  # positions of the part order; order[pos] is the request
            i = order[pos]
            lo = bblk if pos == br else 0
            hi = eblk if pos == er else nb[i]
            assert 0 <= lo <= hi <= nb[i], (row, i, lo, hi, nb[i])
            seen[i].append((bsplit if pos == br else 0, lo, hi))
    for i in range(b):
        segs = sorted(seen[i])
        assert [s for s, _, _ in segs] == list(range(len(segs))), "request %d: split indices %s" % (i, segs)
        assert len(segs) == ns[i + 1] - ns[i], "request %d: %d segments, num_splits says %d" % (i, len(segs), ns[i + 1] - ns[i])
        pos = 0
        for _, lo, hi in segs:
            assert lo == pos, "request %d: gap or overlap at n-block %d (%s)" % (i, pos, segs)
            pos = hi
        assert pos == nb[i], "request %d: covered %d of %d n-blocks (%s)" % (i, pos, nb[i], segs)
    return seen


def check_metadata(meta, splits, lens, parts):
    seen = metadata_segments(meta, splits, lens, parts)
    for i, segs in enumerate(seen):  # params.h: no segment is empty unless its request has no keys
        if lens[i] > 0:
            assert all(hi > lo for _, lo, hi in segs), "request %d (L = %d): empty split %s" % (i, lens[i], segs)


@pytest.mark.parametrize(
    "lens,rows,h_kv",
    [
        ([100], 16, 1),  # W = 7, 132 parts, Q = 1: a raw boundary lands on the first n-block unit
        ([0, 65, 200, 4096, 1, 0], 128, 1),
        ([5000] * 64, 64, 1),
        ([0] * 10, 16, 1),
        ([random.Random(i).randint(0, 9000) for i in range(300)], 2 * 128, 1),
        ([random.Random(i).randint(0, 300) for i in range(1000)], 8, 8),
    ],
    ids=["one", "mixed", "uniform", "all-zero", "b300", "b1000-hkv8"],
)
def test_metadata_host(lens, rows, h_kv):
    L = torch.tensor(lens, dtype=torch.int32)
    meta, splits = flash_mla.get_mla_metadata(L, rows, h_kv)
    parts = max(1, flash_mla.CPU_SM_COUNT // (-(-rows // 64) * h_kv))
    check_metadata(meta, splits, lens, parts)
    for p in (1, 7, 132, 1024):
        meta, splits = flash_mla.get_mla_metadata(L, rows, h_kv, num_sm_parts=p)
        check_metadata(meta, splits, lens, p)


def test_metadata_host_random():
    rng = random.Random(123)
    for _ in range(200):
        b = rng.choice([1, 2, 3, 5, 17, 64, 300])
        top = rng.choice([1, 64, 65, 200, 5000, 40000])
        lens = [0 if rng.random() < 0.2 else rng.randint(1, top) for _ in range(b)]
        parts = rng.choice([1, 2, 3, 7, 33, 66, 132, 264, 1024])
        meta, splits = flash_mla.get_mla_metadata(torch.tensor(lens, dtype=torch.int32), 64, 1, num_sm_parts=parts)
        check_metadata(meta, splits, lens, parts)


@pytest.mark.parametrize(
    "b,L,rows,expect_split",
    [
        (128, 8192, 64, False),  # the tp shape: 128 equal requests on 132 parts, one request each
        (128, 8192, 128, False),  # 2 M tiles: 66 parts, two requests each
        (124, 8192, 64, False),  # longest no-split part 133 <= Q 125 + 5 + 4
        (100, 8192, 64, True),  # 32 parts would idle: splitting pays
        (32, 8192, 64, True),  # each request needs ~4 parts
        (264, 640, 64, False),  # two equal requests per part
    ],
)
def test_metadata_no_split_mode(b, L, rows, expect_split):
    """params.h's no-split mode: whole requests per part when that costs at most FMLA_COMBINE_COST
    n-blocks more than the split schedule's bound; every block still covered exactly once."""
    lens = [L] * b
    meta, splits = flash_mla.get_mla_metadata(torch.tensor(lens, dtype=torch.int32), rows, 1)
    parts = meta.shape[0]
    check_metadata(meta, splits, lens, parts)
    slots = decode_num_splits(splits.tolist())[0]
    per = [slots[i + 1] - slots[i] for i in range(b)]
    assert (max(per) > 1) == expect_split, (b, L, rows, parts, max(per))
    if not expect_split:  # longest part: whole requests, within Q + OVH + COMBINE units of the bound
        nb = -(-L // 64)
        Q = -(-(b * (nb + 5)) // parts)
        longest = max((r[2] - r[0] + 1) * (nb + 5) for r in meta.tolist() if r[0] < b)
        assert longest <= Q + 5 + 4, (longest, Q)


def test_metadata_old_and_new_api_agree():
    b, s_q, h_q, h_kv = 5, 2, 32, 1
    q, kv, bt, L = make_case(b, s_q, h_q, h_kv, 64, [10, 300, 0, 64, 129], torch.bfloat16, seed=2)
    meta, splits = flash_mla.get_mla_metadata(L, s_q * h_q // h_kv, h_kv)
    o1, l1 = flash_mla.flash_mla_with_kvcache(q, kv, bt, L, DV, meta, splits, causal=True)

    sched, none = flash_mla.get_mla_metadata()
    assert isinstance(sched, flash_mla.FlashMLASchedMeta) and none is None
    assert not sched.have_initialized and sched.config is None
    assert sched.tile_scheduler_metadata is None and sched.num_splits is None
    o2, l2 = flash_mla.flash_mla_with_kvcache(q, kv, bt, L, DV, sched, None, causal=True)
    assert sched.have_initialized
    c = sched.config
    assert (c.b, c.s_q, c.h_q, c.page_block_size, c.h_k, c.causal) == (b, s_q, h_q, 64, h_kv, True)
    assert (c.is_fp8_kvcache, c.topk, c.extra_page_block_size, c.extra_topk) == (False, None, None, None)
    assert torch.equal(sched.tile_scheduler_metadata, meta) and torch.equal(sched.num_splits, splits)
    assert torch.equal(o1, o2) and torch.equal(l1, l2)
    kept = sched.tile_scheduler_metadata
    o3, l3 = flash_mla.flash_mla_with_kvcache(q, kv, bt, L, DV, sched, None, causal=True)  # reused
    assert sched.tile_scheduler_metadata is kept
    assert torch.equal(o1, o3) and torch.equal(l1, l3)

    # metadata None: computed for the call
    o4, l4 = flash_mla.flash_mla_with_kvcache(q, kv, bt, L, DV, None, None, causal=True)
    assert torch.equal(o1, o4) and torch.equal(l1, l4)

    # a mismatching later call
    with pytest.raises(ValueError, match="causal"):
        flash_mla.flash_mla_with_kvcache(q, kv, bt, L, DV, sched, None, causal=False)
    with pytest.raises(ValueError, match="b \\(batch size\\)"):
        flash_mla.flash_mla_with_kvcache(q[:2], kv, bt[:2], L[:2], DV, sched, None, causal=True)
    with pytest.raises(ValueError, match="h_q"):
        flash_mla.flash_mla_with_kvcache(q[:, :, :16], kv, bt, L, DV, sched, None, causal=True)
    with pytest.raises(ValueError, match="s_q"):
        flash_mla.flash_mla_with_kvcache(q[:, :1], kv, bt, L, DV, sched, None, causal=True)
    kv2 = kv.view(kv.shape[0] * 2, 32, h_kv, D)
    bt2 = torch.where(bt == UNUSED_PAGE, bt, bt * 2)
    bt2 = torch.stack([bt2, bt2 + 1], dim=-1).reshape(b, -1)
    with pytest.raises(ValueError, match="page_block_size"):
        flash_mla.flash_mla_with_kvcache(q, kv2, bt2, L, DV, sched, None, causal=True)
    with pytest.raises(ValueError, match="num_splits"):
        flash_mla.flash_mla_with_kvcache(q, kv, bt, L, DV, sched, splits, causal=True)


def test_metadata_dtype_device():
    L = torch.tensor([3, 4000], dtype=torch.int32)
    meta, splits = flash_mla.get_mla_metadata(L, 1, 1)
    assert meta.device.type == "cpu" and splits.device.type == "cpu"
    # non-contiguous cache_seqlens is accepted (copied) by get_mla_metadata
    L2 = torch.tensor([3, 0, 4000, 0], dtype=torch.int32)[::2]
    m2, s2 = flash_mla.get_mla_metadata(L2, 1, 1)
    assert torch.equal(m2, meta) and torch.equal(s2, splits)


# ---------------------------------------------------------------------------------------------
# Package and ABI
# ---------------------------------------------------------------------------------------------
def test_version():
    v = _lib.version()
    assert flash_mla.__version__ == "%d.%d.%d" % (v // 10000, v // 100 % 100, v % 100)
    assert os.path.isfile(flash_mla.library_path)


def test_status_strings():
    for code in range(0, 13):
        assert _lib.status_string(code).startswith(b"FLASH_MLA_")


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) to check the struct layout against")
def test_params_struct_layout(tmp_path):
    """ctypes' DecodeParams (and the struct.pack format) match the C compiler's
    flash_mla_decode_params_t: size and every field offset."""
    names = [n for n, _ in _lib.DecodeParams._fields_]
    src = tmp_path / "layout.c"
    src.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"flash_mla.h\"\nint main(void) {\n"
        '  printf("%zu\\n", sizeof(flash_mla_decode_params_t));\n'
        + "".join('  printf("%%zu\\n", offsetof(flash_mla_decode_params_t, %s));\n' % n for n in names)
        + "  return 0;\n}\n"
    )
    exe = tmp_path / "layout"
    subprocess.check_call(["cc", "-std=c11", "-I", os.path.join(REPO, "include"), str(src), "-o", str(exe)])
    got = [int(x) for x in subprocess.check_output([str(exe)]).split()]
    assert got[0] == ctypes.sizeof(_lib.DecodeParams)
    assert got[1:] == [getattr(_lib.DecodeParams, n).offset for n in names]
    assert _lib.struct.calcsize(_lib.DECODE_PARAMS_FORMAT) == got[0]
    # the C header has exactly these fields (no field added on one side only)
    header = open(os.path.join(REPO, "include", "flash_mla.h")).read()
    body = header[header.index("typedef struct flash_mla_decode_params {") : header.index("} flash_mla_decode_params_t;")]
    for n in names:
        assert (" %s;" % n in body) or (" %s," % n in body) or ("*%s;" % n in body), n


def test_no_device_status_maps_to_runtime_error():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the NO_DEVICE path is not reachable")
    parts = _lib._i32()
    st = _lib.get_num_sm_parts(-1, 1, 1, ctypes.byref(parts))
    assert st == _lib.ERROR_NO_DEVICE
    with pytest.raises(RuntimeError, match="FLASH_MLA_ERROR_NO_DEVICE"):
        _lib.check(st, "probe")


# ---------------------------------------------------------------------------------------------
# Benchmark case list (bench/cases.json) against its recipe
# ---------------------------------------------------------------------------------------------
def _load_bench():
    spec = importlib.util.spec_from_file_location("fmla_bench", os.path.join(REPO, "bench", "bench.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_cases_reproduce():
    """The varlen lengths of bench/cases.json come from the anchor's recipe: random.seed(0) before
    each case, then max(int(random.normalvariate(s_k, s_k / 2)), s_q) per request; the file keeps
    their sum and first values as a check. Where the anchor files exist (/work/shared/anchors),
    the generated lists equal the anchor's lists exactly."""
    bench = _load_bench()
    cases = bench.load_cases()
    assert {c["set"] for c in cases} == {"standard", "tp", "latency"}
    for c in cases:
        lens = bench.case_seqlens(c)
        assert len(lens) == c["b"]
        if c["varlen"]:
            assert sum(lens) == c["cache_seqlens_sum"] and lens[: len(c["cache_seqlens_head"])] == c["cache_seqlens_head"]
        else:
            assert lens == [c["s_k"]] * c["b"]
    anchors = [os.path.join("/work/shared/anchors", f) for f in ("flashmla-h100.json", "flashmla-h200.json")]
    anchors = [a for a in anchors if os.path.isfile(a)]
    if not anchors:
        pytest.skip("anchor files not present: checked against the sums in bench/cases.json only")
    key = lambda c: (c["set"], c["b"], c["s_q"], c["s_k"], c["varlen"], c["causal"], c["h_q"], c["h_kv"])
    mine = [key(c) for c in cases]
    for a in anchors:
        with open(a) as f:
            anchor = json.load(f)
        assert [key(c) for c in anchor["cases"]] == mine, a
        for c in anchor["cases"]:
            if c.get("cache_seqlens") is not None:
                assert bench.case_seqlens(c) == c["cache_seqlens"], (a, key(c))
