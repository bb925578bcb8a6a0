/*
 * nats_conn.c - one way to connect to NATS for every lucent module and
 * command: the production options (several URLs, user/password, token,
 * credentials file, TLS), the settings that make NATS fast (SendAsap) and
 * resilient (reconnect forever, backoff with jitter), and error messages a
 * user can act on.
 *
 * Design notes:
 *
 *  1. Fail fast at first, hold on afterwards.  The first connect is not
 *     retried (natsOptions_SetRetryOnFailedConnect false): a wrong URL or
 *     bad credentials must end `lucent serve` at once with a clear message,
 *     not leave it waiting.  Once connected, a lost connection is retried
 *     forever (by default) with a doubling, jittered delay; publishes made
 *     meanwhile wait in the reconnect buffer (LU_NATS_RECONNECT_BUF) and go
 *     out when the server is back.
 *
 *  2. Why a connect failed.  nats.c reports every unreachable server list
 *     as NATS_NO_SERVER and drops the socket error.  On that failure only,
 *     each URL is probed with a plain TCP connect to name the reason
 *     ("connection refused", "Name or service not known"), so the message
 *     reads "cannot connect to nats://127.0.0.1:1: no server available
 *     (connection refused)".  Passwords embedded in URLs are masked in
 *     every message.
 *
 *  3. TLS.  A CA file, a client certificate or a tls:// URL turn TLS on
 *     (and nats.c follows a server that requires TLS on its own).  The
 *     server's certificate is verified against the CA file, or the
 *     system's CAs.  Its host name is checked too: nats.c 3.4.1 matches it
 *     against the host of the URL it is connecting to (measured: a DNS
 *     name it does not carry fails with "hostname mismatch", an IP URL
 *     against a certificate without that IP with "IP address mismatch",
 *     and IP SANs match IP URLs).  That is the right name for every URL
 *     of a list, so lucent does not call natsOptions_SetExpectedHostname,
 *     which would force one name onto all of them.
 *
 *  4. Notices.  Disconnect, reconnect and a final close log one record
 *     each through the logger (lucent/log.h: JSON Lines stay JSON; a
 *     library never writes to stderr on its own).  Asynchronous errors (a
 *     slow consumer dropping messages) log at most one record per second.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include "lucent/log.h"
#include "nats_internal.h"

#define LU_NATS_MAX_URLS 32
#define LU_NATS_DEFAULT_PORT "4222"
#define LU_NATS_CONNECT_TIMEOUT_MS 2000
#define LU_NATS_RECONNECT_WAIT_MS 250
#define LU_NATS_RECONNECT_MAX_MS 4000
/* Publishes kept while reconnecting: ~1 s of a busy shard's output. */
#define LU_NATS_RECONNECT_BUF (32 * 1024 * 1024)
/* Messages a subscription may hold before dropping (trap 5: the default
 * 65,536 drops under bursts).  Bytes stay at nats.c's 64 MiB default; a
 * subscriber expecting large messages raises it with
 * natsSubscription_SetPendingLimits. */
#define LU_NATS_MAX_PENDING_MSGS (1 << 20)
/* ... and lucent's own subscriptions (lu__nats_subscribe) more: a bus
 * subscription may take a whole burst of intake or forwards. */
#define LU_NATS_SUB_PENDING_MSGS 4000000
/* A silent server (network partition) is noticed after ~3 pings. */
#define LU_NATS_PING_MS 5000
#define LU_NATS_PINGS_OUT 3

/* ---- URLs ------------------------------------------------------------- */

typedef struct url_s {
  char *text;        /* as given, trimmed (owned) */
  char *shown;       /* with any password masked (owned) */
  char host[256];    /* without brackets */
  char port[8];
  int tls;           /* tls:// scheme */
} url_t;

static void urls_free(url_t *u, int n) {
  for (int i = 0; i < n; i++) {
    free(u[i].text);
    free(u[i].shown);
  }
}

