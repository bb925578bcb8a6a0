/*
 * http.c - the observability endpoints (include/lucent/http.h) served by
 * libmicrohttpd on its own thread, and the /functions and /shards JSON.
 *
 * One internal polling thread answers every request in turn: requests are
 * rare (a scrape every few seconds) and cheap, and a single thread keeps
 * the source's callbacks free of concurrency.  Each request takes its own
 * snapshot (metrics.c); nothing is cached between requests except the
 * store probe's answer (health.c).
 *
 * The daemon binds the address it is given, 127.0.0.1 when the host part
 * is empty: exposing metrics beyond the machine is the user's decision.
 */
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "obs.h"

#define MAX_VIEW 1024

struct lu_http_s {
  struct MHD_Daemon *d;
  lu_obs_source_t src;  /* strings not kept: health.c has its copies */
  lu_health_t *health;
  char addr[96];
  char starterr[256];   /* the daemon's complaint while starting */
  int starting;
};

/* ---- JSON views ------------------------------------------------------- */

static cJSON *counts_json(const uint64_t *c) {
  cJSON *o = cJSON_CreateObject();
  for (int k = 0; k < LU_OUTCOME__COUNT; k++)
    cJSON_AddNumberToObject(o, lu_outcome_name((lu_outcome_kind_t)k),
                            (double)c[k]);
  return o;
}

static cJSON *hist_json(const lu_hist_t *h) {
  cJSON *o = cJSON_CreateObject();
  uint64_t cum[LU_OBS_NBUCKETS + 1];
  lu__obs_cumulative(h, cum);
  cJSON_AddNumberToObject(o, "count", (double)h->n);
  cJSON_AddNumberToObject(o, "sum", (double)h->sum / 1e9);
  cJSON_AddNumberToObject(o, "p50", (double)lu__hist_quantile(h, 0.5) / 1e9);
  cJSON_AddNumberToObject(o, "p99", (double)lu__hist_quantile(h, 0.99) / 1e9);
  cJSON_AddNumberToObject(o, "max", (double)h->max / 1e9);
  cJSON *bk = cJSON_AddArrayToObject(o, "buckets");
  for (unsigned k = 0; k <= LU_OBS_NBUCKETS; k++) {
    cJSON *pair = cJSON_CreateArray();
    /* [le_seconds, cumulative count]; le null = +Inf */
    if (k < LU_OBS_NBUCKETS)
      cJSON_AddItemToArray(pair,
                           cJSON_CreateNumber((double)lu__obs_le_ns[k] / 1e9));
    else
      cJSON_AddItemToArray(pair, cJSON_CreateNull());
    cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)cum[k]));
    cJSON_AddItemToArray(bk, pair);
  }
  return o;
}

static void put_json(lu_buf_t *b, cJSON *root) {
  char *p = root ? cJSON_PrintUnformatted(root) : NULL;
  if (p) {
    lu__buf_puts(b, p);
    lu__buf_puts(b, "\n");
  } else {
    b->oom = 1;
  }
  free(p);
  cJSON_Delete(root);
}

void lu__obs_functions_json(lu_buf_t *b, const lu_obs_snap_t *s,
                            const lu_obs_source_t *src) {
  char *reg = lu_registry_json(lu__manager_registry(src->manager));
  cJSON *fns = reg ? cJSON_Parse(reg) : NULL;
  free(reg);
  if (!cJSON_IsArray(fns)) {
    cJSON_Delete(fns);
    b->oom = 1;
    return;
  }
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "version", s->version);
  cJSON_AddItemToObject(root, "functions", fns);
  cJSON *it;
  cJSON_ArrayForEach(it, fns) {
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
    const lu_obs_fn_t *f = NULL;
    for (size_t i = 0; cJSON_IsString(nm) && i < s->nfns; i++)
      if (!strcmp(s->fns[i].name, nm->valuestring)) f = &s->fns[i];
    if (!f) continue;
    cJSON *st = cJSON_AddObjectToObject(it, "stats");
    cJSON_AddNumberToObject(st, "executions", (double)f->executions);
    cJSON_AddNumberToObject(st, "completed", (double)f->completed);
    cJSON_AddNumberToObject(st, "failed", (double)f->failed);
    cJSON_AddNumberToObject(st, "retries", (double)f->retries);
    cJSON_AddNumberToObject(st, "timeouts", (double)f->timeouts);
    cJSON_AddItemToObject(st, "duration_seconds", hist_json(&f->exec));
    cJSON_AddItemToObject(st, "e2e_seconds", hist_json(&f->e2e));
    cJSON *br = cJSON_AddObjectToObject(st, "breaker_open");
    int any = 0;
    for (size_t k = 0; k < s->nshards; k++) {
      cJSON_AddBoolToObject(br, s->shards[k].id, f->breaker_open[k]);
      any |= f->breaker_open[k];
    }
    cJSON_AddBoolToObject(st, "breaker_open_any", any);
  }
  put_json(b, root);
}

