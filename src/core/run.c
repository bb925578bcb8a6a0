/*
 * run.c - one attempt of one item on the shard whose turn runs it:
 * select the function (composite score, docs/architecture.md decision 8),
 * execute it against its deadline, and decide what follows: its outcome
 * (outcome.c, to the writer), a retry on the shard's timer heap, and the
 * events it emitted back into the pipeline (lu__dispatch).
 */
#define _GNU_SOURCE /* sigabbrev_np, strsignal */
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lucent/log.h"
#include "shard.h"

#define OOM_RETRIES 3

/* Exponential backoff cap: backoff * 2^20 at most. */
#define BACKOFF_MAX_SHIFT 20
/* A thread-CPU reading this recent (wall time) is reused instead of read
 * again (a syscall, ~0.2 us): the estimate is at most this much off. */
#define CPU_REUSE_NS (500 * 1000ull)
/* The hard limit: a function running (wall clock) longer than
 * hang_factor x its timeout is abandoned; never less than this. */
#define HARD_MIN_NS (1000ull * NS_PER_MS)

static _Thread_local lu_runner_t runner_tls;

/* Runs abandoned whose function has not returned yet, in the process:
 * their threads still execute plugin code (lu_registry_free). */
static _Atomic unsigned stuck_runs;

unsigned lu__runs_stuck(void) { return atomic_load(&stuck_runs); }

lu_runner_t *lu__runner(void) { return &runner_tls; }

/* The thread's CPU time at wall time now, from a reading at most
 * CPU_REUSE_NS old plus the wall time since (CPU time cannot run ahead
 * of wall time: an upper bound, so durations measured from it are lower
 * bounds, short by CPU_REUSE_NS at most). */
static uint64_t cpu_at(lu_runner_t *r, uint64_t now) {
  if (r->wall_at && now - r->wall_at < CPU_REUSE_NS)
    return r->cpu_at + (now - r->wall_at);
  r->cpu_at = lu__thread_cpu_ns();
  r->wall_at = now;
  return r->cpu_at;
}

static uint64_t hard_limit_ns(const lu_manager_t *m, const lu_fnent_t *fe) {
  uint64_t h = (uint64_t)fe->timeout_ms * NS_PER_MS *
               (m->cfg.hang_factor ? m->cfg.hang_factor : 10u);
  return h < HARD_MIN_NS ? HARD_MIN_NS : h;
}

static const char *corr_of(const lu_event_t *ev) {
  return ev->correlationid ? ev->correlationid : ev->id;
}

/* Where the turn holder decides: it builds outcomes in its spare units,
 * a worker in its own.  A unit is written by the thread that fills it and
 * read by the store writer; taken from a list per shard, with more
 * shards than workers each turn found its units cold (bench_pipeline, 64
 * shards: the worker's outcome building took 2x the samples it takes at
 * one shard), and the shards held 64 units each. */
static lu_where_t where(lu_shard_t *s) {
  lu_runner_t *r = lu__runner();
  return (lu_where_t){(int)s->idx, s->id, r->worker ? &r->spare : &s->spare,
                      &s->m->writer.units};
}

/* LU_RUN_EXECUTED: the item's done hears its outcome now, before the
 * store has it (the unit then reports to nobody). */
static void done_executed(lu_shard_t *s, lu_item_t *it, const lu_unit_t *u) {
  if (!it->executed || !it->done.fn) return;
  lu_outcome_t o;
  lu__unit_outcome(u, s->id, lu__now_ns(), &o);
  lu_done_t d = it->done;
  it->done.fn = NULL;
  d.fn(d.ctx, &o, 0);
}

/* An outcome unit of this turn, with the item's done moved onto it. */
static void out(lu_shard_t *s, lu_item_t *it, lu_unit_t *u) {
  done_executed(s, it, u);
  u->done = it->done;
  it->done.fn = NULL;
  lu__writer_out(s->m, &s->hold, u);
}

/* Out of memory building an outcome: the item waits and tries again
 * (its outcome is not lost; memory may come back).  Its attempt count is
 * kept, so a function is not run more times than its retries allow. */
static void no_memory(lu_shard_t *s, lu_item_t *it) {
  LU_LOG(LU_LOG_ERROR, s->id, NULL, LU_KVS(LU_KV_STR("event", it->ev->id)),
         "out of memory recording an outcome; trying again in 100 ms");
  it->due_ns = lu__now_ns() + 100 * NS_PER_MS;
  lu__shard_retry(s, it);
}

