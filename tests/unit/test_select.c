/*
 * test_select.c - the composite score and its explanation (src/core/select.c).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

/* cmocka 1.1.5 has only a float version. */
#define assert_near(a, b, eps)                                             \
  do {                                                                     \
    double a_ = (a), b_ = (b);                                             \
    if (!(fabs(a_ - b_) <= (eps)))                                         \
      fail_msg("%s = %.17g, expected %.17g (+-%g)", #a, a_, b_,            \
               (double)(eps));                                             \
  } while (0)

static const lu_weights_t W_DEFAULT = {0.3, 0.25, 0.25, 0.2};

static lu_candidate_t cand(const lu_fn_t *fn) {
  lu_candidate_t c = {.fn = fn, .ewma_ns = 0, .breaker_open = 0,
                      .affinity = 1.0};
  return c;
}

/* ---- sub-score formulas ------------------------------------------------ */

static void test_formulas(void **state) {
  (void)state;
  lu_fn_t f = {.name = "F", .cpu_millis = 200, .memory_mb = 64,
               .priority = 7, .timeout_ms = 200};
  lu_candidate_t c = cand(&f);
  c.ewma_ns = 50 * 1000000ull; /* a quarter of the 200 ms timeout */
  c.affinity = 0.5;
  lu_scores_t s;
  assert_int_equal(lu__select(&c, 1, &W_DEFAULT, 1000, 128, &s), 0);
  assert_null(s.excluded);
  assert_near(s.load, 0.75, 1e-12);
  /* max(200/1000, 64/128) = 0.5 */
  assert_near(s.resources, 0.5, 1e-12);
  assert_near(s.priority, 6.0 / 9.0, 1e-12);
  assert_near(s.affinity, 0.5, 1e-12);
  assert_near(s.total,
                      0.3 * 0.75 + 0.25 * 0.5 + 0.25 * 6.0 / 9 + 0.2 * 0.5,
                      1e-12);

  /* Defaults: timeout 0 = 1000 ms, priority 0 = 5, no needs = 1. */
  lu_fn_t d = {.name = "D"};
  c = cand(&d);
  c.ewma_ns = 500 * 1000000ull;
  assert_int_equal(lu__select(&c, 1, &W_DEFAULT, 1000, 1024, &s), 0);
  assert_near(s.load, 0.5, 1e-12);
  assert_near(s.resources, 1.0, 1e-12);
  assert_near(s.priority, 4.0 / 9.0, 1e-12);
  assert_near(s.affinity, 1.0, 1e-12);

  /* No history scores 1; at or beyond the deadline scores 0. */
  c.ewma_ns = 0;
  lu__select(&c, 1, &W_DEFAULT, 1000, 1024, &s);
  assert_near(s.load, 1.0, 0);
  c.ewma_ns = 5000 * 1000000ull;
  lu__select(&c, 1, &W_DEFAULT, 1000, 1024, &s);
  assert_near(s.load, 0.0, 0);

  /* Priority clamps to [1,10]; affinity clamps to [0,1]. */
  lu_fn_t hi = {.name = "H", .priority = 42}, lo = {.name = "L",
                                                     .priority = -3};
  c = cand(&hi);
  c.affinity = 7;
  lu__select(&c, 1, &W_DEFAULT, 1000, 1024, &s);
  assert_near(s.priority, 1.0, 0);
  assert_near(s.affinity, 1.0, 0);
  c = cand(&lo);
  c.affinity = -2;
  lu__select(&c, 1, &W_DEFAULT, 1000, 1024, &s);
  assert_near(s.priority, 0.0, 0);
  assert_near(s.affinity, 0.0, 0);

  /* Taking exactly what is free still fits, scoring 0. */
  lu_fn_t all = {.name = "All", .cpu_millis = 1000, .memory_mb = 10};
  c = cand(&all);
  assert_int_equal(lu__select(&c, 1, &W_DEFAULT, 1000, 1024, &s), 0);
  assert_near(s.resources, 0.0, 1e-12);
}

