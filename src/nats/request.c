/*
 * request.c - the CloudEvent a message carries (request.h): structured
 * mode (the payload is the event) or the NATS binding's binary mode
 * (ce-* headers and the data as payload, decoded by src/util/ce.c).
 */
#include "request.h"

int lu__msg_event(const lu_hdr_t *h, size_t n, const char *payload,
                  size_t plen, const char **json, size_t *len, lu_buf_t *own,
                  char *why, size_t wcap) {
  *json = payload ? payload : "";
  *len = payload ? plen : 0;
  if (!n || !lu__ce_binary_mode(h, n)) return 0;
  int rc = lu__ce_binary_decode(own, h, n, *json, *len, why, wcap);
  if (rc == LU_ENOMEM) lu__fmt(why, wcap, "out of memory");
  if (rc) {
    own->len = 0;
    own->oom = 0;
    lu__ce_binary_raw(own, h, n, *json, *len);
    rc = LU_EINVAL;
  }
  *json = own->p ? own->p : "";
  *len = own->len;
  return rc;
}