static void dead_letter(lu_shard_t *s, lu_item_t *it, const char *reason) {
  lu_unit_t *u = lu__outcome_dead(where(s), it, reason, it->attempts);
  if (!u) {
    it->fn = NULL; /* chosen again next time */
    no_memory(s, it);
    return;
  }
  out(s, it, u);
  atomic_fetch_sub_explicit(&s->load, 1, memory_order_relaxed);
  lu__item_free(it);
}

static void fail(lu_shard_t *s, lu_item_t *it, const char *reason,
                 uint64_t exec_ns) {
  lu_unit_t *u = lu__outcome_failed(where(s), it, reason, exec_ns);
  if (!u) {
    it->attempts--; /* the attempt is run again */
    no_memory(s, it);
    return;
  }
  out(s, it, u);
  atomic_fetch_sub_explicit(&s->load, 1, memory_order_relaxed);
  lu__item_free(it);
}

/* An emitted event into the pipeline; with no memory to route it, it
 * waits on this shard's heap and tries again. */
static void redispatch(lu_shard_t *s, lu_item_t *kid) {
  if (!lu__dispatch(s->m, (int)s->idx, kid, NULL)) return;
  kid->unrouted = 1;
  kid->due_ns = lu__now_ns() + 100 * NS_PER_MS;
  lu__shard_retry(s, kid);
}

/* A parent whose emitted events travel on a durable bus is finished only
 * when its own outcome is stored AND every child is safe on the bus: only
 * then may its input be acknowledged (else a crash in between would lose
 * the children).  The join counts both down, whatever order they come. */
typedef struct join_s {
  _Atomic unsigned remaining;
  _Atomic int ok;
  lu_done_t real;
  int have_outcome;
  lu_outcome_t o; /* the parent's, with its strings copied */
  char *strs[8];
} join_t;

static void join_finish(join_t *j) {
  if (atomic_fetch_sub(&j->remaining, 1) != 1) return;
  j->real.fn(j->real.ctx, j->have_outcome ? &j->o : NULL,
             atomic_load(&j->ok));
  for (size_t i = 0; i < sizeof j->strs / sizeof *j->strs; i++)
    free(j->strs[i]);
  free(j);
}

static void join_parent_done(void *ctx, const lu_outcome_t *o, int stored) {
  join_t *j = ctx;
  if (o) {
    j->o = *o;
    const char **f[] = {&j->o.event_id,  &j->o.event_type, &j->o.function,
                        &j->o.shard,     &j->o.reason,     &j->o.stored_json,
                        &j->o.result_json};
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) {
      if (!*f[i]) continue;
      j->strs[i] = strdup(*f[i]);
      /* No memory for a copy: the requester sees the field missing, the
       * acknowledgement is unchanged. */
      *f[i] = j->strs[i];
    }
    j->have_outcome = 1;
  }
  if (!stored) atomic_store(&j->ok, 0);
  join_finish(j);
}

static void join_child_done(void *ctx, const lu_outcome_t *o, int stored) {
  (void)o;
  join_t *j = ctx;
  if (!stored) atomic_store(&j->ok, 0);
  join_finish(j);
}