/* ---- choice ------------------------------------------------------------- */

static void test_single_candidate(void **state) {
  (void)state;
  lu_fn_t f = {.name = "Only", .priority = 1};
  lu_candidate_t c = cand(&f);
  c.ewma_ns = UINT64_MAX; /* worst load: still the only choice */
  c.affinity = 0;
  lu_scores_t s;
  assert_int_equal(lu__select(&c, 1, &W_DEFAULT, 1000, 1024, &s), 0);
  assert_int_equal(lu__select(&c, 1, NULL, 1000, 1024, &s), 0);
  /* No candidates at all. */
  assert_int_equal(lu__select(NULL, 0, &W_DEFAULT, 1000, 1024, NULL), -1);
}

static void test_higher_priority_wins(void **state) {
  (void)state;
  lu_fn_t a = {.name = "A", .priority = 3}, b = {.name = "B", .priority = 8};
  lu_candidate_t c[2] = {cand(&a), cand(&b)};
  lu_scores_t s[2];
  assert_int_equal(lu__select(c, 2, &W_DEFAULT, 1000, 1024, s), 1);
  assert_true(s[1].total > s[0].total);
  lu_candidate_t r[2] = {cand(&b), cand(&a)};
  assert_int_equal(lu__select(r, 2, &W_DEFAULT, 1000, 1024, s), 0);
}

static void test_not_fitting_never_chosen(void **state) {
  (void)state;
  lu_fn_t big = {.name = "Big", .priority = 10, .cpu_millis = 1500};
  lu_fn_t fat = {.name = "Fat", .priority = 10, .memory_mb = 2048};
  lu_fn_t small = {.name = "Small", .priority = 1, .cpu_millis = 900,
                   .memory_mb = 1000};
  lu_candidate_t c[3] = {cand(&big), cand(&fat), cand(&small)};
  c[2].ewma_ns = 900 * 1000000ull; /* and it is slow too */
  c[2].affinity = 0;
  lu_scores_t s[3];
  assert_int_equal(lu__select(c, 3, &W_DEFAULT, 1000, 1024, s), 2);
  assert_non_null(s[0].excluded);
  assert_non_null(strstr(s[0].excluded, "does not fit"));
  assert_non_null(s[1].excluded);
  assert_non_null(strstr(s[1].excluded, "does not fit"));
  assert_null(s[2].excluded);
  /* Even with every weight on priority. */
  lu_weights_t prio = {0, 0, 1, 0};
  assert_int_equal(lu__select(c, 3, &prio, 1000, 1024, s), 2);
  /* None fits: -1. */
  assert_int_equal(lu__select(c, 3, &W_DEFAULT, 800, 1024, s), -1);
  assert_non_null(s[2].excluded);
  /* Nothing free: only zero needs fit. */
  lu_fn_t zero = {.name = "Zero"};
  lu_candidate_t z[2] = {cand(&small), cand(&zero)};
  lu_scores_t zs[2];
  assert_int_equal(lu__select(z, 2, &W_DEFAULT, 0, 0, zs), 1);
  assert_non_null(zs[0].excluded);
  assert_near(zs[1].resources, 1.0, 0);
  lu_fn_t cpu_only = {.name = "CpuOnly", .cpu_millis = 1};
  z[1] = cand(&cpu_only);
  assert_int_equal(lu__select(z, 2, &W_DEFAULT, 0, 1024, zs), -1);
}

static void test_breaker_open_excluded(void **state) {
  (void)state;
  lu_fn_t a = {.name = "A", .priority = 10}, b = {.name = "B", .priority = 2};
  lu_candidate_t c[2] = {cand(&a), cand(&b)};
  c[0].breaker_open = 1;
  lu_scores_t s[2];
  assert_int_equal(lu__select(c, 2, &W_DEFAULT, 1000, 1024, s), 1);
  assert_string_equal(s[0].excluded, "circuit breaker open");
  /* Sub-scores are still there for --explain. */
  assert_near(s[0].priority, 1.0, 0);
  assert_near(s[0].load, 1.0, 0);
  c[1].breaker_open = 1;
  assert_int_equal(lu__select(c, 2, &W_DEFAULT, 1000, 1024, s), -1);
}

