/*
 * pool.c - the worker threads that run shards' turns (shard.h).
 *
 * A run queue of READY shards (FIFO: a shard with work left goes to the
 * back, so shards share the workers fairly) and a min-heap of timers
 * (retries falling due, parked turns to take over).  Workers sleep on one
 * condition variable; a producer signals after unlocking (a worker woken
 * under the lock would block on it at once).
 *
 * WAKING.  A wake-up is a futex call and a context switch, several µs on
 * a VM: more than a fast function's whole run.  With many shards nearly
 * every event makes a shard READY, and waking a sleeper for each one
 * cost 20-40% more CPU per event than one shard did (bench/README.md).
 * So a sleeping worker is woken only when the running ones will not come
 * for the work soon:
 *
 *   - a shard becomes READY and every worker awake is inside a slow
 *     function (nslow) or none is awake;
 *   - the run queue's oldest shard has waited more than
 *     LU_POOL_BEHIND_NS (5 ms), or a READY shard's own queue reaches a
 *     turn's batch or its share of the intake (lu__pool_backlog): the
 *     workers awake are behind, be it for load or because one is stuck
 *     in a function counted fast;
 *   - a worker is about to run a slow function (no latency history yet,
 *     or its average above SLOW_NS) while shards wait (lu__pool_slow_enter).
 *
 * Otherwise the worker that is awake takes the shard after its turn, and
 * fast functions run on as few threads as keep up with them.  The safety
 * net stays: a sleeping worker looks at the run queue every SCAN_NS.
 *
 * STEPPING BACK.  The same rule, the other way: a worker that has ended
 * a turn goes back to sleep, though shards may wait, when another fast
 * worker is awake and the run queue is not behind (step_back: exactly
 * when its sleeping would not make want_wake wake it again).  Workers
 * stay awake for as long as the oldest READY shard waits past
 * LU_POOL_BEHIND_NS, so a saturated pool keeps all of them, and one
 * woken by the periodic scan because another is stuck drains what
 * waits.  Without this, a worker woken once stayed awake for as long as
 * work kept coming, and a fast function's events were split between the
 * workers: with more shards than cores every turn then found one or two
 * items (each shard is visited as soon as it is READY), paid the run
 * queue's and the shard's locks for them, and the extra runnable thread
 * took CPU from the store writer, whose queue grew to thousands of
 * outcomes that went cold waiting (bench_pipeline, 16 and 64 shards: 2-4
 * items a turn and 1,000-7,000 outcomes queued to the writer; one
 * worker: 10-17 and a few hundred).  With one worker awake, events
 * gather in the shards' queues while it works, and turns grow with the
 * load, as one shard's do.
 *
 * NAPPING.  A worker that finds the run queue empty, and is the only
 * fast one awake, first naps for NAP_NS, still counted awake, so
 * producers do not wake it; only then does it sleep (counted in nidle).
 * With many shards and a fast function, the one worker awake used to
 * empty the run queue after each event, sleep, and be woken by the next:
 * a futex wake and a context switch on each side, per event.  A nap lets
 * the events of the next NAP_NS gather first, one timed wake for all of
 * them (bench_pipeline at 64 shards: a fifth of the context switches).
 * The price is latency: work that arrives during a nap waits for its
 * end, NAP_NS plus the kernel's timer slack (50 µs), ~0.1 ms at most;
 * work arriving later wakes a sleeper as before.  A worker with another
 * fast one awake sleeps at once: one napper is enough, and two kept each
 * other awake.
 *
 * Timers are an optimisation with a safety net: a sleeping worker also
 * wakes every SCAN_NS and looks at every shard, so a timer lost to an
 * allocation failure delays a retry, never strands it.  The same scan
 * sweeps a slice of the sticky-session table (lu__route_expire), so the
 * table holds the sessions of about one TTL, not of the whole run.
 *
 * The watchdog, a thread of its own, looks at every shard every
 * WATCH_NS for a function running past its hard limit (run.c): it
 * abandons the run, and a worker that was running it is detached and
 * replaced, so a function that never returns costs a thread, never a
 * shard or the pool.
 */
