/*
 * test_store_jetstream.c - the JetStream event store (src/nats/store_jetstream.c)
 * against a real nats-server: the same append/query semantics as the
 * SQLite store (tests/unit/test_store.c), idempotency through Nats-Msg-Id,
 * 10k-event batches, queries that terminate while appends go on, odd
 * types and header values, read-only opening, and a server restart.
 * Each test gets its own server.  Skips (exit 77) without nats-server.
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
  natsConnection *nc;
  lu_store_t *st;
} fx_t;

static int has(const char *msg, const char *needle) {
  if (strstr(msg, needle)) return 1;
  fprintf(stderr, "message '%s' lacks '%s'\n", msg, needle);
  return 0;
}

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  if (lu_test_nats_start(&f->srv, NULL) != 0) return -1;
  f->nc = lu_test_nats_connect(f->srv.url);
  char err[512];
  if (lu__store_jetstream_open(&f->st, f->nc, 1, 0, err, sizeof err) != 0) {
    fprintf(stderr, "open: %s\n", err);
    return -1;
  }
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx_t *f = *state;
  lu_store_close(f->st);
  natsConnection_Destroy(f->nc);
  lu_test_nats_stop(&f->srv);
  free(f);
  return 0;
}

static lu_record_t rec(const char *id, const char *type, const char *subject,
                       const char *corr, const char *json) {
  lu_record_t r = {id, type, subject, corr, NULL, "2026-11-27T12:00:00.000Z",
                   json, json ? strlen(json) : 0};
  return r;
}

/* ---- query collection (as in test_store.c) ---------------------------- */

typedef struct rows_s {
  size_t n;
  uint64_t seq[64];
  char body[64][128];
  size_t stop_after;
  int stop_value;
} rows_t;

static int collect(void *ud, uint64_t seq, const char *json, size_t len) {
  rows_t *r = ud;
  assert_true(r->n < 64);
  assert_true(len < sizeof r->body[0]);
  assert_int_equal(strlen(json), len);
  r->seq[r->n] = seq;
  memcpy(r->body[r->n], json, len);
  r->body[r->n][len] = 0;
  r->n++;
  if (r->stop_after && r->n == r->stop_after) return r->stop_value;
  return 0;
}

static rows_t *run_query(lu_store_t *st, const lu_query_t *q) {
  static rows_t rows;
  memset(&rows, 0, sizeof rows);
  int rc = lu_store_query(st, q, collect, &rows);
  if (rc) fail_msg("query: %d %s", rc, lu_store_errmsg(st));
  return &rows;
}

static void assert_bodies(const rows_t *rows, const char *const *want,
                          size_t n) {
  if (rows->n != n)
    for (size_t i = 0; i < rows->n; i++)
      fprintf(stderr, "  got %s (seq %llu)\n", rows->body[i],
              (unsigned long long)rows->seq[i]);
  assert_int_equal(rows->n, n);
  for (size_t i = 0; i < n; i++) assert_string_equal(rows->body[i], want[i]);
  for (size_t i = 1; i < n; i++) assert_true(rows->seq[i] > rows->seq[i - 1]);
}

/* ---- opening ---------------------------------------------------------- */

typedef struct racer_s {
  const char *url;
  int rc;
  char err[512];
} racer_t;

static void *open_racer(void *arg) {
  racer_t *r = arg;
  natsConnection *nc = NULL;
  lu_nats_opts_t o = {.urls = r->url};
  lu_store_t *st = NULL;
  if (lu__nats_connect(&nc, &o, r->err, sizeof r->err) == 0)
    r->rc = lu__store_jetstream_open(&st, nc, 1, 0, r->err, sizeof r->err);
  lu_store_close(st);
  natsConnection_Destroy(nc);
  return NULL;
}

