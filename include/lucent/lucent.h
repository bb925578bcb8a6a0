/*
 * lucent/lucent.h - the umbrella header: embed a lucent function manager.
 *
 * A complete program (tests/integ/test_install.sh builds and runs it
 * against an installed lucent, as RUN says):
 *
 *   #include <stdio.h>
 *   #include <string.h>
 *
 *   #include <lucent/lucent.h>
 *
 *   LU_FUNCTION(Double, .events = "Number")
 *   {
 *     cJSON *r = cJSON_CreateNumber(2 * cJSON_GetNumberValue(data));
 *     return lu_out_result(out, r) ? LU_RETRY : LU_OK;
 *   }
 *
 *   // Once per input event, after its outcome is stored.
 *   static void print_outcome(void *ud, const lu_outcome_t *o) {
 *     (void)ud;
 *     printf("%s %s\n", lu_outcome_name(o->kind),
 *            o->result_json ? o->result_json : o->reason);
 *   }
 *
 *   int main(void) {
 *     const lu_fn_t *const *fns;
 *     size_t n = lu_fns_here(&fns);  // this program's LU_FUNCTIONs
 *     lu_registry_t *reg;            // (or lu_registry_load_plugin)
 *     if (lu_registry_new(&reg) || lu_registry_add(reg, fns, n, "main"))
 *       return 1;
 *
 *     lu_config_t cfg;
 *     lu_config_init(&cfg);          // first: the defaults
 *     cfg.shards = 2;                // cfg.store = "events.db"; ...
 *     cfg.on_outcome = print_outcome;
 *
 *     lu_manager_t *m;
 *     char err[256];
 *     if (lu_manager_new(&m, &cfg, reg, err, sizeof err)) {
 *       fprintf(stderr, "lucent: %s\n", err);
 *       lu_registry_free(reg);
 *       return 1;
 *     }
 *     const char *ev = "{\"specversion\":\"1.0\",\"id\":\"n-1\","
 *                      "\"type\":\"Number\",\"source\":\"main\","
 *                      "\"data\":21}";
 *     lu_manager_submit_json(m, ev, strlen(ev), 1);  // as often as needed
 *     lu_manager_drain(m);                           // every outcome in
 *     lu_manager_free(m);
 *     lu_registry_free(reg);
 *     return 0;
 *   }
 *
 * RUN: (the program above in double.c, lucent installed)
 *   cc -o double double.c $(pkg-config --cflags --libs lucent)
 *   ./double
 *
 * OUTPUT:
 *   completed 42
 *
 * Conventions: calls return 0 or a negative LU_E* code; every _new has a
 * _free that accepts NULL; out-parameters come first; borrowed pointers say
 * how long they live.
 */
#ifndef LUCENT_LUCENT_H
#define LUCENT_LUCENT_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "event.h"
#include "fn.h"
#include "lucent/version.h" /* generated: LU_VERSION, LU_VERSION_MAJOR... */
#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The version of the library this program runs with, as
 *  LU_VERSION_NUMBER (version.h) is for the headers it was compiled with:
 *  MAJOR * 1000000 + MINOR * 1000 + PATCH.  Thread safe. */
LU_EXTERN unsigned lu_version(void);

/** The same as "MAJOR.MINOR.PATCH" (static storage). */
LU_EXTERN const char *lu_version_string(void);

/* ======================================================================
 * Registry: the functions known to this process.
 * ==================================================================== */

typedef struct lu_registry_s lu_registry_t;

/** Creates an empty registry.  Returns 0 or LU_ENOMEM. */
LU_EXTERN int lu_registry_new(lu_registry_t **out);

/** Frees a registry and unloads its plugins; NULL is a no-op.  Must
 *  outlive every manager built on it.  While a run abandoned past its
 *  hard limit has not returned (a function that never returns), the
 *  registry and its plugins are kept instead: that thread still runs
 *  their code. */
