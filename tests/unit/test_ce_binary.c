/*
 * test_ce_binary.c - the CloudEvents NATS binding's binary content mode
 * (src/util/ce.c): which messages are binary, decoding good and bad header
 * sets into the structured event lucent stores, the binding's value
 * escaping, encoding (lucent publish --binary) and the round trip, and
 * the rejection of a binary-mode message that is not an event.
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

/* Decodes; returns rc, the JSON in *json (malloc'd) or the reason in err. */
static int decode(const lu_hdr_t *h, size_t n, const char *payload,
                  char **json, char *err) {
  lu_buf_t b = {0};
  int rc = lu__ce_binary_decode(&b, h, n, payload, payload ? strlen(payload)
                                                           : 0, err, 256);
  *json = rc ? NULL : strdup(b.p ? b.p : "");
  lu__buf_free(&b);
  return rc;
}

static const char *jstr(const cJSON *o, const char *k) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(it) ? it->valuestring : NULL;
}

static void test_mode(void **state) {
  (void)state;
  lu_hdr_t bin[] = {{"Nats-Msg-Id", "x"}, {"ce-specversion", "1.0"}};
  assert_true(lu__ce_binary_mode(bin, N(bin)));
  lu_hdr_t upper[] = {{"Ce-SpecVersion", "1.0"}};
  assert_true(lu__ce_binary_mode(upper, N(upper)));
  /* Structured: no ce-specversion (lucent's rule), or a content type of
   * application/cloudevents (the binding's rule wins over the header). */
  lu_hdr_t plain[] = {{"Nats-Msg-Id", "x"}, {"Lucent-Line", "3"}};
  assert_false(lu__ce_binary_mode(plain, N(plain)));
  assert_false(lu__ce_binary_mode(NULL, 0));
  lu_hdr_t structured[] = {{"ce-specversion", "1.0"},
                           {"Content-Type",
                            " Application/CloudEvents+json; charset=utf-8"}};
  assert_false(lu__ce_binary_mode(structured, N(structured)));
}