/* "nats://user:pw@host:4222" -> "nats://user:***@host:4222"; a lone
 * userinfo part (a token) is masked whole. */
static char *mask_url(const char *url) {
  const char *start = strstr(url, "://");
  start = start ? start + 3 : url;
  const char *at = strrchr(start, '@');
  size_t n = strlen(url);
  char *out = malloc(n + 8);
  if (!out) return NULL;
  if (!at) {
    memcpy(out, url, n + 1);
    return out;
  }
  const char *colon = memchr(start, ':', (size_t)(at - start));
  size_t keep = (size_t)((colon ? colon + 1 : start) - url);
  memcpy(out, url, keep);
  memcpy(out + keep, "***", 3);
  memcpy(out + keep + 3, at, strlen(at) + 1);
  return out;
}

/* Parses one URL: [scheme://][userinfo@]host[:port].  0, or -1 with the
 * reason in why. */
static int parse_url(url_t *u, char *why, size_t cap) {
  const char *s = u->text;
  const char *p = strstr(s, "://");
  if (p) {
    size_t sl = (size_t)(p - s);
    if (sl == 4 && strncmp(s, "nats", 4) == 0) {
      u->tls = 0;
    } else if (sl == 3 && strncmp(s, "tls", 3) == 0) {
      u->tls = 1;
    } else {
      lu__fmt(why, cap, "unsupported scheme '%.*s' (use nats:// or tls://)",
              (int)sl, s);
      return -1;
    }
    s = p + 3;
  }
  const char *at = strrchr(s, '@');
  if (at) s = at + 1;
  const char *slash = strchr(s, '/');
  size_t hl = slash ? (size_t)(slash - s) : strlen(s);
  const char *host = s, *port = NULL;
  size_t hostlen;
  if (*s == '[') { /* [::1]:4222 */
    const char *close = memchr(s, ']', hl);
    if (!close) {
      lu__fmt(why, cap, "unterminated '[' in the host");
      return -1;
    }
    host = s + 1;
    hostlen = (size_t)(close - host);
    if (close + 1 < s + hl) {
      if (close[1] != ':') {
        lu__fmt(why, cap, "junk after ']'");
        return -1;
      }
      port = close + 2;
    }
  } else {
    const char *colon = memchr(s, ':', hl);
    hostlen = colon ? (size_t)(colon - s) : hl;
    if (colon) port = colon + 1;
  }
  if (!hostlen) {
    lu__fmt(why, cap, "no host");
    return -1;
  }
  if (hostlen >= sizeof u->host) {
    lu__fmt(why, cap, "host name too long");
    return -1;
  }
  memcpy(u->host, host, hostlen);
  u->host[hostlen] = 0;
  size_t pl = port ? (size_t)(s + hl - port) : 0;
  if (port) {
    int ok = pl > 0 && pl <= 5;
    for (size_t i = 0; ok && i < pl; i++)
      ok = port[i] >= '0' && port[i] <= '9';
    if (ok) ok = atoi(port) > 0 && atoi(port) < 65536;
    if (!ok) {
      lu__fmt(why, cap, "bad port '%.*s'", (int)pl, port);
      return -1;
    }
    memcpy(u->port, port, pl);
    u->port[pl] = 0;
  } else {
    memcpy(u->port, LU_NATS_DEFAULT_PORT, sizeof LU_NATS_DEFAULT_PORT);
  }
  return 0;
}

