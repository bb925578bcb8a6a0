/*
 * shard.c - a shard's queues, retry heap and turn (shard.h has the state
 * diagram, the invariants and the lock order).
 *
 * Producers (submit, accept, run_local, a shard dispatching an emitted
 * event) queue items with lu__shard_enqueue; the pool's workers run turns
 * (lu__shard_run); a NATS delivery thread may run an exec request inline
 * (lu__shard_run_inline) and keep the turn between the requests of a
 * burst.
 */
#include <stdlib.h>
#include <string.h>

#include "lucent/log.h"
#include "shard.h"

#define INTAKE_BATCH 64 /* intake items taken per turn */
/* The least intake share of a shard (lu__intake_cap).  Not a turn's
 * batch: with more shards than 16 per 1024 of queue, shares of 64 made
 * the queue hold more than asked for (4,096 inputs at 64 shards), and
 * inputs that wait longer are colder when their turn comes
 * (bench_pipeline at 64 shards, 12 pairs: a floor of 16 instead of 64
 * used 0.92-0.97x the CPU per event, p50 18 -> 6 ms). */
#define INTAKE_FLOOR 16

int lu__shard_init(lu_shard_t *s, lu_manager_t *m, unsigned idx,
                   const char *id, size_t nfns) {
  s->m = m;
  s->idx = idx;
  lu__fmt(s->id, sizeof s->id, "%s", id);
  s->turn = LU_TURN_IDLE;
  s->timer_due = UINT64_MAX;
  s->rng = lu__manager_rand(m);
  s->fns = calloc(nfns + 1, sizeof *s->fns);
  s->out = calloc(1, sizeof *s->out);
  s->spare_out = calloc(1, sizeof *s->spare_out);
  if (!s->fns || !s->out || !s->spare_out) return LU_ENOMEM;
  if (lu__hold_init(&s->hold, m)) return LU_ENOMEM;
  if (pthread_mutex_init(&s->lock, NULL)) return LU_ENOMEM;
  if (pthread_mutex_init(&s->stats_lock, NULL)) {
    pthread_mutex_destroy(&s->lock);
    return LU_ENOMEM;
  }
  if (pthread_cond_init(&s->space, NULL)) {
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->stats_lock);
    return LU_ENOMEM;
  }
  return 0;
}

void lu__shard_destroy(lu_shard_t *s) {
  if (!s->m) return; /* never initialised */
  if (s->out) lu__out_reset(s->out);
  free(s->out);
  free(s->spare_out);
  lu_item_t *lists[] = {s->batch_fw, s->batch_in};
  for (size_t k = 0; k < 2; k++)
    for (lu_item_t *it = lists[k], *nx; it; it = nx) {
      nx = it->next;
      lu__item_free(it);
    }
  for (size_t i = 0; i < s->nheap; i++) lu__item_free(s->heap[i]);
  while (s->stalled) {
    lu_item_t *it = s->stalled;
    s->stalled = it->next;
    lu__item_free(it);
  }
  free(s->heap);
  free(s->fns);
  lu__unit_free_list(s->spare);
  lu__buf_free(&s->print);
  lu__hold_free(&s->hold);
  pthread_mutex_destroy(&s->lock);
  pthread_mutex_destroy(&s->stats_lock);
  pthread_cond_destroy(&s->space);
}

/* ---- the retry heap (the turn holder's) ------------------------------ */

static int heap_push(lu_shard_t *s, lu_item_t *it) {
  if (s->nheap == s->capheap) {
    size_t cap = s->capheap ? s->capheap * 2 : 64;
    lu_item_t **h = realloc(s->heap, cap * sizeof *h);
    if (!h) return LU_ENOMEM;
    s->heap = h;
    s->capheap = cap;
  }
  size_t i = s->nheap++;
  while (i && s->heap[(i - 1) / 2]->due_ns > it->due_ns) {
    s->heap[i] = s->heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  s->heap[i] = it;
  return 0;
}

static lu_item_t *heap_pop(lu_shard_t *s) {
  lu_item_t *top = s->heap[0], *last = s->heap[--s->nheap];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= s->nheap) break;
    if (c + 1 < s->nheap && s->heap[c + 1]->due_ns < s->heap[c]->due_ns) c++;
    if (s->heap[c]->due_ns >= last->due_ns) break;
    s->heap[i] = s->heap[c];
    i = c;
  }
  if (s->nheap) s->heap[i] = last;
  return top;
}

