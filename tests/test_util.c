/* test_util.c: see test_util.h. */
#include "test_util.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

long tu_passed = 0, tu_failed = 0;

void tu_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
  ++tu_failed;
  if (tu_failed > TU_MAX_REPORTS) return;
  fprintf(stderr, "FAIL %s:%d: CHECK(%s) ", file, line, cond);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  if (tu_failed == TU_MAX_REPORTS) fprintf(stderr, "(further failures are counted, not printed)\n");
}

int tu_summary(void) {
  printf("%ld passed, %ld failed\n", tu_passed, tu_failed);
  fflush(stdout);
  return tu_failed > 0 ? 1 : 0;
}

uint64_t tu_next(tu_rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double tu_uniform(tu_rng *r) { return (double)(tu_next(r) >> 11) * 0x1p-53; }

int64_t tu_range(tu_rng *r, int64_t lo, int64_t hi) {
  const uint64_t span = (uint64_t)(hi - lo) + 1u;
  return span == 0 ? (int64_t)tu_next(r) : lo + (int64_t)(tu_next(r) % span);
}

double tu_normal(tu_rng *r) {
  double u1 = tu_uniform(r), u2 = tu_uniform(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static uint32_t bits_of(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static float float_of(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

float tu_bf16_to_float(uint16_t h) { return float_of((uint32_t)h << 16); }

uint16_t tu_float_to_bf16(float f) {
  if (isnan(f)) return TU_BF16_NAN;
  return (uint16_t)(bits_of((float)tu_round_to_half(0, (double)f)) >> 16);
}

float tu_fp16_to_float(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 31)
    v = m ? NAN : INFINITY;
  else if (e == 0)
    v = ldexp((double)m, -24);
  else
    v = ldexp((double)(m | 1024), e - 25);
  return (float)((h & 0x8000) ? -v : v);
}

uint16_t tu_float_to_fp16(float f) {
  if (isnan(f)) return TU_FP16_NAN;
  const double x = tu_round_to_half(1, (double)f);
  const uint16_t sign = signbit(x) ? 0x8000 : 0;
  const double a = fabs(x);
  if (isinf(a)) return sign | 0x7c00;
  if (a < 0x1p-14) return (uint16_t)(sign | (uint16_t)ldexp(a, 24)); /* subnormal or zero */
  int e;
  const double fr = frexp(a, &e); /* a = fr * 2^e, fr in [0.5, 1) */
  const int mant = (int)ldexp(fr, 11) - 1024;
  return (uint16_t)(sign | ((e + 14) << 10) | mant);
}

float tu_half_to_float(int dtype, uint16_t h) { return dtype == 0 ? tu_bf16_to_float(h) : tu_fp16_to_float(h); }
uint16_t tu_float_to_half(int dtype, float f) { return dtype == 0 ? tu_float_to_bf16(f) : tu_float_to_fp16(f); }

double tu_round_to_half(int dtype, double x) {
  if (!isfinite(x) || x == 0.0) return x;
  int e;
  frexp(x, &e); /* |x| = f * 2^e, f in [0.5, 1) */
  const int bits = dtype == 0 ? 8 : 11;   /* significand bits */
  const int emin = dtype == 0 ? -125 : -13; /* e of the smallest normal */
  if (e < emin) e = emin;
  const double q = ldexp(1.0, e - bits); /* quantum at this exponent */
  const double r = rint(x / q) * q;      /* round half to even (default rounding mode) */
  const double max = dtype == 0 ? 0x1.fep127 : 65504.0;
  if (fabs(r) > max) return x > 0 ? INFINITY : -INFINITY;
  return r;
}
