/*
 * test_metrics.c - the Prometheus text exposition (src/core/metrics.c): the
 * format's rules line by line, label escaping, histogram buckets
 * (cumulative, monotonic, +Inf == count, never counting a value above its
 * bound), the bucket layout against hist.c, and a real manager's counters
 * against its own accessors.  Also the /readyz checks (src/http/health.c) and
 * address errors of lu_http_start().
 */
#include <ctype.h>
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
#include <sqlite3.h>

#include "lucent/http.h"
#include "obs_internal.h"

/* ---- functions for the manager test ----------------------------------- */

LU_FUNCTION(MEcho, .events = "Echo") {
  lu_out_result(out, cJSON_CreateNull());
  return LU_OK;
}
LU_FUNCTION(MFlaky, .events = "Flaky", .max_retries = 2,
            .retry_backoff_ms = 1) {
  if (lu_ctx_attempt(ctx) < 2) return lu_out_fail(out, LU_RETRY, "not yet");
  lu_out_emit(out, "Echo", NULL, NULL);
  return LU_OK;
}
LU_FUNCTION(MBroken, .events = "Broken") {
  return lu_out_fail(out, LU_FAIL, "always");
}

/* ---- a small parser for the text format ------------------------------- */

typedef struct sample_s {
  char name[128];
  char labels[8][2][128]; /* unescaped name, value */
  int nlabels;
  double value;
} sample_t;

typedef struct fam_s {
  char name[128], type[16];
  int help, helped_before_type;
} fam_t;

typedef struct parsed_s {
  fam_t fam[64];
  int nfam;
  sample_t *s;
  size_t n;
} parsed_t;

static fam_t *fam_find(parsed_t *p, const char *name) {
  for (int i = 0; i < p->nfam; i++)
    if (!strcmp(p->fam[i].name, name)) return &p->fam[i];
  return NULL;
}

static const char *label(const sample_t *s, const char *k) {
  for (int i = 0; i < s->nlabels; i++)
    if (!strcmp(s->labels[i][0], k)) return s->labels[i][1];
  return NULL;
}

/* The family a sample belongs to: histogram series drop their suffix. */
static fam_t *family_of(parsed_t *p, const char *name) {
  fam_t *f = fam_find(p, name);
  if (f) return f;
  static const char *sfx[] = {"_bucket", "_sum", "_count"};
  for (int i = 0; i < 3; i++) {
    size_t nl = strlen(name), sl = strlen(sfx[i]);
    if (nl > sl && !strcmp(name + nl - sl, sfx[i])) {
      char base[128];
      snprintf(base, sizeof base, "%.*s", (int)(nl - sl), name);
      f = fam_find(p, base);
      if (f && !strcmp(f->type, "histogram")) return f;
    }
  }
  return NULL;
}

static int name_char(int c, int first) {
  return isalpha(c) || c == '_' || c == ':' || (!first && isdigit(c));
}

