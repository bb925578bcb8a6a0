/*
 * hist.c - a log-linear histogram of uint64 values (latencies in ns).
 *
 * Buckets: values 0..15 each get their own bucket (exact).  Above that,
 * every power of two [2^e, 2^(e+1)) with e >= 4 is cut into LU_HIST_SUB = 8
 * equal sub-buckets of width 2^(e-3), so a bucket's upper bound is within
 * 12.5% of any value in it:
 *
 *   v < 16:   bucket = v
 *   v >= 16:  e = 63 - clz(v);  sub = (v >> (e - 3)) & 7;
 *             bucket = (e - 2) * 8 + sub        (e = 63 -> at most 495)
 *
 * (The same formula with e = 3 gives bucket = v for 8..15, which is why the
 * exact range is 0..15.)  Adding is O(1): one clz, a shift, an increment.
 * 496 of the LU_HIST_BUCKETS = 512 slots are used.
 *
 * lu__hist_quantile(q) finds the bucket holding the value of rank
 * ceil(q * n) (at least 1, at most n) and returns that bucket's upper bound,
 * but never more than the largest value added: so q = 1 gives the exact
 * max, and any quantile over-estimates by less than 12.5%.
 *
 * sum saturates at UINT64_MAX instead of wrapping.  One writer, no locks;
 * merge per-thread histograms to read them together.
 */
#include <math.h>

#include "internal.h"

#define SUB_BITS 3 /* log2(LU_HIST_SUB) */
_Static_assert(LU_HIST_SUB == (1 << SUB_BITS), "LU_HIST_SUB must be 8");
_Static_assert((63 - SUB_BITS + 1) * LU_HIST_SUB <= LU_HIST_BUCKETS,
               "LU_HIST_BUCKETS too small");

static unsigned bucket_of(uint64_t v) {
  if (v < 2 * LU_HIST_SUB) return (unsigned)v;
  unsigned e = 63u - (unsigned)__builtin_clzll(v);
  unsigned sub = (unsigned)(v >> (e - SUB_BITS)) & (LU_HIST_SUB - 1);
  return (e - SUB_BITS + 1) * LU_HIST_SUB + sub;
}

/* The largest value that falls in bucket b. */
static uint64_t bucket_upper(unsigned b) {
  if (b < 2 * LU_HIST_SUB) return b;
  unsigned e = b / LU_HIST_SUB + SUB_BITS - 1;
  uint64_t sub = b % LU_HIST_SUB;
  uint64_t width = (uint64_t)1 << (e - SUB_BITS);
  uint64_t lower = (LU_HIST_SUB + sub) << (e - SUB_BITS);
  return lower + (width - 1); /* no overflow: at most UINT64_MAX */
}

static uint64_t sat_add(uint64_t a, uint64_t b) {
  uint64_t r = a + b;
  return r < a ? UINT64_MAX : r;
}

void lu__hist_add(lu_hist_t *h, uint64_t v) {
  h->counts[bucket_of(v)]++;
  h->n++;
  h->sum = sat_add(h->sum, v);
  if (v > h->max) h->max = v;
}

void lu__hist_merge(lu_hist_t *dst, const lu_hist_t *src) {
  for (unsigned i = 0; i < LU_HIST_BUCKETS; i++) dst->counts[i] += src->counts[i];
  dst->n += src->n;
  dst->sum = sat_add(dst->sum, src->sum);
  if (src->max > dst->max) dst->max = src->max;
}

uint64_t lu__hist_quantile(const lu_hist_t *h, double q) {
  if (h->n == 0) return 0;
  if (!(q > 0)) q = 0; /* also NaN */
  if (q > 1) q = 1;
  double r = ceil(q * (double)h->n);
  uint64_t rank = r >= (double)h->n ? h->n : (uint64_t)r;
  if (rank < 1) rank = 1;
  uint64_t seen = 0;
  for (unsigned b = 0; b < LU_HIST_BUCKETS; b++) {
    seen += h->counts[b];
    if (seen >= rank) {
      uint64_t up = bucket_upper(b);
      return up < h->max ? up : h->max;
    }
  }
  return h->max; /* counts and n disagree (not reachable via the API) */
}
