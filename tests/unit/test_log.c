/*
 * test_log.c - structured logs (src/core/log.c): every JSON record is one valid
 * JSON object on one line whatever its text holds, the text format is one
 * line too, the level threshold filters (and skips evaluating arguments),
 * and concurrent writers never interleave within a line.
 */
#include <pthread.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "obs_internal.h"

static cJSON *parse_line(const lu_buf_t *b) {
  assert_false(b->oom);
  assert_true(b->len > 1);
  assert_int_equal(b->p[b->len - 1], '\n');
  assert_null(memchr(b->p, '\n', b->len - 1)); /* exactly one line */
  cJSON *j = cJSON_ParseWithLength(b->p, b->len);
  assert_non_null(j);
  assert_true(cJSON_IsObject(j));
  return j;
}

static const char *jstr(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  assert_true(cJSON_IsString(v));
  return v->valuestring;
}

static void test_json_record(void **state) {
  (void)state;
  lu_buf_t b = {0};
  /* 2026-11-27T12:00:00.123Z */
  int64_t t = 1795780800123LL;
  lu__log_format(&b, 1, t, LU_LOG_WARN, "shard-1", "corr \"7\"",
                 LU_KVS(LU_KV_STR("path", "a\"b\\c\nd\x01\xff"),
                        LU_KV_INT("neg", -5), LU_KV_UINT("big", UINT64_MAX),
                        LU_KV_DBL("ratio", 0.25), LU_KV_DBL("nan", NAN),
                        LU_KV_BOOL("yes", 7), LU_KV_STR("none", NULL)),
                 "line one\nline \"two\"\t\x7f");
  cJSON *j = parse_line(&b);
  assert_string_equal(jstr(j, "time"), "2026-11-27T12:00:00.123Z");
  assert_string_equal(jstr(j, "level"), "warn");
  assert_string_equal(jstr(j, "msg"), "line one\nline \"two\"\t\x7f");
  assert_string_equal(jstr(j, "shard"), "shard-1");
  assert_string_equal(jstr(j, "correlationid"), "corr \"7\"");
  /* Invalid UTF-8 becomes U+FFFD; control bytes survive escaped. */
  assert_string_equal(jstr(j, "path"), "a\"b\\c\nd\x01\xef\xbf\xbd");
  assert_true(cJSON_GetObjectItem(j, "neg")->valuedouble == -5);
  assert_true(cJSON_GetObjectItem(j, "big")->valuedouble ==
              (double)UINT64_MAX);
  assert_true(cJSON_GetObjectItem(j, "ratio")->valuedouble == 0.25);
  assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "nan")));
  assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "yes")));
  assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "none")));
  /* Keys in order: time, level, msg, shard, correlationid, fields. */
  assert_string_equal(j->child->string, "time");
  assert_string_equal(j->child->next->string, "level");
  assert_string_equal(j->child->next->next->string, "msg");
  assert_string_equal(j->child->next->next->next->string, "shard");
  cJSON_Delete(j);
  lu__buf_free(&b);

  /* No shard, no correlation id, no fields: just the three. */
  lu__log_format(&b, 1, t, LU_LOG_DEBUG, NULL, NULL, NULL, "");
  j = parse_line(&b);
  assert_int_equal(cJSON_GetArraySize(j), 3);
  assert_string_equal(jstr(j, "level"), "debug");
  assert_string_equal(jstr(j, "msg"), "");
  cJSON_Delete(j);
  lu__buf_free(&b);
}

