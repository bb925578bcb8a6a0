/*
 * lucent/nats.h - run a shard of a distributed lucent in your own process
 * (liblucent-nats): the same shard `lucent serve` runs, on a NATS server
 * or cluster with JetStream.
 *
 * Three objects, each on the one before it:
 *
 *   lu_nats_t         a connection to NATS (several URLs, credentials,
 *                     TLS; reconnects for ever once connected);
 *   lu_store_t        the event store on JetStream (stream LUCENT_EVENTS),
 *                     opened with lu_nats_store_open(): give it to a
 *                     manager (lu_config_t.store_handle), or read it with
 *                     lu_store_query() like any store (lucent/store.h);
 *   lu_nats_serve_t   a manager of one shard served on NATS: it joins the
 *                     shard view, pulls its intake partitions and forward
 *                     queue, forwards events to the shards that own them
 *                     and answers `lucent exec` requests.
 *
 * A shard, in outline (examples/serve_nats.c is the whole program, and
 * checks every call):
 *
 *   lu_nats_opts_t no;
 *   lu_nats_opts_init(&no);                  // first: the defaults
 *   no.urls = "nats://127.0.0.1:4222";
 *   lu_nats_t *nats;
 *   lu_nats_connect(&nats, &no, err, sizeof err);
 *
 *   lu_nats_store_opts_t so;
 *   lu_nats_store_opts_init(&so);
 *   lu_store_t *store;
 *   lu_nats_store_open(&store, nats, &so, err, sizeof err);
 *
 *   const char *ids[] = {"a"};               // unique in the cluster
 *   lu_config_t cfg;
 *   lu_config_init(&cfg);
 *   cfg.shards = 1, cfg.shard_ids = ids;
 *   cfg.store_handle = store;                // the manager's from here on
 *   cfg.store_retry_ms = LU_NATS_STORE_RETRY_MS;
 *   cfg.max_record_bytes = lu_nats_max_record_bytes(nats);
 *   lu_manager_t *m;
 *   lu_manager_new(&m, &cfg, reg, err, sizeof err);
 *
 *   lu_nats_serve_t *srv;
 *   lu_nats_serve_start(&srv, nats, m, NULL, err, sizeof err);
 *   ...                                      // until you want to stop
 *   lu_nats_serve_stop(srv, 5000);           // leave, finish, acknowledge
 *   lu_nats_serve_free(srv);
 *   lu_manager_free(m);                      // closes the store
 *   lu_nats_close(nats);
 *
 * Events reach the shard from any publisher that follows docs/protocol.md
 * (`lucent publish`, examples/clients/js); outcomes are read back with
 * `lucent events --nats URL` or lu_store_query() on a store opened with
 * read_only.  What lucent creates on the server, and what each delivery
 * mode guarantees, is in the README ("Run distributed").
 *
 * Options structs grow as lu_config_t does (lucent.h, above it): call
 * the struct's _init() macro before setting any field, never write
 * struct_size yourself; a program built against older headers keeps
 * working with a newer liblucent-nats.so.0 (the fields it does not know
 * take their defaults), and a struct from headers newer than the library
 * is refused with LU_EINVAL and a message.  Strings in options are
 * borrowed for the call unless a field says otherwise.
 *
 * Ownership: a store and a serve borrow their connection, a serve its
 * manager, and a manager owns the store it was given: free them in the
 * reverse order (serve, manager, connection).
 *
 * Threads: any call may run on any thread.  The calls on one serve are
 * thread safe with each other, except that its stop and its free run
 * once, on one thread.  The manager's on_outcome runs on the NATS
 * client's threads (lu_config_t.on_outcome says what it must not do).
 *
 * Errors: calls return 0 or a negative LU_E* code and, where they take
 * err/errlen, a sentence in err (err may be NULL).  Link with
 * `pkg-config --libs lucent-nats`, or CMake's lucent::nats.
 */
#ifndef LUCENT_NATS_H
#define LUCENT_NATS_H

#include <stddef.h>
#include <stdint.h>