static void test_decode_good(void **state) {
  (void)state;
  char *j, err[256];
  /* JSON data, extensions, percent-encoding, names in any case. */
  lu_hdr_t h[] = {
      {"Nats-Msg-Id", "o-1"},
      {"ce-specversion", "1.0"},
      {"Ce-Type", "OrderPlaced"},
      {"CE-SOURCE", "/shop/eu"},
      {"ce-id", "o-1"},
      {"ce-subject", "Euro%20%E2%82%AC%20%f0%9f%98%80"},
      {"ce-TenantID", "acme"},
      {"ce-correlationid", "%22quoted%22%25"},
      {"content-type", "application/json"},
  };
  assert_int_equal(decode(h, N(h), "{\n  \"orderId\": \"o 1\",\n  \"n\": [1, 2]\n}",
                          &j, err), 0);
  assert_string_equal(
      j,
      "{\"specversion\":\"1.0\",\"id\":\"o-1\",\"source\":\"/shop/eu\","
      "\"type\":\"OrderPlaced\",\"subject\":\"Euro \xe2\x82\xac \xf0\x9f\x98\x80\","
      "\"tenantid\":\"acme\",\"correlationid\":\"\\\"quoted\\\"%\","
      "\"datacontenttype\":\"application/json\","
      "\"data\":{\"orderId\":\"o 1\",\"n\":[1,2]}}");
  /* It is an event lucent accepts, with the same attributes. */
  lu_event_t *ev;
  assert_int_equal(lu_event_parse(&ev, j, strlen(j), err, sizeof err), 0);
  assert_string_equal(lu_event_attr(ev, "tenantid"), "acme");
  lu_event_free(ev);
  free(j);

  /* Quoted values (older senders), ce-datacontenttype, text data. */
  lu_hdr_t t[] = {{"ce-specversion", "\"1.0\""}, {"ce-id", "\"a b\\\"c\""},
                  {"ce-source", "s"}, {"ce-type", "T"},
                  {"ce-datacontenttype", "text/plain; charset=utf-8"}};
  assert_int_equal(decode(t, N(t), "h\xc3\xa9llo\n\"world\"", &j, err), 0);
  cJSON *r = cJSON_Parse(j);
  assert_string_equal(jstr(r, "id"), "a b\"c");
  assert_string_equal(jstr(r, "datacontenttype"), "text/plain; charset=utf-8");
  assert_string_equal(jstr(r, "data"), "h\xc3\xa9llo\n\"world\"");
  cJSON_Delete(r);
  free(j);

  /* No content type: JSON if it is JSON (and then said so) ... */
  lu_hdr_t nc[] = {{"ce-specversion", "1.0"}, {"ce-id", "1"},
                   {"ce-source", "s"}, {"ce-type", "T"}};
  assert_int_equal(decode(nc, N(nc), " 42 ", &j, err), 0);
  assert_non_null(strstr(j, "\"datacontenttype\":\"application/json\","
                            "\"data\":42}"));
  free(j);
  /* ... else base64; and no payload is no data. */
  assert_int_equal(decode(nc, N(nc), "not json", &j, err), 0);
  assert_non_null(strstr(j, "\"data_base64\":\"bm90IGpzb24=\"}"));
  assert_null(strstr(j, "datacontenttype"));
  free(j);
  assert_int_equal(decode(nc, N(nc), "", &j, err), 0);
  assert_null(strstr(j, "data"));
  free(j);

  /* Other content types: base64, also for text that is not UTF-8. */
  lu_hdr_t bin[] = {{"ce-specversion", "1.0"}, {"ce-id", "1"},
                    {"ce-source", "s"}, {"ce-type", "T"},
                    {"content-type", "application/octet-stream"}};
  assert_int_equal(decode(bin, N(bin), "\x01\x02\xff", &j, err), 0);
  assert_non_null(strstr(j, "\"datacontenttype\":\"application/octet-stream\","
                            "\"data_base64\":\"AQL/\"}"));
  free(j);
  lu_hdr_t latin[] = {{"ce-specversion", "1.0"}, {"ce-id", "1"},
                      {"ce-source", "s"}, {"ce-type", "T"},
                      {"content-type", "text/plain; charset=latin1"}};
  assert_int_equal(decode(latin, N(latin), "caf\xe9", &j, err), 0);
  assert_non_null(strstr(j, "\"data_base64\":\"Y2Fm6Q==\"}"));
  free(j);
  /* A +json type is JSON. */
  lu_hdr_t pj[] = {{"ce-specversion", "1.0"}, {"ce-id", "1"},
                   {"ce-source", "s"}, {"ce-type", "T"},
                   {"content-type", "application/vnd.acme+json"}};
  assert_int_equal(decode(pj, N(pj), "[true]", &j, err), 0);
  assert_non_null(strstr(j, "\"data\":[true]}"));
  free(j);
}

