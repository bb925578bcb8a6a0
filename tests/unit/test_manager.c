/*
 * test_manager.c - the embedded pipeline end to end through the public API:
 * outcomes add up, results carry the right envelope, chains, retries,
 * timeouts, breakers, the depth limit, routing agreement, selection under
 * resource limits, rejections and idempotent replays.
 *
 * The functions under test are registered in this executable with
 * LU_FUNCTION and found through lu_fns_here(), the way an embedding
 * program does it.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lucent/lucent.h"
#include "internal.h" /* the store vtable */
#include "pipeline.h" /* m->sessions */
#include "shard.h"    /* m->pool */
#include "lucent/bus.h"

/* ---- functions under test --------------------------------------------- */

LU_FUNCTION(Echo, .events = "Echo", LU_ROUND_ROBIN) {
  lu_out_result(out, data ? cJSON_Duplicate(data, 1) : cJSON_CreateNull());
  return LU_OK;
}

LU_FUNCTION(StepA, .events = "A") {
  lu_out_emit(out, "B", NULL, cJSON_Duplicate(data, 1));
  lu_out_result(out, cJSON_CreateString("a"));
  return LU_OK;
}
LU_FUNCTION(StepB, .events = "B") {
  lu_out_emit(out, "C", "c-subject", cJSON_Duplicate(data, 1));
  lu_out_emit(out, "C", "c-subject", cJSON_Duplicate(data, 1));
  lu_out_result(out, cJSON_CreateString("b"));
  return LU_OK;
}
LU_FUNCTION(StepC, .events = "C") {
  lu_out_result(out, cJSON_CreateString("c"));
  return LU_OK;
}

LU_FUNCTION(Ping, .events = "Ping") {
  lu_out_emit(out, "Ping", NULL, NULL);
  return LU_OK;
}

/* Fails (retryable) until attempt data.okAt. */
LU_FUNCTION(Flaky, .events = "Flaky", .max_retries = 3,
            .retry_backoff_ms = 1) {
  const cJSON *ok = cJSON_GetObjectItemCaseSensitive(data, "okAt");
  if ((double)lu_ctx_attempt(ctx) < ok->valuedouble)
    return lu_out_fail(out, LU_RETRY, "not yet (attempt %u)",
                       lu_ctx_attempt(ctx));
  lu_out_result(out, cJSON_CreateNumber(lu_ctx_attempt(ctx)));
  return LU_OK;
}

LU_FUNCTION(Broken, .events = "Broken") {
  return lu_out_fail(out, LU_FAIL, "always broken");
}

/* CPU time this thread has used, ns. */
static uint64_t thread_cpu(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Overruns its 1 ms deadline: burns 5 ms of CPU. */
LU_FUNCTION(Slow, .events = "Slow", .timeout_ms = 1) {
  uint64_t t0 = thread_cpu();
  while (thread_cpu() - t0 < 5 * 1000 * 1000) {
  }
  lu_out_emit(out, "Echo", NULL, NULL); /* must be discarded */
  return LU_OK;
}

/* Not pure, on purpose: waits 30 ms of wall time with its deadline at 5
 * ms, as a function does on a machine too busy to run it.  Its CPU time
 * is a few microseconds: it must complete. */
LU_FUNCTION(Sleepy, .events = "Sleepy", .timeout_ms = 5) {
  struct timespec ts = {0, 30 * 1000 * 1000};
  nanosleep(&ts, NULL);
  lu_out_result(out, cJSON_CreateTrue());
  return LU_OK;
}

/* A poison input: aborts the process that runs it. */
LU_FUNCTION(Poison, .events = "Poison") {
  if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(data, "poison"))) abort();
  lu_out_result(out, cJSON_CreateNumber(
                         cJSON_GetObjectItemCaseSensitive(data, "n")->valuedouble));
  lu_out_emit(out, "Echo", NULL, cJSON_CreateTrue());
  return LU_OK;
}

/* Spins until the test lets it go: a function that does not return. */
static _Atomic int spin_release;
static _Atomic int spin_running;
LU_FUNCTION(Spin, .events = "Spin", .timeout_ms = 10) {
  atomic_store(&spin_running, 1);
  while (!atomic_load(&spin_release)) {
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  lu_out_result(out, cJSON_CreateString("late"));
  return LU_OK;
}

LU_FUNCTION(Keyed, .events = "Keyed", LU_HASH_BASED("user.id")) {
  return LU_OK;
}

LU_FUNCTION(Sticky, .events = "Sticky", LU_STICKY_SESSION("session", 60000)) {
  return LU_OK;
}

/* Sessions that expire 20 ms after their last event. */
LU_FUNCTION(Brief, .events = "Brief", LU_STICKY_SESSION("session", 20)) {
  return LU_OK;
}

/* Two candidates: the high-priority one never fits a 1000-millicore shard. */
LU_FUNCTION(ScoreBig, .events = "Score", .priority = 10, .cpu_millis = 2000) {
  lu_out_result(out, cJSON_CreateString("big"));
  return LU_OK;
}
LU_FUNCTION(ScoreSmall, .events = "Score", .priority = 1, .cpu_millis = 10) {
  lu_out_result(out, cJSON_CreateString("small"));
  return LU_OK;
}

/* Not pure, on purpose: records which thread ran each attempt (attempts
 * 1 and 2; the first fails, retryable, when data.retry is true). */
static _Atomic long where_tid[3];
LU_FUNCTION(Where, .events = "Where", .max_retries = 1,
            .retry_backoff_ms = 1) {
  unsigned a = lu_ctx_attempt(ctx);
  if (a < 3) atomic_store(&where_tid[a], (long)syscall(SYS_gettid));
  if (a == 1 && cJSON_IsTrue(cJSON_GetObjectItem(data, "retry")))
    return lu_out_fail(out, LU_RETRY, "once more");
  lu_out_result(out, cJSON_CreateNumber(a));
  return LU_OK;
}

/* Two fitting candidates of different priority. */
LU_FUNCTION(RankHigh, .events = "Rank", .priority = 9) { return LU_OK; }
LU_FUNCTION(RankLow, .events = "Rank", .priority = 2) { return LU_OK; }

/* ---- harness ---------------------------------------------------------- */

typedef struct rec_s {
  lu_outcome_kind_t kind;
  int derived;
  uint64_t line;
  char id[64], type[64], fn[32], shard[16];
  unsigned attempts;
  char reason[256];
  char *json;
} rec_t;

typedef struct seen_s {
  rec_t *r;
  size_t n, cap;
} seen_t;

static void on_outcome(void *ud, const lu_outcome_t *o) {
  seen_t *s = ud;
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 64;
    s->r = realloc(s->r, s->cap * sizeof *s->r);
  }
  rec_t *r = &s->r[s->n++];
  memset(r, 0, sizeof *r);
  r->kind = o->kind;
  r->derived = o->derived;
  r->line = o->line;
  r->attempts = o->attempts;
  snprintf(r->id, sizeof r->id, "%s", o->event_id ? o->event_id : "");
  snprintf(r->type, sizeof r->type, "%s", o->event_type ? o->event_type : "");
  snprintf(r->fn, sizeof r->fn, "%s", o->function ? o->function : "");
  snprintf(r->shard, sizeof r->shard, "%s", o->shard ? o->shard : "");
  snprintf(r->reason, sizeof r->reason, "%s", o->reason ? o->reason : "");
  r->json = strdup(o->stored_json);
}

typedef struct fixture_s {
  lu_registry_t *reg;
  lu_manager_t *m;
  seen_t seen;
  lu_config_t cfg;
} fixture_t;

