/*
 * shard.h - a shard's state and its turn (shard.c), and the pool of worker
 * threads that runs turns (pool.c).
 *
 * A shard is a unit of ownership, not a thread (docs/architecture.md,
 * decision 10): its queues, its retry timers, its functions' breakers and
 * latency averages, and the order of its events.  Whoever holds the
 * shard's TURN runs its items, one at a time; nobody else touches that
 * state.  The turn is held by a worker of the pool, or by a caller that
 * runs an exec request inline (a NATS delivery thread: no hand-off, no
 * wake-up) while the shard has nothing else to do.
 *
 * THE TURN (s->turn, under s->lock)
 *
 *                 work arrives (enqueue), a retry falls due (timer)
 *        +-------------------------------------------------------+
 *        |                                                       v
 *      IDLE <------- nothing left ---------- RUNNING <-------- READY
 *       |  ^                                 (a worker)  pop   (on the
 *       |  |                                    |              run queue)
 *       |  +-- release: nothing queued ---+     +-- work left: READY ---^
 *       |                                 |                             |
 *       | run_local, nothing queued    INLINE ---- release: work --------+
 *       +----------------------------> (caller)                         |
 *                                       |   ^                           |
 *                      more requests    |   | the same caller's         |
 *                      coming: park     v   | next request: resume      |
 *                                      PARKED ---- work queued, the ----+
 *                                               hold expired (timer):
 *                                               taken over
 *
 *  1. Only the holder (RUNNING, INLINE) runs items or touches the shard's
 *     function state (fns, heap, out, hold).  A PARKED turn belongs to its
 *     caller until it is taken over, and its held outcomes go with it: the
 *     worker that takes it over flushes them first.
 *  2. A shard is on the pool's run queue exactly when it is READY, so it
 *     is never run by two workers, and a shard with work is never
 *     forgotten: every path out of RUNNING, INLINE and PARKED looks at the
 *     queues under s->lock and goes to READY if anything waits.
 *  3. Order: items run in the order they were queued (forwarded first,
 *     then intake, as a shard thread always did); a retry runs when due.
 *  4. Retries wait on the shard's heap; an IDLE shard with retries has a
 *     pool timer at the earliest due time.  Timers may be stale (the shard
 *     ran meanwhile): a timer only ever moves an IDLE or PARKED shard, and
 *     only if it has something to do.
 *  5. Waking a worker costs a futex call and a context switch: producers
 *     signal, after unlocking, only when a worker sleeps and the workers
 *     awake will not come for the work soon (pool.c, WAKING).
 *
 * LOCK ORDER (a thread holding one may take those below it, never above)
 *
 *   writer.begin  (writer.c: one batch begins at a time)
 *   s->lock       (a shard's queues and turn)
 *   pool->lock    (run queue, timers)
 *   view.members_lock -> view.lock      (view.c)
 *   writer.lock   (store queue)
 *   writer.olock  (reporting; calls on_outcome and done callbacks)
 *   m->plock, stats.lock, s->stats_lock, rng_lock, sessions  (leaves)
 *
 * No lock is held while a function runs, while the store appends, or
 * while a bus callback forwards.
 */
#ifndef LUCENT_SHARD_H
#define LUCENT_SHARD_H

#include "pipeline.h"

typedef enum lu_turn_e {
  LU_TURN_IDLE,    /* nobody holds it, nothing to do now */
  LU_TURN_READY,   /* on the pool's run queue */
  LU_TURN_RUNNING, /* a worker runs it */
  LU_TURN_INLINE,  /* a caller runs one item */
  LU_TURN_PARKED   /* a caller keeps it between the items of a burst */
} lu_turn_t;

