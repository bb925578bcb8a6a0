/*
 * test_intake_rules.c - what lucent accepts at intake (event.c, issue 17):
 * UTF-8, JSON that every reader can read, attribute names and values of
 * the CloudEvents type system; rejections that keep the raw bytes
 * losslessly (raw_base64); and the base64 they use.
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
#include "internal.h"

#define N(a) (sizeof(a) / sizeof *(a))

static const char *jstr(const cJSON *o, const char *k) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* ---- what lucent accepts at intake ------------------------------------ */

static void test_intake_rules(void **state) {
  (void)state;
  struct {
    const char *in;
    size_t len; /* 0: strlen */
    const char *why;
  } bad[] = {
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"TenantID\":\"a\"}", 0,
       "invalid attribute name 'TenantID'"},
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"my-ext\":\"a\"}", 0,
       "invalid attribute name 'my-ext'"},
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\","
       "\"abcdefghijklmnopqrstu\":1}", 0,
       "invalid attribute name 'abcdefghijklmnopqrstu'"},
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"\":1}", 0,
       "invalid attribute name ''"},
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"data\":\"a\xff\"}", 0,
       "invalid UTF-8 at byte offset 43"},
      {"{\"id\":\"\xc0\xaf\",\"type\":\"T\",\"source\":\"s\"}", 0,
       "invalid UTF-8 at byte offset 7"},
      {"{\"id\":\"\xed\xa0\x80\",\"type\":\"T\",\"source\":\"s\"}", 0,
       "invalid UTF-8 at byte offset 7"}, /* a surrogate */
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"data\":\"a\x01\"}", 0,
       "unescaped control character 0x01 inside a string (byte offset 43)"},
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"data\":\"a\\u0000b\"}", 0,
       "the escape \\u0000 at byte offset 43"},
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"data\":{\"n\":1e999}}", 0,
       "number out of range in 'n'"},
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"data\":[-2E+400]}", 0,
       "number out of range"},
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"score\":1.5}", 0,
       "attribute 'score' is the number 1.5"},
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"big\":4294967296}", 0,
       "attribute 'big' is the number 4294967296"},
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"ctx\":{\"a\":1}}", 0,
       "attribute 'ctx' is an object"},
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"tags\":[1]}", 0,
       "attribute 'tags' is an array"},
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"subject\":\"\"}", 0,
       "attribute 'subject' must not be empty"},
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"subject\":7}", 0,
       "attribute 'subject' must be a string"},
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"time\":true}", 0,
       "attribute 'time' must be a string"},
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"x\":\"a\",\"x\":\"b\"}",
       0, "attribute 'x' appears more than once"},
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"data\":1,"
       "\"data_base64\":\"AA==\"}", 0, "data or data_base64, not both"},
      {"{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"data_base64\":1}", 0,
       "data_base64 must be a string"},
      {"\xef\xbb\xbf{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\"}", 0,
       "a byte order mark (U+FEFF) starts the text"},
  };
  for (size_t i = 0; i < N(bad); i++) {
    lu_event_t *ev = (lu_event_t *)1;
    char err[256] = "";
    size_t len = bad[i].len ? bad[i].len : strlen(bad[i].in);
    int rc = lu_event_parse(&ev, bad[i].in, len, err, sizeof err);
    if (rc == 0 || !strstr(err, bad[i].why))
      fail_msg("bad %zu: rc %d err '%s', want '%s'", i, rc, err, bad[i].why);
    assert_null(ev);
  }
  /* Many members: duplicates are still found (sorted, not pairwise). */
  lu_buf_t big = {0};
  lu__buf_puts(&big, "{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\"");
  for (int i = 0; i < 5000; i++) {
    char m[32];
    snprintf(m, sizeof m, ",\"e%d\":%d", i, i);
    lu__buf_puts(&big, m);
  }
  lu__buf_puts(&big, ",\"e4321\":0}");
  lu_event_t *ev;
  char err[256];
  assert_int_equal(lu_event_parse(&ev, big.p, big.len, err, sizeof err),
                   LU_EINVAL);
  assert_non_null(strstr(err, "'e4321' appears more than once"));
  lu__buf_free(&big);

  const char *good[] = {
      /* null = absent; booleans, 32-bit integers, UTF-8, escapes. */
      "{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"subject\":null,"
      "\"ok\":true,\"n\":-2147483648,\"m\":2147483647,\"x\":null,"
      "\"name\":\"J\xc3\xbcrgen \xf0\x9f\x98\x80\",\"esc\":\"a\\n\\u0001\","
      "\"data\":{\"big\":1e308,\"tiny\":1e-400,\"f\":1.5,\"TenantID\":{}}}",
      "{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\",\"a2345678901234567890\":"
      "\"twenty characters\",\"data_base64\":\"AA==\"}",
  };
  for (size_t i = 0; i < N(good); i++) {
    if (lu_event_parse(&ev, good[i], strlen(good[i]), err, sizeof err))
      fail_msg("good %zu: %s", i, err);
    lu_event_free(ev);
  }
  /* Line breaks: the text is kept on one line, strings as they were
   * (stored events are JSON Lines; a dead letter carries the text). */
  const char *pretty = "{\n  \"id\": \"p 1\",\r\n  \"type\": \"T\",\n"
                       "  \"source\": \"s\",\n  \"data\": {\"k\": \"a  b\\\"  c\","
                       " \"n\": [1, 2]}\n}\n";
  assert_int_equal(lu_event_parse(&ev, pretty, strlen(pretty), err, sizeof err),
                   0);
  size_t plen;
  const char *pj = lu_event_json(ev, &plen);
  assert_string_equal(pj, "{\"id\":\"p 1\",\"type\":\"T\",\"source\":\"s\","
                          "\"data\":{\"k\":\"a  b\\\"  c\",\"n\":[1,2]}}");
  assert_int_equal(plen, strlen(pj));
  assert_string_equal(lu_event_id(ev), "p 1");
  lu_event_free(ev);
  /* On one line, the bytes are kept exactly. */
  const char *spaced = "{ \"id\" : \"1\", \"type\":\"T\",\"source\":\"s\" }  ";
  assert_int_equal(lu_event_parse(&ev, spaced, strlen(spaced), err, sizeof err),
                   0);
  assert_string_equal(lu_event_json(ev, NULL), spaced);
  lu_event_free(ev);
  /* lu_event_set keeps built events to the same names. */
  assert_int_equal(lu_event_new(&ev, "T", "s", NULL, NULL), 0);
  assert_int_equal(lu_event_set(ev, "TenantID", "a"), LU_EINVAL);
  assert_int_equal(lu_event_set(ev, "my-ext", "a"), LU_EINVAL);
  assert_int_equal(lu_event_set(ev, "tenantid", "a\xff"), LU_EINVAL);
  assert_int_equal(lu_event_set(ev, "subject", ""), LU_EINVAL);
  assert_int_equal(lu_event_set(ev, "tenantid", "acme"), 0);
  lu_event_free(ev);
}

