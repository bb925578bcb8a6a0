/*
 * test_session_kv.c - sticky-session bindings in a JetStream KV bucket
 * (src/nats/session_kv.c) against a real nats-server: first binder wins, two
 * processes racing on 1000 keys agree, a binding to a dead shard is
 * replaced, a binding expires after the bucket TTL unless it is in use,
 * odd keys, and an unreachable server.  Skips (exit 77) without
 * nats-server.
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

#include "nats_internal.h"
#include "nats_server.h"

typedef struct fx_s {
  lu_test_nats_t srv;
  natsConnection *nc1, *nc2;
} fx_t;

static lu_kvsess_t *open_kv(natsConnection *nc, uint32_t ttl_ms) {
  lu_kvsess_t *s = NULL;
  char err[512];
  if (lu__kvsess_open(&s, nc, ttl_ms, err, sizeof err) != 0)
    fail_msg("kvsess_open: %s", err);
  return s;
}

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  if (lu_test_nats_start(&f->srv, NULL) != 0) return -1;
  f->nc1 = lu_test_nats_connect(f->srv.url);
  f->nc2 = lu_test_nats_connect(f->srv.url);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx_t *f = *state;
  natsConnection_Destroy(f->nc1);
  natsConnection_Destroy(f->nc2);
  lu_test_nats_stop(&f->srv);
  free(f);
  return 0;
}

static const char *kbind(lu_kvsess_t *s, const char *key, const char *cand,
                        int (*alive)(void *, const char *), void *ud) {
  static char out[4][64];
  static int i;
  char *o = out[i++ & 3];
  int rc = lu__kvsess_bind(s, key, strlen(key), cand, alive, ud, o, 64);
  if (rc) fail_msg("bind %s: %d", key, rc);
  return o;
}

/* alive(): every shard but the one named by ud. */
static int all_but(void *ud, const char *shard) {
  return strcmp(shard, (const char *)ud) != 0;
}

static void test_first_binder_wins(void **state) {
  fx_t *f = *state;
  lu_kvsess_t *a = open_kv(f->nc1, 60000), *b = open_kv(f->nc2, 60000);
  assert_string_equal(kbind(a, "cust-1", "shard-a", NULL, NULL), "shard-a");
  assert_string_equal(kbind(a, "cust-1", "shard-x", NULL, NULL), "shard-a");
  assert_string_equal(kbind(b, "cust-1", "shard-b", NULL, NULL), "shard-a");
  char out[64];
  assert_int_equal(lu__kvsess_lookup(b, "cust-1", 6, out, sizeof out), 0);
  assert_string_equal(out, "shard-a");
  assert_int_equal(lu__kvsess_lookup(b, "cust-2", 6, out, sizeof out),
                   LU_ENOENT);
  /* Lookup changes nothing: cust-2 is still free for b. */
  assert_string_equal(kbind(b, "cust-2", "shard-b", NULL, NULL), "shard-b");
  assert_string_equal(kbind(a, "cust-2", "shard-a", NULL, NULL), "shard-b");
  /* Output too small, bad arguments. */
  assert_int_equal(lu__kvsess_bind(a, "cust-1", 6, "s", NULL, NULL, out, 3),
                   LU_E2BIG);
  assert_int_equal(lu__kvsess_bind(a, "cust-1", 6, "", NULL, NULL, out, 64),
                   LU_EINVAL);
  assert_int_equal(
      lu__kvsess_bind(NULL, "cust-1", 6, "s", NULL, NULL, out, 64),
      LU_EINVAL);
  /* The binding is what the bucket holds. */
  jsCtx *js = NULL;
  kvStore *kv = NULL;
  kvEntry *e = NULL;
  assert_int_equal(natsConnection_JetStream(&js, f->nc1, NULL), NATS_OK);
  assert_int_equal(js_KeyValue(&kv, js, LU_KV_SESSIONS), NATS_OK);
  assert_int_equal(kvStore_Get(&e, kv, "cust-1"), NATS_OK);
  assert_string_equal(kvEntry_ValueString(e), "shard-a");
  kvEntry_Destroy(e);
  kvStore_Destroy(kv);
  jsCtx_Destroy(js);
  lu__kvsess_close(a);
  lu__kvsess_close(b);
  lu__kvsess_close(NULL);
}

/* ---- two processes racing --------------------------------------------- */

#define RACE_KEYS 1000

typedef struct racer_s {
  lu_kvsess_t *s;
  const char *cand;
  char got[RACE_KEYS][64];
  int errors;
  pthread_barrier_t *go;
} racer_t;

