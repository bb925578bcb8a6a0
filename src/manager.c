/*
 * manager.c - the function manager: shards as threads, the pipeline of
 * DESIGN.md for one process (bus "inproc", store "sqlite").
 *
 *   submit (caller thread)            shard thread i                 store thread
 *   ----------------------            --------------                 ------------
 *   size check, decode, validate      pop forwarded, then intake     pop outcome units
 *   route(type's strategy) --+        select (composite score)      one transaction per
 *     reject / dead letter --|----+   execute (deadline, retries)     batch (group commit)
 *   push to intake[target] <-+    |   <Fn>Completed / <Fn>Failed     then: counters,
 *     (bounded: blocks)           |   emitted events: route, push    on_outcome callback,
 *                                 |     to forwarded[target]         pending--
 *                                 +-> outcome unit -> store queue (bounded: blocks)
 *
 * With an asynchronous store (JetStream: lu__store_append_begin) batches
 * are only begun, up to as many at once as the store asks
 * (lu__store_batches_in_flight); the counters, callbacks and pending-- of
 * a batch run when the store reports it, on the store's own thread, and a
 * batch that failed in flight comes back to the store thread to be
 * retried and waited for.  A shard thread then holds its outcomes until
 * the end of its run (at most LU_HOLD_NS) and, when the store thread has
 * nothing to do, begins them itself as one batch: one thread hand-off
 * less per event (shard_flush).
 *
 * Invariants:
 *  1. Every event that enters (submitted or emitted) produces exactly one
 *     outcome unit, and `pending` counts entered-but-not-recorded events;
 *     lu_manager_drain() waits for it to reach 0.
 *  2. Items in a shard's queues are pinned: they are executed where they are
 *     and never routed again (decision 4).  Routing happens once, before the
 *     push, so the embedded bus needs no hop limit.
 *  3. No deadlock: the intake queue is bounded (producers block: that is the
 *     backpressure), the forwarded queue is not (a shard never blocks on
 *     another shard), and the store queue is bounded but the store thread
 *     waits on nothing but the store: SQLite, or an asynchronous store's
 *     batches in flight, whose reports (on the store's own thread) never
 *     wait on a queue or on sbegin.  A shard that begins its own batch
 *     waits, like the store thread, only on the store.  Memory stays
 *     bounded because forwarded items only come from executed intake
 *     items (fan-out x depth limit).
 *  4. A shard's function state (breakers, EWMAs) is touched only by the
 *     holder of the shard's turn: its own thread, or a caller running an
 *     exec request inline while that thread sleeps (run_inline), who may
 *     keep the turn between the requests of a burst (parked); the thread
 *     takes a parked turn over, under the shard's lock, only while its
 *     holder is not running.
 *     Counters readers may see live are under the shard's stats lock.
 *  5. Waking a thread costs a futex call (dear on a VM), so a producer
 *     signals only a consumer that sleeps (its idle flag), clears the flag
 *     so that the next producer does not signal it again, and signals
 *     after unlocking: a thread woken under the lock would at once block
 *     on it.  The consumer re-checks its queue under the lock, so no
 *     wake-up is lost.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "lucent/log.h"

#define MAX_SHARDS 256   /* in a view */
#define MAX_MEMBERS 1024 /* shards ever seen by this process */
#define MAX_HOPS 2
#define INTAKE_BATCH 64
#define STORE_QUEUE_MAX 16384
#define REJECT_RAW_MAX 4096 /* bytes of an oversized input kept as "raw" */
/* How long a shard holds its outcomes for an asynchronous store at most
 * (shard_out): long enough for a run of fast functions to make one batch,
 * short against a NATS round trip's ~0.2 ms at the tail. */
#define LU_HOLD_NS 1000000u

/* ---- data ------------------------------------------------------------- */

typedef struct item_s {
  struct item_s *next;
  lu_event_t *ev;
  uint64_t line, t_submit, due_ns;
  int derived;
  unsigned attempts, hops;
  const lu_fnent_t *fn; /* fixed once selected, so retries stay on it */
  lu_done_t done;       /* who to tell when it is finished here */
  int packable;         /* its records get LU_RECORD_PACKABLE (exec) */
} item_t;

#define NOFF SIZE_MAX
typedef struct urec_s {
  size_t id, type, subject, corr, caus, time, json, json_len;
} urec_t;

/* An outcome on its way to the store: the records to append (the outcome
 * event first, then emitted events) and what to report once stored. */
typedef struct unit_s {
  struct unit_s *next;
  lu_outcome_kind_t kind;
  int derived, shard; /* shard -1 = decided at intake */
  int packable;       /* records get LU_RECORD_PACKABLE */
  uint64_t line, t_submit, exec_ns;
  unsigned attempts;
  const lu_fnent_t *fn;
  size_t ev_id, ev_type, reason; /* offsets in text */
  size_t result, result_len;     /* COMPLETED: the result's JSON */
  lu_done_t done;
  lu_buf_t text;
  urec_t *rec;          /* inline1 or heap when a function emitted */
  size_t nrec, caprec;
  urec_t inline1[2];
} unit_t;

typedef struct fnstate_s {
  lu_breaker_t breaker;   /* shard thread only */
  _Atomic int breaker_open; /* mirror for readers */
  uint64_t ewma_ns;       /* shard thread only */
  /* under the shard's stats lock: */
  uint64_t executions, retries, timeouts;
  lu_hist_t exec;
} fnstate_t;

typedef struct shard_s shard_t;

/* A shard this process knows of: its own (local != NULL) or another
 * process's, seen in heartbeats or a static list.  Members are never
 * freed before the manager, so a view can point at them. */
typedef struct member_s {
  char id[64];
  uint64_t seed;          /* rendezvous seed: hash of the id */
  shard_t *local;         /* NULL for a remote shard */
  _Atomic uint64_t load;  /* remote: last reported load */
  unsigned slot;          /* index in m->members: stable */
} member_t;

struct shard_s {
  struct lu_manager_s *m;
  unsigned idx;
  char id[64];
  member_t *member;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t wake, space;
  item_t *in_head, *in_tail, *fw_head, *fw_tail;
  size_t in_n, fw_n;
  int stop;
  int idle;    /* the shard thread waits on `wake`: signal it */
  int inline_busy; /* a producer holds the thread's turn (run_inline) */
  int parked;      /* ... and is between two items of a burst */
  int watching;    /* the thread waits, timed, for a parked turn */
  uint64_t park_ns;   /* when the turn was parked */
  uint64_t turn_gen;  /* which acquisition holds the turn (turn_gens) */
  int blocked; /* producers waiting on `space` */
  _Atomic uint64_t load; /* queued + executing + waiting to retry */
  /* shard thread only */
  item_t **heap;
  size_t nheap, capheap;
  fnstate_t *fns;
  uint64_t rng;
  lu_out_t out;
  lu_buf_t print; /* print_json's output */
  /* Asynchronous store only: this run's outcomes, not handed on yet
   * (shard_out), the first of them held since ofirst_ns. */
  unit_t **ounits;
  size_t onu, onr;
  uint64_t ofirst_ns;
  lu_record_t *orecs;
  /* under stats_lock */
  pthread_mutex_t stats_lock;
  uint64_t routed, forwarded, received, retries;
};

typedef struct fnglobal_s { /* under m->stats_lock */
  uint64_t completed, failed;
  lu_hist_t e2e;
} fnglobal_t;

struct lu_manager_s {
  lu_config_t cfg;
  char *store_path;
  const lu_registry_t *reg;
  lu_weights_t w;
  unsigned n; /* local shards */
  shard_t *shards;
  /* Members and the view (the live ones, in a stable order). */
  pthread_mutex_t members_lock;
  member_t *members[MAX_MEMBERS];
  unsigned nmembers;
  pthread_rwlock_t vlock;
  unsigned vn;
  member_t *view[MAX_SHARDS];
  uint64_t vseeds[MAX_SHARDS];
  unsigned char alive[MAX_MEMBERS]; /* by slot, under vlock */
  lu_bus_t bus;
  int has_bus;
  _Atomic uint64_t *rr; /* per function, round robin counters */
  lu_sessions_t *sessions;
  lu_store_t *store;
  int closing, started;

  pthread_mutex_t slock; /* store queue */
  pthread_cond_t swake, sspace;
  unit_t *uhead, *utail;
  size_t un;
  int sstop;
  int sidle, sblocked; /* store thread waiting for work; producers waiting */
  int sslot;           /* store thread waiting for a batch to end */
  size_t sasync;       /* batches in flight the store wants; 0 = sync */
  _Atomic uint64_t hold_ns; /* LU_HOLD_NS; lu__manager_set_hold */
  size_t sinflight;    /* batches begun and not reported yet */
  struct sbatch_s *retry, *retry_tail; /* failed async batches */
  pthread_t sthread;
  pthread_mutex_t olock; /* reporting outcomes: one batch at a time */
  /* One lu__store_append_begin at a time (a store is single-caller),
   * held by the store thread from taking units off the queue until they
   * are begun, so that a shard beginning its own batch (shard_flush) can
   * never overtake outcomes queued before it. */
  pthread_mutex_t sbegin;

  pthread_mutex_t plock; /* pending */
  pthread_cond_t pdone;
  uint64_t pending;

  pthread_mutex_t stats_lock;
  lu_count_t total;
  lu_count_t *per_shard; /* n + 1: the last is intake */
  uint64_t events_in;
  uint64_t store_errors, store_batches, store_records;
  _Atomic uint64_t sdirect; /* batches begun by shard threads */
  fnglobal_t *fng;

  pthread_mutex_t rng_lock;
  uint64_t rng;
};

/* ---- config ----------------------------------------------------------- */

void lu_config_init(lu_config_t *c) {
  memset(c, 0, sizeof *c);
  c->shards = 1;
  c->store = ":memory:";
  c->max_event_bytes = 1u << 20;
  c->queue_capacity = 1024;
  c->max_depth = 16;
  c->w_load = 0.3, c->w_resources = 0.25, c->w_priority = 0.25,
  c->w_affinity = 0.2;
  c->shard_cpu_millis = 1000;
  c->shard_memory_mb = 1024;
  c->breaker_failures = 5;
  c->breaker_cooldown_ms = 1000;
  c->store_batch = 4096;
}

const char *lu_outcome_name(lu_outcome_kind_t k) {
  switch (k) {
#define XX(n, s) \
    case LU_OUTCOME_##n: return s;
    LU_OUTCOME_MAP(XX)
#undef XX
    default: return "unknown";
  }
}

/* ---- small helpers ---------------------------------------------------- */

static void pending_done(struct lu_manager_s *m, uint64_t k);

static size_t put_z(lu_buf_t *b, const char *s) {
  if (!s) return NOFF;
  size_t off = b->len;
  lu__buf_put(b, s, strlen(s) + 1);
  return off;
}

static const char *at(const lu_buf_t *b, size_t off) {
  return off == NOFF || b->oom ? NULL : b->p + off;
}

#define UNIT_TEXT_INITIAL 1536

