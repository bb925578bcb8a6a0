/*
 * bench_util.h - what both benchmarks need besides their own measurements:
 * fatal errors, clocks, allocation, sorting and percentiles, option
 * values.  Header-only (each bench program is built alone); define
 * BENCH_PROG, the program's name for messages, before including it.
 */
#ifndef LUCENT_BENCH_UTIL_H
#define LUCENT_BENCH_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifndef BENCH_PROG
#error "define BENCH_PROG before including bench_util.h"
#endif

/* Prints "<prog>: <message>" and exits 1 (atexit handlers run). */
static inline void die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
static inline void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs(BENCH_PROG ": ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(1);
}

static inline uint64_t clock_ns(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

static inline void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) die("out of memory (%zu bytes)", n);
  return p;
}

static inline int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static inline int cmp_dbl(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static inline uint64_t pct(const uint64_t *sorted, size_t n, double q) {
  if (!n) return 0;
  double x = q * (double)n;
  size_t k = (size_t)x;
  if ((double)k < x) k++; /* ceil */
  if (k < 1) k = 1;
  if (k > n) k = n;
  return sorted[k - 1];
}

/* A positive count option (at most 10^8), or die naming the option. */
static inline size_t parse_size(const char *s, const char *what) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || v == 0 || v > 100000000ull)
    die("%s: bad value '%s'", what, s);
  return (size_t)v;
}

#endif /* LUCENT_BENCH_UTIL_H */
