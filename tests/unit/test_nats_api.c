/*
 * test_nats_api.c - lucent/nats.h as a program uses it, linked with
 * liblucent-nats.so and the public headers only: bad input (NULL
 * pointers, option structs never initialised or from other headers,
 * values out of range, a manager of two shards, a bulk connection) fails
 * with LU_EINVAL and a sentence; an unreachable URL with LU_EIO saying
 * which and why; on a real nats-server (skipped without one) a shard
 * served through the API answers an exec request, stores its outcome
 * where a read-only store finds it, and keeps its counters after the
 * stop.  nats.c is linked only to send the exec request itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <nats/nats.h>

#include "lucent/nats.h"
#include "nats_server.h"

/* Does the message contain needle?  Prints it when not. */
static int has(const char *msg, const char *needle) {
  if (msg && strstr(msg, needle)) return 1;
  fprintf(stderr, "message '%s' lacks '%s'\n", msg ? msg : "(null)", needle);
  return 0;
}

LU_FUNCTION(Twice, .events = "Number", .doc = "doubles data.n")
{
  const cJSON *n = cJSON_GetObjectItemCaseSensitive(data, "n");
  if (!cJSON_IsNumber(n)) return lu_out_fail(out, LU_FAIL, "no n");
  cJSON *r = cJSON_CreateObject();
  cJSON_AddNumberToObject(r, "n", 2 * n->valuedouble);
  return lu_out_result(out, r) ? LU_RETRY : LU_OK;
}

static lu_registry_t *registry(void) {
  lu_registry_t *reg = NULL;
  const lu_fn_t *const *fns;
  size_t n = lu_fns_here(&fns);
  assert_int_equal(lu_registry_new(&reg), 0);
  assert_int_equal(lu_registry_add(reg, fns, n, "test_nats_api"), 0);
  return reg;
}

/* A manager of `shards` shards (ids t1, t2, ...) writing to store. */
static lu_manager_t *manager(lu_registry_t *reg, unsigned shards,
                             lu_store_t *store, size_t max_record) {
  static const char *const ids[] = {"t1", "t2"};
  lu_config_t cfg;
  lu_config_init(&cfg);
  cfg.shards = shards;
  cfg.shard_ids = ids;
  cfg.store_handle = store;
  cfg.max_record_bytes = max_record;
  lu_manager_t *m = NULL;
  char err[256];
  if (lu_manager_new(&m, &cfg, reg, err, sizeof err)) fail_msg("%s", err);
  return m;
}

/* ---- without a server ------------------------------------------------ */

static void test_null_arguments(void **state) {
  (void)state;
  char err[256];
  lu_nats_opts_t o;
  assert_int_equal(lu_nats_opts_init(&o), 0);
  o.urls = "nats://127.0.0.1:1";
  lu_nats_t *n = (lu_nats_t *)&o; /* must come back NULL */
  assert_int_equal(lu_nats_connect(NULL, &o, err, sizeof err), LU_EINVAL);
  assert_true(has(err, "lu_nats_connect"));
  assert_int_equal(lu_nats_connect(&n, NULL, err, sizeof err), LU_EINVAL);
  assert_null(n);
  assert_true(has(err, "urls"));
  assert_int_equal(lu_nats_connect(&n, NULL, NULL, 0), LU_EINVAL);

  lu_store_t *st = (lu_store_t *)&o;
  assert_int_equal(lu_nats_store_open(NULL, NULL, NULL, err, sizeof err),
                   LU_EINVAL);
  assert_int_equal(lu_nats_store_open(&st, NULL, NULL, err, sizeof err),
                   LU_EINVAL);
  assert_null(st);
  assert_true(has(err, "connection is NULL"));

  lu_nats_serve_t *s = (lu_nats_serve_t *)&o;
  assert_int_equal(lu_nats_serve_start(&s, NULL, NULL, NULL, err, sizeof err),
                   LU_EINVAL);
  assert_null(s);
  assert_int_equal(lu_nats_serve_start(NULL, NULL, NULL, NULL, NULL, 0),
                   LU_EINVAL);

  lu_nats_serve_stats_t stats;
  assert_int_equal(lu_nats_serve_stats(NULL, &stats), LU_EINVAL);
  lu_metric_t mt[4];
  assert_int_equal(lu_nats_serve_metrics(NULL, mt, 4), 0);
  assert_int_equal(lu_nats_connected(NULL), 0);
  assert_int_equal(lu_nats_max_record_bytes(NULL), 0);
  lu_nats_serve_stop(NULL, 0); /* no-ops */
  lu_nats_serve_free(NULL);
  lu_nats_close(NULL);
  assert_int_equal(lu_nats_opts_init_sized(NULL, sizeof o), LU_EINVAL);
}

