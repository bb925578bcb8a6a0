/*
 * test_registry.c - the registry: metadata validation, plugin loading and
 * its failure paths (each must name the culprit and leave the registry as
 * it was), the candidate index and the JSON listing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

static lu_status_t noop(const lu_ctx_t *c, const cJSON *d, lu_out_t *o) {
  (void)c, (void)d, (void)o;
  return LU_OK;
}

static const lu_fn_t good_a = {.name = "Alpha", .impl = noop,
                               .events = "X, Y", .priority = 3};
static const lu_fn_t good_b = {.name = "Beta", .impl = noop, .events = "X",
                               LU_HASH_BASED("user.id"), .priority = 8};
static const lu_fn_t good_c = {.name = "Gamma", .impl = noop, .events = "X",
                               .priority = 8};

static lu_registry_t *reg_with(const lu_fn_t *f, int *rc) {
  lu_registry_t *r;
  assert_int_equal(lu_registry_new(&r), 0);
  const lu_fn_t *fns[] = {f};
  *rc = lu_registry_add(r, fns, 1, "unit");
  return r;
}

static void expect_bad(const lu_fn_t *f, int want, const char *msg) {
  int rc;
  lu_registry_t *r = reg_with(f, &rc);
  assert_int_equal(rc, want);
  assert_int_equal(lu_registry_count(r), 0);
  assert_non_null(strstr(lu_registry_errmsg(r), msg));
  lu_registry_free(r);
}

static void test_bad_metadata(void **state) {
  (void)state;
  lu_fn_t f = {.name = "Bad", .impl = noop, .events = "E"};
  f.strategy = "zigzag";
  expect_bad(&f, LU_EMETA, "function Bad: unknown sharding strategy 'zigzag'");
  f.strategy = "hash_based";
  expect_bad(&f, LU_EMETA, "function Bad: strategy hash_based needs a field");
  f.key = "";
  expect_bad(&f, LU_EMETA, "needs a field path");
  f.key = "a..b";
  expect_bad(&f, LU_EMETA, "needs a field path");
  f.strategy = "sticky_session", f.key = NULL;
  expect_bad(&f, LU_EMETA, "sticky_session needs a field path");
  f.strategy = "round_robin", f.key = "x";
  expect_bad(&f, LU_EMETA, "takes no field path");
  f.key = NULL, f.events = " , ";
  expect_bad(&f, LU_EMETA, "function Bad: handles no event type");
  f.events = "E", f.priority = 11;
  expect_bad(&f, LU_EMETA, "priority 11");
  f.priority = 0, f.load_bound = 0.5, f.strategy = "hash_based", f.key = "k";
  expect_bad(&f, LU_EMETA, "load_bound");
  f.load_bound = 0, f.impl = NULL;
  expect_bad(&f, LU_EMETA, "no implementation");
  f.impl = noop, f.name = "has space";
  expect_bad(&f, LU_EMETA, "invalid name");
}

static void test_duplicates_leave_registry_unchanged(void **state) {
  (void)state;
  lu_registry_t *r;
  lu_registry_new(&r);
  const lu_fn_t *a[] = {&good_a};
  assert_int_equal(lu_registry_add(r, a, 1, "one"), 0);
  const lu_fn_t *two[] = {&good_b, &good_a};
  assert_int_equal(lu_registry_add(r, two, 2, "two"), LU_EEXIST);
  assert_non_null(strstr(lu_registry_errmsg(r), "duplicate function name Alpha"));
  assert_int_equal(lu_registry_count(r), 1); /* Beta not added either */
  const lu_fn_t *same[] = {&good_b, &good_b};
  assert_int_equal(lu_registry_add(r, same, 2, "same"), LU_EEXIST);
  assert_int_equal(lu_registry_count(r), 1);
  lu_registry_free(r);
}

