/*
 * test_alloc_fail.c - out of memory at every allocation of submit ->
 * outcome, the way curl and SQLite test theirs: run "make a manager,
 * submit N events, drain, free" once to count its allocations (K), then
 * K more times, failing the k-th allocation in run k.  Every run must:
 *
 *  - not crash (and, under ASan, not leak: LeakSanitizer at exit);
 *  - give every input exactly one outcome, unless its submit returned
 *    LU_ENOMEM (then none: nothing was taken), or lu_manager_new itself
 *    returned LU_ENOMEM;
 *  - give back every block it allocated (counted here, so the plain
 *    build checks leaks too);
 *  - end every input the way the clean run did (short memory never turns a
 *    valid event into lucent.Rejected, or a completion into a failure);
 *  - never complete an attempt whose output was lost (a result or an
 *    emitted event the function could not record): it is retried, and a
 *    warning logged.
 *
 * The lucent objects are linked statically with the linker's --wrap for
 * malloc, calloc, realloc, free, strdup and strndup (tests/CMakeLists.txt),
 * and cJSON (a shared library) gets the same allocator through
 * cJSON_InitHooks.  The store is a double (store_double.h): SQLite
 * allocates on its own.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <execinfo.h>

#include "lucent/lucent.h"
#include "store_double.h"

/* ---- the allocator ---------------------------------------------------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

static _Atomic int armed;           /* count (and fail) allocations */
static _Atomic unsigned long count; /* allocations while armed */
static _Atomic unsigned long fail_at; /* 0 = never */
static _Atomic int failed;          /* the fail_at-th came and failed */
static _Atomic long live;           /* blocks allocated - freed (armed) */

/* 1: this allocation fails. */
static void *where[8]; /* the failed allocation's stack */
static int nwhere;
static int should_fail(void) {
  if (!atomic_load_explicit(&armed, memory_order_relaxed)) return 0;
  unsigned long k = atomic_fetch_add(&count, 1) + 1;
  if (k != atomic_load(&fail_at)) return 0;
  atomic_store(&failed, 1);
  nwhere = backtrace(where, 8);
  return 1;
}

static void got(void *p) {
  if (p && atomic_load_explicit(&armed, memory_order_relaxed))
    atomic_fetch_add(&live, 1);
}

void *__wrap_malloc(size_t n) {
  if (should_fail()) return NULL;
  void *p = __real_malloc(n);
  got(p);
  return p;
}

void *__wrap_calloc(size_t k, size_t n) {
  if (should_fail()) return NULL;
  void *p = __real_calloc(k, n);
  got(p);
  return p;
}

void *__wrap_realloc(void *p, size_t n) {
  if (should_fail()) return NULL;
  void *q = __real_realloc(p, n);
  if (!p) got(q);
  return q;
}

void __wrap_free(void *p) {
  if (p && atomic_load_explicit(&armed, memory_order_relaxed))
    atomic_fetch_sub(&live, 1);
  __real_free(p);
}

char *__wrap_strdup(const char *s) {
  if (should_fail()) return NULL;
  char *p = __real_strdup(s);
  got(p);
  return p;
}

char *__wrap_strndup(const char *s, size_t n) {
  if (should_fail()) return NULL;
  char *p = __real_strndup(s, n);
  got(p);
  return p;
}

/* ---- the pipeline under test ------------------------------------------ */

LU_FUNCTION(Echo, .events = "Echo", LU_ROUND_ROBIN) {
  (void)ctx;
  lu_out_result(out, data ? cJSON_Duplicate(data, 1) : cJSON_CreateNull());
  return LU_OK;
}

LU_FUNCTION(Emit, .events = "Emit", LU_HASH_BASED("k")) {
  (void)ctx;
  lu_out_emit(out, "Echo", NULL, cJSON_Duplicate(data, 1));
  lu_out_result(out, cJSON_CreateString("emitted"));
  return LU_OK;
}

/* Fails its first attempt: a retry on the shard's timer heap. */
LU_FUNCTION(Flaky, .events = "Flaky", .max_retries = 2,
            .retry_backoff_ms = 1) {
  (void)data;
  if (lu_ctx_attempt(ctx) < 2)
    return lu_out_fail(out, LU_RETRY, "not yet");
  lu_out_result(out, cJSON_CreateTrue());
  return LU_OK;
}