static void test_open_readonly_and_config(void **state) {
  (void)state;
  lu_test_nats_t srv;
  assert_int_equal(lu_test_nats_start(&srv, NULL), 0);
  natsConnection *nc = lu_test_nats_connect(srv.url);
  lu_store_t *st = NULL;
  char err[512];
  /* Read-only on a server without the stream: not created, clear error. */
  assert_int_equal(lu__store_jetstream_open(&st, nc, 0, 0, err, sizeof err),
                   LU_ENOENT);
  assert_null(st);
  assert_true(has(err, "no lucent event store on this server (stream "
                       "LUCENT_EVENTS not found)"));
  jsCtx *js = NULL;
  assert_int_equal(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
  jsStreamInfo *si = NULL;
  assert_int_equal(js_GetStreamInfo(&si, js, LU_STREAM_EVENTS, NULL, NULL),
                   NATS_NOT_FOUND);

  /* Create, with the duplicate window in nanoseconds (trap 2). */
  assert_int_equal(
      lu__store_jetstream_open(&st, nc, 1, 30000, err, sizeof err), 0);
  assert_string_equal(lu_store_backend(st), "jetstream");
  assert_int_equal(js_GetStreamInfo(&si, js, LU_STREAM_EVENTS, NULL, NULL),
                   NATS_OK);
  assert_int_equal(si->Config->Duplicates, 30000LL * 1000000);
  assert_int_equal(si->Config->Storage, js_FileStorage);
  assert_int_equal(si->Config->SubjectsLen, 1);
  assert_string_equal(si->Config->Subjects[0], "lucent.events.>");
  jsStreamInfo_Destroy(si);
  lu_record_t r = rec("a", "T", NULL, NULL, "{}");
  assert_int_equal(lu_store_append(st, &r, 1, NULL), 0);
  lu_store_close(st);

  /* Opening again with a wider window widens it; a narrower one does not
   * narrow it. */
  assert_int_equal(lu__store_jetstream_open(&st, nc, 1, 0, err, sizeof err),
                   0);
  lu_store_close(st);
  assert_int_equal(js_GetStreamInfo(&si, js, LU_STREAM_EVENTS, NULL, NULL),
                   NATS_OK);
  assert_int_equal(si->Config->Duplicates, 120000LL * 1000000);
  jsStreamInfo_Destroy(si);
  assert_int_equal(
      lu__store_jetstream_open(&st, nc, 1, 1000, err, sizeof err), 0);
  lu_store_close(st);
  assert_int_equal(js_GetStreamInfo(&si, js, LU_STREAM_EVENTS, NULL, NULL),
                   NATS_OK);
  assert_int_equal(si->Config->Duplicates, 120000LL * 1000000);
  assert_int_equal(si->State.Msgs, 1);
  jsStreamInfo_Destroy(si);

  /* Read-only now works, reads, and refuses appends. */
  assert_int_equal(lu__store_jetstream_open(&st, nc, 0, 0, err, sizeof err),
                   0);
  assert_int_equal(lu_store_count(st), 1);
  assert_int_equal(lu_store_append(st, &r, 1, NULL), LU_ESTORE);
  assert_true(has(lu_store_errmsg(st), "read-only"));
  assert_int_equal(run_query(st, NULL)->n, 1);
  lu_store_close(st);

  /* A stream of that name that is not ours is refused. */
  assert_int_equal(js_DeleteStream(js, LU_STREAM_EVENTS, NULL, NULL),
                   NATS_OK);
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  const char *subjects[] = {"other.>"};
  cfg.Name = LU_STREAM_EVENTS;
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  assert_int_equal(js_AddStream(NULL, js, &cfg, NULL, NULL), NATS_OK);
  assert_int_equal(lu__store_jetstream_open(&st, nc, 1, 0, err, sizeof err),
                   LU_ESTORE);
  assert_true(has(err, "does not take subjects lucent.events.>"));

  /* Another stream on our subjects: refused too (after a few re-reads, in
   * case it was a shard creating ours at the same moment). */
  assert_int_equal(js_DeleteStream(js, LU_STREAM_EVENTS, NULL, NULL),
                   NATS_OK);
  const char *ours[] = {"lucent.events.>"};
  cfg.Name = "OTHER";
  cfg.Subjects = ours;
  assert_int_equal(js_AddStream(NULL, js, &cfg, NULL, NULL), NATS_OK);
  assert_int_equal(lu__store_jetstream_open(&st, nc, 1, 0, err, sizeof err),
                   LU_ESTORE);
  assert_true(has(err, "overlap"));
  assert_int_equal(js_DeleteStream(js, "OTHER", NULL, NULL), NATS_OK);

  /* Shards starting at once all open the store one of them creates. */
  racer_t rc[4];
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    rc[i] = (racer_t){.url = srv.url, .rc = -1};
    pthread_create(&th[i], NULL, open_racer, &rc[i]);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    if (rc[i].rc) fail_msg("racer %d: %s", i, rc[i].err);
  }

  assert_int_equal(lu__store_jetstream_open(&st, NULL, 1, 0, err,
                                            sizeof err),
                   LU_EINVAL);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  lu_test_nats_stop(&srv);
}

static void test_no_jetstream(void **state) {
  (void)state;
  static const char *const args[] = {"-js=false", NULL};
  lu_test_nats_t srv;
  assert_int_equal(lu_test_nats_start(&srv, args), 0);
  natsConnection *nc = lu_test_nats_connect(srv.url);
  lu_store_t *st = NULL;
  char err[512];
  assert_int_equal(lu__store_jetstream_open(&st, nc, 1, 0, err, sizeof err),
                   LU_ESTORE);
  assert_true(has(err, "JetStream is not enabled"));
  natsConnection_Destroy(nc);
  lu_test_nats_stop(&srv);
}

/* ---- appends (as test_store.c) ---------------------------------------- */

static void test_append_count(void **state) {
  fx_t *f = *state;
  lu_store_t *st = f->st;
  assert_int_equal(lu_store_count(st), 0);
  lu_record_t r[3] = {
      rec("a", "T", "s1", "c1", "{\"id\":\"a\"}"),
      rec("b", "T", NULL, NULL, "{\"id\":\"b\"}"),
      rec("c", "U", "s2", NULL, "{\"id\":\"c\"}"),
  };
  size_t ins = 99;
  assert_int_equal(lu_store_append(st, r, 3, &ins), 0);
  assert_int_equal(ins, 3);
  assert_int_equal(lu_store_count(st), 3);
  assert_int_equal(lu_store_append(st, r, 0, &ins), 0);
  assert_int_equal(ins, 0);
  lu_record_t d = rec("d", "T", NULL, NULL, "{\"id\":\"d\"}");
  assert_int_equal(lu_store_append(st, &d, 1, NULL), 0);
  assert_int_equal(lu_store_count(st), 4);
  rows_t *rows = run_query(st, NULL);
  assert_int_equal(rows->n, 4);
  for (size_t i = 0; i < 4; i++) assert_int_equal(rows->seq[i], i + 1);
  assert_string_equal(rows->body[0], "{\"id\":\"a\"}");
  assert_string_equal(rows->body[3], "{\"id\":\"d\"}");
}

static void test_body_is_len_bytes(void **state) {
  fx_t *f = *state;
  const char *text = "{\"id\":\"x\"}GARBAGE";
  lu_record_t r = rec("x", "T", NULL, NULL, text);
  r.len = 10;
  assert_int_equal(lu_store_append(f->st, &r, 1, NULL), 0);
  rows_t *rows = run_query(f->st, NULL);
  assert_int_equal(rows->n, 1);
  assert_string_equal(rows->body[0], "{\"id\":\"x\"}");
}