static const lu_obs_shard_t *local_shard(const lu_obs_snap_t *s,
                                         const char *id) {
  for (size_t k = 0; k < s->nshards; k++)
    if (!strcmp(s->shards[k].id, id)) return &s->shards[k];
  return NULL;
}

void lu__obs_shards_json(lu_buf_t *b, const lu_obs_snap_t *s,
                         const lu_obs_source_t *src) {
  size_t n = s->nshards;
  lu_shard_report_t *view = NULL;
  if (src->view) {
    view = calloc(MAX_VIEW, sizeof *view);
    if (!view) {
      b->oom = 1;
      return;
    }
    n = src->view(src->ud, view, MAX_VIEW);
    if (n > MAX_VIEW) n = MAX_VIEW;
  }
  cJSON *root = cJSON_CreateObject();
  cJSON_AddNumberToObject(root, "events_in", (double)s->events_in);
  cJSON_AddItemToObject(root, "outcomes", counts_json(s->total.outcomes));
  cJSON_AddItemToObject(root, "emitted", counts_json(s->total.derived));
  cJSON *arr = cJSON_AddArrayToObject(root, "shards");
  for (size_t i = 0; i < n; i++) {
    lu_shard_report_t r;
    if (view) {
      r = view[i];
      r.id[sizeof r.id - 1] = 0;
    } else {
      memset(&r, 0, sizeof r);
      lu__fmt(r.id, sizeof r.id, "%s", s->shards[i].id);
      r.local = 1;
      r.in_flight = s->shards[i].in_flight;
      r.queue_depth = s->shards[i].queue_depth;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", r.id);
    cJSON_AddBoolToObject(o, "local", r.local);
    cJSON_AddNumberToObject(o, "in_flight", (double)r.in_flight);
    cJSON_AddNumberToObject(o, "queue_depth", (double)r.queue_depth);
    if (r.latency_ewma_ns)
      cJSON_AddNumberToObject(o, "latency_ewma_seconds",
                              (double)r.latency_ewma_ns / 1e9);
    if (r.cpu_free_millis)
      cJSON_AddNumberToObject(o, "cpu_free_millis", r.cpu_free_millis);
    if (r.memory_free_mb)
      cJSON_AddNumberToObject(o, "memory_free_mb", r.memory_free_mb);
    cJSON_AddNumberToObject(o, "age_ms", (double)r.age_ms);
    const lu_obs_shard_t *l = r.local ? local_shard(s, r.id) : NULL;
    if (l) {
      cJSON_AddNumberToObject(o, "routed", (double)l->routed);
      cJSON_AddNumberToObject(o, "forwarded", (double)l->forwarded);
      cJSON_AddNumberToObject(o, "received", (double)l->received);
      cJSON_AddNumberToObject(o, "retries", (double)l->retries);
      cJSON_AddItemToObject(o, "outcomes", counts_json(l->count.outcomes));
      cJSON_AddItemToObject(o, "emitted", counts_json(l->count.derived));
    }
    cJSON_AddItemToArray(arr, o);
  }
  cJSON *in = cJSON_AddObjectToObject(root, "intake");
  cJSON_AddItemToObject(in, "outcomes", counts_json(s->intake.outcomes));
  cJSON_AddItemToObject(in, "emitted", counts_json(s->intake.derived));
  free(view);
  put_json(b, root);
}

/* ---- requests --------------------------------------------------------- */

static const char CT_JSON[] = "application/json";
static const char CT_PROM[] = "text/plain; version=0.0.4; charset=utf-8";

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status,
                             const char *ctype, lu_buf_t *b) {
  struct MHD_Response *r;
  if (b->oom) {
    lu__buf_free(b);
    static const char oom[] = "{\"error\":\"out of memory\"}\n";
    r = MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom,
                                        MHD_RESPMEM_PERSISTENT);
    status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    ctype = CT_JSON;
  } else {
    /* MUST_FREE hands the buffer to free(), which is how it was made. */
    r = MHD_create_response_from_buffer(b->len, b->p, MHD_RESPMEM_MUST_FREE);
    if (!r) lu__buf_free(b);
  }
  if (!r) return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

