/*
 * test_bus.c - a third transport plugs into the core through lucent/bus.h
 * alone.  This test links the shared liblucent (no internals) and connects
 * two managers, "process" A (shard a) and B (shard b), with an in-process
 * bus: forwards go through a queue to a delivery thread of the other side,
 * which hands them to lu_manager_accept and acknowledges the sender once
 * the outcome is stored.  It checks what a transport relies on:
 *
 *  - every input has exactly one outcome, on the shard its key routes to;
 *  - a forward's done is called once, with stored = 1, after the receiver
 *    stored the outcome (a transport acks its input then);
 *  - events emitted with LU_BUS_DURABLE_EMIT take the bus even to the
 *    shard that emitted them, and the parent's done waits for them;
 *  - lu_manager_accept refuses (LU_EBUSY) an event pinned to a live shard
 *    of another process, and re-routes one whose shard is gone.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lucent/bus.h"
#include "lucent/lucent.h"

LU_FUNCTION(Keyed, .events = "Keyed", LU_HASH_BASED("k")) {
  const cJSON *emit = cJSON_GetObjectItemCaseSensitive(data, "emit");
  if (cJSON_IsTrue(emit))
    lu_out_emit(out, "Child", NULL, cJSON_Duplicate(data, 1));
  lu_out_result(out, cJSON_CreateString(lu_ctx_shard(ctx)));
  return LU_OK;
}

LU_FUNCTION(ChildFn, .events = "Child", LU_HASH_BASED("k")) {
  lu_out_result(out, cJSON_CreateString(lu_ctx_shard(ctx)));
  return LU_OK;
}

/* ---- the in-process transport ---------------------------------------- */

typedef struct msg_s {
  struct msg_s *next;
  char target[LU_SHARD_ID_MAX];
  char *json;
  size_t len;
  unsigned hops, delivery;
  lu_done_t done; /* the sender's */
} msg_t;

typedef struct side_s {
  const char *id;
  lu_manager_t *m;
  struct side_s *peer;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  msg_t *head, *tail;
  int stop;
  pthread_t thread;
  unsigned forwards_sent, self_forwards; /* under lock */
} side_t;

/* The receiver's done for one delivered message: the sender's done once
 * the outcome is stored here (what an ack is for). */
/* Forwards not finished on their receiving side yet: while one is in
 * transit, a drain of either side can miss it. */
static pthread_mutex_t transit_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t transit_cond = PTHREAD_COND_INITIALIZER;
static unsigned in_transit;

static void transit(int d) {
  pthread_mutex_lock(&transit_lock);
  in_transit = (unsigned)((int)in_transit + d);
  if (!in_transit) pthread_cond_broadcast(&transit_cond);
  pthread_mutex_unlock(&transit_lock);
}

typedef struct ack_s {
  lu_done_t sender;
} ack_t;

static void acked(void *ctx, const lu_outcome_t *o, int stored) {
  (void)o;
  ack_t *a = ctx;
  if (a->sender.fn) a->sender.fn(a->sender.ctx, NULL, stored);
  free(a);
  transit(-1); /* finished on the receiving side */
}

static void *deliver_main(void *arg) {
  side_t *s = arg;
  pthread_mutex_lock(&s->lock);
  for (;;) {
    while (!s->head && !s->stop) pthread_cond_wait(&s->cond, &s->lock);
    if (!s->head) break;
    msg_t *mg = s->head;
    s->head = mg->next;
    if (!s->head) s->tail = NULL;
    pthread_mutex_unlock(&s->lock);
    ack_t *a = malloc(sizeof *a);
    assert_non_null(a);
    a->sender = mg->done;
    lu_input_t in = {.json = mg->json, .len = mg->len,
                     .delivery = mg->delivery};
    int rc = lu_manager_accept(s->m, &in, mg->target, mg->hops,
                               (lu_done_t){acked, a});
    assert_int_equal(rc, 0);
    free(mg->json);
    free(mg);
    pthread_mutex_lock(&s->lock);
  }
  pthread_mutex_unlock(&s->lock);
  return NULL;
}