#define N 12
static const char *const inputs[N] = {
    "{\"specversion\":\"1.0\",\"id\":\"e0\",\"type\":\"Echo\",\"source\":\"t\","
    "\"data\":{\"a\":[1,2,{\"b\":\"c\"}]}}",
    "{\"specversion\":\"1.0\",\"id\":\"e1\",\"type\":\"Echo\",\"source\":\"t\","
    "\"subject\":\"s1\",\"correlationid\":\"c1\"}",
    "{\"specversion\":\"1.0\",\"id\":\"e2\",\"type\":\"Emit\",\"source\":\"t\","
    "\"data\":{\"k\":\"x\"}}",
    "{\"specversion\":\"1.0\",\"id\":\"e3\",\"type\":\"Emit\",\"source\":\"t\","
    "\"data\":{\"k\":7}}",
    "{\"specversion\":\"1.0\",\"id\":\"e4\",\"type\":\"Flaky\",\"source\":\"t\"}",
    "{\"specversion\":\"1.0\",\"id\":\"e5\",\"type\":\"Emit\",\"source\":\"t\","
    "\"data\":{}}", /* no key: rejected */
    "{\"specversion\":\"1.0\",\"id\":\"e6\",\"type\":\"Nobody\",\"source\":\"t\"}",
    "{\"id\":\"e7\",\"type\":", /* not JSON */
    "{\"specversion\":\"1.0\",\"type\":\"Echo\",\"source\":\"t\"}", /* no id */
    "{\"specversion\":\"1.0\",\"id\":\"e9\",\"type\":\"Echo\",\"source\":\"t\","
    "\"tenantid\":\"acme\",\"data\":\"text\"}",
    "{\"specversion\":\"1.0\",\"id\":\"e10\",\"type\":\"Flaky\",\"source\":\"t\"}",
    "{\"specversion\":\"1.0\",\"id\":\"e11\",\"type\":\"Echo\",\"source\":\"t\","
    "\"data\":null}",
};

/* Outcomes of inputs, by line (1..N), and their kinds; no allocation
 * here. */
static _Atomic unsigned outcomes[N + 1];
static _Atomic int kinds[N + 1];
static int clean_kinds[N + 1]; /* the clean run's */
static _Atomic unsigned derived;  /* outcomes of emitted events */
static unsigned clean_derived;

static void on_outcome(void *ud, const lu_outcome_t *o) {
  (void)ud;
  if (o->derived) atomic_fetch_add(&derived, 1);
  if (!o->derived && o->line >= 1 && o->line <= N) {
    atomic_fetch_add(&outcomes[o->line], 1);
    atomic_store(&kinds[o->line], (int)o->kind);
  }
}

static lu_registry_t *reg;
static int logfd = -1;

static off_t log_size(void) { return lseek(logfd, 0, SEEK_END); }

/* One run; fail the k-th allocation (0: none).  Returns the allocations
 * it made. */
