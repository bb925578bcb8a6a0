/*
 * pool.c - the worker threads that run shards' turns (shard.h).
 *
 * A run queue of READY shards (FIFO: a shard with work left goes to the
 * back, so shards share the workers fairly) and a min-heap of timers
 * (retries falling due, parked turns to take over).  Workers sleep on one
 * condition variable; a producer signals only when one sleeps, after
 * unlocking (a worker woken under the lock would block on it at once).
 *
 * Timers are an optimisation with a safety net: a sleeping worker also
 * wakes every SCAN_NS and looks at every shard, so a timer lost to an
 * allocation failure delays a retry, never strands it.  The same scan
 * sweeps a slice of the sticky-session table (lu__route_expire), so the
 * table holds the sessions of about one TTL, not of the whole run.
 */
#include <stdlib.h>
#include <string.h>

#include "shard.h"

#define SCAN_NS (100 * NS_PER_MS)

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
  pthread_mutex_lock(&p->lock);
  s->rq_next = NULL;
  if (p->tail) p->tail->rq_next = s;
  else p->head = s;
  p->tail = s;
  int wake = p->nidle > 0;
  pthread_mutex_unlock(&p->lock);
  if (wake) pthread_cond_signal(&p->wake);
}

static void *worker_main(void *arg) {
  lu_pool_t *p = arg;
  lu_manager_t *m = p->m;
  uint64_t next_scan = lu__now_ns() + SCAN_NS;
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
    if (p->head) {
      lu_shard_t *s = p->head;
      p->head = s->rq_next;
      if (!p->head) p->tail = NULL;
      pthread_mutex_unlock(&p->lock);
      lu__shard_run(s);
      pthread_mutex_lock(&p->lock);
      continue;
    }
    if (p->stop) break;
    uint64_t until = next_scan;
    if (p->ntimers && p->timers[0].due < until) until = p->timers[0].due;
    p->nidle++;
    lu__cond_wait_until(&p->wake, &p->lock, until);
    p->nidle--;
  }
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

int lu__pool_start(lu_pool_t *p, lu_manager_t *m, unsigned n) {
  memset(p, 0, sizeof *p);
  p->m = m;
  if (pthread_mutex_init(&p->lock, NULL)) return LU_ENOMEM;
  if (lu__cond_init_mono(&p->wake)) {
    pthread_mutex_destroy(&p->lock);
    return LU_ENOMEM;
  }
  p->threads = calloc(n, sizeof *p->threads);
  if (!p->threads) goto fail;
  for (unsigned i = 0; i < n; i++) {
    if (pthread_create(&p->threads[i], NULL, worker_main, p)) goto fail;
    p->nthreads++;
  }
  return 0;
fail:
  lu__pool_stop(p);
  return LU_ENOMEM;
}

void lu__pool_stop(lu_pool_t *p) {
  pthread_mutex_lock(&p->lock);
  p->stop = 1;
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->lock);
  for (unsigned i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
  free(p->threads);
  free(p->timers);
  pthread_mutex_destroy(&p->lock);
  pthread_cond_destroy(&p->wake);
  memset(p, 0, sizeof *p);
}