static void test_candidates_sorted(void **state) {
  (void)state;
  lu_registry_t *r;
  lu_registry_new(&r);
  const lu_fn_t *fns[] = {&good_c, &good_a, &good_b};
  assert_int_equal(lu_registry_add(r, fns, 3, NULL), 0);
  assert_string_equal(lu_registry_at(r, 0)->name, "Alpha"); /* name order */
  size_t n;
  const lu_fnent_t *const *c = lu__registry_candidates(r, "X", &n);
  assert_int_equal(n, 3);
  /* priority desc, then name: Beta(8) Gamma(8) Alpha(3) */
  assert_string_equal(c[0]->fn->name, "Beta");
  assert_string_equal(c[1]->fn->name, "Gamma");
  assert_string_equal(c[2]->fn->name, "Alpha");
  c = lu__registry_candidates(r, "Y", &n);
  assert_int_equal(n, 1);
  assert_null(lu__registry_candidates(r, "Z", &n));
  assert_int_equal(n, 0);
  assert_int_equal(lu__registry_entry(r, 0)->priority, 3);
  char *js = lu_registry_json(r);
  cJSON *j = cJSON_Parse(js);
  assert_int_equal(cJSON_GetArraySize(j), 3);
  const cJSON *b = cJSON_GetArrayItem(j, 1);
  assert_string_equal(cJSON_GetObjectItem(b, "name")->valuestring, "Beta");
  const cJSON *st = cJSON_GetObjectItem(b, "strategy");
  assert_string_equal(cJSON_GetObjectItem(st, "type")->valuestring,
                      "hash_based");
  assert_string_equal(cJSON_GetObjectItem(st, "field")->valuestring,
                      "user.id");
  cJSON_Delete(j);
  free(js);
  lu_registry_free(r);
}

static void load_fails(const char *env, int want, const char *msg) {
  const char *path = getenv(env);
  if (!path) {
    print_message("skipping: %s not set\n", env);
    return;
  }
  lu_registry_t *r;
  lu_registry_new(&r);
  assert_int_equal(lu_registry_load_plugin(r, path), want);
  assert_int_equal(lu_registry_count(r), 0);
  assert_non_null(strstr(lu_registry_errmsg(r), msg));
  lu_registry_free(r);
}

static void test_plugins(void **state) {
  (void)state;
  const char *good = getenv("LUCENT_TEST_PLUGIN");
  if (good) {
    lu_registry_t *r;
    lu_registry_new(&r);
    assert_int_equal(lu_registry_load_plugin(r, good), 0);
    assert_int_equal(lu_registry_count(r), 7);
    /* Loading the same plugin twice is a duplicate, and changes nothing. */
    assert_int_equal(lu_registry_load_plugin(r, good), LU_EEXIST);
    assert_int_equal(lu_registry_count(r), 7);
    lu_registry_free(r);
  }
  load_fails("BAD_DUP", LU_EEXIST, "duplicate function name Twice");
  load_fails("BAD_STRATEGY", LU_EMETA, "unknown sharding strategy 'random_walk'");
  load_fails("BAD_PATH", LU_EMETA, "function Hashless");
  load_fails("NO_SYMBOL", LU_EPLUGIN, "lu_plugin_functions");
  load_fails("OLD_ABI", LU_EPLUGIN, "built for lucent plugin ABI 1, this");
  char want[96];
  snprintf(want, sizeof want, "built against cJSON %d.x, this lucent uses "
           "cJSON %d.x", CJSON_VERSION_MAJOR + 1, CJSON_VERSION_MAJOR);
  load_fails("OTHER_CJSON", LU_EPLUGIN, want);
  lu_registry_t *r;
  lu_registry_new(&r);
  assert_int_equal(lu_registry_load_plugin(r, "/no/such/plugin.so"),
                   LU_ENOENT);
  assert_non_null(strstr(lu_registry_errmsg(r), "/no/such/plugin.so"));
  /* A file that is not a shared object. */
  assert_int_equal(lu_registry_load_plugin(r, "/etc/passwd"), LU_EPLUGIN);
  assert_non_null(strstr(lu_registry_errmsg(r), "cannot load"));
  lu_registry_free(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_metadata),
      cmocka_unit_test(test_duplicates_leave_registry_unchanged),
      cmocka_unit_test(test_candidates_sorted),
      cmocka_unit_test(test_plugins),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
