/*
 * fuzz_exec.c - the exec request path: what exec_nats.c does with a
 * request before it runs or forwards it (exec_request): the event from
 * headers and payload (lu__msg_event: structured or binary mode), parsed
 * (lu_event_parse), then routed (lu_manager_route) on a manager whose view
 * has three other shards and whose functions use every strategy, so keys
 * are read out of the data by their paths.  Input: "name: value" header
 * lines, an empty line, the payload (fuzz_split.h).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_split.h"
#include "lucent/bus.h"
#include "lucent/lucent.h"
#include "request.h"

LU_FUNCTION(ByCustomer, .events = "Order", LU_HASH_BASED("customer.id")) {
  (void)ctx, (void)data, (void)out;
  return LU_OK;
}
LU_FUNCTION(BySession, .events = "Click",
            LU_STICKY_SESSION("session.items.0", 1000)) {
  (void)ctx, (void)data, (void)out;
  return LU_OK;
}
LU_FUNCTION(Anywhere, .events = "Ping", LU_ROUND_ROBIN) {
  (void)ctx, (void)data, (void)out;
  return LU_OK;
}
LU_FUNCTION(Least, .events = "Load", LU_LOAD_BALANCED) {
  (void)ctx, (void)data, (void)out;
  return LU_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static lu_manager_t *mgr;

static void fwd(void *ud, const lu_fwd_t *f, lu_done_t done) {
  (void)ud, (void)f;
  if (done.fn) done.fn(done.ctx, NULL, 1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  lu_log_set_level(LU_LOG_OFF);
  lu_registry_t *reg;
  const lu_fn_t *const *fns;
  size_t n = lu_fns_here(&fns);
  char err[256];
  const char *ids[] = {"me"};
  lu_config_t cfg;
  lu_config_init(&cfg);
  cfg.shard_ids = ids;
  cfg.threads = 1;
  if (lu_registry_new(&reg) || lu_registry_add(reg, fns, n, "fuzz") ||
      lu_manager_new(&mgr, &cfg, reg, err, sizeof err))
    abort();
  lu_bus_t bus = {.forward = fwd};
  lu_manager_set_bus(mgr, &bus);
  const char *view[] = {"a", "b", "c"};
  lu_manager_set_view(mgr, view, 3);
  return 0; /* the manager and registry live as long as the process */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_msg_t m;
  if (fz_split(&m, data, size)) return 0;
  const char *json;
  size_t len;
  lu_buf_t own = {0};
  char why[320];
  int rc = lu__msg_event(m.h, m.n, m.payload, m.plen, &json, &len, &own, why,
                         sizeof why);
  if (rc != 0 && rc != LU_EINVAL) abort();
  lu_event_t *ev = NULL;
  if (rc == 0 && lu_event_parse(&ev, json, len, why, sizeof why) == 0) {
    char target[LU_SHARD_ID_MAX];
    int local = 0;
    lu_route_t r = lu_manager_route(mgr, ev, target, sizeof target, &local,
                                    why, sizeof why);
    if (r == LU_ROUTE_OK && !lu_shard_id_valid(target)) abort();
    (void)lu_registry_router(lu_manager_registry(mgr), lu_event_type(ev));
  }
  lu_event_free(ev);
  lu__buf_free(&own);
  fz_free(&m);
  return 0;
}
