/*
 * ptx_sm80.cuh: the sm_80 PTX instructions the portable decode and combine kernels use, one tiny
 * wrapper per instruction, named after it. Sections are cited by their title in the PTX ISA
 * (numbers move between PTX versions, titles do not). Nothing here is Hopper-only.
 *
 * Shared-memory operands are 32-bit .shared addresses (see smem_u32addr); the kernels keep their
 * shared-memory layout in such addresses so that ldmatrix gets [reg + immediate] forms.
 */
#ifndef FLASH_MLA_PTX_SM80_CUH
#define FLASH_MLA_PTX_SM80_CUH

#include <stdint.h>

/* PTX ISA "Data Movement and Conversion Instructions: cvta": generic -> .shared window address. */
static __device__ __forceinline__ uint32_t smem_u32addr(const void *p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

/* PTX ISA "Warp Level Matrix Multiply-Accumulate Instructions: mma" (mma.sync.aligned.m16n8k16.row.col,
 * .f32.bf16.bf16.f32): d += a * b, a 16x16 bf16 row-major in 4 regs, b 16x8 bf16 "col" in 2 regs. */
static __device__ __forceinline__ void mma_sync_m16n8k16_bf16(float d[4], const uint32_t a[4], uint32_t b0,
                                                              uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* PTX ISA "Warp Level Matrix Multiply-Accumulate Instructions: mma" (m16n8k16.row.col.f32.f16.f16.f32). */
static __device__ __forceinline__ void mma_sync_m16n8k16_f16(float d[4], const uint32_t a[4], uint32_t b0,
                                                             uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* PTX ISA "Warp Level Matrix Load Instruction: ldmatrix" (.m8n8.x4.shared.b16): lanes 8i..8i+7 give the
 * row addresses of matrix i; lane l receives row l/4, cols 2*(l%4)+{0,1} of matrix i in r[i]. */
static __device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

/* PTX ISA "Warp Level Matrix Load Instruction: ldmatrix" (.trans): as ldmatrix_x4, but lane l receives
 * rows 2*(l%4)+{0,1}, col l/4 of matrix i (the transpose). */
static __device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

/* PTX ISA "Data Movement and Conversion Instructions: cp.async" (.cg, 16 bytes, src-size operand):
 * copies 16 bytes global -> shared, bypassing L1; when `valid` is 0 src-size is 0, nothing is read
 * from `src` and the 16 shared bytes are zero-filled. */
static __device__ __forceinline__ void cp_async_16(uint32_t dst, const void *src, bool valid) {
  const uint32_t src_size = valid ? 16u : 0u;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_size)
               : "memory");
}

/* PTX ISA "Data Movement and Conversion Instructions: cp.async.commit_group". */
static __device__ __forceinline__ void cp_async_commit_group(void) {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

/* PTX ISA "Data Movement and Conversion Instructions: cp.async.wait_group": wait until at most N of
 * this thread's committed groups are pending. A template because N must be an immediate. */
template <int N>
static __device__ __forceinline__ void cp_async_wait_group(void) {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* PTX ISA "Parallel Synchronization and Communication Instructions: bar, barrier" (bar.sync a, b):
 * named barrier `id` (1..15; 0 is __syncthreads) over `nthreads` threads (a multiple of 32). */
static __device__ __forceinline__ void bar_sync(uint32_t id, uint32_t nthreads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(nthreads) : "memory");
}

/* PTX ISA "Floating Point Instructions: ex2" (ex2.approx.ftz.f32): 2^x, -inf -> +0, subnormal
 * results flushed to 0 (they are below anything a softmax weight can contribute). */
static __device__ __forceinline__ float ex2_approx_ftz_f32(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

/* PTX ISA "Data Movement and Conversion Instructions: cvt" (cvt.rn.bf16x2.f32 d, a, b puts a in the
 * upper half): returns {lo, hi} packed with `lo` in the low 16 bits (the lower address in memory). */
static __device__ __forceinline__ uint32_t cvt_rn_bf16x2_f32(float lo, float hi) {
  uint32_t d;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(d) : "f"(hi), "f"(lo));
  return d;
}

/* PTX ISA "Data Movement and Conversion Instructions: cvt" (cvt.rn.f16x2.f32), same packing. */
static __device__ __forceinline__ uint32_t cvt_rn_f16x2_f32(float lo, float hi) {
  uint32_t d;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(d) : "f"(hi), "f"(lo));
  return d;
}

#endif
