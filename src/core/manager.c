/*
 * manager.c - the function manager: its lifecycle, where events enter
 * (submit, and the entry points a bus uses), and dispatch, which routes
 * each event once and hands it to its shard or to the bus.
 *
 *   submit (caller's thread)        a worker's turn on shard i      writer
 *   ------------------------        --------------------------     ------
 *   size check, decode, validate    forwarded items, then intake    store
 *   route (type's strategy) --+     select, execute, retries        batches
 *     reject / dead letter ---|--+  <Fn>Completed / <Fn>Failed
 *   queue on shard i <--------+  |  emitted events: dispatch
 *     (bounded: blocks)          +-> outcome unit -> writer (bounded)
 *
 * Invariants:
 *  1. Every event that enters (submitted, accepted or emitted) produces
 *     exactly one outcome unit, and `pending` counts entered-but-not-
 *     reported events; lu_manager_drain() waits for it to reach 0.
 *  2. Items in a shard's queues are pinned: they run where they are and
 *     are never routed again (decision 4).  Routing happens once, before
 *     the push, so the embedded bus needs no hop limit.
 *  3. No deadlock: the intake queues are bounded (producers block: that
 *     is the backpressure), the forwarded queues are not (a turn never
 *     blocks on another shard), and the writer waits on nothing but the
 *     store.  Memory stays bounded because forwarded items only come
 *     from executed items (fan-out x depth limit).
 *  4. A shard's function state is touched only by its turn's holder
 *     (shard.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lucent/log.h"
#include "shard.h"

#define MAX_HOPS 2

/* ---- pending ---------------------------------------------------------- */

void lu__pending_add(lu_manager_t *m, uint64_t k) {
  pthread_mutex_lock(&m->plock);
  m->pending += k;
  pthread_mutex_unlock(&m->plock);
}

void lu__pending_done(lu_manager_t *m, uint64_t k) {
  pthread_mutex_lock(&m->plock);
  m->pending -= k;
  if (!m->pending) pthread_cond_broadcast(&m->pdone);
  pthread_mutex_unlock(&m->plock);
}

uint64_t lu__manager_rand(lu_manager_t *m) {
  pthread_mutex_lock(&m->rng_lock);
  uint64_t r = lu__rand_next(&m->rng);
  pthread_mutex_unlock(&m->rng_lock);
  return r;
}

void lu__item_free(lu_item_t *it) {
  if (!it) return;
  lu_event_free(it->ev);
  free(it);
}

/* ---- outcomes decided before any shard runs the event ----------------- */

/* Records a rejection decided at intake (from < 0) or by a shard.
 * Returns 0, or LU_ENOMEM when it could not even be recorded: the caller
 * still owns the input and says so to its own caller. */
static int reject(lu_manager_t *m, int from, int derived, const char *origin,
                  uint64_t line, uint64_t t_submit, const char *raw,
                  size_t len, const lu_event_t *ev, const char *reason,
                  lu_done_t done) {
  lu_where_t w = {from, from < 0 ? NULL : m->shards[from].id};
  lu_unit_t *u = lu__outcome_rejected(w, derived, origin, line, t_submit, raw,
                                      len, m->cfg.max_event_bytes, ev, reason);
  if (!u) return LU_ENOMEM;
  u->done = done;
  lu__writer_push(m, u);
  return 0;
}

/* Hands an item to the bus for shard `target`; the item is finished here
 * (its outcome will be recorded where it goes). */
static void send_remote(lu_manager_t *m, lu_shard_t *from, const char *target,
                        lu_item_t *it) {
  size_t len;
  const char *json = lu_event_json(it->ev, &len);
  if (from) {
    pthread_mutex_lock(&from->stats_lock);
    from->forwarded++;
    pthread_mutex_unlock(&from->stats_lock);
  }
  lu_fwd_t f = {.target = target,
                .json = json ? json : "",
                .len = json ? len : 0,
                .hops = it->hops + 1,
                .delivery = it->delivery,
                .replayed = it->replayed};
  m->bus.forward(m->bus.ud, &f, it->done);
  it->done.fn = NULL;
  lu__item_free(it);
  lu__pending_done(m, 1);
}