static void test_weights_change_winner(void **state) {
  (void)state;
  /* A: important but slow here.  B: unimportant but idle. */
  lu_fn_t a = {.name = "A", .priority = 10, .timeout_ms = 100};
  lu_fn_t b = {.name = "B", .priority = 1, .timeout_ms = 100};
  lu_candidate_t c[2] = {cand(&a), cand(&b)};
  c[0].ewma_ns = 90 * 1000000ull; /* load score 0.1 */
  c[1].ewma_ns = 0;               /* load score 1 */
  lu_scores_t s[2];
  lu_weights_t prio_heavy = {0.1, 0.0, 0.9, 0.0};
  lu_weights_t load_heavy = {0.9, 0.0, 0.1, 0.0};
  assert_int_equal(lu__select(c, 2, &prio_heavy, 1000, 1024, s), 0);
  assert_int_equal(lu__select(c, 2, &load_heavy, 1000, 1024, s), 1);
  /* And the default weights are the pattern's (0.3 0.25 0.25 0.2):
   * A = 0.03 + 0.25 + 0.25 + 0.2 = 0.73, B = 0.3 + 0.25 + 0 + 0.2 = 0.75. */
  assert_int_equal(lu__select(c, 2, NULL, 1000, 1024, s), 1);
  assert_near(s[0].total, 0.73, 1e-9);
  assert_near(s[1].total, 0.75, 1e-9);
}

static void permute_next(size_t *idx, size_t n, int *done) {
  /* next lexicographic permutation */
  size_t i = n - 1;
  while (i > 0 && idx[i - 1] >= idx[i]) i--;
  if (i == 0) {
    *done = 1;
    return;
  }
  size_t j = n - 1;
  while (idx[j] <= idx[i - 1]) j--;
  size_t t = idx[i - 1];
  idx[i - 1] = idx[j];
  idx[j] = t;
  for (size_t k = i, l = n - 1; k < l; k++, l--) {
    t = idx[k];
    idx[k] = idx[l];
    idx[l] = t;
  }
}

static void test_ties_deterministic(void **state) {
  (void)state;
  /* Equal totals by construction: priority differs but every weight is on
   * load, and load is equal.  Expected: higher priority (Q, Z), then the
   * smaller name: Q.  M is excluded; Y has a slightly lower total. */
  lu_fn_t f[6] = {
      {.name = "Z", .priority = 9}, {.name = "Q", .priority = 9},
      {.name = "A", .priority = 4}, {.name = "Zz", .priority = 0},
      {.name = "M", .priority = 10}, {.name = "Y", .priority = 10},
  };
  lu_weights_t w = {1, 0, 0, 0};
  lu_candidate_t base[6];
  for (int i = 0; i < 6; i++) base[i] = cand(&f[i]);
  base[4].breaker_open = 1;
  base[5].ewma_ns = 1000; /* 1 us of a 1 s timeout: 1e-6 lower */
  size_t idx[6] = {0, 1, 2, 3, 4, 5};
  int done = 0, perms = 0;
  while (!done) {
    lu_candidate_t c[6];
    lu_scores_t s[6];
    for (int i = 0; i < 6; i++) c[i] = base[idx[i]];
    int k = lu__select(c, 6, &w, 1000, 1024, s);
    assert_true(k >= 0);
    assert_string_equal(c[k].fn->name, "Q");
    perms++;
    permute_next(idx, 6, &done);
  }
  assert_int_equal(perms, 720);

  /* Near-equal totals chain: C = 1, B = C - 0.6e-9, A = C - 1.2e-9.  B ties
   * with C and A with B, but A is not within 1e-9 of the best, so the tied
   * set is {B, C} and B (smaller name) wins in every order.  (Comparing
   * neighbours pairwise would pick A or C depending on the order.) */
  lu_fn_t g[3] = {{.name = "C"}, {.name = "B"}, {.name = "A"}};
  lu_candidate_t h[3] = {cand(&g[0]), cand(&g[1]), cand(&g[2])};
  h[0].affinity = 1;
  h[1].affinity = 1 - 0.6e-9;
  h[2].affinity = 1 - 1.2e-9;
  lu_weights_t wa = {0, 0, 0, 1};
  size_t id3[3] = {0, 1, 2};
  done = 0;
  perms = 0;
  while (!done) {
    lu_candidate_t c[3];
    lu_scores_t s[3];
    for (int i = 0; i < 3; i++) c[i] = h[id3[i]];
    int k = lu__select(c, 3, &wa, 1000, 1024, s);
    assert_true(k >= 0);
    assert_string_equal(c[k].fn->name, "B");
    perms++;
    permute_next(id3, 3, &done);
  }
  assert_int_equal(perms, 6);
}