static void test_duplicates(void **state) {
  fx_t *f = *state;
  lu_store_t *st = f->st;
  /* Within one batch: the first one is kept. */
  lu_record_t r[3] = {
      rec("a", "T", NULL, NULL, "{\"first\":1}"),
      rec("b", "T", NULL, NULL, "{\"b\":1}"),
      rec("a", "T", NULL, NULL, "{\"second\":1}"),
  };
  size_t ins = 0;
  assert_int_equal(lu_store_append(st, r, 3, &ins), 0);
  assert_int_equal(ins, 2);
  assert_int_equal(lu_store_count(st), 2);
  /* Across batches. */
  lu_record_t r2[2] = {rec("b", "T", NULL, NULL, "{\"b\":2}"),
                       rec("c", "T", NULL, NULL, "{\"c\":1}")};
  assert_int_equal(lu_store_append(st, r2, 2, &ins), 0);
  assert_int_equal(ins, 1);
  assert_int_equal(lu_store_append(st, r, 3, &ins), 0);
  assert_int_equal(ins, 0);
  static const char *const want[] = {"{\"first\":1}", "{\"b\":1}",
                                     "{\"c\":1}"};
  assert_bodies(run_query(st, NULL), want, 3);
}

/* A record comes back after the stream's duplicate window (a redelivery
 * after a long outage, an input republished hours later): still stored
 * once.  The window is 100 ms here; the second append comes well after. */
static void test_duplicates_past_the_window(void **state) {
  fx_t *f = *state;
  lu_store_close(f->st);
  jsCtx *js = NULL;
  assert_int_equal(natsConnection_JetStream(&js, f->nc, NULL), NATS_OK);
  assert_int_equal(js_DeleteStream(js, LU_STREAM_EVENTS, NULL, NULL),
                   NATS_OK);
  char err[512];
  assert_int_equal(
      lu__store_jetstream_open(&f->st, f->nc, 1, 100, err, sizeof err), 0);
  lu_record_t r[2] = {rec("a", "T", NULL, NULL, "{\"first\":1}"),
                      rec("b", "T.x", NULL, NULL, "{\"b\":1}")};
  size_t ins = 0;
  assert_int_equal(lu_store_append(f->st, r, 2, &ins), 0);
  assert_int_equal(ins, 2);
  struct timespec ts = {0, 300 * 1000 * 1000};
  nanosleep(&ts, NULL);
  lu_record_t again[3] = {rec("a", "T", NULL, NULL, "{\"again\":1}"),
                          rec("b", "T.x", NULL, NULL, "{\"again\":2}"),
                          rec("c", "T", NULL, NULL, "{\"c\":1}")};
  assert_int_equal(lu_store_append(f->st, again, 3, &ins), 0);
  assert_int_equal(ins, 1);
  assert_int_equal(lu_store_count(f->st), 3);
  static const char *const want[] = {"{\"first\":1}", "{\"b\":1}",
                                     "{\"c\":1}"};
  assert_bodies(run_query(f->st, NULL), want, 3);
  /* The type filter selects one type, not its dotted children. */
  lu_query_t q = {.type = "T"};
  static const char *const want_t[] = {"{\"first\":1}", "{\"c\":1}"};
  assert_bodies(run_query(f->st, &q), want_t, 2);
  jsCtx_Destroy(js);
}

static void test_invalid_record_fails_batch(void **state) {
  fx_t *f = *state;
  lu_store_t *st = f->st;
  lu_record_t r[3] = {rec("n1", "T", NULL, NULL, "{\"n\":1}"),
                      rec("n2", "T", NULL, NULL, "{\"n\":2}"),
                      rec(NULL, "T", NULL, NULL, "{\"n\":3}")};
  size_t ins = 99;
  assert_int_equal(lu_store_append(st, r, 3, &ins), LU_ESTORE);
  assert_int_equal(ins, 0);
  assert_true(has(lu_store_errmsg(st), "record 2"));
  assert_true(has(lu_store_errmsg(st), "id"));
  r[2] = rec("n3", NULL, NULL, NULL, "{}");
  assert_int_equal(lu_store_append(st, r, 3, &ins), LU_ESTORE);
  assert_true(has(lu_store_errmsg(st), "type"));
  r[2] = rec("n3", "T", NULL, NULL, NULL);
  assert_int_equal(lu_store_append(st, r, 3, &ins), LU_ESTORE);
  r[2] = rec("", "T", NULL, NULL, "{}");
  assert_int_equal(lu_store_append(st, r, 3, &ins), LU_ESTORE);
  assert_true(has(lu_store_errmsg(st), "empty id"));
  assert_int_equal(lu_store_count(st), 0); /* nothing was published */
  assert_int_equal(lu_store_append(st, r, 2, &ins), 0);
  assert_int_equal(ins, 2);
  assert_string_equal(lu_store_errmsg(st), "");
  assert_int_equal(lu_store_append(NULL, r, 2, &ins), LU_EINVAL);
  assert_int_equal(lu_store_append(st, NULL, 2, &ins), LU_EINVAL);
}

/* ---- queries (the fixture and expectations of test_store.c) ----------- */

static void fixture(lu_store_t *st) {
  lu_record_t r[8] = {
      rec("1", "OrderPlaced", "o1", "k1", "e1"),
      rec("2", "OrderPaid", "o1", "k1", "e2"),
      rec("3", "OrderPlaced", "o2", "k2", "e3"),
      rec("4", "OrderShipped", "o1", "k1", "e4"),
      rec("5", "OrderPlaced", NULL, NULL, "e5"),
      rec("6", "OrderPaid", "o2", "k2", "e6"),
      rec("7", "OrderPlaced", "o1", "k3", "e7"),
      rec("8", "OrderPlaced", "o2", "k2", "e8"),
  };
  size_t ins = 0;
  assert_int_equal(lu_store_append(st, r, 8, &ins), 0);
  assert_int_equal(ins, 8);
}