static void count(lu_shard_t *s, uint64_t *field) {
  pthread_mutex_lock(&s->stats_lock);
  (*field)++;
  pthread_mutex_unlock(&s->stats_lock);
}

unsigned lu__delivery_budget(const lu_manager_t *m) {
  return m->cfg.max_deliveries ? m->cfg.max_deliveries : 5;
}

/* Delivered more often than the budget without an outcome: every process
 * that took it died or stopped first.  Whatever did it (a crash outside
 * any function, a machine that keeps failing), it ends here, with its
 * input in the dead letter, rather than go round for ever.  1 = done
 * (dead-lettered), 0 = within budget, LU_ENOMEM. */
static int over_budget(lu_manager_t *m, int from, lu_item_t *it) {
  if (it->delivery <= lu__delivery_budget(m)) return 0;
  char why[256];
  lu__fmt(why, sizeof why,
          "delivered %u times without an outcome (budget %u): each process "
          "that took it died or stopped before its outcome was stored",
          it->delivery, lu__delivery_budget(m));
  lu_where_t w = {from, from < 0 ? NULL : m->shards[from].id};
  lu_unit_t *u = lu__outcome_dead(w, it, why, 0);
  if (!u) return LU_ENOMEM;
  LU_LOG(LU_LOG_ERROR, w.id, it->ev->correlationid,
         LU_KVS(LU_KV_STR("event", it->ev->id),
                LU_KV_UINT("delivery", it->delivery)),
         "event %s dead-lettered: %s", it->ev->id, why);
  u->done = it->done;
  it->done.fn = NULL;
  lu__writer_push(m, u);
  lu__item_free(it);
  return 1;
}

int lu__dispatch(lu_manager_t *m, int from, lu_item_t *it,
                 const char *origin) {
  char why[320];
  lu_dest_t to;
  int spent = over_budget(m, from, it);
  if (spent) return spent < 0 ? spent : 0;
  int rc = lu__route(m, it->ev, &to, why, sizeof why);
  if (rc != LU_ROUTE_OK) {
    lu_where_t w = {from, from < 0 ? NULL : m->shards[from].id};
    lu_unit_t *u;
    if (rc == LU_ROUTE_REJECT) {
      size_t len;
      const char *raw = lu_event_json(it->ev, &len);
      u = lu__outcome_rejected(w, it->derived, origin, it->line, it->t_submit,
                               raw ? raw : "", raw ? len : 0,
                               m->cfg.max_event_bytes, it->ev, why);
    } else {
      u = lu__outcome_dead(w, it, why, 0);
    }
    if (!u) return LU_ENOMEM; /* the caller still has the item */
    u->done = it->done;
    it->done.fn = NULL;
    lu__writer_push(m, u);
    lu__item_free(it);
    return 0;
  }
  lu_shard_t *f = from < 0 ? NULL : &m->shards[from];
  /* A transport that spreads intake itself: a round_robin event taken in
   * here runs here (a forward would only add a hop). */
  if ((m->bus.flags & LU_BUS_SPREAD_INTAKE) && m->has_bus && from < 0 &&
      !it->derived && !to.local) {
    size_t n;
    const lu_fnent_t *const *c =
        lu__registry_candidates(m->reg, it->ev->type, &n);
    if (n && c[0]->strategy == LU_STRAT_ROUND_ROBIN) {
      to.local = &m->shards[0];
      memcpy(to.id, m->shards[0].id, sizeof to.id);
    }
  }
  /* With a durable bus, emitted events take the bus even to this shard:
   * they must be safe before their parent is acknowledged. */
  if (!to.local ||
      (it->derived && m->has_bus && (m->bus.flags & LU_BUS_DURABLE_EMIT))) {
    send_remote(m, f, to.id, it);
    return 0;
  }
  lu_shard_t *t = to.local;
  if (from < 0) {
    count(t, &t->routed);
    lu__shard_enqueue(t, it, 0);
    return 0;
  }
  if (f != t) {
    count(f, &f->forwarded);
    count(t, &t->received);
  }
  lu__shard_enqueue(t, it, 1);
  return 0;
}

