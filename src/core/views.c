/*
 * views.c - the JSON endpoints of lucent/obs.h: /functions (the registry
 * with each function's statistics) and /shards (the view with each
 * shard's load and counters), and lu_obs_get, which routes a path to its
 * renderer.  Each request takes its own snapshot (metrics.c); nothing is
 * cached between requests except the store probe's answer (health.c).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "obs_internal.h"

#define MAX_VIEW 1024

/* ---- JSON views ------------------------------------------------------- */

static cJSON *counts_json(const uint64_t *c) {
  cJSON *o = cJSON_CreateObject();
  for (int k = 0; k < LU_OUTCOME__COUNT; k++)
    cJSON_AddNumberToObject(o, lu_outcome_name((lu_outcome_kind_t)k),
                            (double)c[k]);
  return o;
}

static cJSON *hist_json(const lu_hist_t *h) {
  cJSON *o = cJSON_CreateObject();
  uint64_t cum[LU_OBS_NBUCKETS + 1];
  lu__obs_cumulative(h, cum);
  cJSON_AddNumberToObject(o, "count", (double)h->n);
  cJSON_AddNumberToObject(o, "sum", (double)h->sum / 1e9);
  cJSON_AddNumberToObject(o, "p50", (double)lu__hist_quantile(h, 0.5) / 1e9);
  cJSON_AddNumberToObject(o, "p99", (double)lu__hist_quantile(h, 0.99) / 1e9);
  cJSON_AddNumberToObject(o, "max", (double)h->max / 1e9);
  cJSON *bk = cJSON_AddArrayToObject(o, "buckets");
  for (unsigned k = 0; k <= LU_OBS_NBUCKETS; k++) {
    cJSON *pair = cJSON_CreateArray();
    /* [le_seconds, cumulative count]; le null = +Inf */
    if (k < LU_OBS_NBUCKETS)
      cJSON_AddItemToArray(pair,
                           cJSON_CreateNumber((double)lu__obs_le_ns[k] / 1e9));
    else
      cJSON_AddItemToArray(pair, cJSON_CreateNull());
    cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)cum[k]));
    cJSON_AddItemToArray(bk, pair);
  }
  return o;
}

static void put_json(lu_buf_t *b, cJSON *root) {
  char *p = root ? cJSON_PrintUnformatted(root) : NULL;
  if (p) {
    lu__buf_puts(b, p);
    lu__buf_puts(b, "\n");
  } else {
    b->oom = 1;
  }
  free(p);
  cJSON_Delete(root);
}

void lu__obs_functions_json(lu_buf_t *b, const lu_obs_snap_t *s,
                            const lu_obs_source_t *src) {
  char *reg = lu_registry_json(lu_manager_registry(src->manager));
  cJSON *fns = reg ? cJSON_Parse(reg) : NULL;
  free(reg);
  if (!cJSON_IsArray(fns)) {
    cJSON_Delete(fns);
    b->oom = 1;
    return;
  }
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "version", s->version);
  cJSON_AddItemToObject(root, "functions", fns);
  cJSON *it;
  cJSON_ArrayForEach(it, fns) {
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
    const lu_obs_fn_t *f = NULL;
    for (size_t i = 0; cJSON_IsString(nm) && i < s->nfns; i++)
      if (!strcmp(s->fns[i].name, nm->valuestring)) f = &s->fns[i];
    if (!f) continue;
    cJSON *st = cJSON_AddObjectToObject(it, "stats");
    cJSON_AddNumberToObject(st, "executions", (double)f->executions);
    cJSON_AddNumberToObject(st, "completed", (double)f->completed);
    cJSON_AddNumberToObject(st, "failed", (double)f->failed);
    cJSON_AddNumberToObject(st, "retries", (double)f->retries);
    cJSON_AddNumberToObject(st, "timeouts", (double)f->timeouts);
    cJSON_AddItemToObject(st, "duration_seconds", hist_json(&f->exec));
    cJSON_AddItemToObject(st, "e2e_seconds", hist_json(&f->e2e));
    cJSON *br = cJSON_AddObjectToObject(st, "breaker_open");
    int any = 0;
    for (size_t k = 0; k < s->nshards; k++) {
      cJSON_AddBoolToObject(br, s->shards[k].id, f->breaker_open[k]);
      any |= f->breaker_open[k];
    }
    cJSON_AddBoolToObject(st, "breaker_open_any", any);
  }
  put_json(b, root);
}

static const lu_obs_shard_t *local_shard(const lu_obs_snap_t *s,
                                         const char *id) {
  for (size_t k = 0; k < s->nshards; k++)
    if (!strcmp(s->shards[k].id, id)) return &s->shards[k];
  return NULL;
}