static void error_body(lu_buf_t *b, const char *msg) {
  lu__buf_puts(b, "{\"error\":");
  lu__buf_json_str(b, msg, strlen(msg));
  lu__buf_puts(b, "}\n");
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c,
                              const char *url, const char *method,
                              const char *version, const char *upload,
                              size_t *upload_size, void **req) {
  static int marker;
  lu_http_t *h = cls;
  (void)version;
  (void)upload;
  if (!*req) { /* headers are in; answer once the request is complete */
    *req = &marker;
    return MHD_YES;
  }
  if (*upload_size) { /* a body we do not want: discard it */
    *upload_size = 0;
    return MHD_YES;
  }
  lu_buf_t b = {0};
  if (strcmp(method, MHD_HTTP_METHOD_GET) &&
      strcmp(method, MHD_HTTP_METHOD_HEAD)) {
    error_body(&b, "method not allowed: use GET");
    return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, CT_JSON, &b);
  }
  if (!strcmp(url, "/healthz")) {
    lu__buf_puts(&b, "{\"status\":\"ok\"}\n");
    return reply(c, MHD_HTTP_OK, CT_JSON, &b);
  }
  if (!strcmp(url, "/readyz")) {
    int ok = lu__health_ready(h->health, &b);
    return reply(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, CT_JSON,
                 &b);
  }
  int metrics = !strcmp(url, "/metrics");
  int fns = !strcmp(url, "/functions");
  int shards = !strcmp(url, "/shards");
  if (!metrics && !fns && !shards) {
    error_body(&b, "not found: try /metrics, /healthz, /readyz, "
                   "/functions or /shards");
    return reply(c, MHD_HTTP_NOT_FOUND, CT_JSON, &b);
  }
  lu_obs_snap_t s;
  if (lu__obs_snapshot(&s, &h->src)) {
    b.oom = 1;
    return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, CT_JSON, &b);
  }
  if (metrics) lu__metrics_write(&b, &s);
  else if (fns) lu__obs_functions_json(&b, &s, &h->src);
  else lu__obs_shards_json(&b, &s, &h->src);
  lu__obs_snapshot_free(&s);
  return reply(c, MHD_HTTP_OK, metrics ? CT_PROM : CT_JSON, &b);
}

/* libmicrohttpd's own complaints (bind failures, broken connections). */
static void mhd_log(void *cls, const char *fmt, va_list ap) {
  lu_http_t *h = cls;
  char msg[256];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
  if (__atomic_load_n(&h->starting, __ATOMIC_ACQUIRE)) {
    lu__fmt(h->starterr, sizeof h->starterr, "%s", msg);
    return;
  }
  LU_LOG(LU_LOG_WARN, NULL, NULL, NULL, "http: %s", msg);
}

/* ---- lifecycle -------------------------------------------------------- */

