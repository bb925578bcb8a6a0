/*
 * test_hist.c - the log-linear latency histogram (src/core/hist.c).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

static lu_hist_t *hist_new(void) {
  lu_hist_t *h = calloc(1, sizeof *h);
  assert_non_null(h);
  return h;
}

static void test_uniform_quantiles(void **state) {
  (void)state;
  lu_hist_t *h = hist_new();
  const uint64_t N = 100000;
  for (uint64_t v = 1; v <= N; v++) lu__hist_add(h, v);
  assert_int_equal(h->n, N);
  assert_int_equal(h->max, N);
  assert_int_equal(h->sum, N * (N + 1) / 2);
  for (int i = 1; i <= 1000; i++) {
    double q = i / 1000.0;
    double exact = ceil(q * (double)N); /* the value of rank ceil(qN) */
    uint64_t got = lu__hist_quantile(h, q);
    /* The upper bound of the bucket: never below the exact value, and
     * within 12.5% above it. */
    assert_true((double)got >= exact);
    assert_true((double)got <= exact * 1.125);
  }
  assert_int_equal(lu__hist_quantile(h, 0.5), 53247); /* bucket 49152.. */
  free(h);
}

static void test_small_values_exact(void **state) {
  (void)state;
  lu_hist_t *h = hist_new();
  for (uint64_t v = 0; v < 16; v++) lu__hist_add(h, v);
  for (uint64_t r = 1; r <= 16; r++)
    assert_int_equal(lu__hist_quantile(h, (double)r / 16), r - 1);
  free(h);
}

static void test_p0_p100(void **state) {
  (void)state;
  lu_hist_t *h = hist_new();
  lu__hist_add(h, 1000);
  lu__hist_add(h, 5000);
  lu__hist_add(h, 123456);
  /* p0 = the smallest value's bucket (rank 1), p100 = exactly the max. */
  uint64_t p0 = lu__hist_quantile(h, 0);
  assert_true(p0 >= 1000 && p0 <= 1125);
  assert_int_equal(lu__hist_quantile(h, 1), 123456);
  /* Out-of-range q is clamped. */
  assert_int_equal(lu__hist_quantile(h, -3), p0);
  assert_int_equal(lu__hist_quantile(h, NAN), p0);
  assert_int_equal(lu__hist_quantile(h, 7), 123456);
  /* One value: every quantile is that value (capped at max). */
  lu_hist_t *one = hist_new();
  lu__hist_add(one, 777777);
  assert_int_equal(lu__hist_quantile(one, 0), 777777);
  assert_int_equal(lu__hist_quantile(one, 0.5), 777777);
  assert_int_equal(lu__hist_quantile(one, 1), 777777);
  free(one);
  free(h);
}

static void test_empty(void **state) {
  (void)state;
  lu_hist_t *h = hist_new();
  assert_int_equal(lu__hist_quantile(h, 0), 0);
  assert_int_equal(lu__hist_quantile(h, 0.5), 0);
  assert_int_equal(lu__hist_quantile(h, 1), 0);
  lu_hist_t *e = hist_new();
  lu__hist_merge(h, e);
  assert_int_equal(h->n, 0);
  assert_int_equal(lu__hist_quantile(h, 0.99), 0);
  free(e);
  free(h);
}

static void test_merge_equals_single(void **state) {
  (void)state;
  lu_hist_t *a = hist_new(), *b = hist_new(), *all = hist_new();
  uint64_t rng = 99;
  for (int i = 0; i < 50000; i++) {
    uint64_t r = lu__rand_next(&rng);
    uint64_t v = r >> (18 + r % 46); /* many magnitudes; sum cannot saturate */
    lu__hist_add(i % 3 ? a : b, v);
    lu__hist_add(all, v);
  }
  lu__hist_merge(a, b);
  assert_memory_equal(a->counts, all->counts, sizeof a->counts);
  assert_int_equal(a->n, all->n);
  assert_int_equal(a->sum, all->sum);
  assert_int_equal(a->max, all->max);
  for (int i = 0; i <= 100; i++)
    assert_int_equal(lu__hist_quantile(a, i / 100.0),
                     lu__hist_quantile(all, i / 100.0));
  free(a);
  free(b);
  free(all);
}

static void test_extremes(void **state) {
  (void)state;
  lu_hist_t *h = hist_new();
  lu__hist_add(h, 0);
  assert_int_equal(lu__hist_quantile(h, 1), 0);
  lu__hist_add(h, UINT64_MAX);
  lu__hist_add(h, UINT64_MAX);
  assert_int_equal(h->n, 3);
  assert_int_equal(h->max, UINT64_MAX);
  assert_int_equal(h->sum, UINT64_MAX); /* saturates, never wraps */
  assert_int_equal(lu__hist_quantile(h, 0), 0);
  assert_int_equal(lu__hist_quantile(h, 1), UINT64_MAX);
  assert_int_equal(lu__hist_quantile(h, 0.5), UINT64_MAX);
  /* Every power of two and its neighbours land in a bucket whose upper
   * bound is >= the value and within 12.5%. */
  for (int e = 0; e < 64; e++) {
    uint64_t p = (uint64_t)1 << e;
    uint64_t vs[3] = {p - 1, p, p + (p >> 1)};
    for (int k = 0; k < 3; k++) {
      lu_hist_t *one = hist_new();
      lu__hist_add(one, vs[k]);
      lu__hist_add(one, UINT64_MAX); /* so max does not cap the answer */
      uint64_t got = lu__hist_quantile(one, 0.5);
      assert_true(got >= vs[k]);
      assert_true((long double)got <= (long double)vs[k] * 1.125L);
      free(one);
    }
  }
  free(h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_uniform_quantiles),
      cmocka_unit_test(test_small_values_exact),
      cmocka_unit_test(test_p0_p100),
      cmocka_unit_test(test_empty),
      cmocka_unit_test(test_merge_equals_single),
      cmocka_unit_test(test_extremes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
