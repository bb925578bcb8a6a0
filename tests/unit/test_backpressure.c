/*
 * test_backpressure.c - bounded queues, counted: a producer that submits
 * far faster than the shards run never has more than a bounded number of
 * events alive in the manager, whatever the input's size and however
 * busy the machine.  What is counted cannot change with load: events
 * queued or running on each shard (lu_manager_shard_stats().in_flight)
 * and events entered but not reported (the manager's pending), sampled
 * by a thread while 10x more events go through in the second run than in
 * the first.  (tests/integ/test_backpressure.sh checks the same of the
 * `lucent run` command by its resident memory, outside the sanitizers,
 * where memory says little about queues.)
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
#include <time.h>

#include <cmocka.h>

#include "lucent/lucent.h"
#include "pipeline.h" /* m->pending */
#include "shard.h"    /* lu__intake_cap */

LU_FUNCTION(Touch, .events = "Touch", LU_ROUND_ROBIN) {
  (void)ctx;
  lu_out_result(out, cJSON_CreateBool(cJSON_IsObject(data)));
  return LU_OK;
}

/* A store that only counts (SQLite's page cache would be the memory). */
typedef struct count_store_s {
  struct lu_store_s base;
  _Atomic uint64_t records;
} count_store_t;

static int cs_append(lu_store_t *st, const lu_record_t *recs, size_t n,
                     size_t *inserted) {
  (void)recs;
  atomic_fetch_add(&((count_store_t *)st)->records, n);
  if (inserted) *inserted = n;
  return 0;
}
static int cs_query(lu_store_t *st, const lu_query_t *q, lu_store_row_cb cb,
                    void *ud) {
  (void)st, (void)q, (void)cb, (void)ud;
  return 0;
}
static int64_t cs_count(lu_store_t *st) {
  return (int64_t)atomic_load(&((count_store_t *)st)->records);
}
static void cs_close(lu_store_t *st) { free(st); }
static const lu_store_ops_t cs_ops = {.name = "count",
                                      .append = cs_append,
                                      .query = cs_query,
                                      .count = cs_count,
                                      .close = cs_close};

#define SHARDS 2
#define QUEUE 256

typedef struct sample_s {
  lu_manager_t *m;
  _Atomic int stop;
  uint64_t max_in_flight, max_pending, samples;
} sample_t;

static void *sampler(void *arg) {
  sample_t *s = arg;
  while (!atomic_load(&s->stop)) {
    for (unsigned i = 0; i < SHARDS; i++) {
      lu_shard_stats_t st;
      lu_manager_shard_stats(s->m, i, &st);
      if (st.in_flight > s->max_in_flight) s->max_in_flight = st.in_flight;
    }
    pthread_mutex_lock(&s->m->plock);
    uint64_t p = s->m->pending;
    pthread_mutex_unlock(&s->m->plock);
    if (p > s->max_pending) s->max_pending = p;
    s->samples++;
    struct timespec ts = {0, 200000}; /* 0.2 ms */
    nanosleep(&ts, NULL);
  }
  return NULL;
}

static lu_registry_t *reg;

/* Runs n events; the peaks seen. */
static sample_t run(size_t n) {
  count_store_t *cs = calloc(1, sizeof *cs);
  assert_non_null(cs);
  cs->base.ops = &cs_ops;
  lu_config_t cfg;
  lu_config_init(&cfg);
  cfg.shards = SHARDS;
  cfg.threads = SHARDS;
  cfg.queue_capacity = QUEUE;
  cfg.store_handle = &cs->base;
  lu_manager_t *m = NULL;
  char err[256];
  assert_int_equal(lu_manager_new(&m, &cfg, reg, err, sizeof err), 0);
  sample_t s = {.m = m};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, sampler, &s), 0);
  for (size_t i = 0; i < n; i++) {
    char ev[160];
    int len = snprintf(ev, sizeof ev,
                       "{\"specversion\":\"1.0\",\"id\":\"bp-%zu\",\"type\":"
                       "\"Touch\",\"source\":\"t\",\"data\":{\"i\":%zu}}", i,
                       i);
    assert_int_equal(lu_manager_submit_json(m, ev, (size_t)len, i + 1), 0);
  }
  lu_manager_drain(m);
  atomic_store(&s.stop, 1);
  pthread_join(th, NULL);
  lu_count_t total;
  uint64_t in;
  lu_manager_counts(m, &total, &in);
  assert_int_equal(in, n);
  assert_int_equal(total.outcomes[LU_OUTCOME_COMPLETED], n);
  assert_int_equal(cs_count(&cs->base), (int64_t)n);
  lu_manager_free(m);
  return s;
}

static void test_live_events_bounded(void **state) {
  (void)state;
  const char *env = getenv("LUCENT_TEST_BIG_EVENTS");
  size_t big = env && atol(env) > 0 ? (size_t)atol(env) : 1000000;
  if (big > 200000) big = 200000; /* the bound shows long before */
  sample_t a = run(big / 10), b = run(big);
  printf("live events: %zu inputs: in_flight <= %llu, pending <= %llu; "
         "%zu inputs: in_flight <= %llu, pending <= %llu (%llu samples)\n",
         big / 10, (unsigned long long)a.max_in_flight,
         (unsigned long long)a.max_pending, big,
         (unsigned long long)b.max_in_flight,
         (unsigned long long)b.max_pending, (unsigned long long)b.samples);
  /* A shard holds its share of the intake queue and the batch its turn
   * runs.  The manager holds those, plus outcomes on their way to the
   * store: the writer's queue (16384) and a batch being appended
   * (store_batch). */
  const uint64_t shard_bound = 2 * (QUEUE / SHARDS) + 1;
  const uint64_t pending_bound = SHARDS * shard_bound + 16384 + 4096 + 1;
  assert_true(b.samples > 10);
  assert_true(a.max_in_flight <= shard_bound);
  assert_true(b.max_in_flight <= shard_bound);
  assert_true(a.max_pending <= pending_bound);
  assert_true(b.max_pending <= pending_bound);
}

/* The manager's intake queue is shared by its shards: an even share, at
 * least 16, never more than the whole; up to capacity / 16 shards, the
 * shares add up to no more than the whole. */
static void test_intake_share(void **state) {
  (void)state;
  assert_int_equal(lu__intake_cap(1024, 1), 1024);
  assert_int_equal(lu__intake_cap(1024, 4), 256);
  assert_int_equal(lu__intake_cap(1024, 16), 64);
  assert_int_equal(lu__intake_cap(1024, 64), 16);
  assert_int_equal(lu__intake_cap(1024, 256), 16); /* the floor */
  assert_int_equal(lu__intake_cap(100, 64), 16);
  assert_int_equal(lu__intake_cap(10, 4), 10);     /* all, if smaller */
  assert_int_equal(lu__intake_cap(1, 8), 1);
  for (unsigned n = 1; n <= 1024 / 16; n++)
    assert_true(n * lu__intake_cap(1024, n) <= 1024);
}

int main(void) {
  const lu_fn_t *const *fns;
  size_t n = lu_fns_here(&fns);
  if (lu_registry_new(&reg) || lu_registry_add(reg, fns, n, "test")) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_intake_share),
      cmocka_unit_test(test_live_events_bounded),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  lu_registry_free(reg);
  return rc;
}
