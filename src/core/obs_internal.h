/*
 * obs_internal.h - interfaces between the observability modules (not installed):
 * log.c, metrics.c (snapshot + Prometheus text), health.c (/readyz),
 * http.c (the server and the JSON views).  Kept apart from internal.h so
 * the pipeline's modules do not see them.
 */
#ifndef LUCENT_OBS_INTERNAL_H
#define LUCENT_OBS_INTERNAL_H

#include "internal.h"
#include "lucent/obs.h"
#include "lucent/log.h"

/* ---- log.c ------------------------------------------------------------ */

/** Formats one record (with its final newline) into b: JSON when json,
 *  else text.  wall_ms is the record's time (ms since the epoch). */
void lu__log_format(lu_buf_t *b, int json, int64_t wall_ms,
                    lu_log_level_t level, const char *shard,
                    const char *corr, const lu_kv_t *kv, const char *msg);
/** Appends s with control bytes escaped (\n, \r, \t, \xHH); when quoted,
 *  '"' and '\\' too. */
void lu__obs_text_escape(lu_buf_t *b, const char *s, size_t n, int quoted);

/* ---- metrics.c -------------------------------------------------------- */

/** The Prometheus histogram buckets, in ns: 1-2-5 steps from 1 us to 10 s
 *  (the le="+Inf" bucket is implicit). */
#define LU_OBS_NBUCKETS 22
extern const uint64_t lu__obs_le_ns[LU_OBS_NBUCKETS];

/** The largest value that falls in bucket b of a lu_hist_t (mirrors
 *  hist.c's layout, which the unit tests cross-check). */
uint64_t lu__obs_hist_upper(unsigned b);

/** A log-linear histogram as cumulative counts per lu__obs_le_ns bound.
 *  A fine bucket counts toward the first bound at or above its upper end,
 *  so le counts never include a value above the bound (a bucket straddling
 *  a bound is counted at the next one: up to 12.5% of the values near a
 *  bound show one bucket late).  cum[LU_OBS_NBUCKETS] = h->n (+Inf). */
void lu__obs_cumulative(const lu_hist_t *h, uint64_t cum[LU_OBS_NBUCKETS + 1]);

/** Everything the endpoints show, read once per request. */
typedef struct lu_obs_fn_s {
  const char *name;            /* borrowed from the registry */
  uint64_t executions, completed, failed, retries, timeouts;
  uint64_t crashes, abandoned;
  lu_hist_t exec, e2e;
  unsigned char *breaker_open; /* [nshards] (points into the snapshot) */
} lu_obs_fn_t;

typedef struct lu_obs_shard_s {
  const char *id;              /* borrowed from the manager */
  uint64_t in_flight, queue_depth;
  uint64_t routed, forwarded, received, retries;
  lu_count_t count;            /* outcomes decided on this shard */
} lu_obs_shard_t;

typedef struct lu_obs_snap_s {
  const char *version;
  uint64_t events_in;
  lu_count_t total;
  lu_count_t intake;           /* decided before routing */
  uint64_t store_batches, store_records, store_errors, bus_errors;
  uint64_t store_direct;       /* of store_batches, begun by a shard */
  lu_metric_t *extra;          /* the source's own metrics */
  size_t nextra;
  size_t nshards;
  lu_obs_shard_t *shards;
  size_t nfns;
  lu_obs_fn_t *fns;
  unsigned char *breakers;     /* nfns * nshards */
} lu_obs_snap_t;

/** Fills s from src's manager (s is zeroed first).  0 or LU_ENOMEM. */
int lu__obs_snapshot(lu_obs_snap_t *s, const lu_obs_source_t *src);
void lu__obs_snapshot_free(lu_obs_snap_t *s);

/** The Prometheus text format (0.0.4) of a snapshot. */
void lu__metrics_write(lu_buf_t *b, const lu_obs_snap_t *s);
/** Appends v as a Prometheus label value (no quotes): \\ \" \n escaped. */
void lu__metrics_label(lu_buf_t *b, const char *v);

/* ---- health.c --------------------------------------------------------- */

typedef struct lu_health_s lu_health_t;

/** src is copied (strings too). NULL on allocation failure. */
lu_health_t *lu__health_new(const lu_obs_source_t *src);
void lu__health_free(lu_health_t *h);
/** Runs the readiness checks and writes the /readyz JSON to b.  Returns 1
 *  when every check passes.  Thread safe. */
int lu__health_ready(lu_health_t *h, lu_buf_t *b);
/** The store check alone: 1 writable, 0 not, with a detail.  Caches the
 *  probe's answer for a second.  Thread safe. */
int lu__health_store(lu_health_t *h, char *detail, size_t cap);

/* ---- views.c ---------------------------------------------------------- */

/** The /functions and /shards bodies. */
void lu__obs_functions_json(lu_buf_t *b, const lu_obs_snap_t *s,
                            const lu_obs_source_t *src);
void lu__obs_shards_json(lu_buf_t *b, const lu_obs_snap_t *s,
                         const lu_obs_source_t *src);

#endif /* LUCENT_OBS_INTERNAL_H */
