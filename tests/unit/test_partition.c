/*
 * test_partition.c - intake partitions (docs/protocol.md, section 6, v2):
 *  - a type whose function routes by a key partitions by that key's text,
 *    whatever the subject, so a key's events share one partition; numbers,
 *    booleans and strings become text as the router reads them;
 *  - other types, a missing key, an unknown type: the parsed subject (else
 *    the id), never a "subject" member inside the data;
 *  - FNV-1a 64 mod P, with the test vectors of the protocol for P = 16
 *    and 64 (the JS client asserts the same: examples/clients/js/test.js);
 *  - P read back from LUCENT_INTAKE's subjects, and refused when they are
 *    not lucent.intake.0..P-1;
 *  - the routes table: built from a registry, parsed, refused when bad.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "intake_layout.h"
#include "membership.h"

static const char ROUTES[] =
    "{\"version\":1,\"types\":{"
    "\"OrderValidated\":{\"strategy\":\"hash_based\",\"key\":\"items.0.sku\","
    "\"function\":\"ReserveInventory\"},"
    "\"Payment\":{\"strategy\":\"sticky_session\",\"key\":\"customer.id\","
    "\"function\":\"Pay\"},"
    "\"OrderPlaced\":{\"strategy\":\"round_robin\",\"function\":\"V\"}}}";

static lu_routes_t *routes(void) {
  lu_routes_t *r = NULL;
  char err[128];
  assert_int_equal(lu__routes_parse(&r, ROUTES, sizeof ROUTES - 1, err,
                                    sizeof err), 0);
  return r;
}

static unsigned part(const lu_routes_t *r, unsigned P, const char *json) {
  lu_event_t *ev = NULL;
  lu_event_parse(&ev, json, strlen(json), NULL, 0);
  unsigned p = lu__intake_partition(r, P, ev, json, strlen(json));
  lu_event_free(ev);
  return p;
}

static void test_same_subject_same_partition(void **state) {
  (void)state;
  unsigned seen[64] = {0};
  lu_routes_t *r = routes();
  for (int i = 0; i < 400; i++) {
    char a[256], b[256];
    /* Same stream, different ids and data, and a decoy "subject" inside
     * the data that comes before the real one in the text. */
    snprintf(a, sizeof a,
             "{\"data\":{\"subject\":\"decoy-%d\"},\"specversion\":\"1.0\","
             "\"id\":\"a%d\",\"type\":\"T\",\"source\":\"s\","
             "\"subject\":\"stream-%d\"}", i, i, i);
    snprintf(b, sizeof b,
             "{\"specversion\":\"1.0\",\"id\":\"b%d\",\"type\":\"OrderPlaced\","
             "\"source\":\"s\",\"subject\":\"stream-%d\",\"data\":{}}", i, i);
    unsigned pa = part(r, 64, a), pb = part(r, 64, b);
    assert_true(pa < 64);
    assert_int_equal(pa, pb);
    assert_int_equal(part(NULL, 64, a), pa); /* no routes: the same */
    seen[pa]++;
  }
  /* 400 streams spread over every partition. */
  for (int p = 0; p < 64; p++) assert_true(seen[p] > 0);
  lu__routes_free(r);
}

/* A keyed type: one partition per key whatever the subjects. */
static void test_key_wins_over_subject(void **state) {
  (void)state;
  lu_routes_t *r = routes();
  for (int k = 0; k < 50; k++) {
    unsigned first = 0;
    for (int i = 0; i < 20; i++) {
      char e[320];
      snprintf(e, sizeof e,
               "{\"id\":\"e%d-%d\",\"type\":\"OrderValidated\",\"source\":\"s\","
               "\"subject\":\"s-%d\",\"data\":{\"items\":[{\"sku\":\"SKU-%d\"}]}}",
               k, i, k * 31 + i * 7, k);
      unsigned p = part(r, 64, e);
      if (!i) first = p;
      assert_int_equal(p, first);
    }
    char sku[32];
    snprintf(sku, sizeof sku, "SKU-%d", k);
    assert_int_equal(first, lu__fnv1a64(sku, strlen(sku)) % 64);
  }
  lu__routes_free(r);
}

