/*
 * lucent/http.h - serving lucent/obs.h's endpoints over HTTP
 * (liblucent-http, on libmicrohttpd).
 *
 *   lu_obs_source_t src = {.manager = m, .store_path = "events.db"};
 *   lu_http_t *h;
 *   if (lu_http_start(&h, "127.0.0.1:0", &src, err, sizeof err) != 0) ...
 *   printf("serving on %s\n", lu_http_addr(h));
 *   ...
 *   lu_http_stop(h);           // before lu_manager_free(m)
 *
 * GET or HEAD; any other method is 405.  The server runs on its own
 * thread and answers one request at a time: requests are rare (a scrape
 * every few seconds) and cheap, and one thread keeps the source's
 * callbacks free of concurrency.  It binds the address it is given,
 * 127.0.0.1 when the host part is empty: exposing metrics beyond the
 * machine is the user's decision.
 */
#ifndef LUCENT_HTTP_H
#define LUCENT_HTTP_H

#include <stddef.h>

#include "obs.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lu_http_s lu_http_t;

/** Starts serving on addr: "HOST:PORT", "[V6]:PORT" or ":PORT" (host
 *  127.0.0.1).  HOST is a numeric address or a name that resolves; PORT 0
 *  picks a free port (see lu_http_addr()).  src is copied as lu_obs_new()
 *  copies it.  Errors: LU_EINVAL (bad address; the reason is in err),
 *  LU_EIO (cannot bind or start), LU_ENOMEM. */
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