/* Splits "a, b,c" into urls; returns the count, or -1 with err set. */
static int split_urls(const char *list, url_t *u, int max, char *err,
                      size_t errlen) {
  int n = 0;
  const char *p = list;
  while (*p) {
    while (*p == ' ' || *p == '\t' || *p == ',') p++;
    if (!*p) break;
    const char *e = p;
    while (*e && *e != ',') e++;
    const char *t = e;
    while (t > p && (t[-1] == ' ' || t[-1] == '\t')) t--;
    if (n == max) {
      lu__fmt(err, errlen, "too many NATS URLs (at most %d)", max);
      urls_free(u, n);
      return -1;
    }
    memset(&u[n], 0, sizeof u[n]);
    u[n].text = strndup(p, (size_t)(t - p));
    u[n].shown = u[n].text ? mask_url(u[n].text) : NULL;
    if (!u[n].text || !u[n].shown) {
      lu__fmt(err, errlen, "out of memory");
      urls_free(u, n + 1);
      return -1;
    }
    n++;
    char why[128];
    if (parse_url(&u[n - 1], why, sizeof why) != 0) {
      lu__fmt(err, errlen, "bad NATS URL '%s': %s", u[n - 1].shown, why);
      urls_free(u, n);
      return -1;
    }
    p = e;
  }
  return n;
}

/* ---- why a connect failed (note 2) ------------------------------------ */

/* A plain TCP connect to u, within ms: "" when it works, else the reason. */
static void probe(const url_t *u, int ms, char *why, size_t cap) {
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_socktype = SOCK_STREAM;
  int rc = getaddrinfo(u->host, u->port, &hints, &res);
  if (rc != 0) {
    lu__fmt(why, cap, "%s", gai_strerror(rc));
    return;
  }
  int err = 0;
  for (struct addrinfo *a = res; a; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      err = errno;
      continue;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      err = 0;
    } else if (errno == EINPROGRESS) {
      struct pollfd pfd = {fd, POLLOUT, 0};
      int r = poll(&pfd, 1, ms);
      socklen_t len = sizeof err;
      if (r == 0)
        err = ETIMEDOUT;
      else if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len))
        err = errno;
    } else {
      err = errno;
    }
    close(fd);
    if (!err) break;
  }
  freeaddrinfo(res);
  if (!err) {
    why[0] = 0;
    return;
  }
  /* strerror capitalises: "Connection refused" -> "connection refused". */
  lu__fmt(why, cap, "%s", strerror(err));
  if (why[0] >= 'A' && why[0] <= 'Z' && why[1] >= 'a' && why[1] <= 'z')
    why[0] = (char)(why[0] - 'A' + 'a');
}

/* "no server available (connection refused)" for one URL; for several,
 * each URL's reason. */
static void no_server_reason(const url_t *u, int n, int ms, char *buf,
                             size_t cap) {
  char why[160];
  if (n == 1) {
    probe(&u[0], ms, why, sizeof why);
    lu__fmt(buf, cap, "no server available (%s)",
            why[0] ? why : "it accepts TCP connections but not as a NATS "
                           "server");
    return;
  }
  size_t len = 0;
  lu__fmt(buf, cap, "no server available (");
  len = strlen(buf);
  for (int i = 0; i < n && len + 2 < cap; i++) {
    probe(&u[i], ms, why, sizeof why);
    lu__fmt(buf + len, cap - len, "%s%s: %s", i ? "; " : "", u[i].shown,
            why[0] ? why : "not a NATS server");
    len = strlen(buf);
  }
  lu__fmt(buf + len, cap - len, ")");
}

/* ---- callbacks (note 4) ----------------------------------------------- */

static void on_disconnected(natsConnection *nc, void *closure) {
  (void)closure;
  const char *txt = NULL;
  natsStatus s = natsConnection_GetLastError(nc, &txt);
  if (natsConnection_IsClosed(nc)) return; /* closing: not a loss */
  LU_LOG(LU_LOG_WARN, NULL, NULL,
         LU_KVS(LU_KV_STR("error", s != NATS_OK && txt ? txt : "")),
         "nats: connection lost; reconnecting");
}

static void on_reconnected(natsConnection *nc, void *closure) {
  (void)closure;
  char url[256] = "";
  natsConnection_GetConnectedUrl(nc, url, sizeof url);
  char *shown = mask_url(url);
  LU_LOG(LU_LOG_INFO, NULL, NULL, LU_KVS(LU_KV_STR("url", shown ? shown : url)),
         "nats: reconnected");
  free(shown);
}

