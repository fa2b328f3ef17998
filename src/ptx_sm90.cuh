/*
 * ptx_sm90.cuh: the Hopper (sm_90a) PTX the MLA decode kernel uses, one tiny wrapper per
 * instruction, each named after it and citing its PTX ISA section (ISA 8.x/9.x numbering).
 * Hand-written asm rather than cuda::ptx so the exact instruction text is visible in one place
 * and matches what cuobjdump shows; every wrapper is a single instruction.
 *
 * Include only from device code compiled for sm_90a: the bodies are guarded so that the sm_80
 * pass of the same .cu still compiles (the wrappers then compile to nothing and are never called).
 */
#ifndef FLASH_MLA_PTX_SM90_CUH
#define FLASH_MLA_PTX_SM90_CUH

#include <math.h> /* INFINITY */
#include <stdint.h>
#include <cuda.h> /* CUtensorMap (type only; the driver API is fetched at run time) */

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FMLA_SM90_DEVICE 1
#else
#define FMLA_SM90_DEVICE 0
#endif

#if FMLA_SM90_DEVICE

static __device__ __forceinline__ uint32_t smem_u32(const void *p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

/* ---- mbarrier (9.7.13.15 Parallel Synchronization and Communication: mbarrier) ---- */

/* 9.7.13.15.9 mbarrier.init */
static __device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}

/* 9.7.13.4 membar/fence: fence.mbarrier_init makes the inits visible to the async proxy (TMA
 * complete_tx) and to other threads before the first arrive/wait. */
static __device__ __forceinline__ void fence_mbarrier_init_release_cluster(void) {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

/* 9.7.13.15.12 mbarrier.expect_tx fused with 9.7.13.15.13 mbarrier.arrive:
 * arrive once and raise the phase's expected transaction bytes. */
static __device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes)
               : "memory");
}

/* 9.7.13.15.13 mbarrier.arrive (release, CTA scope). */
static __device__ __forceinline__ void mbarrier_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}

/* 9.7.9.22.6 cp.async.mbarrier.arrive.noinc: one arrival on the barrier, made by the hardware once
 * every cp.async this thread issued before it has landed (.noinc: the arrival is one of the
 * barrier's expected arrivals, not an extra one). The thread goes on without waiting. */
static __device__ __forceinline__ void cp_async_mbarrier_arrive_noinc(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(bar) : "memory");
}

/* 9.7.13.15.16 mbarrier.test_wait/try_wait: try_wait.parity returns true once the phase with the
 * given parity has completed (acquire, CTA scope). A fresh barrier is in phase 0, so waiting for
 * parity 1 succeeds at once: that is how a producer's first pass over "empty" barriers goes through. */
static __device__ __forceinline__ uint32_t mbarrier_try_wait_parity(uint32_t bar, uint32_t parity) {
  uint32_t ok;
  asm volatile(
      "{\n.reg .pred p;\n"
      "mbarrier.try_wait.parity.acquire.cta.shared::cta.b64 p, [%1], %2;\n"
      "selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(ok)
      : "r"(bar), "r"(parity)
      : "memory");
  return ok;
}

/* ---- bulk tensor copies (9.7.9.25 Data Movement: cp.async.bulk.tensor) ---- */

/* 9.7.9.25.5.2 cp.async.bulk.tensor, 4-D tile mode, global -> shared, completion counted in bytes
 * on an mbarrier, with an L2 cache policy from createpolicy. Coordinates are in elements,
 * innermost first. The destination in our own CTA is a valid shared::cluster address. */
static __device__ __forceinline__ void cp_async_bulk_tensor_4d_g2s(uint32_t dst, const CUtensorMap *map, int c0,
                                                                    int c1, int c2, int c3, uint32_t bar,
                                                                    uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint"
      " [%0], [%1, {%2, %3, %4, %5}], [%6], %7;" ::"r"(dst),
      "l"((uint64_t)map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar), "l"(policy)
      : "memory");
}

/* The same for a 5-D tensor map (the Q tile: columns, group, KV head, query position, request). */
static __device__ __forceinline__ void cp_async_bulk_tensor_5d_g2s(uint32_t dst, const CUtensorMap *map, int c0,
                                                                    int c1, int c2, int c3, int c4, uint32_t bar,
                                                                    uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint"
      " [%0], [%1, {%2, %3, %4, %5, %6}], [%7], %8;" ::"r"(dst),
      "l"((uint64_t)map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4), "r"(bar), "l"(policy)
      : "memory");
}

