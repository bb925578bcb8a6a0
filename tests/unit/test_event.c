/*
 * test_event.c - the CloudEvents envelope: parse errors with positions,
 * validation, attribute access, raw bytes kept, building and changing, and
 * the derived ids and JSON string writer the pipeline relies on.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

static int parse(const char *s, lu_event_t **ev, char *err) {
  return lu_event_parse(ev, s, strlen(s), err, 256);
}

static void test_parse_ok_keeps_bytes(void **state) {
  (void)state;
  const char *s = "{\"specversion\":\"1.0\", \"id\":\"1\",\"type\":\"T\","
                  "\"source\":\"x\",\"subject\":\"sub\",\"tenantid\":\"t\","
                  "\"correlationid\":\"c\",\"causationdepth\":3,"
                  "\"data\":{\"a\":[1,2]}}  ";
  lu_event_t *ev;
  char err[256];
  assert_int_equal(parse(s, &ev, err), 0);
  assert_string_equal(lu_event_id(ev), "1");
  assert_string_equal(lu_event_type(ev), "T");
  assert_string_equal(lu_event_attr(ev, "tenantid"), "t");
  assert_null(lu_event_attr(ev, "nope"));
  assert_string_equal(ev->subject, "sub");
  assert_string_equal(ev->correlationid, "c");
  assert_int_equal(ev->depth, 3);
  assert_true(cJSON_IsObject(lu_event_data(ev)));
  size_t len;
  const char *j = lu_event_json(ev, &len);
  assert_int_equal(len, strlen(s)); /* the very bytes, not re-encoded */
  assert_memory_equal(j, s, len);
  lu_event_free(ev);
}

