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

#include "lucent/lucent.h"

/* ---- util.c ----------------------------------------------------------- */

/** Monotonic clock, ns. */
uint64_t lu__now_ns(void);
#define NS_PER_MS 1000000LL
/** Wall clock, ms since the epoch. */
int64_t lu__wall_ms(void);
/** RFC 3339 UTC time with milliseconds ("2026-11-27T12:00:00.000Z") for a
 *  wall-clock ms value; buf needs 25 bytes. */
void lu__rfc3339(int64_t ms, char buf[32]);
/** splitmix64 step: a fast, good-enough PRNG for jitter and two choices. */
uint64_t lu__rand_next(uint64_t *state);
/** A uniform double in [0,1). */
double lu__rand_unit(uint64_t *state);
/** A deterministic id from a list of byte strings: XXH3-128 of the
 *  strings (each followed by a 0 byte) printed in the 8-4-4-4-12 UUID
 *  shape (version nibble 8, "custom").  buf gets 36 chars + NUL. */
void lu__derive_id(char buf[37], const char *const *parts, size_t n);
/** pthread_cond_init for a condition whose timed waits use
 *  CLOCK_MONOTONIC deadlines.  0 or an errno value. */
int lu__cond_init_mono(pthread_cond_t *c);
/** The deadline for such a timed wait at lu__now_ns() time at_ns. */
struct timespec lu__mono_deadline(uint64_t at_ns);
/** snprintf into a fixed buffer, always NUL-terminated, never fails. */
void lu__fmt(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** A growable byte buffer (for building JSON text). */
typedef struct lu_buf_s {
  char *p;
  size_t len, cap;
  int oom; /* sticky allocation failure */
} lu_buf_t;
/** Makes room for n more bytes (and the NUL) at once; 0, or -1 (b->oom). */
int lu__buf_reserve(lu_buf_t *b, size_t n);
/* Inline: results and stored events are built from dozens of short puts,
 * most of string literals whose strlen the compiler then folds. */
static inline void lu__buf_put(lu_buf_t *b, const char *s, size_t n) {
  if ((b->oom || b->len + n + 1 > b->cap) && lu__buf_reserve(b, n)) return;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}
static inline void lu__buf_puts(lu_buf_t *b, const char *s) {
  lu__buf_put(b, s, strlen(s));
}
/** Appends s as a JSON string literal (quotes and escapes; invalid UTF-8
 *  bytes become U+FFFD so the output is always valid JSON). */
void lu__buf_json_str(lu_buf_t *b, const char *s, size_t n);
/** Appends a cJSON value as compact JSON: what cJSON_PrintUnformatted
 *  gives, without its sprintf per integer, except that a double cJSON
 *  would round to 15 digits keeps the 17 that read back exactly.  NaN/Inf
 *  print null; strings are escaped as lu__buf_json_str does.  NULL prints
 *  null.  On allocation failure b->oom is set. */
void lu__buf_json_value(lu_buf_t *b, const cJSON *v);
void lu__buf_free(lu_buf_t *b);

/** A map from pointers to pointers: open addressing with linear probing,
 *  a fixed number of slots.  No lock of its own: its owner locks. */
typedef struct lu_ptrmap_s {
  const void **keys; /* NULL = empty slot */
  void **vals;
  size_t mask, n;
} lu_ptrmap_t;
/** Room for cap - 1 entries (cap rounded up to a power of two, at least
 *  16).  0 or LU_ENOMEM. */
int lu__ptrmap_init(lu_ptrmap_t *pm, size_t cap);
void lu__ptrmap_free(lu_ptrmap_t *pm);
/** Adds key (not NULL, not already in) -> val: 0, or -1 when full. */
int lu__ptrmap_put(lu_ptrmap_t *pm, const void *key, void *val);
/** Removes key and returns its value; NULL when absent. */
void *lu__ptrmap_take(lu_ptrmap_t *pm, const void *key);
/** Removes every entry whose value is val; returns how many. */
size_t lu__ptrmap_drop_value(lu_ptrmap_t *pm, const void *val);

/* ---- store.c: the store interface, one vtable per backend ------------- */

/** Called exactly once when an append begun with lu__store_append_begin
 *  is finished: rc 0 (every record is stored; inserted = how many were
 *  new) or LU_ESTORE with why (borrowed for the call).  It may run on the
 *  backend's own thread, and must not block long. */
typedef void (*lu_store_done_fn)(void *ctx, int rc, size_t inserted,
                                 const char *why);

typedef struct lu_store_ops_s {
  const char *name; /* "sqlite", "jetstream" */
  int (*append)(lu_store_t *st, const lu_record_t *recs, size_t n,
                size_t *inserted);
  /* NULL when the backend only appends synchronously (SQLite); then
   * batches_in_flight is NULL too. */
  int (*append_begin)(lu_store_t *st, const lu_record_t *recs, size_t n,
                      lu_store_done_fn done, void *ctx);
  size_t (*batches_in_flight)(const lu_store_t *st);
  int (*query)(lu_store_t *st, const lu_query_t *q, lu_store_row_cb cb,
               void *ud);
  int64_t (*count)(lu_store_t *st);
  void (*close)(lu_store_t *st);
} lu_store_ops_t;

/** How many batches begun with lu__store_append_begin the caller should
 *  keep in flight at once: 0 when st only appends synchronously; 1 when
 *  it packs every record (fewer, larger batches make fewer messages);
 *  more when batches do not change what is sent. */
size_t lu__store_batches_in_flight(const lu_store_t *st);
/** Begins appending recs and returns without waiting for the store: the
 *  records are copied before it returns; done is called exactly once when
 *  they are stored or have failed - possibly before this returns, on this
 *  thread, else on the backend's.  Same single-caller rule as
 *  lu_store_append for the calls themselves.  0 = begun; else nothing was
 *  begun, done is not called, and lu_store_errmsg says why. */
int lu__store_append_begin(lu_store_t *st, const lu_record_t *recs, size_t n,
                           lu_store_done_fn done, void *ctx);

/* The common head of every backend's store object (backends put it first
 * in their own struct and cast). */
struct lu_store_s {
  const lu_store_ops_t *ops;
  char errmsg[1024];
};

/* ---- event.c ---------------------------------------------------------- */

struct lu_event_s {
  char *raw;          /* JSON text, NUL-terminated (owned); NULL = stale */
  size_t raw_len;
  cJSON *root;        /* parsed tree (owned) */
  /* Borrowed from root; NULL when absent. */
  const char *id, *type, *source, *subject, *time;
  const char *correlationid, *causationid;
  const cJSON *data;
  unsigned depth;     /* causation depth ("causationdepth" extension) */
};

/** Re-reads the cached attribute pointers after root changed. */
void lu__event_index(lu_event_t *ev);

/** True for attribute names that are CloudEvents core or lucent-managed
 *  (not business context to carry over to results). */
int lu__event_is_core_attr(const char *name);

/** Is s[0..n) UTF-8 as RFC 3629 defines it (no overlong forms, no
 *  surrogates, nothing above U+10FFFF)?  1, or 0 with the offset of the
 *  first byte that is not in *bad_at (may be NULL). */
int lu__utf8_valid(const char *s, size_t n, size_t *bad_at);

/** Is name a CloudEvents attribute name as lucent accepts it: 1 to 20
 *  characters, each a lowercase ASCII letter or a digit
 *  (docs/protocol.md, "What lucent accepts")? */
int lu__ce_attr_name_ok(const char *name, size_t len);

/* ---- the wire protocol, v1 (docs/protocol.md) -------------------------- */

/** FNV-1a, 64 bits (offset basis 0xcbf29ce484222325, prime
 *  0x100000001b3): the intake partition hash of protocol v1, chosen
 *  because a client in any language writes it in a few lines. */
static inline uint64_t lu__fnv1a64(const void *p, size_t n) {
  const unsigned char *s = p;
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) {
    h ^= s[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

/* ---- ce_binary.c: the CloudEvents NATS binding's binary content mode -- */

/** One message header: name and value, borrowed. */
typedef struct lu_hdr_s {
  const char *name, *value;
} lu_hdr_t;

/** Is a message with these headers a binary-mode CloudEvent?  1 when it
 *  has a header ce-specversion (names match case-insensitively) and no
 *  Content-Type of application/cloudevents (structured mode). */
int lu__ce_binary_mode(const lu_hdr_t *h, size_t n);

/** Decodes a binary-mode event (its headers and payload) into the
 *  structured JSON text lucent stores and processes, appended to *out:
 *  attributes from the ce-* headers (percent-decoded, names lowercased),
 *  datacontenttype from ce-datacontenttype or Content-Type, and the
 *  payload as data (JSON), a string (text/x), or data_base64.  Returns 0;
 *  LU_EINVAL with the reason in err when it is not a valid event (a
 *  missing ce-id, a bad header name or value, a JSON content type whose
 *  payload is not JSON, ...); LU_ENOMEM.  *out may hold a partial text
 *  on failure. */
int lu__ce_binary_decode(lu_buf_t *out, const lu_hdr_t *h, size_t n,
                         const char *payload, size_t plen, char *err,
                         size_t errlen);

/** The text kept as a rejected binary-mode message's raw bytes: its
 *  headers as a NATS header block ("NATS/1.0\r\nname: value\r\n...\r\n")
 *  followed by the payload.  Appended to *out. */
void lu__ce_binary_raw(lu_buf_t *out, const lu_hdr_t *h, size_t n,
                       const char *payload, size_t plen);

/** Encodes a parsed event in binary mode: put(ud, name, value) once per
 *  header (ce-<attribute> for every attribute but data and data_base64,
 *  values percent-encoded; content-type and ce-datacontenttype from
 *  datacontenttype, application/json when it is absent and the event has
 *  data), and the payload appended to *payload.  Returns 0, LU_EINVAL
 *  (an attribute that is an object or an array, bad data_base64: err
 *  says which), LU_ENOMEM, or put's first non-zero return. */
int lu__ce_binary_encode(const lu_event_t *ev,
                         int (*put)(void *ud, const char *name,
                                    const char *value),
                         void *ud, lu_buf_t *payload, char *err,
                         size_t errlen);

/** Appends the standard base64 (RFC 4648, padded) of p[0..n) to b. */
void lu__buf_base64(lu_buf_t *b, const void *p, size_t n);
/** Appends the bytes that standard base64 text s[0..n) encodes to b:
 *  0, or LU_EINVAL when it is not base64 (b may then hold a part). */
int lu__base64_decode(lu_buf_t *b, const char *s, size_t n);

/* ---- route.c (strategies; DESIGN.md decisions 4-7) -------------------- */

/** Follows a dotted path ("customer.id", "items.0.sku": numeric segments
 *  index arrays) from root.  NULL when any segment is missing. */
const cJSON *lu__json_path(const cJSON *root, const char *path);

/** The routing key text of a JSON value: strings as-is, numbers as %.17g,
 *  true/false.  Writes to buf (cap bytes, >= 32) when it must format.
 *  Returns 0 and sets *key and *len, LU_EINVAL for null, objects and
 *  arrays, LU_E2BIG when buf is too small. */
int lu__key_text(const cJSON *v, char *buf, size_t cap, const char **key,
                 size_t *len);

/** XXH3-64 of a key. */
uint64_t lu__key_hash(const char *key, size_t len);
/** The per-shard seed for rendezvous hashing: XXH3-64 of the shard id. */
uint64_t lu__shard_seed(const char *shard_id);

/** Rendezvous (highest random weight): the index in [0,n) of the shard with
 *  the highest weight mix(keyhash, seeds[i]); ties to the lower index. */
unsigned lu__rendezvous(uint64_t keyhash, const uint64_t *seeds, unsigned n);
/** All n shard indexes in descending weight order (order[0] = owner). */
void lu__rendezvous_order(uint64_t keyhash, const uint64_t *seeds,
                          unsigned n, unsigned *order);
/** Consistent hashing with bounded loads: the first shard in rendezvous
 *  order whose load + 1 <= ceil(c * (total + 1) / n); c <= 1 means unbounded
 *  (plain owner).  loads[i] is shard i's current load. */
unsigned lu__rendezvous_bounded(uint64_t keyhash, const uint64_t *seeds,
                                unsigned n, const uint64_t *loads, double c);
/** Power of two choices: two distinct random shards, the less loaded wins
 *  (ties to the first draw, so equal loads spread uniformly).  n == 1
 *  gives 0. */
unsigned lu__two_choices(const uint64_t *loads, unsigned n, uint64_t *rng);

/** Sticky-session table (DESIGN.md decision 7, embedded flavour): thread
 *  safe, one mutex. */
typedef struct lu_sessions_s lu_sessions_t;
lu_sessions_t *lu__sessions_new(void);
void lu__sessions_free(lu_sessions_t *s);
/** Returns the shard bound to key.  Binds to `candidate` when the key is
 *  unbound, expired (now_ms >= last use + ttl_ms) or bound to a shard that
 *  is not alive (alive may be NULL = all alive).  Refreshes the last use.
 *  *created (may be NULL) says whether a new binding was made. */
unsigned lu__sessions_bind(lu_sessions_t *s, const char *key, size_t len,
                           unsigned candidate, uint32_t ttl_ms,
                           uint64_t now_ms, const unsigned char *alive,
                           int *created);
/** The live binding for key without changing anything: 0 and *shard, or
 *  LU_ENOENT. */
int lu__sessions_lookup(lu_sessions_t *s, const char *key, size_t len,
                        uint64_t now_ms, unsigned *shard);
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

/* ---- select.c (composite score; DESIGN.md decision 8) ----------------- */

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
  char reason[256];
};

/** Frees what a previous call left in out and empties it. */
void lu__out_reset(lu_out_t *out);
/* ---- manager.c: views for metrics and health (internal) --------------- */

/** Execution-latency and end-to-end histograms of function i (registry
 *  order), merged over shards.  Thread safe. */
void lu__manager_fn_hists(const lu_manager_t *m, size_t i, lu_hist_t *exec,
                          lu_hist_t *e2e);
/** Is function i's breaker open on shard k now?  Thread safe. */
int lu__manager_breaker_open(const lu_manager_t *m, size_t i, unsigned k);
/** Events waiting in shard k's queues (intake + forwarded).  Thread safe. */
size_t lu__manager_queue_depth(const lu_manager_t *m, unsigned k);
const lu_registry_t *lu__manager_registry(const lu_manager_t *m);
/** How long a shard holds its outcomes for one store batch, and how long
 *  a parked turn waits for its caller's next call before the shard's
 *  thread takes it over (default, and 0: LU_HOLD_NS, 1 ms).  The tests
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

/* ---- manager.c: the hooks a bus (bus_nats.c) plugs into ---------------- */

/** Called exactly once when an item lucent took in is finished here: its
 *  outcome is stored (o != NULL, stored = 1 unless the store failed), or it
 *  was forwarded to another shard (o == NULL, stored = 1 once the forward
 *  is durable, 0 if it failed).  May run on the store thread or a bus
 *  thread; must not block long. */
typedef struct lu_done_s {
  void (*fn)(void *ctx, const lu_outcome_t *o, int stored);
  void *ctx;
} lu_done_t;

/** A bus moves events between shard processes. */
typedef struct lu_bus_s {
  /** Forwards one event (its JSON text, borrowed for the call) to shard
   *  `target` (an id of the view), pinned there; `hops` counts forwards so
   *  far.  Must call done.fn (if set) exactly once, when the forward is
   *  durable or has failed.  Any thread. */
  void (*forward)(void *ud, const char *target, const char *json, size_t len,
                  unsigned hops, lu_done_t done);
  /** Sticky-session binding shared across processes (NULL = the manager's
   *  own table): writes the shard id bound to key into out. */
  int (*sticky)(void *ud, const char *key, size_t klen, const char *candidate,
                char *out, size_t cap);
  void *ud;
  /** Emitted events go through forward() even when they stay on this
   *  shard, so they are durable before their parent is acknowledged. */
  int forward_derived;
} lu_bus_t;

/** Installs a bus (copied).  Call before any event is submitted. */
void lu__manager_set_bus(lu_manager_t *m, const lu_bus_t *bus);
/** Replaces the shard view with these ids (this process's shards are
 *  always kept).  Thread safe; routing sees it at once. */
void lu__manager_set_view(lu_manager_t *m, const char *const *ids,
                          unsigned n);
/** Records a remote shard's reported load (heartbeat).  Thread safe. */
void lu__manager_report_load(lu_manager_t *m, const char *id, uint64_t load);
/** Is this shard id in the view now? */
int lu__manager_in_view(lu_manager_t *m, const char *id);
/** Writes the ids in the view, comma-separated, into buf. */
void lu__manager_view_string(lu_manager_t *m, char *buf, size_t cap);
/** The load this process reports in heartbeats (sum over local shards). */
uint64_t lu__manager_local_load(const lu_manager_t *m);

/** Takes in one event as JSON text from intake (copied): decoded, routed,
 *  run here or forwarded; `done` is called once it is finished here. */
int lu__manager_submit_raw(lu_manager_t *m, const char *json, size_t len,
                           uint64_t line, lu_done_t done);
/** Takes in input that is known to be bad without decoding it (a
 *  binary-mode message whose headers are not a valid event): recorded as
 *  lucent.Rejected with `reason` and raw bytes (copied), counted as an
 *  input; `done` as for lu__manager_submit_raw. */
int lu__manager_reject_raw(lu_manager_t *m, const char *raw, size_t len,
                           uint64_t line, const char *reason,
                           lu_done_t done);
/** Takes in an event forwarded to shard `target`: run here if `target` is
 *  local (pinned: never routed again, DESIGN.md decision 4); if `target`
 *  is gone and this process took over its queue, route it once more
 *  (hops + 1; past 2 hops it runs here).  Returns LU_EBUSY, without
 *  calling done, when `target` is another shard that is in the view: the
 *  caller gives the message back (it is that shard's). */
int lu__manager_accept(lu_manager_t *m, const char *json, size_t len,
                       const char *target, unsigned hops, lu_done_t done);

enum { LU_ROUTE_OK, LU_ROUTE_REJECT, LU_ROUTE_DEAD };
/** Routes ev without running it: LU_ROUTE_OK with the target id in
 *  target (cap bytes) and *local set when it is a shard of this process,
 *  or LU_ROUTE_REJECT / LU_ROUTE_DEAD with the reason in why. */
int lu__manager_route(lu_manager_t *m, const lu_event_t *ev, char *target,
                      size_t cap, int *local, char *why, size_t wcap);
/** How lu__manager_run_local may use the calling thread. */
enum {
  LU_INLINE_NEVER = 0, /* queue the item for the shard's thread */
  LU_INLINE_LAST = 1,  /* run it here if the shard's thread sleeps */
  LU_INLINE_MORE = 2   /* the same, and another call follows soon */
};
/** Runs ev on the local shard `target` (pinned; takes ownership of ev);
 *  done gets the outcome (request/reply).  An unknown target runs on the
 *  first local shard.  packable: the records of its outcome carry
 *  LU_RECORD_PACKABLE (it will not be redelivered: an exec request).
 *  inline_mode LU_INLINE_LAST: when the shard's thread sleeps with
 *  nothing queued, run it on the calling thread instead of waking that
 *  one (the call then returns after the function ran and its outcome was
 *  handed to the store).  LU_INLINE_MORE: the same, but the caller has
 *  another request waiting (a burst): it keeps the shard's turn and the
 *  outcomes for its next call, so the burst makes one store batch; its
 *  last call should say LU_INLINE_LAST, and if no call follows, the
 *  shard's thread takes the turn over within ~1 ms (nothing is lost, the
 *  outcomes only wait).  The caller must not hold any manager lock.
 *  Thread safe. */
int lu__manager_run_local(lu_manager_t *m, lu_event_t *ev, const char *target,
                          int packable, int inline_mode, lu_done_t done);
/** Ends the calling thread's burst on m's shards early: a turn it kept
 *  with LU_INLINE_MORE is given back and its outcomes handed to the store
 *  now (the caller's next request went elsewhere).  A no-op otherwise.
 *  The caller must not hold any manager lock.  */
void lu__manager_end_burst(lu_manager_t *m);

#endif /* LUCENT_INTERNAL_H */
