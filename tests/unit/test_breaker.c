/*
 * test_breaker.c - the per-function circuit breaker (src/core/breaker.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "internal.h"

#define COOL 1000u

static void fail_n(lu_breaker_t *b, unsigned n, uint64_t now, unsigned thr) {
  for (unsigned i = 0; i < n; i++) lu__breaker_record(b, 0, now, thr);
}

static void test_opens_after_threshold(void **state) {
  (void)state;
  lu_breaker_t b = {0};
  assert_int_equal(b.state, LU_BREAKER_CLOSED);
  fail_n(&b, 2, 100, 3);
  assert_int_equal(b.state, LU_BREAKER_CLOSED);
  assert_int_equal(b.failures, 2);
  assert_true(lu__breaker_allow(&b, 100, COOL));
  lu__breaker_record(&b, 0, 150, 3);
  assert_int_equal(b.state, LU_BREAKER_OPEN);
  assert_int_equal(b.opened_ms, 150);
  assert_false(lu__breaker_allow(&b, 150, COOL));
  assert_false(lu__breaker_allow(&b, 150 + COOL - 1, COOL));
  assert_int_equal(b.state, LU_BREAKER_OPEN);
}

static void test_success_resets(void **state) {
  (void)state;
  lu_breaker_t b = {0};
  for (int round = 0; round < 10; round++) {
    fail_n(&b, 2, 100, 3);
    lu__breaker_record(&b, 1, 100, 3);
    assert_int_equal(b.failures, 0);
    assert_int_equal(b.state, LU_BREAKER_CLOSED);
  }
  /* 20 failures in all, never 3 in a row: still closed. */
  assert_true(lu__breaker_allow(&b, 100, COOL));
}

static void test_half_open_after_cooldown(void **state) {
  (void)state;
  lu_breaker_t b = {0};
  fail_n(&b, 3, 1000, 3);
  assert_int_equal(b.state, LU_BREAKER_OPEN);
  assert_false(lu__breaker_allow(&b, 1999, COOL));
  assert_true(lu__breaker_allow(&b, 2000, COOL)); /* the one trial */
  assert_int_equal(b.state, LU_BREAKER_HALF_OPEN);
  /* While the trial is in flight, nobody else gets through. */
  assert_false(lu__breaker_allow(&b, 2001, COOL));
  assert_false(lu__breaker_allow(&b, 2500, COOL));
  /* Trial succeeds: closed, count reset. */
  lu__breaker_record(&b, 1, 2600, 3);
  assert_int_equal(b.state, LU_BREAKER_CLOSED);
  assert_int_equal(b.failures, 0);
  assert_true(lu__breaker_allow(&b, 2601, COOL));
  /* It takes a full threshold again to reopen. */
  fail_n(&b, 2, 2700, 3);
  assert_int_equal(b.state, LU_BREAKER_CLOSED);
}

static void test_half_open_failure_reopens(void **state) {
  (void)state;
  lu_breaker_t b = {0};
  fail_n(&b, 3, 1000, 3);
  assert_true(lu__breaker_allow(&b, 2000, COOL));
  assert_int_equal(b.state, LU_BREAKER_HALF_OPEN);
  lu__breaker_record(&b, 0, 2300, 3); /* one failure is enough */
  assert_int_equal(b.state, LU_BREAKER_OPEN);
  assert_int_equal(b.opened_ms, 2300);
  assert_false(lu__breaker_allow(&b, 2300 + COOL - 1, COOL));
  assert_true(lu__breaker_allow(&b, 2300 + COOL, COOL));
  assert_int_equal(b.state, LU_BREAKER_HALF_OPEN);
}

static void test_lost_trial_does_not_wedge(void **state) {
  (void)state;
  lu_breaker_t b = {0};
  fail_n(&b, 3, 0, 3);
  assert_true(lu__breaker_allow(&b, COOL, COOL));
  /* The trial's result never comes back: after another cooldown, a new
   * trial is granted. */
  assert_false(lu__breaker_allow(&b, 2 * COOL - 1, COOL));
  assert_true(lu__breaker_allow(&b, 2 * COOL, COOL));
  assert_int_equal(b.state, LU_BREAKER_HALF_OPEN);
}

static void test_late_results_while_open(void **state) {
  (void)state;
  lu_breaker_t b = {0};
  fail_n(&b, 3, 1000, 3);
  /* A call admitted before the breaker opened succeeds: stays open, the
   * cooldown is not changed. */
  lu__breaker_record(&b, 1, 1100, 3);
  assert_int_equal(b.state, LU_BREAKER_OPEN);
  lu__breaker_record(&b, 0, 1200, 3);
  assert_int_equal(b.state, LU_BREAKER_OPEN);
  assert_int_equal(b.opened_ms, 1000);
  assert_true(lu__breaker_allow(&b, 2000, COOL));
}

static void test_peek_does_not_change_state(void **state) {
  (void)state;
  lu_breaker_t b = {0};
  assert_true(lu__breaker_peek(&b, 0, COOL));
  fail_n(&b, 3, 1000, 3);
  lu_breaker_t before = b;
  assert_false(lu__breaker_peek(&b, 1500, COOL));
  assert_true(lu__breaker_peek(&b, 2000, COOL));
  assert_true(lu__breaker_peek(&b, 2000, COOL));
  assert_memory_equal(&b, &before, sizeof b);
  assert_int_equal(b.state, LU_BREAKER_OPEN);
  /* peek agrees with allow, in every state. */
  for (uint64_t t = 1000; t < 5000; t += 250) {
    lu_breaker_t x = b;
    int p = lu__breaker_peek(&x, t, COOL);
    assert_int_equal(p, lu__breaker_allow(&x, t, COOL));
    if (x.state == LU_BREAKER_HALF_OPEN) {
      lu_breaker_t y = x;
      for (uint64_t u = t; u < t + 2 * COOL; u += 100) {
        lu_breaker_t z = y;
        int zp = lu__breaker_peek(&z, u, COOL); /* before allow changes z */
        assert_int_equal(zp, lu__breaker_allow(&z, u, COOL));
      }
    }
  }
  /* A clock that goes backwards is "no time passed". */
  assert_false(lu__breaker_peek(&b, 10, COOL));
}

static void test_threshold_zero_never_opens(void **state) {
  (void)state;
  lu_breaker_t b = {0};
  fail_n(&b, 100000, 5, 0);
  assert_int_equal(b.state, LU_BREAKER_CLOSED);
  assert_true(lu__breaker_allow(&b, 6, COOL));
  assert_true(lu__breaker_peek(&b, 6, COOL));
  /* threshold 1: the first failure opens. */
  lu_breaker_t c = {0};
  lu__breaker_record(&c, 0, 5, 1);
  assert_int_equal(c.state, LU_BREAKER_OPEN);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_opens_after_threshold),
      cmocka_unit_test(test_success_resets),
      cmocka_unit_test(test_half_open_after_cooldown),
      cmocka_unit_test(test_half_open_failure_reopens),
      cmocka_unit_test(test_lost_trial_does_not_wedge),
      cmocka_unit_test(test_late_results_while_open),
      cmocka_unit_test(test_peek_does_not_change_state),
      cmocka_unit_test(test_threshold_zero_never_opens),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