static fixture_t *fx_new(unsigned shards, const char *store) {
  fixture_t *f = calloc(1, sizeof *f);
  assert_int_equal(lu_registry_new(&f->reg), 0);
  const lu_fn_t *const *fns;
  size_t n = lu_fns_here(&fns);
  assert_int_equal(n, 19); /* a vanished section would be silent */
  assert_int_equal(lu_registry_add(f->reg, fns, n, "test"), 0);
  lu_config_init(&f->cfg);
  f->cfg.shards = shards;
  f->cfg.store = store;
  f->cfg.on_outcome = on_outcome;
  f->cfg.on_outcome_ud = &f->seen;
  f->cfg.seed = 42;
  return f;
}

static void fx_start(fixture_t *f) {
  char err[256];
  assert_int_equal(lu_manager_new(&f->m, &f->cfg, f->reg, err, sizeof err),
                   0);
}

static void fx_free(fixture_t *f) {
  lu_manager_free(f->m);
  lu_registry_free(f->reg);
  for (size_t i = 0; i < f->seen.n; i++) free(f->seen.r[i].json);
  free(f->seen.r);
  free(f);
}

static void submitf(fixture_t *f, uint64_t line, const char *fmt, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  assert_int_equal(lu_manager_submit_json(f->m, buf, strlen(buf), line), 0);
}

#define EV(id, type, data)                                               \
  "{\"specversion\":\"1.0\",\"id\":\"" id "\",\"type\":\"" type          \
  "\",\"source\":\"test\",\"subject\":\"s-" id "\",\"correlationid\":"   \
  "\"corr-" id "\",\"tenantid\":\"t1\",\"data\":" data "}"

static const rec_t *find(const fixture_t *f, const char *id, int derived) {
  for (size_t i = 0; i < f->seen.n; i++)
    if (!strcmp(f->seen.r[i].id, id) && f->seen.r[i].derived == derived)
      return &f->seen.r[i];
  return NULL;
}

static void assert_balanced(fixture_t *f) {
  lu_count_t c;
  uint64_t in;
  lu_manager_counts(f->m, &c, &in);
  uint64_t sum = 0;
  for (int k = 0; k < LU_OUTCOME__COUNT; k++) sum += c.outcomes[k];
  assert_int_equal(sum, in);
  size_t inputs = 0;
  for (size_t i = 0; i < f->seen.n; i++) inputs += !f->seen.r[i].derived;
  assert_int_equal(inputs, in);
}

static cJSON *jparse(const char *s) {
  cJSON *j = cJSON_Parse(s);
  assert_non_null(j);
  return j;
}

