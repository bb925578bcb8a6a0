/*
 * test_store_retry.c - the writer's retry path (writer.c, append_sync)
 * against a store that fails appends on command (store_double.h):
 *
 *  - a batch that fails twice and then goes through stores each record
 *    once and reports every outcome as stored (done's stored = 1), with no
 *    store error counted;
 *  - a batch that keeps failing is counted in lu_manager_store_errors and
 *    its outcomes are reported unstored (stored = 0), each exactly once;
 *  - lu_manager_run with LU_RUN_EXECUTED reports the outcome as soon as
 *    the function returned, while the store still refuses it, and stores
 *    it once the store takes it; without the flag, nothing is reported
 *    before the store has it.
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

static lu_manager_t *manager_retrying(lu_store_t **st, uint32_t retry_ms) {
  *st = sd_open(malloc, free);
  assert_non_null(*st);
  lu_config_t cfg;
  lu_config_init(&cfg);
  cfg.shards = 2;
  cfg.store_retry_ms = retry_ms;
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

static lu_manager_t *manager(lu_store_t **st) {
  return manager_retrying(st, 0);
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

/* What done heard in executed mode (copied: the strings are borrowed). */
static lu_outcome_kind_t seen_kind;
static char seen_result[64];

static void done_copy(void *ctx, const lu_outcome_t *o, int stored) {
  done(ctx, o, stored);
  seen_kind = o->kind;
  snprintf(seen_result, sizeof seen_result, "%s",
           o->result_json ? o->result_json : "");
}

static lu_event_t *echo(const char *id, int v) {
  char json[160];
  int len = snprintf(json, sizeof json,
                     "{\"specversion\":\"1.0\",\"id\":\"%s\",\"type\":"
                     "\"Echo\",\"source\":\"t\",\"data\":%d}", id, v);
  lu_event_t *ev = NULL;
  char why[128];
  assert_int_equal(lu_event_parse(&ev, json, (size_t)len, why, sizeof why), 0);
  return ev;
}

static void test_run_executed(void **state) {
  (void)state;
  lu_store_t *st;
  /* The store refuses everything, and the writer keeps trying for ten
   * minutes: nothing is stored, or reported as stored, meanwhile. */
  lu_manager_t *m = manager_retrying(&st, 600000);
  sd_store_t *sd = sd_of(st);
  atomic_store(&sd->fail_always, 1);
  lu_done_t d = {done_copy, NULL};
  /* Inline on this thread (the shard is idle): when the call returns, the
   * function has run, and executed mode has answered. */
  assert_int_equal(lu_manager_run(m, echo("x-1", 7), NULL,
                                  LU_RUN_ONCE | LU_RUN_INLINE |
                                      LU_RUN_EXECUTED, d), 0);
  assert_int_equal(atomic_load(&dones), 1);
  assert_int_equal(atomic_load(&stored_bad), 1); /* stored = 0: not yet */
  assert_int_equal(seen_kind, LU_OUTCOME_COMPLETED);
  assert_string_equal(seen_result, "7");
  assert_int_equal(sd_count(st), 0);
  /* The default mode answers only once the outcome is stored. */
  assert_int_equal(lu_manager_run(m, echo("x-2", 8), NULL,
                                  LU_RUN_ONCE | LU_RUN_INLINE, d), 0);
  assert_int_equal(atomic_load(&dones), 1);
  /* The store comes back: both outcomes are stored, each reported once
   * (the executed one is not reported again). */
  atomic_store(&sd->fail_always, 0);
  lu_manager_drain(m);
  assert_int_equal(atomic_load(&dones), 2);
  assert_int_equal(atomic_load(&stored_ok), 1);
  assert_string_equal(seen_result, "8");
  assert_int_equal(sd_count(st), 2);
  assert_int_equal(lu_manager_store_errors(m), 0);
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
      cmocka_unit_test(test_run_executed),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  lu_registry_free(reg);
  return rc;
}
