/*
 * request.h - the CloudEvent a message carries, from its headers and
 * payload (request.c): what the bus (bus_nats.c, lu__natsbus_msg_event)
 * does with an intake message or an exec request before it routes it.
 * Apart from the NATS message so that a fuzzer reaches it
 * (fuzz/fuzz_exec.c).  Internal.
 */
#ifndef LUCENT_REQUEST_H
#define LUCENT_REQUEST_H

#include "util.h"

/** The structured JSON of a message's event: the payload itself (structured
 *  mode; *json points into it), or, when the headers make it a
 *  binary-mode CloudEvent (a ce-specversion header), the JSON decoded from
 *  headers and payload into *own.  Returns 0, or LU_EINVAL for a
 *  binary-mode message that is not a valid event: why says why, and
 *  *json is the message's headers and payload as text (for its
 *  lucent.Rejected).  The caller frees *own. */
int lu__msg_event(const lu_hdr_t *h, size_t n, const char *payload,
                  size_t plen, const char **json, size_t *len, lu_buf_t *own,
                  char *why, size_t wcap);

#endif /* LUCENT_REQUEST_H */
