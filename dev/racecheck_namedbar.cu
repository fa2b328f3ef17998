/*
 * racecheck_namedbar.cu: does compute-sanitizer racecheck understand a named barrier over a subset
 * of the CTA? Mimics the Hopper 64-row kernel's epilogue row-sum exchange (decode_sm90.cu): 384
 * threads, warpgroup 2 (the "producer") lowers its registers and exits early, the 256 consumer
 * threads (quad leaders) write lsum[wg * 64 + r], meet at `bar.sync 1, 256`, read lsum[r] +
 * lsum[64 + r], meet again. The program is race-free by construction; a racecheck report on it is
 * an artefact of the tool. Variants (argv[1]): 0 as described; 1 the producer stays until the end
 * (all threads meet at __syncthreads last); 2 as 0 with barrier 0 (count 256) instead of
 * barrier 1; 3 as 0 without setmaxnreg; 4 as 0 plus a bar.red.or per warpgroup (ids 2 and 3) before
 * each exchange, as the kernel's rescale flag; 5 as 0 plus an mbarrier hand-off WG0 -> WG1 before
 * each exchange (32 arrivals, try_wait.parity loop), as P_A/P_B; 6 both; 7 as 0 but lane 0 of
 * the producer warpgroup stays alive (as the TMA-issuing thread does) until the consumers are done.
 * Build + run on the GPU machine:
 *   nvcc -O2 -gencode=arch=compute_90a,code=sm_90a dev/racecheck_namedbar.cu -o /tmp/rnb
 *   for v in 0 1 2 3 4 5 6 7; do compute-sanitizer --tool racecheck /tmp/rnb $v; done
 */
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

template <int V>
__global__ void __launch_bounds__(384, 1) k(float *out, int iters) {
  __shared__ float lsum[128];
  __shared__ __align__(8) unsigned long long mbar;
  if (threadIdx.x == 0) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(&mbar);
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 32;" ::"r"(a) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  const int tid = threadIdx.x, wg = tid >> 7, lane = tid & 31, warp = (tid & 127) >> 5;
  if (wg == 2) {
    if (V != 3) asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    if (V == 1) __syncthreads();
    if (V == 7 && tid == 256) {
      volatile float *o = out;
      while (o[4 * 256 + blockIdx.x] == 0.f) __nanosleep(100); /* set by consumer thread 0 at the end */
    }
    return;
  }
  if (V != 3) asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
  const int quad = lane & 3, r0 = warp * 16 + (lane >> 2), r1 = r0 + 8;
  float acc = 0.f;
  for (int it = 0; it < iters; ++it) {
    const float l0 = tid + it, l1 = tid * 2 + it;
    if (V == 4 || V == 6) {
      unsigned out;
      asm volatile("{\n.reg .pred p, q;\nsetp.ne.u32 p, %2, 0;\nbar.red.or.pred q, %1, 128, p;\nselp.u32 %0, 1, 0, q;\n}"
                   : "=r"(out) : "r"(2 + wg), "r"((unsigned)(l0 > 100.f)) : "memory");
      acc += out;
    }
    if (V == 5 || V == 6) {
      const unsigned a = (unsigned)__cvta_generic_to_shared(&mbar);
      if (wg == 0 && quad == 0) asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(a) : "memory");
      if (wg == 1) {
        unsigned done = 0;
        while (!done)
          asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}"
                       : "=r"(done) : "r"(a), "r"((unsigned)(it & 1)) : "memory");
      }
    }
    if (quad == 0) {
      lsum[wg * 64 + r0] = l0;
      lsum[wg * 64 + r1] = l1;
    }
    if (V == 2) asm volatile("bar.sync 0, 256;" ::: "memory");
    else asm volatile("bar.sync 1, 256;" ::: "memory");
    acc += lsum[r0] + lsum[64 + r0] + lsum[r1] + lsum[64 + r1];
    if (V == 2) asm volatile("bar.sync 0, 256;" ::: "memory");
    else asm volatile("bar.sync 1, 256;" ::: "memory");
  }
  out[blockIdx.x * 256 + tid] = acc;
  if (V == 7 && tid == 0) {
    __threadfence();
    ((volatile float *)out)[4 * 256 + blockIdx.x] = 1.f;
  }
  if (V == 1) __syncthreads();
}

int main(int argc, char **argv) {
  const int v = argc > 1 ? atoi(argv[1]) : 0;
  float *out;
  if (cudaMalloc(&out, 5 * 256 * sizeof(float)) != cudaSuccess) return 1;
  if (cudaMemset(out, 0, 5 * 256 * sizeof(float)) != cudaSuccess) return 1;
  if (v == 0) k<0><<<4, 384>>>(out, 3);
  if (v == 1) k<1><<<4, 384>>>(out, 3);
  if (v == 2) k<2><<<4, 384>>>(out, 3);
  if (v == 3) k<3><<<4, 384>>>(out, 3);
  if (v == 4) k<4><<<4, 384>>>(out, 3);
  if (v == 5) k<5><<<4, 384>>>(out, 3);
  if (v == 6) k<6><<<4, 384>>>(out, 3);
  if (v == 7) k<7><<<4, 384>>>(out, 3);
  const cudaError_t e = cudaDeviceSynchronize();
  printf("variant %d: %s\n", v, cudaGetErrorString(e));
  return e != cudaSuccess;
}