/* closure: non-NULL when reconnects are limited.  With reconnects
 * forever, nats.c closes a connection only when asked to (or on an
 * authorization error while reconnecting), and a close we asked for is
 * not news. */
static void on_closed(natsConnection *nc, void *closure) {
  const char *txt = NULL;
  natsStatus s = natsConnection_GetLastError(nc, &txt);
  int auth = s == NATS_CONNECTION_AUTH_FAILED || s == NATS_NOT_PERMITTED;
  if (s == NATS_OK || (!closure && !auth)) return;
  LU_LOG(LU_LOG_ERROR, NULL, NULL,
         LU_KVS(LU_KV_STR("error", txt && *txt ? txt : natsStatus_GetText(s))),
         "nats: connection closed");
}

static void on_async_error(natsConnection *nc, natsSubscription *sub,
                           natsStatus err, void *closure) {
  static _Atomic uint64_t last_ns;
  (void)nc, (void)closure;
  uint64_t now = lu__now_ns(), prev = atomic_load(&last_ns);
  if (prev && now - prev < 1000000000u) return;
  if (!atomic_compare_exchange_strong(&last_ns, &prev, now)) return;
  if (err == NATS_SLOW_CONSUMER && sub) {
    int64_t dropped = 0;
    natsSubscription_GetDropped(sub, &dropped);
    LU_LOG(LU_LOG_WARN, NULL, NULL,
           LU_KVS(LU_KV_STR("subject", natsSubscription_GetSubject(sub)),
                  LU_KV_INT("dropped", dropped)),
           "nats: slow consumer: messages dropped");
  } else {
    LU_LOG(LU_LOG_WARN, NULL, NULL,
           LU_KVS(LU_KV_STR("error", natsStatus_GetText(err)),
                  LU_KV_STR("subject",
                            sub ? natsSubscription_GetSubject(sub) : NULL)),
           "nats: asynchronous error");
  }
}

/* Reconnect delay after a full round of failed attempts: base doubled per
 * round up to LU_NATS_RECONNECT_MAX_MS, then a uniform draw in [d/2, d]
 * so that many clients do not come back in lockstep.  The base travels in
 * the closure pointer (nothing to keep alive). */
static int64_t reconnect_delay(natsConnection *nc, int attempts,
                               void *closure) {
  static _Thread_local uint64_t rng;
  (void)nc;
  if (!rng) rng = lu__now_ns() ^ (uint64_t)(uintptr_t)&rng;
  int64_t base = (int64_t)(uintptr_t)closure;
  int shift = attempts > 1 ? attempts - 1 : 0;
  if (shift > 16) shift = 16;
  int64_t d = base << shift;
  if (d > LU_NATS_RECONNECT_MAX_MS || d <= 0) d = LU_NATS_RECONNECT_MAX_MS;
  if (d < base) d = base;
  return d / 2 + (int64_t)(lu__rand_unit(&rng) * (double)(d / 2 + 1));
}

/* ---- connect ---------------------------------------------------------- */

void lu__nats_reason(natsStatus s, char *buf, size_t cap) {
  natsStatus ls = NATS_OK;
  const char *last = nats_GetLastError(&ls);
  const char *txt = natsStatus_GetText(s);
  /* nats.c prefixes "(file.c:123): ": drop the location. */
  if (last && last[0] == '(') {
    const char *e = strstr(last, "): ");
    if (e) last = e + 3;
  }
  if (last && *last && strcasecmp(last, txt) != 0)
    lu__fmt(buf, cap, "nats: %s: %s", txt, last);
  else
    lu__fmt(buf, cap, "nats: %s", txt);
}

/* The text after "nats: <status>: ", or the status text. */
static const char *last_text(natsStatus s) {
  natsStatus ls = NATS_OK;
  const char *last = nats_GetLastError(&ls);
  if (last && last[0] == '(') {
    const char *e = strstr(last, "): ");
    if (e) last = e + 3;
  }
  return last && *last ? last : natsStatus_GetText(s);
}

