/*
 * writer.c - the store writer: every outcome reaches the event store
 * through here, and is reported (counters, on_outcome, its done) once the
 * store has it.
 *
 *   turns (shards)                 writer thread                store
 *   --------------                 -------------                -----
 *   outcome unit --> queue ------> take a batch of units -----> append
 *     (bounded: blocks)            one transaction (SQLite)     (group
 *                                  or begun async (JetStream)    commit)
 *                                  report: counters, on_outcome,
 *                                  done, pending--
 *
 * A synchronous store (SQLite): the writer thread is the one writer and
 * groups the commits.  An asynchronous store (JetStream,
 * lu_store_append_begin): batches are only begun, up to as many at once
 * as the store asks (lu_store_batches_in_flight); a batch is reported
 * when the store says so, on the store's own thread, and one that failed
 * in flight comes back to the writer thread to be retried and waited for.
 * A shard's turn then holds its outcomes until its end (at most hold_ns)
 * and, when the writer thread has nothing to do, begins them itself as
 * one batch: one thread hand-off less per event (lu__writer_flush).
 *
 * Outcomes are reported in the order batches finish: the store's order,
 * except that a retried batch comes after later ones.
 *
 * The writer waits on nothing but the store (no deadlock: shard.h's lock
 * order), and a batch's report never waits on a queue.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lucent/log.h"
#include "shard.h"

#define QUEUE_MAX 16384
/* How long a turn holds its outcomes for an asynchronous store at most:
 * long enough for a run of fast functions to make one batch, short
 * against a NATS round trip's ~0.2 ms at the tail. */
#define HOLD_NS 1000000u

/* A batch on its way through an asynchronous store. */
typedef struct lu_sbatch_s {
  struct lu_sbatch_s *next; /* on the retry list */
  lu_manager_t *m;
  size_t nu, nr;
  lu_unit_t *units[];
} lu_sbatch_t;

void lu__writer_push(lu_manager_t *m, lu_unit_t *u) {
  lu_writer_t *w = &m->writer;
  pthread_mutex_lock(&w->lock);
  while (w->n >= QUEUE_MAX && !w->stop) {
    w->blocked++;
    pthread_cond_wait(&w->space, &w->lock);
    w->blocked--;
  }
  if (w->tail) w->tail->next = u;
  else w->head = u;
  w->tail = u;
  w->n++;
  /* Wake the writer only when it sleeps: a signal per event is a futex
   * call per event, and it is the one thread everyone feeds. */
  int wake = w->idle;
  w->idle = 0;
  pthread_mutex_unlock(&w->lock);
  if (wake) pthread_cond_signal(&w->wake);
}

/* A batch's end: counters, then each outcome to on_outcome and its done,
 * then the units are freed.  rc != 0: not stored, why says so.  On the
 * writer thread, a shard's turn, or the store's own thread: olock keeps
 * on_outcome to one call at a time. */
static void report(lu_manager_t *m, lu_unit_t *const *units, size_t nu,
                   size_t nr, int rc, const char *why) {
  uint64_t now = lu__now_ns();
  lu__stats_batch(m, units, nu, nr, rc, why, now);
  pthread_mutex_lock(&m->writer.olock);
  for (size_t i = 0; i < nu; i++) {
    lu_unit_t *u = units[i];
    if (m->cfg.on_outcome || u->done.fn) {
      lu_outcome_t o;
      lu__unit_outcome(u, u->shard < 0 ? "intake" : m->shards[u->shard].id,
                       now, &o);
      if (m->cfg.on_outcome) m->cfg.on_outcome(m->cfg.on_outcome_ud, &o);
      if (u->done.fn) u->done.fn(u->done.ctx, &o, rc == 0);
    }
  }
  pthread_mutex_unlock(&m->writer.olock);
  lu__unit_recycle(&m->writer.units, units, nu);
  lu__pending_done(m, nu);
}