/* <Fn>Completed plus the emitted events, which re-enter the pipeline. */
static void complete(lu_shard_t *s, lu_item_t *it, uint64_t exec_ns) {
  lu_manager_t *m = s->m;
  lu_event_t *kev[LU_MAX_EMIT];
  size_t nk = 0;
  lu_unit_t *u = lu__outcome_completed(where(s), it, s->out, &s->print,
                                       exec_ns, kev, &nk);
  /* Larger than the store takes: it would be refused at every try.  That
   * will not change, so the outcome is a failure that says why. */
  size_t limit = m->cfg.max_record_bytes;
  for (size_t i = 0; u && limit && i < u->nrec; i++) {
    if (u->rec[i].json_len <= limit) continue;
    char why[256];
    lu__fmt(why, sizeof why,
            "%s of %zu bytes exceeds the %zu bytes the event store takes",
            i == 0 ? "its result" : "an event it emitted",
            u->rec[i].json_len, limit);
    for (size_t k = 0; k < nk; k++) lu_event_free(kev[k]);
    lu__unit_free(u);
    lu__out_reset(s->out);
    fail(s, it, why, exec_ns);
    return;
  }
  lu_item_t *kids[LU_MAX_EMIT];
  join_t *j = NULL;
  int ok = u != NULL;
  for (size_t i = 0; ok && i < nk; i++) {
    kids[i] = calloc(1, sizeof *kids[i]);
    ok = kids[i] != NULL;
    if (!ok)
      while (i--) free(kids[i]);
  }
  /* LU_RUN_EXECUTED: answered once nothing below can fail (an answer
   * cannot be taken back); no join then, done is gone. */
  if (ok && it->executed) done_executed(s, it, u);
  int joined = nk && it->done.fn && m->has_bus &&
               (m->bus.flags & LU_BUS_DURABLE_EMIT);
  if (ok && joined && !(j = calloc(1, sizeof *j))) ok = 0;
  if (!ok) {
    for (size_t i = 0; i < nk; i++) lu_event_free(kev[i]);
    lu__unit_free(u);
    it->attempts--; /* the attempt is run again */
    no_memory(s, it);
    return;
  }
  for (size_t i = 0; i < nk; i++) {
    kids[i]->ev = kev[i];
    kids[i]->derived = 1;
    kids[i]->line = it->line;
    /* A suspect's children are suspects too: the crash that made it one
     * may have been in a function one of them runs. */
    kids[i]->delivery = it->delivery;
    kids[i]->replayed = it->replayed; /* so may they have */
    kids[i]->t_submit = lu__now_ns();
  }
  u->done = it->done;
  it->done.fn = NULL;
  if (j) {
    atomic_init(&j->remaining, (unsigned)nk + 1);
    atomic_init(&j->ok, 1);
    j->real = u->done;
    u->done = (lu_done_t){join_parent_done, j};
    for (size_t i = 0; i < nk; i++)
      kids[i]->done = (lu_done_t){join_child_done, j};
  }
  /* The children count as pending before the parent's outcome lands, so
   * a drain never sees 0 between them. */
  if (nk) lu__pending_add(m, nk);
  for (size_t i = 0; i < nk; i++) redispatch(s, kids[i]);
  lu__writer_out(m, &s->hold, u);
  lu__out_reset(s->out);
  atomic_fetch_sub_explicit(&s->load, 1, memory_order_relaxed);
  lu__item_free(it);
}

/* Picks the function for an item on this shard; NULL (and a dead letter)
 * when no candidate is eligible. */
/* Of competing functions, the one whose outcome for ev is stored already,
 * or NULL.  An input that may have run before (lu_item_t.replayed: a
 * redelivery, a replay after a server lost its acks) runs that one again:
 * chosen afresh, it might be another (selection weighs load), whose
 * outcome has other ids - the input would have two outcomes, and two
 * sets of emitted events.  Run again, the same function makes the same
 * ids, which the store takes once; its emitted events go on again, in
 * case they had not.  A store that cannot tell, or fails, leaves the
 * choice to the score. */
static const lu_fnent_t *ran_before(lu_manager_t *m,
                                    const lu_fnent_t *const *c, size_t n,
                                    const lu_event_t *ev) {
  for (size_t i = 0; i < n; i++)
    for (int failed = 0; failed < 2; failed++) {
      char id[37], type[256];
      lu__outcome_id(ev, c[i]->fn->name, failed, id, type, sizeof type);
      int rc = lu_store_has(m->store, type, id);
      if (rc == 1) return c[i];
      if (rc < 0) return NULL;
    }
  return NULL;
}

