/*
 * test_partition.c - intake partitions keep one stream's events together:
 * the partition comes from the parsed subject (else the id), never from a
 * "subject" key that happens to sit inside the data; and it is protocol
 * v1's FNV-1a 64 mod 16, with the test vectors of docs/protocol.md (the JS
 * client asserts the same ones: examples/clients/js/test.js).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "membership.h"

static unsigned part(const char *json) {
  lu_event_t *ev = NULL;
  lu_event_parse(&ev, json, strlen(json), NULL, 0);
  unsigned p = lu__intake_partition(ev, json, strlen(json));
  lu_event_free(ev);
  return p;
}

static void test_same_subject_same_partition(void **state) {
  (void)state;
  unsigned seen[LU_INTAKE_PARTITIONS] = {0};
  for (int i = 0; i < 200; i++) {
    char a[256], b[256];
    /* Same stream, different ids and data, and a decoy "subject" inside
     * the data that comes before the real one in the text. */
    snprintf(a, sizeof a,
             "{\"data\":{\"subject\":\"decoy-%d\"},\"specversion\":\"1.0\","
             "\"id\":\"a%d\",\"type\":\"T\",\"source\":\"s\","
             "\"subject\":\"stream-%d\"}", i, i, i);
    snprintf(b, sizeof b,
             "{\"specversion\":\"1.0\",\"id\":\"b%d\",\"type\":\"U\","
             "\"source\":\"s\",\"subject\":\"stream-%d\",\"data\":{}}", i, i);
    unsigned pa = part(a), pb = part(b);
    assert_true(pa < LU_INTAKE_PARTITIONS);
    assert_int_equal(pa, pb);
    seen[pa]++;
  }
  /* 200 streams spread over every partition. */
  for (int p = 0; p < LU_INTAKE_PARTITIONS; p++) assert_true(seen[p] > 0);
}

static void test_id_and_bytes_fallbacks(void **state) {
  (void)state;
  const char *noid = "{\"specversion\":\"1.0\",\"id\":\"x1\",\"type\":\"T\","
                     "\"source\":\"s\"}";
  const char *same = "{\"id\":\"x1\",\"type\":\"V\",\"source\":\"z\"}";
  assert_int_equal(part(noid), part(same)); /* no subject: by id */
  const char *bad = "{not json";
  assert_int_equal(lu__intake_partition(NULL, bad, strlen(bad)),
                   lu__intake_partition(NULL, bad, strlen(bad)));
  assert_true(lu__intake_partition(NULL, bad, strlen(bad)) <
              LU_INTAKE_PARTITIONS);
}

/* docs/protocol.md, "Partitions": key bytes, FNV-1a 64, key mod 16. */
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
    if (h != vectors[i].hash || h % LU_INTAKE_PARTITIONS != vectors[i].p)
      fail_msg("vector %zu: %016llx (p %u), want %016llx (p %u)", i,
               (unsigned long long)h, (unsigned)(h % LU_INTAKE_PARTITIONS),
               (unsigned long long)vectors[i].hash, vectors[i].p);
    /* As an event's subject, as its id (no subject), as raw bytes. */
    char *ev = malloc(strlen(k) + 128);
    assert_non_null(ev);
    if (*k) {
      sprintf(ev, "{\"id\":\"i\",\"type\":\"T\",\"source\":\"s\","
                  "\"subject\":\"%s\"}", k);
      assert_int_equal(part(ev), vectors[i].p);
      sprintf(ev, "{\"id\":\"%s\",\"type\":\"T\",\"source\":\"s\"}", k);
      assert_int_equal(part(ev), vectors[i].p);
    }
    assert_int_equal(lu__intake_partition(NULL, k, strlen(k)), vectors[i].p);
    free(ev);
  }
  free(longkey);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_same_subject_same_partition),
      cmocka_unit_test(test_id_and_bytes_fallbacks),
      cmocka_unit_test(test_fnv1a_vectors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