static void test_decode_bad(void **state) {
  (void)state;
  struct {
    lu_hdr_t h[6];
    const char *payload;
    const char *why;
  } cases[] = {
      {{{"ce-specversion", "1.0"}, {"ce-source", "s"}, {"ce-type", "T"}},
       "{}",
       "missing required attribute 'id' (header ce-id)"},
      {{{"ce-specversion", "1.0"}, {"ce-id", "1"}, {"ce-type", "T"}},
       "{}",
       "missing required attribute 'source'"},
      {{{"ce-specversion", "1.0"}, {"ce-id", "1"}, {"ce-source", "s"},
        {"ce-type", ""}},
       "{}",
       "empty required attribute 'type'"},
      {{{"ce-specversion", "0.3"}, {"ce-id", "1"}, {"ce-source", "s"},
        {"ce-type", "T"}},
       "{}",
       "unsupported specversion '0.3'"},
      {{{"ce-specversion", "1.0"}, {"ce-id", "1"}, {"ce-source", "s"},
        {"ce-type", "T"}, {"ce-my-ext", "x"}},
       "{}",
       "'my-ext' is not a CloudEvents attribute name"},
      {{{"ce-specversion", "1.0"}, {"ce-id", "1"}, {"ce-source", "s"},
        {"ce-type", "T"}, {"ce-averyveryverylongextension", "x"}},
       "{}",
       "is not a CloudEvents attribute name"},
      {{{"ce-specversion", "1.0"}, {"ce-id", "1"}, {"ce-source", "s"},
        {"ce-type", "T"}, {"ce-", "x"}},
       "{}",
       "is not a CloudEvents attribute name"},
      {{{"ce-specversion", "1.0"}, {"ce-id", "1"}, {"Ce-Id", "2"},
        {"ce-source", "s"}, {"ce-type", "T"}},
       "{}",
       "attribute 'id' appears twice (headers ce-id and Ce-Id)"},
      {{{"ce-specversion", "1.0"}, {"ce-id", "1"}, {"ce-source", "s"},
        {"ce-type", "T"}, {"ce-data", "{}"}},
       "",
       "the data is the payload"},
      {{{"ce-specversion", "1.0"}, {"ce-id", "a%2"}, {"ce-source", "s"},
        {"ce-type", "T"}},
       "{}",
       "header ce-id: malformed percent-encoding"},
      {{{"ce-specversion", "1.0"}, {"ce-id", "%zz"}, {"ce-source", "s"},
        {"ce-type", "T"}},
       "{}",
       "malformed percent-encoding"},
      {{{"ce-specversion", "1.0"}, {"ce-id", "x%C0%A0"}, {"ce-source", "s"},
        {"ce-type", "T"}},
       "{}",
       "header ce-id: the decoded value is not UTF-8"},
      {{{"ce-specversion", "1.0"}, {"ce-id", "a%00b"}, {"ce-source", "s"},
        {"ce-type", "T"}},
       "{}",
       "holds a NUL"},
      {{{"ce-specversion", "1.0"}, {"ce-id", "\"open"}, {"ce-source", "s"},
        {"ce-type", "T"}},
       "{}",
       "malformed quoted value"},
      {{{"ce-specversion", "1.0"}, {"ce-id", "1"}, {"ce-source", "s"},
        {"ce-type", "T"}, {"content-type", "application/json"}},
       "{not json",
       "content type 'application/json' but the payload is not JSON"},
      /* cJSON takes any bytes in a string; JSON text is UTF-8 (fuzz:
       * fuzz/corpus/fuzz_ce_binary/regress-json-not-utf8.txt). */
      {{{"ce-specversion", "1.0"}, {"ce-id", "1"}, {"ce-source", "s"},
        {"ce-type", "T"}, {"content-type", "application/json"}},
       "{\"cus\xff\xffr\":1}",
       "content type 'application/json' but the payload is not JSON (at "
       "byte 5 of"},
      /* cJSON skips a byte order mark; the event's text would keep it
       * (fuzz/corpus/fuzz_ce_binary/regress-json-bom.txt). */
      {{{"ce-specversion", "1.0"}, {"ce-id", "1"}, {"ce-source", "s"},
        {"ce-type", "T"}, {"content-type", "application/json"}},
       "\xef\xbb\xbfnull",
       "content type 'application/json' but the payload is not JSON (at "
       "byte 0 of"},
      {{{"ce-specversion", "1.0"}, {"ce-id", "1"}, {"ce-source", "s"},
        {"ce-type", "T"}, {"content-type", "application/json"},
        {"ce-datacontenttype", "text/plain"}},
       "x",
       "disagree"},
  };
  for (size_t i = 0; i < N(cases); i++) {
    size_t n = 0;
    while (n < 6 && cases[i].h[n].name) n++;
    char *j = NULL, err[256] = "";
    int rc = decode(cases[i].h, n, cases[i].payload, &j, err);
    if (rc != LU_EINVAL || !strstr(err, cases[i].why))
      fail_msg("case %zu: rc %d, err '%s', want '%s'", i, rc, err,
               cases[i].why);
    assert_null(j);
  }
}

