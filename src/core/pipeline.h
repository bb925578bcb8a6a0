/*
 * pipeline.h - the embedded pipeline's shared definitions (not installed):
 * the manager object, what flows through it (items in, units out), and
 * the calls between its modules.  Each section is owned by the file it
 * names; docs/architecture.md draws the whole.
 *
 *   manager.c   lifecycle, submit, dispatch, the bus entry points, pending
 *   route.c     which shard gets an event (strategies, keys, affinity)
 *   view.c      members and the shard view (view.h)
 *   shard.c     a shard's queues, retry timers and turn (shard.h)
 *   pool.c      the worker threads that run shards' turns (shard.h)
 *   run.c       one attempt: select, execute, decide, emit
 *   outcome.c   building the stored records of an outcome (units)
 *   writer.c    the store writer: group commit, async batches, retries
 *   stats.c     counters and the accessors behind metrics
 *   config.c    defaults and validation of lu_config_t
 *
 * An event enters as an item (submit, accept, run_local), is routed once
 * (dispatch) and queued on its shard, runs there (run.c), and leaves as a
 * unit: the records of its outcome on their way to the store.  When the
 * store has them, the writer reports the outcome (counters, on_outcome,
 * the item's done) and the event stops being pending.
 */
#ifndef LUCENT_PIPELINE_H
#define LUCENT_PIPELINE_H

#include "internal.h"
#include "view.h"

typedef struct lu_shard_s lu_shard_t;

/* ---- items: events in flight ------------------------------------------ */

typedef struct lu_item_s {
  struct lu_item_s *next;
  lu_event_t *ev;
  uint64_t line, t_submit, due_ns;
  int derived;          /* emitted by a function, or forwarded here */
  int once;             /* never redelivered: records get LU_RECORD_ONCE */
  int executed;         /* LU_RUN_EXECUTED: done when decided, not stored */
  int unrouted;         /* an emitted event dispatch could not take yet */
  unsigned delivery;    /* > 1: a redelivery, run isolated (sandbox.c) */
  unsigned replayed;    /* may have run before: choose() asks the store */
  unsigned attempts, hops;
  const lu_fnent_t *fn; /* fixed once selected, so retries stay on it */
  lu_done_t done;       /* who to tell when it is finished here */
} lu_item_t;

/* ---- outcome.c: units, the records of one outcome --------------------- */

/* Offsets into a unit's text; NOFF = absent. */
#define LU_NOFF SIZE_MAX
typedef struct lu_urec_s {
  size_t id, type, subject, corr, caus, time, json, json_len;
} lu_urec_t;

/** An outcome on its way to the store: the records to append (the outcome
 *  event first, then emitted events) and what to report once stored. */
typedef struct lu_unit_s {
  struct lu_unit_s *next;
  lu_outcome_kind_t kind;
  int derived, shard; /* shard -1 = decided at intake */
  int once;           /* records get LU_RECORD_ONCE */
  uint64_t line, t_submit, exec_ns;
  unsigned attempts;
  const lu_fnent_t *fn;
  size_t ev_id, ev_type, reason; /* offsets in text */
  size_t result, result_len;     /* COMPLETED: the result's JSON */
  lu_done_t done;
  lu_buf_t text;
  lu_urec_t *rec;       /* inline1, or heap when a function emitted */
  size_t nrec, caprec;
  lu_urec_t inline1[2];
} lu_unit_t;

/** Units whose outcomes were reported, kept for the next outcomes: a
 *  unit and its text are two allocations made on a shard's thread and
 *  freed on the writer's, and reused they cost neither (outcome.c).  At
 *  most max units wait here; the writer gives them back, a worker (or a
 *  shard, for a turn run by another thread) takes LU_UNIT_TAKE at a time
 *  into its own list. */
typedef struct lu_unitpool_s {
  pthread_mutex_t lock;
  lu_unit_t *head;
  _Atomic size_t n; /* read without the lock only as a hint */
  size_t max;
} lu_unitpool_t;
#define LU_UNIT_TAKE 64