static const char *jstr(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The "id" of a record's JSON text (a static copy). */
static const char *jstr_id(const char *json) {
  static char id[64];
  cJSON *j = jparse(json);
  snprintf(id, sizeof id, "%s", jstr(j, "id"));
  cJSON_Delete(j);
  return id;
}

/* ---- tests ------------------------------------------------------------ */

static void test_result_envelope(void **state) {
  (void)state;
  fixture_t *f = fx_new(2, ":memory:");
  fx_start(f);
  submitf(f, 1, EV("e1", "Echo", "{\"x\":1}"));
  lu_manager_drain(f->m);
  const rec_t *r = find(f, "e1", 0);
  assert_non_null(r);
  assert_int_equal(r->kind, LU_OUTCOME_COMPLETED);
  assert_string_equal(r->fn, "Echo");
  assert_int_equal(r->attempts, 1);
  assert_int_equal(r->line, 1);
  cJSON *j = jparse(r->json);
  assert_string_equal(jstr(j, "type"), "EchoCompleted");
  assert_string_equal(jstr(j, "subject"), "function-result-corr-e1");
  assert_string_equal(jstr(j, "causationid"), "e1");
  assert_string_equal(jstr(j, "correlationid"), "corr-e1");
  assert_string_equal(jstr(j, "tenantid"), "t1"); /* business context */
  assert_string_equal(jstr(j, "function"), "Echo");
  assert_string_equal(jstr(j, "shardid"), r->shard);
  assert_int_equal(
      cJSON_GetObjectItem(cJSON_GetObjectItem(j, "data"), "x")->valueint, 1);
  cJSON_Delete(j);
  assert_balanced(f);
  fx_free(f);
}

/* The stored text of a result, byte for byte (its time masked): what
 * escapes, non-ASCII text, ten business attributes of all kinds (more
 * than the parser indexes) and a correlation id long enough to be cut
 * inside a UTF-8 sequence in the subject turn into.  Stores written by
 * earlier versions hold this text; a replay must write the same. */
static void test_result_bytes(void **state) {
  (void)state;
  fixture_t *f = fx_new(1, ":memory:");
  fx_start(f);
  char corr[400];
  memset(corr, 'c', 300);
  /* Two "é": the subject's 320-byte limit cuts the second in half. */
  memcpy(corr + 300, "\xc3\xa9\xc3\xa9", 4);
  corr[304] = 0;
  submitf(f, 1,
          "{\"specversion\":\"1.0\",\"id\":\"e\\\"1\",\"type\":\"Echo\","
          "\"source\":\"t\\u00e9st\",\"subject\":\"s\\n1\","
          "\"correlationid\":\"%s\",\"a1\":\"x\",\"a2\":2,\"a3\":true,"
          "\"a4\":null,\"a5\":\"\\u2603\",\"a6\":\"q\\\"\\\\\",\"a7\":-7,"
          "\"a8\":false,\"a9\":\"\",\"a10\":\"\\t\",\"data\":{\"k\":[1.5,\"v\"]}}",
          corr);
  lu_manager_drain(f->m);
  const rec_t *r = find(f, "e\"1", 0);
  assert_non_null(r);
  assert_int_equal(r->kind, LU_OUTCOME_COMPLETED);
  char *t = strstr(r->json, "\"time\":\"");
  assert_non_null(t);
  memset(t + 8, 'T', 24); /* 2026-01-01T00:00:00.000Z */
  char want[2048];
  snprintf(want, sizeof want,
           "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":"
           "\"lucent://fn/Echo\",\"type\":\"EchoCompleted\",\"subject\":"
           "\"function-result-%.302s\xef\xbf\xbd\",\"time\":\"TTTTTTTTTTTTTTTTTTTTTTTT\","
           "\"datacontenttype\":\"application/json\",\"correlationid\":"
           "\"%s\",\"causationid\":\"e\\\"1\",\"a1\":\"x\",\"a2\":2,"
           "\"a3\":true,\"a4\":null,\"a5\":\"\xe2\x98\x83\",\"a6\":\"q\\\"\\\\\","
           "\"a7\":-7,\"a8\":false,\"a9\":\"\",\"a10\":\"\\t\",\"shardid\":"
           "\"shard-0\",\"function\":\"Echo\",\"data\":{\"k\":[1.5,\"v\"]}}",
           jstr_id(r->json), corr, corr);
  assert_string_equal(r->json, want);
  fx_free(f);
}

static void test_chain_and_counts(void **state) {
  (void)state;
  fixture_t *f = fx_new(3, ":memory:");
  fx_start(f);
  for (int i = 0; i < 50; i++) {
    char id[16];
    snprintf(id, sizeof id, "a%d", i);
    submitf(f, (uint64_t)i + 1,
            "{\"specversion\":\"1.0\",\"id\":\"%s\",\"type\":\"A\","
            "\"source\":\"t\",\"data\":{\"n\":%d}}", id, i);
  }
  lu_manager_drain(f->m);
  lu_count_t c;
  uint64_t in;
  lu_manager_counts(f->m, &c, &in);
  assert_int_equal(in, 50);
  assert_int_equal(c.outcomes[LU_OUTCOME_COMPLETED], 50);
  /* Each A emits one B, each B two Cs: 150 emitted events, all done. */
  assert_int_equal(c.derived[LU_OUTCOME_COMPLETED], 150);
  assert_balanced(f);
  /* Stored: 50 A results + 50 B events + 50 B results + 100 C events + 100
   * C results = 350. */
  assert_int_equal(lu_store_count(lu_manager_store(f->m)), 350);
  fx_free(f);
}

static int count_cb(void *ud, uint64_t seq, const char *json, size_t len) {
  (void)seq, (void)json, (void)len;
  (*(int *)ud)++;
  return 0;
}

static void test_chain_envelope(void **state) {
  (void)state;
  fixture_t *f = fx_new(2, ":memory:");
  fx_start(f);
  submitf(f, 1, EV("x1", "A", "{\"k\":1}"));
  lu_manager_drain(f->m);
  /* Every event of the chain shares the correlation id. */
  int n = 0;
  lu_query_t q = {.correlationid = "corr-x1"};
  assert_int_equal(lu_store_query(lu_manager_store(f->m), &q, count_cb, &n),
                   0);
  assert_int_equal(n, 7);
  /* The emitted B is caused by x1, carries depth 1 and the tenant. */
  for (size_t i = 0; i < f->seen.n; i++) {
    const rec_t *r = &f->seen.r[i];
    if (strcmp(r->type, "B")) continue;
    assert_int_equal(r->derived, 1);
    assert_int_equal(r->kind, LU_OUTCOME_COMPLETED);
    assert_string_equal(r->fn, "StepB");
  }
  fx_free(f);
}

static void test_depth_limit(void **state) {
  (void)state;
  fixture_t *f = fx_new(2, ":memory:");
  f->cfg.max_depth = 5;
  fx_start(f);
  submitf(f, 1, EV("p1", "Ping", "{}"));
  lu_manager_drain(f->m);
  lu_count_t c;
  lu_manager_counts(f->m, &c, NULL);
  assert_int_equal(c.outcomes[LU_OUTCOME_COMPLETED], 1);
  assert_int_equal(c.derived[LU_OUTCOME_COMPLETED], 5);
  assert_int_equal(c.derived[LU_OUTCOME_DEAD_LETTERED], 1);
  int found = 0;
  for (size_t i = 0; i < f->seen.n; i++)
    if (f->seen.r[i].kind == LU_OUTCOME_DEAD_LETTERED) {
      assert_non_null(strstr(f->seen.r[i].reason, "causation depth"));
      found = 1;
    }
  assert_true(found);
  fx_free(f);
}

static void test_retries(void **state) {
  (void)state;
  fixture_t *f = fx_new(1, ":memory:");
  fx_start(f);
  submitf(f, 1, EV("f2", "Flaky", "{\"okAt\":3}"));
  submitf(f, 2, EV("f9", "Flaky", "{\"okAt\":9}"));
  lu_manager_drain(f->m);
  const rec_t *ok = find(f, "f2", 0), *bad = find(f, "f9", 0);
  assert_int_equal(ok->kind, LU_OUTCOME_COMPLETED);
  assert_int_equal(ok->attempts, 3);
  assert_int_equal(bad->kind, LU_OUTCOME_FAILED);
  assert_int_equal(bad->attempts, 4); /* 1 + max_retries 3 */
  cJSON *j = jparse(bad->json);
  assert_string_equal(jstr(j, "type"), "FlakyFailed");
  const cJSON *d = cJSON_GetObjectItem(j, "data");
  assert_int_equal(cJSON_GetObjectItem(d, "attempts")->valueint, 4);
  assert_non_null(strstr(jstr(d, "reason"), "not yet"));
  cJSON_Delete(j);
  lu_fn_stats_t st;
  for (size_t i = 0; i < lu_registry_count(f->reg); i++) {
    lu_manager_fn_stats(f->m, i, &st);
    if (!strcmp(st.name, "Flaky")) break;
  }
  assert_int_equal(st.executions, 7);
  assert_int_equal(st.retries, 5);
  assert_balanced(f);
  fx_free(f);
}

static void test_timeout_discards_output(void **state) {
  (void)state;
  fixture_t *f = fx_new(1, ":memory:");
  fx_start(f);
  submitf(f, 1, EV("s1", "Slow", "{}"));
  lu_manager_drain(f->m);
  const rec_t *r = find(f, "s1", 0);
  assert_int_equal(r->kind, LU_OUTCOME_FAILED);
  assert_non_null(strstr(r->reason, "timed out"));
  lu_count_t c;
  lu_manager_counts(f->m, &c, NULL);
  for (int k = 0; k < LU_OUTCOME__COUNT; k++) assert_int_equal(c.derived[k], 0);
  fx_free(f);
}

/* The pool's count of its workers after a drain: `live` not abandoned,
 * none counted inside a slow function (pool.c, WAKING), no shard left on
 * the run queue. */
static void assert_pool_counts(fixture_t *f, unsigned live) {
  lu_pool_t *p = f->m->pool;
  pthread_mutex_lock(&p->lock);
  unsigned nlive = p->nlive, nslow = p->nslow;
  int queued = p->head != NULL;
  pthread_mutex_unlock(&p->lock);
  assert_int_equal(nlive, live);
  assert_int_equal(nslow, 0);
  assert_false(queued);
}

/* The pool's two rules agree (pool.c, WAKING and STEPPING BACK): a worker
 * that steps back is never one the rule for waking would wake again at
 * once (no worker flaps between the two); it never steps back while the
 * only other workers awake are inside slow functions, nor while the run
 * queue's oldest shard has waited past LU_POOL_BEHIND_NS (the workers
 * awake are saturated, or one is stuck in a function counted fast), and
 * then a sleeper is woken. */
static void test_pool_wake_rules(void **state) {
  (void)state;
  lu_pool_t p;
  lu_shard_t head;
  memset(&p, 0, sizeof p);
  memset(&head, 0, sizeof head);
  const uint64_t now = 100 * LU_POOL_BEHIND_NS;
  const uint64_t ages[] = {0, 1, LU_POOL_BEHIND_NS, LU_POOL_BEHIND_NS + 1,
                           10 * LU_POOL_BEHIND_NS};
  unsigned checked = 0, stepped = 0;
  for (unsigned live = 1; live <= 6; live++)
    for (unsigned idle = 0; idle < live; idle++)    /* the caller: awake */
      for (unsigned slow = 0; slow < live - idle; slow++) /* not it */
        for (size_t a = 0; a < sizeof ages / sizeof *ages; a++) {
          p.nlive = live;
          p.nidle = idle;
          p.nslow = slow;
          p.head = &head;
          head.ready_ns = now - ages[a];
          p.stop = 0;
          unsigned others_fast = live - idle - slow - 1;
          int late = ages[a] > LU_POOL_BEHIND_NS;
          int back = lu__pool_step_back(&p, now);
          assert_int_equal(back, others_fast > 0 && !late);
          if (back) {
            stepped++;
            p.nidle = idle + 1; /* it sleeps: would it be woken at once? */
            assert_false(lu__pool_want_wake(&p, now));
            p.nidle = idle;
          }
          if (late && idle > 0) /* behind, and somebody sleeps */
            assert_true(lu__pool_want_wake(&p, now));
          p.stop = 1;
          assert_false(lu__pool_step_back(&p, now)); /* stopping: drain */
          checked++;
        }
  assert_true(stepped > 0 && stepped < checked);
  /* Waking, by hand: none awake; one fast worker awake with a fresh run
   * queue; the one awake inside a slow function; a shard pushed by a
   * thread whose clock read came after ours does not count as waiting. */
  p = (lu_pool_t){.nlive = 2, .nidle = 2, .head = &head};
  head.ready_ns = now;
  assert_true(lu__pool_want_wake(&p, now));
  p.nidle = 1;
  assert_false(lu__pool_want_wake(&p, now));
  p.nslow = 1;
  assert_true(lu__pool_want_wake(&p, now));
  p.nslow = 0;
  head.ready_ns = now + 5;
  assert_false(lu__pool_want_wake(&p, now));
  p.nidle = 0; /* nobody sleeps: nobody to wake */
  head.ready_ns = 0;
  assert_false(lu__pool_want_wake(&p, now));
}

/* The deadline counts CPU time: a function that waits on the wall clock
 * far past its timeout (a busy machine) completes. */
static void test_timeout_counts_cpu_time(void **state) {
  (void)state;
  fixture_t *f = fx_new(1, ":memory:");
  fx_start(f);
  submitf(f, 1, EV("z1", "Sleepy", "{}"));
  lu_manager_drain(f->m);
  const rec_t *r = find(f, "z1", 0);
  assert_int_equal(r->kind, LU_OUTCOME_COMPLETED);
  fx_free(f);
}

/* A function that never returns: past hang_factor x its timeout (and the
 * 1 s floor) it is abandoned: its event is dead-lettered with the reason,
 * the shard's other events run meanwhile on another worker, and when the
 * function returns at last nothing more is recorded for it. */
static void test_hung_function_abandoned(void **state) {
  (void)state;
  atomic_store(&spin_release, 0);
  atomic_store(&spin_running, 0);
  fixture_t *f = fx_new(1, ":memory:");
  f->cfg.threads = 1;
  f->cfg.hang_factor = 2;
  fx_start(f);
  submitf(f, 1, EV("h1", "Spin", "{}"));
  while (!atomic_load(&spin_running)) {
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  /* Queued behind the spinning function on the same shard. */
  submitf(f, 2, EV("h2", "Echo", "{\"n\":2}"));
  submitf(f, 3, EV("h3", "Echo", "{\"n\":3}"));
  lu_manager_drain(f->m); /* returns: the watchdog gave the shard on */
  const rec_t *r = find(f, "h1", 0);
  assert_int_equal(r->kind, LU_OUTCOME_DEAD_LETTERED);
  assert_non_null(strstr(r->reason, "did not return within its hard limit"));
  assert_non_null(strstr(r->reason, "Spin"));
  assert_int_equal(find(f, "h2", 0)->kind, LU_OUTCOME_COMPLETED);
  assert_int_equal(find(f, "h3", 0)->kind, LU_OUTCOME_COMPLETED);
  lu_fn_stats_t st;
  for (size_t i = 0; i < lu_registry_count(f->reg); i++) {
    lu_manager_fn_stats(f->m, i, &st);
    if (!strcmp(st.name, "Spin")) break;
  }
  assert_int_equal(st.timeouts, 1);
  /* Let it return: its late result must not be recorded. */
  atomic_store(&spin_release, 1);
  struct timespec ts = {0, 50 * 1000 * 1000};
  nanosleep(&ts, NULL);
  lu_manager_drain(f->m);
  assert_balanced(f);
  lu_count_t c;
  uint64_t in;
  lu_manager_counts(f->m, &c, &in);
  assert_int_equal(in, 3);
  assert_int_equal(c.outcomes[LU_OUTCOME_DEAD_LETTERED], 1);
  assert_int_equal(c.outcomes[LU_OUTCOME_COMPLETED], 2);
  /* The abandoned worker, counted slow (Spin had no history), took its
   * count with it; its replacement is live. */
  assert_pool_counts(f, 1);
  fx_free(f);
}

static void submit_delivery(fixture_t *f, uint64_t line, const char *json,
                            unsigned delivery) {
  lu_input_t in = {.json = json, .len = strlen(json), .line = line,
                   .origin = "test", .delivery = delivery};
  assert_int_equal(lu_manager_submit_input(f->m, &in), 0);
}

/* Inputs delivered again run isolated: a poison one that aborts is
 * dead-lettered naming the signal and the function, and this process,
 * and the suspects around it in the same child's run, go on. */
static void test_poison_isolated(void **state) {
  (void)state;
  fixture_t *f = fx_new(1, ":memory:");
  f->cfg.threads = 1;
  fx_start(f);
  for (int i = 0; i < 10; i++) {
    char json[160];
    snprintf(json, sizeof json,
             "{\"id\":\"p%d\",\"type\":\"Poison\",\"source\":\"t\","
             "\"data\":{\"n\":%d,\"poison\":%s}}",
             i, i, i == 4 ? "true" : "false");
    submit_delivery(f, (uint64_t)i + 1, json, 2);
  }
  lu_manager_drain(f->m);
  for (int i = 0; i < 10; i++) {
    char id[8];
    snprintf(id, sizeof id, "p%d", i);
    const rec_t *r = find(f, id, 0);
    if (i == 4) {
      assert_int_equal(r->kind, LU_OUTCOME_DEAD_LETTERED);
      assert_non_null(strstr(r->reason, "SIGABRT"));
      assert_non_null(strstr(r->reason, "Poison"));
      assert_non_null(strstr(r->reason, "delivery 2"));
    } else {
      assert_int_equal(r->kind, LU_OUTCOME_COMPLETED); /* ran in a child */
    }
  }
  lu_count_t c;
  lu_manager_counts(f->m, &c, NULL);
  assert_int_equal(c.derived[LU_OUTCOME_COMPLETED], 9); /* their Echoes */
  uint64_t crashes, abandoned;
  for (size_t i = 0; i < lu_registry_count(f->reg); i++)
    if (!strcmp(lu_registry_at(f->reg, i)->name, "Poison"))
      lu__manager_fn_faults(f->m, i, &crashes, &abandoned);
  assert_int_equal(crashes, 1);
  assert_int_equal(abandoned, 0);
  /* A first delivery runs in this process as always. */
  submit_delivery(f, 11, EV("q1", "Poison", "{\"n\":1}"), 1);
  lu_manager_drain(f->m);
  assert_int_equal(find(f, "q1", 0)->kind, LU_OUTCOME_COMPLETED);
  assert_balanced(f);
  assert_pool_counts(f, 1); /* the isolated runs counted slow, and ended */
  fx_free(f);
}

/* A suspect input that hangs its child is killed at the hard limit and
 * dead-lettered. */
static void test_poison_hang_isolated(void **state) {
  (void)state;
  atomic_store(&spin_release, 0);
  fixture_t *f = fx_new(1, ":memory:");
  f->cfg.hang_factor = 2;
  fx_start(f);
  submit_delivery(f, 1, EV("sp1", "Spin", "{}"), 3);
  submit_delivery(f, 2, EV("sp2", "Echo", "{}"), 3);
  lu_manager_drain(f->m);
  const rec_t *r = find(f, "sp1", 0);
  assert_int_equal(r->kind, LU_OUTCOME_DEAD_LETTERED);
  assert_non_null(strstr(r->reason, "did not return"));
  assert_non_null(strstr(r->reason, "isolated after delivery 3"));
  assert_int_equal(find(f, "sp2", 0)->kind, LU_OUTCOME_COMPLETED);
  fx_free(f);
}

/* An input delivered more often than the budget (every process that took
 * it died first) is dead-lettered without running; at the budget it still
 * runs (isolated). */
static void test_delivery_budget(void **state) {
  (void)state;
  fixture_t *f = fx_new(1, ":memory:");
  f->cfg.max_deliveries = 5;
  fx_start(f);
  submit_delivery(f, 1, EV("b5", "Echo", "{}"), 5);
  submit_delivery(f, 2, EV("b6", "Echo", "{}"), 6);
  lu_manager_drain(f->m);
  assert_int_equal(find(f, "b5", 0)->kind, LU_OUTCOME_COMPLETED);
  const rec_t *r = find(f, "b6", 0);
  assert_int_equal(r->kind, LU_OUTCOME_DEAD_LETTERED);
  assert_non_null(strstr(r->reason, "delivered 6 times without an outcome"));
  assert_non_null(strstr(r->json, "\"event\":{")); /* the input is kept */
  assert_balanced(f);
  fx_free(f);
}

/* A result larger than the store takes fails with the reason, once: it
 * would be refused at every try. */
static void test_record_too_large(void **state) {
  (void)state;
  fixture_t *f = fx_new(1, ":memory:");
  f->cfg.max_record_bytes = 1024;
  fx_start(f);
  char big[2100];
  memset(big, 'x', sizeof big);
  big[0] = '"';
  big[sizeof big - 2] = '"';
  big[sizeof big - 1] = 0;
  submitf(f, 1, EV("big", "Echo", "%s"), big);
  submitf(f, 2, EV("small", "Echo", "\"ok\""));
  lu_manager_drain(f->m);
  const rec_t *r = find(f, "big", 0);
  assert_int_equal(r->kind, LU_OUTCOME_FAILED);
  assert_non_null(strstr(r->reason, "exceeds the 1024 bytes"));
  assert_int_equal(find(f, "small", 0)->kind, LU_OUTCOME_COMPLETED);
  assert_int_equal(lu_manager_store_errors(f->m), 0);
  assert_balanced(f);
  fx_free(f);
}

/* A store that refuses its first `fail` appends, then passes them on to
 * an in-memory SQLite store. */
typedef struct flaky_s {
  lu_store_t base;
  lu_store_t *inner;
  _Atomic int fail, calls;
} flaky_t;

static int fl_append(lu_store_t *st, const lu_record_t *r, size_t n,
                     size_t *ins) {
  flaky_t *f = (flaky_t *)st;
  atomic_fetch_add(&f->calls, 1);
  if (atomic_fetch_sub(&f->fail, 1) > 0) {
    snprintf(st->errmsg, sizeof st->errmsg, "refused on purpose");
    return LU_ESTORE;
  }
  return lu_store_append(f->inner, r, n, ins);
}
static int fl_query(lu_store_t *st, const lu_query_t *q, lu_store_row_cb cb,
                    void *ud) {
  return lu_store_query(((flaky_t *)st)->inner, q, cb, ud);
}
static int64_t fl_count(lu_store_t *st) {
  return lu_store_count(((flaky_t *)st)->inner);
}
static void fl_close(lu_store_t *st) {
  lu_store_close(((flaky_t *)st)->inner);
}
static const lu_store_ops_t flaky_ops = {.name = "flaky",
                                         .append = fl_append,
                                         .query = fl_query,
                                         .count = fl_count,
                                         .close = fl_close};

/* With store_retry_ms a batch refused many times is tried until it is
 * stored (a leader election, a restart); without, it gives up after four
 * tries and says so. */
static void test_store_retry_window(void **state) {
  (void)state;
  for (int window = 0; window < 2; window++) {
    flaky_t fl = {.base.ops = &flaky_ops};
    atomic_init(&fl.fail, 6);
    atomic_init(&fl.calls, 0);
    char err[256];
    assert_int_equal(lu_store_open(&fl.inner, ":memory:", err, sizeof err),
                     0);
    fixture_t *f = fx_new(1, NULL);
    f->cfg.store_handle = &fl.base;
    f->cfg.store_retry_ms = window ? 60000 : 0;
    fx_start(f);
    submitf(f, 1, EV("r1", "Echo", "{}"));
    lu_manager_drain(f->m);
    if (window) {
      assert_int_equal(lu_manager_store_errors(f->m), 0);
      assert_int_equal(lu_store_count(lu_manager_store(f->m)), 1);
      assert_int_equal(atomic_load(&fl.calls), 7);
    } else {
      assert_int_equal(lu_manager_store_errors(f->m), 1);
      assert_int_equal(atomic_load(&fl.calls), 4);
    }
    assert_balanced(f);
    fx_free(f);
  }
}

static void test_breaker_opens(void **state) {
  (void)state;
  fixture_t *f = fx_new(1, ":memory:");
  f->cfg.breaker_failures = 3;
  f->cfg.breaker_cooldown_ms = 600000;
  fx_start(f);
  for (int i = 0; i < 10; i++) {
    char buf[256];
    snprintf(buf, sizeof buf,
             "{\"specversion\":\"1.0\",\"id\":\"b%d\",\"type\":\"Broken\","
             "\"source\":\"t\"}", i);
    lu_manager_submit_json(f->m, buf, strlen(buf), 0);
    lu_manager_drain(f->m); /* one at a time: the breaker sees each */
  }
  lu_count_t c;
  lu_manager_counts(f->m, &c, NULL);
  assert_int_equal(c.outcomes[LU_OUTCOME_FAILED], 3);
  assert_int_equal(c.outcomes[LU_OUTCOME_DEAD_LETTERED], 7);
  const rec_t *r = find(f, "b9", 0);
  assert_non_null(strstr(r->reason, "circuit breaker open"));
  lu_fn_stats_t st;
  for (size_t i = 0; i < lu_registry_count(f->reg); i++) {
    lu_manager_fn_stats(f->m, i, &st);
    if (!strcmp(st.name, "Broken")) break;
  }
  assert_true(st.breaker_open);
  assert_int_equal(st.executions, 3);
  fx_free(f);
}

static void test_hash_agreement(void **state) {
  (void)state;
  fixture_t *f = fx_new(4, ":memory:");
  fx_start(f);
  for (int i = 0; i < 400; i++)
    submitf(f, 0,
            "{\"specversion\":\"1.0\",\"id\":\"k%d\",\"type\":\"Keyed\","
            "\"source\":\"t\",\"data\":{\"user\":{\"id\":\"u%d\"}}}", i,
            i % 20);
  lu_manager_drain(f->m);
  char owner[20][16] = {{0}};
  int used[4] = {0};
  for (size_t i = 0; i < f->seen.n; i++) {
    const rec_t *r = &f->seen.r[i];
    int k = atoi(r->id + 1) % 20;
    if (!owner[k][0]) snprintf(owner[k], sizeof owner[k], "%s", r->shard);
    assert_string_equal(owner[k], r->shard);
    used[r->shard[6] - '0'] = 1;
  }
  assert_int_equal(used[0] + used[1] + used[2] + used[3] >= 3, 1);
  fx_free(f);
}

static void test_sticky_agreement(void **state) {
  (void)state;
  fixture_t *f = fx_new(3, ":memory:");
  fx_start(f);
  for (int i = 0; i < 300; i++)
    submitf(f, 0,
            "{\"specversion\":\"1.0\",\"id\":\"t%d\",\"type\":\"Sticky\","
            "\"source\":\"t\",\"data\":{\"session\":\"sess-%d\"}}", i,
            i % 10);
  lu_manager_drain(f->m);
  char owner[10][16] = {{0}};
  for (size_t i = 0; i < f->seen.n; i++) {
    const rec_t *r = &f->seen.r[i];
    int k = atoi(r->id + 1) % 10;
    if (!owner[k][0]) snprintf(owner[k], sizeof owner[k], "%s", r->shard);
    assert_string_equal(owner[k], r->shard);
  }
  fx_free(f);
}

/* New sessions arriving one at a time on idle shards (equal loads) spread
 * over the shards: first sight must not always pick the first shard. */
static void test_sticky_new_sessions_spread(void **state) {
  (void)state;
  fixture_t *f = fx_new(3, ":memory:");
  fx_start(f);
  for (int i = 0; i < 30; i++) {
    submitf(f, 0,
            "{\"specversion\":\"1.0\",\"id\":\"n%d\",\"type\":\"Sticky\","
            "\"source\":\"t\",\"data\":{\"session\":\"new-%d\"}}", i, i);
    lu_manager_drain(f->m);
  }
  int used[3] = {0};
  for (size_t i = 0; i < f->seen.n; i++) {
    const char *sh = f->seen.r[i].shard;
    size_t n = strlen(sh);
    assert_true(n > 0);
    used[(sh[n - 1] - '0') % 3] = 1;
  }
  assert_true(used[0] + used[1] + used[2] >= 2);
  fx_free(f);
}

/* A long run with ever new session keys keeps the embedded session table
 * bounded: expired bindings are swept as the run goes (the pool's
 * periodic scan), not kept for ever.  20 rounds of 1,000 new keys with a
 * 20 ms TTL: each round's bindings are gone before long, so the table
 * never holds much more than one round. */
static void test_sessions_expire_in_a_long_run(void **state) {
  (void)state;
  fixture_t *f = fx_new(2, ":memory:");
  fx_start(f);
  size_t peak = 0;
  for (int r = 0; r < 20; r++) {
    for (int i = 0; i < 1000; i++)
      submitf(f, 0,
              "{\"specversion\":\"1.0\",\"id\":\"b%d-%d\",\"type\":"
              "\"Brief\",\"source\":\"t\",\"data\":{\"session\":\"k%d-%d\"}}",
              r, i, r, i);
    lu_manager_drain(f->m);
    size_t n = lu__sessions_count(f->m->sessions);
    if (n > peak) peak = n;
    /* Wait for the sweep (a condition, not a time): the previous rounds'
     * bindings expired long ago and this round's within 20 ms. */
    for (int t = 0; t < 1000 && lu__sessions_count(f->m->sessions) > 0; t++) {
      struct timespec ts = {0, 10000000};
      nanosleep(&ts, NULL);
    }
    if (lu__sessions_count(f->m->sessions) > 0)
      fail_msg("round %d: %zu expired sessions never swept", r,
               lu__sessions_count(f->m->sessions));
  }
  assert_true(peak <= 1000);
  assert_int_equal(f->seen.n, 20000);
  fx_free(f);
}

static void test_round_robin_spreads(void **state) {
  (void)state;
  fixture_t *f = fx_new(4, ":memory:");
  fx_start(f);
  for (int i = 0; i < 400; i++)
    submitf(f, 0,
            "{\"specversion\":\"1.0\",\"id\":\"r%d\",\"type\":\"Echo\","
            "\"source\":\"t\"}", i);
  lu_manager_drain(f->m);
  for (unsigned i = 0; i < 4; i++) {
    lu_shard_stats_t s;
    lu_manager_shard_stats(f->m, i, &s);
    assert_int_equal(s.routed, 100);
    assert_int_equal(s.count.outcomes[LU_OUTCOME_COMPLETED], 100);
  }
  fx_free(f);
}

static void test_selection(void **state) {
  (void)state;
  fixture_t *f = fx_new(1, ":memory:");
  fx_start(f);
  submitf(f, 1, EV("sc", "Score", "{}"));
  submitf(f, 2, EV("rk", "Rank", "{}"));
  lu_manager_drain(f->m);
  assert_string_equal(find(f, "sc", 0)->fn, "ScoreSmall"); /* Big can't fit */
  assert_string_equal(find(f, "rk", 0)->fn, "RankHigh");
  fx_free(f);

  /* With a shard big enough, priority wins again. */
  f = fx_new(1, ":memory:");
  f->cfg.shard_cpu_millis = 4000;
  fx_start(f);
  submitf(f, 1, EV("sc", "Score", "{}"));
  lu_manager_drain(f->m);
  assert_string_equal(find(f, "sc", 0)->fn, "ScoreBig");
  fx_free(f);
}

static void explain_cb(void *ud, const char *line) {
  if (strstr(line, "chosen=ScoreSmall") && strstr(line, "ScoreBig"))
    (*(int *)ud)++;
}

static void test_explain(void **state) {
  (void)state;
  fixture_t *f = fx_new(1, ":memory:");
  int hits = 0;
  f->cfg.on_explain = explain_cb;
  f->cfg.on_explain_ud = &hits;
  fx_start(f);
  submitf(f, 1, EV("sc", "Score", "{}"));
  lu_manager_drain(f->m);
  assert_int_equal(hits, 1);
  fx_free(f);
}

static void test_rejections(void **state) {
  (void)state;
  fixture_t *f = fx_new(2, ":memory:");
  f->cfg.max_event_bytes = 256;
  fx_start(f);
  const char *bad[] = {
      "{\"id\":\"x\",\"type\":",                          /* malformed */
      "{\"specversion\":\"1.0\",\"id\":\"m1\",\"source\":\"t\"}", /* no type */
      "[1,2,3]",                                          /* not an object */
      ("{\"specversion\":\"1.0\",\"id\":\"k1\",\"type\":\"Keyed\","
       "\"source\":\"t\",\"data\":{}}"),                   /* no hash key */
  };
  for (size_t i = 0; i < 4; i++)
    lu_manager_submit_json(f->m, bad[i], strlen(bad[i]), i + 1);
  char big[600];
  memset(big, 'x', sizeof big);
  lu_manager_submit_json(f->m, big, sizeof big, 5);
  submitf(f, 6, EV("nf", "NobodyHandlesThis", "{}"));
  lu_manager_drain(f->m);
  lu_count_t c;
  uint64_t in;
  lu_manager_counts(f->m, &c, &in);
  assert_int_equal(in, 6);
  assert_int_equal(c.outcomes[LU_OUTCOME_REJECTED], 5);
  assert_int_equal(c.outcomes[LU_OUTCOME_DEAD_LETTERED], 1);
  const char *want[] = {"malformed JSON", "missing required attribute 'type'",
                        "must be a JSON object", "hash key 'user.id'",
                        "exceeds the limit"};
  for (size_t i = 0; i < f->seen.n; i++) {
    const rec_t *r = &f->seen.r[i];
    if (r->kind != LU_OUTCOME_REJECTED) continue;
    assert_true(r->line >= 1 && r->line <= 5);
    assert_non_null(strstr(r->reason, want[r->line - 1]));
    /* The stored event keeps the reason, the line and the raw input. */
    cJSON *j = jparse(r->json);
    assert_string_equal(jstr(j, "type"), "lucent.Rejected");
    const cJSON *d = cJSON_GetObjectItem(j, "data");
    assert_int_equal(cJSON_GetObjectItem(d, "line")->valueint, (int)r->line);
    assert_non_null(jstr(d, "raw"));
    if (r->line <= 4) assert_string_equal(jstr(d, "raw"), bad[r->line - 1]);
    cJSON_Delete(j);
  }
  const rec_t *dl = find(f, "nf", 0);
  assert_int_equal(dl->kind, LU_OUTCOME_DEAD_LETTERED);
  assert_non_null(strstr(dl->reason, "NobodyHandlesThis"));
  assert_balanced(f);
  fx_free(f);
}

static void test_idempotent_replay(void **state) {
  (void)state;
  char path[512];
  const char *tmp = getenv("LUCENT_TEST_TMP");
  snprintf(path, sizeof path, "%s/replay-%d.db", tmp ? tmp : "/tmp",
           (int)getpid());
  unlink(path);
  int64_t counts[2];
  for (int round = 0; round < 2; round++) {
    fixture_t *f = fx_new(3, path);
    fx_start(f);
    for (int i = 0; i < 100; i++)
      submitf(f, (uint64_t)i + 1,
              "{\"specversion\":\"1.0\",\"id\":\"rp%d\",\"type\":\"%s\","
              "\"source\":\"t\",\"data\":{\"okAt\":1}}", i,
              i % 3 == 0 ? "A" : i % 3 == 1 ? "Flaky" : "Unknown");
    lu_manager_submit_json(f->m, "{oops", 5, 101);
    lu_manager_drain(f->m);
    counts[round] = lu_store_count(lu_manager_store(f->m));
    fx_free(f);
  }
  assert_true(counts[0] > 100);
  assert_int_equal(counts[0], counts[1]);
  unlink(path);
}

/* lucent.h, lu_manager_store: while events run, a second, read-only
 * handle on the same file reads beside the writer; once drained, the
 * manager's own store may be queried, and both agree. */
typedef struct submitter_s {
  fixture_t *f;
  int n;
  atomic_int done;
} submitter_t;

static void *submit_chains(void *arg) {
  submitter_t *s = arg;
  for (int i = 0; i < s->n; i++)
    submitf(s->f, (uint64_t)i + 1,
            "{\"specversion\":\"1.0\",\"id\":\"rd%d\",\"type\":\"A\","
            "\"source\":\"t\",\"data\":{\"i\":%d}}", i, i);
  atomic_store(&s->done, 1);
  return NULL;
}

static void test_store_read_during_run(void **state) {
  (void)state;
  char path[512], aux[530];
  const char *tmp = getenv("LUCENT_TEST_TMP");
  snprintf(path, sizeof path, "%s/read-during-%d.db", tmp ? tmp : "/tmp",
           (int)getpid());
  unlink(path);
  fixture_t *f = fx_new(3, path);
  f->cfg.store_batch = 64; /* many commits to read between */
  fx_start(f);
  lu_store_t *ro = NULL;
  char err[256];
  assert_int_equal(lu_store_open_readonly(&ro, path, err, sizeof err), 0);
  submitter_t s = {.f = f, .n = 2000};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, submit_chains, &s), 0);
  int64_t last = 0;
  int reads = 0;
  while (!atomic_load(&s.done) || reads < 3) {
    int64_t n = lu_store_count(ro);
    assert_true(n >= last); /* committed batches only ever add */
    last = n;
    reads++;
  }
  pthread_join(t, NULL);
  assert_int_equal(lu_manager_drain(f->m), 0);
  /* Quiet now: the manager's own store may be queried. */
  int64_t mine = lu_store_count(lu_manager_store(f->m));
  /* Per A: its result and B; B's result and two Cs; two C results. */
  assert_int_equal(mine, 2000 * 7);
  assert_int_equal(lu_store_count(ro), mine);
  lu_store_close(ro);
  fx_free(f);
  unlink(path);
  snprintf(aux, sizeof aux, "%s-wal", path);
  unlink(aux);
  snprintf(aux, sizeof aux, "%s-shm", path);
  unlink(aux);
}