static void test_queries(void **state) {
  fx_t *f = *state;
  lu_store_t *st = f->st;
  fixture(st);

  lu_query_t q = {.type = "OrderPlaced"};
  static const char *const by_type[] = {"e1", "e3", "e5", "e7", "e8"};
  assert_bodies(run_query(st, &q), by_type, 5);
  q.type = "Nope";
  assert_int_equal(run_query(st, &q)->n, 0);
  q.type = "Order"; /* a prefix is not a match */
  assert_int_equal(run_query(st, &q)->n, 0);

  lu_query_t s = {.subject = "o1"};
  static const char *const by_subject[] = {"e1", "e2", "e4", "e7"};
  assert_bodies(run_query(st, &s), by_subject, 4);
  s.type = "OrderPlaced";
  static const char *const by_both[] = {"e1", "e7"};
  assert_bodies(run_query(st, &s), by_both, 2);

  lu_query_t c = {.correlationid = "k2"};
  static const char *const by_corr[] = {"e3", "e6", "e8"};
  assert_bodies(run_query(st, &c), by_corr, 3);
  c.correlationid = "k3";
  static const char *const by_corr2[] = {"e7"};
  assert_bodies(run_query(st, &c), by_corr2, 1);

  lu_query_t a = {.after_seq = 5};
  rows_t *rows = run_query(st, &a);
  static const char *const after[] = {"e6", "e7", "e8"};
  assert_bodies(rows, after, 3);
  assert_int_equal(rows->seq[0], 6);
  lu_query_t l = {.limit = 2};
  static const char *const limited[] = {"e1", "e2"};
  assert_bodies(run_query(st, &l), limited, 2);
  lu_query_t p = {.type = "OrderPlaced", .after_seq = 3, .limit = 2};
  static const char *const paged[] = {"e5", "e7"};
  assert_bodies(run_query(st, &p), paged, 2);
  lu_query_t past = {.after_seq = 8};
  assert_int_equal(run_query(st, &past)->n, 0);
  lu_query_t huge = {.after_seq = UINT64_MAX};
  assert_int_equal(run_query(st, &huge)->n, 0);
  lu_query_t none = {.type = "OrderShipped", .after_seq = 4};
  assert_int_equal(run_query(st, &none)->n, 0);
}

/* Packs (store_jetstream.c note 7): consecutive records of one type share
 * a message, up to the pack size; queries, filters and counts see events
 * one by one; the store's own retry of a batch stores nothing twice. */
static void test_packs(void **state) {
  fx_t *f = *state;
  lu_store_t *st = f->st;
  lu__store_jetstream_set_pack(st, 3, 1);
  lu_record_t r[6] = {
      rec("1", "OrderPlaced", "o1", "k1",
          "{\"subject\":\"o1\",\"correlationid\":\"k1\",\"n\":1}"),
      rec("2", "OrderPlaced", "o2", "k2",
          "{\"subject\":\"o2\",\"correlationid\":\"k2\",\"n\":2}"),
      rec("3", "OrderPlaced", "o1", "k3",
          "{\"subject\":\"o1\",\"correlationid\":\"k3\",\"n\":3}"),
      rec("4", "OrderPlaced", "o2", "k2",
          "{\"subject\":\"o2\",\"correlationid\":\"k2\",\"n\":4}"),
      rec("5", "OrderPaid", "o1", "k1",
          "{\"subject\":\"o1\",\"correlationid\":\"k1\",\"n\":5}"),
      rec("6", "OrderPlaced", NULL, NULL, "{\"n\":\n6}"), /* travels alone */
  };
  size_t ins = 0;
  assert_int_equal(lu_store_append(st, r, 6, &ins), 0);
  assert_int_equal(ins, 6);
  assert_int_equal(lu_store_count(st), 6);

  /* Messages: [1 2 3] [4] [5] [6]: the pack's events share sequence 1. */
  rows_t *rows = run_query(st, NULL);
  assert_int_equal(rows->n, 6);
  static const uint64_t seqs[] = {1, 1, 1, 2, 3, 4};
  for (size_t i = 0; i < 6; i++) {
    assert_int_equal(rows->seq[i], seqs[i]);
    assert_string_equal(rows->body[i], r[i].json);
  }
  lu_query_t q = {.type = "OrderPlaced"};
  rows = run_query(st, &q);
  assert_int_equal(rows->n, 5);
  assert_string_equal(rows->body[4], r[5].json);
  lu_query_t s = {.subject = "o1"};
  rows = run_query(st, &s);
  assert_int_equal(rows->n, 3);
  assert_string_equal(rows->body[0], r[0].json);
  assert_string_equal(rows->body[1], r[2].json);
  assert_string_equal(rows->body[2], r[4].json);
  lu_query_t c = {.type = "OrderPlaced", .correlationid = "k2"};
  rows = run_query(st, &c);
  assert_int_equal(rows->n, 2);
  assert_string_equal(rows->body[0], r[1].json);
  assert_string_equal(rows->body[1], r[3].json);
  lu_query_t l = {.limit = 2};
  assert_int_equal(run_query(st, &l)->n, 2);
  lu_query_t a = {.after_seq = 1}; /* skips the whole pack */
  rows = run_query(st, &a);
  assert_int_equal(rows->n, 3);
  assert_string_equal(rows->body[0], r[3].json);

  /* The same batch again (the store's retry): nothing new. */
  assert_int_equal(lu_store_append(st, r, 6, &ins), 0);
  assert_int_equal(ins, 0);
  assert_int_equal(lu_store_count(st), 6);
  /* The limit of packs, as documented: the same events grouped otherwise
   * are a new pack, stored again.  Hence at-most-once only. */
  assert_int_equal(lu_store_append(st, r + 1, 3, &ins), 0);
  assert_int_equal(ins, 3);
  assert_int_equal(lu_store_count(st), 9);
  /* Back to one message per event: per-event deduplication again. */
  lu__store_jetstream_set_pack(st, 1, 1);
  assert_int_equal(lu_store_append(st, r + 3, 1, &ins), 0);
  assert_int_equal(ins, 0); /* id "4" was stored alone above */
}