static int readable(const char *what, const char *path, char *err,
                    size_t errlen) {
  if (access(path, R_OK) == 0) return 0;
  lu__fmt(err, errlen, "cannot read %s %s: %s", what, path, strerror(errno));
  return LU_EINVAL;
}

int lu__nats_connect(natsConnection **nc, const lu_nats_opts_t *o, char *err,
                     size_t errlen) {
  char dummy[8];
  if (!err || !errlen) {
    err = dummy;
    errlen = sizeof dummy;
  }
  err[0] = 0;
  if (!nc || !o) return LU_EINVAL;
  *nc = NULL;
  if (!o->urls || !*o->urls) {
    lu__fmt(err, errlen, "no NATS server URL given (--nats URL)");
    return LU_EINVAL;
  }
  url_t urls[LU_NATS_MAX_URLS];
  int n = split_urls(o->urls, urls, LU_NATS_MAX_URLS, err, errlen);
  if (n < 0) return LU_EINVAL;
  if (n == 0) {
    lu__fmt(err, errlen, "no NATS server URL given (--nats URL)");
    return LU_EINVAL;
  }

  /* Combinations that cannot work, and files that cannot be read, are
   * usage errors: say so before any network traffic. */
  int rc = 0;
  if (o->password && !o->user) {
    lu__fmt(err, errlen, "a NATS password needs a user name (--user)");
    rc = LU_EINVAL;
  } else if (o->token && o->user) {
    lu__fmt(err, errlen, "use either a NATS token or a user, not both");
    rc = LU_EINVAL;
  } else if (o->creds && (o->user || o->token)) {
    lu__fmt(err, errlen,
            "a NATS credentials file replaces user/password and token: "
            "give only one");
    rc = LU_EINVAL;
  } else if (!o->tls_cert != !o->tls_key) {
    lu__fmt(err, errlen, "a TLS client certificate needs its key, and the "
                         "key its certificate (--tls-cert and --tls-key)");
    rc = LU_EINVAL;
  }
  if (!rc && o->creds) rc = readable("credentials file", o->creds, err, errlen);
  if (!rc && o->tls_ca) rc = readable("TLS CA file", o->tls_ca, err, errlen);
  if (!rc && o->tls_cert)
    rc = readable("TLS certificate", o->tls_cert, err, errlen);
  if (!rc && o->tls_key) rc = readable("TLS key", o->tls_key, err, errlen);
  if (rc) {
    urls_free(urls, n);
    return rc;
  }

  int tls = o->tls_ca || o->tls_cert;
  for (int i = 0; i < n; i++) tls |= urls[i].tls;

  uint32_t timeout = o->connect_timeout_ms ? o->connect_timeout_ms
                                           : LU_NATS_CONNECT_TIMEOUT_MS;
  uint32_t wait = o->reconnect_wait_ms ? o->reconnect_wait_ms
                                       : LU_NATS_RECONNECT_WAIT_MS;
  const char *list[LU_NATS_MAX_URLS];
  for (int i = 0; i < n; i++) list[i] = urls[i].text;

  natsOptions *opts = NULL;
  natsStatus s = natsOptions_Create(&opts);
  const char *step = "options";
  if (s == NATS_OK) s = natsOptions_SetServers(opts, list, n);
  if (s == NATS_OK)
    s = natsOptions_SetName(opts, o->name ? o->name : "lucent");
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts, timeout);
  if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, !o->bulk);
  if (s == NATS_OK)
    s = natsOptions_SetRetryOnFailedConnect(opts, false, NULL, NULL);
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(opts, true);
  if (s == NATS_OK)
    s = natsOptions_SetMaxReconnect(opts, o->max_reconnect > 0
                                              ? o->max_reconnect : -1);
  if (s == NATS_OK)
    s = natsOptions_SetCustomReconnectDelay(opts, reconnect_delay,
                                            (void *)(uintptr_t)wait);
  if (s == NATS_OK)
    s = natsOptions_SetReconnectBufSize(opts, LU_NATS_RECONNECT_BUF);
  if (s == NATS_OK)
    s = natsOptions_SetMaxPendingMsgs(opts, LU_NATS_MAX_PENDING_MSGS);
  if (s == NATS_OK) s = natsOptions_SetPingInterval(opts, LU_NATS_PING_MS);
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(opts, LU_NATS_PINGS_OUT);
  if (s == NATS_OK) s = natsOptions_SetFailRequestsOnDisconnect(opts, true);
  if (s == NATS_OK)
    s = natsOptions_SetDisconnectedCB(opts, on_disconnected, NULL);
  if (s == NATS_OK)
    s = natsOptions_SetReconnectedCB(opts, on_reconnected, NULL);
  if (s == NATS_OK)
    s = natsOptions_SetClosedCB(opts, on_closed,
                                (void *)(uintptr_t)(o->max_reconnect > 0));
  if (s == NATS_OK)
    s = natsOptions_SetErrorHandler(opts, on_async_error, NULL);
  if (s == NATS_OK && o->user)
    s = natsOptions_SetUserInfo(opts, o->user, o->password);
  if (s == NATS_OK && o->token) s = natsOptions_SetToken(opts, o->token);
  if (s == NATS_OK && o->creds) {
    step = "credentials file";
    s = natsOptions_SetUserCredentialsFromFiles(opts, o->creds, NULL);
  }
  if (s == NATS_OK && tls) {
    step = "TLS";
    s = natsOptions_SetSecure(opts, true);
    if (s == NATS_OK && o->tls_ca) {
      step = "TLS CA file";
      s = natsOptions_LoadCATrustedCertificates(opts, o->tls_ca);
    }
    if (s == NATS_OK && o->tls_cert) {
      step = "TLS certificate/key";
      s = natsOptions_LoadCertificatesChain(opts, o->tls_cert, o->tls_key);
    }
  }
  if (s != NATS_OK) {
    char why[512];
    lu__nats_reason(s, why, sizeof why);
    lu__fmt(err, errlen, "NATS %s: %s", step, why);
    natsOptions_Destroy(opts);
    urls_free(urls, n);
    return s == NATS_NO_MEMORY ? LU_ENOMEM : LU_EINVAL;
  }

  /* What we name in messages: the URL list, passwords masked. */
  char shown[1024];
  size_t sl = 0;
  shown[0] = 0;
  for (int i = 0; i < n && sl + 2 < sizeof shown; i++) {
    lu__fmt(shown + sl, sizeof shown - sl, "%s%s", i ? ", " : "",
            urls[i].shown);
    sl = strlen(shown);
  }

  s = natsConnection_Connect(nc, opts);
  natsOptions_Destroy(opts);
  if (s == NATS_OK) {
    urls_free(urls, n);
    return 0;
  }
  *nc = NULL;
  char why[1024];
  switch (s) {
    case NATS_NO_SERVER:
      no_server_reason(urls, n, (int)(timeout < 1000 ? timeout : 1000), why,
                       sizeof why);
      rc = LU_EIO;
      break;
    case NATS_TIMEOUT:
      lu__fmt(why, sizeof why, "no answer within %u ms", timeout);
      rc = LU_EIO;
      break;
    case NATS_CONNECTION_AUTH_FAILED:
    case NATS_NOT_PERMITTED:
      lu__fmt(why, sizeof why,
              "authorization violation (check the user/password, token or "
              "credentials file)");
      rc = LU_EPROTO;
      break;
    case NATS_SECURE_CONNECTION_REQUIRED:
      lu__fmt(why, sizeof why,
              "the server requires TLS (give --tls-ca FILE or a tls:// URL)");
      rc = LU_EPROTO;
      break;
    case NATS_SECURE_CONNECTION_WANTED:
      lu__fmt(why, sizeof why, "TLS was asked for but the server does not "
                               "offer it");
      rc = LU_EPROTO;
      break;
    case NATS_SSL_ERROR:
      /* Certificate problems read "...:20:unable to get local issuer
       * certificate:..."; without a CA file the fix is to give one. */
      lu__fmt(why, sizeof why, "TLS handshake failed: %s%s", last_text(s),
              o->tls_ca ? "" : " (give the server's CA with --tls-ca FILE)");
      rc = LU_EPROTO;
      break;
    case NATS_NO_MEMORY:
      lu__fmt(why, sizeof why, "out of memory");
      rc = LU_ENOMEM;
      break;
    default:
      lu__nats_reason(s, why, sizeof why);
      rc = LU_EIO;
      break;
  }
  lu__fmt(err, errlen, "cannot connect to %s%s: %s", n > 1 ? "any of " : "",
          shown, why);
  urls_free(urls, n);
  return rc;
}