static void test_bad_config(void **state) {
  (void)state;
  lu_registry_t *reg;
  lu_registry_new(&reg);
  lu_config_t cfg;
  lu_config_init(&cfg);
  lu_manager_t *m = (lu_manager_t *)1;
  char err[256];
  cfg.shards = 0;
  assert_int_equal(lu_manager_new(&m, &cfg, reg, err, sizeof err), LU_EINVAL);
  assert_null(m);
  assert_non_null(strstr(err, "shards"));
  lu_config_init(&cfg);
  cfg.store = "/proc/no/such/dir/x.db";
  assert_int_equal(lu_manager_new(&m, &cfg, reg, err, sizeof err),
                   LU_ESTORE);
  assert_non_null(strstr(err, "/proc/no/such/dir/x.db"));
  lu_registry_free(reg);
}

static void test_submit_built_event(void **state) {
  (void)state;
  fixture_t *f = fx_new(1, ":memory:");
  fx_start(f);
  lu_event_t *ev;
  assert_int_equal(lu_event_new(&ev, "Echo", "test", "subj",
                                cJSON_CreateString("hi")), 0);
  assert_int_equal(lu_event_set(ev, "id", "built-1"), 0);
  assert_int_equal(lu_manager_submit(f->m, ev), 0);
  lu_manager_drain(f->m);
  const rec_t *r = find(f, "built-1", 0);
  assert_non_null(r);
  assert_int_equal(r->kind, LU_OUTCOME_COMPLETED);
  assert_non_null(strstr(r->json, "\"data\":\"hi\""));
  fx_free(f);
}