/* Parses the whole exposition, failing the test on any rule broken. */
static void parse(const char *text, parsed_t *p) {
  memset(p, 0, sizeof *p);
  size_t cap = 0;
  size_t tl = strlen(text);
  assert_true(tl > 0 && text[tl - 1] == '\n'); /* ends with a newline */
  const char *line = text;
  while (*line) {
    const char *end = strchr(line, '\n');
    assert_non_null(end);
    size_t len = (size_t)(end - line);
    assert_true(len > 0); /* no blank lines */
    assert_true(line[len - 1] != ' ' && line[len - 1] != '\t');
    char buf[1024];
    assert_true(len < sizeof buf);
    memcpy(buf, line, len);
    buf[len] = 0;
    if (!strncmp(buf, "# HELP ", 7) || !strncmp(buf, "# TYPE ", 7)) {
      char name[128], rest[512];
      assert_int_equal(sscanf(buf + 7, "%127s %511[^\n]", name, rest), 2);
      fam_t *f = fam_find(p, name);
      if (buf[2] == 'H') {
        assert_null(f); /* HELP first, once */
        assert_true(p->nfam < 64);
        f = &p->fam[p->nfam++];
        snprintf(f->name, sizeof f->name, "%s", name);
        f->help = 1;
      } else {
        assert_non_null(f);   /* HELP came before TYPE */
        assert_int_equal(f->type[0], 0); /* one TYPE per family */
        assert_true(!strcmp(rest, "counter") || !strcmp(rest, "gauge") ||
                    !strcmp(rest, "histogram"));
        snprintf(f->type, sizeof f->type, "%.15s", rest);
        f->helped_before_type = 1;
      }
    } else {
      assert_true(buf[0] != '#');
      if (p->n == cap) {
        cap = cap ? cap * 2 : 256;
        p->s = realloc(p->s, cap * sizeof *p->s);
        assert_non_null(p->s);
      }
      sample_t *s = &p->s[p->n++];
      memset(s, 0, sizeof *s);
      const char *c = buf;
      size_t i = 0;
      assert_true(name_char((unsigned char)*c, 1));
      while (name_char((unsigned char)*c, 0)) s->name[i++] = *c++;
      if (*c == '{') {
        c++;
        while (*c != '}') {
          assert_true(s->nlabels < 8);
          char *k = s->labels[s->nlabels][0], *v = s->labels[s->nlabels][1];
          i = 0;
          assert_true(name_char((unsigned char)*c, 1));
          while (name_char((unsigned char)*c, 0)) k[i++] = *c++;
          assert_int_equal(*c++, '=');
          assert_int_equal(*c++, '"');
          i = 0;
          while (*c != '"') {
            assert_true(*c != 0 && *c != '\n');
            if (*c == '\\') {
              c++;
              assert_true(*c == '\\' || *c == '"' || *c == 'n');
              v[i++] = *c == 'n' ? '\n' : *c;
              c++;
            } else {
              v[i++] = *c++;
            }
          }
          c++;
          s->nlabels++;
          if (*c == ',') c++;
          else assert_int_equal(*c, '}');
        }
        c++;
      }
      assert_int_equal(*c++, ' ');
      char *endp;
      s->value = strtod(c, &endp);
      assert_true(endp != c && *endp == 0);
      fam_t *f = family_of(p, s->name);
      assert_non_null(f); /* every sample after its family's TYPE */
      assert_true(f->type[0] != 0);
      if (!strcmp(f->type, "counter"))
        assert_true(strlen(s->name) > 6 &&
                    !strcmp(s->name + strlen(s->name) - 6, "_total"));
    }
    line = end + 1;
  }
}

/* Checks every histogram series: le ascending, counts cumulative, the last
 * bucket +Inf equal to _count.  Returns the number of series. */
static int check_histograms(parsed_t *p) {
  int series = 0;
  for (size_t i = 0; i < p->n; i++) {
    const sample_t *s = &p->s[i];
    size_t nl = strlen(s->name);
    if (nl < 7 || strcmp(s->name + nl - 7, "_bucket")) continue;
    const char *le = label(s, "le");
    assert_non_null(le);
    if (i == 0 || strcmp(p->s[i - 1].name, s->name) ||
        !strcmp(label(&p->s[i - 1], "le"), "+Inf")) {
      series++;
      continue; /* first bucket of a series */
    }
    const sample_t *prev = &p->s[i - 1];
    assert_true(strtod(le, NULL) > strtod(label(prev, "le"), NULL) ||
                !strcmp(le, "+Inf"));
    assert_true(s->value >= prev->value); /* cumulative */
    if (!strcmp(le, "+Inf")) {
      /* then _sum, then _count equal to +Inf */
      assert_true(i + 2 < p->n);
      const sample_t *cnt = &p->s[i + 2];
      assert_string_equal(cnt->name + strlen(cnt->name) - 6, "_count");
      assert_true(cnt->value == s->value);
    }
  }
  return series;
}

static const sample_t *find_sample(parsed_t *p, const char *name,
                                   const char *k1, const char *v1,
                                   const char *k2, const char *v2) {
  for (size_t i = 0; i < p->n; i++) {
    const sample_t *s = &p->s[i];
    if (strcmp(s->name, name)) continue;
    if (k1 && (!label(s, k1) || strcmp(label(s, k1), v1))) continue;
    if (k2 && (!label(s, k2) || strcmp(label(s, k2), v2))) continue;
    return s;
  }
  return NULL;
}

/* ---- tests ------------------------------------------------------------ */

