/*
 * test_abi.c - what a program compiled against one lucent relies on when
 * it runs with another: the version macros and lu_version(), and a
 * lu_config_t of another size (lucent.h, "How lu_config_t grows").
 * Linked with the shared library and its public headers only, as an
 * embedder is.  Under AddressSanitizer a read or write past a smaller
 * caller's struct fails the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lucent/lucent.h"

static void test_version(void **state) {
  (void)state;
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", LU_VERSION_MAJOR, LU_VERSION_MINOR,
           LU_VERSION_PATCH);
  assert_string_equal(LU_VERSION, want);
  assert_string_equal(lu_version_string(), LU_VERSION);
  assert_int_equal(lu_version(), LU_VERSION_NUMBER);
  assert_int_equal(LU_VERSION_NUMBER, LU_VERSION_MAJOR * 1000000u +
                                          LU_VERSION_MINOR * 1000u +
                                          LU_VERSION_PATCH);
#if LU_VERSION_NUMBER < 2000
#error "LU_VERSION_NUMBER must be usable in #if"
#endif
}

LU_FUNCTION(Echo, .events = "Ping", .doc = "returns its data")
{
  lu_out_result(out, data ? cJSON_Duplicate(data, 1) : cJSON_CreateNull());
  return LU_OK;
}

static lu_registry_t *registry(void) {
  lu_registry_t *reg = NULL;
  const lu_fn_t *const *fns;
  size_t n = lu_fns_here(&fns);
  assert_int_equal(lu_registry_new(&reg), 0);
  assert_int_equal(lu_registry_add(reg, fns, n, "test_abi"), 0);
  return reg;
}

static int outcomes_seen;
static void count_outcome(void *ud, const lu_outcome_t *o) {
  (void)ud, (void)o;
  outcomes_seen++;
}

/* Runs n Ping events through m, drains, and returns how many completed. */
static uint64_t run_pings(lu_manager_t *m, int n) {
  for (int i = 0; i < n; i++) {
    char line[160];
    int len = snprintf(line, sizeof line,
                       "{\"specversion\":\"1.0\",\"id\":\"p-%d\","
                       "\"type\":\"Ping\",\"source\":\"t\",\"data\":%d}",
                       i, i);
    assert_int_equal(lu_manager_submit_json(m, line, (size_t)len, 0), 0);
  }
  assert_int_equal(lu_manager_drain(m), 0);
  lu_count_t c;
  uint64_t in;
  lu_manager_counts(m, &c, &in);
  assert_int_equal(in, (uint64_t)n);
  return c.outcomes[LU_OUTCOME_COMPLETED];
}

static void test_config_init(void **state) {
  (void)state;
  lu_config_t cfg;
  memset(&cfg, 0xa5, sizeof cfg);
  lu_config_init(&cfg);
  assert_int_equal(cfg.struct_size, sizeof(lu_config_t));
  assert_int_equal(cfg.shards, 1);
  assert_string_equal(cfg.store, ":memory:");
  assert_null(cfg.on_outcome);
  assert_null(cfg.on_explain_ud);
  assert_int_equal(lu_config_init_sized(&cfg, sizeof cfg), 0);
  assert_int_equal(lu_config_init_sized(NULL, sizeof cfg), LU_EINVAL);
  assert_int_equal(lu_config_init_sized(&cfg, 1), LU_EINVAL);
}

/* A program compiled against headers whose lu_config_t ended after
 * `seed` (everything after it appended later): its struct is smaller,
 * and lucent must neither write nor read past it.  The fields it lacks
 * take their defaults: no outcome callback, a thread count of its own. */
typedef struct old_config_s {
  size_t struct_size;
  unsigned shards;
  const char *const *shard_ids;
  const char *store;
  lu_store_t *store_handle;
  size_t max_event_bytes;
  size_t queue_capacity;
  unsigned max_depth;
  double w_load, w_resources, w_priority, w_affinity;
  uint32_t shard_cpu_millis;
  uint32_t shard_memory_mb;
  unsigned breaker_failures;
  uint32_t breaker_cooldown_ms;
  size_t store_batch;
  uint64_t seed;
} old_config_t;

