/*
 * assets.h - what lucent creates on JetStream, in one place: the streams
 * LUCENT_INTAKE and LUCENT_FWD (work queues), LUCENT_EVENTS (the event
 * store) and the KV bucket lucent_sessions; their configuration, their
 * creation, and their replica count.  Internal.
 *
 * Every command that may create them (serve, publish; the store and the
 * session table inside serve) goes through here, so they are all made
 * alike, with the replica count asked with --replicas:
 *
 *   replicas 0 (not asked)   a missing asset is created with 1 replica;
 *                            an existing one keeps its own count (a serve
 *                            started without --replicas on a cluster whose
 *                            streams are R3 must not shrink them); a
 *                            count other than 1 is logged (info).
 *   replicas N               a missing asset is created with N; an
 *                            existing one with another count is changed
 *                            to N by a stream update (nats-server 2.9
 *                            scales a clustered stream up and down,
 *                            copying its messages: R1 -> R3 with 2,000
 *                            messages took 0.66 s, every copy current at
 *                            once), with a warning saying from what to
 *                            what; if the server refuses, the call fails
 *                            with a message naming the asset, the count
 *                            it has, the count asked, and how to fix it.
 *   N > 1 on a single server refused: a lone nats-server cannot keep
 *                            copies (it answers 10074 to a create, and -
 *                            a trap - accepts an update to R3 and keeps
 *                            one copy), so it is refused before asking.
 *                            A single server is told apart by the stream
 *                            info, which has no cluster part there.
 *   N > cluster size         the server's 10005 "no suitable peers for
 *                            placement", with the same fix.
 *
 * Consumers are created with replicas 0, "as the stream" (nats-notes a4).
 *
 * Transient failures of the API calls (timeouts, 503 while a leader is
 * elected) are retried for opts.retry_ms (retry.h); "no responders" on
 * the API is not transient (no JetStream on the server: said at once).
 *
 * Thread safety: the functions hold no state; each may run on any thread
 * with its own jsCtx (nats.c's contexts are thread safe).  Errors: 0, or
 * LU_EIO / LU_ESTORE / LU_ENOENT / LU_EINVAL with a sentence in err.
 */
#ifndef LUCENT_NATS_ASSETS_H
#define LUCENT_NATS_ASSETS_H

#include <stdint.h>

#include <nats/nats.h>

/** The largest replica count JetStream allows (nats-server: 5). */
#define LU_ASSETS_MAX_REPLICAS 5

/** How assets are made and found.  Strings borrowed for the call. */
typedef struct lu_assets_opts_s {
  unsigned replicas;  /**< 0 = not asked (see the top), else 1..5 */
  uint32_t retry_ms;  /**< transient API failures retried this long;
                           0 = none */
  uint32_t wait_ms;   /**< each API call's wait; 0 = the jsCtx's */
  const char *who;    /**< log component (a shard id), or NULL */
  const char *flag;   /**< how the user asks for replicas, for messages:
                           "--replicas" when NULL */
} lu_assets_opts_t;

/** A work-queue stream configured as lucent's queues are (file storage,
 *  work-queue retention, a 2-minute duplicate window), on `subjects` (n
 *  of them): found, replicas reconciled, or created.  0 or an error in
 *  err.  (The benchmark's raw baseline uses it under its own name.) */
int lu__assets_queue(jsCtx *js, const char *name,
                     const char *const *subjects, int n,
                     const lu_assets_opts_t *o, char *err, size_t errlen);

/** LUCENT_INTAKE, a work queue on `subjects` (n of them; given by the
 *  caller, which decides the partitioning).  Created if missing, replicas
 *  reconciled.  0 or an error in err. */
int lu__assets_intake(jsCtx *js, const char *const *subjects, int n,
                      const lu_assets_opts_t *o, char *err, size_t errlen);

/** LUCENT_FWD, the forward work queue (lucent.fwd.>).  As above. */
int lu__assets_fwd(jsCtx *js, const lu_assets_opts_t *o, char *err,
                   size_t errlen);

/** LUCENT_EVENTS, the event store (lucent.events.>, limits retention,
 *  duplicate window dup_ns, never narrowed on an existing stream).  With
 *  create = 0 it is only looked up (LU_ENOENT: "no lucent event store on
 *  this server (stream LUCENT_EVENTS not found)") and neither changed
 *  nor created.  A stream of that name on other subjects: LU_ESTORE.
 *  *si (when not NULL) gets its info; the caller destroys it. */
int lu__assets_events(jsCtx *js, int create, int64_t dup_ns,
                      const lu_assets_opts_t *o, jsStreamInfo **si,
                      char *err, size_t errlen);

/** The KV bucket lucent_sessions (history 1, TTL ttl_ns; an existing
 *  bucket keeps its own TTL), opened into *kv.  LU_EIO on failure. */
int lu__assets_sessions(jsCtx *js, int64_t ttl_ns, const lu_assets_opts_t *o,
                        kvStore **kv, char *err, size_t errlen);

/** The info of stream `name` into *si (the caller destroys it), riding
 *  through a leader election for o->retry_ms: a stream whose raft group
 *  has no leader yet, just created or after a node loss, does not answer
 *  at all (docs/nats-notes.md a5).  NATS_OK; NATS_NOT_FOUND when there is
 *  no such stream; else the last failure, *jerr set (no responders, no
 *  JetStream on the server, fails at once). */
natsStatus lu__assets_stream_info(jsCtx *js, const char *name,
                                  const lu_assets_opts_t *o,
                                  jsStreamInfo **si, jsErrCode *jerr);

/** Why a JetStream API call failed, in words, into buf: "JetStream is
 *  not enabled on the server (start nats-server with -js)" for no
 *  responders, else nats.c's reason and the JetStream error code. */
void lu__assets_reason(natsStatus s, jsErrCode jerr, char *buf, size_t cap);

/** Parses a --replicas value: 0 and 1..LU_ASSETS_MAX_REPLICAS.  0, or -1
 *  (not a number, out of range). */
int lu__assets_parse_replicas(const char *s, unsigned *out);

#endif /* LUCENT_NATS_ASSETS_H */