/** Where an outcome was decided: shard index (-1 = intake) and id (NULL
 *  at intake); spare, when not NULL, is the deciding thread's own list of
 *  reusable units (refilled from pool): a worker's, or the shard's. */
typedef struct lu_where_s {
  int shard;
  const char *id;
  lu_unit_t **spare;
  lu_unitpool_t *pool;
} lu_where_t;

/** lucent.Rejected for bad input: reason, origin, line, size and the raw
 *  bytes (truncated past max_bytes).  ev, when the input parsed, gives
 *  the context.  Its id derives from (origin, line, the event's source
 *  and id or else the bytes).  NULL when out of memory (nothing kept). */
lu_unit_t *lu__outcome_rejected(lu_where_t w, int derived,
                                const char *origin, uint64_t line,
                                uint64_t t_submit, const char *raw,
                                size_t len, size_t max_bytes,
                                const lu_event_t *ev, const char *reason);
/** lucent.DeadLettered: a valid event nothing can run; the event rides
 *  along.  NULL when out of memory. */
/** The delivery budget: cfg.max_deliveries, or 5. */
unsigned lu__delivery_budget(const lu_manager_t *m);

lu_unit_t *lu__outcome_dead(lu_where_t w, const lu_item_t *it,
                            const char *reason, unsigned attempts);
/** <Fn>Failed after the item's last attempt.  NULL when out of memory. */
/* The id and type of the outcome function fn records for ev: its
 * <fn>Completed (failed = 0) or <fn>Failed record. */
void lu__outcome_id(const lu_event_t *ev, const char *fn, int failed,
                    char id[37], char *type, size_t tcap);
lu_unit_t *lu__outcome_failed(lu_where_t w, const lu_item_t *it,
                              const char *reason, uint64_t exec_ns);
/** <Fn>Completed with out's result, and the events out emitted: their
 *  records follow the result's in the unit, and each is parsed back into
 *  kids[0..*nkids-1] (caller owns them) to re-enter the pipeline.  print
 *  is a scratch buffer.  NULL when out of memory (no kids then). */
lu_unit_t *lu__outcome_completed(lu_where_t w, const lu_item_t *it,
                                 const lu_out_t *out, lu_buf_t *print,
                                 uint64_t exec_ns,
                                 lu_event_t *kids[LU_MAX_EMIT],
                                 size_t *nkids);
void lu__unit_free(lu_unit_t *u);
/** Units reported and done with: kept in pool for reuse (up to its max),
 *  the others freed. */
void lu__unit_recycle(lu_unitpool_t *pool, lu_unit_t *const *units,
                      size_t nu);
/** Frees a list of units linked by next (a turn's spare, a pool's). */
void lu__unit_free_list(lu_unit_t *u);
/** The records of units[0..nu-1] into recs (room for them all); their
 *  number. */
size_t lu__unit_records(lu_unit_t *const *units, size_t nu,
                        lu_record_t *recs);
/** The outcome a unit reports (strings borrowed from the unit). */
void lu__unit_outcome(const lu_unit_t *u, const char *shard_id,
                      uint64_t now, lu_outcome_t *o);

/* ---- writer.c: the store writer --------------------------------------- */

/** A shard's outcomes held back for one batch (asynchronous store). */
typedef struct lu_hold_s {
  lu_unit_t **units;
  size_t nu, nr;
  uint64_t first_ns;
  lu_record_t *recs;
} lu_hold_t;

typedef struct lu_writer_s {
  pthread_mutex_t lock;   /* the queue and the thread's state */
  pthread_cond_t wake, space;
  lu_unit_t *head, *tail;
  size_t n;
  int stop;
  int idle, blocked;      /* thread waiting for work; producers waiting */
  int slot;               /* thread waiting for a batch to end */
  size_t async;           /* batches in flight the store wants; 0 = sync */
  size_t inflight;        /* batches begun and not reported yet */
  struct lu_sbatch_s *retry, *retry_tail; /* failed async batches */
  pthread_t thread;
  int running;
  pthread_mutex_t olock;  /* reporting outcomes: one batch at a time */
  /* One lu_store_append_begin at a time (a store is single-caller),
   * held by the writer thread from taking units off the queue until they
   * are begun, so that a shard beginning its own batch can never
   * overtake outcomes queued before it. */
  pthread_mutex_t begin;
  _Atomic uint64_t hold_ns;
  _Atomic uint64_t direct; /* batches begun by shards */
  lu_unitpool_t units;     /* reported units, for reuse */
} lu_writer_t;

