/*
 * nats_internal.h - lucent on NATS: connection options, the JetStream
 * event store, the sticky-session KV table, and the names of everything
 * lucent creates on a NATS server (one table, also in the README).
 *
 *   name                       kind                    what for
 *   -------------------------  ----------------------  ----------------------------
 *   LUCENT_INTAKE              stream lucent.intake.0  durable intake, P partitions
 *                              .. lucent.intake.<P-1>  by routing key or subject
 *                                                      (intake_layout.c); one
 *                                                      event or a pack of them
 *                                                      per message (intake_pack.c)
 *   intake-<p>                 durable pull consumer   one per partition, pulled by
 *                                                      the partition's owner shard
 *   LUCENT_FWD                 stream lucent.fwd.>     forwarded events:
 *                                                      lucent.fwd.<shard>
 *   fwd-<shard>                durable pull consumer   pulled by <shard>, or by its
 *                                                      taker while it is gone
 *   LUCENT_EVENTS              stream lucent.events.>  the event store:
 *                                                      lucent.events.<type>.<h>,
 *                                                      h = hash of the id, one
 *                                                      message per subject
 *   lucent_sessions            KV bucket               sticky-session bindings
 *   lucent_routes              KV bucket, key routes   event type -> strategy and
 *                                                      key path, for publishers
 *   lucent.hb.<shard>          core subject            heartbeats (load report)
 *   lucent.exec                core, queue lucent-exec request/reply intake
 *   lucent.exec.<shard>        core subject            exec forwarded to the owner
 *   lucent.amo.intake          core, queue lucent-amo  at-most-once intake
 *   lucent.amo.fwd.<shard>     core subject            at-most-once forwarding
 *   lucent.cfwd.<shard>        core request/reply      at-least-once forwards,
 *                                                      confirmed once stored
 *                                                      (fwd_core.c)
 *
 * The streams and the bucket are configured and created in one place,
 * assets.c, with the replica count of --replicas (assets.h).
 *
 * Only modules that talk to NATS include this header (it pulls nats.h).
 */
#ifndef LUCENT_NATS_INTERNAL_H
#define LUCENT_NATS_INTERNAL_H

#include <nats/nats.h>

#include "lucent/bus.h"
#include "lucent/lucent.h"
#include "lucent/nats.h"
#include "util.h"
#include "assets.h"

#define LU_STREAM_INTAKE "LUCENT_INTAKE"
#define LU_STREAM_FWD "LUCENT_FWD"
#define LU_STREAM_EVENTS "LUCENT_EVENTS"
#define LU_KV_SESSIONS "lucent_sessions"
#define LU_SUBJ_INTAKE "lucent.intake"     /* + ".<partition>" */
#define LU_SUBJ_FWD "lucent.fwd"           /* + ".<shard>" */
#define LU_SUBJ_EVENTS "lucent.events"     /* + ".<type>" */
#define LU_SUBJ_HB "lucent.hb"             /* + ".<shard>" */
#define LU_SUBJ_EXEC "lucent.exec"         /* and + ".<shard>" */
#define LU_SUBJ_AMO_INTAKE "lucent.amo.intake"
#define LU_SUBJ_AMO_FWD "lucent.amo.fwd"   /* + ".<shard>" */
#define LU_SUBJ_CFWD "lucent.cfwd"       /* + ".<shard>" */
#define LU_SUBJ_HELD "lucent.held"       /* + ".<shard>" (puller.c) */

/* ---- nats_conn.c ------------------------------------------------------ */

/* Connection options: lu_nats_opts_t, the public struct (lucent/nats.h).
 * lucent's own callers fill it by name without lu_nats_opts_init();
 * lu__nats_connect never reads struct_size (nats_api.c checks it for
 * the public lu_nats_connect). */