/* ---- where events enter ----------------------------------------------- */

/* An input counted in and then given back to its caller (out of memory
 * before anything was recorded). */
static void untake(lu_manager_t *m) {
  pthread_mutex_lock(&m->stats.lock);
  m->stats.events_in--;
  pthread_mutex_unlock(&m->stats.lock);
  lu__pending_done(m, 1);
}

/* Takes in one input: raw text (in) or a built event (ev, in NULL). */
static int submit_common(lu_manager_t *m, lu_event_t *ev,
                         const lu_input_t *in, lu_done_t done) {
  uint64_t t0 = lu__now_ns();
  const char *raw = in ? (in->json ? in->json : "") : NULL;
  size_t len = in ? in->len : 0;
  uint64_t line = in ? in->line : 0;
  const char *origin = in ? in->origin : NULL;
  char err[256];
  int rc = 0;
  if (!ev) {
    if (len > m->cfg.max_event_bytes) {
      lu__fmt(err, sizeof err,
              "event of %zu bytes exceeds the limit of %zu bytes", len,
              m->cfg.max_event_bytes);
      rc = LU_EINVAL;
    } else {
      rc = lu_event_parse(&ev, raw, len, err, sizeof err);
      if (rc == LU_ENOMEM) return LU_ENOMEM; /* nothing taken */
    }
  }
  lu_item_t *it = rc ? NULL : calloc(1, sizeof *it);
  if (!rc && !it) {
    if (raw) lu_event_free(ev);
    return LU_ENOMEM;
  }
  lu__pending_add(m, 1);
  lu__stats_event_in(&m->stats);
  if (rc) {
    if (reject(m, -1, 0, origin, line, t0, raw, len, NULL, err, done)) {
      untake(m);
      return LU_ENOMEM;
    }
    return 0;
  }
  it->ev = ev;
  it->line = line;
  it->t_submit = t0;
  it->done = done;
  it->delivery = in ? in->delivery : 0;
  it->replayed = in ? in->replayed || in->delivery > 1 : 0;
  if (lu__dispatch(m, -1, it, origin)) {
    /* Taken back: the caller keeps its input; an event it gave us
     * (lu_manager_submit) is its to free. */
    free(it);
    if (raw) lu_event_free(ev);
    untake(m);
    return LU_ENOMEM;
  }
  return 0;
}

static const lu_done_t no_done = {NULL, NULL};

static int input_ok(const lu_input_t *in) {
  return in && (in->json || !in->len);
}

int lu_manager_submit_json(lu_manager_t *m, const char *json, size_t len,
                           uint64_t line) {
  lu_input_t in = {.json = json, .len = len, .line = line};
  return lu_manager_submit_input(m, &in);
}

int lu_manager_submit_input(lu_manager_t *m, const lu_input_t *in) {
  if (!m || !input_ok(in)) return LU_EINVAL;
  if (atomic_load(&m->closing)) return LU_ESTATE;
  return submit_common(m, NULL, in, no_done);
}

int lu_manager_take(lu_manager_t *m, const lu_input_t *in, lu_done_t done) {
  if (!m || !input_ok(in)) return LU_EINVAL;
  return submit_common(m, NULL, in, done);
}

int lu_manager_reject(lu_manager_t *m, const lu_input_t *in,
                      const char *reason, lu_done_t done) {
  if (!m || !input_ok(in) || !reason) return LU_EINVAL;
  lu__pending_add(m, 1);
  lu__stats_event_in(&m->stats);
  if (reject(m, -1, 0, in->origin, in->line, lu__now_ns(),
             in->json ? in->json : "", in->len, NULL, reason, done)) {
    untake(m);
    return LU_ENOMEM;
  }
  return 0;
}

