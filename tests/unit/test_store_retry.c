/*
 * test_store_retry.c - the writer's retry path (writer.c, append_sync)
 * against a store that fails appends on command (store_double.h):
 *
 *  - a batch that fails twice and then goes through stores each record
 *    once and reports every outcome as stored (done's stored = 1), with no
 *    store error counted;
 *  - a batch that keeps failing is counted in lu_manager_store_errors and
 *    its outcomes are reported unstored (stored = 0), each exactly once.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lucent/bus.h"
#include "lucent/lucent.h"
#include "store_double.h"

LU_FUNCTION(Echo, .events = "Echo", LU_ROUND_ROBIN) {
  (void)ctx;
  lu_out_result(out, data ? cJSON_Duplicate(data, 1) : cJSON_CreateNull());
  return LU_OK;
}

#define N 10
static _Atomic unsigned dones, stored_ok, stored_bad;

static void done(void *ctx, const lu_outcome_t *o, int stored) {
  (void)ctx;
  assert_non_null(o);
  atomic_fetch_add(&dones, 1);
  atomic_fetch_add(stored ? &stored_ok : &stored_bad, 1);
}

static lu_registry_t *reg;

static lu_manager_t *manager(lu_store_t **st) {
  *st = sd_open(malloc, free);
  assert_non_null(*st);
  lu_config_t cfg;
  lu_config_init(&cfg);
  cfg.shards = 2;
  cfg.store_handle = *st;
  lu_manager_t *m = NULL;
  char err[256];
  if (lu_manager_new(&m, &cfg, reg, err, sizeof err))
    fail_msg("manager: %s", err);
  atomic_store(&dones, 0);
  atomic_store(&stored_ok, 0);
  atomic_store(&stored_bad, 0);
  return m;
}

static void take_n(lu_manager_t *m, const char *tag) {
  for (int i = 0; i < N; i++) {
    char ev[160];
    int len = snprintf(ev, sizeof ev,
                       "{\"specversion\":\"1.0\",\"id\":\"%s-%d\",\"type\":"
                       "\"Echo\",\"source\":\"t\",\"data\":%d}", tag, i, i);
    lu_input_t in = {.json = ev, .len = (size_t)len, .line = (uint64_t)i + 1};
    assert_int_equal(lu_manager_take(m, &in, (lu_done_t){done, NULL}), 0);
  }
  lu_manager_drain(m);
}

static void test_fails_then_succeeds(void **state) {
  (void)state;
  lu_store_t *st;
  lu_manager_t *m = manager(&st);
  sd_store_t *sd = sd_of(st);
  atomic_store(&sd->fail_next, 2); /* the writer tries 4 times */
  take_n(m, "a");
  assert_int_equal(atomic_load(&dones), N);
  assert_int_equal(atomic_load(&stored_ok), N);
  assert_int_equal(lu_manager_store_errors(m), 0);
  assert_int_equal(atomic_load(&sd->failures), 2);
  /* One record per outcome, each stored once (failed appends wrote
   * nothing; a batch appended again keeps one copy). */
  pthread_mutex_lock(&sd->mu);
  assert_int_equal(sd->nids, N);
  for (size_t i = 0; i < sd->nids; i++) assert_int_equal(sd->times[i], 1);
  pthread_mutex_unlock(&sd->mu);
  lu_count_t total;
  uint64_t in;
  lu_manager_counts(m, &total, &in);
  assert_int_equal(in, N);
  assert_int_equal(total.outcomes[LU_OUTCOME_COMPLETED], N);
  lu_manager_free(m);
}

static void test_keeps_failing(void **state) {
  (void)state;
  lu_store_t *st;
  lu_manager_t *m = manager(&st);
  sd_store_t *sd = sd_of(st);
  atomic_store(&sd->fail_always, 1);
  take_n(m, "b");
  /* Each outcome reported once, as not stored: the transport NAKs. */
  assert_int_equal(atomic_load(&dones), N);
  assert_int_equal(atomic_load(&stored_bad), N);
  assert_int_equal(atomic_load(&stored_ok), 0);
  assert_true(lu_manager_store_errors(m) >= 1);
  assert_true(atomic_load(&sd->failures) >= 4); /* retried, not dropped */
  assert_int_equal(sd_count(st), 0);
  /* The store comes back: the next inputs are stored again. */
  atomic_store(&sd->fail_always, 0);
  uint64_t errors = lu_manager_store_errors(m);
  take_n(m, "c");
  assert_int_equal(atomic_load(&stored_ok), N);
  assert_int_equal(lu_manager_store_errors(m), errors);
  assert_int_equal(sd_count(st), N);
  lu_manager_free(m);
}

int main(void) {
  const lu_fn_t *const *fns;
  size_t n = lu_fns_here(&fns);
  if (lu_registry_new(&reg) || lu_registry_add(reg, fns, n, "test")) return 1;
  lu_log_set_level(LU_LOG_OFF);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fails_then_succeeds),
      cmocka_unit_test(test_keeps_failing),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  lu_registry_free(reg);
  return rc;
}
