/*
 * exec.c - the function contract (docs/architecture.md, decision 2): the
 * read-only
 * context a function sees and the output it writes.  Both live on the shard
 * that runs the call; nothing here locks, allocates behind the caller's back
 * or touches I/O.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

const char *lu_ctx_id(const lu_ctx_t *c) { return c->ev->id; }
const char *lu_ctx_type(const lu_ctx_t *c) { return c->ev->type; }
const char *lu_ctx_subject(const lu_ctx_t *c) { return c->ev->subject; }
const char *lu_ctx_correlation_id(const lu_ctx_t *c) {
  return c->correlationid;
}
const char *lu_ctx_attr(const lu_ctx_t *c, const char *name) {
  return lu_event_attr(c->ev, name);
}
const char *lu_ctx_shard(const lu_ctx_t *c) { return c->shard; }
unsigned lu_ctx_attempt(const lu_ctx_t *c) { return c->attempt; }
int64_t lu_ctx_now_ms(const lu_ctx_t *c) { return c->now_ms; }

void lu_ctx_new_id(const lu_ctx_t *c, unsigned n, char buf[37]) {
  char nbuf[16];
  lu__fmt(nbuf, sizeof nbuf, "%u", n);
  const char *parts[] = {c->ev->source, c->ev->id, c->fn_name, "id", nbuf};
  lu__derive_id(buf, parts, 5);
}

int lu_out_result(lu_out_t *out, cJSON *value) {
  if (!value) {
    /* What a cJSON constructor gives when memory is short: the result is
     * lost, so the attempt must not complete without it. */
    out->oom = 1;
    return LU_EINVAL;
  }
  cJSON_Delete(out->result);
  out->result = value;
  return 0;
}

int lu_out_emit(lu_out_t *out, const char *type, const char *subject,
                cJSON *data) {
  if (!type || !*type) {
    cJSON_Delete(data);
    return LU_EINVAL;
  }
  if (out->nemit >= LU_MAX_EMIT) {
    out->overflow = 1;
    cJSON_Delete(data);
    return LU_E2BIG;
  }
  lu_emit_t *e = &out->emit[out->nemit];
  e->type = strdup(type);
  e->subject = subject ? strdup(subject) : NULL;
  if (!e->type || (subject && !e->subject)) {
    free(e->type);
    free(e->subject);
    cJSON_Delete(data);
    out->oom = 1; /* the event is lost: the attempt must not complete */
    return LU_ENOMEM;
  }
  e->data = data;
  out->nemit++;
  return 0;
}

lu_status_t lu_out_fail(lu_out_t *out, lu_status_t status, const char *fmt,
                        ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(out->reason, sizeof out->reason, fmt, ap);
  va_end(ap);
  return status;
}

void lu__out_reset(lu_out_t *out) {
  cJSON_Delete(out->result);
  out->result = NULL;
  for (size_t i = 0; i < out->nemit; i++) {
    free(out->emit[i].type);
    free(out->emit[i].subject);
    cJSON_Delete(out->emit[i].data);
  }
  out->nemit = 0;
  out->overflow = 0;
  out->oom = 0;
  out->reason[0] = 0;
}