static void test_hist_upper_matches_hist(void **state) {
  (void)state;
  lu_hist_t *h = calloc(1, sizeof *h);
  assert_non_null(h);
  uint64_t big = (uint64_t)1 << 62;
  for (unsigned b = 0; b < 470; b++) {
    uint64_t up = lu__obs_hist_upper(b);
    uint64_t lo = b ? lu__obs_hist_upper(b - 1) + 1 : 0;
    assert_true(lo <= up);
    /* Both ends of bucket b are in the same hist.c bucket, whose upper
     * bound is `up`: the median of {v, big} is that bucket's upper. */
    uint64_t ends[2] = {lo, up};
    for (int e = 0; e < 2; e++) {
      memset(h, 0, sizeof *h);
      lu__hist_add(h, ends[e]);
      lu__hist_add(h, big);
      assert_int_equal(lu__hist_quantile(h, 0.5), up);
    }
  }
  free(h);
}

static void test_cumulative_buckets(void **state) {
  (void)state;
  lu_hist_t *h = calloc(1, sizeof *h);
  assert_non_null(h);
  enum { N = 20000 };
  static uint64_t v[N];
  uint64_t rng = 7;
  for (int i = 0; i < N; i++) {
    /* log-uniform from 1 ns to ~30 s: every bucket sees values */
    double x = lu__rand_unit(&rng) * 34.8;
    v[i] = (uint64_t)exp2(x);
    lu__hist_add(h, v[i]);
  }
  uint64_t cum[LU_OBS_NBUCKETS + 1];
  lu__obs_cumulative(h, cum);
  assert_int_equal(cum[LU_OBS_NBUCKETS], N);
  for (int k = 0; k < LU_OBS_NBUCKETS; k++) {
    if (k) assert_true(cum[k] >= cum[k - 1]);
    uint64_t le = lu__obs_le_ns[k], at_most = 0, well_below = 0;
    for (int i = 0; i < N; i++) {
      at_most += v[i] <= le;
      well_below += (double)v[i] * 1.125 <= (double)le;
    }
    /* Never a value above the bound; at most the last 12.5% below it
     * left to the next bucket. */
    assert_true(cum[k] <= at_most);
    assert_true(cum[k] >= well_below);
  }
  assert_true(cum[LU_OBS_NBUCKETS - 1] < N); /* some values above 10 s */
  /* Empty histogram: all zero. */
  memset(h, 0, sizeof *h);
  lu__obs_cumulative(h, cum);
  for (int k = 0; k <= LU_OBS_NBUCKETS; k++) assert_int_equal(cum[k], 0);
  free(h);
}

static void test_label_escaping(void **state) {
  (void)state;
  lu_buf_t b = {0};
  lu__metrics_label(&b, "a\"b\\c\nd\te");
  assert_string_equal(b.p, "a\\\"b\\\\c\\nd\te");
  lu__buf_free(&b);
  lu__metrics_label(&b, "");
  assert_true(b.p == NULL || b.len == 0);
  lu__buf_free(&b);
}