/* A store that counts the records flagged LU_RECORD_ONCE and passes
 * every append on to an in-memory SQLite store. */
typedef struct flagstore_s {
  lu_store_t base;
  lu_store_t *inner;
  size_t flagged, plain;
} flagstore_t;

static int fs_append(lu_store_t *st, const lu_record_t *r, size_t n,
                     size_t *ins) {
  flagstore_t *f = (flagstore_t *)st;
  for (size_t i = 0; i < n; i++) {
    if (r[i].flags & LU_RECORD_ONCE) f->flagged++;
    else f->plain++;
  }
  return lu_store_append(f->inner, r, n, ins);
}
static int fs_query(lu_store_t *st, const lu_query_t *q, lu_store_row_cb cb,
                    void *ud) {
  return lu_store_query(((flagstore_t *)st)->inner, q, cb, ud);
}
static int64_t fs_count(lu_store_t *st) {
  return lu_store_count(((flagstore_t *)st)->inner);
}
static void fs_close(lu_store_t *st) {
  lu_store_close(((flagstore_t *)st)->inner);
}
static const lu_store_ops_t flagstore_ops = {.name = "flags",
                                             .append = fs_append,
                                             .query = fs_query,
                                             .count = fs_count,
                                             .close = fs_close};

/* Only what will never be redelivered may be packed: the records of an
 * event run with packable = 1 (an exec request) carry LU_RECORD_ONCE,
 * those of a submitted input do not. */