void lu__shard_retry(lu_shard_t *s, lu_item_t *it) {
  /* Out of memory for the heap: the item waits on a list that needs no
   * allocation, and runs at a later turn (the pool looks at every shard
   * every 100 ms).  Nothing is lost; only its backoff changes. */
  if (heap_push(s, it)) {
    LU_LOG(LU_LOG_WARN, s->id, NULL, NULL,
           "out of memory for the retry heap; the retry runs next turn");
    it->next = s->stalled;
    s->stalled = it;
  }
}

/* ---- the turn --------------------------------------------------------- */

/* Work that makes a turn worth taking now: queued items or a due retry.
 * Under s->lock (the heap is read while nobody holds the turn, or by the
 * holder itself). */
static int has_work(const lu_shard_t *s, uint64_t now) {
  return s->fw_head || s->in_head || s->batch_fw || s->batch_in ||
         (s->nheap && s->heap[0]->due_ns <= now);
}

/* Leaves the turn (holder, under s->lock): READY when work waits (returns
 * 1: the caller pushes s to the run queue after unlocking), else IDLE,
 * with a timer at the first retry's due time if any. */
static int turn_leave(lu_shard_t *s) {
  s->runner = NULL;
  if (has_work(s, lu__now_ns())) {
    s->turn = LU_TURN_READY;
    return 1;
  }
  s->turn = LU_TURN_IDLE;
  if (s->nheap) lu__pool_timer(s->m->pool, s, s->heap[0]->due_ns);
  return 0;
}

void lu__shard_enqueue(lu_shard_t *s, lu_item_t *it, int forwarded) {
  lu_manager_t *m = s->m;
  atomic_fetch_add_explicit(&s->load, 1, memory_order_relaxed);
  pthread_mutex_lock(&s->lock);
  if (forwarded) {
    if (s->fw_tail) s->fw_tail->next = it;
    else s->fw_head = it;
    s->fw_tail = it;
    s->fw_n++;
  } else {
    while (s->in_n >= m->intake_cap && !atomic_load(&m->closing)) {
      s->blocked++;
      pthread_cond_wait(&s->space, &s->lock);
      s->blocked--;
    }
    if (s->in_tail) s->in_tail->next = it;
    else s->in_head = it;
    s->in_tail = it;
    s->in_n++;
  }
  /* IDLE: somebody must run it.  PARKED: the caller between two requests
   * of a burst cannot see it; a worker takes the turn over (its held
   * outcomes with it).  RUNNING, READY and INLINE see it themselves. */
  int push = s->turn == LU_TURN_IDLE || s->turn == LU_TURN_PARKED;
  if (push) s->turn = LU_TURN_READY;
  /* READY for as long as a turn's batch took to arrive, or until its
   * share of the intake is full: the workers awake are behind (pool.c,
   * WAKING). */
  size_t batch = m->intake_cap < INTAKE_BATCH ? m->intake_cap : INTAKE_BATCH;
  int behind = !push && s->turn == LU_TURN_READY &&
               s->in_n + s->fw_n == batch;
  pthread_mutex_unlock(&s->lock);
  if (push) lu__pool_push(m->pool, s);
  else if (behind) lu__pool_backlog(m->pool);
}

size_t lu__intake_cap(size_t capacity, unsigned n) {
  size_t share = n ? capacity / n : capacity;
  size_t least = capacity < INTAKE_FLOOR ? capacity : INTAKE_FLOOR;
  return share > least ? share : least;
}

size_t lu__shard_queued(lu_shard_t *s) {
  pthread_mutex_lock(&s->lock);
  size_t n = s->in_n + s->fw_n;
  pthread_mutex_unlock(&s->lock);
  return n;
}

/* The next item the turn runs: what it took from the queues, forwarded
 * first (left there by an abandoned turn too). */
static lu_item_t *batch_pop(lu_shard_t *s) {
  lu_item_t **l = s->batch_fw ? &s->batch_fw : &s->batch_in;
  lu_item_t *it = *l;
  if (it) {
    *l = it->next;
    it->next = NULL;
  }
  return it;
}

/* Registers the calling thread as the turn's runner, with a spare out
 * for the watchdog to hand over should the runner be abandoned.  Under
 * s->lock. */
static void runner_enter(lu_shard_t *s) {
  if (!s->spare_out) s->spare_out = calloc(1, sizeof *s->spare_out);
  lu_runner_t *r = lu__runner();
  r->thread = pthread_self();
  s->runner = r;
}