/* Packing only flagged records (exec results on an at-least-once serve):
 * unflagged ones travel alone and keep per-event deduplication. */
static void test_packs_flagged_only(void **state) {
  fx_t *f = *state;
  lu_store_t *st = f->st;
  lu__store_jetstream_set_pack(st, 8, 0);
  lu_record_t r[5] = {
      rec("a", "T", NULL, NULL, "{\"n\":1}"),
      rec("b", "T", NULL, NULL, "{\"n\":2}"),
      rec("c", "T", NULL, NULL, "{\"n\":3}"),
      rec("d", "T", NULL, NULL, "{\"n\":4}"),
      rec("e", "T", NULL, NULL, "{\"n\":5}"),
  };
  r[0].flags = r[1].flags = r[3].flags = r[4].flags = LU_RECORD_ONCE;
  size_t ins = 0;
  assert_int_equal(lu_store_append(st, r, 5, &ins), 0);
  assert_int_equal(ins, 5);
  rows_t *rows = run_query(st, NULL); /* [a b] [c] [d e] */
  assert_int_equal(rows->n, 5);
  static const uint64_t seqs[] = {1, 1, 2, 3, 3};
  for (size_t i = 0; i < 5; i++) assert_int_equal(rows->seq[i], seqs[i]);
  assert_int_equal(lu_store_append(st, &r[2], 1, &ins), 0);
  assert_int_equal(ins, 0); /* c, alone, deduplicated by its own id */
  assert_int_equal(lu_store_count(st), 5);
}

static void test_query_callback_stop_and_reentry(void **state) {
  fx_t *f = *state;
  lu_store_t *st = f->st;
  fixture(st);
  rows_t rows;
  memset(&rows, 0, sizeof rows);
  rows.stop_after = 2;
  rows.stop_value = 42;
  assert_int_equal(lu_store_query(st, NULL, collect, &rows), 42);
  assert_int_equal(rows.n, 2);
  rows_t *all = run_query(st, NULL);
  assert_int_equal(all->n, 8);
  assert_string_equal(all->body[0], "e1");
  assert_int_equal(lu_store_query(st, NULL, NULL, NULL), LU_EINVAL);
}

static lu_store_t *g_reenter_store;
static int g_reenter_rc;
static int reenter_cb(void *ud, uint64_t seq, const char *json, size_t len) {
  (void)ud, (void)seq, (void)json, (void)len;
  g_reenter_rc = (int)lu_store_count(g_reenter_store);
  return 1;
}

static void test_query_callback_may_not_reenter(void **state) {
  fx_t *f = *state;
  fixture(f->st);
  g_reenter_store = f->st;
  assert_int_equal(lu_store_query(f->st, NULL, reenter_cb, NULL), 1);
  assert_int_equal(g_reenter_rc, LU_ESTATE);
  assert_true(has(lu_store_errmsg(f->st), "callback"));
  assert_int_equal(lu_store_count(f->st), 8);
}

/* Types that are not plain subject tokens, and header values NATS would
 * alter (trimmed spaces, empty values, newlines). */
static void test_odd_types_and_values(void **state) {
  fx_t *f = *state;
  lu_store_t *st = f->st;
  static const char *const types[] = {
      "a.b.c", "a b", "a_b", "a*", "a>", "a..b", ".a", "a.", "", "a\tb",
      "ünï.cødé"};
  enum { NT = sizeof types / sizeof *types };
  lu_record_t r[NT + 4];
  char ids[NT][8], bodies[NT][16];
  for (int i = 0; i < NT; i++) {
    snprintf(ids[i], sizeof ids[i], "t%d", i);
    snprintf(bodies[i], sizeof bodies[i], "b%d", i);
    r[i] = rec(ids[i], types[i], NULL, NULL, bodies[i]);
  }
  r[NT] = rec("s1", "S", " padded ", "", "s1");
  r[NT + 1] = rec("s2", "S", "padded", "x", "s2");
  r[NT + 2] = rec("s3", "S", "two\nlines", "back\\slash", "s3");
  r[NT + 3] = rec("id with\nnewline", "S", "twoxlines", "\\x0a", "s4");
  size_t ins = 0;
  assert_int_equal(lu_store_append(st, r, NT + 4, &ins), 0);
  assert_int_equal(ins, NT + 4);
  for (int i = 0; i < NT; i++) {
    lu_query_t q = {.type = types[i]};
    rows_t *rows = run_query(st, &q);
    if (rows->n != 1) fail_msg("type '%s': %zu rows", types[i], rows->n);
    assert_string_equal(rows->body[0], bodies[i]);
  }
  /* Everything is under lucent.events.>: a query without a type sees it. */
  assert_int_equal(run_query(st, NULL)->n, NT + 4);

  lu_query_t q = {.subject = " padded "};
  static const char *const w1[] = {"s1"};
  assert_bodies(run_query(st, &q), w1, 1);
  q.subject = "padded";
  static const char *const w2[] = {"s2"};
  assert_bodies(run_query(st, &q), w2, 1);
  q.subject = "two\nlines";
  static const char *const w3[] = {"s3"};
  assert_bodies(run_query(st, &q), w3, 1);
  q = (lu_query_t){.correlationid = ""};
  assert_bodies(run_query(st, &q), w1, 1);
  q.correlationid = "back\\slash";
  assert_bodies(run_query(st, &q), w3, 1);
  q.correlationid = "\\x0a"; /* the literal text, not an escape */
  static const char *const w4[] = {"s4"};
  assert_bodies(run_query(st, &q), w4, 1);
  /* The id with a newline deduplicates like any other. */
  assert_int_equal(lu_store_append(st, &r[NT + 3], 1, &ins), 0);
  assert_int_equal(ins, 0);
}

