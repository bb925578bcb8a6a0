/*
 * stats.c - what the manager counts, and the accessors behind the public
 * stats calls and the metrics.
 *
 * Counters live where they are made: a shard's routing and retry counts
 * and each function's executions and latency under the shard's stats
 * lock (turn holders write them); outcomes, per shard and per function,
 * under the manager's stats lock (the writer counts a batch when the
 * store reports it).  Readers lock each briefly; a snapshot is exact
 * after lu_manager_drain, approximate while events are in flight.
 */
#include <stdlib.h>
#include <string.h>

#include "lucent/log.h"
#include "shard.h"

int lu__stats_init(lu_stats_t *st, unsigned shards, size_t fns) {
  memset(st, 0, sizeof *st);
  st->per_shard = calloc(shards + 1, sizeof *st->per_shard);
  st->fng = calloc(fns + 1, sizeof *st->fng);
  if (!st->per_shard || !st->fng || pthread_mutex_init(&st->lock, NULL)) {
    free(st->per_shard);
    free(st->fng);
    st->per_shard = NULL;
    st->fng = NULL;
    return LU_ENOMEM;
  }
  return 0;
}

void lu__stats_destroy(lu_stats_t *st) {
  if (!st->per_shard) return;
  free(st->per_shard);
  free(st->fng);
  pthread_mutex_destroy(&st->lock);
}

void lu__stats_event_in(lu_stats_t *st) {
  pthread_mutex_lock(&st->lock);
  st->events_in++;
  pthread_mutex_unlock(&st->lock);
}

void lu__stats_batch(lu_manager_t *m, lu_unit_t *const *units, size_t nu,
                     size_t nr, int rc, const char *why, uint64_t now) {
  lu_stats_t *st = &m->stats;
  pthread_mutex_lock(&st->lock);
  if (rc) {
    st->store_errors++;
    LU_LOG(LU_LOG_ERROR, NULL, NULL,
           LU_KVS(LU_KV_UINT("events", nr), LU_KV_STR("store", why)),
           "event store batch not stored");
  }
  st->store_batches++;
  st->store_records += nr;
  for (size_t i = 0; i < nu; i++) {
    const lu_unit_t *u = units[i];
    lu_count_t *ps = &st->per_shard[u->shard < 0 ? m->n : (unsigned)u->shard];
    if (u->derived) {
      st->total.derived[u->kind]++;
      ps->derived[u->kind]++;
    } else {
      st->total.outcomes[u->kind]++;
      ps->outcomes[u->kind]++;
    }
    if (u->fn) {
      lu_fnglobal_t *g = &st->fng[u->fn->index];
      if (u->kind == LU_OUTCOME_COMPLETED) g->completed++;
      else if (u->kind == LU_OUTCOME_FAILED) g->failed++;
      lu__hist_add(&g->e2e, now - u->t_submit);
    }
  }
  pthread_mutex_unlock(&st->lock);
}

/* ---- public ----------------------------------------------------------- */

void lu_manager_counts(const lu_manager_t *cm, lu_count_t *total,
                       uint64_t *events_in) {
  lu_manager_t *m = (lu_manager_t *)cm;
  pthread_mutex_lock(&m->stats.lock);
  if (total) *total = m->stats.total;
  if (events_in) *events_in = m->stats.events_in;
  pthread_mutex_unlock(&m->stats.lock);
}

unsigned lu_manager_shard_count(const lu_manager_t *m) { return m->n; }
unsigned lu_manager_threads(const lu_manager_t *m) { return m->nthreads; }

void lu_manager_shard_stats(const lu_manager_t *cm, unsigned i,
                            lu_shard_stats_t *out) {
  lu_manager_t *m = (lu_manager_t *)cm;
  memset(out, 0, sizeof *out);
  if (i >= m->n) return;
  lu_shard_t *s = &m->shards[i];
  out->id = s->id;
  pthread_mutex_lock(&m->stats.lock);
  out->count = m->stats.per_shard[i];
  pthread_mutex_unlock(&m->stats.lock);
  pthread_mutex_lock(&s->stats_lock);
  out->routed = s->routed;
  out->forwarded = s->forwarded;
  out->received = s->received;
  out->retries = s->retries;
  pthread_mutex_unlock(&s->stats_lock);
  out->in_flight = atomic_load_explicit(&s->load, memory_order_relaxed);
}