static void test_subscores_in_range(void **state) {
  (void)state;
  uint64_t rng = 12345;
  static lu_fn_t fns[1000];
  static lu_candidate_t c[1000];
  static lu_scores_t s[1000];
  static const double odd_aff[] = {NAN, INFINITY, -INFINITY, -1, 2, 0, 1};
  for (int i = 0; i < 1000; i++) {
    uint64_t r = lu__rand_next(&rng);
    fns[i] = (lu_fn_t){
        .name = "R",
        .cpu_millis = (uint32_t)(r % 4 == 0 ? 0 : lu__rand_next(&rng) % 3000),
        .memory_mb = (uint32_t)(r % 5 == 0 ? 0 : lu__rand_next(&rng) % 3000),
        .priority = (int32_t)(lu__rand_next(&rng) % 30) - 10,
        .timeout_ms = (uint32_t)(r % 3 == 0 ? 0 : lu__rand_next(&rng)),
    };
    c[i].fn = &fns[i];
    uint64_t e = lu__rand_next(&rng);
    c[i].ewma_ns = i % 7 == 0 ? UINT64_MAX : e >> (e % 64);
    c[i].breaker_open = (int)(lu__rand_next(&rng) % 4 == 0);
    c[i].affinity = i % 10 == 0 ? odd_aff[(i / 10) % 7]
                                : lu__rand_unit(&rng) * 3 - 1;
  }
  uint32_t frees[][2] = {{1000, 1024}, {0, 0}, {1, 1}, {UINT32_MAX, 7},
                         {2500, 2500}};
  lu_weights_t ws[] = {W_DEFAULT, {1, 1, 1, 1}, {0, 0, 0, 0},
                       {NAN, -1, INFINITY, 0.5}};
  for (size_t fi = 0; fi < sizeof frees / sizeof frees[0]; fi++) {
    for (size_t wi = 0; wi < sizeof ws / sizeof ws[0]; wi++) {
      int k = lu__select(c, 1000, &ws[wi], frees[fi][0], frees[fi][1], s);
      double wsum = 0;
      const double *wv = &ws[wi].load;
      for (int j = 0; j < 4; j++)
        if (isfinite(wv[j]) && wv[j] > 0) wsum += wv[j];
      for (int i = 0; i < 1000; i++) {
        double sub[4] = {s[i].load, s[i].resources, s[i].priority,
                         s[i].affinity};
        for (int j = 0; j < 4; j++) {
          assert_false(isnan(sub[j]));
          assert_true(sub[j] >= 0.0 && sub[j] <= 1.0);
        }
        assert_true(isfinite(s[i].total));
        assert_true(s[i].total >= 0 && s[i].total <= wsum + 1e-12);
        int fits = fns[i].cpu_millis <= frees[fi][0] &&
                   fns[i].memory_mb <= frees[fi][1];
        assert_int_equal(s[i].excluded == NULL,
                         fits && !c[i].breaker_open);
      }
      if (k >= 0) {
        assert_null(s[k].excluded);
        for (int i = 0; i < 1000; i++)
          if (!s[i].excluded) assert_true(s[i].total <= s[k].total + 1e-9);
      } else {
        for (int i = 0; i < 1000; i++) assert_non_null(s[i].excluded);
      }
    }
  }
}