static void test_unreachable(void **state) {
  (void)state;
  char err[512];
  lu_nats_opts_t o;
  lu_nats_opts_init(&o);
  o.urls = "nats://127.0.0.1:1";
  lu_nats_t *n = NULL;
  assert_int_equal(lu_nats_connect(&n, &o, err, sizeof err), LU_EIO);
  assert_null(n);
  assert_true(has(err, "cannot connect to nats://127.0.0.1:1"));
  assert_true(has(err, "connection refused"));

  o.urls = "";
  assert_int_equal(lu_nats_connect(&n, &o, err, sizeof err), LU_EINVAL);
  assert_true(has(err, "URL"));
  o.urls = "http://127.0.0.1:4222";
  assert_int_equal(lu_nats_connect(&n, &o, err, sizeof err), LU_EINVAL);
  assert_true(has(err, "scheme 'http'"));
  o.urls = "nats://127.0.0.1:1";
  o.password = "pw"; /* without a user */
  assert_int_equal(lu_nats_connect(&n, &o, err, sizeof err), LU_EINVAL);
  assert_true(has(err, "needs a user"));
}

/* Option structs of other sizes (lucent.h, "How lu_config_t grows"). */
static void test_struct_sizes(void **state) {
  (void)state;
  char err[512];
  lu_nats_t *n = NULL;

  /* Never initialised, and from headers newer than the library. */
  lu_nats_opts_t o = {.urls = "nats://127.0.0.1:1"};
  assert_int_equal(lu_nats_connect(&n, &o, err, sizeof err), LU_EINVAL);
  assert_true(has(err, "lu_nats_opts_t has struct_size 0"));
  assert_true(has(err, "lu_nats_opts_init()"));
  o.struct_size = sizeof o + 16;
  assert_int_equal(lu_nats_connect(&n, &o, err, sizeof err), LU_EINVAL);
  assert_true(has(err, "newer headers"));

  /* From older headers that ended at urls: what lies past it is not
   * read (a password without a user would be refused). */
  lu_nats_opts_init(&o);
  o.struct_size = offsetof(lu_nats_opts_t, user);
  o.urls = "nats://127.0.0.1:1";
  o.password = "pw";
  assert_int_equal(lu_nats_connect(&n, &o, err, sizeof err), LU_EIO);

  /* init of an older, smaller struct writes only that much, defaults
   * included. */
  union {
    lu_nats_store_opts_t o;
    unsigned char b[sizeof(lu_nats_store_opts_t)];
  } u;
  memset(&u, 0xab, sizeof u);
  size_t part = offsetof(lu_nats_store_opts_t, pack);
  assert_int_equal(lu_nats_store_opts_init_sized(&u.o, part), 0);
  assert_int_equal(u.o.struct_size, part);
  assert_int_equal(u.o.retry_ms, LU_NATS_RETRY_MS);
  assert_int_equal(u.o.read_only, 0);
  for (size_t i = part; i < sizeof u; i++) assert_int_equal(u.b[i], 0xab);
  assert_int_equal(lu_nats_store_opts_init_sized(&u.o, 1), LU_EINVAL);
  /* A struct from newer headers: filled as far as this library knows
   * it, and refused. */
  union {
    lu_nats_serve_opts_t o;
    unsigned char b[sizeof(lu_nats_serve_opts_t) + 8];
  } big;
  assert_int_equal(lu_nats_serve_opts_init_sized(&big.o, sizeof big),
                   LU_EINVAL);
  assert_int_equal(big.o.struct_size, sizeof big);
  assert_null(big.o.static_view);
  lu_nats_store_opts_init(&u.o);
  assert_int_equal(u.o.pack, 256);
  lu_nats_serve_opts_t so;
  assert_int_equal(lu_nats_serve_opts_init(&so), 0);
  assert_int_equal(so.delivery, LU_NATS_AT_LEAST_ONCE);
  assert_null(so.static_view);
}