LU_EXTERN void lu_registry_free(lu_registry_t *reg);

/** Adds n descriptors (for example from lu_fns_here()).  The descriptors
 *  are borrowed and must outlive the registry (static storage does).
 *  Everything is validated first; on any error nothing is added and the
 *  reason, naming the function, is in lu_registry_errmsg():
 *  LU_EMETA (missing events, unknown strategy, empty key path, priority out
 *  of 1..10, load_bound in (0,1], ...), LU_EEXIST (duplicate name).
 *  `origin` (a path, may be NULL) is shown in messages.  Not thread safe. */
LU_EXTERN int lu_registry_add(lu_registry_t *reg, const lu_fn_t *const *fns,
                              size_t n, const char *origin);

/** dlopen()s a plugin built with LU_PLUGIN() and adds its functions as
 *  lu_registry_add() does.  Errors: LU_ENOENT (no such file), LU_EPLUGIN
 *  (not a loadable object, no lu_plugin_functions symbol, built for
 *  another plugin ABI or against another cJSON major version,
 *  no functions), plus those of lu_registry_add().  Not thread safe. */
LU_EXTERN int lu_registry_load_plugin(lu_registry_t *reg, const char *path);

/** The last error's message; "" when none.  Borrowed until the next call. */
LU_EXTERN const char *lu_registry_errmsg(const lu_registry_t *reg);

/** Number of functions, and the i-th in name order (borrowed). */
LU_EXTERN size_t lu_registry_count(const lu_registry_t *reg);
LU_EXTERN const lu_fn_t *lu_registry_at(const lu_registry_t *reg, size_t i);

/** The function whose strategy routes events of `type`: the first of
 *  its candidates (highest priority, then name), or NULL when no function
 *  handles that type.  Borrowed for the registry's lifetime. */
LU_EXTERN const lu_fn_t *lu_registry_router(const lu_registry_t *reg,
                                            const char *type);

/** The registry as a JSON array (one object per function, with its event
 *  types, strategy and resources).  Caller frees with free().  NULL on
 *  allocation failure. */
LU_EXTERN char *lu_registry_json(const lu_registry_t *reg);

/* ======================================================================
 * Outcomes: every event that enters ends in exactly one.
 * ==================================================================== */

#define LU_OUTCOME_MAP(XX)            \
  XX(COMPLETED, "completed")          \
  XX(FAILED, "failed")                \
  XX(REJECTED, "rejected")            \
  XX(DEAD_LETTERED, "dead_lettered")

typedef enum lu_outcome_kind_e {
#define LU__OUT_ENUM(n, s) LU_OUTCOME_##n,
  LU_OUTCOME_MAP(LU__OUT_ENUM)
#undef LU__OUT_ENUM
      LU_OUTCOME__COUNT
} lu_outcome_kind_t;

/** "completed", "failed", ... */
LU_EXTERN const char *lu_outcome_name(lu_outcome_kind_t kind);

/** One outcome, as reported to lu_config_t.on_outcome after the event that
 *  records it is in the store.  All pointers are borrowed and valid only
 *  during the callback. */
typedef struct lu_outcome_s {
  lu_outcome_kind_t kind;
  int derived;            /**< 0: an input event; 1: emitted by a function */
  uint64_t line;          /**< input line number given at submit, or 0 */
  const char *event_id;   /**< the input event's id (NULL if unparsable) */
  const char *event_type; /**< the input event's type (NULL if unknown) */
  const char *function;   /**< the function selected, or NULL */
  const char *shard;      /**< the shard that decided the outcome */
  unsigned attempts;      /**< executions tried (0 if none ran) */
  const char *reason;     /**< why, for every kind but COMPLETED */
  const char *stored_json;/**< the recorded event (<Fn>Completed,
                               <Fn>Failed, lucent.Rejected or
                               lucent.DeadLettered) as stored */
  const char *result_json;/**< COMPLETED: the function's result (the
                               stored event's data) as JSON text */
  uint64_t exec_ns;       /**< time inside the function, last attempt */
  uint64_t total_ns;      /**< from submit to outcome recorded */
} lu_outcome_t;