/* Function i's execution histogram over every shard, and its e2e one. */
static void fn_hists(lu_manager_t *m, size_t i, lu_hist_t *exec,
                     lu_hist_t *e2e, lu_fn_stats_t *out) {
  for (unsigned k = 0; k < m->n; k++) {
    lu_shard_t *s = &m->shards[k];
    lu_fnstate_t *st = &s->fns[i];
    pthread_mutex_lock(&s->stats_lock);
    if (out) {
      out->executions += st->executions;
      out->retries += st->retries;
      out->timeouts += st->timeouts;
    }
    lu__hist_merge(exec, &st->exec);
    pthread_mutex_unlock(&s->stats_lock);
    if (out && atomic_load_explicit(&st->breaker_open, memory_order_relaxed))
      out->breaker_open = 1;
  }
  pthread_mutex_lock(&m->stats.lock);
  if (out) {
    out->completed = m->stats.fng[i].completed;
    out->failed = m->stats.fng[i].failed;
  }
  lu__hist_merge(e2e, &m->stats.fng[i].e2e);
  pthread_mutex_unlock(&m->stats.lock);
}

void lu_manager_fn_stats(const lu_manager_t *cm, size_t i, lu_fn_stats_t *out) {
  lu_manager_t *m = (lu_manager_t *)cm;
  memset(out, 0, sizeof *out);
  const lu_fnent_t *fe = lu__registry_entry(m->reg, i);
  if (!fe) return;
  out->name = fe->fn->name;
  lu_hist_t *h = calloc(2, sizeof *h);
  if (!h) return;
  fn_hists(m, i, &h[0], &h[1], out);
  out->p50_ns = lu__hist_quantile(&h[0], 0.5);
  out->p99_ns = lu__hist_quantile(&h[0], 0.99);
  out->e2e_p50_ns = lu__hist_quantile(&h[1], 0.5);
  out->e2e_p99_ns = lu__hist_quantile(&h[1], 0.99);
  free(h);
}

uint64_t lu_manager_store_errors(const lu_manager_t *cm) {
  lu_manager_t *m = (lu_manager_t *)cm;
  pthread_mutex_lock(&m->stats.lock);
  uint64_t e = m->stats.store_errors;
  pthread_mutex_unlock(&m->stats.lock);
  return e;
}

lu_store_t *lu_manager_store(lu_manager_t *m) { return m ? m->store : NULL; }

/* ---- for metrics.c and health.c (internal) ---------------------------- */

void lu__manager_fn_hists(const lu_manager_t *cm, size_t i, lu_hist_t *exec,
                          lu_hist_t *e2e) {
  lu_manager_t *m = (lu_manager_t *)cm;
  memset(exec, 0, sizeof *exec);
  memset(e2e, 0, sizeof *e2e);
  if (i >= lu_registry_count(m->reg)) return;
  fn_hists(m, i, exec, e2e, NULL);
}

void lu__manager_fn_faults(const lu_manager_t *cm, size_t i, uint64_t *crashes,
                           uint64_t *abandoned) {
  lu_manager_t *m = (lu_manager_t *)cm;
  *crashes = *abandoned = 0;
  if (i >= lu_registry_count(m->reg)) return;
  for (unsigned k = 0; k < m->n; k++) {
    lu_shard_t *s = &m->shards[k];
    pthread_mutex_lock(&s->stats_lock);
    *crashes += s->fns[i].crashes;
    *abandoned += s->fns[i].abandoned;
    pthread_mutex_unlock(&s->stats_lock);
  }
}

int lu__manager_breaker_open(const lu_manager_t *m, size_t i, unsigned k) {
  if (k >= m->n || i >= lu_registry_count(m->reg)) return 0;
  return atomic_load_explicit(&m->shards[k].fns[i].breaker_open,
                              memory_order_relaxed);
}

size_t lu__manager_queue_depth(const lu_manager_t *cm, unsigned k) {
  lu_manager_t *m = (lu_manager_t *)cm;
  if (k >= m->n) return 0;
  return lu__shard_queued(&m->shards[k]);
}

void lu__manager_store_stats(const lu_manager_t *cm, uint64_t *batches,
                             uint64_t *records, uint64_t *errors) {
  lu_manager_t *m = (lu_manager_t *)cm;
  pthread_mutex_lock(&m->stats.lock);
  *batches = m->stats.store_batches;
  *records = m->stats.store_records;
  *errors = m->stats.store_errors;
  pthread_mutex_unlock(&m->stats.lock);
}

uint64_t lu__manager_store_direct(const lu_manager_t *m) {
  return atomic_load_explicit(&m->writer.direct, memory_order_relaxed);
}