/* ---- rejections keep the raw bytes ------------------------------------ */

LU_FUNCTION(Noop, .events = "Noop") {
  (void)data;
  (void)ctx;
  lu_out_result(out, cJSON_CreateTrue());
  return LU_OK;
}

typedef struct got_s {
  char *json[8];
  size_t n;
} got_t;

static void on_outcome(void *ud, const lu_outcome_t *o) {
  got_t *g = ud;
  if (g->n < 8) g->json[g->n++] = strdup(o->stored_json);
}

static void test_rejection_raw_base64(void **state) {
  (void)state;
  lu_registry_t *reg;
  assert_int_equal(lu_registry_new(&reg), 0);
  const lu_fn_t *const *fns;
  size_t n = lu_fns_here(&fns);
  assert_int_equal(lu_registry_add(reg, fns, n, "test"), 0);
  lu_config_t cfg;
  lu_config_init(&cfg);
  got_t got = {0};
  cfg.on_outcome = on_outcome;
  cfg.on_outcome_ud = &got;
  lu_manager_t *m;
  char err[256];
  assert_int_equal(lu_manager_new(&m, &cfg, reg, err, sizeof err), 0);
  const char garbage[] = "{\"id\":\"x\xff\",\x00\x01 binary";
  const char text[] = "{\"id\":\"1\",\"type\":\"T\",\"source\":\"s\","
                      "\"TenantID\":\"acme\"}";
  lu_manager_submit_json(m, garbage, sizeof garbage - 1, 1);
  lu_manager_submit_json(m, text, sizeof text - 1, 2);
  lu_manager_drain(m);
  assert_int_equal(got.n, 2);
  for (size_t i = 0; i < got.n; i++) {
    cJSON *j = cJSON_Parse(got.json[i]);
    assert_non_null(j);
    assert_string_equal(jstr(j, "type"), "lucent.Rejected");
    const cJSON *d = cJSON_GetObjectItem(j, "data");
    int line = cJSON_GetObjectItem(d, "line")->valueint;
    if (line == 1) { /* not UTF-8: the bytes, exactly, in raw_base64 */
      assert_non_null(strstr(jstr(d, "reason"), "invalid UTF-8 at byte "
                                                "offset 8"));
      lu_buf_t b = {0};
      const char *b64 = jstr(d, "raw_base64");
      assert_non_null(b64);
      assert_int_equal(lu__base64_decode(&b, b64, strlen(b64)), 0);
      assert_int_equal(b.len, sizeof garbage - 1);
      assert_memory_equal(b.p, garbage, b.len);
      lu__buf_free(&b);
      assert_true(lu__utf8_valid(got.json[i], strlen(got.json[i]), NULL));
    } else { /* UTF-8 text: raw as before, no raw_base64 */
      assert_non_null(strstr(jstr(d, "reason"),
                             "invalid attribute name 'TenantID'"));
      assert_string_equal(jstr(d, "raw"), text);
      assert_null(jstr(d, "raw_base64"));
    }
    cJSON_Delete(j);
    free(got.json[i]);
  }
  lu_count_t c;
  uint64_t in;
  lu_manager_counts(m, &c, &in);
  assert_int_equal(in, 2);
  assert_int_equal(c.outcomes[LU_OUTCOME_REJECTED], 2);
  lu_manager_free(m);
  lu_registry_free(reg);
}

/* ---- base64 ----------------------------------------------------------- */

static void test_base64(void **state) {
  (void)state;
  /* RFC 4648 section 10. */
  const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  const char *want[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
                        "Zm9vYmFy"};
  for (size_t i = 0; i < N(in); i++) {
    lu_buf_t b = {0}, d = {0};
    lu__buf_base64(&b, in[i], strlen(in[i]));
    assert_string_equal(b.p ? b.p : "", want[i]);
    assert_int_equal(lu__base64_decode(&d, want[i], strlen(want[i])), 0);
    assert_int_equal(d.len, strlen(in[i]));
    if (d.len) assert_memory_equal(d.p, in[i], d.len);
    lu__buf_free(&b);
    lu__buf_free(&d);
  }
  lu_buf_t d = {0};
  assert_int_equal(lu__base64_decode(&d, "Zm9", 3), LU_EINVAL);
  assert_int_equal(lu__base64_decode(&d, "Zm9*", 4), LU_EINVAL);
  lu__buf_free(&d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_intake_rules),
      cmocka_unit_test(test_rejection_raw_base64),
      cmocka_unit_test(test_base64),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