/* ---- releasing received messages -------------------------------------- */

/* nats.c frees a received message on its garbage-collector thread, and
 * natsMsg_Destroy wakes that thread whenever its list was empty: a futex
 * wake-up per message, plus the collector's own, were 1/6 of an
 * at-most-once serve's CPU (perf, bench/README.md).  Messages are handed
 * back RELEASE_BATCH at a time instead.  The batch is taken out in the
 * same critical section that fills it: two threads releasing at once
 * must never both see it full, or neither. */
#define RELEASE_BATCH 64
static pthread_mutex_t g_rel_lock = PTHREAD_MUTEX_INITIALIZER;
static natsMsg *g_rel[RELEASE_BATCH];
static size_t g_nrel;

static void destroy_all(natsMsg **batch, size_t n) {
  for (size_t i = 0; i < n; i++) natsMsg_Destroy(batch[i]);
}

void lu__nats_msg_release(natsMsg *m) {
  if (!m) return;
  natsMsg *batch[RELEASE_BATCH];
  size_t n = 0;
  pthread_mutex_lock(&g_rel_lock);
  g_rel[g_nrel++] = m;
  if (g_nrel == RELEASE_BATCH) {
    n = g_nrel;
    memcpy(batch, g_rel, n * sizeof *batch);
    g_nrel = 0;
  }
  pthread_mutex_unlock(&g_rel_lock);
  destroy_all(batch, n);
}