static void test_raw(void **state) {
  (void)state;
  lu_hdr_t h[] = {{"ce-specversion", "1.0"}, {"ce-type", "T"}};
  lu_buf_t b = {0};
  lu__ce_binary_raw(&b, h, N(h), "{\"a\":1}", 7);
  assert_string_equal(b.p, "NATS/1.0\r\nce-specversion: 1.0\r\nce-type: T\r\n"
                           "\r\n{\"a\":1}");
  lu__buf_free(&b);
}

/* ---- encoding: lucent publish --binary -------------------------------- */

typedef struct hset_s {
  char name[16][32], value[16][256];
  lu_hdr_t h[16];
  size_t n;
} hset_t;

static int put(void *ud, const char *name, const char *value) {
  hset_t *s = ud;
  assert_true(s->n < 16);
  snprintf(s->name[s->n], 32, "%s", name);
  snprintf(s->value[s->n], 256, "%s", value);
  s->h[s->n] = (lu_hdr_t){s->name[s->n], s->value[s->n]};
  s->n++;
  return 0;
}

static const char *hget(const hset_t *s, const char *name) {
  for (size_t i = 0; i < s->n; i++)
    if (!strcmp(s->name[i], name)) return s->value[i];
  return NULL;
}

static void test_encode_round_trip(void **state) {
  (void)state;
  const char *in =
      "{\"specversion\":\"1.0\",\"id\":\"o-1\",\"type\":\"OrderPlaced\","
      "\"source\":\"/shop\",\"subject\":\"Euro \xe2\x82\xac 100%\","
      "\"tenantid\":\"acme\",\"priority\":7,\"urgent\":true,\"gone\":null,"
      "\"data\":{\"orderId\":\"o-1\",\"total\":12.5}}";
  lu_event_t *ev;
  char err[256];
  assert_int_equal(lu_event_parse(&ev, in, strlen(in), err, sizeof err), 0);
  hset_t hs = {0};
  lu_buf_t pay = {0};
  assert_int_equal(lu__ce_binary_encode(ev->root, put, &hs, &pay, err, sizeof err),
                   0);
  assert_string_equal(hget(&hs, "ce-id"), "o-1");
  assert_string_equal(hget(&hs, "ce-subject"), "Euro%20%E2%82%AC%20100%25");
  assert_string_equal(hget(&hs, "ce-priority"), "7");
  assert_string_equal(hget(&hs, "ce-urgent"), "true");
  assert_null(hget(&hs, "ce-gone"));
  assert_null(hget(&hs, "ce-data"));
  assert_string_equal(hget(&hs, "ce-datacontenttype"), "application/json");
  assert_string_equal(hget(&hs, "content-type"), "application/json");
  assert_string_equal(pay.p, "{\"orderId\":\"o-1\",\"total\":12.5}");
  assert_true(lu__ce_binary_mode(hs.h, hs.n));
  /* Back: the same attributes and data. */
  lu_buf_t out = {0};
  if (lu__ce_binary_decode(&out, hs.h, hs.n, pay.p, pay.len, err, sizeof err))
    fail_msg("decode: %s", err);
  cJSON *a = cJSON_Parse(in), *b = cJSON_Parse(out.p);
  assert_non_null(b);
  cJSON_DeleteItemFromObject(a, "gone");
  /* Binary mode carries strings: 7 and true come back as text. */
  cJSON_ReplaceItemInObject(a, "priority", cJSON_CreateString("7"));
  cJSON_ReplaceItemInObject(a, "urgent", cJSON_CreateString("true"));
  cJSON_AddStringToObject(a, "datacontenttype", "application/json");
  for (cJSON *it = a->child; it; it = it->next) {
    cJSON *o = cJSON_GetObjectItemCaseSensitive(b, it->string);
    if (!o || !cJSON_Compare(it, o, 1))
      fail_msg("attribute %s differs after the round trip", it->string);
  }
  assert_int_equal(cJSON_GetArraySize(a), cJSON_GetArraySize(b));
  cJSON_Delete(a);
  cJSON_Delete(b);
  lu__buf_free(&out);
  lu__buf_free(&pay);
  lu_event_free(ev);

  /* data_base64 travels as its bytes; text data as its text. */
  const char *b64 = "{\"id\":\"2\",\"type\":\"T\",\"source\":\"s\","
                    "\"datacontenttype\":\"image/png\","
                    "\"data_base64\":\"iVBORw0=\"}";
  assert_int_equal(lu_event_parse(&ev, b64, strlen(b64), err, sizeof err), 0);
  memset(&hs, 0, sizeof hs);
  pay = (lu_buf_t){0};
  assert_int_equal(lu__ce_binary_encode(ev->root, put, &hs, &pay, err, sizeof err),
                   0);
  assert_int_equal(pay.len, 5);
  assert_memory_equal(pay.p, "\x89PNG\r", 5);
  assert_string_equal(hget(&hs, "content-type"), "image/png");
  out = (lu_buf_t){0};
  assert_int_equal(
      lu__ce_binary_decode(&out, hs.h, hs.n, pay.p, pay.len, err, sizeof err),
      0);
  assert_non_null(strstr(out.p, "\"data_base64\":\"iVBORw0=\""));
  lu__buf_free(&out);
  lu__buf_free(&pay);
  lu_event_free(ev);
  const char *txt = "{\"id\":\"3\",\"type\":\"T\",\"source\":\"s\","
                    "\"datacontenttype\":\"text/csv\",\"data\":\"a,b\\n1,2\"}";
  assert_int_equal(lu_event_parse(&ev, txt, strlen(txt), err, sizeof err), 0);
  memset(&hs, 0, sizeof hs);
  pay = (lu_buf_t){0};
  assert_int_equal(lu__ce_binary_encode(ev->root, put, &hs, &pay, err, sizeof err),
                   0);
  assert_string_equal(pay.p, "a,b\n1,2");
  lu__buf_free(&pay);
  lu_event_free(ev);
}