#include "bus.h"    /* the view: lu_manager_view(), lu_manager_in_view() */
#include "lucent.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The most copies JetStream keeps of a stream (replicas, below). */
#define LU_NATS_MAX_REPLICAS 5
/** Intake partitions of a stream LUCENT_INTAKE created without a count,
 *  and the most it may have (lu_nats_serve_opts_t.partitions). */
#define LU_NATS_PARTITIONS_DEFAULT 16
#define LU_NATS_PARTITIONS_MAX 1024
/** How long lucent's clients ride through a JetStream leader election or
 *  a reconnect by default, ms (lu_nats_store_opts_t.retry_ms). */
#define LU_NATS_RETRY_MS 20000u
/** What `lucent serve` gives lu_config_t.store_retry_ms and
 *  lu_nats_store_opts_t.retry_ms, ms: a shard rides out a store outage
 *  (an election takes ~5 s) rather than hand back everything it holds. */
#define LU_NATS_STORE_RETRY_MS 60000u

/* ======================================================================
 * The connection.
 * ==================================================================== */

typedef struct lu_nats_s lu_nats_t;

/** How to connect.  Fill it with lu_nats_opts_init() first. */
typedef struct lu_nats_opts_s {
  size_t struct_size;    /**< set by lu_nats_opts_init() */
  const char *urls;      /**< one or more, comma-separated
                              ("nats://h1:4222,nats://h2:4222"; tls://
                              turns TLS on); required */
  const char *user, *password; /**< user/password auth, or NULL */
  const char *token;     /**< token auth, or NULL */
  const char *creds;     /**< a credentials file (JWT + NKey seed), or
                              NULL; replaces user/password and token */
  const char *tls_ca;    /**< CA file that verifies the server: turns TLS
                              on; NULL = the system's CAs when TLS is on */
  const char *tls_cert, *tls_key; /**< client certificate and its key
                              (mutual TLS), or NULL */
  const char *name;      /**< the connection's name on the server;
                              NULL = "lucent" */
  int max_reconnect;     /**< attempts after a lost connection before it
                              is closed for good; 0 = for ever */
  uint32_t reconnect_wait_ms;  /**< first delay between attempts,
                              doubled up to 4 s, with jitter; 0 = 250 */
  uint32_t connect_timeout_ms; /**< each server's connect; 0 = 2000 */
  int bulk;              /**< 1: throughput over latency: what is
                              published waits in the client's buffer
                              instead of going out at once (~1.4x the
                              appends per second).  Only for a connection
                              that just appends to an event store;
                              lu_nats_serve_start() refuses it (every
                              forward and reply would wait).  0 (the
                              default) for everything else */
} lu_nats_opts_t;

/** Fills o with the defaults and records the size of the lu_nats_opts_t
 *  this program was compiled with.  (A macro, as lu_config_init().) */
#define lu_nats_opts_init(o) \
  lu_nats_opts_init_sized((o), sizeof(lu_nats_opts_t))
/** lu_nats_opts_init() with the size of the caller's struct.  0, or
 *  LU_EINVAL when lu_nats_connect() will refuse that size. */
LU_EXTERN int lu_nats_opts_init_sized(lu_nats_opts_t *o, size_t size);

/** Connects.  The first connect is not retried: a wrong URL or bad
 *  credentials fail at once, with the reason.  Once connected, a lost
 *  connection is retried (o->max_reconnect) with backoff and jitter, and
 *  what is published meanwhile waits in a buffer; each loss and return
 *  is logged (lucent/log.h).  Messages never show passwords.
 *
 *  Errors (*out is NULL): LU_EINVAL (out or o NULL, o not initialised or
 *  from newer headers, no URL, a bad URL, an unreadable file,
 *  contradictory options: err says which), LU_EIO (no server answered:
 *  "cannot connect to nats://127.0.0.1:1: no server available
 *  (connection refused)"), LU_EPROTO (the server refused the credentials
 *  or the TLS handshake), LU_ENOMEM.  Thread safe. */