/** Initialises the writer (no thread yet: lu__writer_run starts it). */
int lu__writer_start(lu_manager_t *m);
int lu__writer_run(lu_manager_t *m);
/** How long a turn holds outcomes, and a parked turn waits (0: default
 *  1 ms). */
void lu__writer_set_hold(lu_manager_t *m, uint64_t ns);
/** Stops the thread once everything queued and in flight is reported. */
void lu__writer_stop(lu_manager_t *m);
void lu__writer_destroy(lu_manager_t *m);
/** Queues a unit (blocks while the queue is full). */
void lu__writer_push(lu_manager_t *m, lu_unit_t *u);
/** An outcome made by a shard's turn: to the queue (synchronous store) or
 *  held for one batch (asynchronous store). */
void lu__writer_out(lu_manager_t *m, lu_hold_t *h, lu_unit_t *u);
/** Hands a turn's held outcomes on (begun directly when the writer is
 *  idle). */
void lu__writer_flush(lu_manager_t *m, lu_hold_t *h);
int lu__hold_init(lu_hold_t *h, const lu_manager_t *m);
void lu__hold_free(lu_hold_t *h);

/* ---- stats.c ---------------------------------------------------------- */

typedef struct lu_fnglobal_s { /* under stats lock */
  uint64_t completed, failed;
  lu_hist_t e2e;
} lu_fnglobal_t;

typedef struct lu_stats_s {
  pthread_mutex_t lock;
  lu_count_t total;
  lu_count_t *per_shard; /* n + 1: the last is intake */
  uint64_t events_in;
  uint64_t store_errors, store_batches, store_records;
  lu_fnglobal_t *fng;
} lu_stats_t;

int lu__stats_init(lu_stats_t *st, unsigned shards, size_t fns);
void lu__stats_destroy(lu_stats_t *st);
void lu__stats_event_in(lu_stats_t *st);
/** A batch reported: its units' outcomes counted (rc != 0: lost). */
void lu__stats_batch(lu_manager_t *m, lu_unit_t *const *units, size_t nu,
                     size_t nr, int rc, const char *why, uint64_t now);

/* ---- route.c ---------------------------------------------------------- */

/** Where lu__route sends an event: copied out of the view under its lock,
 *  so that no member pointer outlives it (view.c may free a member as
 *  soon as it is out of the view). */
typedef struct lu_dest_s {
  char id[LU_SHARD_ID_MAX];
  lu_shard_t *local; /* this process's shard, or NULL */
} lu_dest_t;

/** Picks the member that runs ev (its type's first candidate decides the
 *  strategy): LU_ROUTE_OK with *to, or LU_ROUTE_REJECT (missing key)
 *  / LU_ROUTE_DEAD (no function, depth, no shard) with why. */
int lu__route(lu_manager_t *m, const lu_event_t *ev, lu_dest_t *to,
              char *why, size_t wcap);
/** A candidate's affinity for ev on shard s, in [0,1]. */
double lu__affinity(lu_manager_t *m, const lu_shard_t *s,
                    const lu_fnent_t *fe, const lu_event_t *ev);
/** Drops expired sticky-session bindings (bounded work). */
void lu__route_expire(lu_manager_t *m, uint64_t now_ms);

/* ---- run.c ------------------------------------------------------------ */

/** Runs one attempt of it on shard s by the turn's holder: outcome, or a
 *  retry on the shard's timer heap.  Consumes it unless it is scheduled
 *  again.  Returns 1 when the watchdog abandoned the run meanwhile: the
 *  caller no longer holds the turn and must not touch s (shard.h). */
int lu__run_item(lu_shard_t *s, lu_item_t *it);