/* A snapshot made by hand: odd names that must be escaped. */
static void test_render_snapshot(void **state) {
  (void)state;
  static const char *weird_fn = "Quo\"te\\Back\nNL";
  static const char *weird_shard = "sh\"ard\\1";
  lu_obs_snap_t s;
  memset(&s, 0, sizeof s);
  s.version = "9.9.9";
  s.nshards = 2;
  s.nfns = 2;
  s.shards = calloc(2, sizeof *s.shards);
  s.fns = calloc(2, sizeof *s.fns);
  s.breakers = calloc(4, 1);
  assert_true(s.shards && s.fns && s.breakers);
  s.shards[0].id = "shard-0";
  s.shards[1].id = weird_shard;
  s.shards[0].in_flight = 3;
  s.shards[1].queue_depth = 5;
  s.shards[0].count.outcomes[LU_OUTCOME_COMPLETED] = 10;
  s.shards[1].count.derived[LU_OUTCOME_FAILED] = 2;
  s.intake.outcomes[LU_OUTCOME_REJECTED] = 4;
  s.total.outcomes[LU_OUTCOME_COMPLETED] = 10;
  s.total.outcomes[LU_OUTCOME_REJECTED] = 4;
  s.total.derived[LU_OUTCOME_FAILED] = 2;
  s.events_in = 14;
  s.store_errors = 1;
  s.fns[0].name = "Plain";
  s.fns[1].name = weird_fn;
  s.fns[0].executions = 12;
  s.fns[0].breaker_open = s.breakers;
  s.fns[1].breaker_open = s.breakers + 2;
  s.fns[1].breaker_open[1] = 1;
  for (uint64_t v = 1; v < 20000000000ull; v = v * 3 + 1)
    lu__hist_add(&s.fns[0].exec, v);
  lu__hist_add(&s.fns[1].e2e, 1500);

  lu_buf_t b = {0};
  lu__metrics_write(&b, &s);
  assert_false(b.oom);
  parsed_t p;
  parse(b.p, &p);
  /* 2 functions x 2 histograms */
  assert_int_equal(check_histograms(&p), 4);
  /* Escaped on the wire, intact once parsed. */
  assert_non_null(strstr(b.p, "function=\"Quo\\\"te\\\\Back\\nNL\""));
  assert_non_null(strstr(b.p, "shard=\"sh\\\"ard\\\\1\""));
  const sample_t *x = find_sample(&p, "lucent_function_breaker_open",
                                  "function", weird_fn, "shard", weird_shard);
  assert_non_null(x);
  assert_true(x->value == 1);
  x = find_sample(&p, "lucent_function_executions_total", "function",
                  "Plain", NULL, NULL);
  assert_non_null(x);
  assert_true(x->value == 12);
  x = find_sample(&p, "lucent_shard_outcomes_total", "shard", "intake",
                  "outcome", "rejected");
  assert_non_null(x);
  assert_string_equal(label(x, "origin"), "input");
  assert_true(x->value == 4);
  x = find_sample(&p, "lucent_shard_outcomes_total", "shard", weird_shard,
                  "origin", "emitted");
  assert_non_null(x);
  x = find_sample(&p, "lucent_events_in_total", NULL, NULL, NULL, NULL);
  assert_true(x && x->value == 14);
  x = find_sample(&p, "lucent_store_errors_total", NULL, NULL, NULL, NULL);
  assert_true(x && x->value == 1);
  x = find_sample(&p, "lucent_store_batches_direct_total", NULL, NULL, NULL,
                  NULL);
  assert_true(x && x->value == 0); /* SQLite: the store thread writes */
  x = find_sample(&p, "lucent_build_info", "version", "9.9.9", NULL, NULL);
  assert_true(x && x->value == 1);
  x = find_sample(&p, "lucent_function_duration_seconds_count", "function",
                  "Plain", NULL, NULL);
  assert_true(x && x->value == (double)s.fns[0].exec.n);
  x = find_sample(&p, "lucent_function_duration_seconds_sum", "function",
                  "Plain", NULL, NULL);
  assert_true(x && fabs(x->value - (double)s.fns[0].exec.sum / 1e9) < 1e-6);
  /* Bucket bounds: 1 us .. 10 s, then +Inf. */
  x = find_sample(&p, "lucent_function_duration_seconds_bucket", "function",
                  "Plain", "le", "1e-06");
  assert_non_null(x);
  x = find_sample(&p, "lucent_function_duration_seconds_bucket", "function",
                  "Plain", "le", "10");
  assert_non_null(x);
  /* The families a scraper relies on are all there, with their types. */
  static const char *const want[][2] = {
      {"lucent_function_executions_total", "counter"},
      {"lucent_function_completed_total", "counter"},
      {"lucent_function_failed_total", "counter"},
      {"lucent_function_retries_total", "counter"},
      {"lucent_function_timeouts_total", "counter"},
      {"lucent_function_duration_seconds", "histogram"},
      {"lucent_function_e2e_seconds", "histogram"},
      {"lucent_function_breaker_open", "gauge"},
      {"lucent_shard_in_flight", "gauge"},
      {"lucent_shard_queue_depth", "gauge"},
      {"lucent_shard_routed_total", "counter"},
      {"lucent_shard_forwarded_total", "counter"},
      {"lucent_shard_received_total", "counter"},
      {"lucent_shard_retries_total", "counter"},
      {"lucent_shard_outcomes_total", "counter"},
      {"lucent_events_in_total", "counter"},
      {"lucent_outcomes_total", "counter"},
      {"lucent_store_batches_total", "counter"},
      {"lucent_store_batches_direct_total", "counter"},
      {"lucent_store_records_total", "counter"},
      {"lucent_store_errors_total", "counter"},
      {"lucent_bus_errors_total", "counter"},
      {"lucent_build_info", "gauge"},
  };
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
    fam_t *f = fam_find(&p, want[i][0]);
    assert_non_null(f);
    assert_string_equal(f->type, want[i][1]);
  }
  free(p.s);
  lu__buf_free(&b);
  lu__obs_snapshot_free(&s);
}

