/*
 * test_view.c - the shard view under churn: 5,000 distinct shard ids join
 * and leave a manager's view (lu_manager_set_view, lucent/bus.h), as a
 * fleet whose restarted pods get new ids does over its life, faster than
 * any time-to-live.  Every new shard must be in the view the moment it is
 * named (never silently ignored), every one that left must be out, routing
 * must reach the live ones, and the member table must stay within its
 * bound.  Also: more live shards than the view holds are left out with a
 * warning, not silently.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lucent/bus.h"
#include "lucent/lucent.h"
#include "pipeline.h" /* m->view, lu__view_members: the table's size */

LU_FUNCTION(Hashed, .events = "Hashed", LU_HASH_BASED("k")) {
  (void)ctx, (void)data;
  lu_out_result(out, cJSON_CreateNull());
  return LU_OK;
}

static lu_registry_t *reg;

/* A bus that records where forwards went (and says they are safe). */
static _Atomic unsigned forwards;
static void fwd(void *ud, const lu_fwd_t *f, lu_done_t done) {
  (void)ud, (void)f;
  atomic_fetch_add(&forwards, 1);
  if (done.fn) done.fn(done.ctx, NULL, 1);
}

static lu_manager_t *manager(void) {
  const char *ids[] = {"local"};
  lu_config_t cfg;
  lu_config_init(&cfg);
  cfg.shard_ids = ids;
  lu_manager_t *m = NULL;
  char err[256];
  if (lu_manager_new(&m, &cfg, reg, err, sizeof err))
    fail_msg("manager: %s", err);
  lu_bus_t bus = {.forward = fwd};
  assert_int_equal(lu_manager_set_bus(m, &bus), 0);
  return m;
}

#define LIVE 100   /* shards alive at once */
#define TOTAL 5000 /* distinct ids over the run */

static void test_churn_5000_ids(void **state) {
  (void)state;
  lu_manager_t *m = manager();
  static char names[TOTAL][LU_SHARD_ID_MAX];
  for (int i = 0; i < TOTAL; i++)
    snprintf(names[i], sizeof names[i], "pod-%d-%x", i, i * 2654435761u);
  const char *ids[LIVE];
  unsigned max_members = 0;
  /* Window [lo, hi): each step one joins (hi) and the oldest leaves. */
  for (int hi = 1; hi <= TOTAL; hi++) {
    int lo = hi > LIVE ? hi - LIVE : 0;
    unsigned n = 0;
    for (int i = lo; i < hi; i++) ids[n++] = names[i];
    lu_manager_set_view(m, ids, n);
    if (!lu_manager_in_view(m, names[hi - 1]))
      fail_msg("shard %s (the %dth id) was not taken into the view",
               names[hi - 1], hi);
    if (lo > 0 && lu_manager_in_view(m, names[lo - 1]))
      fail_msg("shard %s left but is still in the view", names[lo - 1]);
    char v[LIVE + 2][LU_SHARD_ID_MAX];
    assert_int_equal(lu_manager_view(m, v, LIVE + 2), n + 1);
    unsigned mb = lu__view_members(&m->view);
    if (mb > max_members) max_members = mb;
  }
  /* Bounded: never more members than the table's slots, though 5,001 ids
   * went through it. */
  assert_true(max_members <= LU_MEMBERS_MAX);
  assert_true(max_members >= LIVE + 1);
  /* Routing reaches the last live shards, and the table still takes new
   * ids. */
  for (int i = 0; i < 50; i++) {
    char ev[160];
    int len = snprintf(ev, sizeof ev,
                       "{\"specversion\":\"1.0\",\"id\":\"e%d\",\"type\":"
                       "\"Hashed\",\"source\":\"t\",\"data\":{\"k\":%d}}", i,
                       i);
    assert_int_equal(lu_manager_submit_json(m, ev, (size_t)len, 0), 0);
  }
  lu_manager_drain(m);
  assert_true(atomic_load(&forwards) > 0); /* ~100 of 101 shards remote */
  lu_manager_free(m);
}

static void test_too_many_live_shards_warn(void **state) {
  (void)state;
  FILE *logf = tmpfile();
  assert_non_null(logf);
  lu_log_set_fd(fileno(logf));
  lu_log_set_format(LU_LOG_FORMAT_JSON);
  lu_manager_t *m = manager();
  enum { N = LU_VIEW_MAX + 10 };
  static char names[N][LU_SHARD_ID_MAX];
  const char *ids[N];
  for (int i = 0; i < N; i++) {
    snprintf(names[i], sizeof names[i], "s%04d", i);
    ids[i] = names[i];
  }
  lu_manager_set_view(m, ids, N);
  /* The view holds LU_VIEW_MAX, its local shard included. */
  assert_int_equal(lu_manager_view(m, NULL, 0), LU_VIEW_MAX);
  lu_manager_free(m);
  lu_log_set_fd(2);
  char buf[4096];
  ssize_t k = pread(fileno(logf), buf, sizeof buf - 1, 0);
  assert_true(k > 0);
  buf[k] = 0;
  if (!strstr(buf, "shards left out of the view: no room") ||
      !strstr(buf, "\"skipped\":11"))
    fail_msg("no warning: %s", buf);
  fclose(logf);
}

int main(void) {
  const lu_fn_t *const *fns;
  size_t n = lu_fns_here(&fns);
  if (lu_registry_new(&reg) || lu_registry_add(reg, fns, n, "test")) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_churn_5000_ids),
      cmocka_unit_test(test_too_many_live_shards_warn),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  lu_registry_free(reg);
  return rc;
}