/* ---- config.c --------------------------------------------------------- */

/** Copies the caller's config into cfg: the fields within its
 *  struct_size, defaults for the others (all defaults for NULL).  0, or
 *  LU_EINVAL with why in errbuf for a struct_size this library does not
 *  know (lucent.h, "How lu_config_t grows"). */
int lu__config_import(lu_config_t *cfg, const lu_config_t *in, char *errbuf,
                      size_t errlen);

/** Checks (and completes) a copy of the user's config: 0, or LU_EINVAL
 *  with why in errbuf. */
int lu__config_check(lu_config_t *cfg, char *errbuf, size_t errlen);

/* ---- sandbox.c ---------------------------------------------------------- */

enum { LU_SANDBOX_RAN, LU_SANDBOX_CRASHED, LU_SANDBOX_HUNG,
       LU_SANDBOX_FAILED };
/** One function call to make isolated. */
typedef struct lu_sbx_job_s {
  const lu_fnent_t *fe;
  lu_ctx_t ctx;
  const cJSON *data;
  uint64_t hard_ns; /* its hard limit */
} lu_sbx_job_t;
/** A job's verdict: LU_SANDBOX_RAN with the function's status, its CPU
 *  and wall time and its output in out (valid during the call);
 *  LU_SANDBOX_CRASHED (sig) or HUNG (past hard_ns: killed); or
 *  LU_SANDBOX_FAILED (no child could be made: try again later). */
typedef void (*lu_sbx_result_fn)(void *ud, size_t job, int verdict,
                                 lu_status_t st, uint64_t cpu_ns,
                                 uint64_t wall_ns, int sig);
/** Runs jobs[0..n) in order in child processes (see sandbox.c), each at
 *  most its hard_ns, using out for their outputs; calls cb exactly once
 *  per job, in order, on the calling thread. */
void lu__sandbox_run(const lu_sbx_job_t *jobs, size_t n, lu_out_t *out,
                     lu_sbx_result_fn cb, void *ud);

/** Runs items[0..n), suspect inputs (delivered again), on shard s by the
 *  turn's holder, isolated in child processes; each ends as
 *  lu__run_item's would, or as a dead letter if it crashes or hangs its
 *  child (run.c). */
void lu__run_suspects(lu_shard_t *s, lu_item_t **items, size_t n);

/* ---- manager.c -------------------------------------------------------- */

void lu__pending_add(lu_manager_t *m, uint64_t k);
void lu__pending_done(lu_manager_t *m, uint64_t k);
/** Routes an item and hands it to its shard or the bus, or records its
 *  rejection (origin: where the input came from, or NULL) or dead
 *  letter.  from: the shard doing it (-1 = intake).  Consumes it and
 *  returns 0, or returns LU_ENOMEM with nothing done (the caller keeps
 *  it). */
int lu__dispatch(lu_manager_t *m, int from, lu_item_t *it,
                 const char *origin);
void lu__item_free(lu_item_t *it);
/** One of the shared random numbers (two choices). */
uint64_t lu__manager_rand(lu_manager_t *m);

/* ---- the manager ------------------------------------------------------ */

struct lu_manager_s {
  lu_config_t cfg;
  char *store_path;
  const lu_registry_t *reg;
  lu_weights_t w;
  unsigned n;            /* local shards */
  size_t intake_cap;     /* each shard's intake queue (shard.c) */
  unsigned nthreads;     /* the pool's workers as started */
  lu_shard_t *shards;
  struct lu_pool_s *pool;
  lu_view_t view;
  lu_writer_t writer;
  lu_stats_t stats;
  lu_bus_t bus;
  int has_bus;
  _Atomic uint64_t *rr;  /* per function, round robin counters */
  lu_sessions_t *sessions;
  lu_store_t *store;
  _Atomic int closing;
  int started;

  pthread_mutex_t plock; /* pending */
  pthread_cond_t pdone;
  uint64_t pending;

  pthread_mutex_t rng_lock;
  uint64_t rng;
};

#endif /* LUCENT_PIPELINE_H */