int lu_manager_submit(lu_manager_t *m, lu_event_t *ev) {
  if (!m || !ev) {
    lu_event_free(ev);
    return LU_EINVAL;
  }
  if (atomic_load(&m->closing)) {
    lu_event_free(ev);
    return LU_ESTATE;
  }
  /* A built event was never decoded from text: validate it the same way. */
  if (!ev->id || !ev->type || !ev->source) {
    size_t len;
    const char *j = lu_event_json(ev, &len);
    lu__pending_add(m, 1);
    lu__stats_event_in(&m->stats);
    int rc = reject(m, -1, 0, NULL, 0, lu__now_ns(), j ? j : "",
                    j ? len : 0, NULL, "event lacks id, type or source",
                    no_done);
    lu_event_free(ev);
    if (rc) untake(m);
    return rc;
  }
  int rc = submit_common(m, ev, NULL, no_done);
  if (rc) lu_event_free(ev); /* "takes ownership of ev, even on error" */
  return rc;
}

static lu_shard_t *local_shard(lu_manager_t *m, const char *id) {
  for (unsigned i = 0; i < m->n; i++)
    if (!strcmp(m->shards[i].id, id)) return &m->shards[i];
  return NULL;
}

int lu_manager_accept(lu_manager_t *m, const lu_input_t *in,
                      const char *target, unsigned hops, lu_done_t done) {
  if (!m || !input_ok(in)) return LU_EINVAL;
  const char *json = in->json ? in->json : "";
  size_t len = in->len;
  lu_shard_t *t = target ? local_shard(m, target) : NULL;
  unsigned last = lu__delivery_budget(m);
  /* Pinned to a shard that is alive: not ours to run or to re-route (we
   * pulled its queue while we thought it gone); it goes back to it -
   * unless this is its last delivery: then it must end here. */
  if (!t && target && in->delivery < last &&
      lu__view_contains(&m->view, target))
    return LU_EBUSY;
  /* Taken over from a shard that is gone: route once more (re-route);
   * past the hop limit, run it here. */
  int reroute = !t && hops <= MAX_HOPS;
  if (!t && !reroute) t = &m->shards[0];
  uint64_t t0 = lu__now_ns();
  char err[256];
  lu_event_t *ev;
  int rc = lu_event_parse(&ev, json, len, err, sizeof err);
  if (rc == LU_ENOMEM) return LU_ENOMEM;
  lu_item_t *it = rc ? NULL : calloc(1, sizeof *it);
  if (!rc && !it) {
    lu_event_free(ev);
    return LU_ENOMEM;
  }
  /* Pending until its outcome is stored; a re-routed one counts as an
   * input here (its first owner never recorded an outcome). */
  lu__pending_add(m, 1);
  if (rc) {
    if (reject(m, reroute ? -1 : (int)t->idx, 1, in->origin, in->line, t0,
               json, len, NULL, err, done)) {
      lu__pending_done(m, 1);
      return LU_ENOMEM;
    }
    return 0;
  }
  it->ev = ev;
  it->t_submit = t0;
  it->derived = 1;
  it->hops = hops;
  it->done = done;
  it->delivery = in->delivery;
  it->replayed = in->replayed || in->delivery > 1;
  if (reroute) {
    if (lu__dispatch(m, -1, it, in->origin)) {
      lu__item_free(it);
      lu__pending_done(m, 1);
      return LU_ENOMEM;
    }
  } else {
    int spent = over_budget(m, (int)t->idx, it);
    if (spent < 0) {
      lu__item_free(it);
      lu__pending_done(m, 1);
      return LU_ENOMEM;
    }
    if (spent) return 0;
    count(t, &t->received);
    lu__shard_enqueue(t, it, 1);
  }
  return 0;
}

int lu_manager_run(lu_manager_t *m, lu_event_t *ev, const char *target,
                   unsigned flags, lu_done_t done) {
  if (!m || !ev) {
    lu_event_free(ev);
    return LU_EINVAL;
  }
  lu_shard_t *t = target ? local_shard(m, target) : NULL;
  if (!t) t = &m->shards[0];
  lu_item_t *it = calloc(1, sizeof *it);
  if (!it) {
    lu_event_free(ev);
    return LU_ENOMEM;
  }
  lu__pending_add(m, 1);
  lu__stats_event_in(&m->stats);
  it->ev = ev;
  it->t_submit = lu__now_ns();
  it->done = done;
  it->once = (flags & LU_RUN_ONCE) != 0;
  it->executed = (flags & LU_RUN_EXECUTED) != 0;
  lu__shard_claim_check(m, t->idx);
  if (!(flags & LU_RUN_INLINE) ||
      !lu__shard_run_inline(t, it, (flags & LU_RUN_MORE) != 0))
    lu__shard_enqueue(t, it, 0);
  return 0;
}