/* Appends and waits, retrying a failing batch (a busy or briefly full
 * disk, a server restart, a JetStream leader election) before its
 * outcomes are reported as unstored: four tries in ~70 ms, then, with
 * cfg.store_retry_ms, on until that much time has passed, backing off to
 * one try a second.  `from` tries were made already. */
static void append_sync(lu_manager_t *m, lu_unit_t *const *units, size_t nu,
                        lu_record_t *recs, int from) {
  size_t nr = lu__unit_records(units, nu, recs);
  uint64_t t0 = lu__now_ns();
  uint64_t window = (uint64_t)m->cfg.store_retry_ms * NS_PER_MS;
  int rc = 0, said = 0;
  for (int attempt = from;; attempt++) {
    if (attempt) {
      if (attempt >= 4 && lu__now_ns() - t0 >= window) break;
      long ms = attempt < 8 ? 10L << (attempt - 1) : 1000;
      struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
      nanosleep(&ts, NULL);
    }
    rc = lu_store_append(m->store, recs, nr, NULL);
    if (!rc) break;
    if (attempt == 3 && window && !said) {
      said = 1;
      LU_LOG(LU_LOG_WARN, NULL, NULL,
             LU_KVS(LU_KV_UINT("events", nr),
                    LU_KV_UINT("retry_ms", m->cfg.store_retry_ms)),
             "the event store refuses a batch of %zu events (%s): trying "
             "again for up to %u ms", nr, lu_store_errmsg(m->store),
             m->cfg.store_retry_ms);
    }
  }
  if (said && !rc)
    LU_LOG(LU_LOG_INFO, NULL, NULL, LU_KVS(LU_KV_UINT("events", nr)),
           "the event store took the batch again after %.1f s",
           (double)(lu__now_ns() - t0) / 1e9);
  report(m, units, nu, nr, rc, rc ? lu_store_errmsg(m->store) : NULL);
}

/* lu_store_done_fn of an asynchronous batch: on the store's thread. */
static void batch_stored(void *ctx, int rc, size_t inserted,
                         const char *why) {
  (void)inserted, (void)why;
  lu_sbatch_t *b = ctx;
  lu_manager_t *m = b->m;
  lu_writer_t *w = &m->writer;
  if (rc) { /* the writer tries again, and waits this time */
    pthread_mutex_lock(&w->lock);
    b->next = NULL;
    if (w->retry_tail) w->retry_tail->next = b;
    else w->retry = b;
    w->retry_tail = b;
    int wake = w->idle || w->slot; /* it waits (and nobody woke it) */
    w->idle = w->slot = 0;
    pthread_mutex_unlock(&w->lock);
    if (wake) pthread_cond_signal(&w->wake);
    return;
  }
  report(m, b->units, b->nu, b->nr, 0, NULL);
  free(b);
  /* Signalled under the lock here: once it is released the writer may see
   * nothing in flight, stop, and the manager be freed. */
  pthread_mutex_lock(&w->lock);
  w->inflight--;
  if (w->slot) pthread_cond_signal(&w->wake);
  pthread_mutex_unlock(&w->lock); /* m may be freed from here on */
}

/* Begins units[0..nu-1] as one batch of an asynchronous store (its slot
 * already counted in inflight), then releases w->begin, which the caller
 * holds; recs has room for their records.  A batch that cannot even
 * begin goes to the retry list, as one that fails in flight does; one
 * with no memory for its box is appended synchronously. */
static void begin_batch(lu_manager_t *m, lu_unit_t *const *units, size_t nu,
                        lu_record_t *recs) {
  lu_writer_t *w = &m->writer;
  lu_sbatch_t *b = malloc(sizeof *b + nu * sizeof *units);
  if (!b) {
    append_sync(m, units, nu, recs, 0);
    pthread_mutex_unlock(&w->begin);
    pthread_mutex_lock(&w->lock);
    w->inflight--;
    pthread_mutex_unlock(&w->lock);
    return;
  }
  b->m = m;
  b->nu = nu;
  memcpy(b->units, units, nu * sizeof *units);
  b->nr = lu__unit_records(units, nu, recs);
  int rc = lu_store_append_begin(m->store, recs, b->nr, batch_stored, b);
  pthread_mutex_unlock(&w->begin);
  if (rc) batch_stored(b, LU_ESTORE, 0, lu_store_errmsg(m->store));
}