/* ---- clusters (9.7.13.3.4 barrier.cluster, 9.7.9.20 mapa, special registers %cluster_*) ---- */

static __device__ __forceinline__ uint32_t cluster_ctarank(void) {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}
/* Every thread of every CTA of the cluster: what each wrote before (mbarrier inits included) is
 * visible cluster-wide after it. */
static __device__ __forceinline__ void cluster_sync_all(void) {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
/* Arrive on the mbarrier at the same shared-memory offset in CTA `rank` of the cluster, with the
 * default semantics (release at CTA scope). The .release.cluster form compiles to MEMBAR.ALL.GPU +
 * CCTL.IVALL around every arrive, which under load costs ~1000s of clocks (dev/mcast_rate.cu). A
 * consumer giving back a tile it has finished reading needs no more: the same form is what
 * multicast GEMM pipelines use for their remote releases. */
static __device__ __forceinline__ void mbarrier_arrive_remote(uint32_t bar, uint32_t rank) {
  asm volatile(
      "{\n.reg .b32 ra;\n"
      "mapa.shared::cluster.u32 ra, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [ra];\n}" ::"r"(bar),
      "r"(rank)
      : "memory");
}
/* 9.7.9.25.4.1 cp.async.bulk, shared::cta -> shared::cluster: `bytes` (a multiple of 16) of this
 * CTA's shared memory at src land at the same-named offset dst of CTA `rank` of the cluster, with
 * complete_tx on that CTA's mbarrier at offset bar (the only completion this form has). */
static __device__ __forceinline__ void cp_async_bulk_s2s_remote(uint32_t dst, uint32_t src, uint32_t bytes, uint32_t bar,
                                                                uint32_t rank) {
  asm volatile(
      "{\n.reg .b32 rd, rb;\n"
      "mapa.shared::cluster.u32 rd, %0, %4;\n"
      "mapa.shared::cluster.u32 rb, %3, %4;\n"
      "cp.async.bulk.shared::cluster.shared::cta.mbarrier::complete_tx::bytes [rd], [%1], %2, [rb];\n}" ::"r"(dst),
      "r"(src), "r"(bytes), "r"(bar), "r"(rank)
      : "memory");
}
/* cp.async.bulk.tensor with .multicast::cluster: the box lands at offset dst of every CTA in
 * cta_mask, each of which gets the complete_tx on its own mbarrier at offset bar. */
static __device__ __forceinline__ void cp_async_bulk_tensor_4d_g2s_mc(uint32_t dst, const CUtensorMap *map, int c0,
                                                                       int c1, int c2, int c3, uint32_t bar,
                                                                       uint16_t cta_mask, uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster"
      ".L2::cache_hint [%0], [%1, {%2, %3, %4, %5}], [%6], %7, %8;" ::"r"(dst),
      "l"((uint64_t)map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar), "h"(cta_mask), "l"(policy)
      : "memory");
}

/* 9.7.9.27 prefetch.tensormap: pull the descriptor (a kernel parameter) into the TMA unit's cache. */
static __device__ __forceinline__ void prefetch_tensormap(const CUtensorMap *map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"((uint64_t)map) : "memory");
}

/* 9.7.9.17 createpolicy: an L2 eviction-priority policy for .L2::cache_hint operands. */
static __device__ __forceinline__ uint64_t createpolicy_fractional_l2_evict_first(void) {
  uint64_t pol;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
  return pol;
}
static __device__ __forceinline__ uint64_t createpolicy_fractional_l2_evict_normal(void) {
  uint64_t pol;
  asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(pol));
  return pol;
}

/* ---- non-bulk async copies (9.7.9.22 cp.async), used for the Q tile ---- */

/* 9.7.9.22.3 cp.async: 16 bytes global -> shared; src_bytes < 16 zero-fills the rest, so padding
 * rows of the M tile are written as zeros without reading anything (src_bytes = 0). */
