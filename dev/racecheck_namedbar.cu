/*
 * racecheck_namedbar.cu: does compute-sanitizer racecheck understand a named barrier over a subset
 * of the CTA? Mimics the Hopper 64-row kernel's epilogue row-sum exchange (decode_sm90.cu): 384
 * threads, warpgroup 2 (the "producer") lowers its registers and exits early, the 256 consumer
 * threads (quad leaders) write lsum[wg * 64 + r], meet at `bar.sync 1, 256`, read lsum[r] +
 * lsum[64 + r], meet again. The program is race-free by construction; a racecheck report on it is
 * an artefact of the tool. Variants (argv[1]): 0 as described; 1 the producer stays until the end
 * (all threads meet at __syncthreads last); 2 as 0 with barrier 0 (count 256) instead of
 * barrier 1; 3 as 0 without setmaxnreg.
 * Build + run on the GPU machine:
 *   nvcc -O2 -gencode=arch=compute_90a,code=sm_90a dev/racecheck_namedbar.cu -o /tmp/rnb
 *   for v in 0 1 2 3; do compute-sanitizer --tool racecheck /tmp/rnb $v; done
 */
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

template <int V>
__global__ void __launch_bounds__(384, 1) k(float *out, int iters) {
  __shared__ float lsum[128];
  const int tid = threadIdx.x, wg = tid >> 7, lane = tid & 31, warp = (tid & 127) >> 5;
  if (wg == 2) {
    if (V != 3) asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    if (V == 1) __syncthreads();
    return;
  }
  if (V != 3) asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
  const int quad = lane & 3, r0 = warp * 16 + (lane >> 2), r1 = r0 + 8;
  float acc = 0.f;
  for (int it = 0; it < iters; ++it) {
    const float l0 = tid + it, l1 = tid * 2 + it;
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
  if (V == 1) __syncthreads();
}

int main(int argc, char **argv) {
  const int v = argc > 1 ? atoi(argv[1]) : 0;
  float *out;
  if (cudaMalloc(&out, 4 * 256 * sizeof(float)) != cudaSuccess) return 1;
  if (v == 0) k<0><<<4, 384>>>(out, 3);
  if (v == 1) k<1><<<4, 384>>>(out, 3);
  if (v == 2) k<2><<<4, 384>>>(out, 3);
  if (v == 3) k<3><<<4, 384>>>(out, 3);
  const cudaError_t e = cudaDeviceSynchronize();
  printf("variant %d: %s\n", v, cudaGetErrorString(e));
  return e != cudaSuccess;
}