static void test_packable_records(void **state) {
  (void)state;
  flagstore_t fs = {.base.ops = &flagstore_ops};
  char err[256];
  assert_int_equal(lu_store_open(&fs.inner, ":memory:", err, sizeof err), 0);
  fixture_t *f = fx_new(1, NULL);
  f->cfg.store_handle = &fs.base;
  fx_start(f);
  submitf(f, 1, EV("in-1", "Echo", "\"a\""));
  lu_manager_drain(f->m);
  assert_int_equal(fs.flagged, 0);
  size_t plain = fs.plain;
  assert_true(plain >= 1);
  lu_event_t *ev;
  assert_int_equal(lu_event_new(&ev, "Echo", "test", "subj",
                                cJSON_CreateString("b")), 0);
  lu_done_t none = {NULL, NULL};
  assert_int_equal(
      lu_manager_run(f->m, ev, NULL, LU_RUN_ONCE | 0u, none), 0);
  lu_manager_drain(f->m);
  assert_int_equal(fs.flagged, plain); /* the same outcome, flagged */
  assert_int_equal(fs.plain, plain);
  fx_free(f); /* closes fs through the manager */
}

/* One Where item with data through run_local in `mode`, no drain: 1 if
 * it ran on the calling thread (else it was queued, and where_tid[1] is 0
 * or, later, the shard thread's). */