/** Connects with SendAsap on (docs/nats-notes.md, trap 1: without it every hop
 *  waits ~1 ms for the library's flush), reconnect with backoff and
 *  jitter, and a connection-lost / reconnected record (the logger).  The
 *  first connect is not retried: a wrong URL or bad credentials fail at
 *  once.  TLS is on with tls_ca, tls_cert or a tls:// URL; the server
 *  certificate is checked against each URL's own host name.  Messages
 *  never show passwords.  Returns 0, or LU_EIO (server unreachable: err
 *  says which URLs and why, "... no server available (connection
 *  refused)"), LU_EPROTO (authorization or TLS refused: err says so),
 *  LU_EINVAL (bad URL, unreadable file, contradictory options: err says
 *  which), LU_ENOMEM.  *nc is NULL on failure. */
int lu__nats_connect(natsConnection **nc, const lu_nats_opts_t *o, char *err,
                     size_t errlen);

/** "nats: <status text>: <last error>" into buf, for messages (the last
 *  error is nats.c's, of this thread). */
void lu__nats_reason(natsStatus s, char *buf, size_t cap);

/** Destroys a received message, later: messages are handed back to nats.c
 *  in groups of 64, because each natsMsg_Destroy may wake nats.c's
 *  garbage-collector thread.  Takes ownership (NULL is ignored).  Thread
 *  safe.  Call lu__nats_msg_release_all before nats_Close. */
void lu__nats_msg_release(natsMsg *m);
/** Destroys every message still held by lu__nats_msg_release.  Thread
 *  safe. */
void lu__nats_msg_release_all(void);

/** Subscribes cb(closure) to subj (in queue group `queue`, or NULL) with
 *  room for 4,000,000 pending messages (docs/nats-notes.md, trap 5: the default
 *  drops past 65,536).  Returns nats.c's status; *sub NULL on failure. */
natsStatus lu__nats_subscribe(natsConnection *nc, natsSubscription **sub,
                              const char *subj, const char *queue,
                              natsMsgHandler cb, void *closure);
/** Creates stream cfg->Name, or finds the one another process is creating
 *  at the same moment: when js_AddStream fails with "name in use" or
 *  "subjects overlap" (the server says either while another shard creates
 *  the same stream), the stream is read again a moment later, up to 5
 *  times.  Returns NATS_OK and the stream's info in *si (the caller
 *  destroys it; si may be NULL), or js_AddStream's failure with *jerr:
 *  also for a foreign stream on the same subjects. */
natsStatus lu__nats_create_stream(jsCtx *js, jsStreamConfig *cfg,
                                  jsStreamInfo **si, jsErrCode *jerr);

/** Drains *sub (up to 2 s), destroys it and sets it NULL; NULL is a no-op.
 *  Drain, not Unsubscribe: once it returns no callback runs on what the
 *  closure points to, so the caller may free it. */
void lu__nats_unsubscribe(natsSubscription **sub);

/** A pack: one message holding several events as JSON Lines, and this
 *  header saying how many (stored results, store_jetstream.c note 7;
 *  intake packs, intake_pack.c). */
#define LU_HDR_COUNT "Lucent-Count"

/** An input's delivery count when it travels on after a redelivery (a
 *  forward of a suspect input: it runs isolated where it lands), with an
 *  "r" after it when the input may have run before (lu_input_t.replayed):
 *  "3", "1r". */
#define LU_HDR_DELIVERY "Lucent-Delivery"

/** LU_HDR_DELIVERY's value for a forward, or "" when it needs none (a
 *  first delivery, not replayed). */
void lu__delivery_hdr(char out[24], unsigned delivery, unsigned replayed);

/** Reads LU_HDR_DELIVERY back: *delivery (1 without one) and whether it
 *  says replayed. */
void lu__delivery_hdr_read(natsMsg *m, unsigned *delivery,
                           unsigned *replayed);

/** Which attempt of a `lucent exec` request a message is, when it is not
 *  the first (cmd_exec.c): the shard then runs it as an ordinary event,
 *  stored one record per message, deduplicated by id. */
#define LU_HDR_ATTEMPT "Lucent-Attempt"