void lu__writer_flush(lu_manager_t *m, lu_hold_t *h) {
  lu_writer_t *w = &m->writer;
  size_t nu = h->nu;
  if (!nu) return;
  h->nu = h->nr = 0;
  /* Begun by this turn as one batch when the writer thread has nothing
   * to do (nothing queued or to retry, a batch slot free): that saves
   * waking it, a futex call each (dear on a VM). */
  if (!pthread_mutex_trylock(&w->begin)) { /* else the writer works */
    pthread_mutex_lock(&w->lock);
    int direct = !w->head && !w->retry && !w->stop && w->inflight < w->async;
    if (direct) w->inflight++;
    pthread_mutex_unlock(&w->lock);
    if (direct) {
      /* Counted before the batch may be reported: a drain then sees it. */
      atomic_fetch_add_explicit(&w->direct, 1, memory_order_relaxed);
      begin_batch(m, h->units, nu, h->recs);
      return;
    }
    pthread_mutex_unlock(&w->begin);
  }
  for (size_t i = 0; i < nu; i++) lu__writer_push(m, h->units[i]);
}

void lu__writer_out(lu_manager_t *m, lu_hold_t *h, lu_unit_t *u) {
  if (!m->writer.async) {
    lu__writer_push(m, u);
    return;
  }
  /* The hold bound is checked as outcomes are made, so an outcome made
   * just before a slow function waits for that function to end. */
  if (h->nu && h->nr + u->nrec > m->cfg.store_batch) lu__writer_flush(m, h);
  uint64_t now = lu__now_ns();
  if (!h->nu) h->first_ns = now;
  h->units[h->nu++] = u;
  h->nr += u->nrec;
  if (now - h->first_ns >= atomic_load(&m->writer.hold_ns))
    lu__writer_flush(m, h);
}

int lu__hold_init(lu_hold_t *h, const lu_manager_t *m) {
  memset(h, 0, sizeof *h);
  if (!m->writer.async) return 0; /* only an asynchronous store holds */
  size_t cap = m->cfg.store_batch;
  h->units = malloc((cap + 1) * sizeof *h->units);
  h->recs = malloc((cap + LU_MAX_EMIT + 1) * sizeof *h->recs);
  if (h->units && h->recs) return 0;
  lu__hold_free(h);
  return LU_ENOMEM;
}

void lu__hold_free(lu_hold_t *h) {
  free(h->units);
  free(h->recs);
  memset(h, 0, sizeof *h);
}