void lu_manager_end_burst(lu_manager_t *m) {
  if (m) lu__shard_end_burst(m);
}

lu_route_t lu_manager_route(lu_manager_t *m, const lu_event_t *ev,
                            char *target, size_t cap, int *local, char *why,
                            size_t wcap) {
  lu_dest_t to;
  int rc = lu__route(m, ev, &to, why, wcap);
  if (rc == LU_ROUTE_OK) {
    lu__fmt(target, cap, "%s", to.id);
    *local = to.local != NULL;
  }
  return (lu_route_t)rc;
}

/* ---- the bus's hooks (lucent/bus.h) ----------------------------------- */

int lu_manager_set_bus(lu_manager_t *m, const lu_bus_t *bus) {
  if (!m || !bus || !bus->forward) return LU_EINVAL;
  m->bus = *bus;
  m->has_bus = 1;
  return 0;
}

int lu_manager_set_view(lu_manager_t *m, const char *const *ids, unsigned n) {
  return lu__view_set(&m->view, ids, n);
}

void lu_manager_report_load(lu_manager_t *m, const char *id, uint64_t load) {
  lu__view_report_load(&m->view, id, load);
}

int lu_manager_in_view(lu_manager_t *m, const char *id) {
  return id && lu__view_contains(&m->view, id);
}

size_t lu_manager_view(lu_manager_t *m, char (*ids)[LU_SHARD_ID_MAX],
                       size_t cap) {
  return lu__view_ids(&m->view, ids, cap);
}

uint64_t lu_manager_load(const lu_manager_t *m) {
  uint64_t l = 0;
  for (unsigned i = 0; i < m->n; i++)
    l += atomic_load_explicit(&m->shards[i].load, memory_order_relaxed);
  return l;
}

const lu_registry_t *lu_manager_registry(const lu_manager_t *m) {
  return m ? m->reg : NULL;
}

int lu_shard_id_valid(const char *id) { return lu__shard_id_valid(id); }

void lu__manager_set_hold(lu_manager_t *m, uint64_t ns) {
  lu__writer_set_hold(m, ns);
}

/* ---- lifecycle -------------------------------------------------------- */

static unsigned default_threads(unsigned shards) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned n = cpus > 0 ? (unsigned)cpus : 1;
  return n < shards ? n : shards;
}