typedef struct lu_fnstate_s {
  lu_breaker_t breaker;     /* turn holder only */
  _Atomic int breaker_open; /* mirror for readers */
  uint64_t ewma_ns;         /* turn holder only */
  /* under the shard's stats lock: */
  uint64_t executions, retries, timeouts;
  uint64_t abandoned;       /* runs past the hard limit (the watchdog) */
  uint64_t crashes;         /* isolated runs that died of a signal */
  lu_hist_t exec;
} lu_fnstate_t;

/* ---- run.c: runners ---------------------------------------------------

 A runner is a thread running a shard's turn: a pool worker, or a caller
 running an exec request inline.  Each has one record (thread-local) that
 the watchdog reads to find a function that does not return:

   run.state   IDLE --(before impl)--> BUSY --(impl returned)--> IDLE
                                        |
                                        +--(watchdog, past the hard
                                            limit: CAS)--> ABANDONED

 Whoever moves BUSY first decides: the runner (exchange to IDLE: it
 finishes the item) or the watchdog (CAS to ABANDONED: it dead-letters
 the item, gives the shard a new out and the turn to another runner, and
 replaces the worker).  An abandoned runner that returns at last waits
 until the watchdog has read the item (released), frees its item and out
 and leaves without touching the shard: the manager may be gone. */

enum { LU_RUN_IDLE, LU_RUN_BUSY, LU_RUN_ABANDONED };

typedef struct lu_runner_s {
  _Atomic int state;
  _Atomic int released;      /* ABANDONED: the watchdog is done with item */
  _Atomic uint64_t deadline; /* monotonic ns; when BUSY */
  lu_item_t *item;           /* BUSY: the item running */
  lu_out_t *out;             /* BUSY: the out it writes */
  const char *fn;            /* BUSY: its function's name */
  const char *shard;         /* BUSY: its shard's id */
  pthread_t thread;
  int worker;                /* a pool worker (the watchdog replaces it) */
  int slow;                  /* a worker counted in pool->nslow (pool.c) */
  uint64_t cpu_at, wall_at;  /* the last thread-CPU reading, and when */
  lu_unit_t *spare;          /* a worker's units to build outcomes in
                              * (outcome.c), whichever shard's turn it
                              * runs; freed when the worker ends */
} lu_runner_t;

/** The calling thread's runner record (thread-local, never NULL). */
lu_runner_t *lu__runner(void);
/** Gives the calling thread an alternate signal stack when the crash
 *  handler is installed (crash.c), so that a stack overflow is reported. */
void lu__crash_altstack(void);
/* Takes it back before the thread ends (a worker's exit). */
void lu__crash_altstack_free(void);
/** Abandons s's run if it is past its hard limit at now (under s->lock;
 *  run.c).  Returns 1 when it did: the caller finishes the handover
 *  (lu__shard_abandoned) after unlocking.  *was_worker: 0, or 1 for a
 *  pool worker, 2 for one counted slow (lu__pool_replace's). */
int lu__run_abandon(lu_shard_t *s, uint64_t now, lu_unit_t **unit,
                    int *was_worker, pthread_t *thread);

struct lu_shard_s {
  lu_manager_t *m;
  unsigned idx;
  char id[LU_SHARD_ID_MAX];
  lu_member_t *member;

  pthread_mutex_t lock;  /* queues, turn */
  pthread_cond_t space;  /* intake queue no longer full */
  lu_item_t *in_head, *in_tail, *fw_head, *fw_tail;
  size_t in_n, fw_n;
  int blocked;           /* producers waiting on space */
  lu_turn_t turn;
  uint64_t turn_gen;     /* INLINE/PARKED: the caller's claim */
  uint64_t park_ns;      /* PARKED since */
  struct lu_shard_s *rq_next; /* on the pool's run queue */
  uint64_t ready_ns;     /* when it joined the run queue (pool lock) */
  uint64_t timer_due;    /* its earliest pool timer (pool.c, pool lock) */
  _Atomic uint64_t load; /* queued + executing + waiting to retry */

  /* The runner holding the turn (RUNNING or INLINE; NULL otherwise),
   * for the watchdog (run.c).  Under s->lock. */
  struct lu_runner_s *runner;