static unit_t *unit_new(lu_outcome_kind_t kind, int derived, int shard,
                        uint64_t line, uint64_t t_submit) {
  unit_t *u = calloc(1, sizeof *u);
  if (!u) {
    /* Out of memory while recording an outcome: nothing sane is left to
     * do that would not lose the event silently. */
    fprintf(stderr, "lucent: out of memory recording an outcome\n");
    abort();
  }
  u->kind = kind;
  u->derived = derived;
  u->shard = shard;
  u->line = line;
  u->t_submit = t_submit;
  u->ev_id = u->ev_type = u->reason = u->result = NOFF;
  u->rec = u->inline1;
  u->caprec = sizeof u->inline1 / sizeof *u->inline1;
  /* One record (CloudEvent + its column copies) is ~0.5-1 KiB: allocate
   * that once instead of growing 256 -> 512 -> 1024 (three reallocs and
   * copies per outcome were 1/3 of the shard thread's time). */
  lu__buf_reserve(&u->text, UNIT_TEXT_INITIAL);
  return u;
}

static void unit_free(unit_t *u) {
  if (!u) return;
  lu__buf_free(&u->text);
  if (u->rec != u->inline1) free(u->rec);
  free(u);
}

static uint64_t shared_rand(lu_manager_t *m) {
  pthread_mutex_lock(&m->rng_lock);
  uint64_t r = lu__rand_next(&m->rng);
  pthread_mutex_unlock(&m->rng_lock);
  return r;
}

/* ---- building the recorded events (hand-written JSON: the hot path) --- */

/* Appends `,"name":value` for each business-context attribute of src (any
 * top-level attribute that is not CloudEvents core or lucent-managed). */
static void put_business_context(lu_buf_t *b, const cJSON *root) {
  for (const cJSON *it = root ? root->child : NULL; it; it = it->next) {
    if (!it->string || lu__event_is_core_attr(it->string)) continue;
    lu__buf_puts(b, ",");
    lu__buf_json_str(b, it->string, strlen(it->string));
    lu__buf_puts(b, ":");
    if (cJSON_IsString(it)) {
      lu__buf_json_str(b, it->valuestring, strlen(it->valuestring));
    } else {
      char *v = cJSON_PrintUnformatted(it);
      lu__buf_puts(b, v ? v : "null");
      free(v);
    }
  }
}

static void put_attr(lu_buf_t *b, const char *name, const char *v) {
  if (!v || !*v) return; /* CloudEvents: present means not empty */
  lu__buf_puts(b, ",\"");
  lu__buf_puts(b, name);
  lu__buf_puts(b, "\":");
  lu__buf_json_str(b, v, strlen(v));
}

typedef struct evhead_s {
  const char *id, *type, *source, *subject, *corr, *caus, *shard, *fn;
  unsigned depth;
  const cJSON *context; /* copy business context from this root */
} evhead_t;

/* Writes one complete CloudEvent into u->text as record u->nrec, with
 * `data_json` (already JSON text, may be NULL = no data). */
static void add_record(unit_t *u, const evhead_t *h, const char *data_json,
                       size_t data_len) {
  lu_buf_t *b = &u->text;
  if (u->nrec == u->caprec) {
    size_t cap = u->caprec * 4;
    urec_t *p = u->rec == u->inline1 ? malloc(cap * sizeof *p)
                                     : realloc(u->rec, cap * sizeof *p);
    if (!p) {
      fprintf(stderr, "lucent: out of memory recording an outcome\n");
      abort();
    }
    if (u->rec == u->inline1) memcpy(p, u->inline1, sizeof u->inline1);
    u->rec = p;
    u->caprec = cap;
  }
  urec_t *r = &u->rec[u->nrec++];
  char tbuf[32];
  lu__rfc3339(lu__wall_ms(), tbuf);
  r->json = b->len;
  lu__buf_puts(b, "{\"specversion\":\"1.0\"");
  put_attr(b, "id", h->id);
  put_attr(b, "source", h->source);
  put_attr(b, "type", h->type);
  put_attr(b, "subject", h->subject);
  put_attr(b, "time", tbuf);
  lu__buf_puts(b, ",\"datacontenttype\":\"application/json\"");
  put_attr(b, "correlationid", h->corr);
  put_attr(b, "causationid", h->caus);
  put_business_context(b, h->context);
  put_attr(b, "shardid", h->shard);
  put_attr(b, "function", h->fn);
  if (h->depth) {
    char d[32];
    lu__fmt(d, sizeof d, ",\"causationdepth\":%u", h->depth);
    lu__buf_puts(b, d);
  }
  if (data_json) {
    lu__buf_puts(b, ",\"data\":");
    lu__buf_put(b, data_json, data_len);
  }
  lu__buf_puts(b, "}");
  r->json_len = b->len - r->json;
  lu__buf_put(b, "", 1); /* NUL after the JSON */
  r->id = put_z(b, h->id);
  r->type = put_z(b, h->type);
  r->subject = put_z(b, h->subject);
  r->corr = put_z(b, h->corr);
  r->caus = put_z(b, h->caus);
  r->time = put_z(b, tbuf);
}

static const char *corr_of(const lu_event_t *ev) {
  return ev->correlationid ? ev->correlationid : ev->id;
}

/* cJSON value -> compact JSON in the shard's reusable print buffer, valid
 * until the next call.  On allocation failure: "null" (the unit's own
 * buffer would fail the same way and report it). */
static const char *print_json(shard_t *s, const cJSON *v, size_t *len) {
  s->print.len = 0;
  lu__buf_json_value(&s->print, v);
  if (s->print.oom) {
    lu__buf_free(&s->print);
    *len = 4;
    return "null";
  }
  *len = s->print.len;
  return s->print.p;
}

/* ---- the store thread ------------------------------------------------- */

static void store_push(lu_manager_t *m, unit_t *u) {
  pthread_mutex_lock(&m->slock);
  while (m->un >= STORE_QUEUE_MAX && !m->sstop) {
    m->sblocked++;
    pthread_cond_wait(&m->sspace, &m->slock);
    m->sblocked--;
  }
  if (m->utail) m->utail->next = u;
  else m->uhead = u;
  m->utail = u;
  m->un++;
  /* Wake the store thread only when it sleeps: a signal per event is a
   * futex call per event, and the store is the one thread everyone feeds.
   * Invariant 5. */
  int wake = m->sidle;
  m->sidle = 0;
  pthread_mutex_unlock(&m->slock);
  if (wake) pthread_cond_signal(&m->swake);
}

static void account(lu_manager_t *m, const unit_t *u, uint64_t now) {
  lu_count_t *ps = &m->per_shard[u->shard < 0 ? m->n : (unsigned)u->shard];
  if (u->derived) {
    m->total.derived[u->kind]++;
    ps->derived[u->kind]++;
  } else {
    m->total.outcomes[u->kind]++;
    ps->outcomes[u->kind]++;
  }
  if (u->fn) {
    fnglobal_t *g = &m->fng[u->fn->index];
    if (u->kind == LU_OUTCOME_COMPLETED) g->completed++;
    else if (u->kind == LU_OUTCOME_FAILED) g->failed++;
    lu__hist_add(&g->e2e, now - u->t_submit);
  }
}

/* A batch on its way through an asynchronous store (lu__store_append_begin):
 * its units, reported once the store says stored or failed. */
typedef struct sbatch_s {
  struct sbatch_s *next; /* on m->retry */
  lu_manager_t *m;
  size_t nu, nr;
  unit_t *units[];
} sbatch_t;

/* The records of units[0..nu-1] into recs (room for them all); their
 * number. */
static size_t unit_records(unit_t *const *units, size_t nu,
                           lu_record_t *recs) {
  size_t nr = 0;
  for (size_t i = 0; i < nu; i++) {
    const unit_t *u = units[i];
    if (u->text.oom) {
      fprintf(stderr, "lucent: out of memory building an outcome\n");
      abort();
    }
    for (size_t k = 0; k < u->nrec; k++) {
      const urec_t *r = &u->rec[k];
      recs[nr++] = (lu_record_t){
          .id = at(&u->text, r->id),
          .type = at(&u->text, r->type),
          .subject = at(&u->text, r->subject),
          .correlationid = at(&u->text, r->corr),
          .causationid = at(&u->text, r->caus),
          .time = at(&u->text, r->time),
          .json = at(&u->text, r->json),
          .len = r->json_len,
          .flags = u->packable ? LU_RECORD_PACKABLE : 0,
      };
    }
  }
  return nr;
}

/* A batch's end: counters, then each outcome to on_outcome and its done,
 * then the units are freed.  rc != 0: not stored, why says so.  Runs on
 * the store thread, or on the store's own thread for an asynchronous
 * store: olock keeps on_outcome to one call at a time. */
static void report(lu_manager_t *m, unit_t *const *units, size_t nu,
                   size_t nr, int rc, const char *why) {
  uint64_t now = lu__now_ns();
  pthread_mutex_lock(&m->stats_lock);
  if (rc) {
    m->store_errors++;
    LU_LOG(LU_LOG_ERROR, NULL, NULL,
           LU_KVS(LU_KV_UINT("events", nr), LU_KV_STR("store", why)),
           "event store batch not stored");
  }
  m->store_batches++;
  m->store_records += nr;
  for (size_t i = 0; i < nu; i++) account(m, units[i], now);
  pthread_mutex_unlock(&m->stats_lock);

  pthread_mutex_lock(&m->olock);
  for (size_t i = 0; i < nu; i++) {
    unit_t *u = units[i];
    if (m->cfg.on_outcome || u->done.fn) {
      lu_outcome_t o = {
          .kind = u->kind,
          .derived = u->derived,
          .line = u->line,
          .event_id = at(&u->text, u->ev_id),
          .event_type = at(&u->text, u->ev_type),
          .function = u->fn ? u->fn->fn->name : NULL,
          .shard = u->shard < 0 ? "intake" : m->shards[u->shard].id,
          .attempts = u->attempts,
          .reason = at(&u->text, u->reason),
          .stored_json = at(&u->text, u->rec[0].json),
          .result_json = at(&u->text, u->result),
          .exec_ns = u->exec_ns,
          .total_ns = now - u->t_submit,
      };
      if (m->cfg.on_outcome) m->cfg.on_outcome(m->cfg.on_outcome_ud, &o);
      if (u->done.fn) u->done.fn(u->done.ctx, &o, rc == 0);
    }
  }
  pthread_mutex_unlock(&m->olock);
  for (size_t i = 0; i < nu; i++) unit_free(units[i]);
  pending_done(m, nu);
}

/* Appends and waits, retrying a failing batch a few times (a busy or
 * briefly full disk, a server restart) before its outcomes are reported
 * as unstored.  Tries `from` to 3. */
static void append_sync(lu_manager_t *m, unit_t *const *units, size_t nu,
                        lu_record_t *recs, int from) {
  size_t nr = unit_records(units, nu, recs);
  int rc = 0;
  for (int attempt = from; attempt < 4; attempt++) {
    if (attempt) {
      struct timespec ts = {0, 10000000L << (attempt - 1)};
      nanosleep(&ts, NULL);
    }
    rc = lu_store_append(m->store, recs, nr, NULL);
    if (!rc) break;
  }
  report(m, units, nu, nr, rc, rc ? lu_store_errmsg(m->store) : NULL);
}