/* lu_bus_t.forward: to whichever side owns target. */
static void bus_forward(void *ud, const lu_fwd_t *fw, lu_done_t done) {
  side_t *from = ud;
  side_t *to = !strcmp(fw->target, from->id) ? from : from->peer;
  msg_t *mg = calloc(1, sizeof *mg);
  assert_non_null(mg);
  snprintf(mg->target, sizeof mg->target, "%s", fw->target);
  mg->json = malloc(fw->len + 1);
  assert_non_null(mg->json);
  memcpy(mg->json, fw->json, fw->len);
  mg->json[fw->len] = 0;
  mg->len = fw->len;
  mg->hops = fw->hops;
  mg->delivery = fw->delivery;
  mg->done = done;
  transit(+1);
  pthread_mutex_lock(&from->lock);
  from->forwards_sent++;
  if (to == from) from->self_forwards++;
  pthread_mutex_unlock(&from->lock);
  pthread_mutex_lock(&to->lock);
  if (to->tail) to->tail->next = mg;
  else to->head = mg;
  to->tail = mg;
  pthread_cond_signal(&to->cond);
  pthread_mutex_unlock(&to->lock);
}

/* ---- the test --------------------------------------------------------- */

typedef struct tally_s {
  pthread_mutex_t lock;
  unsigned keyed, children; /* completed, across both processes */
  unsigned wrong_shard; /* a Keyed result from a shard its key does not map to */
  unsigned done_calls, done_stored, done_forwarded;
} tally_t;

static tally_t tally = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void on_outcome(void *ud, const lu_outcome_t *o) {
  (void)ud;
  pthread_mutex_lock(&tally.lock);
  if (o->kind == LU_OUTCOME_COMPLETED && o->event_type) {
    if (!strcmp(o->event_type, "Keyed")) tally.keyed++;
    if (!strcmp(o->event_type, "Child")) tally.children++;
  }
  pthread_mutex_unlock(&tally.lock);
}

static void input_done(void *ctx, const lu_outcome_t *o, int stored) {
  (void)ctx;
  pthread_mutex_lock(&tally.lock);
  tally.done_calls++;
  tally.done_stored += stored ? 1u : 0u;
  tally.done_forwarded += o ? 0u : 1u;
  pthread_mutex_unlock(&tally.lock);
}

static lu_manager_t *make(const lu_registry_t *reg, const char *id) {
  lu_config_t cfg;
  lu_config_init(&cfg);
  const char *ids[] = {id};
  cfg.shard_ids = ids;
  cfg.on_outcome = on_outcome;
  lu_manager_t *m = NULL;
  char err[256];
  assert_int_equal(lu_manager_new(&m, &cfg, reg, err, sizeof err), 0);
  return m;
}

static void start(side_t *s, const char *id, lu_manager_t *m, side_t *peer) {
  memset(s, 0, sizeof *s);
  s->id = id;
  s->m = m;
  s->peer = peer;
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->cond, NULL);
  lu_bus_t bus = {.forward = bus_forward, .ud = s,
                  .flags = LU_BUS_DURABLE_EMIT};
  assert_int_equal(lu_manager_set_bus(m, &bus), 0);
  const char *view[] = {"a", "b"};
  lu_manager_set_view(m, view, 2);
  assert_int_equal(pthread_create(&s->thread, NULL, deliver_main, s), 0);
}

static void stop(side_t *s) {
  pthread_mutex_lock(&s->lock);
  s->stop = 1;
  pthread_cond_signal(&s->cond);
  pthread_mutex_unlock(&s->lock);
  pthread_join(s->thread, NULL);
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->cond);
}

/* Waits until both managers have nothing pending and nothing is in
 * transit between them (a drain can create transits: emitted events). */
static void settle(side_t *a, side_t *b) {
  unsigned t;
  do {
    pthread_mutex_lock(&transit_lock);
    while (in_transit) pthread_cond_wait(&transit_cond, &transit_lock);
    pthread_mutex_unlock(&transit_lock);
    lu_manager_drain(a->m);
    lu_manager_drain(b->m);
    pthread_mutex_lock(&transit_lock);
    t = in_transit;
    pthread_mutex_unlock(&transit_lock);
  } while (t);
  /* A receiver reports an outcome (done) a moment before its pending
   * count drops: drain once more, now that nothing can arrive. */
  lu_manager_drain(a->m);
  lu_manager_drain(b->m);
}