  /* The turn holder's (invariant 1). */
  lu_item_t *batch_fw, *batch_in; /* taken from the queues, not run yet */
  lu_item_t **heap;      /* retries, by due time */
  size_t nheap, capheap;
  lu_item_t *stalled;    /* retries the heap had no memory for */
  lu_fnstate_t *fns;
  uint64_t rng;
  lu_out_t *out;         /* what the running function writes */
  lu_out_t *spare_out;   /* the watchdog's replacement for out */
  lu_buf_t print;        /* scratch for results' JSON */
  lu_hold_t hold;        /* outcomes held for one store batch */
  lu_unit_t *spare;      /* units to build outcomes in (outcome.c), for
                          * a turn run by a thread that is not a worker */

  pthread_mutex_t stats_lock;
  uint64_t routed, forwarded, received, retries;
};

/* ---- shard.c ---------------------------------------------------------- */

int lu__shard_init(lu_shard_t *s, lu_manager_t *m, unsigned idx,
                   const char *id, size_t nfns);
void lu__shard_destroy(lu_shard_t *s);
/** Queues a routed item: intake (bounded: blocks while full) or forwarded
 *  (unbounded: a shard never blocks on another).  Makes an IDLE or PARKED
 *  shard READY. */
void lu__shard_enqueue(lu_shard_t *s, lu_item_t *it, int forwarded);
/** A worker's turn on a READY shard: a batch of queued items, then the
 *  retries that are due, then the held outcomes flushed; back to READY if
 *  work is left, else IDLE.  Returns 1 when the watchdog abandoned this
 *  runner meanwhile (the worker must then exit without touching the
 *  pool), else 0. */
int lu__shard_run(lu_shard_t *s);
/** The watchdog's check of every shard (pool.c). */
void lu__shard_watch(lu_shard_t *s, uint64_t now);
/** A pool timer fired for s at now: an IDLE shard with a retry due, or a
 *  PARKED turn past its hold, becomes READY. */
void lu__shard_timer(lu_shard_t *s, uint64_t now);
/** Runs it on the calling thread if s is IDLE with nothing queued (or
 *  PARKED by this caller): 1 if it ran, 0 if the caller must queue it.
 *  more: another request follows soon; keep the turn PARKED.  (If the
 *  watchdog abandoned the run, it returns 1 too, having touched nothing
 *  of s after the function returned.) */
int lu__shard_run_inline(lu_shard_t *s, lu_item_t *it, int more);
/** Ends the calling thread's burst on m's shards (a PARKED turn of its
 *  own is released). */
void lu__shard_end_burst(lu_manager_t *m);
/** Before a caller takes a turn on shard idx: a burst it keeps on another
 *  of m's shards ends first (one claim per thread). */
void lu__shard_claim_check(lu_manager_t *m, unsigned idx);
/** Schedules a retry on the turn holder's heap. */
void lu__shard_retry(lu_shard_t *s, lu_item_t *it);
/** Each of n shards' intake queue when the manager's is `capacity`: an
 *  even share, but at least 16 (or all of it, if smaller), so that the
 *  items queued, and the memory they hold, do not grow with the number
 *  of shards (up to capacity / 16 shards, their sum is at most capacity). */
size_t lu__intake_cap(size_t capacity, unsigned n);
/** Items waiting in s's queues. */
size_t lu__shard_queued(lu_shard_t *s);

/* ---- pool.c ----------------------------------------------------------- */

typedef struct lu_timer_s {
  uint64_t due;
  lu_shard_t *s;
} lu_timer_t;