static const lu_fnent_t *choose(lu_shard_t *s, lu_item_t *it, uint64_t now) {
  lu_manager_t *m = s->m;
  size_t n;
  const lu_fnent_t *const *c =
      lu__registry_candidates(m->reg, it->ev->type, &n);
  uint32_t after = m->has_bus ? m->bus.handed_on_after_ms : 0;
  int maybe_ran = it->replayed ||
                  (after && now - it->t_submit >
                                (uint64_t)after * NS_PER_MS);
  if (maybe_ran && n > 1 && m->store) {
    const lu_fnent_t *fe = ran_before(m, c, n, it->ev);
    if (fe) return fe;
  }
  if (n == 1 && !m->cfg.on_explain) {
    /* The common case needs no scoring, only the hard constraints. */
    const lu_fnent_t *fe = c[0];
    lu_fnstate_t *st = &s->fns[fe->index];
    int fits = fe->fn->cpu_millis <= m->cfg.shard_cpu_millis &&
               fe->fn->memory_mb <= m->cfg.shard_memory_mb;
    if (fits && lu__breaker_peek(&st->breaker, now / NS_PER_MS,
                                 m->cfg.breaker_cooldown_ms))
      return fe;
  }
  lu_candidate_t cands[64];
  lu_scores_t scores[64];
  if (n > 64) n = 64;
  uint64_t now_ms = now / NS_PER_MS;
  for (size_t i = 0; i < n; i++) {
    lu_fnstate_t *st = &s->fns[c[i]->index];
    cands[i] = (lu_candidate_t){
        .fn = c[i]->fn,
        .ewma_ns = st->ewma_ns,
        .breaker_open = !lu__breaker_peek(&st->breaker, now_ms,
                                          m->cfg.breaker_cooldown_ms),
        .affinity = n > 1 ? lu__affinity(m, s, c[i], it->ev) : 1.0,
    };
  }
  int k = lu__select(cands, n, &m->w, m->cfg.shard_cpu_millis,
                     m->cfg.shard_memory_mb, scores);
  if (m->cfg.on_explain) {
    char line[2048];
    lu__explain(line, sizeof line, s->id, it->ev->id, cands, scores, n, k);
    m->cfg.on_explain(m->cfg.on_explain_ud, line);
  }
  if (k >= 0) return c[k];
  char why[1024];
  size_t at = 0;
  lu__fmt(why, sizeof why, "no eligible function for '%s' on %s",
          it->ev->type, s->id);
  for (size_t i = 0; i < n && (at = strlen(why)) < sizeof why - 1; i++)
    lu__fmt(why + at, sizeof why - at, "%s%s (%s)", i ? "; " : ": ",
            cands[i].fn->name, scores[i].excluded ? scores[i].excluded : "?");
  dead_letter(s, it, why);
  return NULL;
}

/* What follows an attempt that returned rc after dt of wall time and cpu
 * of CPU time, at now (monotonic), its output in s->out: the outcome, or
 * a retry. */
static void decide(lu_shard_t *s, lu_item_t *it, lu_fnstate_t *st,
                   lu_status_t rc, uint64_t dt, uint64_t cpu, uint64_t now) {
  lu_manager_t *m = s->m;
  const lu_fnent_t *fe = it->fn;
  lu_out_t *out = s->out;
  uint64_t now_ms = now / NS_PER_MS;
  char reason[320];
  int timed_out = 0, oom = 0;
  uint64_t limit = (uint64_t)fe->timeout_ms * NS_PER_MS;
  if (rc != LU_OK && rc != LU_RETRY && rc != LU_FAIL) {
    lu__fmt(reason, sizeof reason, "function returned invalid status %d",
            (int)rc);
    rc = LU_FAIL;
  } else if (cpu > limit) {
    /* A pure function cannot be interrupted safely; one that overran its
     * deadline has its output discarded and counts as a (retryable)
     * failure, as if it had been cut off. */
    lu__fmt(reason, sizeof reason,
            "timed out: used %.3f ms of CPU, limit %u ms", (double)cpu / 1e6,
            fe->timeout_ms);
    rc = LU_RETRY;
    timed_out = 1;
  } else if (rc == LU_OK && out->oom) {
    /* Its result or an emitted event was lost for want of memory:
     * completing would store an output the function did not make. */
    lu__fmt(reason, sizeof reason,
            "out of memory while recording the function's output");
    LU_LOG(LU_LOG_WARN, s->id, corr_of(it->ev),
           LU_KVS(LU_KV_STR("function", fe->fn->name)),
           "out of memory while recording a function's output; retrying");
    rc = LU_RETRY;
    oom = 1;
  } else if (rc == LU_OK && out->overflow) {
    lu__fmt(reason, sizeof reason,
            "emitted more than %d additional events", LU_MAX_EMIT);
    rc = LU_FAIL;
  } else if (rc != LU_OK) {
    lu__fmt(reason, sizeof reason, "%s",
            out->reason[0] ? out->reason
                           : rc == LU_RETRY ? "retryable error"
                                            : "permanent error");
  }
  st->ewma_ns = st->ewma_ns ? st->ewma_ns - st->ewma_ns / 8 + dt / 8 : dt;
  /* Short memory is lucent's trouble, not the function's: up to
   * OOM_RETRIES more attempts than the function allows. */
  int retry = rc == LU_RETRY &&
              it->attempts <= fe->fn->max_retries + (oom ? OOM_RETRIES : 0);
  pthread_mutex_lock(&s->stats_lock);
  st->executions++;
  lu__hist_add(&st->exec, dt);
  if (timed_out) st->timeouts++;
  if (retry) st->retries++, s->retries++;
  pthread_mutex_unlock(&s->stats_lock);
  /* The breaker counts outcomes, not attempts: an event that succeeds on
   * a retry is no failure of the function, one that fails for good is. */
  if (!retry)
    lu__breaker_record(&st->breaker, rc == LU_OK, now_ms,
                       m->cfg.breaker_failures);
  atomic_store_explicit(&st->breaker_open,
                        st->breaker.state == LU_BREAKER_OPEN,
                        memory_order_relaxed);
  if (rc == LU_OK) {
    complete(s, it, dt);
    return;
  }
  lu__out_reset(out);
  if (retry) {
    /* Exponential backoff with +-50% jitter: backoff * 2^(attempt-1). */
    unsigned shift = it->attempts - 1 < BACKOFF_MAX_SHIFT
                         ? it->attempts - 1 : BACKOFF_MAX_SHIFT;
    double base = (double)fe->backoff_ms * 1e6 * (double)(1ull << shift);
    double jitter = 0.5 + lu__rand_unit(&s->rng);
    it->due_ns = lu__now_ns() + (uint64_t)(base * jitter);
    lu__shard_retry(s, it);
    return;
  }
  fail(s, it, reason, dt);
}