/* The writer thread (see the top of the file). */
static void *writer_main(void *arg) {
  lu_manager_t *m = arg;
  lu_writer_t *w = &m->writer;
  size_t cap = m->cfg.store_batch;
  lu_record_t *recs = malloc((cap + LU_MAX_EMIT + 1) * sizeof *recs);
  lu_unit_t **units = malloc((cap + 1) * sizeof *units);
  if (!recs || !units) {
    /* No room for a batch: one unit at a time, on the stack. */
    LU_LOG(LU_LOG_WARN, NULL, NULL, LU_KVS(LU_KV_UINT("batch", cap)),
           "out of memory for the store writer's batch; writing one "
           "outcome at a time");
    free(recs);
    free(units);
    recs = NULL;
    units = NULL;
    cap = 1;
  }
  lu_record_t recs1[LU_MAX_EMIT + 1];
  lu_unit_t *units1[1];
  if (!recs) recs = recs1, units = units1;
  for (;;) {
    pthread_mutex_lock(&w->begin);
    pthread_mutex_lock(&w->lock);
    for (;;) {
      if (w->retry) break;
      if (w->head && (!w->async || w->inflight < w->async)) break;
      if (w->stop && !w->head && !w->inflight) break;
      /* Wake-ups only for what we wait for (each is a futex call): work
       * from producers when nothing is queued; a batch's end when the
       * batches in flight are at the store's limit, or when stopping. */
      w->idle = !w->head;
      w->slot = w->head || w->stop;
      pthread_mutex_unlock(&w->begin);
      pthread_cond_wait(&w->wake, &w->lock);
      w->idle = w->slot = 0;
      pthread_mutex_unlock(&w->lock);
      pthread_mutex_lock(&w->begin);
      pthread_mutex_lock(&w->lock);
    }
    if (w->retry) {
      lu_sbatch_t *b = w->retry;
      w->retry = b->next;
      if (!w->retry) w->retry_tail = NULL;
      pthread_mutex_unlock(&w->lock);
      append_sync(m, b->units, b->nu, recs, 1);
      pthread_mutex_unlock(&w->begin);
      free(b);
      pthread_mutex_lock(&w->lock);
      w->inflight--;
      pthread_mutex_unlock(&w->lock);
      continue;
    }
    if (!w->head) { /* stopping, and nothing is left anywhere */
      pthread_mutex_unlock(&w->lock);
      pthread_mutex_unlock(&w->begin);
      break;
    }
    size_t nu = 0, nr = 0;
    while (w->head && nr < cap && nu < cap) {
      lu_unit_t *u = w->head;
      w->head = u->next;
      if (!w->head) w->tail = NULL;
      w->n--;
      units[nu++] = u;
      nr += u->nrec;
    }
    int unblock = w->blocked > 0;
    if (w->async) w->inflight++;
    pthread_mutex_unlock(&w->lock);
    if (unblock) pthread_cond_broadcast(&w->space);

    if (!w->async) {
      append_sync(m, units, nu, recs, 0);
      pthread_mutex_unlock(&w->begin);
      continue;
    }
    begin_batch(m, units, nu, recs);
  }
  if (recs != recs1) {
    free(recs);
    free(units);
  }
  return NULL;
}

int lu__writer_start(lu_manager_t *m) {
  lu_writer_t *w = &m->writer;
  memset(w, 0, sizeof *w);
  w->async = lu_store_batches_in_flight(m->store);
  atomic_init(&w->hold_ns, HOLD_NS);
  /* As many reusable units as one batch reports. */
  w->units.max = m->cfg.store_batch;
  if (pthread_mutex_init(&w->lock, NULL) || pthread_cond_init(&w->wake, NULL) ||
      pthread_cond_init(&w->space, NULL) ||
      pthread_mutex_init(&w->olock, NULL) ||
      pthread_mutex_init(&w->begin, NULL) ||
      pthread_mutex_init(&w->units.lock, NULL))
    return LU_ENOMEM;
  return 0;
}

int lu__writer_run(lu_manager_t *m) {
  lu_writer_t *w = &m->writer;
  if (pthread_create(&w->thread, NULL, writer_main, m)) return LU_ENOMEM;
  w->running = 1;
  return 0;
}

void lu__writer_stop(lu_manager_t *m) {
  lu_writer_t *w = &m->writer;
  if (!w->running) return;
  pthread_mutex_lock(&w->lock);
  w->stop = 1;
  pthread_cond_broadcast(&w->wake);
  pthread_cond_broadcast(&w->space);
  pthread_mutex_unlock(&w->lock);
  pthread_join(w->thread, NULL);
  w->running = 0;
}

void lu__writer_destroy(lu_manager_t *m) {
  lu_writer_t *w = &m->writer;
  pthread_mutex_destroy(&w->lock);
  pthread_cond_destroy(&w->wake);
  pthread_cond_destroy(&w->space);
  pthread_mutex_destroy(&w->olock);
  pthread_mutex_destroy(&w->begin);
  lu__unit_free_list(w->units.head);
  w->units.head = NULL;
  pthread_mutex_destroy(&w->units.lock);
}

void lu__writer_set_hold(lu_manager_t *m, uint64_t ns) {
  atomic_store(&m->writer.hold_ns, ns ? ns : HOLD_NS);
}