typedef struct lu_pool_s {
  lu_manager_t *m;
  pthread_mutex_t lock;
  pthread_cond_t wake;      /* monotonic */
  pthread_cond_t nap;        /* napping workers (pool.c, NAPPING): only
                              * stop wakes them, not producers */
  lu_shard_t *head, *tail;  /* run queue: READY shards */
  lu_timer_t *timers;       /* min-heap by due */
  size_t ntimers, captimers;
  unsigned nthreads, nidle;
  unsigned nlive;           /* workers not abandoned */
  unsigned nslow;           /* workers inside a slow function (WAKING) */
  int stop;
  pthread_t *threads;       /* joinable workers; abandoned ones detached */
  unsigned char *detached;
  unsigned capthreads;
  pthread_t watchdog;
  int watching;             /* the watchdog thread runs */
  pthread_cond_t wdwake;    /* the watchdog's sleep (monotonic) */
} lu_pool_t;

/** A function whose latency average is above this (or that has none yet)
 *  may keep its worker long enough to be worth waking another for the
 *  shards waiting: a few wake-ups' cost (pool.c, WAKING). */
#define LU_POOL_SLOW_NS (25u * 1000u)
/** The run queue's oldest shard has waited longer than this: the workers
 *  awake are behind, and a sleeping one is woken (pool.c, WAKING).  At
 *  1 ms, a saturated pipeline on 2 cores (bench_pipeline, 16 and 64
 *  shards) kept a second worker awake beside the submitter and the store
 *  writer often enough to starve the writer again (p50 2.5-5x that of a
 *  rule counting READY shards); at 5 ms, on par with it (8 pairs). */
#define LU_POOL_BEHIND_NS (5u * 1000u * 1000u)

/** Starts n worker threads.  0, or LU_ENOMEM (nothing started). */
int lu__pool_start(lu_pool_t *p, lu_manager_t *m, unsigned n);
/** Stops and joins the workers (after the manager drained). */
void lu__pool_stop(lu_pool_t *p);
/** s became READY: to the run queue's tail; wakes a sleeping worker when
 *  no running one will come for it soon (pool.c, WAKING). */
void lu__pool_push(lu_pool_t *p, lu_shard_t *s);
/** A READY shard's queue reached a turn's batch or its whole intake
 *  share: wakes a sleeping worker
 *  if there is one (the running ones are behind). */
void lu__pool_backlog(lu_pool_t *p);
/** The calling runner is about to run something that may take long (a
 *  function with no latency history or a slow one, an isolated run): a
 *  worker counts itself slow, and wakes a sleeping worker for the shards
 *  already waiting.  No-op for a runner that is not a worker. */
void lu__pool_slow_enter(lu_pool_t *p, lu_runner_t *r);
/** ...and it returned (not abandoned). */
void lu__pool_slow_exit(lu_pool_t *p, lu_runner_t *r);
/** Should a sleeping worker be woken, at now, for what the run queue
 *  holds?  1 when one sleeps, shards wait, and the fast workers awake
 *  are none or behind (the oldest READY shard has waited more than
 *  LU_POOL_BEHIND_NS) (pool.c, WAKING).  Under p->lock. */
int lu__pool_want_wake(const lu_pool_t *p, uint64_t now);
/** Should a worker that has just ended a turn (counted awake and fast)
 *  sleep, at now, though shards may wait?  1 exactly when another fast
 *  worker is awake and the run queue is not behind, so that its sleeping
 *  would not make lu__pool_want_wake wake it again (pool.c, STEPPING
 *  BACK); never while stopping.  Under p->lock. */
int lu__pool_step_back(const lu_pool_t *p, uint64_t now);
/** Look at s at time due (lu__shard_timer).  0 or LU_ENOMEM. */
int lu__pool_timer(lu_pool_t *p, lu_shard_t *s, uint64_t due);
/** A worker was abandoned by the watchdog: detach its thread and start
 *  another in its place.  slow: it was counted in nslow (its count goes
 *  with it).  0 or LU_ENOMEM (the pool goes on with one fewer). */
int lu__pool_replace(lu_pool_t *p, pthread_t stuck, int slow);

#endif /* LUCENT_SHARD_H */