/* ---- on a real server ------------------------------------------------ */

/* Sends one exec request for Number {"n": n} and returns the reply's
 * JSON (caller frees). */
static char *exec_request(const char *url, int n) {
  natsConnection *nc = NULL;
  natsMsg *reply = NULL;
  char ev[256];
  snprintf(ev, sizeof ev,
           "{\"specversion\":\"1.0\",\"id\":\"num-%d\",\"type\":\"Number\","
           "\"source\":\"test_nats_api\",\"data\":{\"n\":%d}}",
           n, n);
  assert_int_equal(natsConnection_ConnectTo(&nc, url), NATS_OK);
  natsStatus s = natsConnection_RequestString(&reply, nc, "lucent.exec", ev,
                                              20000);
  if (s != NATS_OK) fail_msg("exec: %s", natsStatus_GetText(s));
  char *r =
      strndup(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply));
  natsMsg_Destroy(reply);
  natsConnection_Destroy(nc);
  return r;
}

static int collect(void *ud, uint64_t seq, const char *json, size_t len) {
  (void)seq;
  char *buf = ud;
  size_t have = strlen(buf);
  if (have + len + 2 < 4096) {
    memcpy(buf + have, json, len);
    buf[have + len] = '\n';
    buf[have + len + 1] = 0;
  }
  return 0;
}