/* ---- volume ----------------------------------------------------------- */

#define BIG 10000

typedef struct big_s {
  lu_record_t r[BIG];
  char id[BIG][24], subj[BIG][16], corr[BIG][16], body[BIG][320];
} big_t;

static big_t *big_batch(const char *prefix) {
  big_t *b = malloc(sizeof *b);
  for (int i = 0; i < BIG; i++) {
    snprintf(b->id[i], sizeof b->id[i], "%s-%d", prefix, i);
    snprintf(b->subj[i], sizeof b->subj[i], "s%d", i % 100);
    snprintf(b->corr[i], sizeof b->corr[i], "c%d", i % 7);
    int n = snprintf(b->body[i], sizeof b->body[i],
                     "{\"id\":\"%s\",\"n\":%d,\"pad\":\"", b->id[i], i);
    while (n < 290) b->body[i][n++] = 'x';
    memcpy(b->body[i] + n, "\"}", 3);
    b->r[i] = rec(b->id[i], i % 2 ? "Odd" : "Even", b->subj[i], b->corr[i],
                  b->body[i]);
  }
  return b;
}

typedef struct counter_s {
  size_t n;
  uint64_t last;
  int ordered;
} counter_t;

static int count_cb(void *ud, uint64_t seq, const char *json, size_t len) {
  counter_t *c = ud;
  (void)json, (void)len;
  if (seq <= c->last) c->ordered = 0;
  c->last = seq;
  c->n++;
  return 0;
}

static void test_ten_thousand(void **state) {
  fx_t *f = *state;
  lu_store_t *st = f->st;
  big_t *b = big_batch("big");
  size_t ins = 0;
  uint64_t t0 = lu__now_ns();
  assert_int_equal(lu_store_append(st, b->r, BIG, &ins), 0);
  fprintf(stderr, "  appended %d records in one batch in %.1f ms\n", BIG,
          (double)(lu__now_ns() - t0) / 1e6);
  assert_int_equal(ins, BIG);
  assert_int_equal(lu_store_count(st), BIG);
  /* The same again (a redelivered batch): nothing new. */
  assert_int_equal(lu_store_append(st, b->r, BIG, &ins), 0);
  assert_int_equal(ins, 0);
  assert_int_equal(lu_store_count(st), BIG);

  counter_t c = {0, 0, 1};
  t0 = lu__now_ns();
  assert_int_equal(lu_store_query(st, NULL, count_cb, &c), 0);
  fprintf(stderr, "  queried %zu records in %.1f ms\n", c.n,
          (double)(lu__now_ns() - t0) / 1e6);
  assert_int_equal(c.n, BIG);
  assert_true(c.ordered);
  assert_int_equal(c.last, BIG);
  c = (counter_t){0, 0, 1};
  lu_query_t q = {.type = "Odd", .correlationid = "c3"};
  assert_int_equal(lu_store_query(st, &q, count_cb, &c), 0);
  size_t want = 0;
  for (int i = 0; i < BIG; i++) want += i % 2 && i % 7 == 3;
  assert_int_equal(c.n, want);
  c = (counter_t){0, 0, 1};
  lu_query_t p = {.after_seq = BIG - 10, .limit = 5};
  assert_int_equal(lu_store_query(st, &p, count_cb, &c), 0);
  assert_int_equal(c.n, 5);
  assert_int_equal(c.last, BIG - 5);
  free(b);
}

/* A query terminates while another connection keeps appending. */
typedef struct appender_s {
  const char *url;
  _Atomic int stop;
  size_t batches;
} appender_t;

static void *append_loop(void *arg) {
  appender_t *a = arg;
  natsConnection *nc = lu_test_nats_connect(a->url);
  lu_store_t *st = NULL;
  char err[512];
  if (lu__store_jetstream_open(&st, nc, 1, 0, err, sizeof err) != 0)
    return NULL;
  char id[32], body[64];
  for (unsigned i = 0; !a->stop; i++) {
    lu_record_t r[64];
    char ids[64][32];
    for (int k = 0; k < 64; k++) {
      snprintf(ids[k], sizeof ids[k], "live-%u-%d", i, k);
      r[k] = rec(ids[k], k % 2 ? "Odd" : "Even", NULL, NULL, "{\"live\":1}");
    }
    (void)id, (void)body;
    if (lu_store_append(st, r, 64, NULL) == 0) a->batches++;
  }
  lu_store_close(st);
  natsConnection_Destroy(nc);
  return NULL;
}

static void test_query_terminates_during_appends(void **state) {
  fx_t *f = *state;
  big_t *b = big_batch("pre");
  assert_int_equal(lu_store_append(f->st, b->r, BIG, NULL), 0);
  free(b);
  appender_t a = {.url = f->srv.url};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, append_loop, &a), 0);
  lu_test_nats_sleep_ms(100);
  for (int round = 0; round < 3; round++) {
    counter_t c = {0, 0, 1};
    uint64_t t0 = lu__now_ns();
    lu_query_t q = {.type = round == 1 ? "Odd" : NULL};
    assert_int_equal(lu_store_query(f->st, &q, count_cb, &c), 0);
    assert_true(c.ordered);
    assert_true(c.n >= (round == 1 ? BIG / 2 : BIG));
    assert_true((lu__now_ns() - t0) / 1000000 < 10000);
  }
  a.stop = 1;
  pthread_join(t, NULL);
  assert_true(a.batches > 0);
}