typedef void (*lu_outcome_cb)(void *userdata, const lu_outcome_t *outcome);

/** Called for each selection decision when explain is on: one line of
 *  text describing every candidate's sub-scores.  Borrowed. */
typedef void (*lu_explain_cb)(void *userdata, const char *line);

/* ======================================================================
 * Manager: N shards (threads), one store, the whole pipeline.
 * ==================================================================== */

/* How lu_config_t grows without breaking a program compiled against
 * older headers: a size field, not an opaque config with setters.  The
 * struct stays what every embedder already writes (fields set by name,
 * designated initialisers, visible in a debugger), and the size tells the
 * library which fields the caller's struct has.  The rules:
 *
 *  - lucent only appends fields; it never removes, reorders or retypes
 *    one, so an older lu_config_t is a prefix of a newer one;
 *  - a program calls lu_config_init() (a macro: it passes the
 *    sizeof(lu_config_t) it was compiled with) before setting fields,
 *    and never writes struct_size itself;
 *  - lu_manager_new() reads only the fields that lie wholly within
 *    struct_size: a program compiled against older headers keeps
 *    working, and the fields it does not know take their defaults;
 *  - a struct_size larger than this library's lu_config_t (headers newer
 *    than the library) or smaller than its first fields (0: not
 *    initialised) is refused with LU_EINVAL and a message.
 *
 * The other structs cross the boundary in one direction only and have no
 * size: lu_outcome_t is made by lucent and lent to the callback (lucent
 * may append fields; never copy it by value into storage of your own), and
 * the structs a program passes for lucent to fill (lu_count_t,
 * lu_shard_stats_t, lu_fn_stats_t) and lu_record_t, lu_query_t,
 * lu_fn_t (checked by LU_ABI_VERSION) change only with a new SONAME. */
