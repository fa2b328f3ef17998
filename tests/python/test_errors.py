"""Error handling of the flash_mla Python package (no GPU needed: CPU tensors, C reference path).

Wrong dtypes raise TypeError; wrong ranks, shapes, strides, values raise ValueError whose message
names the argument; fp8 / sparse raise NotImplementedError. Errors that come from the C library
are flash_mla.FlashMLAError subclasses carrying the status and flash_mla_last_error()'s message.
"""
import pytest
import torch

import flash_mla
from flash_mla import _lib

D, DV = 576, 512
UNUSED = 2147480000


def inputs(b=2, s_q=2, h_q=16, h_kv=1, page=64, lens=(70, 5), dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(0)
    max_pages = max(-(-x // page) for x in lens) + 1
    q = torch.randn(b, s_q, h_q, D, generator=g).to(dtype)
    kv = torch.randn(b * max_pages, page, h_kv, D, generator=g).to(dtype)
    bt = torch.arange(b * max_pages, dtype=torch.int32).view(b, max_pages)
    L = torch.tensor(lens, dtype=torch.int32)
    meta, splits = flash_mla.get_mla_metadata(L, s_q * h_q // h_kv, h_kv)
    return dict(q=q, k_cache=kv, block_table=bt, cache_seqlens=L, head_dim_v=DV, tile_scheduler_metadata=meta, num_splits=splits)


def call(**over):
    args = inputs()
    extra = {k: over.pop(k) for k in list(over) if k not in args}
    args.update(over)
    return flash_mla.flash_mla_with_kvcache(**args, **extra)


def test_baseline_runs():
    out, lse = call(causal=True)
    assert out.shape == (2, 2, 16, DV) and lse.shape == (2, 16, 2)


# ---- dtypes: TypeError ----
@pytest.mark.parametrize(
    "name,make,pattern",
    [
        ("q", lambda a: a["q"].float(), "q must be bfloat16 or float16"),
        ("q", lambda a: a["q"].to(torch.float64), "q must be bfloat16 or float16"),
        ("k_cache", lambda a: a["k_cache"].half(), "k_cache dtype"),
        ("k_cache", lambda a: a["k_cache"].float(), "k_cache dtype"),
        ("block_table", lambda a: a["block_table"].long(), "block_table must be int32"),
        ("cache_seqlens", lambda a: a["cache_seqlens"].long(), "cache_seqlens must be int32"),
        ("tile_scheduler_metadata", lambda a: a["tile_scheduler_metadata"].long(), "int32"),
        ("num_splits", lambda a: a["num_splits"].long(), "int32"),
        ("q", lambda a: a["q"].tolist(), "torch.Tensor"),
        ("tile_scheduler_metadata", lambda a: "metadata", "tile_scheduler_metadata must be a tensor"),
        ("num_splits", lambda a: [0, 1, 2], "tensors get_mla_metadata returns"),
    ],
)
def test_wrong_dtype_type_error(name, make, pattern):
    args = inputs()
    args[name] = make(args)
    with pytest.raises(TypeError, match=pattern):
        flash_mla.flash_mla_with_kvcache(**args)


def test_fp16_q_with_fp16_cache_ok_and_mixed_rejected():
    args = inputs(dtype=torch.float16)
    flash_mla.flash_mla_with_kvcache(**args)
    args["q"] = args["q"].bfloat16()
    with pytest.raises(TypeError, match="k_cache dtype"):
        flash_mla.flash_mla_with_kvcache(**args)


# ---- ranks and shapes: ValueError naming the argument ----
@pytest.mark.parametrize(
    "name,make,pattern",
    [
        ("q", lambda a: a["q"][0], r"q must be 4-D"),
        ("q", lambda a: a["q"][None], r"q must be 4-D"),
        ("k_cache", lambda a: a["k_cache"][:, :, 0], r"k_cache must be 4-D"),
        ("block_table", lambda a: a["block_table"].reshape(-1), r"block_table must be 2-D"),
        ("cache_seqlens", lambda a: a["cache_seqlens"][None], r"cache_seqlens must be 1-D"),
        ("block_table", lambda a: a["block_table"][:1], r"block_table.shape\[0\] = 1"),
        ("cache_seqlens", lambda a: torch.tensor([5, 5, 5], dtype=torch.int32), r"cache_seqlens.shape\[0\] = 3"),
        ("k_cache", lambda a: a["k_cache"][..., :512].contiguous(), r"k_cache.shape\[-1\] = 512"),
        ("q", lambda a: a["q"].transpose(2, 3).contiguous().transpose(2, 3), r"q's last dimension must be contiguous"),
        ("k_cache", lambda a: a["k_cache"][..., None].expand(*a["k_cache"].shape, 2).contiguous()[..., 0], r"k_cache's last dimension"),
        ("block_table", lambda a: a["block_table"].t().contiguous().t(), r"block_table's rows must be contiguous"),
        ("cache_seqlens", lambda a: torch.tensor([70, 0, 5, 0], dtype=torch.int32)[::2], r"cache_seqlens must be contiguous"),
        ("num_splits", lambda a: a["num_splits"][:-1], r"num_splits"),
        ("tile_scheduler_metadata", lambda a: a["tile_scheduler_metadata"][:, :4], r"tile_scheduler_metadata"),
        ("tile_scheduler_metadata", lambda a: a["tile_scheduler_metadata"].reshape(-1), r"tile_scheduler_metadata"),
    ],
)
def test_wrong_shape_value_error(name, make, pattern):
    args = inputs()
    args[name] = make(args)
    with pytest.raises(ValueError, match=pattern):
        flash_mla.flash_mla_with_kvcache(**args)


def test_head_dims_576_and_512_only():
    a = inputs()
    a["q"] = a["q"][..., :512].contiguous()
    a["k_cache"] = a["k_cache"][..., :512].contiguous()
    with pytest.raises(ValueError, match="head_dim = 512 must be 576"):
        flash_mla.flash_mla_with_kvcache(**a)
    for dv in (256, 576, 0, -1):
        with pytest.raises(ValueError, match="head_dim_v"):
            call(head_dim_v=dv)


def test_heads_not_divisible():
    a = inputs(h_q=3, h_kv=1)
    a["k_cache"] = torch.zeros(a["k_cache"].shape[0], 64, 2, D, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="num_heads_q = 3 must be a multiple of num_heads_k = 2"):
        flash_mla.flash_mla_with_kvcache(**a)
    # the lazily-initialized metadata checks it before scheduling
    sched, _ = flash_mla.get_mla_metadata()
    a.update(tile_scheduler_metadata=sched, num_splits=None)
    with pytest.raises(ValueError, match="num_heads_q"):
        flash_mla.flash_mla_with_kvcache(**a)


def test_misaligned_stride():
    a = inputs()
    big = torch.zeros(2, 2, 16, 580, dtype=torch.bfloat16)  # head stride 580: not a multiple of 8
    big[..., :D] = a["q"]
    a["q"] = big[..., :D]
    with pytest.raises(ValueError, match="q_head_stride = 580") as e:
        flash_mla.flash_mla_with_kvcache(**a)
    assert e.value.status == _lib.ERROR_MISALIGNED


def test_overlapping_stride():
    a = inputs()
    a["q"] = a["q"][:, :1].expand(2, 2, 16, D)  # s_q stride 0: rows would overlap
    with pytest.raises(ValueError, match="q_seq_stride = 0"):
        flash_mla.flash_mla_with_kvcache(**a)


def test_bad_scalars():
    for s in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="softmax_scale"):
            call(softmax_scale=s)
    with pytest.raises(ValueError, match="softmax_scale"):
        call(softmax_scale=1e300)  # does not fit a float
    with pytest.raises(ValueError, match="kernel = 'fast'"):
        call(kernel="fast")


def test_data_values_checked_by_reference():
    """The CPU reference validates cache_seqlens and block_table values (the GPU clamps instead)."""
    with pytest.raises(ValueError, match="cache_seqlens"):
        call(cache_seqlens=torch.tensor([70, 10000], dtype=torch.int32))
    with pytest.raises(ValueError, match="cache_seqlens"):
        call(cache_seqlens=torch.tensor([70, -1], dtype=torch.int32))
    a = inputs()
    bt = a["block_table"].clone()
    bt[0, 1] = UNUSED  # page 1 of request 0 (L = 70 > 64) is needed
    with pytest.raises(ValueError, match="block_table"):
        call(block_table=bt)
    bt = a["block_table"].clone()
    bt[0, 2] = UNUSED  # past the last needed page: never read
    bt[1, 1:] = -5
    call(block_table=bt)


def test_empty_batch():
    a = inputs()
    a["q"] = a["q"][:0]
    a["block_table"] = a["block_table"][:0]
    a["cache_seqlens"] = a["cache_seqlens"][:0]
    a["num_splits"] = a["num_splits"][:1]
    with pytest.raises(ValueError, match="batch = 0"):
        flash_mla.flash_mla_with_kvcache(**a)


def test_errors_carry_status():
    with pytest.raises(flash_mla.FlashMLAError) as e:
        call(head_dim_v=256)
    assert isinstance(e.value, ValueError)
    assert e.value.status == _lib.ERROR_INVALID_SHAPE
    assert "FLASH_MLA_ERROR_INVALID_SHAPE" in str(e.value)


# ---- unsupported features: NotImplementedError ----
def test_fp8_and_sparse_not_implemented():
    with pytest.raises(NotImplementedError, match="fp8"):
        call(is_fp8_kvcache=True)
    with pytest.raises(NotImplementedError, match="fp8"):
        call(descale_q=torch.ones(1), descale_k=torch.ones(1))
    with pytest.raises(NotImplementedError, match="sparse"):
        call(indices=torch.zeros(2, 2, 64, dtype=torch.int32))
    with pytest.raises(NotImplementedError, match="sparse"):
        call(attn_sink=torch.zeros(16))
    L = torch.tensor([5], dtype=torch.int32)
    with pytest.raises(NotImplementedError, match="fp8"):
        flash_mla.get_mla_metadata(L, 16, 1, is_fp8_kvcache=True)
    with pytest.raises(NotImplementedError, match="sparse"):
        flash_mla.get_mla_metadata(L, 16, 1, num_heads_q=16, topk=2048)
    with pytest.raises(NotImplementedError):
        flash_mla.flash_mla_sparse_fwd(None, None, None, 1.0)


# ---- get_mla_metadata ----
def test_metadata_errors():
    L = torch.tensor([5, 7], dtype=torch.int32)
    with pytest.raises(TypeError, match="cache_seqlens must be int32"):
        flash_mla.get_mla_metadata(L.long(), 16, 1)
    with pytest.raises(TypeError, match="cache_seqlens must be a torch.Tensor"):
        flash_mla.get_mla_metadata([5, 7], 16, 1)
    with pytest.raises(ValueError, match="cache_seqlens must be 1-D"):
        flash_mla.get_mla_metadata(L[None], 16, 1)
    with pytest.raises(ValueError, match="num_heads_k"):
        flash_mla.get_mla_metadata(L, 16, 0)
    with pytest.raises(ValueError, match="num_q_tokens_per_head_k"):
        flash_mla.get_mla_metadata(L, 0, 1)
    with pytest.raises(ValueError, match="num_q_tokens_per_head_k"):
        flash_mla.get_mla_metadata(L, None, 1)
    with pytest.raises(ValueError, match="num_sm_parts"):
        flash_mla.get_mla_metadata(L, 16, 1, num_sm_parts=0)
    with pytest.raises(ValueError, match="num_sm_parts"):
        flash_mla.get_mla_metadata(L, 16, 1, num_sm_parts=5000)
    with pytest.raises(ValueError, match="batch = 0"):
        flash_mla.get_mla_metadata(L[:0], 16, 1)


def test_sched_meta_requires_num_splits_none():
    a = inputs()
    sched, none = flash_mla.get_mla_metadata()
    a["num_splits"] = a["num_splits"]
    a["tile_scheduler_metadata"] = sched
    with pytest.raises(ValueError, match="num_splits must be None"):
        flash_mla.flash_mla_with_kvcache(**a)
    assert not sched.have_initialized


# ---- out= / lse= (extension) ----
def test_out_lse_arguments():
    a = inputs()
    out = torch.full((2, 2, 16, DV), float("nan"), dtype=torch.bfloat16)
    lse = torch.full((2, 16, 2), float("nan"))
    o, l = flash_mla.flash_mla_with_kvcache(**a, out=out, lse=lse, causal=True)
    assert o is out and l is lse and not torch.isnan(out).any() and not torch.isnan(lse).any()
    ref_o, ref_l = flash_mla.flash_mla_with_kvcache(**a, causal=True)
    assert torch.equal(ref_o, out) and torch.equal(ref_l, lse)
    # strided out
    big = torch.full((2, 2, 16, 520), float("nan"), dtype=torch.bfloat16)
    o2, _ = flash_mla.flash_mla_with_kvcache(**a, out=big[..., :DV], causal=True)
    assert torch.equal(o2, ref_o) and torch.isnan(big[..., DV:]).all()
    with pytest.raises(TypeError, match="out dtype"):
        flash_mla.flash_mla_with_kvcache(**a, out=out.half())
    with pytest.raises(ValueError, match="out must have shape"):
        flash_mla.flash_mla_with_kvcache(**a, out=out[:1])
    with pytest.raises(ValueError, match="out's last dimension"):
        flash_mla.flash_mla_with_kvcache(**a, out=big.transpose(2, 3).contiguous().transpose(2, 3)[..., :DV])
    with pytest.raises(TypeError, match="lse must be float32"):
        flash_mla.flash_mla_with_kvcache(**a, lse=lse.double())
    with pytest.raises(ValueError, match="lse must be a contiguous"):
        flash_mla.flash_mla_with_kvcache(**a, lse=lse.transpose(1, 2).contiguous().transpose(1, 2))


def test_nothing_written_on_error():
    """With out= / lse= the library's promise is observable: a rejected call writes nothing."""
    a = inputs()
    out = torch.full((2, 2, 16, DV), float("nan"), dtype=torch.bfloat16)
    lse = torch.full((2, 16, 2), float("nan"))
    for bad in (dict(head_dim_v=256), dict(softmax_scale=float("nan")),
                dict(cache_seqlens=torch.tensor([70, 100000], dtype=torch.int32))):
        with pytest.raises(ValueError):
            flash_mla.flash_mla_with_kvcache(**dict(a, **bad), out=out, lse=lse)
        assert torch.isnan(out).all() and torch.isnan(lse).all(), bad