/** An exec request's choice of reply (docs/protocol.md): "stored" (the
 *  reply means the outcome is stored) or "executed" (the function has
 *  returned; the outcome is stored after). */
#define LU_HDR_EXEC_REPLY "Lucent-Exec-Reply"

/** How many events a message holds: its Lucent-Count, else 1 (also for a
 *  bad count: it is then read as one event). */
size_t lu__nats_msg_events(natsMsg *m);

/** A JetStream pull consumer read by hand: pull requests to its
 *  $JS.API.CONSUMER.MSG.NEXT subject, answered on an inbox of our own (a
 *  synchronous subscription on <inbox>.*), read with
 *  natsSubscription_NextMsg.  Not nats.c's Fetch: 3.4.1's writes past
 *  its array when leftovers of an earlier request come back (puller.c).
 *  Messages are acked, if at all, by the reader (their reply subject). */
typedef struct lu_pull_s {
  natsConnection *nc;
  natsSubscription *sub;
  char inbox[96];
  char next[192];
  uint64_t k; /* requests sent */
} lu_pull_t;

/** Opens p on a consumer of a stream (both must exist).  NATS_OK, or the
 *  error, with nothing held. */
natsStatus lu__nats_pull_open(lu_pull_t *p, natsConnection *nc,
                              const char *stream, const char *consumer);
/** Asks for up to `batch` messages, the request open on the server for
 *  expires_ms (0: no_wait, only what is there now).  It is answered on
 *  <inbox>.<k>, written to reply (cap bytes) when reply is not NULL: a
 *  status (lu__nats_pull_status) with that subject ends this request. */
natsStatus lu__nats_pull_request(lu_pull_t *p, int batch, int expires_ms,
                                 char *reply, size_t cap);
/** Unsubscribes and frees the inbox subscription (the consumer stays);
 *  messages not read are dropped, unacked.  p may be closed twice. */
void lu__nats_pull_close(lu_pull_t *p);

/** The status of a message that a JetStream consumer sent about a pull
 *  request rather than from its stream ("404": nothing now, "408": the
 *  request expired, "409": refused, "100": idle heartbeat), or NULL for a
 *  message of the stream. */
const char *lu__nats_pull_status(natsMsg *m);

/** Walks a pack's data d (len bytes, the events' JSON one per line): the
 *  event at offset *at, its length in *ll; *at moves past it.  NULL when
 *  none is left. */
static inline const char *lu__pack_next(const char *d, size_t len,
                                        size_t *at, size_t *ll) {
  if (!d || *at >= len) return NULL;
  const char *p = d + *at;
  const char *nl = memchr(p, '\n', len - *at);
  *ll = nl ? (size_t)(nl - p) : len - *at;
  *at += *ll + 1;
  return p;
}

/* ---- store_jetstream.c ------------------------------------------------ */

/** Opens the event store on JetStream: stream LUCENT_EVENTS (file
 *  storage, duplicate window `dup_window_ms`, 0 = 2 min, widened on an
 *  existing stream, never narrowed) on an existing connection (borrowed;
 *  must outlive the store).  create = 0 opens read-only and never creates
 *  the stream: LU_ENOENT and "no lucent event store on this server (stream
 *  LUCENT_EVENTS not found)" when it is missing.  Appends publish
 *  asynchronously to lucent.events.<type>.<hash of id>, each subject
 *  taking one message, and wait for every ack, at most 5 s (group commit);
 *  a record stored before, however long ago, is refused and counted as a
 *  duplicate; a failed batch (LU_ESTORE) may be partly stored, so the caller
 *  retries all of it.  Queries read the stream with an ephemeral pull
 *  consumer and stop at the last event present when they started.
 *  Errors: LU_ESTORE with the reason in err (no JetStream on the server,
 *  a stream of that name that is not lucent's, ...). */
int lu__store_jetstream_open(lu_store_t **out, natsConnection *nc,
                             int create, uint32_t dup_window_ms, char *err,
                             size_t errlen);