static void test_serve(void **state) {
  (void)state;
  lu_test_nats_t srv;
  int rc = lu_test_nats_start(&srv, NULL);
  if (rc == LU_TEST_NATS_SKIP) skip();
  assert_int_equal(rc, 0);
  char err[512];

  lu_nats_opts_t o;
  lu_nats_opts_init(&o);
  o.urls = srv.url;
  o.name = "test_nats_api";
  lu_nats_t *nats = NULL;
  if (lu_nats_connect(&nats, &o, err, sizeof err)) fail_msg("%s", err);
  assert_int_equal(lu_nats_connected(nats), 1);
  size_t max_record = lu_nats_max_record_bytes(nats);
  assert_true(max_record > 4096 && max_record < (size_t)64 << 20);

  /* The store: none yet to read; one the server cannot keep; one. */
  lu_nats_store_opts_t ro;
  lu_nats_store_opts_init(&ro);
  ro.read_only = 1;
  lu_store_t *st = NULL;
  assert_int_equal(lu_nats_store_open(&st, nats, &ro, err, sizeof err),
                   LU_ENOENT);
  assert_null(st);
  assert_true(has(err, "stream LUCENT_EVENTS not found"));
  lu_nats_store_opts_t so;
  lu_nats_store_opts_init(&so);
  so.replicas = LU_NATS_MAX_REPLICAS + 1;
  assert_int_equal(lu_nats_store_open(&st, nats, &so, err, sizeof err),
                   LU_EINVAL);
  assert_true(has(err, "replicas"));
  so.replicas = 3; /* a single server keeps one copy: not created... */
  assert_int_equal(lu_nats_store_open(&st, nats, &so, err, sizeof err),
                   LU_ESTORE);
  assert_true(has(err, "single server"));
  so.replicas = 0;
  if (lu_nats_store_open(&st, nats, &so, err, sizeof err)) fail_msg("%s", err);
  assert_string_equal(lu_store_backend(st), "jetstream");
  lu_store_t *st3 = NULL; /* ...nor changed */
  so.replicas = 3;
  assert_int_equal(lu_nats_store_open(&st3, nats, &so, err, sizeof err),
                   LU_EINVAL);
  assert_null(st3);
  assert_true(has(err, "single server"));

  lu_registry_t *reg = registry();
  lu_nats_serve_t *s = NULL;

  /* A manager of two shards is not served. */
  lu_manager_t *m2 = manager(reg, 2, NULL, 0);
  assert_int_equal(lu_nats_serve_start(&s, nats, m2, NULL, err, sizeof err),
                   LU_EINVAL);
  assert_null(s);
  assert_true(has(err, "one shard"));
  lu_manager_free(m2);

  lu_manager_t *m = manager(reg, 1, st, max_record);

  /* Bad serve options. */
  lu_nats_serve_opts_t vo = {0};
  assert_int_equal(lu_nats_serve_start(&s, nats, m, &vo, err, sizeof err),
                   LU_EINVAL);
  assert_true(has(err, "lu_nats_serve_opts_t has struct_size 0"));
  lu_nats_serve_opts_init(&vo);
  vo.replicas = 6;
  assert_int_equal(lu_nats_serve_start(&s, nats, m, &vo, err, sizeof err),
                   LU_EINVAL);
  assert_true(has(err, "replicas"));
  lu_nats_serve_opts_init(&vo);
  vo.partitions = LU_NATS_PARTITIONS_MAX + 1;
  assert_int_equal(lu_nats_serve_start(&s, nats, m, &vo, err, sizeof err),
                   LU_EINVAL);
  assert_true(has(err, "partitions"));
  lu_nats_serve_opts_init(&vo);
  vo.delivery = (lu_nats_delivery_t)7;
  assert_int_equal(lu_nats_serve_start(&s, nats, m, &vo, err, sizeof err),
                   LU_EINVAL);
  assert_true(has(err, "delivery"));
  assert_null(s);

  /* Not on a bulk connection. */
  lu_nats_t *bulk = NULL;
  o.bulk = 1;
  if (lu_nats_connect(&bulk, &o, err, sizeof err)) fail_msg("%s", err);
  assert_int_equal(lu_nats_serve_start(&s, bulk, m, NULL, err, sizeof err),
                   LU_EINVAL);
  assert_true(has(err, "bulk"));
  lu_nats_close(bulk);

  /* Served: an exec request runs on it, its outcome is stored. */
  if (lu_nats_serve_start(&s, nats, m, NULL, err, sizeof err))
    fail_msg("%s", err);
  assert_true(lu_manager_in_view(m, "t1"));
  char *reply = exec_request(srv.url, 21);
  assert_true(has(reply, "\"success\":true"));
  assert_true(has(reply, "\"result\":{\"n\":42}"));
  assert_true(has(reply, "\"shard\":\"t1\""));
  free(reply);

  lu_store_t *reader = NULL;
  if (lu_nats_store_open(&reader, nats, &ro, err, sizeof err))
    fail_msg("%s", err);
  char rows[4096] = "";
  lu_query_t q = {.type = "TwiceCompleted"};
  assert_int_equal(lu_store_query(reader, &q, collect, rows), 0);
  assert_true(has(rows, "\"data\":{\"n\":42}"));

  lu_nats_serve_stats_t st1;
  assert_int_equal(lu_nats_serve_stats(s, &st1), 0);
  assert_int_equal(st1.exec_requests, 1);
  lu_metric_t mt[8];
  size_t nm = lu_nats_serve_metrics(s, mt, 8);
  assert_int_equal(nm, 4);
  assert_string_equal(mt[0].name, "lucent_bus_forwards_total");
  assert_string_equal(mt[3].name, "lucent_bus_forward_fallbacks_total");
  assert_int_equal(lu_nats_serve_metrics(s, mt, 1), 4); /* how many */

  /* Stopped: the counters stay, the metrics go, a second stop is a
   * no-op; a caller's smaller struct gets only what it holds. */
  lu_nats_serve_stop(s, 5000);
  lu_nats_serve_stop(s, 5000);
  lu_nats_serve_stats_t st2;
  assert_int_equal(lu_nats_serve_stats(s, &st2), 0);
  assert_int_equal(st2.exec_requests, 1);
  assert_true(st2.pulled >= st1.pulled);
  assert_int_equal(lu_nats_serve_metrics(s, mt, 8), 0);
  union {
    lu_nats_serve_stats_t s;
    unsigned char b[sizeof(lu_nats_serve_stats_t)];
  } u;
  memset(&u, 0xab, sizeof u);
  size_t part = offsetof(lu_nats_serve_stats_t, exec_forwarded);
  assert_int_equal(lu_nats_serve_stats_sized(s, &u.s, part), 0);
  assert_int_equal(u.s.exec_requests, 1);
  for (size_t i = part; i < sizeof u; i++) assert_int_equal(u.b[i], 0xab);
  lu_nats_serve_free(s);
  lu_manager_free(m);
  lu_store_close(reader);
  lu_registry_free(reg);
  lu_nats_close(nats);
  lu_test_nats_stop(&srv);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_null_arguments),
      cmocka_unit_test(test_unreachable),
      cmocka_unit_test(test_struct_sizes),
      cmocka_unit_test(test_serve),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
