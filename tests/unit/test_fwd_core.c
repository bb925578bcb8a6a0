/*
 * test_fwd_core.c - confirmed forwarding over core NATS (src/nats/fwd_core.c)
 * against a real nats-server: an origin and a target on two connections.
 * A confirmed forward calls its done exactly once with the target's
 * verdict; a forward nobody takes, whose target left the view, or whose
 * reply does not come in time goes to the durable fallback (and a late
 * reply then changes nothing); a full window blocks the sender and keeps
 * the order; finish hands what still waits to the fallback.  Skips (exit
 * 77) without nats-server.
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

#include "fwd_core.h"
#include "nats_internal.h"
#include "nats_server.h"

#define MAXN 128

enum { TARGET_STORES, TARGET_FAILS, TARGET_HOLDS };

typedef struct rec_s {
  pthread_mutex_t mu;
  int mode;                     /* what the target does with an event */
  int target_alive;             /* what alive() says of "t" */
  char accepted[MAXN][16];      /* at the target, in arrival order */
  unsigned naccepted;
  lu_done_t held[MAXN];         /* TARGET_HOLDS: answered later */
  unsigned nheld;
  char fell[MAXN][16];          /* handed to the durable path */
  unsigned nfell;
  int verdict[MAXN];            /* origin: per event, -1 = no done yet */
  int calls[MAXN];              /* origin: how many times done ran */
  int bad_hops;                 /* a callback saw hops != 1 */
  unsigned extended;            /* extend calls */
  unsigned last_delivery;       /* the last accepted event's delivery */
  unsigned last_replayed;       /* and its replay mark */
  unsigned fell_delivery;       /* the last fallen-back one's */
} rec_t;

typedef struct fx_s {
  lu_test_nats_t srv;
  natsConnection *nc1, *nc2;
  rec_t r;
  lu_cfwd_t *origin, *target;
} fx_t;

/* ---- callbacks -------------------------------------------------------- */

static rec_t *g_rec; /* the fixture's recorder, for on_done_counted */

static void on_done_counted(void *ctx, const lu_outcome_t *o, int stored) {
  (void)o;
  size_t i = (size_t)(uintptr_t)ctx;
  pthread_mutex_lock(&g_rec->mu);
  g_rec->verdict[i] = stored;
  g_rec->calls[i]++;
  pthread_mutex_unlock(&g_rec->mu);
}

static int rec_accept(void *ud, const lu_input_t *in, lu_done_t done) {
  rec_t *r = ud; /* nats.c's thread: no cmocka asserts here */
  pthread_mutex_lock(&r->mu);
  unsigned k = r->naccepted++;
  snprintf(r->accepted[k], sizeof r->accepted[k], "%.*s", (int)in->len,
           in->json);
  r->last_delivery = in->delivery;
  r->last_replayed = in->replayed;
  int mode = r->mode;
  if (mode == TARGET_HOLDS) r->held[r->nheld++] = done;
  pthread_mutex_unlock(&r->mu);
  if (mode != TARGET_HOLDS && done.fn)
    done.fn(done.ctx, NULL, mode == TARGET_STORES);
  return 0;
}

static void rec_fallback(void *ud, const lu_fwd_t *fw, lu_done_t done) {
  rec_t *r = ud;
  pthread_mutex_lock(&r->mu);
  r->bad_hops |= fw->hops != 1;
  unsigned k = r->nfell++;
  snprintf(r->fell[k], sizeof r->fell[k], "%.*s", (int)fw->len, fw->json);
  r->fell_delivery = fw->delivery;
  pthread_mutex_unlock(&r->mu);
  done.fn(done.ctx, NULL, 1); /* the durable forward was stored */
}

static void rec_extend(void *ud, lu_done_t done) {
  rec_t *r = ud; /* called with the module's lock held: ours is separate */
  (void)done;
  pthread_mutex_lock(&r->mu);
  r->extended++;
  pthread_mutex_unlock(&r->mu);
}

static int rec_alive(void *ud, const char *id) {
  rec_t *r = ud;
  pthread_mutex_lock(&r->mu);
  int a = strcmp(id, "t") || r->target_alive;
  pthread_mutex_unlock(&r->mu);
  return a;
}

/* ---- fixture ---------------------------------------------------------- */

/* max_wait_ms 0: no extend, a late reply means the durable path at
 * timeout_ms. */