static __device__ __forceinline__ void cp_async_cg_16_zfill(uint32_t dst, const void *src, uint32_t src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
/* 9.7.9.22.4 cp.async.commit_group */
static __device__ __forceinline__ void cp_async_commit_group(void) {
  asm volatile("cp.async.commit_group;" ::: "memory");
}
/* 9.7.9.22.5 cp.async.wait_group 0: every committed copy of this thread has landed. */
static __device__ __forceinline__ void cp_async_wait_all(void) {
  asm volatile("cp.async.wait_group 0;" ::: "memory");
}

/* ---- proxies and barriers ---- */

/* 9.7.13.4 membar/fence: fence.proxy.async.shared::cta orders this thread's generic-proxy shared
 * memory writes (st.shared, cp.async) before later async-proxy reads (wgmma operands, TMA). */
static __device__ __forceinline__ void fence_proxy_async_shared_cta(void) {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

/* 9.7.13.1 bar.sync with an id and a thread count: a named barrier over a subset of warps. */
static __device__ __forceinline__ void bar_sync(uint32_t id, uint32_t nthreads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(nthreads) : "memory");
}

/* 9.7.13.8 griddepcontrol.wait: with programmatic dependent launch, block until the grids this one
 * depends on have completed and their memory is visible. A no-op without PDL. */
static __device__ __forceinline__ void griddepcontrol_wait(void) {
  asm volatile("griddepcontrol.wait;" ::: "memory");
}

/* 9.7.13.8 griddepcontrol.launch_dependents: the grids launched after this one with programmatic
 * dependent launch (the combine) may be scheduled once every CTA of this grid has issued it or
 * exited. They still griddepcontrol.wait for this grid's completion before reading its output. */
static __device__ __forceinline__ void griddepcontrol_launch_dependents(void) {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

/* 9.7.18.1 setmaxnreg: move registers between warpgroups. Every warp of the warpgroup executes it;
 * the kernel needs a known entry count (__launch_bounds__) or ptxas ignores it (C7508). */
template <int N>
static __device__ __forceinline__ void setmaxnreg_inc(void) {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(N));
}
template <int N>
static __device__ __forceinline__ void setmaxnreg_dec(void) {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(N));
}

/* 9.7.13.11 elect.sync: one leader lane of the warp. */
static __device__ __forceinline__ uint32_t elect_sync(void) {
  uint32_t pred;
  asm volatile(
      "{\n.reg .pred p;\n.reg .b32 lane;\n"
      "elect.sync lane|p, 0xffffffff;\n"
      "selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(pred));
  return pred;
}

/* 9.7.4.9 (floating point) ex2.approx.ftz.f32: 2^x on the SFU; softmax runs in base 2. */
static __device__ __forceinline__ float ex2_approx_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/* Not PTX, but shared by the kernel and dev/wgmma_mix.cu: row maxima of an m64n64 S fragment's
 * 16 + 16 scores (the thread's two rows) as a tree of fmaxf, 4 deep instead of a
 * 16-long chain: ~60 clk less between S and the exp. max is order-free, so it is the chain's answer
 * bit for bit (the final fmaxf with -inf keeps the chain's -inf for a row of NaNs). */
static __device__ __forceinline__ void sm90_tree_max(const float *s, float &mx0, float &mx1) {
  float a[8], b[8];
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    a[c] = fmaxf(s[4 * c], s[4 * c + 1]);
    b[c] = fmaxf(s[4 * c + 2], s[4 * c + 3]);
  }
#pragma unroll
  for (int w = 4; w > 0; w >>= 1)
#pragma unroll
    for (int c = 0; c < w; ++c) {
      a[c] = fmaxf(a[c], a[c + w]);
      b[c] = fmaxf(b[c], b[c + w]);
    }
  mx0 = fmaxf(a[0], -INFINITY);
  mx1 = fmaxf(b[0], -INFINITY);
}

/* Not PTX either: O *= a per row of an m64n256 f32 accumulator fragment (the thread's two rows) */
static __device__ __forceinline__ void sm90_rescale(float *o, float a0, float a1) {
#pragma unroll
  for (int c = 0; c < 32; ++c) {
    o[4 * c + 0] *= a0;
    o[4 * c + 1] *= a0;
    o[4 * c + 2] *= a1;
    o[4 * c + 3] *= a1;
  }
}

/* 9.7.9.10 st.shared.v4.b32 with a 32-bit shared address (zeroing V rows, 16 bytes at a time). */
static __device__ __forceinline__ void st_shared_v4_zero(uint32_t addr) {
  asm volatile("st.shared.v4.b32 [%0], {%1, %1, %1, %1};" ::"r"(addr), "r"(0) : "memory");
}
/* 9.7.9.10 st.shared.b32 */
static __device__ __forceinline__ void st_shared_b32(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;" ::"r"(addr), "r"(v) : "memory");
}

/* ---- warpgroup MMA (9.7.15 Asynchronous Warpgroup Level Matrix Multiply-Accumulate) ---- */

