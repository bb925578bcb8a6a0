/*
 * test_membership.c - the shard view over real NATS heartbeats
 * (membership.c) under churn: 5,000 distinct shard ids join (heartbeats
 * on lucent.hb.<id>) and leave ("leaving": true) in rounds of 50.  Each
 * must reach the manager's view, each must leave it, and the peer table
 * must stay small (it once kept every id it heard, up to 256, and then
 * ignored new shards for good).  Also the heartbeat parser's edges.
 * Skips (exit 77) without nats-server.
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

#include "lucent/lucent.h"
#include "membership.h"
#include "nats_internal.h"
#include "nats_server.h"

LU_FUNCTION(Noop, .events = "Noop", LU_ROUND_ROBIN) {
  (void)ctx, (void)data;
  lu_out_result(out, cJSON_CreateNull());
  return LU_OK;
}

static void test_hb_parse(void **state) {
  (void)state;
  lu_hb_t hb;
  const char *ok = "{\"id\":\"shard-a\",\"load\":12,\"seq\":4,\"leaving\":true}";
  assert_int_equal(lu__hb_parse(ok, strlen(ok), &hb), 0);
  assert_string_equal(hb.id, "shard-a");
  assert_int_equal(hb.load, 12);
  assert_true(hb.leaving);
  /* Not NUL-terminated: only len bytes are read. */
  char cut[] = "{\"id\":\"b\"}XXXX";
  assert_int_equal(lu__hb_parse(cut, 10, &hb), 0);
  assert_string_equal(hb.id, "b");
  assert_int_equal(hb.load, 0);
  assert_false(hb.leaving);
  const char *bad[] = {
      "", "{", "[]", "{\"id\":1}", "{\"id\":\"\"}", "{\"id\":\"a\\\"b\"}",
      "{\"id\":\"a.b\"}", "{\"id\":\"a b\"}",
      ("{\"id\":\"0123456789012345678901234567890123456789012345678901234567"
       "890123\"}"), /* 64 characters */
      "{\"load\":3}"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    if (lu__hb_parse(bad[i], strlen(bad[i]), &hb) != LU_EINVAL)
      fail_msg("accepted: %s", bad[i]);
  assert_int_equal(lu__hb_parse(NULL, 0, &hb), LU_EINVAL);
  const char *big = "{\"id\":\"a\",\"load\":1e300}";
  assert_int_equal(lu__hb_parse(big, strlen(big), &hb), 0);
  assert_true(hb.load == UINT64_MAX);
  const char *neg = "{\"id\":\"a\",\"load\":-5}";
  assert_int_equal(lu__hb_parse(neg, strlen(neg), &hb), 0);
  assert_int_equal(hb.load, 0);
}

#define ROUND 50
#define TOTAL 5000

static void beat(natsConnection *nc, const char *id, int leaving) {
  char subj[128], body[160];
  lu__fmt(subj, sizeof subj, "%s.%s", LU_SUBJ_HB, id);
  lu__fmt(body, sizeof body, "{\"id\":\"%s\",\"load\":1,\"seq\":0,"
          "\"leaving\":%s}", id, leaving ? "true" : "false");
  assert_int_equal(natsConnection_PublishString(nc, subj, body), NATS_OK);
}

static void test_churn_5000_ids(void **state) {
  (void)state;
  lu_log_set_level(LU_LOG_WARN); /* 200 view changes */
  lu_test_nats_t srv;
  assert_int_equal(lu_test_nats_start(&srv, NULL), 0);
  natsConnection *nc = lu_test_nats_connect(srv.url);
  natsConnection *peers = lu_test_nats_connect(srv.url);
  lu_registry_t *reg;
  const lu_fn_t *const *fns;
  size_t nf = lu_fns_here(&fns);
  assert_int_equal(lu_registry_new(&reg), 0);
  assert_int_equal(lu_registry_add(reg, fns, nf, "test"), 0);
  const char *self[] = {"self"};
  lu_config_t cfg;
  lu_config_init(&cfg);
  cfg.shard_ids = self;
  lu_manager_t *m = NULL;
  char err[256];
  assert_int_equal(lu_manager_new(&m, &cfg, reg, err, sizeof err), 0);
  lu_membership_t *ms = NULL;
  /* 50 ms heartbeats: a silent peer is out after 300 ms. */
  assert_int_equal(lu__membership_start(&ms, nc, m, "self", NULL, 50, NULL,
                                        NULL, err, sizeof err), 0);
  unsigned max_peers = 0;
  char ids[ROUND][LU_SHARD_ID_MAX];
  for (int r = 0; r < TOTAL / ROUND; r++) {
    for (int i = 0; i < ROUND; i++)
      lu__fmt(ids[i], sizeof ids[i], "pod-%d", r * ROUND + i);
    /* Join: beat until all are in the view (a peer beats every 50 ms
     * while it lives). */
    int all = 0;
    for (int t = 0; t < 400 && !all; t++) {
      for (int i = 0; i < ROUND; i++) beat(peers, ids[i], 0);
      natsConnection_Flush(peers);
      lu_test_nats_sleep_ms(t < 4 ? 5 : 25);
      all = 1;
      for (int i = 0; i < ROUND && all; i++)
        all = lu_manager_in_view(m, ids[i]);
    }
    if (!all) fail_msg("round %d: a new shard never reached the view", r);
    unsigned p = lu__membership_peers(ms);
    if (p > max_peers) max_peers = p;
    /* Leave: a clean stop says so; they are out at once. */
    for (int i = 0; i < ROUND; i++) beat(peers, ids[i], 1);
    natsConnection_Flush(peers);
    int gone = 0;
    for (int t = 0; t < 400 && !gone; t++) {
      gone = 1;
      for (int i = 0; i < ROUND && gone; i++)
        gone = !lu_manager_in_view(m, ids[i]);
      if (!gone) lu_test_nats_sleep_ms(5);
    }
    if (!gone) fail_msg("round %d: a shard that left stayed in the view", r);
  }
  /* The table holds the live shards and newcomers: one round's worth,
   * never the 5,000 heard over the run. */
  if (max_peers > 2 * ROUND) fail_msg("peer table grew to %u", max_peers);
  /* The last leavers go at the next refresh (a condition, not a pause). */
  for (int t = 0; t < 400 && lu__membership_peers(ms) > 0; t++)
    lu_test_nats_sleep_ms(5);
  assert_int_equal(lu__membership_peers(ms), 0);
  lu__membership_stop(ms);
  lu_manager_free(m);
  lu_registry_free(reg);
  natsConnection_Destroy(peers);
  natsConnection_Destroy(nc);
  lu_test_nats_stop(&srv);
}

int main(void) {
  const struct CMUnitTest parse[] = {cmocka_unit_test(test_hb_parse)};
  int rc = cmocka_run_group_tests(parse, NULL, NULL);
  char bin[4096];
  if (lu_test_nats_find(bin, sizeof bin) != 0) {
    printf("skip: no nats-server for the churn test\n");
    return rc;
  }
  const struct CMUnitTest churn[] = {cmocka_unit_test(test_churn_5000_ids)};
  return rc | cmocka_run_group_tests(churn, NULL, NULL);
}