/* docs/protocol.md 6.2: events, their partition key, p for P = 16 and 64. */
static const struct {
  const char *event;
  lu_pkey_kind_t kind;
  const char *key;
  unsigned p16, p64;
  int missing;
} events[] = {
    {"{\"id\":\"e-1\",\"type\":\"OrderValidated\",\"source\":\"/s\","
     "\"subject\":\"order-1\",\"data\":{\"items\":[{\"sku\":\"SKU-1\"}]}}",
     LU_PKEY_ROUTE, "SKU-1", 12, 44, 0},
    {"{\"id\":\"e-2\",\"type\":\"Payment\",\"source\":\"/s\","
     "\"subject\":\"order-1\",\"data\":{\"customer\":{\"id\":\"c-0042\"}}}",
     LU_PKEY_ROUTE, "c-0042", 3, 51, 0},
    {"{\"id\":\"e-3\",\"type\":\"Payment\",\"source\":\"/s\","
     "\"data\":{\"customer\":{\"id\":42}}}",
     LU_PKEY_ROUTE, "42", 3, 35, 0},
    {"{\"id\":\"e-4\",\"type\":\"Payment\",\"source\":\"/s\","
     "\"data\":{\"customer\":{\"id\":42.0}}}",
     LU_PKEY_ROUTE, "42", 3, 35, 0},
    {"{\"id\":\"e-5\",\"type\":\"Payment\",\"source\":\"/s\","
     "\"data\":{\"customer\":{\"id\":2.5}}}",
     LU_PKEY_ROUTE, "2.5", 12, 28, 0},
    {"{\"id\":\"e-6\",\"type\":\"Payment\",\"source\":\"/s\","
     "\"data\":{\"customer\":{\"id\":1e21}}}",
     LU_PKEY_ROUTE, "1e+21", 5, 21, 0},
    {"{\"id\":\"e-7\",\"type\":\"Payment\",\"source\":\"/s\","
     "\"data\":{\"customer\":{\"id\":0.1}}}",
     LU_PKEY_ROUTE, "0.10000000000000001", 9, 25, 0},
    {"{\"id\":\"e-8\",\"type\":\"Payment\",\"source\":\"/s\","
     "\"data\":{\"customer\":{\"id\":-0.0}}}",
     LU_PKEY_ROUTE, "0", 15, 47, 0},
    {"{\"id\":\"e-9\",\"type\":\"Payment\",\"source\":\"/s\","
     "\"data\":{\"customer\":{\"id\":true}}}",
     LU_PKEY_ROUTE, "true", 5, 37, 0},
    {"{\"id\":\"e-10\",\"type\":\"Payment\",\"source\":\"/s\","
     "\"data\":{\"customer\":{\"id\":-7}}}",
     LU_PKEY_ROUTE, "-7", 13, 29, 0},
    /* The key is missing (or not a scalar): the subject, else the id. */
    {"{\"id\":\"e-11\",\"type\":\"Payment\",\"source\":\"/s\","
     "\"subject\":\"order-1\",\"data\":{\"customer\":{}}}",
     LU_PKEY_SUBJECT, "order-1", 13, 45, 1},
    {"{\"id\":\"e-9\",\"type\":\"Payment\",\"source\":\"/s\","
     "\"data\":{\"customer\":{\"id\":null}}}",
     LU_PKEY_ID, "e-9", 10, 10, 1},
    /* A type without a key, and a type the table does not know. */
    {"{\"id\":\"e-13\",\"type\":\"OrderPlaced\",\"source\":\"/s\","
     "\"subject\":\"order-1\",\"data\":{\"customer\":{\"id\":\"c\"}}}",
     LU_PKEY_SUBJECT, "order-1", 13, 45, 0},
    {"{\"id\":\"e-9\",\"type\":\"Nope\",\"source\":\"/s\","
     "\"data\":{\"items\":[{\"sku\":\"SKU-1\"}]}}",
     LU_PKEY_ID, "e-9", 10, 10, 0},
};