#include <stdlib.h>
#include <string.h>

#include "shard.h"

#define SCAN_NS (100 * NS_PER_MS)
#define WATCH_NS (50 * NS_PER_MS)
#define NAP_NS (50 * 1000) /* NAPPING */

/* Workers awake and not inside a slow function.  Under p->lock. */
static unsigned awake_fast(const lu_pool_t *p) {
  unsigned awake = p->nlive > p->nidle ? p->nlive - p->nidle : 0;
  return awake > p->nslow ? awake - p->nslow : 0;
}

/* The oldest READY shard has waited past LU_POOL_BEHIND_NS.  Under
 * p->lock (a shard pushed by a thread whose clock read came later is not
 * counted as waiting). */
static int behind(const lu_pool_t *p, uint64_t now) {
  return p->head && now > p->head->ready_ns &&
         now - p->head->ready_ns > LU_POOL_BEHIND_NS;
}

int lu__pool_want_wake(const lu_pool_t *p, uint64_t now) {
  if (!p->nidle || !p->head) return 0;
  return awake_fast(p) == 0 || behind(p, now);
}

int lu__pool_step_back(const lu_pool_t *p, uint64_t now) {
  /* The caller is among the fast ones awake. */
  return !p->stop && awake_fast(p) > 1 && !behind(p, now);
}

static void timer_sift_down(lu_pool_t *p, size_t i) {
  lu_timer_t t = p->timers[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= p->ntimers) break;
    if (c + 1 < p->ntimers && p->timers[c + 1].due < p->timers[c].due) c++;
    if (p->timers[c].due >= t.due) break;
    p->timers[i] = p->timers[c];
    i = c;
  }
  p->timers[i] = t;
}

static lu_timer_t timer_pop(lu_pool_t *p) {
  lu_timer_t top = p->timers[0];
  p->timers[0] = p->timers[--p->ntimers];
  if (p->ntimers) timer_sift_down(p, 0);
  if (top.s->timer_due == top.due) top.s->timer_due = UINT64_MAX;
  return top;
}

