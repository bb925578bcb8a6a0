/*
 * metrics.c - what the observability endpoints show: a snapshot of a
 * manager's counters, and its Prometheus text exposition (format 0.0.4).
 *
 * Nothing here runs on the event path.  A scrape takes a snapshot through
 * the manager's thread-safe accessors (each takes the lock of what it
 * reads, briefly) and renders it; between scrapes the pipeline pays
 * nothing.  While events are in flight the numbers are approximate (each
 * is read at a slightly different moment); after lu_manager_drain() they
 * are exact and equal the run's summary.
 *
 * Conventions (https://prometheus.io/docs/practices/naming/): the lucent_
 * prefix, base units (seconds), counters end in _total, every family has
 * HELP and TYPE lines before its samples, label values are escaped (\\,
 * \", \n).  Latency histograms are converted from the manager's log-linear
 * histograms (hist.c) to 1-2-5 buckets from 1 us to 10 s:
 *
 *   fine bucket b (values lower_b..upper_b, 8 per power of two)
 *        -> counted at the first le bound >= upper_b
 *   le counts are then summed into cumulative counts; +Inf = count.
 *
 * A fine bucket that straddles a bound is counted at the next bound, so an
 * le count never includes a value above its bound (it may leave out up to
 * 12.5% of the values just below it).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "obs_internal.h"

const uint64_t lu__obs_le_ns[LU_OBS_NBUCKETS] = {
    1000ull,        2000ull,        5000ull,        10000ull,
    20000ull,       50000ull,       100000ull,      200000ull,
    500000ull,      1000000ull,     2000000ull,     5000000ull,
    10000000ull,    20000000ull,    50000000ull,    100000000ull,
    200000000ull,   500000000ull,   1000000000ull,  2000000000ull,
    5000000000ull,  10000000000ull};

/* hist.c: v < 16 -> bucket v; else e = floor(log2 v), 8 sub-buckets of
 * width 2^(e-3) starting at bucket (e-2)*8. */
uint64_t lu__obs_hist_upper(unsigned b) {
  if (b < 2 * LU_HIST_SUB) return b;
  unsigned e = b / LU_HIST_SUB + 2;
  if (e > 63) return UINT64_MAX;
  uint64_t sub = b % LU_HIST_SUB;
  uint64_t width = (uint64_t)1 << (e - 3);
  return ((LU_HIST_SUB + sub) << (e - 3)) + (width - 1);
}

void lu__obs_cumulative(const lu_hist_t *h,
                        uint64_t cum[LU_OBS_NBUCKETS + 1]) {
  memset(cum, 0, (LU_OBS_NBUCKETS + 1) * sizeof *cum);
  unsigned j = 0;
  for (unsigned b = 0; b < LU_HIST_BUCKETS; b++) {
    if (!h->counts[b]) continue;
    uint64_t up = lu__obs_hist_upper(b);
    while (j < LU_OBS_NBUCKETS && up > lu__obs_le_ns[j]) j++;
    cum[j] += h->counts[b]; /* j == LU_OBS_NBUCKETS: only in +Inf */
  }
  for (unsigned k = 1; k <= LU_OBS_NBUCKETS; k++) cum[k] += cum[k - 1];
  /* Exact by construction (counts sum to n); keep +Inf == _count even if
   * a concurrent reader ever saw them disagree. */
  cum[LU_OBS_NBUCKETS] = h->n;
  for (unsigned k = 0; k < LU_OBS_NBUCKETS; k++)
    if (cum[k] > h->n) cum[k] = h->n;
}

/* ---- snapshot --------------------------------------------------------- */