static void test_v2_vectors(void **state) {
  (void)state;
  lu_routes_t *r = routes();
  for (size_t i = 0; i < sizeof events / sizeof *events; i++) {
    const char *j = events[i].event;
    lu_event_t *ev = NULL;
    char why[256];
    if (lu_event_parse(&ev, j, strlen(j), why, sizeof why))
      fail_msg("event %zu: %s", i, why);
    lu_pkey_t k;
    lu__intake_key(r, ev, j, strlen(j), &k);
    if (k.kind != events[i].kind || k.len != strlen(events[i].key) ||
        memcmp(k.text, events[i].key, k.len) ||
        k.key_missing != events[i].missing)
      fail_msg("event %zu: key %d '%.*s' missing %d, want %d '%s' %d", i,
               (int)k.kind, (int)k.len, k.text, k.key_missing,
               (int)events[i].kind, events[i].key, events[i].missing);
    assert_int_equal(lu__intake_partition(r, 16, ev, j, strlen(j)),
                     events[i].p16);
    assert_int_equal(lu__intake_partition(r, 64, ev, j, strlen(j)),
                     events[i].p64);
    lu_event_free(ev);
  }
  lu__routes_free(r);
}

static void test_id_and_bytes_fallbacks(void **state) {
  (void)state;
  const char *noid = "{\"specversion\":\"1.0\",\"id\":\"x1\",\"type\":\"T\","
                     "\"source\":\"s\"}";
  const char *same = "{\"id\":\"x1\",\"type\":\"V\",\"source\":\"z\"}";
  assert_int_equal(part(NULL, 16, noid), part(NULL, 16, same)); /* by id */
  const char *bad = "{not json";
  lu_pkey_t k;
  lu__intake_key(NULL, NULL, bad, strlen(bad), &k);
  assert_int_equal(k.kind, LU_PKEY_BYTES);
  assert_int_equal(lu__intake_partition(NULL, 16, NULL, bad, strlen(bad)),
                   lu__fnv1a64(bad, strlen(bad)) % 16);
  /* P = 1: everything in partition 0. */
  assert_int_equal(part(NULL, 1, noid), 0);
}