/* "HOST:PORT", "[V6]:PORT", ":PORT" -> host (empty = 127.0.0.1), port. */
static int split_addr(const char *addr, char *host, size_t hcap, char *port,
                      size_t pcap, char *err, size_t errlen) {
  const char *colon, *h = addr, *he;
  if (addr[0] == '[') {
    h = addr + 1;
    he = strchr(h, ']');
    if (!he || he[1] != ':') goto bad;
    colon = he + 1;
  } else {
    colon = strrchr(addr, ':');
    if (!colon) goto bad;
    he = colon;
    if (memchr(addr, ':', (size_t)(colon - addr))) goto bad; /* bare v6 */
  }
  size_t hl = (size_t)(he - h);
  const char *p = colon + 1;
  size_t pl = strlen(p);
  if (hl >= hcap || !pl || pl >= pcap || strspn(p, "0123456789") != pl)
    goto bad;
  if (strtoul(p, NULL, 10) > 65535) {
    lu__fmt(err, errlen, "port of '%s' is not in 0..65535", addr);
    return LU_EINVAL;
  }
  memcpy(host, h, hl);
  host[hl] = 0;
  if (!hl) lu__fmt(host, hcap, "127.0.0.1");
  memcpy(port, p, pl + 1);
  return 0;
bad:
  lu__fmt(err, errlen,
          "bad address '%s': want HOST:PORT, [IPV6]:PORT or :PORT", addr);
  return LU_EINVAL;
}

int lu_http_start(lu_http_t **out, const char *addr,
                  const lu_obs_source_t *src, char *err, size_t errlen) {
  char dummy[8];
  if (!err) err = dummy, errlen = sizeof dummy;
  err[0] = 0;
  *out = NULL;
  if (!src || !src->manager || !addr) {
    lu__fmt(err, errlen, "no manager or no address");
    return LU_EINVAL;
  }
  char host[256], port[8];
  int rc = split_addr(addr, host, sizeof host, port, sizeof port, err, errlen);
  if (rc) return rc;
  struct addrinfo hints = {0}, *ai = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  int gai = getaddrinfo(host, port, &hints, &ai);
  if (gai || !ai) {
    lu__fmt(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(gai));
    if (ai) freeaddrinfo(ai);
    return LU_EINVAL;
  }
  lu_http_t *h = calloc(1, sizeof *h);
  if (!h || !(h->health = lu__health_new(src))) {
    free(h);
    freeaddrinfo(ai);
    return LU_ENOMEM;
  }
  h->src = *src;
  h->src.store_path = NULL;
  h->src.bus = NULL;
  int v6 = ai->ai_family == AF_INET6;
  __atomic_store_n(&h->starting, 1, __ATOMIC_RELEASE);
  h->d = MHD_start_daemon(
      MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0),
      0, NULL, NULL, &handle, h,
      MHD_OPTION_SOCK_ADDR, ai->ai_addr,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
      MHD_OPTION_CONNECTION_LIMIT, (unsigned int)64,
      MHD_OPTION_EXTERNAL_LOGGER, &mhd_log, h,
      MHD_OPTION_END);
  __atomic_store_n(&h->starting, 0, __ATOMIC_RELEASE);
  char numeric[INET6_ADDRSTRLEN + 1];
  if (getnameinfo(ai->ai_addr, ai->ai_addrlen, numeric, sizeof numeric, NULL,
                  0, NI_NUMERICHOST))
    lu__fmt(numeric, sizeof numeric, "%s", host);
  freeaddrinfo(ai);
  if (!h->d) {
    lu__fmt(err, errlen, "cannot serve on %s: %s", addr,
            h->starterr[0] ? h->starterr : "libmicrohttpd failed to start");
    lu__health_free(h->health);
    free(h);
    return LU_EIO;
  }
  const union MHD_DaemonInfo *di =
      MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
  unsigned bound = di ? di->port : 0;
  lu__fmt(h->addr, sizeof h->addr, v6 ? "[%s]:%u" : "%s:%u", numeric,
          bound);
  *out = h;
  return 0;
}

const char *lu_http_addr(const lu_http_t *h) { return h ? h->addr : ""; }

void lu_http_stop(lu_http_t *h) {
  if (!h) return;
  MHD_stop_daemon(h->d);
  lu__health_free(h->health);
  free(h);
}