static int where_run(fixture_t *f, const char *data, unsigned mode) {
  lu_event_t *ev;
  if (lu_event_new(&ev, "Where", "test", "subj", cJSON_Parse(data)))
    abort();
  atomic_store(&where_tid[1], 0);
  atomic_store(&where_tid[2], 0);
  lu_done_t none = {NULL, NULL};
  if (lu_manager_run(f->m, ev, NULL, LU_RUN_ONCE | mode, none)) abort();
  return atomic_load(&where_tid[1]) == (long)syscall(SYS_gettid);
}

static int where_now(fixture_t *f, unsigned mode) {
  return where_run(f, "{}", mode);
}

/* run_local(LU_RUN_INLINE) on a shard whose thread sleeps: the function
 * runs on the caller's thread.  The shard thread may still be on its way
 * to sleep after a drain, so a few tries are allowed for the first. */
static int where_inline(fixture_t *f, const char *data, unsigned mode) {
  struct timespec ms = {0, 2000000};
  nanosleep(&ms, NULL); /* let the shard thread fall asleep */
  int here = where_run(f, data, mode);
  lu_manager_drain(f->m);
  return here;
}

static void test_run_inline(void **state) {
  (void)state;
  fixture_t *f = fx_new(1, ":memory:");
  fx_start(f);
  int here = 0;
  for (int i = 0; i < 20 && !here; i++)
    here = where_inline(f, "{}", LU_RUN_INLINE);
  assert_true(here);
  for (int i = 0; i < 5; i++)
    assert_false(where_inline(f, "{}", 0u));
  /* An inline run that ends in a retry: the shard thread must be woken
   * to run attempt 2 (else the drain would never return). */
  alarm(60);
  here = 0;
  for (int i = 0; i < 20 && !here; i++)
    here = where_inline(f, "{\"retry\":true}", LU_RUN_INLINE);
  alarm(0);
  assert_true(here);
  assert_int_not_equal(atomic_load(&where_tid[2]), 0);
  assert_int_not_equal(atomic_load(&where_tid[2]), (long)syscall(SYS_gettid));
  const rec_t *last = &f->seen.r[f->seen.n - 1];
  assert_int_equal(last->kind, LU_OUTCOME_COMPLETED);
  assert_int_equal(last->attempts, 2);
  assert_balanced(f);
  fx_free(f);
}