/* ---- appends begun without waiting (lu_store_append_begin) --------- */

typedef struct begun_s {
  pthread_mutex_t mu;
  size_t calls[32]; /* per batch */
  int rc[32];
  size_t inserted[32];
  char why[32][256];
  size_t finished;
} begun_t;

typedef struct begun_ref_s {
  begun_t *b;
  size_t i;
} begun_ref_t;

static void begun_done(void *ctx, int rc, size_t inserted, const char *why) {
  begun_ref_t *r = ctx;
  begun_t *b = r->b;
  pthread_mutex_lock(&b->mu);
  b->calls[r->i]++;
  b->rc[r->i] = rc;
  b->inserted[r->i] = inserted;
  snprintf(b->why[r->i], sizeof b->why[0], "%s", why ? why : "");
  b->finished++;
  pthread_mutex_unlock(&b->mu);
}

/* Waits (at most 20 s) until `want` batches have finished. */
static void begun_wait(begun_t *b, size_t want) {
  uint64_t until = lu__now_ns() + 20000000000ull;
  pthread_mutex_lock(&b->mu);
  while (b->finished < want && lu__now_ns() < until) {
    pthread_mutex_unlock(&b->mu);
    lu_test_nats_sleep_ms(5);
    pthread_mutex_lock(&b->mu);
  }
  pthread_mutex_unlock(&b->mu);
  assert_int_equal(b->finished, want);
}

/* Twenty batches begun back to back, the odd ones repeating the even ones
 * before them: each is reported exactly once, the repeats as stored with
 * nothing new (Nats-Msg-Id), and the store holds every event once. */
static void test_append_begin(void **state) {
  fx_t *f = *state;
  assert_true(lu_store_batches_in_flight(f->st));
  static begun_t b = {.mu = PTHREAD_MUTEX_INITIALIZER};
  begun_ref_t refs[20];
  static char ids[20][50][32];
  lu_record_t r[50];
  for (size_t i = 0; i < 20; i++) {
    size_t gen = i - i % 2; /* batches 2k and 2k+1: the same ids */
    for (int k = 0; k < 50; k++) {
      snprintf(ids[i][k], sizeof ids[i][k], "begin-%zu-%d", gen, k);
      r[k] = rec(ids[i][k], k % 3 ? "T" : "U", NULL, NULL, "{\"b\":1}");
    }
    refs[i] = (begun_ref_t){&b, i};
    /* The records are copied before it returns: reuse them at once. */
    assert_int_equal(lu_store_append_begin(f->st, r, 50, begun_done,
                                            &refs[i]), 0);
  }
  begun_wait(&b, 20);
  lu_test_nats_sleep_ms(50); /* a second call would come now */
  size_t inserted = 0;
  for (size_t i = 0; i < 20; i++) {
    assert_int_equal(b.calls[i], 1);
    if (b.rc[i]) fprintf(stderr, "batch %zu: %s\n", i, b.why[i]);
    assert_int_equal(b.rc[i], 0);
    inserted += b.inserted[i];
  }
  assert_int_equal(inserted, 500);
  assert_int_equal(lu_store_count(f->st), 500);
}

/* A batch that cannot be begun (a record without an id) is refused at
 * once and never reported; one whose stream is gone is reported as not
 * stored, with the reason, and the next batch finds the stream made
 * again. */
static void test_append_begin_failures(void **state) {
  fx_t *f = *state;
  static begun_t b = {.mu = PTHREAD_MUTEX_INITIALIZER};
  begun_ref_t refs[3] = {{&b, 0}, {&b, 1}, {&b, 2}};
  lu_record_t bad[2] = {rec("ok", "T", NULL, NULL, "{}"),
                        rec(NULL, "T", NULL, NULL, "{}")};
  assert_int_equal(lu_store_append_begin(f->st, bad, 2, begun_done,
                                          &refs[0]), LU_ESTORE);
  assert_true(has(lu_store_errmsg(f->st), "record 1"));

  jsCtx *js = NULL;
  assert_int_equal(natsConnection_JetStream(&js, f->nc, NULL), NATS_OK);
  fixture(f->st);
  assert_int_equal(js_DeleteStream(js, LU_STREAM_EVENTS, NULL, NULL),
                   NATS_OK);
  lu_record_t one = rec("gone-1", "T", NULL, NULL, "{}");
  assert_int_equal(lu_store_append_begin(f->st, &one, 1, begun_done,
                                          &refs[1]), 0);
  begun_wait(&b, 1);
  assert_int_equal(b.calls[0], 0);
  assert_int_equal(b.calls[1], 1);
  assert_int_equal(b.rc[1], LU_ESTORE);
  assert_true(has(b.why[1], "not stored"));
  assert_true(has(b.why[1], "no stream stores"));
  /* The retry: the stream is made again first, and the batch stored. */
  assert_int_equal(lu_store_append_begin(f->st, &one, 1, begun_done,
                                          &refs[2]), 0);
  begun_wait(&b, 2);
  assert_int_equal(b.rc[2], 0);
  assert_int_equal(b.inserted[2], 1);
  assert_int_equal(lu_store_count(f->st), 1);
  jsCtx_Destroy(js);
}

/* The stream deleted under a running store: the failed batch says so and
 * the stream is made again, so the retry stores it. */
