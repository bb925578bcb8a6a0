/*
 * internal.h - interfaces between lucent's modules (not installed).
 *
 * Names: public lu_<type>_<verb>; non-static internals lu__<name>; statics
 * unprefixed.  Each section below is owned by the .c file it names.
 */
#ifndef LUCENT_INTERNAL_H
#define LUCENT_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "lucent/bus.h"
#include "lucent/lucent.h"
#include "util.h"

/* ---- event.c ---------------------------------------------------------- */

#define LU_EVENT_CTX 8
struct lu_event_s {
  char *raw;          /* JSON text, NUL-terminated (owned); NULL = stale */
  size_t raw_len;
  cJSON *root;        /* parsed tree (owned) */
  /* Borrowed from root; NULL when absent. */
  const char *id, *type, *source, *subject, *time;
  const char *correlationid, *causationid;
  const cJSON *data;
  unsigned depth;     /* causation depth ("causationdepth" extension) */
  /* The business context (attributes neither CloudEvents core nor
   * lucent's), in order: ctx[0..nctx) while nctx <= LU_EVENT_CTX; past
   * that, found by walking root (lu__event_is_core_attr). */
  size_t nctx;
  const cJSON *ctx[LU_EVENT_CTX];
};

/** Re-reads the cached attribute pointers after root changed. */
void lu__event_index(lu_event_t *ev);

/** True for attribute names that are CloudEvents core or lucent-managed
 *  (not business context to carry over to results). */
int lu__event_is_core_attr(const char *name);

/* ---- sessions.c ------------------------------------------------------- */

/** Sticky-session table (embedded flavour): thread safe, one mutex. */
typedef struct lu_sessions_s lu_sessions_t;
lu_sessions_t *lu__sessions_new(void);
void lu__sessions_free(lu_sessions_t *s);
/** Returns the seed of the shard bound to key.  Binds to `candidate`
 *  (a shard's seed) when the key is unbound, expired (now_ms >= last use
 *  + ttl_ms) or bound to a shard whose seed is not among live[0..nlive)
 *  (live NULL = all alive).  Refreshes the last use.  *created (may be
 *  NULL) says whether a new binding was made. */
uint64_t lu__sessions_bind(lu_sessions_t *s, const char *key, size_t len,
                           uint64_t candidate, uint32_t ttl_ms,
                           uint64_t now_ms, const uint64_t *live,
                           unsigned nlive, int *created);
/** The live binding for key without changing anything: 0 and *shard (a
 *  seed), or LU_ENOENT. */
int lu__sessions_lookup(lu_sessions_t *s, const char *key, size_t len,
                        uint64_t now_ms, uint64_t *shard);
/** Drops expired bindings (bounded work); returns how many. */
size_t lu__sessions_expire(lu_sessions_t *s, uint64_t now_ms);
size_t lu__sessions_count(lu_sessions_t *s);

/* ---- breaker.c -------------------------------------------------------- */

typedef enum { LU_BREAKER_CLOSED, LU_BREAKER_OPEN, LU_BREAKER_HALF_OPEN }
    lu_breaker_state_t;

/** A per-function circuit breaker, owned by one shard thread (no locks).
 *  closed --threshold consecutive failures--> open --cooldown--> half-open
 *  --success--> closed; half-open --failure--> open again. */
typedef struct lu_breaker_s {
  lu_breaker_state_t state;
  unsigned failures;     /* consecutive */
  uint64_t opened_ms;
} lu_breaker_t;

/** May a call go through now?  Moves open -> half-open after cooldown. */
int lu__breaker_allow(lu_breaker_t *b, uint64_t now_ms, uint32_t cooldown_ms);
/** Would lu__breaker_allow say yes, without changing state? */
int lu__breaker_peek(const lu_breaker_t *b, uint64_t now_ms,
                     uint32_t cooldown_ms);
void lu__breaker_record(lu_breaker_t *b, int ok, uint64_t now_ms,
                        unsigned threshold);

/* ---- hist.c ----------------------------------------------------------- */

/** Log-linear histogram of ns values: 8 sub-buckets per power of two, so a
 *  quantile is within 12.5%.  Not synchronized (one writer). */
#define LU_HIST_SUB 8
#define LU_HIST_BUCKETS (64 * LU_HIST_SUB)
typedef struct lu_hist_s {
  uint64_t counts[LU_HIST_BUCKETS];
  uint64_t n, sum, max;
} lu_hist_t;
void lu__hist_add(lu_hist_t *h, uint64_t v);
void lu__hist_merge(lu_hist_t *dst, const lu_hist_t *src);
/** The q-quantile (0 <= q <= 1), as the upper bound of its bucket (but at
 *  most max); 0 when empty. */
uint64_t lu__hist_quantile(const lu_hist_t *h, double q);

/* ---- select.c (composite score; docs/architecture.md, decision 8)
 * ----------------- */

typedef struct lu_weights_s {
  double load, resources, priority, affinity;
} lu_weights_t;