int lu__obs_snapshot(lu_obs_snap_t *s, const lu_obs_source_t *src) {
  memset(s, 0, sizeof *s);
  const lu_manager_t *m = src->manager;
  if (!m) return LU_EINVAL;
  const lu_registry_t *reg = lu_manager_registry(m);
  s->version = LU_VERSION;
  s->nshards = lu_manager_shard_count(m);
  s->nfns = lu_registry_count(reg);
  s->shards = calloc(s->nshards + 1, sizeof *s->shards);
  s->fns = calloc(s->nfns + 1, sizeof *s->fns);
  s->breakers = calloc(s->nfns * s->nshards + 1, 1);
  if (!s->shards || !s->fns || !s->breakers) {
    lu__obs_snapshot_free(s);
    return LU_ENOMEM;
  }
  /* Per-function and per-shard state first, totals last: while events
   * flow, totals then tend to be >= the parts (outcomes land in the
   * totals and the parts under one lock, so they agree exactly once the
   * pipeline is drained). */
  for (size_t i = 0; i < s->nfns; i++) {
    lu_obs_fn_t *f = &s->fns[i];
    lu_fn_stats_t st;
    lu_manager_fn_stats(m, i, &st);
    f->name = st.name;
    f->executions = st.executions;
    f->completed = st.completed;
    f->failed = st.failed;
    f->retries = st.retries;
    f->timeouts = st.timeouts;
    lu__manager_fn_faults(m, i, &f->crashes, &f->abandoned);
    lu__manager_fn_hists(m, i, &f->exec, &f->e2e);
    f->breaker_open = s->breakers + i * s->nshards;
    for (unsigned k = 0; k < s->nshards; k++)
      f->breaker_open[k] = (unsigned char)lu__manager_breaker_open(m, i, k);
  }
  lu_count_t shards_sum = {{0}};
  for (unsigned k = 0; k < s->nshards; k++) {
    lu_shard_stats_t st;
    lu_manager_shard_stats(m, k, &st);
    lu_obs_shard_t *o = &s->shards[k];
    o->id = st.id;
    o->in_flight = st.in_flight;
    o->queue_depth = lu__manager_queue_depth(m, k);
    o->routed = st.routed;
    o->forwarded = st.forwarded;
    o->received = st.received;
    o->retries = st.retries;
    o->count = st.count;
  }
  lu_manager_counts(m, &s->total, &s->events_in);
  for (unsigned k = 0; k < s->nshards; k++)
    for (int o = 0; o < LU_OUTCOME__COUNT; o++) {
      shards_sum.outcomes[o] += s->shards[k].count.outcomes[o];
      shards_sum.derived[o] += s->shards[k].count.derived[o];
    }
  for (int o = 0; o < LU_OUTCOME__COUNT; o++) {
    /* Intake decisions are what the shards did not decide. */
    uint64_t a = s->total.outcomes[o], b = shards_sum.outcomes[o];
    s->intake.outcomes[o] = a > b ? a - b : 0;
    a = s->total.derived[o], b = shards_sum.derived[o];
    s->intake.derived[o] = a > b ? a - b : 0;
  }
  lu__manager_store_stats(m, &s->store_batches, &s->store_records,
                          &s->store_errors);
  s->store_direct = lu__manager_store_direct(m);
  s->bus_errors = src->bus_errors ? src->bus_errors(src->ud) : 0;
  if (src->metrics) {
    size_t cap = 64;
    for (int tries = 0; tries < 3; tries++) {
      lu_metric_t *x = realloc(s->extra, cap * sizeof *x);
      if (!x) {
        lu__obs_snapshot_free(s);
        return LU_ENOMEM;
      }
      s->extra = x;
      size_t n = src->metrics(src->ud, s->extra, cap);
      s->nextra = n < cap ? n : cap;
      if (n <= cap) break;
      cap = n; /* more than we asked for: again, with room for all */
    }
  }
  return 0;
}

void lu__obs_snapshot_free(lu_obs_snap_t *s) {
  free(s->shards);
  free(s->fns);
  free(s->breakers);
  free(s->extra);
  memset(s, 0, sizeof *s);
}

/* ---- text format ------------------------------------------------------ */

