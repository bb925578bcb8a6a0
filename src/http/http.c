/*
 * http.c - lucent/obs.h's endpoints over HTTP (include/lucent/http.h),
 * served by libmicrohttpd on its own thread.  Everything it answers comes
 * from lu_obs_get(); this file only speaks HTTP.
 *
 * One internal polling thread answers every request in turn: requests are
 * rare (a scrape every few seconds) and cheap, and a single thread keeps
 * the source's callbacks free of concurrency.
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

#include "lucent/http.h"
#include "lucent/log.h"
#include "util.h"

struct lu_http_s {
  struct MHD_Daemon *d;
  lu_obs_t *obs;
  char addr[96];
  char starterr[256];   /* the daemon's complaint while starting */
  int starting;
};

/* ---- requests --------------------------------------------------------- */

static const char CT_JSON[] = "application/json";

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status,
                             const char *ctype, char *body, size_t len) {
  struct MHD_Response *r;
  if (!body) {
    static const char oom[] = "{\"error\":\"out of memory\"}\n";
    r = MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom,
                                        MHD_RESPMEM_PERSISTENT);
    status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    ctype = CT_JSON;
  } else {
    /* MUST_FREE hands the buffer to free(), which is how it was made. */
    r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) free(body);
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
  if (strcmp(method, MHD_HTTP_METHOD_GET) &&
      strcmp(method, MHD_HTTP_METHOD_HEAD)) {
    static const char msg[] = "{\"error\":\"method not allowed: use GET\"}\n";
    char *body = strdup(msg);
    return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, CT_JSON, body,
                 sizeof msg - 1);
  }
  lu_obs_reply_t r;
  lu_obs_get(h->obs, url, &r);
  return reply(c, (unsigned)r.status, r.content_type, r.body, r.len);
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
  if (!h || lu_obs_new(&h->obs, src)) {
    free(h);
    freeaddrinfo(ai);
    return LU_ENOMEM;
  }
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
    lu_obs_free(h->obs);
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
  lu_obs_free(h->obs);
  free(h);
}
