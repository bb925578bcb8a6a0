/*
 * nats_internal.h - lucent on NATS: connection options, the JetStream
 * event store, the sticky-session KV table, and the names of everything
 * lucent creates on a NATS server (one table, also in the README).
 *
 *   name                       kind                    what for
 *   -------------------------  ----------------------  ----------------------------
 *   LUCENT_INTAKE              stream lucent.intake.>  durable intake, partitioned
 *                                                      by the event's subject:
 *                                                      lucent.intake.<p>
 *   intake-<p>                 durable pull consumer   one per partition, pulled by
 *                                                      the partition's owner shard
 *   LUCENT_FWD                 stream lucent.fwd.>     forwarded events:
 *                                                      lucent.fwd.<shard>
 *   fwd-<shard>                durable pull consumer   pulled by <shard>, or by its
 *                                                      taker while it is gone
 *   LUCENT_EVENTS              stream lucent.events.>  the event store:
 *                                                      lucent.events.<type>,
 *                                                      Nats-Msg-Id = event id
 *   lucent_sessions            KV bucket               sticky-session bindings
 *   lucent.hb.<shard>          core subject            heartbeats (load report)
 *   lucent.exec                core, queue lucent-exec request/reply intake
 *   lucent.exec.<shard>        core subject            exec forwarded to the owner
 *   lucent.amo.intake          core, queue lucent-amo  at-most-once intake
 *   lucent.amo.fwd.<shard>     core subject            at-most-once forwarding
 *
 * Only modules that talk to NATS include this header (it pulls nats.h).
 */
#ifndef LUCENT_NATS_INTERNAL_H
#define LUCENT_NATS_INTERNAL_H

#include <nats/nats.h>

#include "internal.h"

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
#define LU_INTAKE_PARTITIONS 16

/* ---- nats_conn.c ------------------------------------------------------ */

/** Connection options a production user needs.  Strings are borrowed. */
typedef struct lu_nats_opts_s {
  const char *urls;      /**< one or more, comma-separated; required */
  const char *user, *password; /**< user/password, or NULL */
  const char *token;     /**< token auth, or NULL */
  const char *creds;     /**< credentials file (JWT + nkey), or NULL */
  const char *tls_ca;    /**< CA file: enables TLS (server verified) */
  const char *tls_cert, *tls_key; /**< client certificate, or NULL */
  const char *name;      /**< connection name shown by the server */
  int max_reconnect;     /**< -1 = forever (default when 0) */
  uint32_t reconnect_wait_ms;  /**< 0 = 250, doubled up to 4 s, jittered */
  uint32_t connect_timeout_ms; /**< 0 = 2000 */
} lu_nats_opts_t;

/** Connects with SendAsap on (NATS-NOTES trap 1: without it every hop
 *  waits ~1 ms for the library's flush), reconnect with backoff and
 *  jitter, and a connection-lost / reconnected log through stderr.
 *  Returns 0, or LU_EIO (server unreachable: err says which URLs and why),
 *  LU_EPROTO (authorization or TLS refused: err says so), LU_EINVAL. */
int lu__nats_connect(natsConnection **nc, const lu_nats_opts_t *o, char *err,
                     size_t errlen);

/** "nats: <status text>: <last error>" into buf, for messages. */
void lu__nats_reason(natsStatus s, char *buf, size_t cap);

/* ---- store_jetstream.c ------------------------------------------------ */

/** Opens the event store on JetStream: stream LUCENT_EVENTS (created if
 *  missing, file storage, duplicate window `dup_window_ms`, 0 = 2 min) on
 *  an existing connection (borrowed; must outlive the store).  Appends
 *  publish asynchronously to lucent.events.<type> with Nats-Msg-Id = id and
 *  wait for every ack (group commit); duplicates are ignored by the server.
 *  Queries read the stream with an ordered consumer.  Errors: LU_ESTORE
 *  with the reason in err (no JetStream on the server, ...). */
int lu__store_jetstream_open(lu_store_t **out, natsConnection *nc,
                             int create, uint32_t dup_window_ms, char *err,
                             size_t errlen);

/* ---- session_kv.c ----------------------------------------------------- */

/** Sticky-session bindings shared by every shard process (DESIGN.md
 *  decision 7): KV bucket lucent_sessions, TTL per bucket (the longest
 *  sticky TTL of the registry).  First binder wins (kvStore_Create); a
 *  binding to a shard that is not alive is replaced with a CAS update.
 *  Keeps a local cache so a hot session costs no round trip, and refreshes
 *  a binding in the KV at most every ttl/4 while it is in use.  Thread
 *  safe. */
typedef struct lu_kvsess_s lu_kvsess_t;
int lu__kvsess_open(lu_kvsess_t **out, natsConnection *nc, uint32_t ttl_ms,
                    char *err, size_t errlen);
/** The shard id bound to key (written to out, cap bytes), binding it to
 *  `candidate` when unbound or when alive(ud, bound) says the bound shard
 *  is gone.  Returns 0, or LU_EIO when the KV cannot be reached (the caller
 *  then uses candidate and does not cache). */
int lu__kvsess_bind(lu_kvsess_t *s, const char *key, size_t klen,
                    const char *candidate,
                    int (*alive)(void *ud, const char *shard), void *ud,
                    char *out, size_t cap);
/** The current binding without changing anything: 0, or LU_ENOENT. */
int lu__kvsess_lookup(lu_kvsess_t *s, const char *key, size_t klen, char *out,
                      size_t cap);
void lu__kvsess_close(lu_kvsess_t *s);

#endif /* LUCENT_NATS_INTERNAL_H */