void lu__metrics_label(lu_buf_t *b, const char *v) {
  size_t run = 0, n = strlen(v);
  for (size_t i = 0; i < n; i++) {
    const char *esc = v[i] == '\\' ? "\\\\"
                      : v[i] == '"' ? "\\\""
                      : v[i] == '\n' ? "\\n"
                                     : NULL;
    if (!esc) {
      run++;
      continue;
    }
    lu__buf_put(b, v + i - run, run);
    lu__buf_puts(b, esc);
    run = 0;
  }
  lu__buf_put(b, v + n - run, run);
}

static void family(lu_buf_t *b, const char *name, const char *type,
                   const char *help) {
  lu__buf_puts(b, "# HELP ");
  lu__buf_puts(b, name);
  lu__buf_puts(b, " ");
  for (const char *c = help; *c; c++) /* HELP escapes \\ and newlines */
    lu__buf_puts(b, *c == '\\' ? "\\\\" : *c == '\n' ? "\\n"
                                          : (char[2]){*c, 0});
  lu__buf_puts(b, "\n# TYPE ");
  lu__buf_puts(b, name);
  lu__buf_puts(b, " ");
  lu__buf_puts(b, type);
  lu__buf_puts(b, "\n");
}

/* A label list: pairs of (name, value) ending with a NULL name. */
typedef struct { const char *k[4], *v[4]; } labels_t;

static void sample_head(lu_buf_t *b, const char *name, const char *suffix,
                        const labels_t *l, const char *le) {
  lu__buf_puts(b, name);
  if (suffix) lu__buf_puts(b, suffix);
  int any = 0;
  for (int i = 0; l && i < 4 && l->k[i]; i++) {
    lu__buf_puts(b, any++ ? "," : "{");
    lu__buf_puts(b, l->k[i]);
    lu__buf_puts(b, "=\"");
    lu__metrics_label(b, l->v[i] ? l->v[i] : "");
    lu__buf_puts(b, "\"");
  }
  if (le) {
    lu__buf_puts(b, any++ ? "," : "{");
    lu__buf_puts(b, "le=\"");
    lu__buf_puts(b, le);
    lu__buf_puts(b, "\"");
  }
  if (any) lu__buf_puts(b, "}");
  lu__buf_puts(b, " ");
}

static void sample_u64(lu_buf_t *b, const char *name, const labels_t *l,
                       uint64_t v) {
  char num[24];
  sample_head(b, name, NULL, l, NULL);
  lu__fmt(num, sizeof num, "%" PRIu64 "\n", v);
  lu__buf_puts(b, num);
}

static void histogram(lu_buf_t *b, const char *name, const labels_t *l,
                      const lu_hist_t *h) {
  uint64_t cum[LU_OBS_NBUCKETS + 1];
  char num[48];
  lu__obs_cumulative(h, cum);
  for (unsigned k = 0; k <= LU_OBS_NBUCKETS; k++) {
    char le[32];
    if (k < LU_OBS_NBUCKETS)
      lu__fmt(le, sizeof le, "%g", (double)lu__obs_le_ns[k] / 1e9);
    else
      lu__fmt(le, sizeof le, "+Inf");
    sample_head(b, name, "_bucket", l, le);
    lu__fmt(num, sizeof num, "%" PRIu64 "\n", cum[k]);
    lu__buf_puts(b, num);
  }
  sample_head(b, name, "_sum", l, NULL);
  lu__fmt(num, sizeof num, "%.9f\n", (double)h->sum / 1e9);
  lu__buf_puts(b, num);
  sample_head(b, name, "_count", l, NULL);
  lu__fmt(num, sizeof num, "%" PRIu64 "\n", h->n);
  lu__buf_puts(b, num);
}

/* Per-function counters, one family at a time. */
#define FN_COUNTERS(XX)                                                     \
  XX(executions, "lucent_function_executions_total",                        \
     "Executions of the function, retries included.")                       \
  XX(completed, "lucent_function_completed_total",                          \
     "Events the function completed (input and emitted).")                  \
  XX(failed, "lucent_function_failed_total",                                \
     "Events that failed in the function after their retries.")             \
  XX(retries, "lucent_function_retries_total",                              \
     "Retry attempts scheduled for the function.")                          \
  XX(timeouts, "lucent_function_timeouts_total",                            \
     "Executions that overran the function's timeout (CPU time).")          \
  XX(crashes, "lucent_function_crashes_total",                              \
     "Isolated runs of redelivered inputs that the function crashed.")      \
  XX(abandoned, "lucent_function_abandoned_total",                          \
     "Runs abandoned past the hard limit (a function that did not return).")

