"""GPU tests of flash_mla (skip, with the reason shown by -rs, when torch sees no CUDA GPU).

The sweep: b in {1, 2, 6, 64} x s_q in {1, 2, 4} x s_k in {20, 140, 4096} x (h_q, h_kv) with
h_q in {1, 3, 9, 63, 64, 126, 128}, h_kv in {1, 2, 3, 8}, h_kv | h_q x varlen on/off x causal
on/off x bf16/fp16; page size 64; NaN in every page slot no sequence covers; block-table entries
past a sequence's last page = 2147480000; out and lse NaN-poisoned before every call (passed with
out= / lse=); reference on the GPU with torch in float64 (see reference()), batched. One pytest test per
(dtype, b, s_k) runs its 192 cases and reports every failing case. Plus: a batch of 128 with about
half the sequences empty, page sizes 1/3/4/16/48/96/128 (1, 3, 4, 48 and 96 take the Hopper
kernels' gather mode; 1, 3 and 4 with 128 or 256 rows its 2-CTA clusters), strided tensors,
CUDA-graph capture (replay ==
eager bit for bit, also with the metadata captured), determinism, the GPU scheduler vs its host
twin up to b = 65536, the FlashMLASchedMeta form, device checks, concurrent calls from two threads
(a stream each on one device, and a thread per GPU when two are visible).

Environment:
  FLASH_MLA_TEST_KERNEL=auto|portable|hopper   kernel for every decode call (default auto); a kernel
                                               the device cannot run skips the decode tests
  FLASH_MLA_TEST_SUBSET=1                      a few representative cases (for compute-sanitizer)
The terminal summary prints how many decode cases ran and failed, and the measured host time of a
small call.
"""
import os
import random
import statistics
import time
import zlib

import pytest
import torch

import flash_mla
from flash_mla import _lib

HAVE_CUDA = torch.cuda.is_available()
# FLASH_MLA_TEST_DEVICE=cpu: a dry run of this file's logic on the C reference (CPU tensors), for
# checking the tests themselves on a machine without a GPU; slow, so use it with the subset.
DEV = os.environ.get("FLASH_MLA_TEST_DEVICE", "cuda") or "cuda"
DRY_RUN = DEV == "cpu"
pytestmark = pytest.mark.skipif(
    not HAVE_CUDA and not DRY_RUN, reason="no CUDA GPU: torch.cuda.is_available() is False, the GPU tests need one"
)
cuda_only = pytest.mark.skipif(DRY_RUN, reason="FLASH_MLA_TEST_DEVICE=cpu dry run: this test needs CUDA")


def sync():
    if not DRY_RUN:
        torch.cuda.synchronize()

KERNEL = os.environ.get("FLASH_MLA_TEST_KERNEL", "auto") or "auto"
SUBSET = os.environ.get("FLASH_MLA_TEST_SUBSET", "") not in ("", "0")
D, DV = 576, 512
UNUSED = 2147480000
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
H_PAIRS = [(h_q, h_kv) for h_kv in (1, 2, 3, 8) for h_q in (1, 3, 9, 63, 64, 126, 128) if h_q % h_kv == 0]
SWEEP_B = (1, 2, 6, 64)
SWEEP_SK = (20, 140, 4096)
SWEEP_SQ = (1, 2, 4)

# Subset: few cases that still cover partial pages, splits + combine, several M tiles, GQA, causal
# rows without keys, empty requests, both dtypes.
# (dtype, b, s_q, s_k, h_q, h_kv, varlen, causal)
SUBSET_CASES = [
    ("bf16", 6, 2, 140, 128, 1, True, True),
    ("bf16", 6, 1, 140, 9, 3, True, False),
    ("bf16", 2, 4, 20, 64, 8, False, True),
    ("bf16", 1, 1, 4096, 128, 1, False, False),
    ("fp16", 64, 1, 20, 1, 1, True, False),
    ("fp16", 2, 2, 140, 63, 3, True, True),
]

STATS = {"cases": 0, "failed": 0, "unsupported": 0, "groups": 0, "host_us": None, "kernel": KERNEL}


class _Summary:
    def pytest_terminal_summary(self, terminalreporter):
        tr = terminalreporter
        tr.section("flash_mla GPU tests")
        tr.write_line(
            "kernel=%s subset=%s: %d decode cases ran against the torch reference, %d failed"
            % (STATS["kernel"], SUBSET, STATS["cases"], STATS["failed"])
        )
        if STATS["unsupported"]:
            tr.write_line(
                "%d cases skipped: kernel=%s does not take their shape, e.g. %s"
                % (STATS["unsupported"], KERNEL, STATS["unsupported_examples"][0])
            )
        if STATS["host_us"] is not None:
            tr.write_line("host time of a small flash_mla_with_kvcache call (median, CPU clock): %.1f us" % STATS["host_us"])


@pytest.fixture(scope="module", autouse=True)
def _module_setup(request):
    pm = request.config.pluginmanager
    if not pm.has_plugin("flash_mla_gpu_summary"):
        pm.register(_Summary(), "flash_mla_gpu_summary")
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # no TF32 in the reference's matmuls
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


_kernel_probe = {}


@pytest.fixture
def kernel():
    """KERNEL, or a skip when this device cannot run it."""
    if "ok" not in _kernel_probe:
        # DeepSeek's decode shape (h_q 128, h_kv 1, s_q 1, page 64): every kernel should take it
        q = torch.zeros(1, 1, 128, D, dtype=torch.bfloat16, device=DEV)
        kv = torch.zeros(1, 64, 1, D, dtype=torch.bfloat16, device=DEV)
        bt = torch.zeros(1, 1, dtype=torch.int32, device=DEV)
        L = torch.full((1,), 5, dtype=torch.int32, device=DEV)
        m, s = flash_mla.get_mla_metadata(L, 128, 1)
        try:
            flash_mla.flash_mla_with_kvcache(q, kv, bt, L, DV, m, s, kernel=KERNEL)
            sync()
            _kernel_probe["ok"] = None
        except flash_mla.FlashMLAError as e:
            if e.status != _lib.ERROR_UNSUPPORTED_DEVICE:
                raise
            _kernel_probe["ok"] = str(e)
    if _kernel_probe["ok"] is not None:
        pytest.skip("FLASH_MLA_TEST_KERNEL=%s cannot run on %s: %s" % (KERNEL, torch.cuda.get_device_name(), _kernel_probe["ok"]))
    return KERNEL