static lu_cfwd_t *start(fx_t *f, natsConnection *nc, const char *self,
                        unsigned max_inflight, uint32_t timeout_ms,
                        uint32_t max_wait_ms) {
  lu_cfwd_cfg_t c = {.nc = nc,
                     .self = self,
                     .max_inflight = max_inflight,
                     .timeout_ms = timeout_ms,
                     .max_wait_ms = max_wait_ms,
                     .extend = max_wait_ms ? rec_extend : NULL,
                     .fallback = rec_fallback,
                     .accept = rec_accept,
                     .alive = rec_alive,
                     .ud = &f->r};
  lu_cfwd_t *cf = NULL;
  char err[256];
  if (lu__cfwd_start(&cf, &c, err, sizeof err) != 0)
    fail_msg("cfwd_start: %s", err);
  return cf;
}

/* An origin "o" on nc1 as given, and a target "t" on nc2 that does
 * `mode` with what it gets. */
static void pair(fx_t *f, int mode, unsigned max_inflight,
                 uint32_t timeout_ms, uint32_t max_wait_ms) {
  f->r.mode = mode;
  f->origin = start(f, f->nc1, "o", max_inflight, timeout_ms, max_wait_ms);
  f->target = start(f, f->nc2, "t", 0, 0, 0);
}

/* The target answers held event k ("stored"), as late as it likes. */
static void answer(fx_t *f, unsigned k) {
  pthread_mutex_lock(&f->r.mu);
  lu_done_t d = f->r.held[k];
  f->r.held[k].fn = NULL;
  pthread_mutex_unlock(&f->r.mu);
  d.fn(d.ctx, NULL, 1);
}

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  if (lu_test_nats_start(&f->srv, NULL) != 0) return -1;
  f->nc1 = lu_test_nats_connect(f->srv.url);
  f->nc2 = lu_test_nats_connect(f->srv.url);
  pthread_mutex_init(&f->r.mu, NULL);
  f->r.target_alive = 1;
  for (int i = 0; i < MAXN; i++) f->r.verdict[i] = -1;
  g_rec = &f->r;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx_t *f = *state;
  assert_int_equal(f->r.bad_hops, 0);
  /* Whatever a test still holds is answered before the target goes. */
  for (unsigned i = 0; i < f->r.nheld; i++)
    if (f->r.held[i].fn) f->r.held[i].fn(f->r.held[i].ctx, NULL, 1);
  lu__cfwd_free(f->origin);
  lu__cfwd_free(f->target);
  natsConnection_Destroy(f->nc1);
  natsConnection_Destroy(f->nc2);
  lu_test_nats_stop(&f->srv);
  pthread_mutex_destroy(&f->r.mu);
  free(f);
  return 0;
}

/* Waits (bounded: 10 s) until *what reaches n; returns what it saw. */
static unsigned wait_count(rec_t *r, const unsigned *what, unsigned n) {
  unsigned v = 0;
  for (int i = 0; i < 2000; i++) {
    pthread_mutex_lock(&r->mu);
    v = *what;
    pthread_mutex_unlock(&r->mu);
    if (v >= n) break;
    usleep(5000);
  }
  return v;
}

static unsigned done_count(rec_t *r, unsigned n) {
  unsigned d = 0;
  for (int i = 0; i < 2000; i++) {
    d = 0;
    pthread_mutex_lock(&r->mu);
    for (unsigned k = 0; k < n; k++) d += r->calls[k] > 0;
    pthread_mutex_unlock(&r->mu);
    if (d >= n) break;
    usleep(5000);
  }
  return d;
}

static void send_n(fx_t *f, const char *target, unsigned from, unsigned n) {
  for (unsigned i = from; i < from + n; i++) {
    char ev[16];
    snprintf(ev, sizeof ev, "e%u", i);
    lu_done_t d = {on_done_counted, (void *)(uintptr_t)i};
    assert_int_equal(lu__cfwd_send(f->origin, target, ev, strlen(ev), 1, 0, d), 0);
  }
}

/* ---- tests ------------------------------------------------------------ */

