/*
 * test_manager_jetstream.c - the manager on the JetStream event store,
 * which appends asynchronously (lu_store_append_begin): the store thread
 * keeps several batches in flight and each is reported on nats.c's thread
 * when its acks are in.  Checked against a real nats-server: every
 * outcome reported once and stored, on_outcome never called concurrently,
 * a batch that fails in flight retried by the store thread (here: the
 * stream deleted under the store) instead of being reported as lost, and
 * the batches shard threads begin themselves (when the store thread is
 * idle) neither lost nor stored out of order, and a burst of exec items
 * run inline stored as one batch, even when its caller never ends it; an
 * input that may have run before runs the competing function whose
 * outcome is stored (lu_store_has), so it keeps one outcome.
 * Skips (exit 77) without nats-server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lucent/lucent.h"
#include "internal.h" /* lu__manager_store_stats, set_hold */
#include "nats_internal.h"
#include "nats_server.h"

LU_FUNCTION(Echo, .events = "Echo", LU_ROUND_ROBIN) {
  lu_out_result(out, data ? cJSON_Duplicate(data, 1) : cJSON_CreateNull());
  return LU_OK;
}

/* Two records per outcome: the result and an emitted Echo. */
LU_FUNCTION(Fork, .events = "Fork", LU_ROUND_ROBIN) {
  lu_out_emit(out, "Echo", NULL, cJSON_Duplicate(data, 1));
  lu_out_result(out, cJSON_CreateString("forked"));
  return LU_OK;
}

/* Competing functions: RankHigh wins every fresh choice. */
LU_FUNCTION(RankHigh, .events = "Rank", .priority = 9) { return LU_OK; }
LU_FUNCTION(RankLow, .events = "Rank", .priority = 2) { return LU_OK; }

typedef struct seen_s {
  char last_fn[64];        /* the function of the last outcome */
  _Atomic int inside;      /* on_outcome running now */
  _Atomic int overlapped;  /* it ever ran twice at once */
  _Atomic size_t outcomes, completed, derived;
} seen_t;

static void on_outcome(void *ud, const lu_outcome_t *o) {
  seen_t *s = ud;
  if (atomic_fetch_add(&s->inside, 1) != 0) atomic_store(&s->overlapped, 1);
  atomic_fetch_add(&s->outcomes, 1);
  if (o->kind == LU_OUTCOME_COMPLETED) atomic_fetch_add(&s->completed, 1);
  if (o->derived) atomic_fetch_add(&s->derived, 1);
  snprintf(s->last_fn, sizeof s->last_fn, "%s",
           o->function ? o->function : "");
  atomic_fetch_sub(&s->inside, 1);
}

typedef struct fx_s {
  lu_test_nats_t srv;
  natsConnection *nc;
  lu_registry_t *reg;
  lu_manager_t *m;
  seen_t seen;
} fx_t;

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  if (!f || lu_test_nats_start(&f->srv, NULL) != 0) return -1;
  f->nc = lu_test_nats_connect(f->srv.url);
  const lu_fn_t *const *fns;
  size_t n = lu_fns_here(&fns);
  if (n != 4 || lu_registry_new(&f->reg) ||
      lu_registry_add(f->reg, fns, n, "test"))
    return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx_t *f = *state;
  lu_manager_free(f->m); /* closes the store */
  lu_registry_free(f->reg);
  natsConnection_Destroy(f->nc);
  lu_test_nats_stop(&f->srv);
  free(f);
  return 0;
}

static void start(fx_t *f, unsigned shards) {
  char err[512];
  lu_store_t *st = NULL;
  assert_int_equal(lu__store_jetstream_open(&st, f->nc, 1, 0, err,
                                            sizeof err), 0);
  assert_true(lu_store_batches_in_flight(st));
  lu_config_t cfg;
  lu_config_init(&cfg);
  cfg.shards = shards;
  cfg.store_handle = st;
  cfg.store_batch = 64; /* many small batches: several in flight */
  cfg.on_outcome = on_outcome;
  cfg.on_outcome_ud = &f->seen;
  assert_int_equal(lu_manager_new(&f->m, &cfg, f->reg, err, sizeof err), 0);
}

static void submit(fx_t *f, const char *type, size_t n, const char *tag) {
  for (size_t i = 0; i < n; i++) {
    char line[256];
    int len = snprintf(line, sizeof line,
                       "{\"specversion\":\"1.0\",\"id\":\"%s-%zu\",\"type\":"
                       "\"%s\",\"source\":\"t\",\"data\":{\"i\":%zu}}",
                       tag, i, type, i);
    assert_int_equal(lu_manager_submit_json(f->m, line, (size_t)len, i + 1),
                     0);
  }
}

/* 3000 inputs, 1000 of which emit one event: 4000 outcomes, and 5000
 * records (a Fork's outcome carries its result and the emitted event). */