void lu__obs_shards_json(lu_buf_t *b, const lu_obs_snap_t *s,
                         const lu_obs_source_t *src) {
  size_t n = s->nshards;
  lu_shard_report_t *view = NULL;
  if (src->view) {
    view = calloc(MAX_VIEW, sizeof *view);
    if (!view) {
      b->oom = 1;
      return;
    }
    n = src->view(src->ud, view, MAX_VIEW);
    if (n > MAX_VIEW) n = MAX_VIEW;
  }
  cJSON *root = cJSON_CreateObject();
  cJSON_AddNumberToObject(root, "events_in", (double)s->events_in);
  cJSON_AddItemToObject(root, "outcomes", counts_json(s->total.outcomes));
  cJSON_AddItemToObject(root, "emitted", counts_json(s->total.derived));
  cJSON *arr = cJSON_AddArrayToObject(root, "shards");
  for (size_t i = 0; i < n; i++) {
    lu_shard_report_t r;
    if (view) {
      r = view[i];
      r.id[sizeof r.id - 1] = 0;
    } else {
      memset(&r, 0, sizeof r);
      lu__fmt(r.id, sizeof r.id, "%s", s->shards[i].id);
      r.local = 1;
      r.in_flight = s->shards[i].in_flight;
      r.queue_depth = s->shards[i].queue_depth;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", r.id);
    cJSON_AddBoolToObject(o, "local", r.local);
    cJSON_AddNumberToObject(o, "in_flight", (double)r.in_flight);
    cJSON_AddNumberToObject(o, "queue_depth", (double)r.queue_depth);
    if (r.latency_ewma_ns)
      cJSON_AddNumberToObject(o, "latency_ewma_seconds",
                              (double)r.latency_ewma_ns / 1e9);
    if (r.cpu_free_millis)
      cJSON_AddNumberToObject(o, "cpu_free_millis", r.cpu_free_millis);
    if (r.memory_free_mb)
      cJSON_AddNumberToObject(o, "memory_free_mb", r.memory_free_mb);
    cJSON_AddNumberToObject(o, "age_ms", (double)r.age_ms);
    const lu_obs_shard_t *l = r.local ? local_shard(s, r.id) : NULL;
    if (l) {
      cJSON_AddNumberToObject(o, "routed", (double)l->routed);
      cJSON_AddNumberToObject(o, "forwarded", (double)l->forwarded);
      cJSON_AddNumberToObject(o, "received", (double)l->received);
      cJSON_AddNumberToObject(o, "retries", (double)l->retries);
      cJSON_AddItemToObject(o, "outcomes", counts_json(l->count.outcomes));
      cJSON_AddItemToObject(o, "emitted", counts_json(l->count.derived));
    }
    cJSON_AddItemToArray(arr, o);
  }
  cJSON *in = cJSON_AddObjectToObject(root, "intake");
  cJSON_AddItemToObject(in, "outcomes", counts_json(s->intake.outcomes));
  cJSON_AddItemToObject(in, "emitted", counts_json(s->intake.derived));
  free(view);
  put_json(b, root);
}

/* ---- lu_obs_t ---------------------------------------------------------- */

struct lu_obs_s {
  lu_obs_source_t src;  /* strings not kept: health.c has its copies */
  lu_health_t *health;
  pthread_mutex_t lock; /* one request at a time: the source's callbacks */
};

int lu_obs_new(lu_obs_t **out, const lu_obs_source_t *src) {
  if (!out) return LU_EINVAL;
  *out = NULL;
  if (!src || !src->manager) return LU_EINVAL;
  lu_obs_t *o = calloc(1, sizeof *o);
  if (!o) return LU_ENOMEM;
  o->health = lu__health_new(src);
  if (!o->health || pthread_mutex_init(&o->lock, NULL)) {
    lu__health_free(o->health);
    free(o);
    return LU_ENOMEM;
  }
  o->src = *src;
  o->src.store_path = NULL;
  o->src.bus = NULL;
  *out = o;
  return 0;
}

void lu_obs_free(lu_obs_t *o) {
  if (!o) return;
  lu__health_free(o->health);
  pthread_mutex_destroy(&o->lock);
  free(o);
}

void lu_obs_reply_free(lu_obs_reply_t *r) {
  if (!r) return;
  free(r->body);
  r->body = NULL;
  r->len = 0;
}

static const char CT_JSON[] = "application/json";
static const char CT_PROM[] = "text/plain; version=0.0.4; charset=utf-8";

static void error_body(lu_buf_t *b, const char *msg) {
  lu__buf_puts(b, "{\"error\":");
  lu__buf_json_str(b, msg, strlen(msg));
  lu__buf_puts(b, "}\n");
}

static int render(lu_obs_t *o, const char *path, lu_buf_t *b,
                  const char **ctype) {
  *ctype = CT_JSON;
  if (!strcmp(path, "/healthz")) {
    lu__buf_puts(b, "{\"status\":\"ok\"}\n");
    return 200;
  }
  if (!strcmp(path, "/readyz")) return lu__health_ready(o->health, b) ? 200 : 503;
  int metrics = !strcmp(path, "/metrics");
  int fns = !strcmp(path, "/functions");
  int shards = !strcmp(path, "/shards");
  if (!metrics && !fns && !shards) {
    error_body(b, "not found: try /metrics, /healthz, /readyz, "
                  "/functions or /shards");
    return 404;
  }
  lu_obs_snap_t s;
  if (lu__obs_snapshot(&s, &o->src)) {
    b->oom = 1;
    return 500;
  }
  if (metrics) lu__metrics_write(b, &s);
  else if (fns) lu__obs_functions_json(b, &s, &o->src);
  else lu__obs_shards_json(b, &s, &o->src);
  lu__obs_snapshot_free(&s);
  if (metrics) *ctype = CT_PROM;
  return 200;
}

int lu_obs_get(lu_obs_t *o, const char *path, lu_obs_reply_t *r) {
  if (!r) return LU_EINVAL;
  memset(r, 0, sizeof *r);
  r->content_type = CT_JSON;
  if (!o || !path) return LU_EINVAL;
  lu_buf_t b = {0};
  pthread_mutex_lock(&o->lock);
  r->status = render(o, path, &b, &r->content_type);
  pthread_mutex_unlock(&o->lock);
  if (b.oom || !b.p) {
    lu__buf_free(&b);
    r->status = 500;
    r->content_type = CT_JSON;
    return LU_ENOMEM;
  }
  r->body = b.p;
  r->len = b.len;
  return 0;
}