static void test_stream_deleted(void **state) {
  fx_t *f = *state;
  fixture(f->st);
  jsCtx *js = NULL;
  assert_int_equal(natsConnection_JetStream(&js, f->nc, NULL), NATS_OK);
  assert_int_equal(js_DeleteStream(js, LU_STREAM_EVENTS, NULL, NULL),
                   NATS_OK);
  lu_record_t r = rec("again", "T", NULL, NULL, "{}");
  assert_int_equal(lu_store_append(f->st, &r, 1, NULL), LU_ESTORE);
  assert_true(has(lu_store_errmsg(f->st), "created again"));
  size_t ins = 0;
  assert_int_equal(lu_store_append(f->st, &r, 1, &ins), 0);
  assert_int_equal(ins, 1);
  assert_int_equal(lu_store_count(f->st), 1);
  jsCtx_Destroy(js);
}

/* The query's consumer deleted midway (as the server does after a long
 * idle time, or loses in a restart): the query resumes with a new one and
 * delivers every event exactly once, in order. */
typedef struct killer_s {
  jsCtx *js;
  counter_t c;
  int killed;
} killer_t;

static int kill_consumer_cb(void *ud, uint64_t seq, const char *json,
                            size_t len) {
  killer_t *k = ud;
  count_cb(&k->c, seq, json, len);
  if (k->c.n == 10) {
    jsConsumerNamesList *names = NULL;
    if (js_ConsumerNames(&names, k->js, LU_STREAM_EVENTS, NULL, NULL) ==
        NATS_OK) {
      for (int i = 0; i < names->Count; i++)
        if (js_DeleteConsumer(k->js, LU_STREAM_EVENTS, names->List[i], NULL,
                              NULL) == NATS_OK)
          k->killed++;
      jsConsumerNamesList_Destroy(names);
    }
  }
  return 0;
}

static void test_query_survives_lost_consumer(void **state) {
  fx_t *f = *state;
  big_t *b = big_batch("lost");
  assert_int_equal(lu_store_append(f->st, b->r, 3000, NULL), 0);
  free(b);
  natsConnection *nc = lu_test_nats_connect(f->srv.url);
  killer_t k = {.c = {0, 0, 1}};
  assert_int_equal(natsConnection_JetStream(&k.js, nc, NULL), NATS_OK);
  assert_int_equal(lu_store_query(f->st, NULL, kill_consumer_cb, &k), 0);
  assert_int_equal(k.killed, 1);
  assert_int_equal(k.c.n, 3000);
  assert_true(k.c.ordered);
  assert_int_equal(k.c.last, 3000);
  jsCtx_Destroy(k.js);
  natsConnection_Destroy(nc);
}

/* ---- a server restart ------------------------------------------------- */

static void test_server_restart(void **state) {
  fx_t *f = *state;
  /* Reads ride through an outage for 20 s by default; the count below,
   * made while the server is down, must fail, and need not wait that
   * long to.  The same stream, a store with a short read window. */
  lu_store_close(f->st);
  lu_js_store_opts_t o = {.create = 1, .assets = {.retry_ms = 500}};
  char err[512];
  assert_int_equal(
      lu__store_jetstream_open_with(&f->st, f->nc, &o, err, sizeof err), 0);
  lu_store_t *st = f->st;
  fixture(st);
  assert_int_equal(lu_test_nats_restart(&f->srv, 200), 0);
  /* The connection comes back by itself; the store goes on.  Until it is
   * back an append may fail: retry as the manager does. */
  lu_record_t r = rec("after-restart", "T", NULL, NULL, "{\"r\":1}");
  int rc = -1;
  for (int i = 0; i < 20 && rc; i++) {
    rc = lu_store_append(st, &r, 1, NULL);
    if (rc) lu_test_nats_sleep_ms(250);
  }
  assert_int_equal(rc, 0);
  assert_int_equal(lu_store_count(st), 9);
  lu_query_t q = {.type = "T"};
  static const char *const want[] = {"{\"r\":1}"};
  assert_bodies(run_query(st, &q), want, 1);

  /* With the server down, an append fails within its timeout (5 s) plus
   * a margin - no hang - and says so. */
  lu_test_nats_kill(&f->srv, SIGKILL);
  lu_record_t d = rec("while-down", "T", NULL, NULL, "{\"d\":1}");
  uint64_t t0 = lu__now_ns();
  assert_int_equal(lu_store_append(st, &d, 1, NULL), LU_ESTORE);
  uint64_t ms = (lu__now_ns() - t0) / 1000000;
  fprintf(stderr, "  append with the server down failed after %llu ms: %s\n",
          (unsigned long long)ms, lu_store_errmsg(st));
  assert_true(ms < 7000);
  assert_true(has(lu_store_errmsg(st), "no acks"));
  assert_int_equal(lu_store_count(st), LU_ESTORE);

  /* Back again: the retried batch is stored once. */
  assert_int_equal(lu_test_nats_restart(&f->srv, 0), 0);
  rc = -1;
  for (int i = 0; i < 20 && rc; i++) {
    rc = lu_store_append(st, &d, 1, NULL);
    if (rc) lu_test_nats_sleep_ms(250);
  }
  assert_int_equal(rc, 0);
  assert_int_equal(lu_store_count(st), 10);
}

int main(void) {
  LU_TEST_NATS_REQUIRE();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_open_readonly_and_config),
      cmocka_unit_test(test_no_jetstream),
      T(test_append_count),
      T(test_body_is_len_bytes),
      T(test_duplicates),
      T(test_duplicates_past_the_window),
      T(test_invalid_record_fails_batch),
      T(test_queries),
      T(test_packs),
      T(test_packs_flagged_only),
      T(test_query_callback_stop_and_reentry),
      T(test_query_callback_may_not_reenter),
      T(test_odd_types_and_values),
      T(test_ten_thousand),
      T(test_query_terminates_during_appends),
      T(test_append_begin),
      T(test_append_begin_failures),
      T(test_stream_deleted),
      T(test_query_survives_lost_consumer),
      T(test_server_restart),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nats_Close();
  return rc;
}