/* lu_store_done_fn of an asynchronous batch: on the store's thread. */
static void batch_stored(void *ctx, int rc, size_t inserted,
                         const char *why) {
  (void)inserted, (void)why;
  sbatch_t *b = ctx;
  lu_manager_t *m = b->m;
  if (rc) { /* the store thread tries again, and waits this time */
    pthread_mutex_lock(&m->slock);
    b->next = NULL;
    if (m->retry_tail) m->retry_tail->next = b;
    else m->retry = b;
    m->retry_tail = b;
    int wake = m->sidle || m->sslot; /* it waits (and nobody woke it) */
    m->sidle = m->sslot = 0;
    pthread_mutex_unlock(&m->slock);
    if (wake) pthread_cond_signal(&m->swake);
    return;
  }
  report(m, b->units, b->nu, b->nr, 0, NULL);
  free(b);
  /* Signalled under the lock here: once it is released the store thread
   * may see nothing in flight, stop, and the manager be freed. */
  pthread_mutex_lock(&m->slock);
  m->sinflight--;
  if (m->sslot) pthread_cond_signal(&m->swake);
  pthread_mutex_unlock(&m->slock); /* m may be freed from here on */
}

/* Begins units[0..nu-1] as one batch of an asynchronous store (its slot
 * already counted in sinflight), then releases sbegin, which the caller
 * holds; recs has room for their records.  A batch that cannot even
 * begin goes to the retry list, as one that fails in flight does. */
static void begin_batch(lu_manager_t *m, unit_t *const *units, size_t nu,
                        lu_record_t *recs) {
  sbatch_t *b = malloc(sizeof *b + nu * sizeof *units);
  if (!b) abort();
  b->m = m;
  b->nu = nu;
  memcpy(b->units, units, nu * sizeof *units);
  b->nr = unit_records(units, nu, recs);
  int rc = lu__store_append_begin(m->store, recs, b->nr, batch_stored, b);
  pthread_mutex_unlock(&m->sbegin);
  if (rc) batch_stored(b, LU_ESTORE, 0, lu_store_errmsg(m->store));
}

/* The shard's held outcomes, in order: begun by this thread as one batch
 * when the store thread has nothing to do (nothing queued or to retry,
 * a batch slot free), which saves waking it - a futex call each, dear on
 * a VM (bench/README.md, NATS mode); else onto the store queue, where
 * the store thread takes them. */
static void shard_flush(shard_t *s) {
  lu_manager_t *m = s->m;
  size_t nu = s->onu;
  if (!nu) return;
  s->onu = s->onr = 0;
  if (!pthread_mutex_trylock(&m->sbegin)) { /* else the store thread works */
    pthread_mutex_lock(&m->slock);
    int direct = !m->uhead && !m->retry && !m->sstop &&
                 m->sinflight < m->sasync;
    if (direct) m->sinflight++;
    pthread_mutex_unlock(&m->slock);
    if (direct) {
      /* Counted before the batch may be reported: a drain then sees it. */
      atomic_fetch_add_explicit(&m->sdirect, 1, memory_order_relaxed);
      begin_batch(m, s->ounits, nu, s->orecs);
      return;
    }
    pthread_mutex_unlock(&m->sbegin);
  }
  for (size_t i = 0; i < nu; i++) store_push(m, s->ounits[i]);
}

/* An outcome made on shard thread s.  A synchronous store (SQLite) gets
 * it at once: the store thread is the one writer and groups the commits.
 * For an asynchronous one the shard holds its outcomes until the end of
 * its run, or LU_HOLD_NS, or a full batch, and then begins them itself
 * when it can (shard_flush).  The hold bound is checked as outcomes are
 * made, so an outcome made just before a slow function waits for that
 * function to end. */
static void shard_out(shard_t *s, unit_t *u) {
  lu_manager_t *m = s->m;
  if (!m->sasync) {
    store_push(m, u);
    return;
  }
  if (s->onu && s->onr + u->nrec > m->cfg.store_batch) shard_flush(s);
  uint64_t now = lu__now_ns();
  if (!s->onu) s->ofirst_ns = now;
  s->ounits[s->onu++] = u;
  s->onr += u->nrec;
  if (now - s->ofirst_ns >= atomic_load(&m->hold_ns)) shard_flush(s);
}

/* The store thread.  A synchronous store (SQLite): take what is queued,
 * one transaction per batch (group commit), report.  An asynchronous one
 * (JetStream): begin the batch and go on with the next while its acks
 * travel, up to the store's batches in flight; batch_stored reports each
 * on the store's thread, and a failed one comes back here to be retried
 * and waited for.  Outcomes are reported in the order batches finish: the
 * store's order, except that a retried batch comes after later ones. */
static void *store_main(void *arg) {
  lu_manager_t *m = arg;
  size_t cap = m->cfg.store_batch;
  lu_record_t *recs = malloc((cap + LU_MAX_EMIT + 1) * sizeof *recs);
  unit_t **units = malloc((cap + 1) * sizeof *units);
  if (!recs || !units) abort();
  for (;;) {
    pthread_mutex_lock(&m->sbegin);
    pthread_mutex_lock(&m->slock);
    for (;;) {
      if (m->retry) break;
      if (m->uhead && (!m->sasync || m->sinflight < m->sasync)) break;
      if (m->sstop && !m->uhead && !m->sinflight) break;
      /* Wake-ups only for what we wait for (each is a futex call): work
       * from producers when nothing is queued; a batch's end when the
       * batches in flight are at the store's limit, or when stopping. */
      m->sidle = !m->uhead;
      m->sslot = m->uhead || m->sstop;
      pthread_mutex_unlock(&m->sbegin);
      pthread_cond_wait(&m->swake, &m->slock);
      m->sidle = m->sslot = 0;
      pthread_mutex_unlock(&m->slock);
      pthread_mutex_lock(&m->sbegin);
      pthread_mutex_lock(&m->slock);
    }
    if (m->retry) {
      sbatch_t *b = m->retry;
      m->retry = b->next;
      if (!m->retry) m->retry_tail = NULL;
      pthread_mutex_unlock(&m->slock);
      append_sync(m, b->units, b->nu, recs, 1);
      pthread_mutex_unlock(&m->sbegin);
      free(b);
      pthread_mutex_lock(&m->slock);
      m->sinflight--;
      pthread_mutex_unlock(&m->slock);
      continue;
    }
    if (!m->uhead) { /* stopping, and nothing is left anywhere */
      pthread_mutex_unlock(&m->slock);
      pthread_mutex_unlock(&m->sbegin);
      break;
    }
    size_t nu = 0, nr = 0;
    while (m->uhead && nr < cap) {
      unit_t *u = m->uhead;
      m->uhead = u->next;
      if (!m->uhead) m->utail = NULL;
      m->un--;
      units[nu++] = u;
      nr += u->nrec;
    }
    int unblock = m->sblocked > 0;
    if (m->sasync) m->sinflight++;
    pthread_mutex_unlock(&m->slock);
    if (unblock) pthread_cond_broadcast(&m->sspace);

    if (!m->sasync) {
      append_sync(m, units, nu, recs, 0);
      pthread_mutex_unlock(&m->sbegin);
      continue;
    }
    begin_batch(m, units, nu, recs);
  }
  free(recs);
  free(units);
  return NULL;
}

/* ---- outcomes that need no function ----------------------------------- */

/* lucent.Rejected: bad input, kept with its reason, line and raw bytes. */
static void reject(lu_manager_t *m, int shard, int derived, uint64_t line,
                   uint64_t t_submit, const char *raw, size_t len,
                   const lu_event_t *ev, const char *reason, lu_done_t done) {
  unit_t *u = unit_new(LU_OUTCOME_REJECTED, derived, shard, line, t_submit);
  u->done = done;
  char lbuf[24], id[37];
  lu__fmt(lbuf, sizeof lbuf, "%" PRIu64, line);
  /* Replaying the same input rejects it under the same id. */
  char *rawz = strndup(raw, len < REJECT_RAW_MAX * 16 ? len : REJECT_RAW_MAX);
  const char *parts[] = {"lucent.Rejected", lbuf, ev ? ev->id : rawz};
  lu__derive_id(id, parts, 3);
  free(rawz);
  lu_buf_t data = {0};
  lu__buf_puts(&data, "{\"reason\":");
  lu__buf_json_str(&data, reason, strlen(reason));
  if (line) {
    lu__buf_puts(&data, ",\"line\":");
    lu__buf_puts(&data, lbuf);
  }
  lu__buf_puts(&data, ",\"size\":");
  char sbuf[24];
  lu__fmt(sbuf, sizeof sbuf, "%zu", len);
  lu__buf_puts(&data, sbuf);
  size_t keep = len;
  if (len > m->cfg.max_event_bytes) {
    keep = len < REJECT_RAW_MAX ? len : REJECT_RAW_MAX;
    lu__buf_puts(&data, ",\"truncated\":true");
  }
  lu__buf_puts(&data, ",\"raw\":");
  lu__buf_json_str(&data, raw, keep);
  if (!lu__utf8_valid(raw, keep, NULL)) { /* raw is lossy: keep the bytes */
    lu__buf_puts(&data, ",\"raw_base64\":\"");
    lu__buf_base64(&data, raw, keep);
    lu__buf_puts(&data, "\"");
  }
  lu__buf_puts(&data, "}");
  const char *shard_id = shard < 0 ? NULL : m->shards[shard].id;
  evhead_t h = {.id = id,
                .type = "lucent.Rejected",
                .source = "lucent://intake",
                .subject = ev ? ev->subject : NULL,
                .corr = ev ? corr_of(ev) : NULL,
                .caus = ev ? ev->id : NULL,
                .shard = shard_id,
                .context = ev ? ev->root : NULL};
  add_record(u, &h, data.p, data.len);
  lu__buf_free(&data);
  if (ev) {
    u->ev_id = put_z(&u->text, ev->id);
    u->ev_type = put_z(&u->text, ev->type);
  }
  u->reason = put_z(&u->text, reason);
  store_push(m, u);
}

/* lucent.DeadLettered: a valid event nothing can run (no function, every
 * breaker open, causation loop).  The event itself rides along. */
static void dead_letter(lu_manager_t *m, int shard, const item_t *it,
                        const char *reason, unsigned attempts) {
  const lu_event_t *ev = it->ev;
  unit_t *u = unit_new(LU_OUTCOME_DEAD_LETTERED, it->derived, shard, it->line,
                       it->t_submit);
  u->packable = it->packable;
  u->done = it->done;
  ((item_t *)it)->done.fn = NULL;
  char id[37];
  const char *parts[] = {ev->id, "lucent.DeadLettered"};
  lu__derive_id(id, parts, 2);
  lu_buf_t data = {0};
  size_t evlen;
  const char *evjson = lu_event_json(it->ev, &evlen);
  lu__buf_puts(&data, "{\"reason\":");
  lu__buf_json_str(&data, reason, strlen(reason));
  lu__buf_puts(&data, ",\"event\":");
  lu__buf_put(&data, evjson ? evjson : "null", evjson ? evlen : 4);
  lu__buf_puts(&data, "}");
  evhead_t h = {.id = id,
                .type = "lucent.DeadLettered",
                .source = "lucent://manager",
                .subject = ev->subject,
                .corr = corr_of(ev),
                .caus = ev->id,
                .shard = shard < 0 ? NULL : m->shards[shard].id,
                .context = ev->root};
  add_record(u, &h, data.p, data.len);
  lu__buf_free(&data);
  u->attempts = attempts;
  u->ev_id = put_z(&u->text, ev->id);
  u->ev_type = put_z(&u->text, ev->type);
  u->reason = put_z(&u->text, reason);
  store_push(m, u);
}