/* What an isolated run of a suspect input (sandbox.c) came to. */
typedef struct isolated_s {
  lu_shard_t *s;
  lu_item_t **items;
  lu_fnstate_t **st;
} isolated_t;

static void isolated_result(void *ud, size_t i, int verdict, lu_status_t rc,
                            uint64_t cpu, uint64_t wall, int sig) {
  isolated_t *x = ud;
  lu_shard_t *s = x->s;
  lu_manager_t *m = s->m;
  lu_item_t *it = x->items[i];
  lu_fnstate_t *st = x->st[i];
  const lu_fnent_t *fe = it->fn;
  if (verdict == LU_SANDBOX_RAN) {
    decide(s, it, st, rc, wall, cpu, lu__now_ns());
    return;
  }
  if (verdict == LU_SANDBOX_FAILED) {
    /* No child (no memory, no processes left): not the input's fault. */
    LU_LOG(LU_LOG_WARN, s->id, NULL,
           LU_KVS(LU_KV_STR("event", it->ev->id),
                  LU_KV_STR("function", fe->fn->name)),
           "could not run a redelivered input isolated; trying again");
    it->attempts--;
    no_memory(s, it);
    return;
  }
  char why[320];
  if (verdict == LU_SANDBOX_CRASHED)
    lu__fmt(why, sizeof why,
            "function %s crashed with signal %d (SIG%s: %s) on this input, "
            "run isolated after delivery %u: a poison input, quarantined",
            fe->fn->name, sig, sigabbrev_np(sig) ? sigabbrev_np(sig) : "?",
            strsignal(sig), it->delivery);
  else
    lu__fmt(why, sizeof why,
            "function %s did not return within its hard limit of %.0f ms "
            "on this input, run isolated after delivery %u: killed, "
            "quarantined",
            fe->fn->name, (double)hard_limit_ns(m, fe) / 1e6, it->delivery);
  LU_LOG(LU_LOG_ERROR, s->id, corr_of(it->ev),
         LU_KVS(LU_KV_STR("function", fe->fn->name),
                LU_KV_STR("event", it->ev->id),
                LU_KV_INT("signal", sig)),
         "%s", why);
  pthread_mutex_lock(&s->stats_lock);
  st->executions++;
  if (verdict == LU_SANDBOX_CRASHED) st->crashes++;
  else st->timeouts++, st->abandoned++;
  pthread_mutex_unlock(&s->stats_lock);
  lu__breaker_record(&st->breaker, 0, lu__now_ns() / NS_PER_MS,
                     m->cfg.breaker_failures);
  atomic_store_explicit(&st->breaker_open,
                        st->breaker.state == LU_BREAKER_OPEN,
                        memory_order_relaxed);
  dead_letter(s, it, why);
}