/** What the selector knows of one candidate on this shard. */
typedef struct lu_candidate_s {
  const lu_fn_t *fn;
  uint64_t ewma_ns;     /* execution latency EWMA on this shard (0 = none) */
  int breaker_open;     /* breaker would refuse now */
  double affinity;      /* [0,1], computed by the caller */
} lu_candidate_t;

typedef struct lu_scores_s {
  double load, resources, priority, affinity, total;
  const char *excluded; /* NULL, or why not eligible (static string) */
} lu_scores_t;

/** Scores every candidate (scores[i] for cands[i]) and returns the index of
 *  the best eligible one, or -1 when none is eligible.  Ineligible: breaker
 *  open, or cpu/memory need above the shard's free capacity.  Ties (total
 *  within 1e-9) go to higher priority, then the smaller name. */
int lu__select(const lu_candidate_t *cands, size_t n, const lu_weights_t *w,
               uint32_t cpu_free, uint32_t mem_free, lu_scores_t *scores);

/** One line describing a decision, for --explain.  Returns buf. */
char *lu__explain(char *buf, size_t cap, const char *shard,
                  const char *event_id, const lu_candidate_t *cands,
                  const lu_scores_t *scores, size_t n, int chosen);

/* ---- registry.c ------------------------------------------------------- */

/** A function as the registry keeps it (validated, defaults applied). */
typedef struct lu_fnent_s {
  const lu_fn_t *fn;       /* the descriptor, borrowed */
  size_t index;            /* position in name order */
  int strategy;            /* LU_STRAT_* */
  char **types;            /* parsed from fn->events */
  size_t ntypes;
  int32_t priority;        /* defaults applied */
  uint32_t timeout_ms, backoff_ms, ttl_ms;
} lu_fnent_t;

enum { LU_STRAT_ROUND_ROBIN, LU_STRAT_HASH, LU_STRAT_LOAD_BALANCED,
       LU_STRAT_STICKY };
const char *lu__strategy_name(int strategy);

/** Candidates for an event type, sorted by priority (desc) then name; the
 *  first decides routing.  *n = 0 and NULL when none. */
const lu_fnent_t *const *lu__registry_candidates(const lu_registry_t *reg,
                                                 const char *type,
                                                 size_t *n);
const lu_fnent_t *lu__registry_entry(const lu_registry_t *reg, size_t i);



/* ---- exec.c (the function contract: context and output) --------------- */

#define LU_MAX_EMIT 64

typedef struct lu_emit_s {
  char *type, *subject; /* owned; subject NULL = the input's */
  cJSON *data;          /* owned; NULL = JSON null */
} lu_emit_t;

struct lu_ctx_s {
  const lu_event_t *ev;
  const char *shard;
  const char *fn_name;
  const char *correlationid; /* never NULL */
  unsigned attempt;
  int64_t now_ms;
};

struct lu_out_s {
  cJSON *result;
  lu_emit_t emit[LU_MAX_EMIT];
  size_t nemit;
  int overflow;       /* lu_out_emit refused an event */
  int oom;            /* an lu_out_* call lost output: no memory */
  char reason[256];
};

/** Frees what a previous call left in out and empties it. */
void lu__out_reset(lu_out_t *out);

/* ---- manager.c: views for metrics and health (internal) --------------- */

/** Execution-latency and end-to-end histograms of function i (registry
 *  order), merged over shards.  Thread safe. */
void lu__manager_fn_hists(const lu_manager_t *m, size_t i, lu_hist_t *exec,
                          lu_hist_t *e2e);
/** Function i's isolated runs that crashed, and runs abandoned past the
 *  hard limit, over every shard.  Thread safe. */
void lu__manager_fn_faults(const lu_manager_t *m, size_t i, uint64_t *crashes,
                           uint64_t *abandoned);
/** Is function i's breaker open on shard k now?  Thread safe. */
int lu__manager_breaker_open(const lu_manager_t *m, size_t i, unsigned k);
/** Events waiting in shard k's queues (intake + forwarded).  Thread safe. */
size_t lu__manager_queue_depth(const lu_manager_t *m, unsigned k);
/** How long a shard holds its outcomes for one store batch, and how long
 *  a parked turn waits for its caller's next call before the shard's
 *  pool takes it over (default, and 0: 1 ms).  The tests
 *  lengthen it so that a burst's batching does not depend on how fast a
 *  sanitized build on a busy machine makes its calls.  Thread safe. */
void lu__manager_set_hold(lu_manager_t *m, uint64_t ns);
/** Store batches committed, records appended, batches lost.  Thread safe. */
void lu__manager_store_stats(const lu_manager_t *m, uint64_t *batches,
                             uint64_t *records, uint64_t *errors);
/** Of those, how many batches shard threads began themselves (an
 *  asynchronous store with the store thread idle); always 0 with a
 *  synchronous store.  Thread safe. */
uint64_t lu__manager_store_direct(const lu_manager_t *m);

/* Runs abandoned past their hard limit whose function has not returned
 * yet, process-wide (run.c): while any is left, plugins stay loaded. */
unsigned lu__runs_stuck(void);

#endif /* LUCENT_INTERNAL_H */