static void test_confirmed_in_order(void **state) {
  fx_t *f = *state;
  pair(f, TARGET_STORES, 0, 0, 0);
  send_n(f, "t", 0, 100);
  assert_int_equal(done_count(&f->r, 100), 100);
  for (unsigned i = 0; i < 100; i++) {
    char ev[16];
    snprintf(ev, sizeof ev, "e%u", i);
    assert_string_equal(f->r.accepted[i], ev); /* the order they were sent */
    assert_int_equal(f->r.verdict[i], 1);
    assert_int_equal(f->r.calls[i], 1);
  }
  lu_cfwd_stats_t st;
  lu__cfwd_stats(f->origin, &st);
  assert_int_equal(st.sent, 100);
  assert_int_equal(st.confirmed, 100);
  assert_int_equal(st.fallbacks, 0);
  assert_int_equal(f->r.nfell, 0);
  assert_int_equal(f->r.last_delivery, 1);
  /* A suspect input (delivered again) says so to its owner. */
  lu_done_t d = {on_done_counted, (void *)(uintptr_t)100};
  assert_int_equal(lu__cfwd_send(f->origin, "t", "e100", 4, 3, 0, d), 0);
  assert_int_equal(done_count(&f->r, 101), 101);
  assert_int_equal(f->r.last_delivery, 3);
  assert_int_equal(f->r.last_replayed, 0);
  /* So does one that may have run before (a replay after a server lost
   * its acks): its owner looks for its outcome before choosing. */
  d = (lu_done_t){on_done_counted, (void *)(uintptr_t)101};
  assert_int_equal(lu__cfwd_send(f->origin, "t", "e101", 4, 1, 1, d), 0);
  assert_int_equal(done_count(&f->r, 102), 102);
  assert_int_equal(f->r.last_delivery, 1);
  assert_int_equal(f->r.last_replayed, 1);
}

static void test_not_stored_is_a_failure(void **state) {
  fx_t *f = *state;
  pair(f, TARGET_FAILS, 0, 0, 0);
  send_n(f, "t", 0, 3);
  assert_int_equal(done_count(&f->r, 3), 3);
  for (unsigned i = 0; i < 3; i++) assert_int_equal(f->r.verdict[i], 0);
  assert_int_equal(f->r.nfell, 0); /* NAKed by the caller, not re-sent */
}

static void test_no_responder_goes_durable(void **state) {
  fx_t *f = *state;
  f->origin = start(f, f->nc1, "o", 0, 0, 0);
  send_n(f, "nobody", 0, 2); /* no shard serves lucent.cfwd.nobody */
  assert_int_equal(wait_count(&f->r, &f->r.nfell, 2), 2);
  assert_int_equal(done_count(&f->r, 2), 2);
  assert_string_equal(f->r.fell[0], "e0");
  assert_string_equal(f->r.fell[1], "e1");
  lu_cfwd_stats_t st;
  lu__cfwd_stats(f->origin, &st);
  assert_int_equal(st.fallbacks, 2);
  assert_int_equal(st.confirmed, 0);
}

static void test_target_gone_then_late_reply(void **state) {
  fx_t *f = *state;
  pair(f, TARGET_HOLDS, 0, 60000, 0);
  send_n(f, "t", 0, 1);
  assert_int_equal(wait_count(&f->r, &f->r.naccepted, 1), 1);
  pthread_mutex_lock(&f->r.mu);
  f->r.target_alive = 0; /* it left the view */
  pthread_mutex_unlock(&f->r.mu);
  assert_int_equal(wait_count(&f->r, &f->r.nfell, 1), 1);
  assert_int_equal(done_count(&f->r, 1), 1);
  /* The target answers after all: nothing more happens at the origin. */
  answer(f, 0);
  usleep(200000);
  assert_int_equal(f->r.calls[0], 1);
  assert_int_equal(f->r.nfell, 1);
}

static void test_timeout_goes_durable(void **state) {
  fx_t *f = *state;
  pair(f, TARGET_HOLDS, 0, 100, 0); /* alive, but never answers */
  send_n(f, "t", 0, 2);
  assert_int_equal(wait_count(&f->r, &f->r.nfell, 2), 2);
  assert_int_equal(done_count(&f->r, 2), 2);
  assert_int_equal(f->r.verdict[0], 1); /* from the durable path */
}

/* A live owner that is only slow is waited for (the source kept in
 * progress) until max_wait; then the durable path; a reply after that
 * changes nothing. */
