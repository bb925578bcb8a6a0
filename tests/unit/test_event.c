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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

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

/* The id of parts as lucent has always derived it: XXH3-128 streamed over
 * each part and a 0 byte (lu__derive_id hashes short parts in one call,
 * which must give the same). */
static void reference_id(char buf[37], const char *const *parts, size_t n) {
  XXH3_state_t st;
  XXH3_128bits_reset(&st);
  for (size_t i = 0; i < n; i++) {
    XXH3_128bits_update(&st, parts[i], strlen(parts[i]));
    XXH3_128bits_update(&st, "", 1);
  }
  XXH128_hash_t h = XXH3_128bits_digest(&st);
  unsigned char b[16];
  for (int i = 0; i < 8; i++) {
    b[i] = (unsigned char)(h.high64 >> (56 - 8 * i));
    b[8 + i] = (unsigned char)(h.low64 >> (56 - 8 * i));
  }
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x80);
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
  char *o = buf;
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
    o += sprintf(o, "%02x", b[i]);
  }
}

static void test_derived_ids_stable(void **state) {
  (void)state;
  /* Stored ids must never change: a replay would store its results
   * again under new ids.  This is the id of ValidateOrderCompleted for
   * the orders example's first input, as stores hold it from before
   * lucent hashed short parts in one call. */
  char id[37];
  const char *p[] = {"orders-gen", "ord-1-0", "ValidateOrder"};
  lu__derive_id(id, p, 3);
  assert_string_equal(id, "9674538e-c534-85f7-851d-1c607100f304");
  /* Around the one-call limit (512 bytes with the 0 bytes) and past it,
   * parts empty or long, the same as streaming. */
  static char big[2048];
  memset(big, 'x', sizeof big - 1);
  for (size_t total = 0; total < 1100; total += total < 480 ? 97 : 1) {
    if (total > 540 && total < 1000) total = 1000;
    size_t a = total / 3, b = total - a;
    char pa[1024], pb[1024];
    memcpy(pa, big, a);
    pa[a] = 0;
    memcpy(pb, big, b);
    pb[b] = 0;
    const char *parts[] = {pa, "", pb};
    char want[37];
    reference_id(want, parts, 3);
    lu__derive_id(id, parts, 3);
    assert_string_equal(id, want);
  }
}

/* JSON string escaping as lucent defines it, one byte at a time: the
 * writer's fast paths must give exactly this. */
static void reference_json_str(lu_buf_t *b, const unsigned char *s,
                               size_t n) {
  char t[8];
  lu__buf_put(b, "\"", 1);
  for (size_t i = 0; i < n;) {
    unsigned c = s[i];
    if (c == '"' || c == '\\') {
      t[0] = '\\', t[1] = (char)c;
      lu__buf_put(b, t, 2), i++;
    } else if (c == '\n' || c == '\r' || c == '\t') {
      t[0] = '\\', t[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
      lu__buf_put(b, t, 2), i++;
    } else if (c < 0x20) {
      snprintf(t, sizeof t, "\\u%04x", c);
      lu__buf_put(b, t, 6), i++;
    } else if (c < 0x80) {
      lu__buf_put(b, (const char *)s + i, 1), i++;
    } else {
      size_t bad;
      size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
      if (c >= 0xc2 && c <= 0xf4 && i + len <= n &&
          lu__utf8_valid((const char *)s + i, len, &bad)) {
        lu__buf_put(b, (const char *)s + i, len), i += len;
      } else {
        lu__buf_put(b, "\xef\xbf\xbd", 3), i++;
      }
    }
  }
  lu__buf_put(b, "\"", 1);
}

static void test_json_string_writer_paths(void **state) {
  (void)state;
  /* Strings of every length up to 40 made of plain bytes, with one byte
   * of each kind that needs more than a copy at every position. */
  static const unsigned char odd[] = {'"', '\\', '\n', 0x01, 0x1f, 0x7f,
                                      0x80, 0xc3, 0xe2, 0xff};
  unsigned char s[48];
  for (size_t n = 0; n <= 40; n++)
    for (size_t at = 0; at <= n; at++)
      for (size_t k = 0; k < sizeof odd; k++) {
        for (size_t i = 0; i < n; i++) s[i] = (unsigned char)('a' + i % 26);
        if (at < n) s[at] = odd[k];
        if (at + 2 < n && odd[k] == 0xc3) s[at + 1] = 0xa9; /* valid é */
        lu_buf_t got = {0}, want = {0};
        lu__buf_json_str(&got, (const char *)s, n);
        reference_json_str(&want, s, n);
        assert_false(got.oom);
        assert_int_equal(got.len, want.len);
        assert_memory_equal(got.p, want.p, want.len);
        lu__buf_free(&got);
        lu__buf_free(&want);
        if (at == n) break; /* nothing odd: once */
      }
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
      cmocka_unit_test(test_derived_ids_stable),
      cmocka_unit_test(test_json_string_writer),
      cmocka_unit_test(test_json_string_writer_paths),
      cmocka_unit_test(test_json_value_writer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