static void test_render_manager(void **state) {
  (void)state;
  lu_registry_t *reg;
  assert_int_equal(lu_registry_new(&reg), 0);
  const lu_fn_t *const *fns;
  size_t nf = lu_fns_here(&fns);
  assert_int_equal(nf, 3);
  assert_int_equal(lu_registry_add(reg, fns, nf, "test"), 0);
  lu_config_t cfg;
  lu_config_init(&cfg);
  cfg.shards = 3;
  cfg.seed = 1;
  cfg.breaker_failures = 3;
  lu_manager_t *m;
  char err[256];
  assert_int_equal(lu_manager_new(&m, &cfg, reg, err, sizeof err), 0);
  int n = 0;
  for (int i = 0; i < 300; i++) {
    const char *type = i % 3 == 0 ? "Echo" : i % 3 == 1 ? "Flaky" : "Broken";
    char ev[256];
    snprintf(ev, sizeof ev,
             "{\"specversion\":\"1.0\",\"id\":\"e%d\",\"type\":\"%s\","
             "\"source\":\"t\",\"data\":{}}", i, type);
    assert_int_equal(lu_manager_submit_json(m, ev, strlen(ev), (uint64_t)i + 1), 0);
    n++;
  }
  assert_int_equal(lu_manager_submit_json(m, "{nope", 5, 999), 0);
  n++;
  lu_manager_drain(m);

  lu_obs_source_t src = {.manager = m};
  char *text;
  size_t len;
  assert_int_equal(lu_metrics_render(&src, &text, &len), 0);
  assert_int_equal(strlen(text), len);
  parsed_t p;
  parse(text, &p);
  assert_int_equal(check_histograms(&p), 6);
  lu_count_t c;
  uint64_t in;
  lu_manager_counts(m, &c, &in);
  const sample_t *x = find_sample(&p, "lucent_events_in_total", NULL, NULL,
                                  NULL, NULL);
  assert_true(x && x->value == (double)n && in == (uint64_t)n);
  double sum = 0;
  for (int k = 0; k < LU_OUTCOME__COUNT; k++) {
    x = find_sample(&p, "lucent_outcomes_total", "outcome",
                    lu_outcome_name((lu_outcome_kind_t)k), NULL, NULL);
    assert_non_null(x);
    assert_true(x->value == (double)c.outcomes[k]);
    sum += x->value;
  }
  assert_true(sum == (double)n);
  /* Per shard, intake included, the outcomes add up to the totals. */
  double shard_sum = 0;
  for (size_t i = 0; i < p.n; i++)
    if (!strcmp(p.s[i].name, "lucent_shard_outcomes_total") &&
        !strcmp(label(&p.s[i], "origin"), "input"))
      shard_sum += p.s[i].value;
  assert_true(shard_sum == (double)n);
  x = find_sample(&p, "lucent_shard_outcomes_total", "shard", "intake",
                  "outcome", "rejected");
  assert_true(x && x->value == 1);
  for (size_t i = 0; i < nf; i++) {
    lu_fn_stats_t st;
    lu_manager_fn_stats(m, i, &st);
#define CHECK(metric, field)                                             \
    x = find_sample(&p, metric, "function", st.name, NULL, NULL);       \
    assert_non_null(x);                                                 \
    assert_true(x->value == (double)st.field);
    CHECK("lucent_function_executions_total", executions);
    CHECK("lucent_function_completed_total", completed);
    CHECK("lucent_function_failed_total", failed);
    CHECK("lucent_function_retries_total", retries);
    CHECK("lucent_function_timeouts_total", timeouts);
    CHECK("lucent_function_duration_seconds_count", executions);
#undef CHECK
  }
  /* MFlaky retried every event once; MBroken's breaker opened. */
  x = find_sample(&p, "lucent_function_retries_total", "function", "MFlaky",
                  NULL, NULL);
  assert_true(x && x->value == 100);
  int open = 0;
  for (size_t i = 0; i < p.n; i++)
    if (!strcmp(p.s[i].name, "lucent_function_breaker_open") &&
        !strcmp(label(&p.s[i], "function"), "MBroken"))
      open += p.s[i].value == 1;
  assert_true(open >= 1);
  free(p.s);
  free(text);

  /* /readyz: in memory, everything passes. */
  lu_health_t *h = lu__health_new(&src);
  assert_non_null(h);
  lu_buf_t b = {0};
  assert_int_equal(lu__health_ready(h, &b), 1);
  cJSON *j = cJSON_Parse(b.p);
  assert_non_null(j);
  assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "ready")));
  const char *checks[] = {"registry", "store", "bus", "shard"};
  for (int i = 0; i < 4; i++) {
    cJSON *ck = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "checks"),
                                    checks[i]);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(ck, "ok")));
    assert_true(cJSON_IsString(cJSON_GetObjectItem(ck, "detail")));
  }
  cJSON_Delete(j);
  lu__buf_free(&b);
  lu__health_free(h);

  lu_manager_free(m);
  lu_registry_free(reg);
}