static void test_outcomes_reported_once(void **state) {
  fx_t *f = *state;
  start(f, 2);
  submit(f, "Echo", 2000, "e");
  submit(f, "Fork", 1000, "f");
  assert_int_equal(lu_manager_drain(f->m), 0);
  assert_int_equal(atomic_load(&f->seen.outcomes), 4000);
  assert_int_equal(atomic_load(&f->seen.completed), 4000);
  assert_int_equal(atomic_load(&f->seen.derived), 1000);
  assert_int_equal(atomic_load(&f->seen.overlapped), 0);
  assert_int_equal(lu_manager_store_errors(f->m), 0);
  uint64_t batches, records, errors;
  lu__manager_store_stats(f->m, &batches, &records, &errors);
  assert_int_equal(records, 5000);
  assert_true(batches >= 5000 / 64);
  assert_int_equal(lu_store_count(lu_manager_store(f->m)), 5000);
}

/* The stream deleted under the running store: the batches in flight fail
 * ("no stream stores ..."), come back to the store thread, which appends
 * them again once the stream is made again - nothing is reported lost. */
static void test_failed_batch_retried(void **state) {
  fx_t *f = *state;
  start(f, 1);
  submit(f, "Echo", 100, "before");
  assert_int_equal(lu_manager_drain(f->m), 0);
  jsCtx *js = NULL;
  assert_int_equal(natsConnection_JetStream(&js, f->nc, NULL), NATS_OK);
  assert_int_equal(js_DeleteStream(js, LU_STREAM_EVENTS, NULL, NULL),
                   NATS_OK);
  submit(f, "Echo", 500, "after");
  assert_int_equal(lu_manager_drain(f->m), 0);
  assert_int_equal(atomic_load(&f->seen.outcomes), 600);
  assert_int_equal(atomic_load(&f->seen.completed), 600);
  assert_int_equal(lu_manager_store_errors(f->m), 0);
  /* The new stream has the 500 (the first 100 went with the old one). */
  assert_int_equal(lu_store_count(lu_manager_store(f->m)), 500);
  jsCtx_Destroy(js);
}

/* An idle manager: each lone outcome is begun by its shard thread, not
 * handed to the store thread, and is stored and reported all the same. */
static void test_shard_begins_its_batch(void **state) {
  fx_t *f = *state;
  start(f, 1);
  for (int i = 0; i < 10; i++) {
    char tag[16];
    snprintf(tag, sizeof tag, "lone%d", i);
    submit(f, "Echo", 1, tag);
    assert_int_equal(lu_manager_drain(f->m), 0);
  }
  assert_int_equal(atomic_load(&f->seen.completed), 10);
  assert_int_equal(lu_store_count(lu_manager_store(f->m)), 10);
  uint64_t batches, records, errors;
  lu__manager_store_stats(f->m, &batches, &records, &errors);
  assert_int_equal(batches, 10);
  uint64_t direct = lu__manager_store_direct(f->m);
  /* Only a store thread caught between two loops (it holds the begin
   * lock then) makes a shard queue its outcome instead. */
  assert_true(direct >= 8);
  assert_true(direct <= batches);
}

static lu_event_t *echo_event(int i) {
  lu_event_t *ev = NULL;
  cJSON *d = cJSON_CreateObject();
  cJSON_AddNumberToObject(d, "i", i);
  assert_int_equal(lu_event_new(&ev, "Echo", "t", "s", d), 0);
  return ev;
}

/* A burst of exec items run inline ((LU_RUN_INLINE | LU_RUN_MORE) ... LU_RUN_INLINE)
 * keeps the shard's turn and its outcomes from call to call: the burst's
 * outcomes make one store batch, where each call would make its own.
 * Then a burst whose caller never calls again: the shard thread takes the
 * turn over and stores what it held (else the drain would hang; alarm()
 * fails that). */
static void test_inline_burst_one_batch(void **state) {
  fx_t *f = *state;
  start(f, 1);
  /* A burst's calls come within this of each other however slow the
   * build and the machine (1 ms is the default; ASan on a busy machine
   * took longer and split bursts). */
  lu__manager_set_hold(f->m, 200 * 1000000ull);
  lu_done_t none = {NULL, NULL};
  uint64_t b0, records, errors;
  lu__manager_store_stats(f->m, &b0, &records, &errors);
  for (int burst = 0; burst < 5; burst++) {
    struct timespec ms = {0, 5000000};
    nanosleep(&ms, NULL); /* let the shard fall idle */
    for (int i = 0; i < 10; i++)
      lu_manager_run(f->m, echo_event(burst * 10 + i), NULL,
                     LU_RUN_ONCE | LU_RUN_INLINE | (i < 9 ? LU_RUN_MORE : 0),
                     none);
    assert_int_equal(lu_manager_drain(f->m), 0);
  }
  uint64_t b1;
  lu__manager_store_stats(f->m, &b1, &records, &errors);
  assert_int_equal(atomic_load(&f->seen.completed), 50);
  assert_int_equal(records, 50);
  /* One batch a burst, give or take a first call that found the shard
   * thread awake (it then queues, and the thread's run makes the batch);
   * 50 if each call flushed. */
  assert_true(b1 - b0 >= 5);
  assert_true(b1 - b0 < 10);

  alarm(60);
  struct timespec ms = {0, 5000000};
  nanosleep(&ms, NULL);
  for (int i = 0; i < 3; i++)
    lu_manager_run(f->m, echo_event(100 + i), NULL, LU_RUN_ONCE | (LU_RUN_INLINE | LU_RUN_MORE),
                          none);
  assert_int_equal(lu_manager_drain(f->m), 0);
  alarm(0);
  assert_int_equal(atomic_load(&f->seen.completed), 53);
  assert_int_equal(lu_store_count(lu_manager_store(f->m)), 53);
  assert_int_equal(lu_manager_store_errors(f->m), 0);
}