void lu__nats_msg_release_all(void) {
  natsMsg *batch[RELEASE_BATCH];
  pthread_mutex_lock(&g_rel_lock);
  size_t n = g_nrel;
  memcpy(batch, g_rel, n * sizeof *batch);
  g_nrel = 0;
  pthread_mutex_unlock(&g_rel_lock);
  destroy_all(batch, n);
}

void lu__delivery_hdr(char out[24], unsigned delivery, unsigned replayed) {
  if (delivery < 2 && !replayed) out[0] = 0;
  else lu__fmt(out, 24, "%u%s", delivery ? delivery : 1, replayed ? "r" : "");
}

void lu__delivery_hdr_read(natsMsg *m, unsigned *delivery,
                           unsigned *replayed) {
  const char *v = NULL;
  *delivery = 1;
  *replayed = 0;
  if (natsMsgHeader_Get(m, LU_HDR_DELIVERY, &v) != NATS_OK || !v) return;
  char *end = NULL;
  unsigned long d = strtoul(v, &end, 10);
  if (d >= 1 && d <= 1000000) *delivery = (unsigned)d;
  *replayed = end && *end == 'r';
}

size_t lu__nats_msg_events(natsMsg *m) {
  const char *v = NULL;
  if (natsMsgHeader_Get(m, LU_HDR_COUNT, &v) != NATS_OK || !v) return 1;
  char *end;
  unsigned long long n = strtoull(v, &end, 10);
  return *end || n < 1 || n > SIZE_MAX ? 1 : (size_t)n;
}