static void test_text_record(void **state) {
  (void)state;
  lu_buf_t b = {0};
  int64_t t = 1795780800123LL;
  lu__log_format(&b, 0, t, LU_LOG_INFO, "shard-0", NULL,
                 LU_KVS(LU_KV_STR("addr", "127.0.0.1:9"),
                        LU_KV_STR("why", "two words"), LU_KV_STR("empty", ""),
                        LU_KV_STR("q", "a\"b"), LU_KV_UINT("n", 42),
                        LU_KV_DBL("x", 1.5), LU_KV_BOOL("ok", 0)),
                 "http listening\nsecond line");
  assert_int_equal(b.p[b.len - 1], '\n');
  assert_null(memchr(b.p, '\n', b.len - 1));
  /* "HH:MM:SS.123 INFO  " in local time, then the message. */
  assert_int_equal(b.p[2], ':');
  assert_int_equal(b.p[5], ':');
  assert_memory_equal(b.p + 8, ".123 INFO  ", 11);
  const char *rest = b.p + 19;
  assert_string_equal(rest,
                      "http listening\\nsecond line shard=shard-0 "
                      "addr=127.0.0.1:9 why=\"two words\" empty=\"\" "
                      "q=\"a\\\"b\" n=42 x=1.5 ok=false\n");
  lu__buf_free(&b);
  lu__log_format(&b, 0, t, LU_LOG_ERROR, NULL, NULL, NULL, "boom");
  assert_memory_equal(b.p + 8, ".123 ERROR boom\n", 16);
  lu__buf_free(&b);
}

/* Reads the whole file behind fd into a NUL-terminated string. */
static char *slurp(FILE *f) {
  fflush(f);
  long n = ftell(f);
  assert_true(n >= 0);
  char *p = malloc((size_t)n + 1);
  rewind(f);
  assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
  p[n] = 0;
  return p;
}

static int evaluated;
static int side_effect(void) { return ++evaluated; }

static void test_level_filter(void **state) {
  (void)state;
  FILE *f = tmpfile();
  assert_non_null(f);
  lu_log_set_fd(fileno(f));
  lu_log_set_format(LU_LOG_FORMAT_AUTO); /* a file: JSON */
  assert_int_equal(lu_log_format(), LU_LOG_FORMAT_JSON);
  lu_log_set_level(LU_LOG_WARN);
  assert_false(lu_log_enabled(LU_LOG_DEBUG));
  assert_false(lu_log_enabled(LU_LOG_INFO));
  assert_true(lu_log_enabled(LU_LOG_WARN));
  evaluated = 0;
  LU_LOG(LU_LOG_DEBUG, NULL, NULL, LU_KVS(LU_KV_INT("n", side_effect())),
         "debug %d", side_effect());
  LU_LOG(LU_LOG_INFO, NULL, NULL, NULL, "info %d", side_effect());
  assert_int_equal(evaluated, 0); /* disabled: arguments not evaluated */
  LU_LOG(LU_LOG_WARN, "shard-2", "c-1", LU_KVS(LU_KV_INT("n", 3)), "warn %d",
         side_effect());
  LU_LOG(LU_LOG_ERROR, NULL, NULL, NULL, "error");
  lu_log_set_level(LU_LOG_OFF);
  LU_LOG(LU_LOG_ERROR, NULL, NULL, NULL, "silenced");
  lu_log_set_level(LU_LOG_DEBUG);
  LU_LOG(LU_LOG_DEBUG, NULL, NULL, NULL, "debug now");
  lu_log_set_format(LU_LOG_FORMAT_TEXT);
  LU_LOG(LU_LOG_INFO, NULL, NULL, NULL, "as text");
  char *all = slurp(f);
  char *save = NULL;
  const char *want_level[] = {"warn", "error", "debug"};
  const char *want_msg[] = {"warn 1", "error", "debug now"};
  int i = 0;
  for (char *line = strtok_r(all, "\n", &save); line;
       line = strtok_r(NULL, "\n", &save), i++) {
    if (i == 3) {
      assert_non_null(strstr(line, " INFO  as text"));
      continue;
    }
    assert_true(i < 3);
    cJSON *j = cJSON_Parse(line);
    assert_non_null(j);
    assert_string_equal(jstr(j, "level"), want_level[i]);
    assert_string_equal(jstr(j, "msg"), want_msg[i]);
    if (i == 0) {
      assert_string_equal(jstr(j, "shard"), "shard-2");
      assert_string_equal(jstr(j, "correlationid"), "c-1");
      assert_true(cJSON_GetObjectItem(j, "n")->valuedouble == 3);
    }
    cJSON_Delete(j);
  }
  assert_int_equal(i, 4);
  free(all);
  lu_log_set_fd(2);
  lu_log_set_level(LU_LOG_INFO);
  lu_log_set_format(LU_LOG_FORMAT_AUTO);
  fclose(f);
}