LU_EXTERN int lu_nats_connect(lu_nats_t **out, const lu_nats_opts_t *o,
                              char *err, size_t errlen);

/** Closes the connection and frees it; NULL is a no-op.  Free every
 *  serve started on it and close every store opened on it (a manager
 *  closes its own) first. */
LU_EXTERN void lu_nats_close(lu_nats_t *nats);

/** 1 while the connection is up, 0 while it is reconnecting or closed:
 *  a readiness check (lu_obs_source_t.check_bus).  Thread safe. */
LU_EXTERN int lu_nats_connected(const lu_nats_t *nats);

/** The largest record the server takes: its maximum payload, less room
 *  for headers.  Give it to lu_config_t.max_record_bytes, so that an
 *  outcome too large to store ends as <Fn>Failed saying so instead of a
 *  batch the store refuses for ever.  0 for NULL.  Thread safe. */
LU_EXTERN size_t lu_nats_max_record_bytes(const lu_nats_t *nats);

/* ======================================================================
 * The event store on JetStream.
 * ==================================================================== */

/** How to open it.  Fill it with lu_nats_store_opts_init() first. */
typedef struct lu_nats_store_opts_s {
  size_t struct_size;     /**< set by lu_nats_store_opts_init() */
  int read_only;          /**< 1: open an existing store only; never
                               create or change the stream, never append
                               (to read it).  0 (the default): create
                               LUCENT_EVENTS when it is missing */
  unsigned replicas;      /**< copies of the stream on a cluster: 0 (the
                               default) = 1 when created, an existing
                               stream keeps its own; 1..5: created with
                               that many, an existing one changed to it
                               (a warning is logged) or the open fails */
  uint32_t dup_window_ms; /**< JetStream's duplicate window; 0 = 2 min.
                               Widened on an existing stream, never
                               narrowed.  (A record stored before is
                               refused however long ago it was stored:
                               this window only sizes the server's own
                               table.) */
  uint32_t retry_ms;      /**< how long a call rides through a leader
                               election or a reconnect before it fails;
                               LU_NATS_RETRY_MS by default, 0 = fail at
                               once.  A shard wants LU_NATS_STORE_RETRY_MS,
                               as lu_config_t.store_retry_ms */
  unsigned pack;          /**< at most this many consecutive records of
                               one type per JetStream message, for the
                               records pack_every says; default 256.  0 or
                               1: one message per record */
  int pack_every;         /**< 0 (the default): pack only records that are
                               never delivered again (LU_RECORD_ONCE: the
                               results of exec requests).  1: every
                               record.  A pack is deduplicated as a
                               whole, so 1 only where no input comes
                               back: a serve with LU_NATS_AT_MOST_ONCE */
  const char *who;        /**< named in the store's log records (a shard
                               id), or NULL; copied */
} lu_nats_store_opts_t;

#define lu_nats_store_opts_init(o) \
  lu_nats_store_opts_init_sized((o), sizeof(lu_nats_store_opts_t))
/** lu_nats_store_opts_init() with the size of the caller's struct. */
LU_EXTERN int lu_nats_store_opts_init_sized(lu_nats_store_opts_t *o,
                                            size_t size);

/** Opens the event store on JetStream (stream LUCENT_EVENTS, subjects
 *  lucent.events.>).  o NULL = the defaults.  The store borrows nats,
 *  which must outlive it; it is a lu_store_t like any other (lucent/
 *  store.h, backend "jetstream"): give it to a manager, which then owns
 *  and closes it, or close it with lu_store_close().  Appends are
 *  idempotent: each record id is stored once, however late it comes
 *  again.  Queries stop at the last event present when they start.
 *
 *  Errors (*out is NULL): LU_EINVAL (out or nats NULL, o not initialised,
 *  replicas above 5, or a replica count the server cannot give: more
 *  than 1 on a single server, more than the cluster's nodes), LU_ENOENT
 *  (read_only and there is no store: "no lucent event store on this
 *  server (stream LUCENT_EVENTS not found)"), LU_ESTORE (no JetStream
 *  on the server, a stream of that name that is not lucent's, the
 *  server did not answer within retry_ms), LU_ENOMEM.  Thread safe. */
