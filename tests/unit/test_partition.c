/*
 * test_partition.c - intake partitions keep one stream's events together:
 * the partition comes from the parsed subject (else the id), never from a
 * "subject" key that happens to sit inside the data.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_same_subject_same_partition),
      cmocka_unit_test(test_id_and_bytes_fallbacks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