/* Makes it ready to run: routed, its function chosen, its breaker
 * closed, its attempt counted, its context in ctx.  0, or 1 when it
 * ended (or went elsewhere) on the way. */
static int prepare(lu_shard_t *s, lu_item_t *it, lu_ctx_t *ctx,
                   lu_fnstate_t **stp) {
  lu_manager_t *m = s->m;
  if (it->unrouted) {
    it->unrouted = 0;
    redispatch(s, it);
    return 1;
  }
  const lu_fnent_t *fe = it->fn;
  uint64_t now = lu__now_ns();
  if (!fe) {
    fe = choose(s, it, now); /* NULL: dead-lettered, it is gone */
    if (!fe) return 1;
    it->fn = fe;
  }
  lu_fnstate_t *st = &s->fns[fe->index];
  if (!lu__breaker_allow(&st->breaker, now / NS_PER_MS,
                         m->cfg.breaker_cooldown_ms)) {
    /* A retry whose breaker opened meanwhile. */
    char why[160];
    lu__fmt(why, sizeof why, "circuit breaker of %s open after %u attempts",
            fe->fn->name, it->attempts);
    fail(s, it, why, 0);
    return 1;
  }
  it->attempts++;
  *ctx = (lu_ctx_t){.ev = it->ev,
                    .shard = s->id,
                    .fn_name = fe->fn->name,
                    .correlationid = corr_of(it->ev),
                    .attempt = it->attempts,
                    .now_ms = lu__wall_ms()};
  *stp = st;
  return 0;
}

#define SUSPECTS_MAX 256

void lu__run_suspects(lu_shard_t *s, lu_item_t **items, size_t n) {
  lu_sbx_job_t jobs[SUSPECTS_MAX];
  lu_item_t *ready[SUSPECTS_MAX];
  lu_fnstate_t *st[SUSPECTS_MAX];
  for (size_t i = 0; i < n;) { /* a crowd goes in runs of SUSPECTS_MAX */
    size_t k = 0;
    for (; i < n && k < SUSPECTS_MAX; i++) {
      lu_ctx_t ctx;
      if (prepare(s, items[i], &ctx, &st[k])) continue;
      ready[k] = items[i];
      jobs[k] = (lu_sbx_job_t){.fe = items[i]->fn,
                               .ctx = ctx,
                               .data = items[i]->ev->data,
                               .hard_ns = hard_limit_ns(s->m, items[i]->fn)};
      k++;
    }
    isolated_t x = {s, ready, st};
    lu__out_reset(s->out);
    lu__pool_slow_enter(s->m->pool, &runner_tls); /* a child per run */
    lu__sandbox_run(jobs, k, s->out, isolated_result, &x);
    lu__pool_slow_exit(s->m->pool, &runner_tls);
  }
}

int lu__run_item(lu_shard_t *s, lu_item_t *it) {
  lu_manager_t *m = s->m;
  if (it->delivery > 1 && !it->unrouted) {
    lu__run_suspects(s, &it, 1);
    return 0;
  }
  lu_ctx_t ctx;
  lu_fnstate_t *st;
  if (prepare(s, it, &ctx, &st)) return 0;
  const lu_fnent_t *fe = it->fn;
  lu_out_t *out = s->out;
  lu__out_reset(out);
  /* Busy: the watchdog may abandon this run past its hard limit. */
  lu_runner_t *r = &runner_tls;
  r->item = it;
  r->out = out;
  r->fn = fe->fn->name;
  r->shard = s->id;
  if (!st->ewma_ns || st->ewma_ns > LU_POOL_SLOW_NS)
    lu__pool_slow_enter(m->pool, r);
  uint64_t t0 = lu__now_ns();
  uint64_t c0 = cpu_at(r, t0);
  atomic_store_explicit(&r->deadline, t0 + hard_limit_ns(m, fe),
                        memory_order_relaxed);
  atomic_store_explicit(&r->state, LU_RUN_BUSY, memory_order_release);
  lu_status_t rc = fe->fn->impl(&ctx, it->ev->data, out);
  if (atomic_exchange_explicit(&r->state, LU_RUN_IDLE,
                               memory_order_acq_rel) == LU_RUN_ABANDONED) {
    /* The watchdog dead-lettered this item and gave the turn away while
     * the function ran.  Once it has read the item (released), what is
     * left is ours alone (see shard.h). */
    while (!atomic_load_explicit(&r->released, memory_order_acquire))
      sched_yield();
    atomic_fetch_sub(&stuck_runs, 1);
    atomic_store_explicit(&r->released, 0, memory_order_relaxed);
    r->slow = 0; /* the watchdog took it off the count */
    lu__out_reset(out);
    free(out);
    lu__item_free(it);
    return 1;
  }
  lu__pool_slow_exit(m->pool, r);
  uint64_t t1 = lu__now_ns(), dt = t1 - t0;
  /* The deadline counts the function's own CPU time, so that outcomes do
   * not depend on how busy the machine is; wall time bounds CPU time, so
   * the CPU clock is read only when wall time says it might be over. */
  uint64_t cpu = dt;
  if (dt > (uint64_t)fe->timeout_ms * NS_PER_MS) {
    r->cpu_at = lu__thread_cpu_ns();
    r->wall_at = t1;
    cpu = r->cpu_at > c0 ? r->cpu_at - c0 : 0;
  }
  decide(s, it, st, rc, dt, cpu, t1);
  return 0;
}