int lu__pool_timer(lu_pool_t *p, lu_shard_t *s, uint64_t due) {
  int rc = 0, wake = 0;
  pthread_mutex_lock(&p->lock);
  if (s->timer_due <= due) goto out; /* an earlier one will look */
  if (p->ntimers == p->captimers) {
    size_t cap = p->captimers ? p->captimers * 2 : 64;
    lu_timer_t *t = realloc(p->timers, cap * sizeof *t);
    if (!t) {
      rc = LU_ENOMEM; /* the periodic scan finds it */
      goto out;
    }
    p->timers = t;
    p->captimers = cap;
  }
  size_t i = p->ntimers++;
  while (i && p->timers[(i - 1) / 2].due > due) {
    p->timers[i] = p->timers[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  p->timers[i] = (lu_timer_t){due, s};
  s->timer_due = due;
  /* A sleeping worker waits for the old earliest timer: it must wait for
   * this one instead. */
  wake = i == 0 && p->nidle > 0;
out:
  pthread_mutex_unlock(&p->lock);
  if (wake) pthread_cond_signal(&p->wake);
  return rc;
}

void lu__pool_push(lu_pool_t *p, lu_shard_t *s) {
  uint64_t now = lu__now_ns();
  pthread_mutex_lock(&p->lock);
  s->rq_next = NULL;
  s->ready_ns = now;
  if (p->tail) p->tail->rq_next = s;
  else p->head = s;
  p->tail = s;
  int wake = lu__pool_want_wake(p, now);
  pthread_mutex_unlock(&p->lock);
  if (wake) pthread_cond_signal(&p->wake);
}

void lu__pool_backlog(lu_pool_t *p) {
  pthread_mutex_lock(&p->lock);
  int wake = p->nidle > 0 && p->head;
  pthread_mutex_unlock(&p->lock);
  if (wake) pthread_cond_signal(&p->wake);
}

void lu__pool_slow_enter(lu_pool_t *p, lu_runner_t *r) {
  if (!r->worker || r->slow) return;
  uint64_t now = lu__now_ns();
  pthread_mutex_lock(&p->lock);
  r->slow = 1;
  p->nslow++;
  int wake = lu__pool_want_wake(p, now);
  pthread_mutex_unlock(&p->lock);
  if (wake) pthread_cond_signal(&p->wake);
}

void lu__pool_slow_exit(lu_pool_t *p, lu_runner_t *r) {
  if (!r->slow) return;
  pthread_mutex_lock(&p->lock);
  r->slow = 0;
  p->nslow--;
  pthread_mutex_unlock(&p->lock);
}

/* What a worker thread owns, freed as it ends (abandoned or not). */
static void worker_end(void) {
  lu_runner_t *r = lu__runner();
  lu__unit_free_list(r->spare);
  r->spare = NULL;
  lu__crash_altstack_free();
}

static void *worker_main(void *arg) {
  lu_pool_t *p = arg;
  lu_manager_t *m = p->m;
  lu__runner()->worker = 1;
  lu__crash_altstack();
  uint64_t next_scan = lu__now_ns() + SCAN_NS;
  int napped = 0, ran = 0; /* ran: a turn since it last slept */
  pthread_mutex_lock(&p->lock);
  for (;;) {
    uint64_t now = lu__now_ns();
    if (p->ntimers && p->timers[0].due <= now) {
      lu_timer_t t = timer_pop(p);
      pthread_mutex_unlock(&p->lock);
      lu__shard_timer(t.s, now);
      pthread_mutex_lock(&p->lock);
      continue;
    }
    if (now >= next_scan) {
      next_scan = now + SCAN_NS;
      pthread_mutex_unlock(&p->lock);
      for (unsigned i = 0; i < m->n; i++) lu__shard_timer(&m->shards[i], now);
      /* Expired sticky sessions go on the same cadence: at most 1024
       * buckets per call under the sessions' leaf lock, so a table of B
       * buckets is swept every B / 1024 scans, busy or idle. */
      lu__route_expire(m, now / NS_PER_MS);
      pthread_mutex_lock(&p->lock);
      continue;
    }
    /* STEPPING BACK is decided here, under the lock held on through to
     * the sleep below, so two workers cannot both step back. */
    if (p->head && !(ran && lu__pool_step_back(p, now))) {
      lu_shard_t *s = p->head;
      p->head = s->rq_next;
      if (!p->head) p->tail = NULL;
      pthread_mutex_unlock(&p->lock);
      if (lu__shard_run(s)) { /* abandoned and replaced */
        worker_end();
        return NULL;
      }
      napped = 0;
      ran = 1;
      pthread_mutex_lock(&p->lock);
      continue;
    }
    if (p->stop) break;
    uint64_t until = next_scan;
    if (p->ntimers && p->timers[0].due < until) until = p->timers[0].due;
    if (!napped && awake_fast(p) <= 1) { /* NAPPING: the only fast one */
      napped = 1;
      if (now + NAP_NS < until) until = now + NAP_NS;
      /* Not on p->wake: a signal meant for a sleeper would wake us. */
      lu__cond_wait_until(&p->nap, &p->lock, until);
      continue;
    }
    p->nidle++;
    lu__cond_wait_until(&p->wake, &p->lock, until);
    p->nidle--;
    ran = 0;
  }
  pthread_mutex_unlock(&p->lock);
  worker_end();
  return NULL;
}

static void *watchdog_main(void *arg) {
  lu_pool_t *p = arg;
  lu_manager_t *m = p->m;
  pthread_mutex_lock(&p->lock);
  while (!p->stop) {
    pthread_mutex_unlock(&p->lock);
    uint64_t now = lu__now_ns();
    for (unsigned i = 0; i < m->n; i++) lu__shard_watch(&m->shards[i], now);
    pthread_mutex_lock(&p->lock);
    if (!p->stop) lu__cond_wait_until(&p->wdwake, &p->lock, now + WATCH_NS);
  }
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

/* Starts one more worker.  Under p->lock.  0 or LU_ENOMEM. */
static int add_worker(lu_pool_t *p) {
  if (p->nthreads == p->capthreads) {
    unsigned cap = p->capthreads ? p->capthreads * 2 : 4;
    pthread_t *t = realloc(p->threads, cap * sizeof *t);
    if (!t) return LU_ENOMEM;
    p->threads = t;
    unsigned char *d = realloc(p->detached, cap);
    if (!d) return LU_ENOMEM;
    p->detached = d;
    p->capthreads = cap;
  }
  if (pthread_create(&p->threads[p->nthreads], NULL, worker_main, p))
    return LU_ENOMEM;
  p->detached[p->nthreads++] = 0;
  p->nlive++;
  return 0;
}

int lu__pool_replace(lu_pool_t *p, pthread_t stuck, int slow) {
  pthread_mutex_lock(&p->lock);
  if (slow && p->nslow) p->nslow--; /* it never says it returned */
  for (unsigned i = 0; i < p->nthreads; i++)
    if (!p->detached[i] && pthread_equal(p->threads[i], stuck)) {
      p->detached[i] = 1; /* never joined: it may never return */
      p->nlive--;
      pthread_detach(stuck);
      break;
    }
  int rc = p->stop ? 0 : add_worker(p);
  pthread_mutex_unlock(&p->lock);
  return rc;
}

int lu__pool_start(lu_pool_t *p, lu_manager_t *m, unsigned n) {
  memset(p, 0, sizeof *p);
  p->m = m;
  if (pthread_mutex_init(&p->lock, NULL)) return LU_ENOMEM;
  if (lu__cond_init_mono(&p->wake)) goto no_wake;
  if (lu__cond_init_mono(&p->wdwake)) goto no_wdwake;
  if (lu__cond_init_mono(&p->nap)) goto no_nap;
  pthread_mutex_lock(&p->lock);
  int rc = 0;
  for (unsigned i = 0; i < n && !rc; i++) rc = add_worker(p);
  if (!rc && pthread_create(&p->watchdog, NULL, watchdog_main, p))
    rc = LU_ENOMEM;
  else if (!rc)
    p->watching = 1;
  pthread_mutex_unlock(&p->lock);
  if (rc) lu__pool_stop(p);
  return rc;
no_nap:
  pthread_cond_destroy(&p->wdwake);
no_wdwake:
  pthread_cond_destroy(&p->wake);
no_wake:
  pthread_mutex_destroy(&p->lock);
  return LU_ENOMEM;
}

void lu__pool_stop(lu_pool_t *p) {
  pthread_mutex_lock(&p->lock);
  p->stop = 1;
  pthread_cond_broadcast(&p->wake);
  pthread_cond_broadcast(&p->nap);
  pthread_cond_broadcast(&p->wdwake);
  pthread_mutex_unlock(&p->lock);
  if (p->watching) pthread_join(p->watchdog, NULL);
  /* The watchdog has stopped: nobody detaches a worker from here on. */
  for (unsigned i = 0; i < p->nthreads; i++)
    if (!p->detached[i]) pthread_join(p->threads[i], NULL);
  free(p->threads);
  free(p->detached);
  free(p->timers);
  pthread_mutex_destroy(&p->lock);
  pthread_cond_destroy(&p->wake);
  pthread_cond_destroy(&p->nap);
  pthread_cond_destroy(&p->wdwake);
  memset(p, 0, sizeof *p);
}