LU_EXTERN int lu_nats_store_open(lu_store_t **out, lu_nats_t *nats,
                                 const lu_nats_store_opts_t *o, char *err,
                                 size_t errlen);

/* ======================================================================
 * Serving a shard.
 * ==================================================================== */

/** How inputs travel (README, "Delivery"). */
typedef enum lu_nats_delivery_e {
  /** Through JetStream: an input is acknowledged once its outcome is
   *  stored; one whose shard dies runs again elsewhere (the default). */
  LU_NATS_AT_LEAST_ONCE = 0,
  /** Over core NATS only: faster; a shard that dies loses what it held.
   *  Every shard and publisher of a deployment uses the same mode. */
  LU_NATS_AT_MOST_ONCE = 1
} lu_nats_delivery_t;

/** How to serve.  Fill it with lu_nats_serve_opts_init() first; every
 *  default is `lucent serve`'s. */
typedef struct lu_nats_serve_opts_s {
  size_t struct_size;          /**< set by lu_nats_serve_opts_init() */
  lu_nats_delivery_t delivery; /**< LU_NATS_AT_LEAST_ONCE by default */
  const char *static_view;     /**< "a,b,c": a fixed view of the shards;
                                    NULL (the default): heartbeats decide */
  uint32_t heartbeat_ms;       /**< heartbeat interval; a shard silent
                                    for 6 of them leaves the view;
                                    0 = 250 */
  uint32_t ack_wait_ms;        /**< JetStream's redelivery delay: what a
                                    dead shard held runs again after it;
                                    0 = 10000 */
  int durable_forward;         /**< at-least-once: 1 = every forward to
                                    another shard goes through LUCENT_FWD;
                                    0 (the default) = an intake event's
                                    forward goes over core NATS and its
                                    intake message is acknowledged when
                                    the owner confirms it stored the
                                    outcome */
  unsigned replicas;           /**< copies of LUCENT_INTAKE, LUCENT_FWD,
                                    lucent_sessions and the routes table:
                                    as lu_nats_store_opts_t.replicas */
  unsigned partitions;         /**< intake partitions of a LUCENT_INTAKE
                                    this creates, 1..1024; 0 = the
                                    stream's own, or
                                    LU_NATS_PARTITIONS_DEFAULT when
                                    created.  A stream with another count
                                    makes the start fail */
  int exec_reply_executed;     /**< when an exec request is answered:
                                    0 (the default) once its outcome is
                                    stored; 1 once the function returned
                                    (the outcome is stored after the
                                    reply, and a crash in between loses
                                    it).  A request's Lucent-Exec-Reply
                                    header overrides it */
} lu_nats_serve_opts_t;

#define lu_nats_serve_opts_init(o) \
  lu_nats_serve_opts_init_sized((o), sizeof(lu_nats_serve_opts_t))
/** lu_nats_serve_opts_init() with the size of the caller's struct. */
LU_EXTERN int lu_nats_serve_opts_init_sized(lu_nats_serve_opts_t *o,
                                            size_t size);

typedef struct lu_nats_serve_s lu_nats_serve_t;

/** Serves manager m's shard on NATS: creates what lucent needs on the
 *  server when it is missing (the intake and forward streams and their
 *  consumers, the sessions bucket), writes the registry's routes into
 *  the routes table for publishers, installs itself as m's bus
 *  (lucent/bus.h), joins the view and starts pulling.  o NULL = the
 *  defaults.
 *
 *  m runs exactly one shard (lu_config_t.shards = 1) whose id
 *  (lu_config_t.shard_ids) is unique in the deployment: that id is the
 *  shard's name on NATS.  A process serving several shards makes one
 *  manager per shard and serves each on the same connection, as
 *  `lucent serve --shard a,b,c` does.  Start before submitting anything
 *  to m.  nats and m are borrowed: free the serve before freeing m, and
 *  m before closing nats.
 *
 *  Errors (*out is NULL; m is then fit only to be served again or
 *  freed), with the reason in err: LU_EINVAL (out, nats or m NULL; o not
 *  initialised; m with more than one shard; an unknown delivery;
 *  replicas above 5, or more than the server can give existing streams;
 *  partitions above 1024 or unlike the stream's; a bulk connection),
 *  LU_EIO (a stream or consumer could not be created - no JetStream on
 *  the server, such a replica count for a new stream - or the server
 *  failed a request), LU_ESTORE, LU_ENOMEM.  Thread safe for different
 *  managers. */