static void test_parse_names(void **state) {
  (void)state;
  lu_log_level_t l;
  lu_log_format_t f;
  assert_int_equal(lu_log_parse_level("debug", &l), 0);
  assert_int_equal(l, LU_LOG_DEBUG);
  assert_int_equal(lu_log_parse_level("warning", &l), 0);
  assert_int_equal(l, LU_LOG_WARN);
  assert_int_equal(lu_log_parse_level("off", &l), 0);
  assert_int_equal(l, LU_LOG_OFF);
  assert_int_equal(lu_log_parse_level("loud", &l), LU_EINVAL);
  assert_int_equal(lu_log_parse_level(NULL, &l), LU_EINVAL);
  assert_int_equal(lu_log_parse_format("text", &f), 0);
  assert_int_equal(f, LU_LOG_FORMAT_TEXT);
  assert_int_equal(lu_log_parse_format("xml", &f), LU_EINVAL);
  assert_string_equal(lu_log_level_name(LU_LOG_ERROR), "error");
  assert_string_equal(lu_log_level_name((lu_log_level_t)3), "?");
}

/* A message longer than the formatter's stack buffer is kept whole. */
static void test_long_message(void **state) {
  (void)state;
  FILE *f = tmpfile();
  lu_log_set_fd(fileno(f));
  lu_log_set_format(LU_LOG_FORMAT_JSON);
  char big[5000];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = 0;
  LU_LOG(LU_LOG_ERROR, NULL, NULL, NULL, "%s!", big);
  char *all = slurp(f);
  cJSON *j = cJSON_Parse(all);
  assert_non_null(j);
  assert_int_equal(strlen(jstr(j, "msg")), sizeof big);
  cJSON_Delete(j);
  free(all);
  lu_log_set_fd(2);
  lu_log_set_format(LU_LOG_FORMAT_AUTO);
  fclose(f);
}

#define THREADS 4
#define PER_THREAD 500

static void *writer(void *arg) {
  long id = (long)(intptr_t)arg;
  char pad[300];
  memset(pad, 'a' + (int)id, sizeof pad - 1);
  pad[sizeof pad - 1] = 0;
  for (int i = 0; i < PER_THREAD; i++)
    LU_LOG(LU_LOG_INFO, "shard-x", NULL,
           LU_KVS(LU_KV_INT("thread", id), LU_KV_INT("i", i),
                  LU_KV_STR("pad", pad)),
           "record");
  return NULL;
}

static void test_concurrent_lines(void **state) {
  (void)state;
  FILE *f = tmpfile();
  lu_log_set_fd(fileno(f));
  lu_log_set_format(LU_LOG_FORMAT_JSON);
  pthread_t t[THREADS];
  for (long i = 0; i < THREADS; i++)
    pthread_create(&t[i], NULL, writer, (void *)(intptr_t)i);
  for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  char *all = slurp(f);
  int seen[THREADS] = {0}, n = 0;
  char *save = NULL;
  for (char *line = strtok_r(all, "\n", &save); line;
       line = strtok_r(NULL, "\n", &save), n++) {
    cJSON *j = cJSON_Parse(line);
    assert_non_null(j);
    int id = cJSON_GetObjectItem(j, "thread")->valueint;
    assert_true(id >= 0 && id < THREADS);
    assert_int_equal(cJSON_GetObjectItem(j, "i")->valueint, seen[id]++);
    assert_int_equal(strlen(jstr(j, "pad")), 299);
    cJSON_Delete(j);
  }
  assert_int_equal(n, THREADS * PER_THREAD);
  free(all);
  lu_log_set_fd(2);
  lu_log_set_format(LU_LOG_FORMAT_AUTO);
  fclose(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_json_record),
      cmocka_unit_test(test_text_record),
      cmocka_unit_test(test_level_filter),
      cmocka_unit_test(test_parse_names),
      cmocka_unit_test(test_long_message),
      cmocka_unit_test(test_concurrent_lines),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
