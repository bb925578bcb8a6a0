/*
 * membership.h - the shard view over NATS heartbeats (membership.c) and
 * the NATS bus (bus_nats.c, with puller.c and exec_nats.c: bus_internal.h):
 * the two pieces `lucent serve` runs on top of the manager.  Internal.
 */
#ifndef LUCENT_MEMBERSHIP_H
#define LUCENT_MEMBERSHIP_H

#include "lucent/obs.h"
#include "nats_internal.h"

/* ---- membership.c ----------------------------------------------------- */

typedef struct lu_membership_s lu_membership_t;

/** Starts heartbeats for shard `self` every interval_ms (0 = 250) and
 *  keeps the manager's view: the shards heard within 6 intervals, or the
 *  static comma-separated list `static_view` (NULL = heartbeats decide).
 *  on_change(ud) runs on the membership thread after each view change.
 *  Returns 0 or LU_EIO with err. */
int lu__membership_start(lu_membership_t **out, natsConnection *nc,
                         lu_manager_t *m, const char *self,
                         const char *static_view, uint32_t interval_ms,
                         void (*on_change)(void *ud), void *ud, char *err,
                         size_t errlen);
/** Says goodbye (a "leaving" heartbeat) and stops; NULL is a no-op. */
void lu__membership_stop(lu_membership_t *ms);
/** Peers in the table now (live ones and newcomers since the last
 *  refresh).  Thread safe. */
unsigned lu__membership_peers(lu_membership_t *ms);

/** A heartbeat's content: {"id":"shard-a","load":12,"seq":42,
 *  "leaving":false}. */
typedef struct lu_hb_s {
  char id[LU_SHARD_ID_MAX]; /* a valid shard id */
  uint64_t load;            /* clamped to [0, UINT64_MAX] */
  int leaving;
} lu_hb_t;
/** Parses a heartbeat's body (len bytes, not NUL-terminated): 0, or
 *  LU_EINVAL when it is not JSON or has no valid shard id. */
int lu__hb_parse(const char *data, size_t len, lu_hb_t *hb);

/* ---- bus_nats.c ------------------------------------------------------- */

typedef enum { LU_DELIVERY_AT_LEAST_ONCE, LU_DELIVERY_AT_MOST_ONCE }
    lu_delivery_t;

typedef struct lu_natsbus_cfg_s {
  const char *shard;       /**< this process's shard id */
  const char *static_view; /**< "a,b,c" or NULL for heartbeats */
  lu_delivery_t delivery;
  uint32_t hb_interval_ms; /**< 0 = 250 */
  uint32_t ack_wait_ms;    /**< JetStream redelivery delay; 0 = 10000 */
  /** At-least-once: 1 = every forward goes through LUCENT_FWD; 0 (the
   *  default) = an intake event's first hop goes over core NATS and its
   *  intake message is acked when the owner confirms (fwd_core.c). */
  int durable_forward;
  /** Replicas of the streams and bucket it creates or finds (assets.h):
   *  0 = not asked (1 when created, existing ones kept). */
  unsigned replicas;
  /** At-least-once: the partition count of a LUCENT_INTAKE created here;
   *  0 = the stream's own, or LU_INTAKE_PARTITIONS_DEFAULT when this
   *  creates it.  A stream with another count makes start fail with
   *  LU_EINVAL and the reason (intake_layout.h). */
  unsigned partitions;
  /** exec's reply by default: 0 = once the outcome is stored; 1 = once the
   *  function returned (LU_RUN_EXECUTED: the outcome is stored after the
   *  reply, and a crash in between loses it).  A request's
   *  Lucent-Exec-Reply header (stored or executed) overrides it. */
  int exec_reply_executed;
} lu_natsbus_cfg_t;

typedef struct lu_natsbus_s lu_natsbus_t;

/** Creates the streams and consumers lucent needs (if missing; assets.c:
 *  cfg->replicas, riding through an election for LU_RETRY_DEFAULT_MS;
 *  LUCENT_INTAKE with cfg->partitions, intake_layout.c), writes the
 *  registry's routes into the routes table (at-least-once), installs
 *  itself as the manager's bus, joins the view and starts pulling.  The
 *  connection and manager are borrowed.  Returns 0, or LU_EIO / LU_ESTORE
 *  with err; LU_EINVAL for a replica count the server cannot give, or a
 *  partition count that differs from the stream's. */
int lu__natsbus_start(lu_natsbus_t **out, natsConnection *nc,
                      lu_manager_t *m, const lu_natsbus_cfg_t *cfg, char *err,
                      size_t errlen);

/** Counters for logs and metrics. */
typedef struct lu_natsbus_stats_s {
  uint64_t pulled, forwarded, forward_errors, exec_requests, exec_forwarded,
      dropped;
  uint64_t forward_confirmed; /* core forwards confirmed by their owner */
  uint64_t forward_fallbacks; /* core forwards that went durable instead */
  uint64_t forwards_jetstream; /* through LUCENT_FWD (fallbacks included) */
  uint64_t forwards_amo;       /* at-most-once, over core NATS */
  unsigned claimed; /* consumers this shard pulls now */
} lu_natsbus_stats_t;
void lu__natsbus_stats(lu_natsbus_t *b, lu_natsbus_stats_t *out);
/** The bus's metrics for lu_obs_source_t.metrics: forwards by path (core
 *  confirmed, jetstream, at_most_once) and core forwards that fell back
 *  to JetStream.  Returns how many samples there are (4). */
size_t lu__natsbus_metrics(lu_natsbus_t *b, lu_metric_t *out, size_t cap);

/** Leaves the view, stops pulling new work and waits (up to timeout_ms)
 *  for what it took to be finished and acknowledged; then the last
 *  counters go to *final (unless NULL) and everything is freed.  NULL b is
 *  a no-op. */
void lu__natsbus_stop(lu_natsbus_t *b, uint32_t timeout_ms,
                      lu_natsbus_stats_t *final);


#endif /* LUCENT_MEMBERSHIP_H */