# ---------------------------------------------------------------------------------------------
# Data, reference, comparison
# ---------------------------------------------------------------------------------------------
# Data follows FlashMLA's own decode test (q = clamp(randn, -1, 1), kv = clamp(randn / 10, -1, 1)),
# for which its tolerances (out abs 8e-4 or rel 2/128, lse abs 1e-6 or rel 8/65536) were set. The
# Hopper kernel, like FlashMLA, rounds the softmax weights P to the input dtype before P*V: with
# kv ten times larger (randn) that alone moves bf16 outputs by up to ~5e-3 on short sequences
# (measured on an H200), which these per-element tolerances do not allow.
def gen_lens(b, s_k, s_q, varlen, seed):
    if not varlen:
        return [s_k] * b
    rng = random.Random(seed)
    lens = [max(int(rng.normalvariate(s_k, s_k / 2)), s_q) for _ in range(b)]
    for i in range(b):  # some empty requests
        if rng.random() < 0.12:
            lens[i] = 0
    if b >= 6:
        lens[rng.randrange(b)] = 0
    return lens


class Pool:
    """Paged KV cache for one set of lengths: random where a sequence has a key, NaN in every other
    slot (partial last pages and spare blocks); block table with UNUSED past each last page."""

    def __init__(self, lens, page, h_kv, dtype, gen, extra_cols=1, spare=3):
        dev = DEV
        b = len(lens)
        self.lens = lens
        self.L = torch.tensor(lens, dtype=torch.int32, device=dev)
        pages = torch.tensor([-(-x // page) for x in lens], device=dev)
        max_pages = max(int(pages.max()), 1) + extra_cols
        n_used = int(pages.sum())
        total = n_used + spare
        # FlashMLA's test data (see the note above gen_lens).
        self.kv = torch.randn(total, page, h_kv, D, dtype=dtype, device=dev, generator=gen).div_(10).clamp_(-1, 1)
        perm = torch.randperm(total, device=dev, generator=gen)[:n_used]
        col = torch.arange(max_pages, device=dev)
        used = col[None, :] < pages[:, None]
        self.block_table = torch.full((b, max_pages), UNUSED, dtype=torch.int32, device=dev)
        self.block_table[used] = perm.to(torch.int32)
        nvalid = (self.L.long()[:, None] - col[None, :] * page).clamp(0, page)[used]  # [n_used]
        slot_ok = torch.arange(page, device=dev)[None, :] < nvalid[:, None]
        valid = torch.zeros(total, page, dtype=torch.bool, device=dev)
        valid[perm] = slot_ok
        self.kv.masked_fill_(~valid[:, :, None, None], float("nan"))


def reference(q, kv, block_table, lens, L, causal, scale, budget=6 << 30):
    """out [b, s_q, h_q, 512] and lse [b, h_q, s_q] (float32 results of a float64 computation),
    batched in chunks of requests. float64, not float32: a float32 torch matmul's own error on a
    576-long dot product reaches ~1e-6 on an lse near 0 (one or two visible keys), which is the
    whole lse tolerance; float64 keeps the reference's error out of the comparison."""
    b, s_q, h_q, _ = q.shape
    _, page, h_kv, _ = kv.shape
    dev = q.device
    g = h_q // h_kv
    out = torch.empty(b, s_q, h_q, DV, dtype=torch.float32, device=dev)
    lse = torch.empty(b, h_q, s_q, dtype=torch.float32, device=dev)
    s_max = max(max(lens), 1)
    per_req = s_max * h_kv * D * 8 * 2 + s_q * h_q * s_max * 8 * 3
    step = max(1, budget // per_req)
    t = torch.arange(s_q, device=dev)
    for i0 in range(0, b, step):
        i1 = min(b, i0 + step)
        n = i1 - i0
        S = max(max(lens[i0:i1]), 1)
        npg = -(-S // page)
        Lc = L[i0:i1].long()
        used = torch.arange(npg, device=dev)[None, :] * page < Lc[:, None]
        bt = torch.where(used, block_table[i0:i1, :npg].long(), torch.zeros((), dtype=torch.long, device=dev))
        # a page id outside [0, num_blocks) inside L: its keys score 0 and carry a zero value row
        page_ok = (bt >= 0) & (bt < kv.shape[0])
        bt = torch.where(page_ok, bt, torch.zeros((), dtype=torch.long, device=dev))
        K = kv[bt].reshape(n, npg * page, h_kv, D)[:, :S].double()
        key_ok = torch.arange(S, device=dev)[None, :] < Lc[:, None]
        key_ok &= page_ok.repeat_interleave(page, dim=1)[:, :S]
        K.masked_fill_(~key_ok[:, :, None, None], 0.0)
        qf = q[i0:i1].double().reshape(n, s_q, h_kv, g, D)
        sc = torch.einsum("bthgd,bshd->bhtgs", qf, K).mul_(scale)
        limit = Lc[:, None] - (s_q - 1 - t)[None, :] if causal else Lc[:, None].expand(n, s_q)
        vis = torch.arange(S, device=dev)[None, None, :] < limit[:, :, None]
        sc.masked_fill_(~vis[:, None, :, None, :], float("-inf"))
        l = torch.logsumexp(sc, dim=-1)
        p = torch.exp(sc - l[..., None]).nan_to_num_(nan=0.0)
        out[i0:i1] = torch.einsum("bhtgs,bshd->bthgd", p, K[..., :DV]).reshape(n, s_q, h_q, DV)
        l = torch.where(torch.isinf(l), torch.full_like(l, float("inf")), l)
        lse[i0:i1] = l.permute(0, 1, 3, 2).reshape(n, h_q, s_q)
    return out, lse


def compare(out, lse, out_ref, lse_ref):
    """The project's tolerances, evaluated on the GPU, one host sync. Returns (ok, detail)."""
    o = out.float()
    err = (o - out_ref).abs()
    tol = (out_ref.abs() * (2 / 128)).clamp_(min=8e-4)
    bad = ~(err <= tol)  # NaN counts as bad
    od, rd = o.double(), out_ref.double()
    xy = (od * rd).sum()
    xx = (od * od + rd * rd).sum()
    inf_ref = lse_ref == float("inf")
    inf_mis = (lse == float("inf")) != inf_ref
    lerr = (lse - lse_ref).abs()
    ltol = (lse_ref.abs() * (8 / 65536)).clamp_(min=1e-6)
    lbad = ~(lerr <= ltol) & ~inf_ref
    stats = torch.stack(
        [
            bad.sum().double(),
            torch.nan_to_num(err, nan=float("inf")).max().double() if err.numel() else torch.zeros((), dtype=torch.float64, device=err.device),
            xy,
            xx,
            inf_mis.sum().double(),
            lbad.sum().double(),
            torch.isnan(lse).sum().double(),
        ]
    ).tolist()
    n_bad, max_err, xy, xx, n_inf, n_lbad, n_lnan = stats
    cd = 0.0 if xx == 0 else 1 - 2 * xy / xx
    ok = n_bad == 0 and cd < 5e-6 and n_inf == 0 and n_lbad == 0 and n_lnan == 0
    detail = "out bad %d (max abs err %.3g), cos diff %.3g, lse inf mismatches %d, lse bad %d, lse NaN %d" % (
        n_bad, max_err, cd, n_inf, n_lbad, n_lnan)
    return ok, detail


def run_decode(q, pool, causal, kernel, meta=None, scale=None):
    b, s_q, h_q, _ = q.shape
    h_kv = pool.kv.shape[2]
    if meta is None:
        meta = flash_mla.get_mla_metadata(pool.L, s_q * h_q // h_kv, h_kv)
    out = torch.full((b, s_q, h_q, DV), float("nan"), dtype=q.dtype, device=q.device)
    lse = torch.full((b, h_q, s_q), float("nan"), dtype=torch.float32, device=q.device)
    o, l = flash_mla.flash_mla_with_kvcache(
        q, pool.kv, pool.block_table, pool.L, DV, meta[0], meta[1], softmax_scale=scale, causal=causal,
        kernel=kernel, out=out, lse=lse)
    assert o is out and l is lse
    return out, lse


def check_case(q, pool, causal, kernel, what, failures, scale=None):
    try:
        out, lse = run_decode(q, pool, causal, kernel, scale=scale)
    except flash_mla.FlashMLAError as e:
        if kernel != "auto" and e.status == _lib.ERROR_UNSUPPORTED_DEVICE:
            # an explicitly requested kernel that does not take this shape: counted, not failed
            STATS["unsupported"] += 1
            STATS.setdefault("unsupported_examples", []).append("%s: %s" % (what, e))
            return None, None
        STATS["cases"] += 1
        STATS["failed"] += 1
        failures.append("%s: raised %s" % (what, e))
        return None, None
    out_ref, lse_ref = reference(q, pool.kv, pool.block_table, pool.lens, pool.L, causal, D ** -0.5 if scale is None else scale)
    ok, detail = compare(out, lse, out_ref, lse_ref)
    STATS["cases"] += 1
    if not ok:
        STATS["failed"] += 1
        failures.append("%s: %s" % (what, detail))
    return out, lse


def assert_no_failures(failures, total):
    if failures:
        shown = "\n  ".join(failures[:12])
        more = "" if len(failures) <= 12 else "\n  ... and %d more" % (len(failures) - 12)
        pytest.fail("%d of %d cases failed:\n  %s%s" % (len(failures), total, shown, more), pytrace=False)


def desc(dtype, b, s_q, s_k, h_q, h_kv, varlen, causal, page=64):
    return "%s b=%d s_q=%d s_k=%d h_q=%d h_kv=%d varlen=%d causal=%d page=%d" % (
        dtype, b, s_q, s_k, h_q, h_kv, varlen, causal, page)


# ---------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------
if SUBSET:
    _GROUPS = [("subset", None, None)]
else:
    _GROUPS = [(dt, b, s_k) for dt in DTYPES for b in SWEEP_B for s_k in SWEEP_SK]


def _group_cases(dt, b, s_k):
    """(dtype, b, s_q, s_k, h_q, h_kv, varlen, causal) of one group, ordered so data is shared."""
    if dt == "subset":
        return list(SUBSET_CASES)
    return [
        (dt, b, s_q, s_k, h_q, h_kv, varlen, causal)
        for varlen in (False, True)
        for s_q in SWEEP_SQ
        for h_kv in (1, 2, 3, 8)
        for h_q, hk in H_PAIRS
        if hk == h_kv
        for causal in (False, True)
    ]


@pytest.mark.parametrize("dt,b,s_k", _GROUPS, ids=["%s-b%s-sk%s" % g for g in _GROUPS])
def test_sweep(dt, b, s_k, kernel):
    cases = _group_cases(dt, b, s_k)
    STATS["groups"] += 1
    failures = []
    gen = torch.Generator(device=DEV)
    pool_key, pool = None, None
    for n, (dtn, b_, s_q, s_k_, h_q, h_kv, varlen, causal) in enumerate(cases):
        dtype = DTYPES[dtn]
        seed = zlib.crc32(repr((dtn, b_, s_q, s_k_, varlen)).encode()) & 0xFFFF
        key = (dtn, b_, s_q, s_k_, h_kv, varlen)
        if key != pool_key:  # consecutive cases share the KV cache
            gen.manual_seed(seed * 16 + h_kv)
            lens = gen_lens(b_, s_k_, s_q, varlen, seed)
            pool, pool_key = Pool(lens, 64, h_kv, dtype, gen), key
        q = torch.randn(b_, s_q, h_q, D, dtype=dtype, device=DEV, generator=gen).clamp_(-1, 1)
        check_case(q, pool, causal, kernel, desc(dtn, b_, s_q, s_k_, h_q, h_kv, varlen, causal), failures)
    assert_no_failures(failures, len(cases))


# ---------------------------------------------------------------------------------------------
# More shapes
# ---------------------------------------------------------------------------------------------
def test_half_empty_batch(kernel):
    """b = 128 with about half the sequences of length 0."""
    failures, total = [], 0
    gen = torch.Generator(device=DEV).manual_seed(5)
    rng = random.Random(5)
    lens = [0 if rng.random() < 0.5 else max(1, int(rng.normalvariate(1000, 500))) for _ in range(128)]
    combos = [(1, 128, 1, False), (2, 128, 1, True)] if SUBSET else [
        (s_q, h_q, h_kv, causal) for s_q in (1, 2) for h_q, h_kv in ((128, 1), (16, 1), (64, 8)) for causal in (False, True)]
    dtypes = ["bf16"] if SUBSET else ["bf16", "fp16"]
    for dt in dtypes:
        pools = {}
        for s_q, h_q, h_kv, causal in combos:
            if h_kv not in pools:
                pools[h_kv] = Pool(lens, 64, h_kv, DTYPES[dt], gen)
            q = torch.randn(128, s_q, h_q, D, dtype=DTYPES[dt], device=DEV, generator=gen).clamp_(-1, 1)
            check_case(q, pools[h_kv], causal, kernel, desc(dt, 128, s_q, 1000, h_q, h_kv, True, causal) + " half empty", failures)
            total += 1
    assert_no_failures(failures, total)


def test_empty_segment_runs(kernel):
    """Few parts, so each CTA walks many segments, with runs of empty requests (no key block) between
    ones with keys: the 64-row kernel's epilogue hand-off between its warpgroups must survive a
    segment that reaches it at once, repeatedly (a barrier phase run ahead would hang here)."""
    gen = torch.Generator(device=DEV).manual_seed(11)
    lens = [0, 0, 0, 300, 0, 0, 65, 0, 1, 0, 0, 0, 0, 700, 0, 64, 0, 0, 129, 0, 0, 0, 5, 0]
    pool = Pool(lens, 64, 1, torch.bfloat16, gen)
    failures, total = [], 0
    for s_q, h_q in [(1, 64), (1, 128), (2, 128), (1, 16)]:
        q = torch.randn(len(lens), s_q, h_q, D, dtype=torch.bfloat16, device=DEV, generator=gen).clamp_(-1, 1)
        out_ref, lse_ref = reference(q, pool.kv, pool.block_table, pool.lens, pool.L, True, D ** -0.5)
        for parts in (1, 2, 5):
            what = "s_q=%d h_q=%d parts=%d, runs of empty requests" % (s_q, h_q, parts)
            meta = flash_mla.get_mla_metadata(pool.L, s_q * h_q, 1, num_sm_parts=parts)
            try:
                out, lse = run_decode(q, pool, True, kernel, meta=meta)
            except flash_mla.FlashMLAError as e:
                if kernel != "auto" and e.status == _lib.ERROR_UNSUPPORTED_DEVICE:
                    continue
                failures.append("%s: raised %s" % (what, e))
                continue
            ok, detail = compare(out, lse, out_ref, lse_ref)
            total += 1
            if not ok:
                failures.append("%s: %s" % (what, detail))
    assert total > 0
    assert_no_failures(failures, total)


@pytest.mark.parametrize("page", [1, 3, 4, 16, 48, 80, 96, 128])
def test_page_sizes(page, kernel):
    failures, total = [], 0
    gen = torch.Generator(device=DEV).manual_seed(page)
    combos = [(6, 2, 140, 16, 1, True, True)] if SUBSET else [
        (b, s_q, s_k, h_q, h_kv, True, causal)
        for b in (1, 6) for s_q in (1, 2) for s_k in (20, 140, 1000) for h_q, h_kv in ((16, 1), (64, 2), (128, 1))
        for causal in (False, True)]
    for dt in (["bf16"] if SUBSET else ["bf16", "fp16"]):
        for b, s_q, s_k, h_q, h_kv, varlen, causal in combos:
            lens = gen_lens(b, s_k, s_q, varlen, seed=b * 1000 + s_k)
            pool = Pool(lens, page, h_kv, DTYPES[dt], gen)
            q = torch.randn(b, s_q, h_q, D, dtype=DTYPES[dt], device=DEV, generator=gen).clamp_(-1, 1)
            check_case(q, pool, causal, kernel, desc(dt, b, s_q, s_k, h_q, h_kv, varlen, causal, page), failures)
            total += 1
    assert_no_failures(failures, total)


@pytest.mark.parametrize("page", [1, 3, 16, 48, 64, 96])
def test_bad_page_ids_inside_length(page, kernel):
    """Block-table entries inside L that are not page ids (-1, num_blocks, 2^31 - 1): their keys
    score 0 with a zero value row, in every loader (gather: 1, 3; TMA boxes of gcd(page, 64) rows:
    16, 48, 64, 96)."""
    failures, total = [], 0
    gen = torch.Generator(device=DEV).manual_seed(50 + page)
    rng = random.Random(page)
    for b, s_q, s_k, h_q, causal in ((3, 1, 300, 128, False), (2, 2, 700, 64, True), (4, 1, 150, 16, False)):
        lens = gen_lens(b, s_k, s_q, True, seed=page * 7 + b)
        pool = Pool(lens, page, 1, torch.bfloat16, gen)
        nblk = pool.kv.shape[0]
        for i, L in enumerate(lens):
            npg = -(-L // page)
            for col in rng.sample(range(npg), k=max(1, npg // 4)) if npg else []:
                pool.block_table[i, col] = rng.choice([-1, nblk, 2147483647])
        q = torch.randn(b, s_q, h_q, D, dtype=torch.bfloat16, device=DEV, generator=gen).clamp_(-1, 1)
        check_case(q, pool, causal, kernel, desc("bf16", b, s_q, s_k, h_q, 1, True, causal, page) + " bad page ids",
                   failures)
        total += 1
    assert_no_failures(failures, total)


def test_strided_tensors(kernel):
    """q, k_cache, block_table and out as strided views (inner dims contiguous)."""
    gen = torch.Generator(device=DEV).manual_seed(9)
    b, s_q, h_q, h_kv = 6, 2, 32, 2
    lens = gen_lens(b, 300, s_q, True, seed=9)
    pool = Pool(lens, 64, h_kv, torch.bfloat16, gen)
    qbig = torch.randn(b, s_q + 1, h_q, 640, dtype=torch.bfloat16, device=DEV, generator=gen).clamp_(-1, 1)
    q = qbig[:, 1:, :, :D]
    kvbig = torch.full((pool.kv.shape[0], 64, h_kv, 600), float("nan"), dtype=torch.bfloat16, device=DEV)
    kvbig[..., :D] = pool.kv
    btbig = torch.full((b, pool.block_table.shape[1] + 8), UNUSED, dtype=torch.int32, device=DEV)
    btbig[:, 3 : 3 + pool.block_table.shape[1]] = pool.block_table
    strided = Pool.__new__(Pool)
    strided.lens, strided.L = pool.lens, pool.L
    strided.kv = kvbig[..., :D]
    strided.block_table = btbig[:, 3 : 3 + pool.block_table.shape[1]]
    failures = []
    o1, l1 = check_case(q, strided, True, kernel, "strided", failures)
    o2, l2 = check_case(q.contiguous(), pool, True, kernel, "contiguous", failures)
    assert_no_failures(failures, 2)
    if o1 is None or o2 is None:
        pytest.skip("kernel=%s does not take this shape" % kernel)
    assert torch.equal(o1, o2) and torch.equal(l1, l2)
    meta = flash_mla.get_mla_metadata(pool.L, s_q * h_q // h_kv, h_kv)
    outbig = torch.full((b, s_q, h_q, 520), float("nan"), dtype=torch.bfloat16, device=DEV)
    o3, l3 = flash_mla.flash_mla_with_kvcache(q, strided.kv, strided.block_table, pool.L, DV, *meta, causal=True,
                                              kernel=kernel, out=outbig[..., :DV])
    assert torch.equal(o3, o1) and torch.equal(l3, l1)
    assert torch.isnan(outbig[..., DV:]).all()


def test_softmax_scale(kernel):
    gen = torch.Generator(device=DEV).manual_seed(4)
    lens = gen_lens(6, 500, 2, True, seed=4)
    pool = Pool(lens, 64, 1, torch.bfloat16, gen)
    q = torch.randn(6, 2, 64, D, dtype=torch.bfloat16, device=DEV, generator=gen).clamp_(-1, 1)
    failures = []
    for scale in (0.01, 0.2, -0.05, 0.0):  # the 64-row kernel takes the sign and a zero scale apart
        check_case(q, pool, True, kernel, "scale %g" % scale, failures, scale=scale)
    assert_no_failures(failures, 4)


# ---------------------------------------------------------------------------------------------
# CUDA graphs, determinism, scheduler
# ---------------------------------------------------------------------------------------------
def _graph_inputs(seed=3, b=16, s_q=2, h_q=128, h_kv=1, s_k=2000):
    """Inputs on the current device (tests on cuda:1 make them inside torch.cuda.device(1))."""
    gdev = torch.device("cuda", torch.cuda.current_device()) if DEV == "cuda" else DEV
    gen = torch.Generator(device=gdev).manual_seed(seed)
    lens = gen_lens(b, s_k, s_q, True, seed=seed)
    pool = Pool(lens, 64, h_kv, torch.bfloat16, gen)
    q = torch.randn(b, s_q, h_q, D, dtype=torch.bfloat16, device=DEV, generator=gen).clamp_(-1, 1)
    return pool, q


@cuda_only
def test_cuda_graph_replay_matches_eager(kernel):
    pool, q = _graph_inputs()
    s_q, h_q, h_kv = q.shape[1], q.shape[2], pool.kv.shape[2]
    meta = flash_mla.get_mla_metadata(pool.L, s_q * h_q // h_kv, h_kv)

    def step():
        return flash_mla.flash_mla_with_kvcache(q, pool.kv, pool.block_table, pool.L, DV, *meta, causal=True, kernel=kernel)

    eager_o, eager_l = step()
    sync()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        graph_o, graph_l = step()
    graph_o.fill_(float("nan"))
    graph_l.fill_(float("nan"))
    g.replay()
    sync()
    assert torch.equal(graph_o, eager_o) and torch.equal(graph_l, eager_l)
    # new q values, same addresses: the replay follows
    q.copy_(torch.randn_like(q).clamp_(-1, 1))
    eager_o2, eager_l2 = step()
    g.replay()
    sync()
    assert torch.equal(graph_o, eager_o2) and torch.equal(graph_l, eager_l2)
    assert not torch.equal(eager_o, eager_o2)


@cuda_only
def test_cuda_graph_with_metadata(kernel):
    """A decode step as a model runner captures it: metadata from the device cache_seqlens, then
    decode, in one graph; new lengths written in place are picked up by the replay."""
    pool, q = _graph_inputs(seed=8, s_k=600)
    b, s_q, h_q = q.shape[:3]
    h_kv = pool.kv.shape[2]
    L = pool.L.clone()

    def step():
        m = flash_mla.get_mla_metadata(L, s_q * h_q // h_kv, h_kv)
        return flash_mla.flash_mla_with_kvcache(q, pool.kv, pool.block_table, L, DV, *m, causal=True, kernel=kernel)

    step()
    sync()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        graph_o, graph_l = step()
    shorter = torch.tensor([max(0, x - 37 * (i % 4)) for i, x in enumerate(pool.lens)], dtype=torch.int32, device=DEV)
    for lens_now in (pool.L, shorter):
        L.copy_(lens_now)
        eager_o, eager_l = step()
        graph_o.fill_(float("nan"))
        g.replay()
        sync()
        assert torch.equal(graph_o, eager_o) and torch.equal(graph_l, eager_l)
    ref_o, ref_l = reference(q, pool.kv, pool.block_table, shorter.tolist(), shorter, True, D ** -0.5)
    ok, detail = compare(graph_o, graph_l, ref_o, ref_l)
    assert ok, detail


def test_deterministic(kernel):
    gen = torch.Generator(device=DEV).manual_seed(21)
    b, s_q, h_q = (6, 2, 128) if SUBSET else (64, 2, 128)
    lens = gen_lens(b, 4096, s_q, True, seed=21)
    pool = Pool(lens, 64, 1, torch.bfloat16, gen)
    q = torch.randn(b, s_q, h_q, D, dtype=torch.bfloat16, device=DEV, generator=gen).clamp_(-1, 1)
    meta = flash_mla.get_mla_metadata(pool.L, s_q * h_q, 1)
    runs = [flash_mla.flash_mla_with_kvcache(q, pool.kv, pool.block_table, pool.L, DV, *meta, causal=True, kernel=kernel)
            for _ in range(3)]
    for o, l in runs[1:]:
        assert torch.equal(o, runs[0][0]) and torch.equal(l, runs[0][1])
    num_splits = meta[1].diff()
    assert int(num_splits.max()) > 1, "the case should exercise split-KV + combine"


@cuda_only
def test_workspace_reuse_across_shapes_and_streams(kernel):
    """The per-(device, stream) workspace cache: calls that need more, then less, then more
    workspace, and two streams running at the same time, all match the reference."""
    from flash_mla import interface

    cases = []
    for seed, (b, s_k, h_q) in enumerate([(2, 3000, 16), (1, 700, 128), (5, 2000, 64)]):
        gen = torch.Generator(device=DEV).manual_seed(40 + seed)
        lens = gen_lens(b, s_k, 1, True, seed=40 + seed)
        pool = Pool(lens, 64, 1, torch.bfloat16, gen)
        q = torch.randn(b, 1, h_q, D, dtype=torch.bfloat16, device=DEV, generator=gen).clamp_(-1, 1)
        meta = flash_mla.get_mla_metadata(pool.L, h_q, 1)
        ref = reference(q, pool.kv, pool.block_table, lens, pool.L, False, D ** -0.5)
        cases.append((q, pool, meta, ref))

    def run(c):
        q, pool, meta, _ = c
        return flash_mla.flash_mla_with_kvcache(q, pool.kv, pool.block_table, pool.L, DV, *meta, kernel=kernel)

    for c in cases + cases[::-1]:  # sizes up and down on one stream
        o, l = run(c)
        ok, detail = compare(o, l, *c[3])
        assert ok, detail
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    outs = []
    for rep in range(3):  # two streams in flight at once, each with its own workspace
        for s, c in zip(streams, cases[:2]):
            with torch.cuda.stream(s):
                outs.append((run(c), c))
    torch.cuda.synchronize()
    for (o, l), c in outs:
        ok, detail = compare(o, l, *c[3])
        assert ok, detail
    keys = [k for k in interface._ws_tensors if k[1] in (streams[0].cuda_stream, streams[1].cuda_stream)]
    assert len(keys) == 2, "expected one cached workspace per stream, got %s" % keys


@cuda_only
@pytest.mark.parametrize("b", [1, 2, 128, 256, 1000, 65536])
def test_metadata_gpu_equals_host(b):
    rng = torch.Generator().manual_seed(b)
    lens = torch.randint(0, 10000, (b,), generator=rng, dtype=torch.int32)
    lens[torch.rand(b, generator=rng) < 0.2] = 0
    L = lens.to(DEV)
    configs = [(128, 1), (16, 1), (256, 1), (64 * 2, 8)]
    for rows, h_kv in configs:
        m_gpu, s_gpu = flash_mla.get_mla_metadata(L, rows, h_kv)
        parts = m_gpu.shape[0]
        m_cpu, s_cpu = flash_mla.get_mla_metadata(lens, rows, h_kv, num_sm_parts=parts)
        assert m_gpu.device.type == "cuda" and m_gpu.dtype == torch.int32 and s_gpu.shape == (b + 1,)
        assert torch.equal(m_gpu.cpu(), m_cpu), (b, rows, h_kv)
        assert torch.equal(s_gpu.cpu(), s_cpu), (b, rows, h_kv)
    assert 1 <= flash_mla.get_mla_metadata(L, 64, 1)[0].shape[0] <= 1024
    for parts in (1, 7, 1024):
        m_gpu, s_gpu = flash_mla.get_mla_metadata(L, 64, 1, num_sm_parts=parts)
        m_cpu, s_cpu = flash_mla.get_mla_metadata(lens, 64, 1, num_sm_parts=parts)
        assert torch.equal(m_gpu.cpu(), m_cpu) and torch.equal(s_gpu.cpu(), s_cpu), (b, parts)


@cuda_only
@pytest.mark.parametrize("b,L", [(128, 700), (130, 64), (264, 1000), (124, 333)])
def test_metadata_gpu_equals_host_equal_lengths(b, L):
    """Equal lengths take the scheduler's no-split mode (params.h) on the GPU as on the host."""
    lens = torch.full((b,), L, dtype=torch.int32)
    for rows, h_kv in [(64, 1), (128, 1), (32, 1), (64, 2)]:
        m_gpu, s_gpu = flash_mla.get_mla_metadata(lens.to(DEV), rows, h_kv)
        m_cpu, s_cpu = flash_mla.get_mla_metadata(lens, rows, h_kv, num_sm_parts=m_gpu.shape[0])
        assert torch.equal(m_gpu.cpu(), m_cpu) and torch.equal(s_gpu.cpu(), s_cpu), (b, L, rows, h_kv)


def test_decode_no_split_mode(kernel):
    """b = 128 equal requests: on a 132-SM card the scheduler splits none of them (no combine work);
    results against the reference either way (the schedule is named in a failure)."""
    gen = torch.Generator(device=DEV).manual_seed(9)
    failures = []
    for s_q, h_q, L in [(1, 64, 700), (2, 64, 300), (1, 16, 1000)]:
        lens = [L] * 128
        pool = Pool(lens, 64, 1, torch.bfloat16, gen)
        meta = flash_mla.get_mla_metadata(pool.L, s_q * h_q, 1)
        slots = meta[1] & 0xFFFF  # src/params.h: slot bases in the low bits for b <= 1024
        split = int((slots[1:] - slots[:-1]).max()) > 1
        q = torch.randn(128, s_q, h_q, D, dtype=torch.bfloat16, device=DEV, generator=gen).clamp_(-1, 1)
        check_case(q, pool, True, kernel, "b=128 s_q=%d h_q=%d L=%d (%s)" % (s_q, h_q, L, "split" if split else "no split"),
                   failures)
    assert_no_failures(failures, 3)


def test_decode_packed_schedule(kernel):
    """Varied lengths with b >= the part count: the scheduler's packed mode (params.h) orders the
    requests by size and splits few; results against the reference, every request, s_q 1 and 2.
    With b >= 3x the part count the combine runs its compact grid (one CTA per split request,
    combine.cu): b = 400 on 132 parts must split some request for that to be exercised."""
    gen = torch.Generator(device=DEV).manual_seed(21)
    rng = random.Random(21)
    failures, split = [], 0
    for b, s_q, h_q in [(128, 1, 128), (100, 2, 128), (400, 1, 64)]:
        lens = [max(1, int(rng.normalvariate(600, 300))) for _ in range(b)]
        lens[3] = 0  # a request with no key, somewhere in the order
        pool = Pool(lens, 64, 1, torch.bfloat16, gen)
        meta = flash_mla.get_mla_metadata(pool.L, s_q * h_q, 1)
        assert meta[0].shape[0] < b, "b must exceed the part count here"
        slots = (meta[1] & 0xFFFF).tolist()
        if b >= 3 * meta[0].shape[0]:
            split += sum(slots[i + 1] - slots[i] > 1 for i in range(b))
        order = (meta[1][:b] >> 16).tolist()
        q = torch.randn(b, s_q, h_q, D, dtype=torch.bfloat16, device=DEV, generator=gen).clamp_(-1, 1)
        what = "b=%d s_q=%d h_q=%d (%s order)" % (b, s_q, h_q, "packed" if order != list(range(b)) else "identity")
        check_case(q, pool, s_q > 1, kernel, what, failures)
    assert split >= 1, "no request split where b >= 3x the parts: the combine's compact grid went untested"
    assert_no_failures(failures, 3)


def test_decode_num_splits_encoding_edge(kernel):
    """b = 1024 keeps the part order in num_splits' high bits, b = 1025 does not (params.h): both
    against the reference, on short requests (some empty)."""
    gen = torch.Generator(device=DEV).manual_seed(23)
    rng = random.Random(23)
    failures = []
    for b in (1024, 1025):
        lens = [0 if rng.random() < 0.1 else rng.randint(1, 200) for _ in range(b)]
        pool = Pool(lens, 64, 1, torch.bfloat16, gen)
        q = torch.randn(b, 1, 64, D, dtype=torch.bfloat16, device=DEV, generator=gen).clamp_(-1, 1)
        check_case(q, pool, False, kernel, "b=%d s_q=1 h_q=64 short requests" % b, failures)
    assert_no_failures(failures, 3)


def test_sched_meta_form(kernel):
    pool, q = _graph_inputs(seed=12, b=6, s_k=300)
    meta = flash_mla.get_mla_metadata(pool.L, q.shape[1] * q.shape[2], 1)
    o1, l1 = flash_mla.flash_mla_with_kvcache(q, pool.kv, pool.block_table, pool.L, DV, *meta, causal=True, kernel=kernel)
    sched, none = flash_mla.get_mla_metadata()
    assert none is None
    o2, l2 = flash_mla.flash_mla_with_kvcache(q, pool.kv, pool.block_table, pool.L, DV, sched, None, causal=True, kernel=kernel)
    assert sched.have_initialized and sched.tile_scheduler_metadata.device == q.device
    assert torch.equal(sched.tile_scheduler_metadata, meta[0]) and torch.equal(sched.num_splits, meta[1])
    o3, l3 = flash_mla.flash_mla_with_kvcache(q, pool.kv, pool.block_table, pool.L, DV, sched, None, causal=True, kernel=kernel)
    assert torch.equal(o1, o2) and torch.equal(l1, l2) and torch.equal(o1, o3) and torch.equal(l1, l3)
    with pytest.raises(ValueError, match="causal"):
        flash_mla.flash_mla_with_kvcache(q, pool.kv, pool.block_table, pool.L, DV, sched, None, causal=False, kernel=kernel)


# ---------------------------------------------------------------------------------------------
# Devices and errors on the GPU path
# ---------------------------------------------------------------------------------------------
@cuda_only
def test_device_mismatch():
    pool, q = _graph_inputs(seed=1, b=2, s_k=100)
    meta = flash_mla.get_mla_metadata(pool.L, q.shape[1] * q.shape[2], 1)
    with pytest.raises(ValueError, match="one device"):
        flash_mla.flash_mla_with_kvcache(q, pool.kv, pool.block_table.cpu(), pool.L, DV, *meta)
    with pytest.raises(ValueError, match="one device"):
        flash_mla.flash_mla_with_kvcache(q.cpu(), pool.kv, pool.block_table, pool.L, DV, *meta)
    with pytest.raises(ValueError, match="tile_scheduler_metadata and num_splits must be on"):
        flash_mla.flash_mla_with_kvcache(q, pool.kv, pool.block_table, pool.L, DV, meta[0].cpu(), meta[1])
    with pytest.raises(ValueError, match="out must be on"):
        flash_mla.flash_mla_with_kvcache(q, pool.kv, pool.block_table, pool.L, DV, *meta,
                                         out=torch.empty(2, q.shape[1], q.shape[2], DV, dtype=q.dtype))


def test_gpu_error_writes_nothing(kernel):
    pool, q = _graph_inputs(seed=2, b=2, s_k=100)
    meta = flash_mla.get_mla_metadata(pool.L, q.shape[1] * q.shape[2], 1)
    out = torch.full((2, q.shape[1], q.shape[2], DV), float("nan"), dtype=q.dtype, device=DEV)
    lse = torch.full((2, q.shape[2], q.shape[1]), float("nan"), device=DEV)
    for bad in (dict(head_dim_v=256), dict(softmax_scale=float("inf"))):
        args = dict(head_dim_v=DV)
        args.update(bad)
        with pytest.raises(ValueError):
            flash_mla.flash_mla_with_kvcache(q, pool.kv, pool.block_table, pool.L, tile_scheduler_metadata=meta[0],
                                             num_splits=meta[1], out=out, lse=lse, kernel=kernel, **args)
    sync()
    assert torch.isnan(out).all() and torch.isnan(lse).all()


@cuda_only
@pytest.mark.skipif(HAVE_CUDA and torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs: only one visible")
def test_other_device_than_current(kernel):
    """q on cuda:1 while cuda:0 is current: the call runs on q's device and stream."""
    with torch.cuda.device(1):
        pool, q = _graph_inputs(seed=6, b=6, s_k=500)
    assert torch.cuda.current_device() == 0 and q.device.index == 1
    failures = []
    check_case(q, pool, True, kernel, "cuda:1", failures)
    assert_no_failures(failures, 1)


def _threaded_decode(jobs, kernel, rounds=6):
    """Concurrent calls from Python threads, as a server with one thread per GPU (or per stream)
    makes them. jobs: [(device index, [(pool, q, causal), ...])], inputs already on that device.
    Each job's thread takes its device and a stream of its own, computes the metadata of its shapes,
    meets the other threads at a barrier, then makes `rounds` decode calls alternating its shapes
    (so the library's per-thread tensor-map caches and per-(device, stream) workspaces change hands
    between calls while the other thread's kernels run). Every output is checked against the fp64
    reference, and repeats of one shape must be bit-identical (a workspace or cache shared across
    threads would show as a mismatch). Returns the number of checked calls."""
    import threading

    for d in {d for d, _ in jobs}:  # the inputs are ready on every device before the threads start
        torch.cuda.synchronize(d)
    results = [[] for _ in jobs]
    errors = []
    gate = threading.Barrier(len(jobs))

    def work(j, dev, shapes):
        try:
            with torch.cuda.device(dev):
                st = torch.cuda.Stream()
                with torch.cuda.stream(st):
                    metas = [flash_mla.get_mla_metadata(pool.L, q.shape[1] * q.shape[2] // pool.kv.shape[2], pool.kv.shape[2])
                             for pool, q, _ in shapes]
                    gate.wait(timeout=60)
                    for r in range(rounds):
                        k = r % len(shapes)
                        pool, q, causal = shapes[k]
                        out, lse = run_decode(q, pool, causal, kernel, meta=metas[k])
                        results[j].append((k, out, lse))
                st.synchronize()
        except Exception as e:  # reported below with the job that raised it
            errors.append("job %d (cuda:%d): %r" % (j, dev, e))
            gate.abort()

    threads = [threading.Thread(target=work, args=(j, d, sh)) for j, (d, sh) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a decode thread did not finish in 300 s"
    assert not errors, "; ".join(errors)
    failures, n = [], 0
    for j, (dev, shapes) in enumerate(jobs):
        assert len(results[j]) == rounds
        first = {}
        for r, (k, out, lse) in enumerate(results[j]):
            pool, q, causal = shapes[k]
            what = "job %d cuda:%d round %d shape %d (b=%d s_q=%d h_q=%d)" % (j, dev, r, k, q.shape[0], q.shape[1], q.shape[2])
            if k in first:
                o0, l0 = first[k]
                if not (torch.equal(out, o0) and torch.equal(lse, l0)):
                    failures.append("%s: differs from the same shape's first call" % what)
                continue
            first[k] = (out, lse)
            out_ref, lse_ref = reference(q, pool.kv, pool.block_table, pool.lens, pool.L, causal, D ** -0.5)
            ok, detail = compare(out, lse, out_ref, lse_ref)
            STATS["cases"] += 1
            n += 1
            if not ok:
                STATS["failed"] += 1
                failures.append("%s: %s" % (what, detail))
    assert_no_failures(failures, n)
    return n


def _thread_shapes(seed):
    """Two shapes that split requests (fp32 partials in the workspace, the combine): 256 rows per
    KV head (the 2-CTA cluster kernel) and 16 rows (the narrow kernel), on the current device."""
    pool_a, q_a = _graph_inputs(seed=seed, b=6, s_q=2, h_q=128, s_k=2000)
    pool_b, q_b = _graph_inputs(seed=seed + 1, b=3, s_q=1, h_q=16, s_k=3000)
    return [(pool_a, q_a, True), (pool_b, q_b, False)]


@cuda_only
def test_threads_share_a_device(kernel):
    """Two threads, one device, a stream each, calls interleaved."""
    dev = torch.cuda.current_device()
    assert _threaded_decode([(dev, _thread_shapes(20)), (dev, _thread_shapes(30))], kernel) == 4


@cuda_only
@pytest.mark.skipif(HAVE_CUDA and torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs: only one visible")
def test_threads_on_two_devices(kernel):
    """A thread per GPU (cuda:0 and cuda:1), as a tensor-parallel server's workers, at the same time."""
    jobs = []
    for dev, seed in ((0, 40), (1, 50)):
        with torch.cuda.device(dev):
            jobs.append((dev, _thread_shapes(seed)))
    assert _threaded_decode(jobs, kernel) == 4


@cuda_only
def test_host_overhead_report(kernel):
    """Informational: CPU time of a small call (the benchmark measures call_us - graph_us)."""
    pool, q = _graph_inputs(seed=7, b=1, h_q=16, s_q=1, s_k=1024)
    meta = flash_mla.get_mla_metadata(pool.L, 16, 1)
    args = (q, pool.kv, pool.block_table, pool.L, DV) + tuple(meta)
    for _ in range(20):
        flash_mla.flash_mla_with_kvcache(*args, kernel=kernel)
    sync()
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        flash_mla.flash_mla_with_kvcache(*args, kernel=kernel)
        times.append((time.perf_counter() - t0) * 1e6)
        if len(times) % 50 == 0:
            sync()
    sync()
    STATS["host_us"] = statistics.median(times)