static void test_older_smaller_config(void **state) {
  (void)state;
  assert_int_equal(offsetof(old_config_t, seed),
                   offsetof(lu_config_t, seed));
  assert_true(sizeof(old_config_t) < sizeof(lu_config_t));
  /* On the heap, exactly its size, so that ASan sees any overrun. */
  old_config_t *old = malloc(sizeof *old);
  assert_non_null(old);
  assert_int_equal(
      lu_config_init_sized((lu_config_t *)old, sizeof *old), 0);
  assert_int_equal(old->struct_size, sizeof *old);
  assert_int_equal(old->shards, 1);
  assert_int_equal(old->queue_capacity, 1024);
  assert_int_equal(old->store_batch, 4096);
  old->shards = 3;
  old->seed = 7;

  lu_registry_t *reg = registry();
  lu_manager_t *m = NULL;
  char err[256] = "";
  assert_int_equal(
      lu_manager_new(&m, (const lu_config_t *)old, reg, err, sizeof err), 0);
  assert_int_equal(lu_manager_shard_count(m), 3);
  assert_int_equal(run_pings(m, 50), 50);
  lu_manager_free(m);

  /* A size that ends inside a field: that field is not read either. */
  lu_config_t cfg;
  lu_config_init(&cfg);
  cfg.shards = 2;
  cfg.on_outcome = count_outcome; /* beyond the size below: not seen */
  cfg.struct_size = offsetof(lu_config_t, on_outcome) + 1;
  outcomes_seen = 0;
  assert_int_equal(lu_manager_new(&m, &cfg, reg, err, sizeof err), 0);
  assert_int_equal(lu_manager_shard_count(m), 2);
  assert_int_equal(run_pings(m, 10), 10);
  lu_manager_free(m);
  assert_int_equal(outcomes_seen, 0);

  /* The full size: it is. */
  cfg.struct_size = sizeof cfg;
  assert_int_equal(lu_manager_new(&m, &cfg, reg, err, sizeof err), 0);
  assert_int_equal(run_pings(m, 10), 10);
  lu_manager_free(m);
  assert_int_equal(outcomes_seen, 10);
  lu_registry_free(reg);
  free(old);
}

static void test_unknown_sizes_refused(void **state) {
  (void)state;
  lu_registry_t *reg = registry();
  lu_manager_t *m = (lu_manager_t *)&m;
  char err[256];

  /* Newer headers than the library: a larger struct. */
  unsigned char big[sizeof(lu_config_t) + 16];
  memset(big, 0, sizeof big);
  assert_int_equal(lu_config_init_sized((lu_config_t *)big, sizeof big),
                   LU_EINVAL);
  assert_int_equal(lu_manager_new(&m, (lu_config_t *)big, reg, err,
                                  sizeof err),
                   LU_EINVAL);
  assert_null(m);
  assert_non_null(strstr(err, "newer headers"));

  /* Never initialised: struct_size 0.  The store it was given is still
   * closed (lu_manager_new owns it, even on error: ASan checks). */
  lu_config_t cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.shards = 2;
  char serr[128];
  assert_int_equal(lu_store_open(&cfg.store_handle, ":memory:", serr,
                                 sizeof serr),
                   0);
  assert_int_equal(lu_manager_new(&m, &cfg, reg, err, sizeof err),
                   LU_EINVAL);
  assert_non_null(strstr(err, "lu_config_init"));

  /* Too small to hold even the shard count. */
  lu_config_init(&cfg);
  cfg.struct_size = sizeof cfg.struct_size + 1;
  assert_int_equal(lu_manager_new(&m, &cfg, reg, err, sizeof err),
                   LU_EINVAL);
  assert_non_null(strstr(err, "too small"));

  /* NULL is all defaults. */
  assert_int_equal(lu_manager_new(&m, NULL, reg, err, sizeof err), 0);
  assert_int_equal(lu_manager_shard_count(m), 1);
  lu_manager_free(m);
  lu_registry_free(reg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_version),
      cmocka_unit_test(test_config_init),
      cmocka_unit_test(test_older_smaller_config),
      cmocka_unit_test(test_unknown_sizes_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