int lu__shard_run(lu_shard_t *s) {
  lu_manager_t *m = s->m;
  pthread_mutex_lock(&s->lock);
  s->turn = LU_TURN_RUNNING;
  runner_enter(s);
  /* Forwarded items all, intake items up to a batch; after the ones an
   * abandoned turn left. */
  lu_item_t **tail = &s->batch_fw;
  while (*tail) tail = &(*tail)->next;
  *tail = s->fw_head;
  s->fw_head = s->fw_tail = NULL;
  s->fw_n = 0;
  lu_item_t *in = s->in_head, *in_last = NULL;
  size_t k = 0;
  for (lu_item_t *p = in; p && k < INTAKE_BATCH; p = p->next) in_last = p, k++;
  if (in_last) {
    s->in_head = in_last->next;
    if (!s->in_head) s->in_tail = NULL;
    in_last->next = NULL;
    s->in_n -= k;
    tail = &s->batch_in;
    while (*tail) tail = &(*tail)->next;
    *tail = in;
  }
  int unblock = in_last && s->blocked > 0;
  pthread_mutex_unlock(&s->lock);
  if (unblock) pthread_cond_broadcast(&s->space);

  lu_item_t *it;
  while ((it = batch_pop(s))) {
    if (it->delivery > 1 && !it->unrouted) {
      /* Suspect inputs (delivered again) come in crowds after a shard
       * dies: the run of them that follows goes to one isolated child. */
      lu_item_t *run[64];
      size_t n = 0;
      run[n++] = it;
      while (n < 64) {
        lu_item_t *nx = s->batch_fw ? s->batch_fw : s->batch_in;
        if (!nx || nx->delivery < 2 || nx->unrouted) break;
        run[n++] = batch_pop(s);
      }
      lu__run_suspects(s, run, n);
      continue;
    }
    if (lu__run_item(s, it)) return 1; /* abandoned: s is not ours */
  }
  /* Retries the heap had no room for: those there now (one that fails
   * for want of memory again goes back and waits for a later turn). */
  size_t nstalled = 0;
  for (lu_item_t *p = s->stalled; p; p = p->next) nstalled++;
  while (nstalled-- && (it = s->stalled)) {
    s->stalled = it->next;
    it->next = NULL;
    if (lu__run_item(s, it)) return 1;
  }
  uint64_t now = lu__now_ns();
  while (s->nheap && s->heap[0]->due_ns <= now)
    if (lu__run_item(s, heap_pop(s))) return 1;
  /* The outcomes of this turn (and of a parked turn it took over). */
  lu__writer_flush(m, &s->hold);

  pthread_mutex_lock(&s->lock);
  int again = turn_leave(s);
  pthread_mutex_unlock(&s->lock);
  if (again) lu__pool_push(m->pool, s);
  return 0;
}

void lu__shard_watch(lu_shard_t *s, uint64_t now) {
  lu_manager_t *m = s->m;
  lu_unit_t *u = NULL;
  int worker = 0;
  pthread_t thread;
  pthread_mutex_lock(&s->lock);
  int abandoned = lu__run_abandon(s, now, &u, &worker, &thread);
  pthread_mutex_unlock(&s->lock);
  if (!abandoned) return;
  /* The turn is still RUNNING or INLINE, held by nobody but us now: its
   * held outcomes go to the store, and another runner takes over. */
  lu__writer_push(m, u);
  lu__writer_flush(m, &s->hold);
  if (worker) lu__pool_replace(m->pool, thread, worker == 2);
  pthread_mutex_lock(&s->lock);
  int again = turn_leave(s);
  pthread_mutex_unlock(&s->lock);
  if (again) lu__pool_push(m->pool, s);
}

void lu__shard_timer(lu_shard_t *s, uint64_t now) {
  lu_manager_t *m = s->m;
  pthread_mutex_lock(&s->lock);
  int push = 0;
  if (s->turn == LU_TURN_IDLE && (has_work(s, now) || s->stalled)) {
    push = 1;
  } else if (s->turn == LU_TURN_IDLE && s->nheap) {
    lu__pool_timer(m->pool, s, s->heap[0]->due_ns); /* fired early */
  } else if (s->turn == LU_TURN_PARKED) {
    uint64_t hold = atomic_load(&m->writer.hold_ns);
    if (now - s->park_ns >= hold || has_work(s, now))
      push = 1; /* taken over: the caller did not come back in time */
    else
      lu__pool_timer(m->pool, s, s->park_ns + hold);
  }
  if (push) s->turn = LU_TURN_READY;
  pthread_mutex_unlock(&s->lock);
  if (push) lu__pool_push(m->pool, s);
}