typedef struct lu_config_s {
  size_t struct_size;       /**< sizeof(lu_config_t) as the caller was
                                 compiled: set by lu_config_init() */
  unsigned shards;          /**< number of shards; default 1 */
  const char *const *shard_ids; /**< their ids (`shards` of them), or NULL
                               for "shard-0", "shard-1", ...; copied */
  const char *store;        /**< SQLite file path or ":memory:" (default) */
  lu_store_t *store_handle; /**< an already open store (any backend) to use
                                 instead of `store`; the manager takes
                                 ownership, even on error */
  size_t max_event_bytes;   /**< larger inputs are rejected; 1 MiB */
  size_t queue_capacity;    /**< intake queue of the manager, shared
                                 evenly by its shards (each gets at least
                                 16, or all of it if smaller); a producer
                                 blocks while its event's shard has its
                                 share queued; default 1024 */
  unsigned max_depth;       /**< causation depth limit; default 16 */
  double w_load, w_resources, w_priority, w_affinity; /**< selection weights;
                               all 0 = 0.3, 0.25, 0.25, 0.2 */
  uint32_t shard_cpu_millis;   /**< shard capacity; default 1000 */
  uint32_t shard_memory_mb;    /**< shard capacity; default 1024 */
  unsigned breaker_failures;   /**< consecutive failures that open a
                                    function's breaker; default 5 */
  uint32_t breaker_cooldown_ms;/**< open -> half-open after; default 1000 */
  size_t store_batch;          /**< at most this many events per store
                                    transaction (group commit); 4096 */
  uint64_t seed;               /**< randomness (jitter, two choices);
                                    0 = from the clock */
  lu_outcome_cb on_outcome;    /**< may be NULL; called from the store
                                    thread (with an event store on
                                    JetStream: from whichever thread sees
                                    a batch's last ack, mostly the NATS
                                    client's), one call at a time, under
                                    the writer's reporting lock.  So it
                                    must not call lu_manager_submit*,
                                    lu_manager_drain or lu_manager_free
                                    of this manager (drain and free wait
                                    for this very callback: deadlock;
                                    submit may block on a full queue only
                                    the writer empties), nor query its
                                    store; and it should return quickly:
                                    while it runs, no other outcome is
                                    reported and, with SQLite, nothing
                                    is written.  Hand work to a thread of
                                    your own (copy what you keep: every
                                    pointer in the outcome is borrowed) */
  void *on_outcome_ud;
  unsigned threads;            /**< worker threads that run the shards;
                                    0 = one per CPU, at most one per
                                    shard */
  unsigned max_deliveries;     /**< the delivery budget of an input that
                                    a transport may deliver again
                                    (lu_input_t.delivery): at the last
                                    delivery it runs wherever it arrived,
                                    never handed back; delivered more
                                    often than that (each process that
                                    took it died or stopped before its
                                    outcome was stored) it is
                                    dead-lettered without running; 0 = 5 */
  uint32_t store_retry_ms;     /**< how long a batch the store refuses is
                                    tried again (backing off up to 1 s)
                                    before its outcomes are reported as
                                    not stored; 0 = four tries in ~70 ms.
                                    A transport that redelivers what is
                                    not stored wants this long enough to
                                    ride out a store outage (`lucent
                                    serve`: 60 s): a batch waiting here
                                    holds its inputs, it does not send
                                    them round again */
  size_t max_record_bytes;     /**< a result or an emitted event larger
                                    than this (its stored CloudEvent)
                                    cannot be stored: the outcome becomes
                                    <Fn>Failed with the reason, rather
                                    than a batch the store refuses for
                                    ever; 0 = no limit (`lucent serve`
                                    sets it from the NATS server's
                                    maximum payload) */
  unsigned hang_factor;        /**< a function still running (wall
                                    clock) after hang_factor x its
                                    timeout_ms (and at least 1 s) is
                                    abandoned: its event is dead-lettered
                                    with the reason, its shard goes on
                                    with another thread, and the stuck
                                    thread is left to finish on its own;
                                    0 = 10 */
  lu_explain_cb on_explain;    /**< may be NULL; called from shard threads
                                    (or the NATS client's thread running a
                                    request inline: lucent serve),
                                    possibly concurrently */
  void *on_explain_ud;
} lu_config_t;

/** Fills cfg with the defaults and sets cfg->struct_size to the size of
 *  the lu_config_t this program was compiled with.  Call it before
 *  setting any field.  (A macro, so that sizeof is the caller's; from a
 *  language without C macros call lu_config_init_sized(cfg, size).) */
#define lu_config_init(cfg) lu_config_init_sized((cfg), sizeof(lu_config_t))

/** lu_config_init() with the size of the caller's struct: zeroes `size`
 *  bytes, fills the fields they hold with the defaults, sets struct_size.
 *  Returns 0, or LU_EINVAL when lu_manager_new() will refuse that size
 *  (see above; cfg is still filled as far as it can be). */
LU_EXTERN int lu_config_init_sized(lu_config_t *cfg, size_t size);

typedef struct lu_manager_s lu_manager_t;

/** Creates a manager and starts its shard and store threads.  The config is
 *  copied (strings too; only the fields within cfg->struct_size, the
 *  others take their defaults; NULL = all defaults); reg is borrowed and
 *  must outlive the manager.  Errors: LU_EINVAL (bad config, or a
 *  struct_size this library does not know), LU_ESTORE (store cannot open:
 *  see errmsg), LU_ENOMEM.  On error *out is NULL and, if errbuf is not
 *  NULL, the reason is written there. */
LU_EXTERN int lu_manager_new(lu_manager_t **out, const lu_config_t *cfg,
                             const lu_registry_t *reg, char *errbuf,
                             size_t errlen);

