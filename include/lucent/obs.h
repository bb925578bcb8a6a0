/*
 * lucent/obs.h - observability without a server: Prometheus metrics,
 * readiness checks and JSON views of the functions and the shards, each
 * rendered on demand from a manager's thread-safe accessors.  lucent/
 * http.h serves them over HTTP (liblucent-http); an embedder with its own
 * server calls lu_obs_get() from its handler.
 *
 *   lu_obs_source_t src = {.manager = m, .store_path = "events.db"};
 *   lu_obs_t *o;
 *   lu_obs_new(&o, &src);
 *   lu_obs_reply_t r;
 *   if (lu_obs_get(o, "/metrics", &r) == 0) { ...r.status, r.body... }
 *   lu_obs_reply_free(&r);
 *   lu_obs_free(o);            // before lu_manager_free(m)
 *
 * Endpoints:
 *
 *   /metrics    Prometheus text exposition format 0.0.4: per function,
 *               per shard and process totals (README "Observability"
 *               lists every series), plus the source's own metrics.
 *   /healthz    200 {"status":"ok"} while the process runs.
 *   /readyz     200 or 503 {"ready":bool,"checks":{"registry":{"ok":..,
 *               "detail":..},"store":{..},"bus":{..},"shard":{..}}}.
 *   /functions  the registry (as lu_registry_json()) with a "stats" object
 *               per function: counters, latency quantiles and histogram
 *               buckets, breaker state per shard.
 *   /shards     the shard view: each shard's load report and, for shards
 *               this process runs, its counters.
 *
 * The source struct is how a mode that is not embedded plugs in: a
 * distributed shard process gives its own view of the shards
 * (heartbeats), bus and store checks, bus error count and metrics; every
 * callback may be NULL for the embedded defaults.
 */
#ifndef LUCENT_OBS_H
#define LUCENT_OBS_H

#include <stddef.h>
#include <stdint.h>

#include "lucent.h"

#ifdef __cplusplus
extern "C" {
#endif

/** One shard in the view, as its last load report shows it. */
typedef struct lu_shard_report_s {
  char id[64];
  int local;                 /**< run by this process's manager */
  uint64_t in_flight;        /**< queued + executing + waiting to retry */
  uint64_t queue_depth;      /**< waiting in its queues */
  uint64_t latency_ewma_ns;  /**< 0 = not reported */
  uint32_t cpu_free_millis;  /**< 0 = not reported */
  uint32_t memory_free_mb;   /**< 0 = not reported */
  int64_t age_ms;            /**< since the report was made; 0 = exact */
} lu_shard_report_t;

/** One sample of an extra metric (lu_obs_source_t.metrics): the family
 *  `name` (a Prometheus name, "lucent_bus_forwards_total"), its type
 *  ("counter" or "gauge") and help, at most one label, and the value.
 *  Strings are borrowed until the render that asked for them ends. */
typedef struct lu_metric_s {
  const char *name, *type, *help;
  const char *label, *label_value; /**< NULL: no label */
  uint64_t value;
} lu_metric_t;

/** A readiness check: returns 1 when it passes, 0 when it fails, and
 *  writes a short human-readable detail (NUL-terminated) in either case. */
typedef int (*lu_check_cb)(void *ud, char *detail, size_t cap);

/** Where the observability endpoints read from.  Copied by
 *  lu_http_start() (store_path and bus too); the manager and the
 *  callbacks' ud are borrowed and must outlive the server.  Callbacks run
 *  on the server's thread, one request at a time. */
typedef struct lu_obs_source_s {
  const lu_manager_t *manager; /**< required */
  /** The store's file, probed by /readyz: a separate SQLite connection
   *  runs BEGIN IMMEDIATE; ROLLBACK (200 ms busy timeout, at most once a
   *  second).  NULL or ":memory:" = always writable. */
  const char *store_path;
  const char *bus;             /**< bus name shown by /readyz; "inproc" */
  /** Seconds during which a store batch error keeps /readyz at 503;
   *  0 = 10. */
  unsigned store_error_window_s;
  void *ud;                    /**< passed to every callback */
  /** The shard view: fills up to cap reports and returns how many shards
   *  there are.  NULL = the manager's own shards, exact, all local. */
  size_t (*view)(void *ud, lu_shard_report_t *out, size_t cap);
  lu_check_cb check_bus;       /**< NULL: ok (the in-process bus) */
  lu_check_cb check_shard;     /**< is this process's shard in the view?
                                    NULL: ok */
  uint64_t (*bus_errors)(void *ud); /**< NULL: 0 */
  /** The store check of /readyz for a store that is not an SQLite file:
   *  NULL = ok, naming the store's backend. */
  lu_check_cb check_store;
  /** More metrics from the bus or the embedder: fills up to cap samples
   *  and returns how many it has.  Samples of one family come together
   *  (the first of them names its type and help).  NULL: none. */
  size_t (*metrics)(void *ud, lu_metric_t *out, size_t cap);
} lu_obs_source_t;

/** Renders /metrics into *out (caller frees with free()), *len bytes,
 *  NUL-terminated.  Returns 0, LU_EINVAL (no manager) or LU_ENOMEM. */
LU_EXTERN int lu_metrics_render(const lu_obs_source_t *src, char **out,
                                size_t *len);

/** Renders /metrics into *out (caller frees with free()), *len bytes,
 *  NUL-terminated.  Returns 0, LU_EINVAL (no manager) or LU_ENOMEM. */
LU_EXTERN int lu_metrics_render(const lu_obs_source_t *src, char **out,
                                size_t *len);

typedef struct lu_obs_s lu_obs_t;

/** The endpoints of one source.  src is copied (strings too); the manager
 *  and the callbacks' ud are borrowed and must outlive it.  0, LU_EINVAL
 *  (no manager) or LU_ENOMEM. */
LU_EXTERN int lu_obs_new(lu_obs_t **out, const lu_obs_source_t *src);
/** NULL is a no-op. */
LU_EXTERN void lu_obs_free(lu_obs_t *o);

/** An endpoint's answer. */
typedef struct lu_obs_reply_s {
  int status;               /**< 200, 404, 500 or 503 */
  const char *content_type; /**< static storage */
  char *body;               /**< NUL-terminated; lu_obs_reply_free() */
  size_t len;
} lu_obs_reply_t;

/** Renders the endpoint at path (see the top of the file) into *r; an
 *  unknown path is a 404 with a JSON error naming the endpoints.  Returns
 *  0, or LU_ENOMEM (r->status 500, no body).  Thread safe: the source's
 *  callbacks are called one request at a time. */
LU_EXTERN int lu_obs_get(lu_obs_t *o, const char *path, lu_obs_reply_t *r);
/** Frees r's body; safe on a zeroed reply. */
LU_EXTERN void lu_obs_reply_free(lu_obs_reply_t *r);

#ifdef __cplusplus
}
#endif
#endif /* LUCENT_OBS_H */
