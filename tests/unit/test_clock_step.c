/*
 * test_clock_step.c - a step of the wall clock stalls no timed wait.
 *
 * A timed wait on a condition variable whose clock is CLOCK_REALTIME
 * lasts until the wall clock reaches its deadline: if the clock is set
 * back an hour meanwhile (NTP, an operator, a VM restored), the wait lasts
 * an hour more.  Heartbeats, the claimer, the pullers and the confirmed-
 * forwarding sweeper must wait on the monotonic clock instead
 * (lu__cond_init_mono + lu__cond_wait_until).
 *
 * The test links lucent's objects statically with the linker's --wrap for
 * pthread_cond_init/destroy/timedwait (tests/CMakeLists.txt): a condition
 * initialised with a CLOCK_MONOTONIC attribute waits as asked; any other
 * timed wait is counted and behaves as if the wall clock was set back an
 * hour during it (its deadline moves an hour later).  Only lucent's own
 * calls are wrapped (nats.c is a shared library with its own).
 *
 * Then, on a real nats-server:
 *  - two shards' memberships with heartbeats every 100 ms x
 *    LUCENT_TEST_SLOW (a peer drops out after 6 silent intervals) keep
 *    each other in their views for 2.5 such timeouts;
 *  - a NATS bus claims its intake partitions (after its claim delay of 6
 *    intervals) and runs what is published there;
 *  - and not one timed wait of lucent's used the wall clock.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "lucent/lucent.h"
#include "membership.h"
#include "nats_internal.h"
#include "nats_server.h"

/* ---- the wrapped calls ------------------------------------------------ */

int __real_pthread_cond_init(pthread_cond_t *c, const pthread_condattr_t *a);
int __real_pthread_cond_destroy(pthread_cond_t *c);
int __real_pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m,
                                  const struct timespec *abs);
int __wrap_pthread_cond_init(pthread_cond_t *c, const pthread_condattr_t *a);
int __wrap_pthread_cond_destroy(pthread_cond_t *c);
int __wrap_pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m,
                                  const struct timespec *abs);

#define MAX_MONO 4096
static pthread_mutex_t mono_lock = PTHREAD_MUTEX_INITIALIZER;
static const pthread_cond_t *mono[MAX_MONO];
static _Atomic unsigned wall_waits;

static int is_mono(const pthread_cond_t *c) {
  int found = 0;
  pthread_mutex_lock(&mono_lock);
  for (size_t i = 0; i < MAX_MONO && !found; i++) found = mono[i] == c;
  pthread_mutex_unlock(&mono_lock);
  return found;
}

static void forget(const pthread_cond_t *c) {
  pthread_mutex_lock(&mono_lock);
  for (size_t i = 0; i < MAX_MONO; i++)
    if (mono[i] == c) mono[i] = NULL;
  pthread_mutex_unlock(&mono_lock);
}

int __wrap_pthread_cond_init(pthread_cond_t *c, const pthread_condattr_t *a) {
  clockid_t clk = CLOCK_REALTIME;
  if (a) pthread_condattr_getclock(a, &clk);
  forget(c);
  if (clk == CLOCK_MONOTONIC) {
    pthread_mutex_lock(&mono_lock);
    for (size_t i = 0; i < MAX_MONO; i++)
      if (!mono[i]) {
        mono[i] = c;
        break;
      }
    pthread_mutex_unlock(&mono_lock);
  }
  return __real_pthread_cond_init(c, a);
}

int __wrap_pthread_cond_destroy(pthread_cond_t *c) {
  forget(c);
  return __real_pthread_cond_destroy(c);
}

int __wrap_pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m,
                                  const struct timespec *abs) {
  if (is_mono(c)) return __real_pthread_cond_timedwait(c, m, abs);
  atomic_fetch_add(&wall_waits, 1);
  /* The wall clock goes back an hour during this wait. */
  struct timespec later = *abs;
  later.tv_sec += 3600;
  return __real_pthread_cond_timedwait(c, m, &later);
}

/* ---- the test --------------------------------------------------------- */

LU_FUNCTION(Tick, .events = "Tick", LU_ROUND_ROBIN) {
  (void)ctx;
  lu_out_result(out, data ? cJSON_Duplicate(data, 1) : cJSON_CreateNull());
  return LU_OK;
}

static _Atomic unsigned outcomes;
static void on_outcome(void *ud, const lu_outcome_t *o) {
  (void)ud;
  if (o->kind == LU_OUTCOME_COMPLETED) atomic_fetch_add(&outcomes, 1);
}

static lu_registry_t *reg;

/* Heartbeat interval: 100 ms, times LUCENT_TEST_SLOW (the sanitizer
 * passes), so that a loaded machine does not starve one for a timeout. */