static int bus_down(void *ud, char *detail, size_t cap) {
  (void)ud;
  snprintf(detail, cap, "nats: connection lost");
  return 0;
}

/* A file store: writable, then locked by another connection, then
 * unlocked again (the probe's answer is cached for a second). */
static void test_readyz_store(void **state) {
  (void)state;
  const char *tmp = getenv("LUCENT_TEST_TMP");
  char path[512];
  snprintf(path, sizeof path, "%s/metrics-ready-%d.db", tmp ? tmp : "/tmp",
           (int)getpid());
  unlink(path);
  lu_registry_t *reg;
  assert_int_equal(lu_registry_new(&reg), 0);
  const lu_fn_t *const *fns;
  size_t nf = lu_fns_here(&fns);
  assert_int_equal(lu_registry_add(reg, fns, nf, "test"), 0);
  lu_config_t cfg;
  lu_config_init(&cfg);
  cfg.store = path;
  lu_manager_t *m;
  assert_int_equal(lu_manager_new(&m, &cfg, reg, NULL, 0), 0);
  lu_obs_source_t src = {.manager = m, .store_path = path};
  lu_health_t *h = lu__health_new(&src);
  char d[320];
  assert_int_equal(lu__health_store(h, d, sizeof d), 1);
  assert_non_null(strstr(d, "writable"));

  sqlite3 *locker;
  assert_int_equal(sqlite3_open(path, &locker), SQLITE_OK);
  assert_int_equal(sqlite3_exec(locker, "BEGIN EXCLUSIVE", 0, 0, 0),
                   SQLITE_OK);
  usleep(1100 * 1000); /* past the cache */
  assert_int_equal(lu__health_store(h, d, sizeof d), 0);
  assert_non_null(strstr(d, "not writable"));
  lu_buf_t b = {0};
  assert_int_equal(lu__health_ready(h, &b), 0);
  assert_non_null(strstr(b.p, "\"ready\":false"));
  assert_non_null(strstr(b.p, "\"store\":{\"ok\":false"));
  assert_non_null(strstr(b.p, "\"registry\":{\"ok\":true"));
  lu__buf_free(&b);
  sqlite3_exec(locker, "ROLLBACK", 0, 0, 0);
  sqlite3_close(locker);
  usleep(1100 * 1000);
  assert_int_equal(lu__health_store(h, d, sizeof d), 1);
  lu__health_free(h);

  /* A failing bus check is named. */
  src.check_bus = bus_down;
  h = lu__health_new(&src);
  assert_int_equal(lu__health_ready(h, &b), 0);
  assert_non_null(
      strstr(b.p, "\"bus\":{\"ok\":false,\"detail\":\"nats: connection lost\"}"));
  lu__buf_free(&b);
  lu__health_free(h);

  lu_manager_free(m);
  lu_registry_free(reg);
  unlink(path);
  char side[600];
  snprintf(side, sizeof side, "%s-wal", path);
  unlink(side);
  snprintf(side, sizeof side, "%s-shm", path);
  unlink(side);
}

/* A distributed view: a remote shard shows its load report only, a local
 * one its counters too. */
static size_t two_shard_view(void *ud, lu_shard_report_t *out, size_t cap) {
  (void)ud;
  if (cap < 2) return 2;
  memset(out, 0, 2 * sizeof *out);
  snprintf(out[0].id, sizeof out[0].id, "shard-0");
  out[0].local = 1;
  out[0].in_flight = 1;
  snprintf(out[1].id, sizeof out[1].id, "remote-b");
  out[1].in_flight = 7;
  out[1].queue_depth = 3;
  out[1].latency_ewma_ns = 2500;
  out[1].age_ms = 180;
  return 2;
}

static uint64_t some_bus_errors(void *ud) {
  (void)ud;
  return 3;
}