/* ---- explain ------------------------------------------------------------ */

static void test_explain(void **state) {
  (void)state;
  lu_fn_t a = {.name = "FraudRules", .priority = 8, .cpu_millis = 200};
  lu_fn_t b = {.name = "FraudModel", .priority = 10};
  lu_fn_t d = {.name = "FraudDeep", .cpu_millis = 5000, .memory_mb = 64};
  lu_candidate_t c[3] = {cand(&a), cand(&b), cand(&d)};
  c[1].breaker_open = 1;
  lu_scores_t s[3];
  int k = lu__select(c, 3, &W_DEFAULT, 1000, 1024, s);
  assert_int_equal(k, 0);
  char buf[1024];
  char *r = lu__explain(buf, sizeof buf, "shard-1", "ev-42", c, s, 3, k);
  assert_ptr_equal(r, buf);
  assert_non_null(strstr(buf, "explain shard=shard-1 event=ev-42 "));
  assert_non_null(strstr(buf, "chosen=FraudRules"));
  assert_non_null(strstr(buf, "FraudRules{load=1.000 res=0.800 prio=0.778 "
                              "aff=1.000 total="));
  assert_non_null(strstr(buf, "FraudModel{"));
  assert_non_null(strstr(buf, "excluded=\"circuit breaker open\""));
  assert_non_null(strstr(buf, "FraudDeep{"));
  assert_non_null(strstr(buf, "does not fit: needs 5000 millicores / 64 MB"));
  assert_null(strchr(buf, '\n'));

  /* None chosen. */
  c[0].breaker_open = 1;
  k = lu__select(c, 3, &W_DEFAULT, 1000, 1024, s);
  assert_int_equal(k, -1);
  lu__explain(buf, sizeof buf, "shard-1", "ev-43", c, s, 3, k);
  assert_non_null(strstr(buf, "chosen=none"));
  assert_non_null(strstr(buf, "FraudRules{"));

  /* An event id cannot break the line. */
  lu__explain(buf, sizeof buf, "s", "a b\nc\"d", c, s, 3, k);
  assert_null(strchr(buf, '\n'));
  assert_non_null(strstr(buf, "event=a?b?c?d chosen="));

  /* Truncation: always NUL-terminated, never past cap, for every cap. */
  char full[1024];
  lu__explain(full, sizeof full, "shard-1", "ev-43", c, s, 3, k);
  size_t flen = strlen(full);
  for (size_t cap = 1; cap <= flen + 2; cap++) {
    char small[1100];
    memset(small, 'X', sizeof small);
    lu__explain(small, cap, "shard-1", "ev-43", c, s, 3, k);
    size_t len = strlen(small);
    assert_true(len < cap);
    assert_int_equal(small[cap], 'X'); /* nothing written past cap */
    if (cap > flen) assert_string_equal(small, full);
    else if (cap >= 4) assert_string_equal(small + len - 3, "...");
  }
  /* cap 0 writes nothing. */
  char one = 'X';
  assert_ptr_equal(lu__explain(&one, 0, "s", "e", c, s, 3, k), &one);
  assert_int_equal(one, 'X');
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_formulas),
      cmocka_unit_test(test_single_candidate),
      cmocka_unit_test(test_higher_priority_wins),
      cmocka_unit_test(test_not_fitting_never_chosen),
      cmocka_unit_test(test_breaker_open_excluded),
      cmocka_unit_test(test_weights_change_winner),
      cmocka_unit_test(test_ties_deterministic),
      cmocka_unit_test(test_subscores_in_range),
      cmocka_unit_test(test_explain),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