int lu_manager_new(lu_manager_t **out, const lu_config_t *cfg_in,
                   const lu_registry_t *reg, char *errbuf, size_t errlen) {
  if (!out) return LU_EINVAL;
  *out = NULL;
  if (errbuf && errlen) errbuf[0] = 0;
  lu_config_t cfg;
  int rc = lu__config_import(&cfg, cfg_in, errbuf, errlen);
  if (rc) {
    /* Ours even on error; readable unless the struct is too small to
     * have it (a struct_size of 0 is a struct of today's layout that was
     * not initialised). */
    size_t sz = cfg_in->struct_size;
    if (!sz || sz >= offsetof(lu_config_t, store_handle) +
                         sizeof cfg_in->store_handle)
      lu_store_close(cfg_in->store_handle);
    return rc;
  }
  rc = reg ? lu__config_check(&cfg, errbuf, errlen) : LU_EINVAL;
  if (!reg && errbuf) lu__fmt(errbuf, errlen, "no registry");
  if (rc) {
    lu_store_close(cfg.store_handle);
    return rc;
  }
  lu_manager_t *m = calloc(1, sizeof *m);
  if (!m) {
    lu_store_close(cfg.store_handle);
    return LU_ENOMEM;
  }
  m->cfg = cfg;
  m->reg = reg;
  m->n = cfg.shards;
  m->intake_cap = lu__intake_cap(cfg.queue_capacity, m->n);
  m->w = (lu_weights_t){cfg.w_load, cfg.w_resources, cfg.w_priority,
                        cfg.w_affinity};
  if (cfg.store_handle) {
    m->store = cfg.store_handle;
    m->cfg.store_handle = NULL;
  }
  m->cfg.shard_ids = NULL; /* copied into the shards below */
  m->store_path = strdup(cfg.store ? cfg.store : ":memory:");
  m->cfg.store = m->store_path;
  m->rng = cfg.seed ? cfg.seed : lu__now_ns() ^ (uint64_t)(uintptr_t)m;
  size_t nf = lu_registry_count(reg);
  m->rr = calloc(nf + 1, sizeof *m->rr);
  m->sessions = lu__sessions_new();
  m->shards = calloc(m->n, sizeof *m->shards);
  m->pool = calloc(1, sizeof *m->pool);
  rc = LU_ENOMEM;
  if (!m->store_path || !m->shards || !m->rr || !m->sessions || !m->pool ||
      pthread_mutex_init(&m->plock, NULL) ||
      pthread_cond_init(&m->pdone, NULL) ||
      pthread_mutex_init(&m->rng_lock, NULL) || lu__view_init(&m->view) ||
      lu__stats_init(&m->stats, m->n, nf))
    goto fail;
  if (!m->store) {
    char serr[512];
    if (lu_store_open(&m->store, m->store_path, serr, sizeof serr)) {
      if (errbuf) lu__fmt(errbuf, errlen, "%s", serr);
      rc = LU_ESTORE;
      goto fail;
    }
  }
  if (lu__writer_start(m)) goto fail;
  for (unsigned i = 0; i < m->n; i++) {
    lu_shard_t *s = &m->shards[i];
    char id[LU_SHARD_ID_MAX];
    if (cfg.shard_ids && cfg.shard_ids[i])
      lu__fmt(id, sizeof id, "%s", cfg.shard_ids[i]);
    else
      lu__fmt(id, sizeof id, "shard-%u", i);
    if (lu__shard_init(s, m, i, id, nf)) goto fail;
    int err;
    s->member = lu__view_add_local(&m->view, s->id, s, &s->load, &err);
    if (!s->member) {
      if (err == LU_EEXIST && errbuf)
        lu__fmt(errbuf, errlen, "shard id '%s' is used twice", s->id);
      rc = err == LU_EEXIST ? LU_EINVAL : LU_ENOMEM;
      goto fail;
    }
  }
  lu__view_set(&m->view, NULL, 0);
  unsigned threads = cfg.threads ? cfg.threads : default_threads(m->n);
  if (lu__writer_run(m)) goto fail;
  m->started = 1;
  if (lu__pool_start(m->pool, m, threads)) goto fail;
  m->nthreads = threads;
  *out = m;
  return 0;
fail:
  if (rc == LU_ENOMEM && errbuf && !errbuf[0])
    lu__fmt(errbuf, errlen, "out of memory");
  lu_manager_free(m);
  return rc;
}

int lu_manager_drain(lu_manager_t *m) {
  if (!m) return LU_EINVAL;
  pthread_mutex_lock(&m->plock);
  while (m->pending) pthread_cond_wait(&m->pdone, &m->plock);
  pthread_mutex_unlock(&m->plock);
  return 0;
}

void lu_manager_free(lu_manager_t *m) {
  if (!m) return;
  atomic_store(&m->closing, 1);
  if (m->started) {
    lu_manager_drain(m);
    if (m->pool && m->pool->threads) lu__pool_stop(m->pool);
    lu__writer_stop(m);
  }
  if (m->shards)
    for (unsigned i = 0; i < m->n; i++) lu__shard_destroy(&m->shards[i]);
  if (m->writer.hold_ns) lu__writer_destroy(m);
  if (m->stats.per_shard) {
    lu__view_destroy(&m->view);
    pthread_mutex_destroy(&m->plock);
    pthread_cond_destroy(&m->pdone);
    pthread_mutex_destroy(&m->rng_lock);
  }
  lu__stats_destroy(&m->stats);
  lu_store_close(m->store);
  lu__sessions_free(m->sessions);
  free(m->pool);
  free(m->shards);
  free((void *)m->rr);
  free(m->store_path);
  free(m);
}