/* ---- the view and routing (DESIGN.md decisions 4-7) ------------------- */

enum { ROUTE_OK = LU_ROUTE_OK, ROUTE_REJECT = LU_ROUTE_REJECT,
       ROUTE_DEAD = LU_ROUTE_DEAD };

static uint64_t member_load(const member_t *mb) {
  return mb->local ? atomic_load_explicit(&mb->local->load,
                                          memory_order_relaxed)
                   : atomic_load_explicit(&mb->load, memory_order_relaxed);
}

/* Finds or creates the member with this id.  Under members_lock. */
static member_t *member_get(lu_manager_t *m, const char *id) {
  for (unsigned i = 0; i < m->nmembers; i++)
    if (!strcmp(m->members[i]->id, id)) return m->members[i];
  if (m->nmembers == MAX_MEMBERS) return NULL;
  member_t *mb = calloc(1, sizeof *mb);
  if (!mb) return NULL;
  lu__fmt(mb->id, sizeof mb->id, "%s", id);
  mb->seed = lu__shard_seed(mb->id);
  mb->slot = m->nmembers;
  m->members[m->nmembers++] = mb;
  return mb;
}

static int cmp_member(const void *a, const void *b) {
  return strcmp((*(member_t *const *)a)->id, (*(member_t *const *)b)->id);
}

void lu__manager_set_view(lu_manager_t *m, const char *const *ids,
                          unsigned n) {
  member_t *v[MAX_SHARDS];
  unsigned vn = 0;
  pthread_mutex_lock(&m->members_lock);
  /* This process's shards are always in its own view. */
  for (unsigned i = 0; i < m->n && vn < MAX_SHARDS; i++)
    v[vn++] = m->shards[i].member;
  for (unsigned i = 0; i < n && vn < MAX_SHARDS; i++) {
    member_t *mb = member_get(m, ids[i]);
    if (!mb || mb->local) continue;
    int dup = 0;
    for (unsigned k = 0; k < vn; k++) dup |= v[k] == mb;
    if (!dup) v[vn++] = mb;
  }
  pthread_mutex_unlock(&m->members_lock);
  /* Sorted by id: every process orders the same view the same way, so
   * round robin and indexes agree (rendezvous does not need it). */
  qsort(v, vn, sizeof *v, cmp_member);
  pthread_rwlock_wrlock(&m->vlock);
  memset(m->alive, 0, sizeof m->alive);
  for (unsigned i = 0; i < vn; i++) {
    m->view[i] = v[i];
    m->vseeds[i] = v[i]->seed;
    m->alive[v[i]->slot] = 1;
  }
  m->vn = vn;
  pthread_rwlock_unlock(&m->vlock);
}

void lu__manager_report_load(lu_manager_t *m, const char *id, uint64_t load) {
  pthread_mutex_lock(&m->members_lock);
  member_t *mb = member_get(m, id);
  pthread_mutex_unlock(&m->members_lock);
  if (mb && !mb->local)
    atomic_store_explicit(&mb->load, load, memory_order_relaxed);
}

int lu__manager_in_view(lu_manager_t *m, const char *id) {
  int in = 0;
  pthread_rwlock_rdlock(&m->vlock);
  for (unsigned i = 0; i < m->vn && !in; i++) in = !strcmp(m->view[i]->id, id);
  pthread_rwlock_unlock(&m->vlock);
  return in;
}

void lu__manager_view_string(lu_manager_t *m, char *buf, size_t cap) {
  lu_buf_t b = {0};
  pthread_rwlock_rdlock(&m->vlock);
  for (unsigned i = 0; i < m->vn; i++) {
    if (i) lu__buf_puts(&b, ",");
    lu__buf_puts(&b, m->view[i]->id);
  }
  pthread_rwlock_unlock(&m->vlock);
  lu__fmt(buf, cap, "%s", b.p && !b.oom ? b.p : "");
  lu__buf_free(&b);
}

uint64_t lu__manager_local_load(const lu_manager_t *m) {
  uint64_t l = 0;
  for (unsigned i = 0; i < m->n; i++)
    l += atomic_load_explicit(&m->shards[i].load, memory_order_relaxed);
  return l;
}

/* Reads the key of fe's strategy from ev's data.  0, or LU_EINVAL with a
 * reason in why. */
static int event_key(const lu_fnent_t *fe, const lu_event_t *ev, char *kbuf,
                     size_t kcap, const char **key, size_t *klen, char *why,
                     size_t wcap) {
  const cJSON *v = lu__json_path(ev->data, fe->fn->key);
  if (!v || lu__key_text(v, kbuf, kcap, key, klen) != 0) {
    lu__fmt(why, wcap,
            "%s key '%s' of function %s is %s in the event data",
            fe->strategy == LU_STRAT_HASH ? "hash" : "session", fe->fn->key,
            fe->fn->name, v ? "not a string, number or boolean" : "missing");
    return LU_EINVAL;
  }
  return 0;
}

/* The sessions table key: the field path plus the key's hash, so functions
 * sticky on the same field share bindings (a customer's session is one
 * session) while equal values of different fields do not. */