typedef struct order_s {
  long next; /* the data.i expected next */
  size_t rows, out_of_order;
} order_t;

static int check_order(void *ud, uint64_t seq, const char *json, size_t len) {
  (void)seq;
  order_t *o = ud;
  cJSON *ev = cJSON_ParseWithLength(json, len);
  const cJSON *i = cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "data"), "i");
  if (!cJSON_IsNumber(i) || (long)i->valuedouble != o->next)
    o->out_of_order++;
  o->next = cJSON_IsNumber(i) ? (long)i->valuedouble + 1 : o->next + 1;
  o->rows++;
  cJSON_Delete(ev);
  return 0;
}

/* One shard's outcomes reach the stream in the order it made them,
 * whichever thread begins each batch: the shard (store thread idle) or
 * the store thread (its queue not empty, or the batches in flight at the
 * store's limit - with 64-record batches, often). */
static void test_store_order_kept(void **state) {
  fx_t *f = *state;
  start(f, 1);
  submit(f, "Echo", 3000, "o");
  assert_int_equal(lu_manager_drain(f->m), 0);
  assert_int_equal(lu_manager_store_errors(f->m), 0);
  order_t o = {0};
  lu_query_t q = {.type = "EchoCompleted"};
  assert_int_equal(lu_store_query(lu_manager_store(f->m), &q, check_order, &o),
                   0);
  assert_int_equal(o.rows, 3000);
  assert_int_equal(o.out_of_order, 0);
  /* (Here about 1 batch in 6 is the shard's; the mix depends on timing,
   * so it is not asserted.  Without the queue-empty check in shard_flush
   * this test failed 4 runs in 5.) */
}

/* The input r-1 ran before and RankLow won then (its outcome is in the
 * store; a replay after a server lost its acks, say).  Marked replayed, it
 * runs RankLow again - whose outcome has the same id, stored once -
 * although RankHigh scores higher; chosen afresh it would get a second
 * outcome, RankHighCompleted.  Marked but with nothing stored (r-2), or
 * not marked (r-3), the score decides. */
static void test_replay_runs_what_ran(void **state) {
  fx_t *f = *state;
  start(f, 1);
  char id[37], ev[160];
  const char *parts[] = {"t", "r-1", "RankLow"};
  lu__derive_id(id, parts, 3);
  int len = snprintf(ev, sizeof ev,
                     "{\"specversion\":\"1.0\",\"id\":\"%s\",\"type\":"
                     "\"RankLowCompleted\",\"source\":\"lucent://fn/RankLow\"}",
                     id);
  lu_record_t rec = {.id = id, .type = "RankLowCompleted", .json = ev,
                     .len = (size_t)len};
  size_t ins = 0;
  lu_store_t *st = lu_manager_store(f->m);
  assert_int_equal(lu_store_append(st, &rec, 1, &ins), 0);
  assert_int_equal(lu_store_has(st, "RankLowCompleted", id), 1);
  assert_int_equal(lu_store_has(st, "RankHighCompleted", id), 0);
  assert_int_equal(lu_store_has(st, "RankLowCompleted", "other"), 0);
  const char *want[] = {"RankLow", "RankHigh", "RankHigh"};
  for (int i = 0; i < 3; i++) {
    len = snprintf(ev, sizeof ev,
                   "{\"specversion\":\"1.0\",\"id\":\"r-%d\",\"type\":"
                   "\"Rank\",\"source\":\"t\"}", i + 1);
    lu_input_t in = {.json = ev, .len = (size_t)len, .replayed = i < 2};
    assert_int_equal(lu_manager_submit_input(f->m, &in), 0);
    assert_int_equal(lu_manager_drain(f->m), 0);
    assert_string_equal(f->seen.last_fn, want[i]);
  }
  /* r-1's outcome was stored once: the record put there first. */
  assert_int_equal(lu_store_count(st), 1 + 2);
}

int main(void) {
  LU_TEST_NATS_REQUIRE();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_outcomes_reported_once),
      T(test_failed_batch_retried),
      T(test_shard_begins_its_batch),
      T(test_store_order_kept),
      T(test_inline_burst_one_batch),
      T(test_replay_runs_what_ran),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