static uint32_t interval_ms(void) {
  const char *s = getenv("LUCENT_TEST_SLOW");
  int k = s && atoi(s) > 0 ? atoi(s) : 1;
  return 100u * (uint32_t)k;
}

static lu_manager_t *manager(const char *id) {
  const char *ids[] = {id};
  lu_config_t cfg;
  lu_config_init(&cfg);
  cfg.shard_ids = ids;
  cfg.on_outcome = on_outcome;
  lu_manager_t *m = NULL;
  char err[256];
  if (lu_manager_new(&m, &cfg, reg, err, sizeof err))
    fail_msg("manager: %s", err);
  return m;
}

static void test_heartbeats_survive_a_step(void **state) {
  lu_test_nats_t *srv = *state;
  natsConnection *nc = lu_test_nats_connect(srv->url);
  lu_manager_t *ma = manager("a"), *mb = manager("b");
  lu_membership_t *sa = NULL, *sb = NULL;
  char err[256];
  uint32_t iv = interval_ms();
  assert_int_equal(lu__membership_start(&sa, nc, ma, "a", NULL, iv, NULL,
                                        NULL, err, sizeof err), 0);
  assert_int_equal(lu__membership_start(&sb, nc, mb, "b", NULL, iv, NULL,
                                        NULL, err, sizeof err), 0);
  int both = 0;
  for (int i = 0; i < 2000 && !both; i++) {
    both = lu_manager_in_view(ma, "b") && lu_manager_in_view(mb, "a");
    if (!both) lu_test_nats_sleep_ms(10);
  }
  assert_true(both);
  /* 2.5 times the 6 intervals after which a silent peer drops out. */
  int steps = (int)(iv * 6 * 5 / 2 / 20);
  for (int i = 0; i < steps; i++) {
    if (!lu_manager_in_view(ma, "b") || !lu_manager_in_view(mb, "a"))
      fail_msg("a shard dropped out of a view after %d ms", i * 20);
    lu_test_nats_sleep_ms(20);
  }
  lu__membership_stop(sa);
  lu__membership_stop(sb);
  lu_manager_free(ma);
  lu_manager_free(mb);
  natsConnection_Destroy(nc);
  assert_int_equal(atomic_load(&wall_waits), 0);
}

static void test_bus_claims_and_pulls(void **state) {
  lu_test_nats_t *srv = *state;
  natsConnection *nc = lu_test_nats_connect(srv->url);
  lu_manager_t *m = manager("c");
  lu_natsbus_cfg_t bc = {.shard = "c", .hb_interval_ms = interval_ms(),
                         .ack_wait_ms = 2000};
  lu_natsbus_t *b = NULL;
  char err[256];
  if (lu__natsbus_start(&b, nc, m, &bc, err, sizeof err))
    fail_msg("bus: %s", err);
  atomic_store(&outcomes, 0);
  jsCtx *js = NULL;
  assert_int_equal(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
  enum { N = 32 };
  for (int i = 0; i < N; i++) {
    char subj[64], ev[160];
    lu__fmt(subj, sizeof subj, "%s.%d", LU_SUBJ_INTAKE, i % 16);
    int n = snprintf(ev, sizeof ev,
                     "{\"specversion\":\"1.0\",\"id\":\"t-%d\",\"type\":"
                     "\"Tick\",\"source\":\"t\",\"data\":%d}", i, i);
    assert_int_equal(js_Publish(NULL, js, subj, ev, n, NULL, NULL), NATS_OK);
  }
  /* The claim delay is 6 heartbeats; then each partition's puller takes
   * its messages at once. */
  for (int i = 0; i < 3000 && atomic_load(&outcomes) < N; i++)
    lu_test_nats_sleep_ms(10);
  assert_int_equal(atomic_load(&outcomes), N);
  jsCtx_Destroy(js);
  lu__natsbus_stop(b, 2000, NULL);
  lu_manager_free(m);
  natsConnection_Destroy(nc);
  assert_int_equal(atomic_load(&wall_waits), 0);
}

static int setup(void **state) {
  static lu_test_nats_t srv;
  if (lu_test_nats_start(&srv, NULL) != 0) return -1;
  *state = &srv;
  return 0;
}

static int teardown(void **state) {
  lu_test_nats_stop(*state);
  return 0;
}

int main(void) {
  LU_TEST_NATS_REQUIRE();
  const lu_fn_t *const *fns;
  size_t n = lu_fns_here(&fns);
  if (lu_registry_new(&reg) || lu_registry_add(reg, fns, n, "test")) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_heartbeats_survive_a_step, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_bus_claims_and_pulls, setup,
                                      teardown),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  lu_registry_free(reg);
  return rc;
}