natsStatus lu__nats_pull_open(lu_pull_t *p, natsConnection *nc,
                              const char *stream, const char *consumer) {
  memset(p, 0, sizeof *p);
  p->nc = nc;
  natsInbox *inbox = NULL;
  natsStatus s = natsInbox_Create(&inbox);
  if (s == NATS_OK) {
    char wild[sizeof p->inbox + 4];
    lu__fmt(p->inbox, sizeof p->inbox, "%s", inbox);
    lu__fmt(p->next, sizeof p->next, "$JS.API.CONSUMER.MSG.NEXT.%s.%s",
            stream, consumer);
    lu__fmt(wild, sizeof wild, "%s.*", p->inbox);
    s = natsConnection_SubscribeSync(&p->sub, nc, wild);
  }
  natsInbox_Destroy(inbox);
  /* Bounded by our requests: never more than their batches. */
  if (s == NATS_OK) s = natsSubscription_SetPendingLimits(p->sub, -1, -1);
  if (s != NATS_OK) lu__nats_pull_close(p);
  return s;
}

natsStatus lu__nats_pull_request(lu_pull_t *p, int batch, int expires_ms,
                                 char *reply, size_t cap) {
  char subj[sizeof p->inbox + 24], req[96];
  lu__fmt(subj, sizeof subj, "%s.%llu", p->inbox,
          (unsigned long long)++p->k);
  if (reply) lu__fmt(reply, cap, "%s", subj);
  int n = expires_ms > 0
              ? snprintf(req, sizeof req, "{\"batch\":%d,\"expires\":%lld}",
                         batch, (long long)expires_ms * NS_PER_MS)
              : snprintf(req, sizeof req, "{\"batch\":%d,\"no_wait\":true}",
                         batch);
  return natsConnection_PublishRequest(p->nc, p->next, subj, req, n);
}

void lu__nats_pull_close(lu_pull_t *p) {
  if (!p->sub) return;
  natsSubscription_Unsubscribe(p->sub);
  natsSubscription_Destroy(p->sub);
  p->sub = NULL;
}

const char *lu__nats_pull_status(natsMsg *m) {
  const char *v = NULL;
  if (natsMsg_GetDataLength(m) == 0 &&
      natsMsgHeader_Get(m, "Status", &v) == NATS_OK && v)
    return v;
  return NULL;
}

natsStatus lu__nats_subscribe(natsConnection *nc, natsSubscription **sub,
                              const char *subj, const char *queue,
                              natsMsgHandler cb, void *closure) {
  *sub = NULL;
  natsStatus s =
      queue ? natsConnection_QueueSubscribe(sub, nc, subj, queue, cb, closure)
            : natsConnection_Subscribe(sub, nc, subj, cb, closure);
  if (s == NATS_OK)
    s = natsSubscription_SetPendingLimits(*sub, LU_NATS_SUB_PENDING_MSGS, -1);
  if (s != NATS_OK) {
    natsSubscription_Destroy(*sub);
    *sub = NULL;
  }
  return s;
}

void lu__nats_unsubscribe(natsSubscription **sub) {
  if (!*sub) return;
  if (natsSubscription_Drain(*sub) == NATS_OK)
    natsSubscription_WaitForDrainCompletion(*sub, 2000);
  natsSubscription_Destroy(*sub);
  *sub = NULL;
}

natsStatus lu__nats_create_stream(jsCtx *js, jsStreamConfig *cfg,
                                  jsStreamInfo **si, jsErrCode *jerr) {
  jsStreamInfo *info = NULL;
  natsStatus s;
  for (int attempt = 0;; attempt++) {
    *jerr = 0;
    s = js_AddStream(&info, js, cfg, NULL, jerr);
    if (s == NATS_OK) break;
    if (attempt == 4 || (*jerr != JSStreamNameExistErr &&
                         *jerr != JSStreamSubjectOverlapErr))
      break;
    struct timespec ts = {0, 50L * 1000000L * (attempt + 1)};
    nanosleep(&ts, NULL);
    if (js_GetStreamInfo(&info, js, cfg->Name, NULL, NULL) == NATS_OK) {
      s = NATS_OK;
      break;
    }
  }
  if (si) *si = info;
  else jsStreamInfo_Destroy(info);
  return s;
}