static void test_two_processes(void **state) {
  (void)state;
  lu_registry_t *reg;
  assert_int_equal(lu_registry_new(&reg), 0);
  const lu_fn_t *const *fns;
  size_t nf = lu_fns_here(&fns);
  assert_int_equal(nf, 2);
  assert_int_equal(lu_registry_add(reg, fns, nf, "test_bus"), 0);
  lu_manager_t *ma = make(reg, "a"), *mb = make(reg, "b");
  static side_t a, b;
  start(&a, "a", ma, &b);
  start(&b, "b", mb, &a);
  assert_true(lu_manager_in_view(ma, "b"));
  char ids[4][LU_SHARD_ID_MAX];
  assert_int_equal(lu_manager_view(ma, ids, 4), 2);
  assert_string_equal(ids[0], "a");
  assert_string_equal(ids[1], "b");

  /* 200 inputs into A, every tenth emitting a child: about half run on b. */
  enum { N = 200 };
  unsigned on_a = 0;
  for (int i = 0; i < N; i++) {
    char json[256];
    snprintf(json, sizeof json,
             "{\"id\":\"e%d\",\"type\":\"Keyed\",\"source\":\"t\","
             "\"data\":{\"k\":\"key-%d\",\"emit\":%s}}",
             i, i, i % 10 ? "false" : "true");
    lu_event_t *ev;
    assert_int_equal(lu_event_parse(&ev, json, strlen(json), NULL, 0), 0);
    char target[LU_SHARD_ID_MAX], why[128];
    int local = -1;
    assert_int_equal(lu_manager_route(ma, ev, target, sizeof target, &local,
                                      why, sizeof why),
                     LU_ROUTE_OK);
    assert_int_equal(local, !strcmp(target, "a"));
    on_a += (unsigned)local;
    lu_event_free(ev);
    lu_input_t in = {.json = json, .len = strlen(json),
                     .line = (uint64_t)i + 1, .origin = "test"};
    assert_int_equal(lu_manager_take(ma, &in, (lu_done_t){input_done, NULL}),
                     0);
  }
  settle(&a, &b);
  assert_true(on_a > N / 4 && on_a < 3 * N / 4);

  pthread_mutex_lock(&tally.lock);
  /* One outcome per input, across both processes, and one per child. */
  assert_int_equal(tally.keyed, N);
  assert_int_equal(tally.children, N / 10);
  /* Every input's done once, stored; those that left A as forwards. */
  assert_int_equal(tally.done_calls, N);
  assert_int_equal(tally.done_stored, N);
  assert_int_equal(tally.done_forwarded, N - on_a);
  pthread_mutex_unlock(&tally.lock);
  lu_count_t ca, cb;
  lu_manager_counts(ma, &ca, NULL);
  lu_manager_counts(mb, &cb, NULL);
  /* A counts its own inputs; what arrives by the bus counts as emitted
   * where it runs (forwarded inputs on b, and the children). */
  assert_int_equal(ca.outcomes[LU_OUTCOME_COMPLETED], on_a);
  assert_int_equal(cb.outcomes[LU_OUTCOME_COMPLETED], 0);
  assert_int_equal(ca.derived[LU_OUTCOME_COMPLETED] +
                       cb.derived[LU_OUTCOME_COMPLETED],
                   N - on_a + N / 10);
  /* Children take the bus even to their own shard (durable emit). */
  pthread_mutex_lock(&a.lock);
  unsigned self_a = a.self_forwards;
  pthread_mutex_unlock(&a.lock);
  pthread_mutex_lock(&b.lock);
  unsigned self_b = b.self_forwards;
  pthread_mutex_unlock(&b.lock);
  assert_true(self_a + self_b > 0);

  /* Pinned to a live shard of the other process: refused, done not
   * called.  Pinned to a shard that is gone: routed again here. */
  static const char pinned[] =
      "{\"id\":\"p1\",\"type\":\"Keyed\",\"source\":\"t\","
      "\"data\":{\"k\":\"x\"}}";
  int calls_before = (int)tally.done_calls;
  lu_input_t pin = {.json = pinned, .len = strlen(pinned)};
  assert_int_equal(lu_manager_accept(ma, &pin, "b", 1,
                                     (lu_done_t){input_done, NULL}),
                   LU_EBUSY);
  assert_int_equal(lu_manager_accept(ma, &pin, "gone", 1,
                                     (lu_done_t){input_done, NULL}),
                   0);
  settle(&a, &b);
  pthread_mutex_lock(&tally.lock);
  assert_int_equal((int)tally.done_calls, calls_before + 1);
  assert_int_equal(tally.keyed, N + 1);
  pthread_mutex_unlock(&tally.lock);

  /* A bus needs a forward. */
  lu_bus_t none = {0};
  assert_int_equal(lu_manager_set_bus(ma, &none), LU_EINVAL);
  /* Shard ids are checked with the allowed set. */
  assert_true(lu_shard_id_valid("shard-1_A"));
  assert_false(lu_shard_id_valid("a\"b"));
  assert_false(lu_shard_id_valid(""));
  assert_false(lu_shard_id_valid("a.b"));

  stop(&a);
  stop(&b);
  lu_manager_free(ma);
  lu_manager_free(mb);
  lu_registry_free(reg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_two_processes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
