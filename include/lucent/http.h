/*
 * lucent/http.h - observability over HTTP: Prometheus metrics, health and
 * readiness checks, and JSON views of the functions and the shards.
 *
 *   lu_obs_source_t src = {.manager = m, .store_path = "events.db"};
 *   lu_http_t *h;
 *   if (lu_http_start(&h, "127.0.0.1:0", &src, err, sizeof err) != 0) ...
 *   printf("serving on %s\n", lu_http_addr(h));
 *   ...
 *   lu_http_stop(h);           // before lu_manager_free(m)
 *
 * Endpoints (GET or HEAD; anything else is 405, unknown paths 404):
 *
 *   /metrics    Prometheus text exposition format 0.0.4: per function,
 *               per shard and process totals (README "Observability"
 *               lists every series).
 *   /healthz    200 {"status":"ok"} while the process runs.
 *   /readyz     200 or 503 {"ready":bool,"checks":{"registry":{"ok":..,
 *               "detail":..},"store":{..},"bus":{..},"shard":{..}}}.
 *   /functions  the registry (as lu_registry_json()) with a "stats" object
 *               per function: counters, latency quantiles and histogram
 *               buckets, breaker state per shard.
 *   /shards     the shard view: each shard's load report and, for shards
 *               this process runs, its counters.
 *
 * Everything is computed when a request arrives, from the manager's
 * thread-safe accessors: serving costs the pipeline nothing between
 * scrapes.  The server runs on its own thread (libmicrohttpd).
 *
 * The source struct is how a mode that is not embedded plugs in: a
 * distributed shard process gives its own view of the shards (heartbeats),
 * bus check and bus error count; every callback may be NULL for the
 * embedded defaults.
 */
#ifndef LUCENT_HTTP_H
#define LUCENT_HTTP_H

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
  /** Events forwarded to other shard processes, by path: confirmed over
   *  core NATS, through JetStream (LUCENT_FWD), at most once (core, no
   *  confirmation); and how many core forwards went through JetStream
   *  for want of a confirmation.  NULL (the in-process bus): no such
   *  metrics. */
  void (*bus_forwards)(void *ud, uint64_t *core_confirmed,
                       uint64_t *jetstream, uint64_t *at_most_once,
                       uint64_t *fallbacks);
} lu_obs_source_t;

/** Renders /metrics into *out (caller frees with free()), *len bytes,
 *  NUL-terminated.  Returns 0, LU_EINVAL (no manager) or LU_ENOMEM. */
LU_EXTERN int lu_metrics_render(const lu_obs_source_t *src, char **out,
                                size_t *len);

typedef struct lu_http_s lu_http_t;

/** Starts serving on addr: "HOST:PORT", "[V6]:PORT" or ":PORT" (host
 *  127.0.0.1).  HOST is a numeric address or a name that resolves; PORT 0
 *  picks a free port (see lu_http_addr()).  Errors: LU_EINVAL (bad address;
 *  the reason is in err), LU_EIO (cannot bind or start), LU_ENOMEM. */
LU_EXTERN int lu_http_start(lu_http_t **out, const char *addr,
                            const lu_obs_source_t *src, char *err,
                            size_t errlen);

/** The address actually bound, "127.0.0.1:40123" ("[::1]:40123" for
 *  IPv6).  Borrowed until lu_http_stop(). */
LU_EXTERN const char *lu_http_addr(const lu_http_t *h);

/** Stops serving (waits for the request in progress) and frees; NULL is a
 *  no-op.  Call it before freeing the manager. */
LU_EXTERN void lu_http_stop(lu_http_t *h);

#ifdef __cplusplus
}
#endif
#endif /* LUCENT_HTTP_H */