static void test_late_live_owner_is_extended(void **state) {
  fx_t *f = *state;
  pair(f, TARGET_HOLDS, 0, 100, 1500);
  send_n(f, "t", 0, 1);
  assert_true(wait_count(&f->r, &f->r.extended, 3) >= 3);
  assert_int_equal(f->r.nfell, 0); /* 300+ ms late, still waiting */
  assert_int_equal(f->r.calls[0], 0);
  assert_int_equal(wait_count(&f->r, &f->r.nfell, 1), 1); /* max_wait */
  assert_int_equal(done_count(&f->r, 1), 1);
  answer(f, 0);
  usleep(200000);
  assert_int_equal(f->r.calls[0], 1);
  lu_cfwd_stats_t st;
  lu__cfwd_stats(f->origin, &st);
  assert_true(st.extensions >= 3);
  assert_int_equal(st.fallbacks, 1);
}

typedef struct sender_s {
  fx_t *f;
  _Atomic unsigned sent;
  int failed; /* a send returned an error (checked by the test) */
} sender_t;

static void *sender_main(void *arg) {
  sender_t *s = arg;
  for (unsigned i = 0; i < 5; i++) {
    char ev[16];
    snprintf(ev, sizeof ev, "e%u", i);
    lu_done_t d = {on_done_counted, (void *)(uintptr_t)i};
    s->failed |= lu__cfwd_send(s->f->origin, "t", ev, strlen(ev), 1, 0, d) != 0;
    atomic_fetch_add(&s->sent, 1);
  }
  return NULL;
}

static void test_full_window_blocks_and_keeps_order(void **state) {
  fx_t *f = *state;
  pair(f, TARGET_HOLDS, 2, 60000, 0);
  sender_t s = {.f = f};
  pthread_t th;
  pthread_create(&th, NULL, sender_main, &s);
  assert_int_equal(wait_count(&f->r, &f->r.naccepted, 2), 2);
  usleep(200000);
  /* Two wait for replies: the third send blocks, nothing goes durable. */
  assert_int_equal(atomic_load(&s.sent), 2);
  assert_int_equal(f->r.naccepted, 2);
  assert_int_equal(f->r.nfell, 0);
  for (unsigned k = 0; k < 5; k++) {
    assert_true(wait_count(&f->r, &f->r.naccepted, k + 1) >= k + 1);
    answer(f, k);
  }
  pthread_join(th, NULL);
  assert_int_equal(s.failed, 0);
  assert_int_equal(done_count(&f->r, 5), 5);
  for (unsigned i = 0; i < 5; i++) {
    char ev[16];
    snprintf(ev, sizeof ev, "e%u", i);
    assert_string_equal(f->r.accepted[i], ev);
    assert_int_equal(f->r.calls[i], 1);
  }
  assert_int_equal(f->r.nfell, 0);
}

static void test_finish_hands_over_the_rest(void **state) {
  fx_t *f = *state;
  pair(f, TARGET_HOLDS, 0, 60000, 0);
  send_n(f, "t", 0, 3);
  assert_int_equal(wait_count(&f->r, &f->r.naccepted, 3), 3);
  lu__cfwd_finish(f->origin, 50);
  assert_int_equal(f->r.nfell, 3);
  assert_int_equal(done_count(&f->r, 3), 3);
  lu_done_t d = {on_done_counted, (void *)(uintptr_t)3};
  assert_int_equal(lu__cfwd_send(f->origin, "t", "e3", 2, 1, 0, d), -1);
  assert_int_equal(f->r.calls[3], 0); /* refused: the caller goes durable */
}

static void test_bad_arguments(void **state) {
  fx_t *f = *state;
  f->origin = start(f, f->nc1, "o", 0, 0, 0);
  char longid[80];
  memset(longid, 'x', sizeof longid - 1);
  longid[sizeof longid - 1] = 0;
  lu_done_t d = {on_done_counted, (void *)(uintptr_t)0};
  assert_int_equal(lu__cfwd_send(f->origin, longid, "e0", 2, 1, 0, d), -1);
  lu_done_t none = {NULL, NULL}; /* nobody to tell: not for this path */
  assert_int_equal(lu__cfwd_send(f->origin, "t", "e0", 2, 1, 0, none), -1);
  usleep(100000);
  assert_int_equal(f->r.calls[0], 0);
  assert_int_equal(f->r.nfell, 0);
}

int main(void) {
  LU_TEST_NATS_REQUIRE();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_confirmed_in_order),
      T(test_not_stored_is_a_failure),
      T(test_no_responder_goes_durable),
      T(test_target_gone_then_late_reply),
      T(test_timeout_goes_durable),
      T(test_late_live_owner_is_extended),
      T(test_full_window_blocks_and_keeps_order),
      T(test_finish_hands_over_the_rest),
      T(test_bad_arguments),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nats_Close();
  return rc;
}