static size_t session_key(const lu_fnent_t *fe, const char *key, size_t klen,
                          char *buf, size_t cap) {
  int n = snprintf(buf, cap, "%s\x1f%016llx", fe->fn->key,
                   (unsigned long long)lu__key_hash(key, klen));
  return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* Picks the member for ev, under the view's read lock. */
static int route_locked(lu_manager_t *m, const lu_event_t *ev,
                        member_t **target, char *why, size_t wcap) {
  if (ev->depth > m->cfg.max_depth) {
    lu__fmt(why, wcap,
            "causation depth %u exceeds the limit of %u (a loop of "
            "functions emitting events?)", ev->depth, m->cfg.max_depth);
    return ROUTE_DEAD;
  }
  size_t n;
  const lu_fnent_t *const *c = lu__registry_candidates(m->reg, ev->type, &n);
  if (!n) {
    lu__fmt(why, wcap, "no function handles event type '%s'", ev->type);
    return ROUTE_DEAD;
  }
  unsigned vn = m->vn;
  if (!vn) {
    lu__fmt(why, wcap, "no shard in the view");
    return ROUTE_DEAD;
  }
  const lu_fnent_t *fe = c[0];
  uint64_t loads[MAX_SHARDS];
  char kbuf[64];
  const char *key;
  size_t klen;
  if (fe->strategy == LU_STRAT_HASH || fe->strategy == LU_STRAT_STICKY) {
    if (event_key(fe, ev, kbuf, sizeof kbuf, &key, &klen, why, wcap))
      return ROUTE_REJECT; /* a missing key is never a random route */
  }
  if (vn == 1) {
    *target = m->view[0];
    return ROUTE_OK;
  }
  switch (fe->strategy) {
    case LU_STRAT_ROUND_ROBIN:
      *target = m->view[atomic_fetch_add_explicit(&m->rr[fe->index], 1,
                                                  memory_order_relaxed) %
                        vn];
      return ROUTE_OK;
    case LU_STRAT_LOAD_BALANCED: {
      for (unsigned i = 0; i < vn; i++) loads[i] = member_load(m->view[i]);
      uint64_t r = shared_rand(m);
      *target = m->view[lu__two_choices(loads, vn, &r)];
      return ROUTE_OK;
    }
    case LU_STRAT_HASH: {
      uint64_t h = lu__key_hash(key, klen);
      if (fe->fn->load_bound > 1) {
        for (unsigned i = 0; i < vn; i++) loads[i] = member_load(m->view[i]);
        *target = m->view[lu__rendezvous_bounded(h, m->vseeds, vn, loads,
                                                 fe->fn->load_bound)];
      } else {
        *target = m->view[lu__rendezvous(h, m->vseeds, vn)];
      }
      return ROUTE_OK;
    }
    case LU_STRAT_STICKY: {
      char sk[320];
      size_t sl = session_key(fe, key, klen, sk, sizeof sk);
      /* First sight binds the session to the less loaded of two shards
       * drawn at random (power of two choices, as load_balanced; DESIGN.md
       * decision 6).  The plain least-loaded shard would take every new
       * session of a burst: loads are equal when idle, and a peer's load
       * is a heartbeat old. */
      for (unsigned i = 0; i < vn; i++) loads[i] = member_load(m->view[i]);
      uint64_t r = shared_rand(m);
      unsigned best = lu__two_choices(loads, vn, &r);
      if (m->has_bus && m->bus.sticky) {
        char bound[64];
        if (m->bus.sticky(m->bus.ud, sk, sl, m->view[best]->id, bound,
                          sizeof bound) == 0) {
          for (unsigned i = 0; i < vn; i++)
            if (!strcmp(m->view[i]->id, bound)) {
              *target = m->view[i];
              return ROUTE_OK;
            }
        }
        *target = m->view[best]; /* KV unreachable or bound elsewhere */
        return ROUTE_OK;
      }
      uint64_t now_ms = lu__now_ns() / 1000000u;
      unsigned slot = lu__sessions_bind(m->sessions, sk, sl,
                                        m->view[best]->slot, fe->ttl_ms,
                                        now_ms, m->alive, NULL);
      *target = m->view[best];
      for (unsigned i = 0; i < vn; i++)
        if (m->view[i]->slot == slot) *target = m->view[i];
      return ROUTE_OK;
    }
  }
  lu__fmt(why, wcap, "function %s has no usable strategy", fe->fn->name);
  return ROUTE_DEAD;
}

static int route(lu_manager_t *m, const lu_event_t *ev, member_t **target,
                 char *why, size_t wcap) {
  pthread_rwlock_rdlock(&m->vlock);
  int rc = route_locked(m, ev, target, why, wcap);
  pthread_rwlock_unlock(&m->vlock);
  return rc;
}

int lu__manager_route(lu_manager_t *m, const lu_event_t *ev, char *target,
                      size_t cap, int *local, char *why, size_t wcap) {
  member_t *t = NULL;
  int rc = route(m, ev, &t, why, wcap);
  if (rc == ROUTE_OK) {
    lu__fmt(target, cap, "%s", t->id);
    *local = t->local != NULL;
  }
  return rc;
}

/* Pushes a routed item to shard t: intake queue (bounded, may block) or
 * forwarded queue (unbounded). */
static void enqueue(shard_t *t, item_t *it, int forwarded) {
  atomic_fetch_add_explicit(&t->load, 1, memory_order_relaxed);
  pthread_mutex_lock(&t->lock);
  if (forwarded) {
    if (t->fw_tail) t->fw_tail->next = it;
    else t->fw_head = it;
    t->fw_tail = it;
    t->fw_n++;
  } else {
    while (t->in_n >= t->m->cfg.queue_capacity && !t->stop) {
      t->blocked++;
      pthread_cond_wait(&t->space, &t->lock);
      t->blocked--;
    }
    if (t->in_tail) t->in_tail->next = it;
    else t->in_head = it;
    t->in_tail = it;
    t->in_n++;
  }
  /* Invariant 5; while an item runs inline, its runner wakes the thread
   * when it is done (run_inline); a parked turn the thread takes over. */
  int wake = t->idle && (!t->inline_busy || t->parked);
  if (wake) t->idle = 0;
  pthread_mutex_unlock(&t->lock);
  if (wake) pthread_cond_signal(&t->wake);
}

static void pending_add(lu_manager_t *m, uint64_t k) {
  pthread_mutex_lock(&m->plock);
  m->pending += k;
  pthread_mutex_unlock(&m->plock);
}

static void pending_done(lu_manager_t *m, uint64_t k) {
  pthread_mutex_lock(&m->plock);
  m->pending -= k;
  if (!m->pending) pthread_cond_broadcast(&m->pdone);
  pthread_mutex_unlock(&m->plock);
}

static void item_free(item_t *it) {
  if (!it) return;
  lu_event_free(it->ev);
  free(it);
}

static void count_forward(shard_t *f, shard_t *t) {
  if (f) {
    pthread_mutex_lock(&f->stats_lock);
    f->forwarded++;
    pthread_mutex_unlock(&f->stats_lock);
  }
  if (t) {
    pthread_mutex_lock(&t->stats_lock);
    t->received++;
    pthread_mutex_unlock(&t->stats_lock);
  }
}

/* Hands an item to the bus for shard `target`; the item is finished here
 * (its outcome will be recorded where it goes). */
static void send_remote(lu_manager_t *m, shard_t *from, const char *target,
                        item_t *it) {
  size_t len;
  const char *json = lu_event_json(it->ev, &len);
  count_forward(from, NULL);
  m->bus.forward(m->bus.ud, target, json ? json : "", json ? len : 0,
                 it->hops + 1, it->done);
  it->done.fn = NULL;
  item_free(it);
  pending_done(m, 1);
}

/* Routes an item and hands it to its shard, or records its rejection or
 * dead letter.  `from` is the shard doing it (-1 = intake).  Consumes it. */
static void dispatch(lu_manager_t *m, int from, item_t *it) {
  char why[320];
  member_t *target = NULL;
  switch (route(m, it->ev, &target, why, sizeof why)) {
    case ROUTE_REJECT: {
      size_t len;
      const char *raw = lu_event_json(it->ev, &len);
      reject(m, from, it->derived, it->line, it->t_submit, raw ? raw : "",
             raw ? len : 0, it->ev, why, it->done);
      it->done.fn = NULL;
      item_free(it);
      return;
    }
    case ROUTE_DEAD:
      dead_letter(m, from, it, why, 0);
      item_free(it);
      return;
  }
  shard_t *f = from < 0 ? NULL : &m->shards[from];
  /* On a bus, a round_robin event taken in here runs here: the intake
   * partitions already spread events evenly over the shards, and a
   * forward would only add a hop (one more JetStream write and ack). */
  if (m->has_bus && from < 0 && !it->derived && !target->local) {
    size_t n;
    const lu_fnent_t *const *c =
        lu__registry_candidates(m->reg, it->ev->type, &n);
    if (n && c[0]->strategy == LU_STRAT_ROUND_ROBIN)
      target = m->shards[0].member;
  }
  /* With a durable bus, emitted events take the bus even to this shard:
   * they must be safe before their parent is acknowledged. */
  if (!target->local || (it->derived && m->has_bus && m->bus.forward_derived)) {
    send_remote(m, f, target->id, it);
    return;
  }
  shard_t *t = target->local;
  if (from < 0) {
    pthread_mutex_lock(&t->stats_lock);
    t->routed++;
    pthread_mutex_unlock(&t->stats_lock);
    enqueue(t, it, 0);
    return;
  }
  if (f != t) count_forward(f, t);
  enqueue(t, it, 1);
}

/* ---- submit ----------------------------------------------------------- */

static int submit_common(lu_manager_t *m, lu_event_t *ev, const char *raw,
                         size_t len, uint64_t line, lu_done_t done) {
  pending_add(m, 1);
  pthread_mutex_lock(&m->stats_lock);
  m->events_in++;
  pthread_mutex_unlock(&m->stats_lock);
  uint64_t t0 = lu__now_ns();
  char err[256];
  if (!ev) {
    if (len > m->cfg.max_event_bytes) {
      lu__fmt(err, sizeof err,
              "event of %zu bytes exceeds the limit of %zu bytes", len,
              m->cfg.max_event_bytes);
      reject(m, -1, 0, line, t0, raw, len, NULL, err, done);
      return 0;
    }
    int rc = lu_event_parse(&ev, raw, len, err, sizeof err);
    if (rc) {
      if (rc == LU_ENOMEM) lu__fmt(err, sizeof err, "out of memory");
      reject(m, -1, 0, line, t0, raw, len, NULL, err, done);
      return 0;
    }
  }
  item_t *it = calloc(1, sizeof *it);
  if (!it) {
    size_t l;
    const char *j = lu_event_json(ev, &l);
    reject(m, -1, 0, line, t0, j ? j : "", j ? l : 0, NULL, "out of memory",
           done);
    lu_event_free(ev);
    return 0;
  }
  it->ev = ev;
  it->line = line;
  it->t_submit = t0;
  it->done = done;
  dispatch(m, -1, it);
  return 0;
}

static const lu_done_t no_done = {NULL, NULL};

int lu_manager_submit_json(lu_manager_t *m, const char *json, size_t len,
                           uint64_t line) {
  if (!m || (!json && len)) return LU_EINVAL;
  if (m->closing) return LU_ESTATE;
  return submit_common(m, NULL, json ? json : "", len, line, no_done);
}

int lu__manager_submit_raw(lu_manager_t *m, const char *json, size_t len,
                           uint64_t line, lu_done_t done) {
  return submit_common(m, NULL, json ? json : "", len, line, done);
}

int lu__manager_reject_raw(lu_manager_t *m, const char *raw, size_t len,
                           uint64_t line, const char *reason,
                           lu_done_t done) {
  pending_add(m, 1);
  pthread_mutex_lock(&m->stats_lock);
  m->events_in++;
  pthread_mutex_unlock(&m->stats_lock);
  reject(m, -1, 0, line, lu__now_ns(), raw ? raw : "", raw ? len : 0, NULL,
         reason, done);
  return 0;
}

int lu_manager_submit(lu_manager_t *m, lu_event_t *ev) {
  if (!m || !ev) {
    lu_event_free(ev);
    return LU_EINVAL;
  }
  if (m->closing) {
    lu_event_free(ev);
    return LU_ESTATE;
  }
  /* A built event was never decoded from text: validate it the same way. */
  if (!ev->id || !ev->type || !ev->source) {
    size_t len;
    const char *j = lu_event_json(ev, &len);
    pending_add(m, 1);
    pthread_mutex_lock(&m->stats_lock);
    m->events_in++;
    pthread_mutex_unlock(&m->stats_lock);
    reject(m, -1, 0, 0, lu__now_ns(), j ? j : "", j ? len : 0, NULL,
           "event lacks id, type or source", no_done);
    lu_event_free(ev);
    return 0;
  }
  return submit_common(m, ev, NULL, 0, 0, no_done);
}

static shard_t *local_shard(lu_manager_t *m, const char *id) {
  for (unsigned i = 0; i < m->n; i++)
    if (!strcmp(m->shards[i].id, id)) return &m->shards[i];
  return NULL;
}

int lu__manager_accept(lu_manager_t *m, const char *json, size_t len,
                       const char *target, unsigned hops, lu_done_t done) {
  shard_t *t = target ? local_shard(m, target) : NULL;
  /* Pinned to a shard that is alive: not ours to run or to re-route (we
   * pulled its queue while we thought it gone); it goes back to it. */
  if (!t && target && lu__manager_in_view(m, target)) return LU_EBUSY;
  /* Taken over from a shard that is gone: route once more (re-route);
   * past the hop limit, run it here. */
  int reroute = !t && hops <= MAX_HOPS;
  if (!t && !reroute) t = &m->shards[0];
  /* Pending until its outcome is stored; a re-routed one counts as an
   * input here (its first owner never recorded an outcome). */
  pending_add(m, 1);
  uint64_t t0 = lu__now_ns();
  char err[256];
  lu_event_t *ev;
  if (lu_event_parse(&ev, json, len, err, sizeof err)) {
    reject(m, reroute ? -1 : (int)t->idx, 1, 0, t0, json, len, NULL, err,
           done);
    return 0;
  }
  item_t *it = calloc(1, sizeof *it);
  if (!it) abort();
  it->ev = ev;
  it->t_submit = t0;
  it->derived = 1;
  it->hops = hops;
  it->done = done;
  if (reroute) {
    dispatch(m, -1, it);
  } else {
    count_forward(NULL, t);
    enqueue(t, it, 1);
  }
  return 0;
}

static void run_item(shard_t *s, item_t *it); /* below */

/* Generations of inline turns, unique in the process (from 1): the
 * calling thread's claim on a parked turn (turn_held) is its generation,
 * so a turn taken over meanwhile, or a manager freed and another made at
 * its address, is never mistaken for the caller's; the claim is only
 * compared, never followed, until it is checked against a live shard. */
static _Atomic uint64_t turn_gens;
static _Thread_local struct {
  const lu_manager_t *m;
  unsigned idx;
  uint64_t gen; /* 0: none */
} turn_held;

/* Work only the shard's own thread may do: queued items, a retry to
 * schedule, or a stop.  Under s->lock. */
static int thread_work(const shard_t *s) {
  return s->fw_head || s->in_head || s->nheap || s->stop;
}

/* Under s->lock: if the calling thread's claim names s's parked turn, it
 * resumes it (1). */
static int turn_resume(shard_t *s) {
  if (!turn_held.gen || s->turn_gen != turn_held.gen || !s->inline_busy ||
      !s->parked)
    return 0;
  s->parked = 0;
  return 1;
}

/* The end of an inline turn: its outcomes handed on, the turn given back,
 * the thread woken if there is work for it. */
static void turn_release(shard_t *s) {
  shard_flush(s);
  pthread_mutex_lock(&s->lock);
  s->inline_busy = 0;
  if (s->idle && thread_work(s)) {
    s->idle = 0;
    /* Under the lock: once it is released the thread may stop and the
     * manager be freed. */
    pthread_cond_signal(&s->wake);
  }
  pthread_mutex_unlock(&s->lock);
}

/* Runs an exec request's item on the calling thread (nats.c's delivery
 * thread) instead of handing it to shard s, when s's thread sleeps with
 * nothing queued or waiting to retry: the hand-off would cost a wake-up
 * and a context switch (a futex call each, dear on a VM) for a shard that
 * has nothing else to do.  The caller takes the shard's turn
 * (inline_busy), so the shard's state still has one user at a time
 * (invariant 4); items that arrive meanwhile are queued without a
 * wake-up, and the caller wakes the thread when it hands the turn back if
 * there is work for it (queued items, a retry to schedule, or a stop).
 *
 * With `more` (LU_INLINE_MORE: the caller has another request waiting),
 * the caller keeps the turn after the item, parked, with the outcomes
 * held, and its next call resumes it: a burst of requests runs as one run
 * and its outcomes make one batch, with no thread woken.  A parked turn
 * is the thread's to take over (shard_main: flush the held outcomes and
 * go on) when work is queued for it, at a stop, or after LU_HOLD_NS, so a
 * caller that never calls again delays outcomes but loses nothing; the
 * caller does not park when there is work queued or a retry waiting.
 * 1 if it ran the item, 0 if the item must be queued. */
static int run_inline(shard_t *s, item_t *it, int more) {
  pthread_mutex_lock(&s->lock);
  int ok = turn_resume(s);
  if (!ok && s->idle && !s->inline_busy && !thread_work(s)) {
    ok = 1;
    s->inline_busy = 1;
    s->turn_gen = turn_held.gen = atomic_fetch_add(&turn_gens, 1) + 1;
    turn_held.m = s->m;
    turn_held.idx = s->idx;
  }
  pthread_mutex_unlock(&s->lock);
  if (!ok) return 0;
  atomic_fetch_add_explicit(&s->load, 1, memory_order_relaxed);
  run_item(s, it);
  pthread_mutex_lock(&s->lock);
  if (more && !thread_work(s)) {
    s->parked = 1;
    s->park_ns = lu__now_ns();
    /* The thread must watch the parked turn: wake it if it sleeps
     * untimed (once a burst; it then wakes every LU_HOLD_NS at most). */
    int kick = s->idle && !s->watching;
    if (kick) pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    return 1;
  }
  pthread_mutex_unlock(&s->lock);
  turn_held.gen = 0;
  turn_release(s);
  return 1;
}

void lu__manager_end_burst(lu_manager_t *m) {
  if (!turn_held.gen || turn_held.m != m || turn_held.idx >= m->n) return;
  shard_t *s = &m->shards[turn_held.idx];
  pthread_mutex_lock(&s->lock);
  int mine = turn_resume(s);
  pthread_mutex_unlock(&s->lock);
  turn_held.gen = 0;
  if (mine) turn_release(s);
}

int lu__manager_run_local(lu_manager_t *m, lu_event_t *ev, const char *target,
                          int packable, int inline_mode, lu_done_t done) {
  shard_t *t = target ? local_shard(m, target) : NULL;
  if (!t) t = &m->shards[0];
  pending_add(m, 1);
  pthread_mutex_lock(&m->stats_lock);
  m->events_in++;
  pthread_mutex_unlock(&m->stats_lock);
  item_t *it = calloc(1, sizeof *it);
  if (!it) abort();
  it->ev = ev;
  it->t_submit = lu__now_ns();
  it->done = done;
  it->packable = packable;
  /* A burst kept on another of m's shards ends first (one claim a thread:
   * it would otherwise wait to be taken over). */
  if (turn_held.gen && turn_held.m == m && turn_held.idx != t->idx)
    lu__manager_end_burst(m);
  if (inline_mode == LU_INLINE_NEVER ||
      !run_inline(t, it, inline_mode == LU_INLINE_MORE))
    enqueue(t, it, 0);
  return 0;
}

/* ---- the shard thread ------------------------------------------------- */

static void heap_push(shard_t *s, item_t *it) {
  if (s->nheap == s->capheap) {
    size_t cap = s->capheap ? s->capheap * 2 : 64;
    item_t **h = realloc(s->heap, cap * sizeof *h);
    if (!h) abort();
    s->heap = h;
    s->capheap = cap;
  }
  size_t i = s->nheap++;
  while (i && s->heap[(i - 1) / 2]->due_ns > it->due_ns) {
    s->heap[i] = s->heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  s->heap[i] = it;
}

static item_t *heap_pop(shard_t *s) {
  item_t *top = s->heap[0], *last = s->heap[--s->nheap];
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

/* Affinity of a candidate for this event on this shard, in [0,1]: 1 when
 * its own strategy would place the event here (hash owner, session
 * binding), 0 when it would place it elsewhere, 0.5 for an unbound session;
 * round_robin and load_balanced functions run anywhere equally well. */
static double affinity(shard_t *s, const lu_fnent_t *fe, const lu_event_t *ev) {
  lu_manager_t *m = s->m;
  char kbuf[64], why[8];
  const char *key;
  size_t klen;
  if (fe->strategy == LU_STRAT_HASH) {
    if (event_key(fe, ev, kbuf, sizeof kbuf, &key, &klen, why, sizeof why))
      return 0;
    pthread_rwlock_rdlock(&m->vlock);
    double a = m->vn && m->view[lu__rendezvous(lu__key_hash(key, klen),
                                               m->vseeds, m->vn)] == s->member
                   ? 1.0 : 0.0;
    pthread_rwlock_unlock(&m->vlock);
    return a;
  }
  if (fe->strategy == LU_STRAT_STICKY) {
    unsigned b;
    if (m->has_bus && m->bus.sticky) return 0.5; /* bindings live in KV */
    if (event_key(fe, ev, kbuf, sizeof kbuf, &key, &klen, why, sizeof why))
      return 0;
    char sk[320];
    size_t sl = session_key(fe, key, klen, sk, sizeof sk);
    if (lu__sessions_lookup(m->sessions, sk, sl, lu__now_ns() / 1000000u,
                            &b))
      return 0.5;
    return b == s->member->slot ? 1.0 : 0.0;
  }
  return 1.0;
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
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
      if (*f[i]) *f[i] = j->strs[i] = strdup(*f[i]);
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

/* <Fn>Completed plus the emitted events; the emitted events re-enter. */
static void complete(shard_t *s, item_t *it, uint64_t exec_ns) {
  lu_manager_t *m = s->m;
  const lu_fnent_t *fe = it->fn;
  const lu_event_t *ev = it->ev;
  const char *name = fe->fn->name;
  unit_t *u = unit_new(LU_OUTCOME_COMPLETED, it->derived, (int)s->idx,
                       it->line, it->t_submit);
  u->packable = it->packable;
  char id[37], type[256], subject[320], src[48];
  const char *parts[] = {ev->id, name};
  lu__derive_id(id, parts, 2);
  lu__fmt(type, sizeof type, "%sCompleted", name);
  lu__fmt(subject, sizeof subject, "function-result-%s", corr_of(ev));
  lu__fmt(src, sizeof src, "lucent://%s", s->id);
  size_t dlen;
  const char *dj = print_json(s, s->out.result, &dlen);
  evhead_t h = {.id = id, .type = type, .source = src, .subject = subject,
                .corr = corr_of(ev), .caus = ev->id, .shard = s->id,
                .fn = name, .context = ev->root};
  add_record(u, &h, dj, dlen);
  u->result = u->text.len;
  u->result_len = dlen;
  lu__buf_put(&u->text, dj, dlen);
  lu__buf_put(&u->text, "", 1);
  u->done = it->done;
  it->done.fn = NULL;

  /* Emitted events: stored with the result, then routed. */
  size_t ne = s->out.nemit;
  item_t *kids[LU_MAX_EMIT];
  size_t nk = 0;
  for (size_t i = 0; i < ne; i++) {
    lu_emit_t *e = &s->out.emit[i];
    char eid[37], ibuf[16];
    lu__fmt(ibuf, sizeof ibuf, "%zu", i);
    const char *ep[] = {ev->id, name, ibuf};
    lu__derive_id(eid, ep, 3);
    const char *ej = print_json(s, e->data, &dlen);
    evhead_t eh = {.id = eid, .type = e->type, .source = src,
                   .subject = e->subject ? e->subject : ev->subject,
                   .corr = corr_of(ev), .caus = ev->id, .shard = s->id,
                   .fn = name, .depth = ev->depth + 1, .context = ev->root};
    size_t before = u->nrec;
    add_record(u, &eh, ej, dlen);
    const urec_t *r = &u->rec[before];
    if (u->text.oom) continue;
    item_t *k = calloc(1, sizeof *k);
    char err[128];
    if (!k || lu_event_parse(&k->ev, u->text.p + r->json, r->json_len, err,
                             sizeof err)) {
      /* Cannot happen short of memory exhaustion: we wrote valid JSON. */
      fprintf(stderr, "lucent: cannot re-read an emitted event: %s\n", err);
      abort();
    }
    k->derived = 1;
    k->line = it->line;
    k->t_submit = lu__now_ns();
    kids[nk++] = k;
  }
  u->attempts = it->attempts;
  u->exec_ns = exec_ns;
  u->fn = fe;
  u->ev_id = put_z(&u->text, ev->id);
  u->ev_type = put_z(&u->text, ev->type);
  if (nk && u->done.fn && m->has_bus && m->bus.forward_derived) {
    join_t *j = calloc(1, sizeof *j);
    if (!j) abort();
    atomic_init(&j->remaining, (unsigned)nk + 1);
    atomic_init(&j->ok, 1);
    j->real = u->done;
    u->done = (lu_done_t){join_parent_done, j};
    for (size_t i = 0; i < nk; i++)
      kids[i]->done = (lu_done_t){join_child_done, j};
  }
  /* The children count as pending before the parent's outcome lands, so
   * a drain never sees 0 between them (invariant 1). */
  if (nk) pending_add(m, nk);
  for (size_t i = 0; i < nk; i++) dispatch(m, (int)s->idx, kids[i]);
  shard_out(s, u);
}

static void fail(shard_t *s, item_t *it, const char *reason, uint64_t exec_ns) {
  lu_manager_t *m = s->m;
  const lu_fnent_t *fe = it->fn;
  const lu_event_t *ev = it->ev;
  const char *name = fe->fn->name;
  unit_t *u = unit_new(LU_OUTCOME_FAILED, it->derived, (int)s->idx, it->line,
                       it->t_submit);
  u->packable = it->packable;
  u->done = it->done;
  it->done.fn = NULL;
  char id[37], type[256], subject[320], src[48], abuf[16];
  const char *parts[] = {ev->id, name, "Failed"};
  lu__derive_id(id, parts, 3);
  lu__fmt(type, sizeof type, "%sFailed", name);
  lu__fmt(subject, sizeof subject, "function-result-%s", corr_of(ev));
  lu__fmt(src, sizeof src, "lucent://%s", s->id);
  lu__fmt(abuf, sizeof abuf, "%u", it->attempts);
  lu_buf_t d = {0};
  lu__buf_puts(&d, "{\"reason\":");
  lu__buf_json_str(&d, reason, strlen(reason));
  lu__buf_puts(&d, ",\"attempts\":");
  lu__buf_puts(&d, abuf);
  lu__buf_puts(&d, ",\"input\":{\"id\":");
  lu__buf_json_str(&d, ev->id, strlen(ev->id));
  lu__buf_puts(&d, ",\"type\":");
  lu__buf_json_str(&d, ev->type, strlen(ev->type));
  lu__buf_puts(&d, "}}");
  evhead_t h = {.id = id, .type = type, .source = src, .subject = subject,
                .corr = corr_of(ev), .caus = ev->id, .shard = s->id,
                .fn = name, .context = ev->root};
  add_record(u, &h, d.p, d.len);
  lu__buf_free(&d);
  u->attempts = it->attempts;
  u->exec_ns = exec_ns;
  u->fn = fe;
  u->ev_id = put_z(&u->text, ev->id);
  u->ev_type = put_z(&u->text, ev->type);
  u->reason = put_z(&u->text, reason);
  (void)m;
  shard_out(s, u);
}

/* Picks the function for an item on this shard; NULL (and a dead letter)
 * when no candidate is eligible. */
static const lu_fnent_t *choose(shard_t *s, item_t *it) {
  lu_manager_t *m = s->m;
  size_t n;
  const lu_fnent_t *const *c =
      lu__registry_candidates(m->reg, it->ev->type, &n);
  if (n == 1 && !m->cfg.on_explain) {
    /* The common case needs no scoring, only the hard constraints. */
    const lu_fnent_t *fe = c[0];
    fnstate_t *st = &s->fns[fe->index];
    int fits = fe->fn->cpu_millis <= m->cfg.shard_cpu_millis &&
               fe->fn->memory_mb <= m->cfg.shard_memory_mb;
    if (fits && lu__breaker_peek(&st->breaker, lu__now_ns() / 1000000u,
                                 m->cfg.breaker_cooldown_ms))
      return fe;
  }
  lu_candidate_t cands[64];
  lu_scores_t scores[64];
  if (n > 64) n = 64;
  uint64_t now_ms = lu__now_ns() / 1000000u;
  for (size_t i = 0; i < n; i++) {
    fnstate_t *st = &s->fns[c[i]->index];
    cands[i] = (lu_candidate_t){
        .fn = c[i]->fn,
        .ewma_ns = st->ewma_ns,
        .breaker_open = !lu__breaker_peek(&st->breaker, now_ms,
                                          m->cfg.breaker_cooldown_ms),
        .affinity = n > 1 ? affinity(s, c[i], it->ev) : 1.0,
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
  lu_buf_t why = {0};
  lu__buf_puts(&why, "no eligible function for '");
  lu__buf_puts(&why, it->ev->type);
  lu__buf_puts(&why, "' on ");
  lu__buf_puts(&why, s->id);
  for (size_t i = 0; i < n; i++) {
    lu__buf_puts(&why, i ? "; " : ": ");
    lu__buf_puts(&why, cands[i].fn->name);
    lu__buf_puts(&why, " (");
    lu__buf_puts(&why, scores[i].excluded ? scores[i].excluded : "?");
    lu__buf_puts(&why, ")");
  }
  dead_letter(m, (int)s->idx, it, why.oom ? "no eligible function" : why.p,
              it->attempts);
  lu__buf_free(&why);
  return NULL;
}

/* Runs one attempt of an item on this shard and decides what follows:
 * outcome, or a retry scheduled on the shard's timer heap.  Consumes the
 * item unless it is scheduled again. */
static void run_item(shard_t *s, item_t *it) {
  lu_manager_t *m = s->m;
  if (!it->fn && !(it->fn = choose(s, it))) {
    atomic_fetch_sub_explicit(&s->load, 1, memory_order_relaxed);
    item_free(it);
    return;
  }
  const lu_fnent_t *fe = it->fn;
  fnstate_t *st = &s->fns[fe->index];
  uint64_t now_ms = lu__now_ns() / 1000000u;
  if (!lu__breaker_allow(&st->breaker, now_ms, m->cfg.breaker_cooldown_ms)) {
    /* A retry whose breaker opened meanwhile. */
    char why[160];
    lu__fmt(why, sizeof why, "circuit breaker of %s open after %u attempts",
            fe->fn->name, it->attempts);
    fail(s, it, why, 0);
    atomic_fetch_sub_explicit(&s->load, 1, memory_order_relaxed);
    item_free(it);
    return;
  }
  it->attempts++;
  lu_ctx_t ctx = {.ev = it->ev,
                  .shard = s->id,
                  .fn_name = fe->fn->name,
                  .correlationid = corr_of(it->ev),
                  .attempt = it->attempts,
                  .now_ms = lu__wall_ms()};
  lu__out_reset(&s->out);
  uint64_t t0 = lu__now_ns();
  lu_status_t rc = fe->fn->impl(&ctx, it->ev->data, &s->out);
  uint64_t dt = lu__now_ns() - t0;
  char reason[320];
  int timed_out = 0;
  if (rc != LU_OK && rc != LU_RETRY && rc != LU_FAIL) {
    lu__fmt(reason, sizeof reason, "function returned invalid status %d",
            (int)rc);
    rc = LU_FAIL;
  } else if (dt > (uint64_t)fe->timeout_ms * 1000000u) {
    /* A pure function cannot be interrupted safely; one that overran its
     * deadline has its output discarded and counts as a (retryable)
     * failure, as if it had been cut off. */
    lu__fmt(reason, sizeof reason, "timed out: ran %.3f ms, limit %u ms",
            (double)dt / 1e6, fe->timeout_ms);
    rc = LU_RETRY;
    timed_out = 1;
  } else if (rc == LU_OK && s->out.overflow) {
    lu__fmt(reason, sizeof reason,
            "emitted more than %d additional events", LU_MAX_EMIT);
    rc = LU_FAIL;
  } else if (rc != LU_OK) {
    lu__fmt(reason, sizeof reason, "%s",
            s->out.reason[0] ? s->out.reason
                             : rc == LU_RETRY ? "retryable error"
                                              : "permanent error");
  }
  st->ewma_ns = st->ewma_ns ? st->ewma_ns - st->ewma_ns / 8 + dt / 8 : dt;
  int retry = rc == LU_RETRY && it->attempts <= fe->fn->max_retries;
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
  } else if (retry) {
    /* Exponential backoff with +-50% jitter: backoff * 2^(attempt-1). */
    double base = (double)fe->backoff_ms * 1e6 *
                  (double)(1ull << (it->attempts - 1 < 20 ? it->attempts - 1
                                                          : 20));
    double jitter = 0.5 + lu__rand_unit(&s->rng);
    it->due_ns = lu__now_ns() + (uint64_t)(base * jitter);
    heap_push(s, it);
    return;
  } else {
    fail(s, it, reason, dt);
  }
  lu__out_reset(&s->out);
  atomic_fetch_sub_explicit(&s->load, 1, memory_order_relaxed);
  item_free(it);
}

static void *shard_main(void *arg) {
  shard_t *s = arg;
  for (;;) {
    pthread_mutex_lock(&s->lock);
    for (;;) {
      if (s->inline_busy) { /* run_inline wakes us if we have work */
        uint64_t now = lu__now_ns();
        uint64_t hold = atomic_load(&s->m->hold_ns);
        if (s->parked && (thread_work(s) || now - s->park_ns >= hold)) {
          s->inline_busy = s->parked = 0; /* its outcomes: flushed below */
          break;
        }
        s->idle = 1;
        if (s->parked) { /* watch it: take it over after LU_HOLD_NS */
          struct timespec ts = lu__mono_deadline(now + hold);
          s->watching = 1;
          pthread_cond_timedwait(&s->wake, &s->lock, &ts);
          s->watching = 0;
        } else {
          pthread_cond_wait(&s->wake, &s->lock);
        }
        s->idle = 0;
        continue;
      }
      if (s->fw_head || s->in_head) break;
      uint64_t now = lu__now_ns();
      if (s->nheap && s->heap[0]->due_ns <= now) break;
      if (s->stop && !s->nheap) break;
      if (s->nheap) {
        struct timespec ts = lu__mono_deadline(s->heap[0]->due_ns);
        s->idle = 1;
        pthread_cond_timedwait(&s->wake, &s->lock, &ts);
        s->idle = 0;
      } else {
        s->idle = 1;
        pthread_cond_wait(&s->wake, &s->lock);
        s->idle = 0;
      }
    }
    if (s->stop && !s->fw_head && !s->in_head && !s->nheap) {
      pthread_mutex_unlock(&s->lock);
      shard_flush(s); /* a parked turn's outcomes, taken over */
      break;
    }
    item_t *fw = s->fw_head;
    s->fw_head = s->fw_tail = NULL;
    s->fw_n = 0;
    item_t *in = s->in_head, *in_last = NULL;
    size_t k = 0;
    for (item_t *p = in; p && k < INTAKE_BATCH; p = p->next) in_last = p, k++;
    if (in_last) {
      s->in_head = in_last->next;
      if (!s->in_head) s->in_tail = NULL;
      in_last->next = NULL;
      s->in_n -= k;
    } else {
      in = NULL;
    }
    int unblock = in && s->blocked > 0;
    pthread_mutex_unlock(&s->lock);
    if (unblock) pthread_cond_broadcast(&s->space);

    while (fw) {
      item_t *next = fw->next;
      fw->next = NULL;
      run_item(s, fw);
      fw = next;
    }
    while (in) {
      item_t *next = in->next;
      in->next = NULL;
      run_item(s, in);
      in = next;
    }
    uint64_t now = lu__now_ns();
    while (s->nheap && s->heap[0]->due_ns <= now) run_item(s, heap_pop(s));
    shard_flush(s);
  }
  return NULL;
}

/* ---- lifecycle -------------------------------------------------------- */

int lu_manager_new(lu_manager_t **out, const lu_config_t *cfg_in,
                   const lu_registry_t *reg, char *errbuf, size_t errlen) {
  *out = NULL;
  if (errbuf && errlen) errbuf[0] = 0;
  lu_config_t cfg;
  if (cfg_in) cfg = *cfg_in;
  else lu_config_init(&cfg);
#define BAD(...)                                             \
  do {                                                       \
    if (errbuf) lu__fmt(errbuf, errlen, __VA_ARGS__);        \
    lu_store_close(cfg.store_handle);                        \
    return LU_EINVAL;                                        \
  } while (0)
  if (!reg) BAD("no registry");
  if (cfg.shards < 1 || cfg.shards > MAX_SHARDS)
    BAD("shards must be 1..%d (got %u)", MAX_SHARDS, cfg.shards);
  if (!cfg.queue_capacity) BAD("queue capacity must be at least 1");
  if (cfg.max_event_bytes < 64) BAD("max event size must be at least 64");
  if (!cfg.store_batch) cfg.store_batch = 4096;
  if (cfg.w_load < 0 || cfg.w_resources < 0 || cfg.w_priority < 0 ||
      cfg.w_affinity < 0)
    BAD("selection weights must not be negative");
  if (cfg.w_load + cfg.w_resources + cfg.w_priority + cfg.w_affinity == 0)
    cfg.w_load = 0.3, cfg.w_resources = 0.25, cfg.w_priority = 0.25,
    cfg.w_affinity = 0.2;
#undef BAD
  lu_manager_t *m = calloc(1, sizeof *m);
  if (!m) {
    lu_store_close(cfg.store_handle);
    return LU_ENOMEM;
  }
  m->cfg = cfg;
  m->reg = reg;
  m->n = cfg.shards;
  m->w = (lu_weights_t){cfg.w_load, cfg.w_resources, cfg.w_priority,
                        cfg.w_affinity};
  if (cfg.store_handle) {
    m->store = cfg.store_handle;
    m->cfg.store_handle = NULL;
  }
  m->store_path = strdup(cfg.store ? cfg.store : ":memory:");
  m->cfg.store = m->store_path;
  m->rng = cfg.seed ? cfg.seed : lu__now_ns() ^ (uint64_t)(uintptr_t)m;
  size_t nf = lu_registry_count(reg);
  m->shards = calloc(m->n, sizeof *m->shards);
  m->rr = calloc(nf + 1, sizeof *m->rr);
  m->fng = calloc(nf + 1, sizeof *m->fng);
  m->per_shard = calloc(m->n + 1, sizeof *m->per_shard);
  m->sessions = lu__sessions_new();
  if (!m->store_path || !m->shards || !m->rr || !m->fng || !m->per_shard ||
      !m->sessions) {
    lu_manager_free(m);
    return LU_ENOMEM;
  }
  char serr[512];
  int rc = 0;
  if (!m->store) rc = lu_store_open(&m->store, m->store_path, serr, sizeof serr);
  if (rc) {
    if (errbuf) lu__fmt(errbuf, errlen, "%s", serr);
    lu_manager_free(m);
    return LU_ESTORE;
  }
  pthread_mutex_init(&m->slock, NULL);
  pthread_cond_init(&m->swake, NULL);
  pthread_cond_init(&m->sspace, NULL);
  pthread_mutex_init(&m->olock, NULL);
  pthread_mutex_init(&m->sbegin, NULL);
  m->sasync = lu__store_batches_in_flight(m->store);
  atomic_init(&m->hold_ns, LU_HOLD_NS);
  pthread_mutex_init(&m->plock, NULL);
  pthread_cond_init(&m->pdone, NULL);
  pthread_mutex_init(&m->stats_lock, NULL);
  pthread_mutex_init(&m->rng_lock, NULL);
  pthread_mutex_init(&m->members_lock, NULL);
  pthread_rwlock_init(&m->vlock, NULL);
  for (unsigned i = 0; i < m->n; i++) {
    shard_t *s = &m->shards[i];
    s->m = m;
    s->idx = i;
    if (cfg.shard_ids && cfg.shard_ids[i])
      lu__fmt(s->id, sizeof s->id, "%s", cfg.shard_ids[i]);
    else
      lu__fmt(s->id, sizeof s->id, "shard-%u", i);
    pthread_mutex_lock(&m->members_lock);
    s->member = member_get(m, s->id);
    pthread_mutex_unlock(&m->members_lock);
    if (!s->member || s->member->local) abort(); /* duplicate local id */
    s->member->local = s;
    if (i + 1 == m->n) m->cfg.shard_ids = NULL; /* copied into s->id */
    s->rng = lu__rand_next(&m->rng);
    s->fns = calloc(nf + 1, sizeof *s->fns);
    if (!s->fns) abort();
    if (m->sasync) { /* shard_out holds outcomes only for such a store */
      size_t cap = m->cfg.store_batch;
      s->ounits = malloc((cap + 1) * sizeof *s->ounits);
      s->orecs = malloc((cap + LU_MAX_EMIT + 1) * sizeof *s->orecs);
      if (!s->ounits || !s->orecs) abort();
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->stats_lock, NULL);
    lu__cond_init_mono(&s->wake);
    pthread_cond_init(&s->space, NULL);
  }
  lu__manager_set_view(m, NULL, 0);
  pthread_create(&m->sthread, NULL, store_main, m);
  for (unsigned i = 0; i < m->n; i++)
    pthread_create(&m->shards[i].thread, NULL, shard_main, &m->shards[i]);
  m->started = 1;
  *out = m;
  return 0;
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
  if (m->started) {
    m->closing = 1;
    lu_manager_drain(m);
    for (unsigned i = 0; i < m->n; i++) {
      shard_t *s = &m->shards[i];
      pthread_mutex_lock(&s->lock);
      s->stop = 1;
      pthread_cond_broadcast(&s->wake);
      pthread_cond_broadcast(&s->space);
      pthread_mutex_unlock(&s->lock);
    }
    for (unsigned i = 0; i < m->n; i++) pthread_join(m->shards[i].thread, NULL);
    pthread_mutex_lock(&m->slock);
    m->sstop = 1;
    pthread_cond_broadcast(&m->swake);
    pthread_mutex_unlock(&m->slock);
    pthread_join(m->sthread, NULL);
    for (unsigned i = 0; i < m->n; i++) {
      shard_t *s = &m->shards[i];
      lu__out_reset(&s->out);
      free(s->heap);
      free(s->fns);
      lu__buf_free(&s->print);
      free(s->ounits);
      free(s->orecs);
      pthread_mutex_destroy(&s->lock);
      pthread_mutex_destroy(&s->stats_lock);
      pthread_cond_destroy(&s->wake);
      pthread_cond_destroy(&s->space);
    }
    pthread_mutex_destroy(&m->slock);
    pthread_cond_destroy(&m->swake);
    pthread_cond_destroy(&m->sspace);
    pthread_mutex_destroy(&m->olock);
    pthread_mutex_destroy(&m->sbegin);
    pthread_mutex_destroy(&m->plock);
    pthread_cond_destroy(&m->pdone);
    pthread_mutex_destroy(&m->stats_lock);
    pthread_mutex_destroy(&m->rng_lock);
    pthread_mutex_destroy(&m->members_lock);
    pthread_rwlock_destroy(&m->vlock);
  }
  for (unsigned i = 0; i < m->nmembers; i++) free(m->members[i]);
  lu_store_close(m->store);
  lu__sessions_free(m->sessions);
  free(m->shards);
  free((void *)m->rr);
  free(m->fng);
  free(m->per_shard);
  free(m->store_path);
  free(m);
}

/* ---- stats ------------------------------------------------------------ */

void lu_manager_counts(const lu_manager_t *cm, lu_count_t *total,
                       uint64_t *events_in) {
  lu_manager_t *m = (lu_manager_t *)cm;
  pthread_mutex_lock(&m->stats_lock);
  if (total) *total = m->total;
  if (events_in) *events_in = m->events_in;
  pthread_mutex_unlock(&m->stats_lock);
}

unsigned lu_manager_shard_count(const lu_manager_t *m) { return m->n; }

void lu_manager_shard_stats(const lu_manager_t *cm, unsigned i,
                            lu_shard_stats_t *out) {
  lu_manager_t *m = (lu_manager_t *)cm;
  memset(out, 0, sizeof *out);
  if (i >= m->n) return;
  shard_t *s = &m->shards[i];
  out->id = s->id;
  pthread_mutex_lock(&m->stats_lock);
  out->count = m->per_shard[i];
  pthread_mutex_unlock(&m->stats_lock);
  pthread_mutex_lock(&s->stats_lock);
  out->routed = s->routed;
  out->forwarded = s->forwarded;
  out->received = s->received;
  out->retries = s->retries;
  pthread_mutex_unlock(&s->stats_lock);
  out->in_flight = atomic_load_explicit(&s->load, memory_order_relaxed);
}

void lu_manager_fn_stats(const lu_manager_t *cm, size_t i, lu_fn_stats_t *out) {
  lu_manager_t *m = (lu_manager_t *)cm;
  memset(out, 0, sizeof *out);
  const lu_fnent_t *fe = lu__registry_entry(m->reg, i);
  if (!fe) return;
  out->name = fe->fn->name;
  lu_hist_t *h = calloc(2, sizeof *h);
  if (!h) return;
  for (unsigned k = 0; k < m->n; k++) {
    shard_t *s = &m->shards[k];
    fnstate_t *st = &s->fns[i];
    pthread_mutex_lock(&s->stats_lock);
    out->executions += st->executions;
    out->retries += st->retries;
    out->timeouts += st->timeouts;
    lu__hist_merge(&h[0], &st->exec);
    pthread_mutex_unlock(&s->stats_lock);
    if (atomic_load_explicit(&st->breaker_open, memory_order_relaxed))
      out->breaker_open = 1;
  }
  pthread_mutex_lock(&m->stats_lock);
  out->completed = m->fng[i].completed;
  out->failed = m->fng[i].failed;
  lu__hist_merge(&h[1], &m->fng[i].e2e);
  pthread_mutex_unlock(&m->stats_lock);
  out->p50_ns = lu__hist_quantile(&h[0], 0.5);
  out->p99_ns = lu__hist_quantile(&h[0], 0.99);
  out->e2e_p50_ns = lu__hist_quantile(&h[1], 0.5);
  out->e2e_p99_ns = lu__hist_quantile(&h[1], 0.99);
  free(h);
}

uint64_t lu_manager_store_errors(const lu_manager_t *cm) {
  lu_manager_t *m = (lu_manager_t *)cm;
  pthread_mutex_lock(&m->stats_lock);
  uint64_t e = m->store_errors;
  pthread_mutex_unlock(&m->stats_lock);
  return e;
}

lu_store_t *lu_manager_store(lu_manager_t *m) { return m ? m->store : NULL; }

/* ---- for metrics.c (internal) ----------------------------------------- */

void lu__manager_fn_hists(const lu_manager_t *cm, size_t i, lu_hist_t *exec,
                          lu_hist_t *e2e) {
  lu_manager_t *m = (lu_manager_t *)cm;
  memset(exec, 0, sizeof *exec);
  memset(e2e, 0, sizeof *e2e);
  if (i >= lu_registry_count(m->reg)) return;
  for (unsigned k = 0; k < m->n; k++) {
    shard_t *s = &m->shards[k];
    pthread_mutex_lock(&s->stats_lock);
    lu__hist_merge(exec, &s->fns[i].exec);
    pthread_mutex_unlock(&s->stats_lock);
  }
  pthread_mutex_lock(&m->stats_lock);
  lu__hist_merge(e2e, &m->fng[i].e2e);
  pthread_mutex_unlock(&m->stats_lock);
}

int lu__manager_breaker_open(const lu_manager_t *m, size_t i, unsigned k) {
  if (k >= m->n || i >= lu_registry_count(m->reg)) return 0;
  return atomic_load_explicit(&m->shards[k].fns[i].breaker_open,
                              memory_order_relaxed);
}

size_t lu__manager_queue_depth(const lu_manager_t *cm, unsigned k) {
  lu_manager_t *m = (lu_manager_t *)cm;
  if (k >= m->n) return 0;
  shard_t *s = &m->shards[k];
  pthread_mutex_lock(&s->lock);
  size_t d = s->in_n + s->fw_n;
  pthread_mutex_unlock(&s->lock);
  return d;
}

const lu_registry_t *lu__manager_registry(const lu_manager_t *m) {
  return m->reg;
}

void lu__manager_set_hold(lu_manager_t *m, uint64_t ns) {
  atomic_store(&m->hold_ns, ns ? ns : LU_HOLD_NS);
}

void lu__manager_store_stats(const lu_manager_t *cm, uint64_t *batches,
                             uint64_t *records, uint64_t *errors) {
  lu_manager_t *m = (lu_manager_t *)cm;
  pthread_mutex_lock(&m->stats_lock);
  *batches = m->store_batches;
  *records = m->store_records;
  *errors = m->store_errors;
  pthread_mutex_unlock(&m->stats_lock);
}

uint64_t lu__manager_store_direct(const lu_manager_t *m) {
  return atomic_load_explicit(&m->sdirect, memory_order_relaxed);
}

void lu__manager_set_bus(lu_manager_t *m, const lu_bus_t *bus) {
  m->bus = *bus;
  m->has_bus = bus->forward != NULL;
}