/** Submits one event as JSON text (copied).  Decodes, validates, routes and
 *  enqueues it; blocks while the target shard's queue is full
 *  (backpressure).  Bad input is not an error of this call: it becomes a
 *  lucent.Rejected outcome.  `line` (may be 0) is reported with the
 *  outcome.  Returns 0, or LU_ESTATE after lu_manager_free started.  Thread
 *  safe. */
LU_EXTERN int lu_manager_submit_json(lu_manager_t *m, const char *json,
                                     size_t len, uint64_t line);

/** One input, and what is known of where it came from. */
typedef struct lu_input_s {
  const char *json;   /**< the event's JSON text (copied) */
  size_t len;
  uint64_t line;      /**< its line in origin, reported with its outcome;
                           0 = none */
  const char *origin; /**< where it came from ("orders.jsonl",
                           "LUCENT_INTAKE:1234"), or NULL.  With line, the
                           identity of an input that is not a valid event:
                           the same bad line of the same origin is
                           rejected once however often it comes, the same
                           bytes at the same line of another origin get a
                           rejection of their own.  Copied. */
  unsigned delivery;  /**< 0 or 1: the first time this input is given to
                           lucent.  More: it comes again after a process
                           that took it may have died of it (a crash or a
                           hang): it runs isolated, in a child process,
                           and should it crash or hang there it ends as a
                           dead letter naming the signal and the
                           function, without taking this process down. */
  unsigned replayed;  /**< nonzero: it may have run before although this is
                           its first delivery here (a replay after the
                           transport lost its acknowledgements); implied
                           by delivery > 1.  Before choosing among
                           competing functions, lucent looks in the store
                           for an outcome one of them recorded
                           (lu_store_has) and runs that one again, so the
                           input keeps one outcome. */
} lu_input_t;

/** Submits one input: lu_manager_submit_json() with its origin and its
 *  delivery count.  Returns 0, LU_EINVAL, LU_ESTATE (after
 *  lu_manager_free started) or LU_ENOMEM (nothing was taken).  Thread
 *  safe. */
LU_EXTERN int lu_manager_submit_input(lu_manager_t *m, const lu_input_t *in);

/** Submits a built event.  Takes ownership of ev, even on error.  Same
 *  semantics as lu_manager_submit_json().  Thread safe. */
LU_EXTERN int lu_manager_submit(lu_manager_t *m, lu_event_t *ev);

/** Waits until every event submitted so far, and every event those emitted,
 *  has its outcome recorded and reported.  Thread safe. */
LU_EXTERN int lu_manager_drain(lu_manager_t *m);

/** Drains, stops every thread, closes the store and frees; NULL is a
 *  no-op.  No callback runs after it returns. */
LU_EXTERN void lu_manager_free(lu_manager_t *m);

/** Counters: see lu_stats_t.  Thread safe; a consistent snapshot after
 *  lu_manager_drain(), approximate while events are in flight. */
typedef struct lu_count_s {
  uint64_t outcomes[LU_OUTCOME__COUNT]; /**< input events by outcome */
  uint64_t derived[LU_OUTCOME__COUNT];  /**< emitted events by outcome */
} lu_count_t;

typedef struct lu_shard_stats_s {
  const char *id;          /**< "shard-0", ...; borrowed for the manager's
                                lifetime */
  lu_count_t count;        /**< outcomes decided on this shard */
  uint64_t routed;         /**< events routed here from intake */
  uint64_t forwarded;      /**< events this shard forwarded elsewhere */
  uint64_t received;       /**< forwarded events received */
  uint64_t retries;        /**< retry attempts scheduled */
  uint64_t in_flight;      /**< queued + executing now */
} lu_shard_stats_t;