LU_EXTERN int lu_nats_serve_start(lu_nats_serve_t **out, lu_nats_t *nats,
                                  lu_manager_t *m,
                                  const lu_nats_serve_opts_t *o, char *err,
                                  size_t errlen);

/** Stops serving: stops taking new work, finishes what the shard holds
 *  (outcomes stored, inputs acknowledged, forwards confirmed) and leaves
 *  the view (the other shards take its partitions over).  m still has
 *  this serve as its bus: give it no more events, read its counters and
 *  free it.  Waits up to timeout_ms for acknowledgements and forwards in
 *  flight; with the server gone it may wait longer (for outcomes that
 *  cannot be stored): a program that must exit in time bounds it itself,
 *  as `lucent serve --stop-timeout-ms` does.  What it did not acknowledge
 *  comes back to the other shards after ack_wait_ms (at-least-once).  A
 *  second call, or NULL, is a no-op.  The counters stay readable until
 *  lu_nats_serve_free().  Not with another stop or free of s. */
LU_EXTERN void lu_nats_serve_stop(lu_nats_serve_t *s, uint32_t timeout_ms);

/** Stops s if it still serves (lu_nats_serve_stop() with 5000 ms) and
 *  frees it; NULL is a no-op. */
LU_EXTERN void lu_nats_serve_free(lu_nats_serve_t *s);

/** A serve's counters since it started. */
typedef struct lu_nats_serve_stats_s {
  uint64_t pulled;             /**< messages pulled from JetStream */
  uint64_t forwarded;          /**< events forwarded to another shard */
  uint64_t forward_errors;     /**< forwards that failed (sent again) */
  uint64_t exec_requests;      /**< exec requests taken */
  uint64_t exec_forwarded;     /**< exec requests passed to their owner */
  uint64_t dropped;            /**< at-most-once: messages the client
                                    dropped (a slow consumer) */
  uint64_t forwards_confirmed; /**< core forwards confirmed by their owner */
  uint64_t forward_fallbacks;  /**< core forwards that went through
                                    LUCENT_FWD instead */
  uint64_t forwards_jetstream; /**< through LUCENT_FWD (fallbacks too) */
  uint64_t forwards_at_most_once; /**< over core NATS, at-most-once */
  unsigned claimed;            /**< consumers (partitions and forward
                                    queues) the shard pulls now */
} lu_nats_serve_stats_t;

/** Fills *out with s's counters: live while it serves, the final ones
 *  after lu_nats_serve_stop().  (A macro, so that a program built against
 *  older headers gets the counters its struct holds.)  0, or LU_EINVAL
 *  (s or out NULL).  Thread safe, also during a stop (which it does not
 *  wait for: it then gives the counters as the stop began). */
#define lu_nats_serve_stats(s, out) \
  lu_nats_serve_stats_sized((s), (out), sizeof *(out))
LU_EXTERN int lu_nats_serve_stats_sized(const lu_nats_serve_t *s,
                                        lu_nats_serve_stats_t *out,
                                        size_t size);

/** The serve's metrics, for lu_obs_source_t.metrics (lucent/obs.h):
 *  lucent_bus_forwards_total by path (core, jetstream, at_most_once) and
 *  lucent_bus_forward_fallbacks_total.  Fills up to cap samples (their
 *  strings are static) and returns how many there are; 0 once stopped.
 *  Thread safe. */
LU_EXTERN size_t lu_nats_serve_metrics(const lu_nats_serve_t *s,
                                       lu_metric_t *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* LUCENT_NATS_H */