int lu__run_abandon(lu_shard_t *s, uint64_t now, lu_unit_t **unit,
                    int *was_worker, pthread_t *thread) {
  lu_runner_t *r = s->runner;
  *unit = NULL;
  if (!r || !s->spare_out ||
      atomic_load_explicit(&r->state, memory_order_acquire) != LU_RUN_BUSY)
    return 0;
  uint64_t deadline = atomic_load_explicit(&r->deadline, memory_order_relaxed);
  if (!deadline || now < deadline) return 0;
  int busy = LU_RUN_BUSY;
  if (!atomic_compare_exchange_strong_explicit(
          &r->state, &busy, LU_RUN_ABANDONED, memory_order_acq_rel,
          memory_order_acquire))
    return 0; /* it returned just now: its runner finishes it */
  /* Ours until released: the runner, should it return now, waits. */
  lu_item_t *it = r->item;
  const lu_fnent_t *fe = it->fn;
  char why[320];
  lu__fmt(why, sizeof why,
          "function %s did not return within its hard limit of %.0f ms "
          "(%u x its timeout of %u ms): abandoned on shard %s",
          fe->fn->name, (double)hard_limit_ns(s->m, fe) / 1e6,
          s->m->cfg.hang_factor ? s->m->cfg.hang_factor : 10u,
          fe->timeout_ms, s->id);
  /* Read while the function may still read the event: both only read. */
  lu_unit_t *u;
  /* Not the turn's holder: no spare units. */
  lu_where_t w = {(int)s->idx, s->id, NULL, NULL};
  while (!(u = lu__outcome_dead(w, it, why, it->attempts))) {
    struct timespec ts = {0, 10 * 1000000L}; /* no memory: wait for some */
    nanosleep(&ts, NULL);
  }
  u->done = it->done;
  it->done.fn = NULL; /* reported by the dead letter only */
  LU_LOG(LU_LOG_ERROR, s->id, corr_of(it->ev),
         LU_KVS(LU_KV_STR("function", fe->fn->name),
                LU_KV_STR("event", it->ev->id)),
         "%s", why);
  *was_worker = r->worker ? 1 + r->slow : 0;
  *thread = r->thread;
  atomic_fetch_add(&stuck_runs, 1);
  atomic_store_explicit(&r->released, 1, memory_order_release);
  lu_fnstate_t *st = &s->fns[fe->index];
  pthread_mutex_lock(&s->stats_lock);
  st->executions++;
  st->timeouts++;
  st->abandoned++;
  pthread_mutex_unlock(&s->stats_lock);
  lu__breaker_record(&st->breaker, 0, now / NS_PER_MS,
                     s->m->cfg.breaker_failures);
  atomic_store_explicit(&st->breaker_open,
                        st->breaker.state == LU_BREAKER_OPEN,
                        memory_order_relaxed);
  atomic_fetch_sub_explicit(&s->load, 1, memory_order_relaxed);
  /* The stuck thread keeps its out; the shard gets the spare. */
  s->out = s->spare_out;
  s->spare_out = NULL;
  s->runner = NULL;
  *unit = u;
  return 1;
}