/* Protocol v1's vectors: key bytes, FNV-1a 64, key mod 16 (and 64). */
static const struct {
  const char *key; /* NULL: 1000 x 'x' */
  uint64_t hash;
  unsigned p;
} vectors[] = {
    {"", 0xcbf29ce484222325ull, 5},
    {"a", 0xaf63dc4c8601ec8cull, 12},
    {"foobar", 0x85944171f73967e8ull, 8},
    {"order-1", 0xdee4809f34bee86dull, 13},
    {"order-42", 0x7d1deb86a05662d4ull, 4},
    {"customer/c-0001", 0x9e9f1a500f3f8ecdull, 13},
    {"caf\xc3\xa9", 0x48e8823acfa40d89ull, 9},               /* café */
    {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", 0xee9ee2b5c854ef87ull, 7}, /* 日本語 */
    {"\xf0\x9f\x98\x80", 0xfeff073875020288ull, 8},          /* U+1F600 */
    {"The quick brown fox jumps over the lazy dog", 0xf3f9b7f5e7e47110ull, 0},
    {NULL, 0xe1add1d93134d2c5ull, 5},
};

static void test_fnv1a_vectors(void **state) {
  (void)state;
  char *longkey = malloc(1001);
  assert_non_null(longkey);
  memset(longkey, 'x', 1000);
  longkey[1000] = 0;
  for (size_t i = 0; i < sizeof vectors / sizeof *vectors; i++) {
    const char *k = vectors[i].key ? vectors[i].key : longkey;
    uint64_t h = lu__fnv1a64(k, strlen(k));
    if (h != vectors[i].hash || h % 16 != vectors[i].p)
      fail_msg("vector %zu: %016llx (p %u), want %016llx (p %u)", i,
               (unsigned long long)h, (unsigned)(h % 16),
               (unsigned long long)vectors[i].hash, vectors[i].p);
    /* As an event's subject, as its id (no subject), as raw bytes. */
    char *ev = malloc(strlen(k) + 128);
    assert_non_null(ev);
    if (*k) {
      sprintf(ev, "{\"id\":\"i\",\"type\":\"T\",\"source\":\"s\","
                  "\"subject\":\"%s\"}", k);
      assert_int_equal(part(NULL, 16, ev), vectors[i].p);
      assert_int_equal(part(NULL, 64, ev), h % 64);
      sprintf(ev, "{\"id\":\"%s\",\"type\":\"T\",\"source\":\"s\"}", k);
      assert_int_equal(part(NULL, 16, ev), vectors[i].p);
    }
    assert_int_equal(lu__intake_partition(NULL, 16, NULL, k, strlen(k)),
                     vectors[i].p);
    free(ev);
  }
  free(longkey);
}

static void test_subjects(void **state) {
  (void)state;
  unsigned P = 0;
  const char *four[] = {"lucent.intake.2", "lucent.intake.0",
                        "lucent.intake.3", "lucent.intake.1"};
  assert_int_equal(lu__intake_subjects_parse(four, 4, &P), 0);
  assert_int_equal(P, 4);
  const char *v1[] = {"lucent.intake.>"};
  assert_int_equal(lu__intake_subjects_parse(v1, 1, &P), 1);
  assert_int_equal(P, 16);
  const char *gap[] = {"lucent.intake.0", "lucent.intake.2"};
  assert_int_equal(lu__intake_subjects_parse(gap, 2, &P), -1);
  const char *dup[] = {"lucent.intake.0", "lucent.intake.0"};
  assert_int_equal(lu__intake_subjects_parse(dup, 2, &P), -1);
  const char *lead[] = {"lucent.intake.01"};
  assert_int_equal(lu__intake_subjects_parse(lead, 1, &P), -1);
  const char *other[] = {"orders.>"};
  assert_int_equal(lu__intake_subjects_parse(other, 1, &P), -1);
  const char *deep[] = {"lucent.intake.0.x"};
  assert_int_equal(lu__intake_subjects_parse(deep, 1, &P), -1);
  assert_int_equal(lu__intake_subjects_parse(four, 0, &P), -1);
}

static void test_routes_table(void **state) {
  (void)state;
  lu_routes_t *r = NULL;
  char err[256];
  /* Bad documents are refused with a reason. */
  const char *bad[] = {"", "[]", "{\"version\":2,\"types\":{}}",
                       "{\"version\":1}", "{\"version\":1,\"types\":[]}"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    err[0] = 0;
    assert_int_equal(lu__routes_parse(&r, bad[i], strlen(bad[i]), err,
                                      sizeof err), LU_EINVAL);
    assert_null(r);
    assert_non_null(strstr(err, "not a version 1 table"));
  }
  /* From a registry: the orders example's routers. */
  const char *plugin = getenv("LUCENT_TEST_PLUGIN");
  if (!plugin) skip();
  lu_registry_t *reg = NULL;
  assert_int_equal(lu_registry_new(&reg), 0);
  assert_int_equal(lu_registry_load_plugin(reg, plugin), 0);
  assert_int_equal(lu__routes_new(&r), 0);
  unsigned changed = 0;
  assert_int_equal(lu__routes_add_registry(r, reg, &changed), 0);
  assert_true(changed >= 6);
  assert_string_equal(lu__routes_key(r, "OrderValidated"), "items.0.sku");
  assert_string_equal(lu__routes_key(r, "FraudScored"), "customer.id");
  assert_string_equal(lu__routes_key(r, "CustomerUpdated"), "customer.id");
  assert_null(lu__routes_key(r, "OrderPlaced"));       /* round_robin */
  assert_null(lu__routes_key(r, "InventoryReserved")); /* its router is the
                                                         * load_balanced model */
  assert_null(lu__routes_key(r, "Nope"));
  assert_int_equal(lu__routes_add_registry(r, reg, &changed), 0);
  assert_int_equal(changed, 0); /* the same registry changes nothing */
  /* The document reads back as the same table. */
  char *doc = lu__routes_json(r);
  assert_non_null(doc);
  lu_routes_t *back = NULL;
  assert_int_equal(lu__routes_parse(&back, doc, strlen(doc), err, sizeof err),
                   0);
  assert_int_equal(lu__routes_count(back), lu__routes_count(r));
  assert_string_equal(lu__routes_key(back, "OrderValidated"), "items.0.sku");
  free(doc);
  lu__routes_free(back);
  lu__routes_free(r);
  lu_registry_free(reg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_same_subject_same_partition),
      cmocka_unit_test(test_key_wins_over_subject),
      cmocka_unit_test(test_v2_vectors),
      cmocka_unit_test(test_id_and_bytes_fallbacks),
      cmocka_unit_test(test_fnv1a_vectors),
      cmocka_unit_test(test_subjects),
      cmocka_unit_test(test_routes_table),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