static void *race(void *arg) {
  racer_t *r = arg;
  pthread_barrier_wait(r->go);
  char key[32];
  for (int i = 0; i < RACE_KEYS; i++) {
    snprintf(key, sizeof key, "session-%d", i);
    if (lu__kvsess_bind(r->s, key, strlen(key), r->cand, NULL, NULL,
                        r->got[i], sizeof r->got[i]) != 0)
      r->errors++;
  }
  return NULL;
}

static void test_race_agrees(void **state) {
  fx_t *f = *state;
  pthread_barrier_t go;
  pthread_barrier_init(&go, NULL, 2);
  racer_t *r = calloc(2, sizeof *r);
  r[0] = (racer_t){.s = open_kv(f->nc1, 60000), .cand = "shard-a", .go = &go};
  r[1] = (racer_t){.s = open_kv(f->nc2, 60000), .cand = "shard-b", .go = &go};
  pthread_t t[2];
  uint64_t t0 = lu__now_ns();
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&t[i], NULL, race, &r[i]), 0);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  fprintf(stderr, "  2 x %d racing binds in %.0f ms\n", RACE_KEYS,
          (double)(lu__now_ns() - t0) / 1e6);
  assert_int_equal(r[0].errors, 0);
  assert_int_equal(r[1].errors, 0);
  int wins[2] = {0, 0};
  for (int i = 0; i < RACE_KEYS; i++) {
    if (strcmp(r[0].got[i], r[1].got[i]) != 0)
      fail_msg("session-%d: %s vs %s", i, r[0].got[i], r[1].got[i]);
    wins[strcmp(r[0].got[i], "shard-b") == 0]++;
  }
  fprintf(stderr, "  shard-a won %d keys, shard-b %d\n", wins[0], wins[1]);
  /* Both sides agree afterwards too, from the cache and from the KV. */
  lu_kvsess_t *c = open_kv(f->nc1, 60000);
  char out[64], key[32];
  for (int i = 0; i < RACE_KEYS; i += 37) {
    snprintf(key, sizeof key, "session-%d", i);
    assert_int_equal(lu__kvsess_lookup(c, key, strlen(key), out, sizeof out),
                     0);
    assert_string_equal(out, r[0].got[i]);
    assert_string_equal(kbind(r[1].s, key, "shard-z", NULL, NULL),
                        r[0].got[i]);
  }
  lu__kvsess_close(c);
  lu__kvsess_close(r[0].s);
  lu__kvsess_close(r[1].s);
  free(r);
  pthread_barrier_destroy(&go);
}

/* ---- dead shards, TTL ------------------------------------------------- */

static void test_dead_shard_replaced(void **state) {
  fx_t *f = *state;
  lu_kvsess_t *a = open_kv(f->nc1, 60000), *b = open_kv(f->nc2, 60000);
  assert_string_equal(kbind(a, "k", "shard-a", NULL, NULL), "shard-a");
  /* b sees shard-a dead: rebinds to its candidate with a CAS update. */
  assert_string_equal(kbind(b, "k", "shard-b", all_but, (void *)"shard-a"),
                      "shard-b");
  /* a, once it too sees shard-a dead, follows the new binding rather than
   * writing its own. */
  assert_string_equal(kbind(a, "k", "shard-c", all_but, (void *)"shard-a"),
                      "shard-b");
  assert_string_equal(kbind(a, "k", "shard-c", NULL, NULL), "shard-b");
  char out[64];
  assert_int_equal(lu__kvsess_lookup(a, "k", 1, out, sizeof out), 0);
  assert_string_equal(out, "shard-b");
  /* Two sides replacing the same dead binding: one CAS wins, both agree. */
  assert_string_equal(kbind(a, "k2", "shard-a", NULL, NULL), "shard-a");
  assert_string_equal(kbind(b, "k2", "shard-a", NULL, NULL), "shard-a");
  const char *x = kbind(a, "k2", "shard-x", all_but, (void *)"shard-a");
  const char *y = kbind(b, "k2", "shard-y", all_but, (void *)"shard-a");
  assert_string_equal(x, "shard-x");
  assert_string_equal(y, "shard-x");
  lu__kvsess_close(a);
  lu__kvsess_close(b);
}