/* ---- a binary-mode message that is not an event ---------------------- */

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

/* lu__manager_reject_raw: recorded as lucent.Rejected with the decoder's
 * reason and the message's text, counted as an input. */
static void test_reject_raw(void **state) {
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
  const char raw[] = "NATS/1.0\r\nce-type: T\r\n\r\n{}";
  lu_input_t input = {.json = raw, .len = sizeof raw - 1, .line = 7};
  assert_int_equal(lu_manager_reject(m, &input,
                                     "binary mode: missing required "
                                     "attribute 'id' (header ce-id)",
                                     (lu_done_t){NULL, NULL}),
                   0);
  lu_manager_drain(m);
  assert_int_equal(got.n, 1);
  cJSON *j = cJSON_Parse(got.json[0]);
  const cJSON *d = cJSON_GetObjectItem(j, "data");
  assert_string_equal(jstr(d, "raw"), raw);
  assert_non_null(strstr(jstr(d, "reason"), "header ce-id"));
  assert_int_equal(cJSON_GetObjectItem(d, "line")->valueint, 7);
  cJSON_Delete(j);
  free(got.json[0]);
  lu_count_t c;
  uint64_t in;
  lu_manager_counts(m, &c, &in);
  assert_int_equal(in, 1);
  assert_int_equal(c.outcomes[LU_OUTCOME_REJECTED], 1);
  lu_manager_free(m);
  lu_registry_free(reg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mode),
      cmocka_unit_test(test_decode_good),
      cmocka_unit_test(test_decode_bad),
      cmocka_unit_test(test_raw),
      cmocka_unit_test(test_encode_round_trip),
      cmocka_unit_test(test_reject_raw),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