static void test_shards_view(void **state) {
  (void)state;
  lu_registry_t *reg;
  assert_int_equal(lu_registry_new(&reg), 0);
  const lu_fn_t *const *fns;
  size_t nf = lu_fns_here(&fns);
  assert_int_equal(lu_registry_add(reg, fns, nf, "test"), 0);
  lu_manager_t *m;
  assert_int_equal(lu_manager_new(&m, NULL, reg, NULL, 0), 0);
  const char *ev = "{\"specversion\":\"1.0\",\"id\":\"v1\",\"type\":"
                   "\"Echo\",\"source\":\"t\"}";
  assert_int_equal(lu_manager_submit_json(m, ev, strlen(ev), 1), 0);
  lu_manager_drain(m);
  lu_obs_source_t src = {.manager = m, .view = two_shard_view,
                         .bus_errors = some_bus_errors};
  lu_obs_snap_t s;
  assert_int_equal(lu__obs_snapshot(&s, &src), 0);
  assert_int_equal(s.bus_errors, 3);
  lu_buf_t b = {0};
  lu__obs_shards_json(&b, &s, &src);
  cJSON *j = cJSON_Parse(b.p);
  assert_non_null(j);
  cJSON *arr = cJSON_GetObjectItem(j, "shards");
  assert_int_equal(cJSON_GetArraySize(arr), 2);
  cJSON *loc = cJSON_GetArrayItem(arr, 0), *rem = cJSON_GetArrayItem(arr, 1);
  assert_true(cJSON_IsTrue(cJSON_GetObjectItem(loc, "local")));
  assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(loc, "outcomes"),
                                       "completed")->valueint, 1);
  assert_string_equal(cJSON_GetObjectItem(rem, "id")->valuestring,
                      "remote-b");
  assert_true(cJSON_IsFalse(cJSON_GetObjectItem(rem, "local")));
  assert_null(cJSON_GetObjectItem(rem, "outcomes"));
  assert_int_equal(cJSON_GetObjectItem(rem, "in_flight")->valueint, 7);
  assert_int_equal(cJSON_GetObjectItem(rem, "age_ms")->valueint, 180);
  assert_true(cJSON_GetObjectItem(rem, "latency_ewma_seconds")->valuedouble ==
              2.5e-6);
  cJSON_Delete(j);
  lu__buf_free(&b);
  lu__metrics_write(&b, &s);
  assert_non_null(strstr(b.p, "\nlucent_bus_errors_total 3\n"));
  lu__buf_free(&b);
  lu__obs_snapshot_free(&s);
  lu_manager_free(m);
  lu_registry_free(reg);
}

static void test_http_bad_address(void **state) {
  (void)state;
  lu_registry_t *reg;
  assert_int_equal(lu_registry_new(&reg), 0);
  const lu_fn_t *const *fns;
  size_t nf = lu_fns_here(&fns);
  assert_int_equal(lu_registry_add(reg, fns, nf, "test"), 0);
  lu_manager_t *m;
  assert_int_equal(lu_manager_new(&m, NULL, reg, NULL, 0), 0);
  lu_obs_source_t src = {.manager = m};
  lu_http_t *h = (lu_http_t *)&src;
  char err[256];
  static const char *bad[] = {"nonsense", "127.0.0.1:", "127.0.0.1:99999",
                              "::1:80", "[::1]80", "127.0.0.1:8x"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    assert_int_equal(lu_http_start(&h, bad[i], &src, err, sizeof err),
                     LU_EINVAL);
    assert_null(h);
    assert_true(err[0] != 0);
  }
  /* A port of 0 picks one, and the address says which. */
  assert_int_equal(lu_http_start(&h, ":0", &src, err, sizeof err), 0);
  assert_true(!strncmp(lu_http_addr(h), "127.0.0.1:", 10));
  assert_true(atoi(lu_http_addr(h) + 10) > 0);
  lu_http_stop(h);
  lu_manager_free(m);
  lu_registry_free(reg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hist_upper_matches_hist),
      cmocka_unit_test(test_cumulative_buckets),
      cmocka_unit_test(test_label_escaping),
      cmocka_unit_test(test_render_snapshot),
      cmocka_unit_test(test_render_manager),
      cmocka_unit_test(test_readyz_store),
      cmocka_unit_test(test_shards_view),
      cmocka_unit_test(test_http_bad_address),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