/* 9.7.15.6.1 wgmma.fence: orders prior register accesses (accumulators) before wgmma.mma_async. */
static __device__ __forceinline__ void wgmma_fence(void) {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
/* 9.7.15.6.2 wgmma.commit_group */
static __device__ __forceinline__ void wgmma_commit_group(void) {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
/* 9.7.15.6.3 wgmma.wait_group N: at most N of this warpgroup's groups still pending. */
template <int N>
static __device__ __forceinline__ void wgmma_wait(void) {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
/* Not an instruction: pins an accumulator register across wgmma issue/wait so the compiler neither
 * reads it early nor moves it (the asm "defines" it at this point). */
static __device__ __forceinline__ void fence_operand(float &r) {
  asm volatile("" : "+f"(r)::"memory");
}

/*
 * 9.7.15.5.1.2.2 Matrix Descriptor Format (64 bits):
 *   bits  0..13  start address >> 4            (shared window < 256 KB, so 14 bits suffice)
 *   bits 16..29  leading dimension byte offset >> 4 (LBO)
 *   bits 32..45  stride dimension byte offset >> 4  (SBO)
 *   bits 49..51  base offset: 0 when each 8-row, 1024-byte swizzle pattern starts on a 1024-byte
 *                boundary (all our tiles are 1024-aligned; the +32/+64/+96 byte k-step offsets
 *                inside a pattern are the documented way to walk K and keep base offset 0)
 *   bits 62..63  swizzle: 1 = 128-byte
 *
 * Canonical 128B-swizzle layouts (9.7.15.5.1.2.1.3, T = 8 bf16/f16 elements per 16 bytes):
 *   K-major : ((8,m),(T,2k)):((8T,SBO),(1,T))   rows of 128 bytes (64 K-elements), 8 rows form a
 *             1024-byte swizzle atom; SBO = distance between 8-row groups along M/N. LBO is unused
 *             for swizzled K-major layouts ("assumed 1"), because one k16 step (32 bytes) never
 *             leaves a 128-byte row. Our tiles are 64 rows x 128 bytes, dense: SBO = 1024.
 *             K-step s inside a 64-column tile: start += 32*s bytes.
 *   MN-major: ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO))  a 128-byte row holds 64 consecutive MN
 *             elements, 8 rows (8 consecutive K) form an atom; LBO = distance to the next 64 MN
 *             elements (the next atom along MN), SBO = distance to the next 8 K (next atom along K).
 *             For V read out of a K tile: MN = the head-dim column, K = the key. The next 64 columns
 *             are the next 64x64 column tile: LBO = 64*128 = 8192; the next 8 keys are 8 rows down:
 *             SBO = 1024. Key step of 16: start += 16*128 = 2048 bytes.
 */
static __device__ __forceinline__ uint64_t wgmma_desc_sw128(uint32_t smem_addr, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  return (uint64_t)((smem_addr & 0x3FFFF) >> 4) | ((uint64_t)((lbo_bytes & 0x3FFFF) >> 4) << 16) |
         ((uint64_t)((sbo_bytes & 0x3FFFF) >> 4) << 32) | ((uint64_t)1 << 62);
}

/* 9.7.15.5.1.1.1 accumulator fragment of m64nNk16 (f32): thread (warp w of the warpgroup, lane l)
 * holds d[i] at row 16w + l/4 + 8*((i/2)%2), column 8*(i/4) + 2*(l%4) + i%2. */

/* 9.7.15.5.2 wgmma.mma_async, A and B from shared memory descriptors ("ss"), f32 accumulators,
 * m64nNk16 with N/2 accumulators per thread. scale_d = 0 overwrites D (first k-step), 1 accumulates.
 * kTA / kTB = imm-trans-a / imm-trans-b: 1 makes that operand MN-major (V^T read out of a K tile:
 * A in the narrow kernel, B in the 64-row kernel). kFp16 picks f16 or bf16 inputs. One asm body per
 * N; the dtype and the transposes are compile-time constants. */
#define FMLA_WGMMA_REGS8 "{%0, %1, %2, %3, %4, %5, %6, %7}"
#define FMLA_WGMMA_OUT8 \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
#define FMLA_WGMMA_REGS16 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
#define FMLA_WGMMA_OUT16 \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
#define FMLA_WGMMA_REGS32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define FMLA_WGMMA_OUT32 \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define FMLA_WGMMA_REGS128 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}"
#define FMLA_WGMMA_OUT128 \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
    "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
    "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
    "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
    "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), \
    "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), \
    "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), \
    "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), \
    "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), \
    "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), \
    "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), \
    "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), \
    "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