typedef struct lu_fn_stats_s {
  const char *name;        /**< borrowed for the manager's lifetime */
  uint64_t executions;     /**< attempts, retries included */
  uint64_t completed, failed, retries, timeouts;
  uint64_t p50_ns, p99_ns; /**< execution latency (inside the function) */
  uint64_t e2e_p50_ns, e2e_p99_ns; /**< submit -> outcome recorded */
  int breaker_open;        /**< on any shard, now */
} lu_fn_stats_t;

LU_EXTERN void lu_manager_counts(const lu_manager_t *m, lu_count_t *total,
                                 uint64_t *events_in);
LU_EXTERN unsigned lu_manager_shard_count(const lu_manager_t *m);
/** The worker threads running m's shards (lu_config_t.threads, or the
 *  default it chose).  Thread safe. */
LU_EXTERN unsigned lu_manager_threads(const lu_manager_t *m);
LU_EXTERN void lu_manager_shard_stats(const lu_manager_t *m, unsigned i,
                                      lu_shard_stats_t *out);
/** Function i in registry order (i < lu_registry_count()). */
LU_EXTERN void lu_manager_fn_stats(const lu_manager_t *m, size_t i,
                                   lu_fn_stats_t *out);

/** Batches the store could not write even after retries (their outcomes
 *  were still reported, with stored_json describing the lost record).  A
 *  run with store errors lost data: treat any non-zero value as failure. */
LU_EXTERN uint64_t lu_manager_store_errors(const lu_manager_t *m);

/** The store the manager writes to (borrowed until lu_manager_free).
 *
 *  A store serves one caller at a time (store.h), and that caller is the
 *  manager's writer whenever outcomes are on their way to it.  So query
 *  this store only while the manager is quiet: after lu_manager_drain()
 *  returned and before the next submit from any thread; never from
 *  on_outcome or while a submit or drain runs elsewhere.  To read while
 *  events are running, open the same file a second time with
 *  lu_store_open_readonly(): SQLite in WAL mode lets it read beside the
 *  writer, and it sees every batch committed so far (an ":memory:" store
 *  cannot be opened twice). */
LU_EXTERN lu_store_t *lu_manager_store(lu_manager_t *m);

/* ======================================================================
 * Crashes: which function and which event killed the process.
 * ==================================================================== */

/** Installs a handler for the fatal signals (SIGSEGV, SIGBUS, SIGILL,
 *  SIGFPE, SIGABRT) that writes one line to stderr naming the function
 *  that was running on the crashing thread, its event (id, source, line)
 *  and shard, and, when marker_path is not NULL, the same as JSON into
 *  that file; then the process dies of the signal as it would have.  The
 *  handler uses only async-signal-safe calls.  Call it once, early (a
 *  second call changes the marker path).  For the command and programs
 *  that own their process: a library embedding lucent may prefer its own
 *  handler.  0, or LU_EINVAL (path too long, sigaction failed). */
LU_EXTERN int lu_crash_report_install(const char *marker_path);

/** What a crash marker says. */
typedef struct lu_crash_s {
  int signal;
  char function[128];
  char event_id[256];
  char source[256];
  char shard[64];
  uint64_t line;      /**< the event's input line, or 0 */
} lu_crash_t;

/** Reads a marker written by the handler of lu_crash_report_install.
 *  0, LU_ENOENT (no marker: no crash), LU_EPARSE, LU_EIO.  The caller
 *  gives that event lu_input_t.delivery 2 when it submits it again: it
 *  runs isolated, and if it crashes again it is dead-lettered instead. */
LU_EXTERN int lu_crash_marker_read(const char *path, lu_crash_t *out);

#ifdef __cplusplus
}
#endif

/* The umbrella: structured logs and observability (both use the
 * declarations above).  The HTTP server (lucent/http.h), a shard on NATS
 * (lucent/nats.h) and the transport interface (lucent/bus.h) are
 * included on their own: they come with their own library or are for
 * transports. */
#include "log.h"
#include "obs.h"

#endif /* LUCENT_LUCENT_H */