/** lu__store_jetstream_open with every option.  The stream is made and
 *  found by assets.c: `assets.replicas` (0 = 1 when created, an existing
 *  stream keeps its own; N: changed to N, with a warning, or refused) and
 *  `assets.retry_ms`, which is also how long a query rides through a
 *  leader election (retry.h) before it fails.  lu__store_jetstream_open
 *  is this with replicas 0 and retry_ms LU_RETRY_DEFAULT_MS.  Strings in
 *  o are copied.  Errors as above, and LU_EINVAL for a replica count the
 *  server cannot give (err says why and what to do). */
typedef struct lu_js_store_opts_s {
  int create;              /**< 0 = read-only, never creates */
  uint32_t dup_window_ms;  /**< 0 = 2 min */
  lu_assets_opts_t assets;
} lu_js_store_opts_t;
int lu__store_jetstream_open_with(lu_store_t **out, natsConnection *nc,
                                  const lu_js_store_opts_t *o, char *err,
                                  size_t errlen);

/** Packs up to max_records consecutive records of one type per message
 *  from the next append on (0 or 1: one message per event, the default):
 *  every record when all is 1, else only records flagged
 *  LU_RECORD_ONCE.  A pack is deduplicated as a whole, so pack every
 *  record only where nothing is redelivered (at-most-once delivery):
 *  store_jetstream.c note 7.  Queries and counts read packs and single
 *  events alike.  No-op on a store that is not a JetStream store.  Same
 *  thread rules as append. */
void lu__store_jetstream_set_pack(lu_store_t *st, size_t max_records,
                                  int all);


/* ---- session_kv.c ----------------------------------------------------- */

/** Sticky-session bindings shared by every shard process (docs/architecture.md,
 *  decision 7): KV bucket lucent_sessions, TTL per bucket (the longest
 *  sticky TTL of the registry; 0 = never expire; a bucket that exists
 *  keeps its own TTL).  First binder wins (kvStore_Create); a binding to a
 *  shard that is not alive, or older than the TTL, is replaced with a CAS
 *  update.  Keeps a local cache so a hot session costs no round trip, and
 *  refreshes a binding in the KV at most every ttl/4 while it is in use;
 *  a takeover by another process is seen at that refresh, or as soon as
 *  alive() says the cached shard is gone.  Thread safe; alive() is called
 *  without any lock held.  Open errors: LU_EIO (no JetStream, server
 *  unreachable; err says so). */
typedef struct lu_kvsess_s lu_kvsess_t;
int lu__kvsess_open(lu_kvsess_t **out, natsConnection *nc, uint32_t ttl_ms,
                    char *err, size_t errlen);
/** lu__kvsess_open with the bucket made and found by assets.c (replicas,
 *  ride-through; ao NULL = the defaults: replicas 0, no retry). */
int lu__kvsess_open_with(lu_kvsess_t **out, natsConnection *nc,
                         uint32_t ttl_ms, const lu_assets_opts_t *ao,
                         char *err, size_t errlen);
/** The shard id bound to key (klen bytes, any bytes) written to out (cap
 *  bytes), binding it to `candidate` when unbound or when alive(ud, bound)
 *  says the bound shard is gone (alive NULL = all alive).  Returns 0, or
 *  LU_EIO when the KV cannot be reached (out then holds candidate: the
 *  caller uses it and nothing is cached), LU_E2BIG (out too small),
 *  LU_EINVAL (no or empty candidate, shard ids over 127 bytes). */
int lu__kvsess_bind(lu_kvsess_t *s, const char *key, size_t klen,
                    const char *candidate,
                    int (*alive)(void *ud, const char *shard), void *ud,
                    char *out, size_t cap);
/** The current binding without changing anything: 0, LU_ENOENT (none, or
 *  expired), or LU_EIO. */
int lu__kvsess_lookup(lu_kvsess_t *s, const char *key, size_t klen, char *out,
                      size_t cap);
void lu__kvsess_close(lu_kvsess_t *s);

#endif /* LUCENT_NATS_INTERNAL_H */