/* TAIL: the operands after the NREG accumulators, literally: ", %a, %b, p, 1, 1, %ta, %tb;" with
 * %(NREG+2) the scale_d predicate source (PRED). */
#define FMLA_WGMMA_SS(SHAPE, NREG)                                                                          \
  do {                                                                                                     \
    if constexpr (kFp16)                                                                                   \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " FMLA_WGMMA_PRED##NREG ", 0;\n"                        \
                   "wgmma.mma_async.sync.aligned." SHAPE ".f32.f16.f16 " FMLA_WGMMA_REGS##NREG FMLA_WGMMA_TAIL##NREG \
                   : FMLA_WGMMA_OUT##NREG                                                                   \
                   : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(kTA), "n"(kTB));                          \
    else                                                                                                   \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " FMLA_WGMMA_PRED##NREG ", 0;\n"                        \
                   "wgmma.mma_async.sync.aligned." SHAPE ".f32.bf16.bf16 " FMLA_WGMMA_REGS##NREG FMLA_WGMMA_TAIL##NREG \
                   : FMLA_WGMMA_OUT##NREG                                                                   \
                   : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(kTA), "n"(kTB));                          \
  } while (0)
#define FMLA_WGMMA_PRED8 "%10"
#define FMLA_WGMMA_TAIL8 ", %8, %9, p, 1, 1, %11, %12;\n}\n"
#define FMLA_WGMMA_PRED16 "%18"
#define FMLA_WGMMA_TAIL16 ", %16, %17, p, 1, 1, %19, %20;\n}\n"
#define FMLA_WGMMA_PRED32 "%34"
#define FMLA_WGMMA_TAIL32 ", %32, %33, p, 1, 1, %35, %36;\n}\n"
#define FMLA_WGMMA_PRED128 "%130"
#define FMLA_WGMMA_TAIL128 ", %128, %129, p, 1, 1, %131, %132;\n}\n"
template <int kFp16, int kTA = 0, int kTB = 0>
static __device__ __forceinline__ void wgmma_m64n16k16_ss(float *d, uint64_t desc_a, uint64_t desc_b, int scale_d) {
  FMLA_WGMMA_SS("m64n16k16", 8);
}
template <int kFp16, int kTA = 0, int kTB = 0>
static __device__ __forceinline__ void wgmma_m64n32k16_ss(float *d, uint64_t desc_a, uint64_t desc_b, int scale_d) {
  FMLA_WGMMA_SS("m64n32k16", 16);
}
template <int kFp16, int kTA = 0, int kTB = 0>
static __device__ __forceinline__ void wgmma_m64n64k16_ss(float *d, uint64_t desc_a, uint64_t desc_b, int scale_d) {
  FMLA_WGMMA_SS("m64n64k16", 32);
}
template <int kFp16, int kTA = 0, int kTB = 0>
static __device__ __forceinline__ void wgmma_m64n256k16_ss(float *d, uint64_t desc_a, uint64_t desc_b, int scale_d) {
  FMLA_WGMMA_SS("m64n256k16", 128);
}

/* 9.7.15.5.2 wgmma.mma_async with A from registers ("rs"), m64n64k16: A is 4 .b32 registers of a
 * 64x16 fragment (reg 0: row lane/4 of the warp's 16 rows, columns 2(lane%4) + {0,1}; reg 1: that
 * row + 8; reg 2: columns + 8; reg 3: both). B from a descriptor (K-major). The A registers must stay
 * unchanged until the wgmma retires. */
#define FMLA_WGMMA_RS64(TY)                                                                                  \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                                 \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " FMLA_WGMMA_REGS32                   \
               ", {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"                                                 \
               : FMLA_WGMMA_OUT32                                                                              \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d))
template <int kFp16>
static __device__ __forceinline__ void wgmma_m64n64k16_rs(float *d, const uint32_t *a, uint64_t desc_b, int scale_d) {
  if constexpr (kFp16)
    FMLA_WGMMA_RS64("f16");
  else
    FMLA_WGMMA_RS64("bf16");
}

static __device__ __forceinline__ uint32_t ld_shared_b32(uint32_t addr) {
  uint32_t v;
  asm volatile("ld.shared.b32 %0, [%1];" : "=r"(v) : "r"(addr) : "memory");
  return v;
}

#endif /* FMLA_SM90_DEVICE */
#endif /* FLASH_MLA_PTX_SM90_CUH */