#define SHARD_COUNTERS(XX)                                                  \
  XX(routed, "lucent_shard_routed_total",                                   \
     "Events routed to the shard from intake.")                             \
  XX(forwarded, "lucent_shard_forwarded_total",                             \
     "Emitted events the shard forwarded to another shard.")                \
  XX(received, "lucent_shard_received_total",                               \
     "Events the shard received from another shard.")                       \
  XX(retries, "lucent_shard_retries_total",                                 \
     "Retry attempts the shard scheduled.")

void lu__metrics_write(lu_buf_t *b, const lu_obs_snap_t *s) {
  labels_t l;

#define XX(field, metric, help)                                 \
  family(b, metric, "counter", help);                           \
  for (size_t i = 0; i < s->nfns; i++) {                        \
    l = (labels_t){{"function"}, {s->fns[i].name}};             \
    sample_u64(b, metric, &l, s->fns[i].field);                 \
  }
  FN_COUNTERS(XX)
#undef XX

  family(b, "lucent_function_duration_seconds", "histogram",
         "Time inside the function per execution.");
  for (size_t i = 0; i < s->nfns; i++) {
    l = (labels_t){{"function"}, {s->fns[i].name}};
    histogram(b, "lucent_function_duration_seconds", &l, &s->fns[i].exec);
  }
  family(b, "lucent_function_e2e_seconds", "histogram",
         "Time from submit until the outcome is stored, per event the "
         "function decided.");
  for (size_t i = 0; i < s->nfns; i++) {
    l = (labels_t){{"function"}, {s->fns[i].name}};
    histogram(b, "lucent_function_e2e_seconds", &l, &s->fns[i].e2e);
  }
  family(b, "lucent_function_breaker_open", "gauge",
         "1 while the function's circuit breaker is open on the shard.");
  for (size_t i = 0; i < s->nfns; i++)
    for (size_t k = 0; k < s->nshards; k++) {
      l = (labels_t){{"function", "shard"},
                     {s->fns[i].name, s->shards[k].id}};
      sample_u64(b, "lucent_function_breaker_open", &l,
                 s->fns[i].breaker_open[k]);
    }

  family(b, "lucent_shard_in_flight", "gauge",
         "Events on the shard: queued, executing or waiting to retry.");
  for (size_t k = 0; k < s->nshards; k++) {
    l = (labels_t){{"shard"}, {s->shards[k].id}};
    sample_u64(b, "lucent_shard_in_flight", &l, s->shards[k].in_flight);
  }
  family(b, "lucent_shard_queue_depth", "gauge",
         "Events waiting in the shard's queues (intake and forwarded).");
  for (size_t k = 0; k < s->nshards; k++) {
    l = (labels_t){{"shard"}, {s->shards[k].id}};
    sample_u64(b, "lucent_shard_queue_depth", &l, s->shards[k].queue_depth);
  }
#define XX(field, metric, help)                                 \
  family(b, metric, "counter", help);                           \
  for (size_t k = 0; k < s->nshards; k++) {                     \
    l = (labels_t){{"shard"}, {s->shards[k].id}};               \
    sample_u64(b, metric, &l, s->shards[k].field);              \
  }
  SHARD_COUNTERS(XX)
#undef XX
  family(b, "lucent_shard_outcomes_total", "counter",
         "Outcomes decided on the shard (shard=\"intake\": before routing), "
         "by kind, for input and emitted events.");
  for (size_t k = 0; k <= s->nshards; k++) {
    const lu_count_t *c = k < s->nshards ? &s->shards[k].count : &s->intake;
    const char *id = k < s->nshards ? s->shards[k].id : "intake";
    for (int origin = 0; origin < 2; origin++)
      for (int o = 0; o < LU_OUTCOME__COUNT; o++) {
        l = (labels_t){{"shard", "outcome", "origin"},
                       {id, lu_outcome_name((lu_outcome_kind_t)o),
                        origin ? "emitted" : "input"}};
        sample_u64(b, "lucent_shard_outcomes_total", &l,
                   origin ? c->derived[o] : c->outcomes[o]);
      }
  }

  family(b, "lucent_events_in_total", "counter",
         "Input events submitted.");
  sample_u64(b, "lucent_events_in_total", NULL, s->events_in);
  family(b, "lucent_outcomes_total", "counter",
         "Outcomes of input events by kind; their sum equals "
         "lucent_events_in_total once every event is decided.");
  for (int o = 0; o < LU_OUTCOME__COUNT; o++) {
    l = (labels_t){{"outcome"}, {lu_outcome_name((lu_outcome_kind_t)o)}};
    sample_u64(b, "lucent_outcomes_total", &l, s->total.outcomes[o]);
  }
  family(b, "lucent_emitted_outcomes_total", "counter",
         "Outcomes of the events functions emitted, by kind.");
  for (int o = 0; o < LU_OUTCOME__COUNT; o++) {
    l = (labels_t){{"outcome"}, {lu_outcome_name((lu_outcome_kind_t)o)}};
    sample_u64(b, "lucent_emitted_outcomes_total", &l, s->total.derived[o]);
  }
  family(b, "lucent_store_batches_total", "counter",
         "Store transactions (group commits) attempted.");
  sample_u64(b, "lucent_store_batches_total", NULL, s->store_batches);
  family(b, "lucent_store_batches_direct_total", "counter",
         "Of those, batches a shard thread began itself, the store thread "
         "being idle (an asynchronous store; 0 with SQLite).");
  sample_u64(b, "lucent_store_batches_direct_total", NULL, s->store_direct);
  family(b, "lucent_store_records_total", "counter",
         "Events handed to the store (duplicates it ignored included).");
  sample_u64(b, "lucent_store_records_total", NULL, s->store_records);
  family(b, "lucent_store_errors_total", "counter",
         "Store batches that could not be written even after retries.");
  sample_u64(b, "lucent_store_errors_total", NULL, s->store_errors);
  family(b, "lucent_bus_errors_total", "counter",
         "Messages the bus failed to deliver (0 with the in-process bus).");
  sample_u64(b, "lucent_bus_errors_total", NULL, s->bus_errors);
  /* The source's own families (a bus's forward paths, say). */
  for (size_t i = 0; i < s->nextra; i++) {
    const lu_metric_t *x = &s->extra[i];
    if (!x->name) continue;
    if (!i || !s->extra[i - 1].name || strcmp(s->extra[i - 1].name, x->name))
      family(b, x->name, x->type ? x->type : "counter",
             x->help ? x->help : "");
    l = (labels_t){{x->label}, {x->label_value}};
    sample_u64(b, x->name, x->label ? &l : NULL, x->value);
  }
  family(b, "lucent_build_info", "gauge", "The lucent version; always 1.");
  l = (labels_t){{"version"}, {s->version}};
  sample_u64(b, "lucent_build_info", &l, 1);
}

int lu_metrics_render(const lu_obs_source_t *src, char **out, size_t *len) {
  *out = NULL;
  if (len) *len = 0;
  if (!src || !src->manager) return LU_EINVAL;
  lu_obs_snap_t s;
  int rc = lu__obs_snapshot(&s, src);
  if (rc) return rc;
  lu_buf_t b = {0};
  lu__metrics_write(&b, &s);
  lu__obs_snapshot_free(&s);
  if (b.oom || !b.p) {
    lu__buf_free(&b);
    return LU_ENOMEM;
  }
  *out = b.p;
  if (len) *len = b.len;
  return 0;
}
