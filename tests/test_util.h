/*
 * test_util.h: tiny helpers shared by the C tests: pass/fail counting, a deterministic RNG,
 * and bf16/fp16 conversions (written independently of the library's).
 *
 * Every test binary ends with `return tu_summary();`, which prints exactly one line
 * "N passed, M failed" and returns nonzero when M > 0.
 */
#ifndef FLASH_MLA_TEST_UTIL_H
#define FLASH_MLA_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>

extern long tu_passed, tu_failed;

/* Prints a failure (only the first TU_MAX_REPORTS of them) and counts it. */
void tu_fail(const char *file, int line, const char *cond, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
#define TU_MAX_REPORTS 20

/* CHECK(cond, fmt, ...): counts one check; on failure prints the location, the condition and
 * the formatted details (indices, values). fmt is required ("" when there is nothing to add). */
#define CHECK(cond, ...)                               \
  do {                                                 \
    if (cond)                                          \
      ++tu_passed;                                     \
    else                                               \
      tu_fail(__FILE__, __LINE__, #cond, __VA_ARGS__); \
  } while (0)

/* Prints "N passed, M failed"; returns the process exit status. */
int tu_summary(void);

/* ---- deterministic RNG (splitmix64) ---- */
typedef struct tu_rng {
  uint64_t s;
} tu_rng;
static inline tu_rng tu_rng_make(uint64_t seed) { tu_rng r = {seed}; return r; }
uint64_t tu_next(tu_rng *r);
double tu_uniform(tu_rng *r);                /* [0, 1) */
int64_t tu_range(tu_rng *r, int64_t lo, int64_t hi); /* uniform integer in [lo, hi] */
double tu_normal(tu_rng *r);                 /* standard normal (Box-Muller) */

/* ---- 16-bit floats, round to nearest even ---- */
float tu_bf16_to_float(uint16_t h);
uint16_t tu_float_to_bf16(float f);
float tu_fp16_to_float(uint16_t h);
uint16_t tu_float_to_fp16(float f);
/* dtype: 0 bf16, 1 fp16 */
float tu_half_to_float(int dtype, uint16_t h);
uint16_t tu_float_to_half(int dtype, float f);
/* Round a double to the nearest dtype value, returned as double (rounds once, not via float). */
double tu_round_to_half(int dtype, double x);

#define TU_BF16_NAN ((uint16_t)0x7fc0)
#define TU_FP16_NAN ((uint16_t)0x7e00)

#endif