typedef struct leaver_s {
  fixture_t *f;
  int ran_here;
} leaver_t;

/* Starts a burst ((LU_RUN_INLINE | LU_RUN_MORE)) and exits without ending it. */
static void *more_then_leave(void *arg) {
  leaver_t *l = arg;
  l->ran_here = where_now(l->f, (LU_RUN_INLINE | LU_RUN_MORE));
  return NULL;
}

static int leave_parked(fixture_t *f) {
  struct timespec ms = {0, 2000000};
  nanosleep(&ms, NULL); /* let the shard thread fall asleep */
  leaver_t l = {f, 0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, more_then_leave, &l), 0);
  pthread_join(th, NULL);
  return l.ran_here;
}

static void *where_last(void *arg) {
  leaver_t *l = arg;
  l->ran_here = where_now(l->f, LU_RUN_INLINE);
  return NULL;
}

/* A caller that keeps the shard's turn for a burst ((LU_RUN_INLINE | LU_RUN_MORE)) and
 * never calls again does not stall the shard: work queued for it makes
 * the thread take the turn over at once, and with nothing queued it takes
 * it over after ~1 ms, so a later caller finds the shard asleep and free
 * again.  lu_manager_end_burst gives the turn back at once.  Each check
 * is tried a few times, since the shard thread may be on its way to sleep
 * (the first call then queues instead of keeping a turn); without the
 * feature each check fails on every try.  alarm() fails a hang. */
static void test_run_inline_burst(void **state) {
  (void)state;
  fixture_t *f = fx_new(1, ":memory:");
  fx_start(f);
  alarm(60);
  /* A burst runs on its caller's thread, call after call. */
  int here = 0;
  for (int i = 0; i < 20 && !here; i++) {
    struct timespec ms = {0, 2000000};
    nanosleep(&ms, NULL);
    here = where_now(f, (LU_RUN_INLINE | LU_RUN_MORE));
  }
  assert_true(here);
  int n_here = 0;
  for (int i = 0; i < 8; i++) n_here += where_now(f, (LU_RUN_INLINE | LU_RUN_MORE));
  n_here += where_now(f, LU_RUN_INLINE);
  assert_true(n_here >= 1);
  lu_manager_drain(f->m);
  size_t before = f->seen.n;

  /* Queued work behind an abandoned turn runs (else the drain hangs), on
   * the shard thread. */
  int parked = 0;
  for (int i = 0; i < 20 && !parked; i++) {
    parked = leave_parked(f);
    if (!parked) lu_manager_drain(f->m);
  }
  assert_true(parked);
  atomic_store(&where_tid[1], 0);
  submitf(f, 1, EV("q-1", "Where", "{}"));
  lu_manager_drain(f->m);
  assert_int_not_equal(atomic_load(&where_tid[1]), 0);
  assert_int_not_equal(atomic_load(&where_tid[1]),
                       (long)syscall(SYS_gettid));

  /* With nothing queued, the turn is taken over after a while: a later
   * caller runs inline again (it would be queued behind a kept turn). */
  int freed = 0;
  for (int i = 0; i < 20 && !freed; i++) {
    if (!leave_parked(f)) {
      lu_manager_drain(f->m);
      continue;
    }
    struct timespec wait = {0, 50000000};
    nanosleep(&wait, NULL);
    freed = where_now(f, LU_RUN_INLINE);
    lu_manager_drain(f->m);
  }
  assert_true(freed);

  /* end_burst gives the turn back at once: another thread runs inline. */
  int given = 0;
  for (int i = 0; i < 20 && !given; i++) {
    struct timespec ms = {0, 2000000};
    nanosleep(&ms, NULL);
    if (!where_now(f, (LU_RUN_INLINE | LU_RUN_MORE))) {
      lu_manager_drain(f->m);
      continue;
    }
    lu_manager_end_burst(f->m);
    leaver_t l = {f, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, where_last, &l), 0);
    pthread_join(th, NULL);
    given = l.ran_here;
    lu_manager_drain(f->m);
  }
  assert_true(given);
  alarm(0);
  assert_true(f->seen.n > before);
  for (size_t i = 0; i < f->seen.n; i++)
    assert_int_equal(f->seen.r[i].kind, LU_OUTCOME_COMPLETED);
  assert_balanced(f);
  fx_free(f);
}

/* Callers running exec items inline, in bursts, race with each other and
 * with the shard thread (submitted events): each item runs once, one at a
 * time per shard (ThreadSanitizer checks the second), and every outcome
 * lands. */
typedef struct inliner_s {
  fixture_t *f;
  int n;
} inliner_t;

static void *inliner(void *arg) {
  inliner_t *in = arg;
  lu_done_t none = {NULL, NULL};
  for (int i = 0; i < in->n; i++) {
    lu_event_t *ev;
    if (lu_event_new(&ev, "Echo", "test", "subj", cJSON_CreateNumber(i)))
      abort();
    /* Bursts of 4 on one shard, then a last call: the turn is kept
     * across them, parked, while the others race for it. */
    unsigned mode = LU_RUN_INLINE;
    if (!(i % 4 == 3 || i == in->n - 1)) mode |= LU_RUN_MORE;
    lu_manager_run(in->f->m, ev, (i / 4) % 2 ? "shard-1" : NULL, LU_RUN_ONCE | mode, none);
  }
  return NULL;
}

static void test_run_inline_concurrent(void **state) {
  (void)state;
  fixture_t *f = fx_new(2, ":memory:");
  fx_start(f);
  pthread_t th[3];
  inliner_t in = {f, 300};
  for (int i = 0; i < 3; i++)
    assert_int_equal(pthread_create(&th[i], NULL, inliner, &in), 0);
  for (int i = 0; i < 300; i++) {
    char id[32];
    snprintf(id, sizeof id, "c%d", i);
    submitf(f, (uint64_t)i + 1, EV("%s", "Echo", "1"), id, id, id);
  }
  for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
  lu_manager_drain(f->m);
  assert_int_equal(f->seen.n, 1200);
  for (size_t i = 0; i < f->seen.n; i++)
    assert_int_equal(f->seen.r[i].kind, LU_OUTCOME_COMPLETED);
  assert_balanced(f);
  fx_free(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_result_envelope),
      cmocka_unit_test(test_result_bytes),
      cmocka_unit_test(test_chain_and_counts),
      cmocka_unit_test(test_chain_envelope),
      cmocka_unit_test(test_depth_limit),
      cmocka_unit_test(test_retries),
      cmocka_unit_test(test_timeout_discards_output),
      cmocka_unit_test(test_timeout_counts_cpu_time),
      cmocka_unit_test(test_pool_wake_rules),
      cmocka_unit_test(test_hung_function_abandoned),
      cmocka_unit_test(test_poison_isolated),
      cmocka_unit_test(test_poison_hang_isolated),
      cmocka_unit_test(test_delivery_budget),
      cmocka_unit_test(test_record_too_large),
      cmocka_unit_test(test_store_retry_window),
      cmocka_unit_test(test_breaker_opens),
      cmocka_unit_test(test_hash_agreement),
      cmocka_unit_test(test_sticky_agreement),
      cmocka_unit_test(test_sticky_new_sessions_spread),
      cmocka_unit_test(test_sessions_expire_in_a_long_run),
      cmocka_unit_test(test_round_robin_spreads),
      cmocka_unit_test(test_selection),
      cmocka_unit_test(test_explain),
      cmocka_unit_test(test_rejections),
      cmocka_unit_test(test_idempotent_replay),
      cmocka_unit_test(test_store_read_during_run),
      cmocka_unit_test(test_bad_config),
      cmocka_unit_test(test_submit_built_event),
      cmocka_unit_test(test_packable_records),
      cmocka_unit_test(test_run_inline),
      cmocka_unit_test(test_run_inline_burst),
      cmocka_unit_test(test_run_inline_concurrent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