/* ---- inline turns ----------------------------------------------------- */

/* Generations of inline turns, unique in the process (from 1): the
 * calling thread's claim on a parked turn is its generation, so a turn
 * taken over meanwhile, or a manager freed and another made at its
 * address, is never mistaken for the caller's; the claim is only
 * compared, never followed, until it is checked against a live shard. */
static _Atomic uint64_t turn_gens;
static _Thread_local struct {
  const lu_manager_t *m;
  unsigned idx;
  uint64_t gen; /* 0: none */
} turn_held;

/* Under s->lock: if the calling thread's claim names s's parked turn, it
 * resumes it (1). */
static int turn_resume(lu_shard_t *s) {
  if (!turn_held.gen || s->turn_gen != turn_held.gen ||
      s->turn != LU_TURN_PARKED)
    return 0;
  s->turn = LU_TURN_INLINE;
  return 1;
}

/* The end of an inline turn: its outcomes handed on, the turn given back
 * (READY if work arrived meanwhile). */
static void turn_release(lu_shard_t *s) {
  lu__writer_flush(s->m, &s->hold);
  pthread_mutex_lock(&s->lock);
  int again = turn_leave(s);
  pthread_mutex_unlock(&s->lock);
  if (again) lu__pool_push(s->m->pool, s);
}

/* Runs an exec request's item on the calling thread (nats.c's delivery
 * thread) instead of handing it to a worker, when the shard is IDLE with
 * nothing queued or waiting to retry: the hand-off would cost a wake-up
 * and a context switch (a futex call each, dear on a VM) for a shard that
 * has nothing else to do.  Items that arrive meanwhile are queued; the
 * caller hands the turn to a worker when it gives it back.
 *
 * With `more` (the caller has another request waiting), the caller keeps
 * the turn PARKED after the item, with the outcomes held, and its next
 * call resumes it: a burst of requests runs as one turn and its outcomes
 * make one batch, with no thread woken.  A parked turn is taken over by a
 * worker when work is queued for it, or when the writer's hold time
 * passes (a pool timer), so a caller that never calls again delays
 * outcomes but loses nothing. */
int lu__shard_run_inline(lu_shard_t *s, lu_item_t *it, int more) {
  lu_manager_t *m = s->m;
  pthread_mutex_lock(&s->lock);
  int ok = turn_resume(s);
  if (!ok && s->turn == LU_TURN_IDLE && !s->fw_head && !s->in_head &&
      !s->batch_fw && !s->batch_in && !s->nheap && !s->stalled) {
    ok = 1;
    s->turn = LU_TURN_INLINE;
    s->turn_gen = turn_held.gen = atomic_fetch_add(&turn_gens, 1) + 1;
    turn_held.m = m;
    turn_held.idx = s->idx;
  }
  if (ok) runner_enter(s);
  pthread_mutex_unlock(&s->lock);
  if (!ok) return 0;
  atomic_fetch_add_explicit(&s->load, 1, memory_order_relaxed);
  if (lu__run_item(s, it)) { /* abandoned: the turn is no longer ours */
    turn_held.gen = 0;
    return 1;
  }
  pthread_mutex_lock(&s->lock);
  if (more && !s->fw_head && !s->in_head && !s->nheap) {
    s->runner = NULL;
    s->turn = LU_TURN_PARKED;
    s->park_ns = lu__now_ns();
    lu__pool_timer(m->pool, s, s->park_ns + atomic_load(&m->writer.hold_ns));
    pthread_mutex_unlock(&s->lock);
    return 1;
  }
  pthread_mutex_unlock(&s->lock);
  turn_held.gen = 0;
  turn_release(s);
  return 1;
}

void lu__shard_end_burst(lu_manager_t *m) {
  if (!turn_held.gen || turn_held.m != m || turn_held.idx >= m->n) return;
  lu_shard_t *s = &m->shards[turn_held.idx];
  pthread_mutex_lock(&s->lock);
  int mine = turn_resume(s);
  pthread_mutex_unlock(&s->lock);
  turn_held.gen = 0;
  if (mine) turn_release(s);
}

void lu__shard_claim_check(lu_manager_t *m, unsigned idx) {
  if (turn_held.gen && turn_held.m == m && turn_held.idx != idx)
    lu__shard_end_burst(m);
}