static void test_parse_errors(void **state) {
  (void)state;
  struct {
    const char *in;
    int rc;
    const char *msg;
  } cases[] = {
      {"", LU_EPARSE, "empty input"},
      {"   ", LU_EPARSE, "empty input"},
      {"{\"id\":", LU_EPARSE, "incomplete input"},
      {"{\"id\":\"1\",\n \"type\": nope}", LU_EPARSE, "line 2 column"},
      {"{\"id\":\"1\"} x", LU_EPARSE, "trailing characters"},
      {"[1]", LU_EINVAL, "must be a JSON object"},
      {"{\"type\":\"T\",\"source\":\"s\"}", LU_EINVAL,
       "missing required attribute 'id'"},
      {"{\"id\":\"1\",\"source\":\"s\"}", LU_EINVAL,
       "missing required attribute 'type'"},
      {"{\"id\":\"1\",\"type\":\"T\"}", LU_EINVAL,
       "missing required attribute 'source'"},
      {"{\"id\":1,\"type\":\"T\",\"source\":\"s\"}", LU_EINVAL,
       "'id' must be a non-empty string"},
      {"{\"id\":\"\",\"type\":\"T\",\"source\":\"s\"}", LU_EINVAL,
       "'id' must be a non-empty string"},
      {"{\"specversion\":\"0.3\",\"id\":\"1\",\"type\":\"T\",\"source\":\"s\"}",
       LU_EINVAL, "specversion"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    lu_event_t *ev = (lu_event_t *)1;
    char err[256];
    int rc = parse(cases[i].in, &ev, err);
    if (rc != cases[i].rc || !strstr(err, cases[i].msg))
      fail_msg("case %zu (%s): rc %d err '%s'", i, cases[i].in, rc, err);
    assert_null(ev);
  }
  /* Not NUL-terminated input: only len bytes count. */
  lu_event_t *ev;
  const char *s = "{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\"}GARBAGE";
  assert_int_equal(lu_event_parse(&ev, s, strlen(s) - 7, NULL, 0), 0);
  lu_event_free(ev);
}

static void test_build_and_set(void **state) {
  (void)state;
  lu_event_t *ev;
  assert_int_equal(lu_event_new(&ev, "", "s", NULL, cJSON_CreateNull()),
                   LU_EINVAL);
  assert_int_equal(
      lu_event_new(&ev, "T", "src", "subj", cJSON_CreateNumber(5)), 0);
  assert_int_equal(strlen(lu_event_id(ev)), 36);
  assert_int_equal(lu_event_set(ev, "tenantid", "acme"), 0);
  assert_int_equal(lu_event_set(ev, "id", "fixed"), 0);
  assert_int_equal(lu_event_set(ev, "data", "x"), LU_EINVAL);
  assert_string_equal(lu_event_id(ev), "fixed");
  size_t len;
  const char *j = lu_event_json(ev, &len);
  lu_event_t *back;
  assert_int_equal(lu_event_parse(&back, j, len, NULL, 0), 0);
  assert_string_equal(lu_event_attr(back, "tenantid"), "acme");
  assert_string_equal(lu_event_id(back), "fixed");
  assert_int_equal(lu_event_data(back)->valueint, 5);
  lu_event_free(back);
  lu_event_free(ev);
  lu_event_free(NULL);
}

static void test_derived_ids(void **state) {
  (void)state;
  char a[37], b[37], c[37];
  const char *p1[] = {"ev-1", "Fn"}, *p2[] = {"ev-1", "Fn"},
             *p3[] = {"ev-1F", "n"};
  lu__derive_id(a, p1, 2);
  lu__derive_id(b, p2, 2);
  lu__derive_id(c, p3, 2);
  assert_string_equal(a, b);   /* deterministic */
  assert_string_not_equal(a, c); /* parts are separated, not concatenated */
  assert_int_equal(strlen(a), 36);
  assert_int_equal(a[8], '-');
  assert_int_equal(a[14], '8'); /* version nibble */
}

static void test_json_string_writer(void **state) {
  (void)state;
  lu_buf_t b = {0};
  const char in[] = "q\"b\\n\n\x01\xff\xc3\xa9";
  lu__buf_json_str(&b, in, sizeof in - 1);
  cJSON *j = cJSON_Parse(b.p);
  assert_non_null(j); /* always valid JSON, even from invalid UTF-8 */
  assert_string_equal(j->valuestring, "q\"b\\n\n\x01\xef\xbf\xbd\xc3\xa9");
  cJSON_Delete(j);
  lu__buf_free(&b);
}

/* The value writer prints what cJSON prints (same text for every case
 * here), and integers without cJSON's sprintf. */
static void test_json_value_writer(void **state) {
  (void)state;
  static const char *const cases[] = {
      "0", "-0", "7", "-42", "1000000000000000", "-1000000000000000",
      "1e16", "123456789012345678", "0.1", "3.141592653589793", "1e-300",
      "-2.5e+100", "true", "false", "null",
      "\"\"", "\"a\\\"b\\n\\u0001\"", "[]", "{}",
      "[1,2.5,[\"x\",{}],null]", "{\"seq\":17,\"k\":{\"a\":[true,false]}}",
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    cJSON *v = cJSON_Parse(cases[i]);
    assert_non_null(v);
    char *want = cJSON_PrintUnformatted(v);
    lu_buf_t b = {0};
    lu__buf_json_value(&b, v);
    assert_false(b.oom);
    assert_string_equal(b.p, want);
    assert_int_equal(b.len, strlen(want));
    cJSON_free(want);
    cJSON_Delete(v);
    lu__buf_free(&b);
  }
  /* Where cJSON rounds (it accepts %.15g within an epsilon), the writer
   * keeps the exact double: 0.1 + 0.2 reads back as itself. */
  cJSON *x = cJSON_CreateNumber(0.1 + 0.2);
  lu_buf_t xb = {0};
  lu__buf_json_value(&xb, x);
  assert_string_equal(xb.p, "0.30000000000000004");
  assert_true(strtod(xb.p, NULL) == 0.1 + 0.2);
  cJSON_Delete(x);
  lu__buf_free(&xb);
  /* Not representable in JSON: null, as cJSON does. */
  cJSON *nan = cJSON_CreateNumber(NAN);
  lu_buf_t b = {0};
  lu__buf_json_value(&b, nan);
  assert_string_equal(b.p, "null");
  b.len = 0;
  lu__buf_json_value(&b, NULL);
  assert_string_equal(b.p, "null");
  cJSON_Delete(nan);
  lu__buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_ok_keeps_bytes),
      cmocka_unit_test(test_parse_errors),
      cmocka_unit_test(test_build_and_set),
      cmocka_unit_test(test_derived_ids),
      cmocka_unit_test(test_json_string_writer),
      cmocka_unit_test(test_json_value_writer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