static void test_ttl_expiry_and_refresh(void **state) {
  fx_t *f = *state;
  lu_kvsess_t *a = open_kv(f->nc1, 1500), *b = open_kv(f->nc2, 1500);
  /* Unused for longer than the TTL: gone, the next binder wins. */
  assert_string_equal(kbind(a, "idle", "shard-a", NULL, NULL), "shard-a");
  assert_string_equal(kbind(a, "busy", "shard-a", NULL, NULL), "shard-a");
  /* "busy" stays in use (every 250 ms, by a) for 3 s = twice the TTL. */
  for (int i = 0; i < 12; i++) {
    lu_test_nats_sleep_ms(250);
    assert_string_equal(kbind(a, "busy", "shard-x", NULL, NULL), "shard-a");
  }
  char out[64];
  assert_int_equal(lu__kvsess_lookup(b, "busy", 4, out, sizeof out), 0);
  assert_string_equal(out, "shard-a");
  assert_int_equal(lu__kvsess_lookup(b, "idle", 4, out, sizeof out),
                   LU_ENOENT);
  assert_string_equal(kbind(b, "idle", "shard-b", NULL, NULL), "shard-b");
  /* a's cache expired with the TTL too: it follows b. */
  assert_string_equal(kbind(a, "idle", "shard-a", NULL, NULL), "shard-b");

  /* A bucket that exists keeps its TTL: opening with another one works
   * and uses the bucket's. */
  lu_kvsess_t *c = open_kv(f->nc1, 600000);
  assert_string_equal(kbind(c, "c-key", "shard-c", NULL, NULL), "shard-c");
  lu_test_nats_sleep_ms(1700);
  assert_string_equal(kbind(c, "c-key", "shard-d", NULL, NULL), "shard-d");
  lu__kvsess_close(c);
  lu__kvsess_close(a);
  lu__kvsess_close(b);
}

/* ---- keys, failures --------------------------------------------------- */

static void test_odd_keys(void **state) {
  fx_t *f = *state;
  lu_kvsess_t *a = open_kv(f->nc1, 60000), *b = open_kv(f->nc2, 60000);
  char longkey[1001];
  memset(longkey, 'k', 1000);
  longkey[1000] = 0;
  char longkey2[1001];
  memcpy(longkey2, longkey, sizeof longkey);
  longkey2[999] = 'j';
  const char *keys[] = {"a.b",       "a=2Eb",   "a b",  "",       "ünï",
                        "x*y>z",     "/slash/", "..",   longkey,  longkey2,
                        "tab\there", "A",       "a"};
  enum { NK = sizeof keys / sizeof *keys };
  char cand[NK][16];
  for (int i = 0; i < NK; i++) {
    snprintf(cand[i], sizeof cand[i], "shard-%d", i);
    assert_string_equal(kbind(a, keys[i], cand[i], NULL, NULL), cand[i]);
  }
  /* Distinct keys got distinct bindings; the other side sees them. */
  for (int i = 0; i < NK; i++)
    assert_string_equal(kbind(b, keys[i], "other", NULL, NULL), cand[i]);
  /* A key with a NUL byte is bytes, not a C string. */
  char out[64];
  assert_int_equal(lu__kvsess_bind(a, "n\0a", 3, "nul", NULL, NULL, out, 64),
                   0);
  assert_string_equal(out, "nul");
  assert_int_equal(lu__kvsess_lookup(b, "n", 1, out, sizeof out), LU_ENOENT);
  lu__kvsess_close(a);
  lu__kvsess_close(b);
}

static void test_unreachable(void **state) {
  fx_t *f = *state;
  lu_kvsess_t *a = open_kv(f->nc1, 60000);
  assert_string_equal(kbind(a, "cached", "shard-a", NULL, NULL), "shard-a");
  lu_test_nats_kill(&f->srv, SIGKILL);
  char out[64];
  uint64_t t0 = lu__now_ns();
  assert_int_equal(
      lu__kvsess_bind(a, "new-key", 7, "shard-z", NULL, NULL, out, 64),
      LU_EIO);
  assert_true((lu__now_ns() - t0) / 1000000 < 5000);
  assert_string_equal(out, "shard-z"); /* the caller uses the candidate */
  /* A cached binding still answers (no round trip needed). */
  assert_string_equal(kbind(a, "cached", "shard-x", NULL, NULL), "shard-a");
  lu__kvsess_close(a);

  /* Opening with no JetStream to talk to fails clearly. */
  static const char *const args[] = {"-js=false", NULL};
  lu_test_nats_t srv;
  assert_int_equal(lu_test_nats_start(&srv, args), 0);
  natsConnection *nc = lu_test_nats_connect(srv.url);
  lu_kvsess_t *s = NULL;
  char err[512];
  assert_int_equal(lu__kvsess_open(&s, nc, 1000, err, sizeof err), LU_EIO);
  assert_null(s);
  assert_non_null(strstr(err, "JetStream is not enabled"));
  natsConnection_Destroy(nc);
  lu_test_nats_stop(&srv);
}

int main(void) {
  LU_TEST_NATS_REQUIRE();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_first_binder_wins),  T(test_race_agrees),
      T(test_dead_shard_replaced), T(test_ttl_expiry_and_refresh),
      T(test_odd_keys),           T(test_unreachable),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nats_Close();
  return rc;
}