static unsigned long run(unsigned long k, int *refused_out) {
  for (int i = 0; i <= N; i++) atomic_store(&outcomes[i], 0);
  atomic_store(&derived, 0);
  atomic_store(&count, 0);
  atomic_store(&failed, 0);
  atomic_store(&live, 0);
  atomic_store(&fail_at, k);
  off_t log0 = log_size();
  int taken[N + 1] = {0}, refused = 0;
  lu_store_t *st = sd_open(__real_malloc, __real_free);
  assert_non_null(st);
  lu_config_t cfg;
  lu_config_init(&cfg);
  cfg.shards = 2;
  cfg.threads = 2;
  cfg.store_handle = st;
  cfg.on_outcome = on_outcome;
  cfg.seed = 7;
  lu_manager_t *m = NULL;
  char err[256];
  atomic_store(&armed, 1);
  int rc = lu_manager_new(&m, &cfg, reg, err, sizeof err);
  if (rc) {
    atomic_store(&armed, 0);
    if (rc != LU_ENOMEM) fail_msg("k=%lu: lu_manager_new: %d %s", k, rc, err);
    refused = 1;
  } else {
    for (int i = 0; i < N; i++) {
      rc = lu_manager_submit_json(m, inputs[i], strlen(inputs[i]),
                                  (uint64_t)i + 1);
      if (rc == 0) taken[i + 1] = 1;
      else if (rc == LU_ENOMEM) refused = 1;
      else fail_msg("k=%lu: submit %d returned %d", k, i, rc);
    }
    lu_manager_drain(m);
    for (int i = 1; i <= N; i++) {
      if (atomic_load(&outcomes[i]) != (unsigned)taken[i])
        fail_msg("k=%lu: input %d (%s) has %u outcomes", k, i,
                 taken[i] ? "taken" : "refused", atomic_load(&outcomes[i]));
      /* Short memory never changes how an input ends (a valid event
       * rejected as malformed, say): it is refused or it waits. */
      if (!k) clean_kinds[i] = atomic_load(&kinds[i]);
      else if (taken[i] && atomic_load(&kinds[i]) != clean_kinds[i])
        fail_msg("k=%lu: input %d ended %s, not %s", k, i,
                 lu_outcome_name((lu_outcome_kind_t)atomic_load(&kinds[i])),
                 lu_outcome_name((lu_outcome_kind_t)clean_kinds[i]));
    }
    /* Every event the Emit inputs (lines 3, 4) emitted has its outcome:
     * none was dropped because recording it ran out of memory. */
    if (!k) clean_derived = atomic_load(&derived);
    else if (taken[3] && taken[4] && atomic_load(&derived) != clean_derived)
      fail_msg("k=%lu: %u outcomes of emitted events, not %u", k,
               atomic_load(&derived), clean_derived);
    uint64_t errors = lu_manager_store_errors(m);
    if (errors) fail_msg("k=%lu: %llu store errors", k,
                         (unsigned long long)errors);
    lu_manager_free(m);
    atomic_store(&armed, 0);
  }
  long left = atomic_load(&live);
  if (left != 0) fail_msg("k=%lu: %ld blocks not freed", k, left);
  if (refused_out) *refused_out = refused;
  /* Said so: an input refused (the caller knows), or a record logged. */
  /* Silent: a function's own cJSON call that got NULL and used it as
   * JSON null, or a malformed input rejected as it would be anyway.
   * LUCENT_TEST_ALLOC_TRACE=1 shows where each one failed. */
  if (k && atomic_load(&failed) && !refused && log_size() == log0 &&
      getenv("LUCENT_TEST_ALLOC_TRACE")) {
    printf("note: k=%lu failed silently\n", k);
    fflush(stdout);
    backtrace_symbols_fd(where, nwhere, 1);
  }
  return atomic_load(&count);
}

static void test_every_allocation_fails_once(void **state) {
  (void)state;
  unsigned long clean = run(0, NULL);
  assert_true(clean > 50);
  const char *lim = getenv("LUCENT_TEST_ALLOC_MAX");
  unsigned long K = clean + clean / 10; /* threads vary the count a little */
  if (lim && atol(lim) > 0 && (unsigned long)atol(lim) < K) K = atol(lim);
  unsigned long refused = 0, silent = 0;
  for (unsigned long k = 1; k <= K; k++) {
    off_t log0 = log_size();
    int r = 0;
    run(k, &r);
    refused += r;
    if (atomic_load(&failed) && !r && log_size() == log0) silent++;
  }
  printf("clean run: %lu allocations; %lu runs, %lu refused an input, "
         "%lu degraded silently\n", clean, K, refused, silent);
}

int main(void) {
  cJSON_Hooks hooks = {__wrap_malloc, __wrap_free};
  cJSON_InitHooks(&hooks);
  FILE *lf = tmpfile();
  if (!lf) return 1;
  logfd = fileno(lf);
  lu_log_set_fd(logfd);
  lu_log_set_format(LU_LOG_FORMAT_JSON);
  lu_log_set_level(LU_LOG_WARN);
  const lu_fn_t *const *fns;
  size_t n = lu_fns_here(&fns);
  if (lu_registry_new(&reg) || lu_registry_add(reg, fns, n, "test")) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_allocation_fails_once),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  lu_registry_free(reg);
  fclose(lf);
  return rc;
}
