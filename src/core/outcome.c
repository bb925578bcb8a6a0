/*
 * outcome.c - the records an outcome stores: <Fn>Completed (with the
 * events the function emitted), <Fn>Failed, lucent.Rejected and
 * lucent.DeadLettered, written as CloudEvents JSON by hand (the hot path:
 * cheaper than building a cJSON tree to print it).
 *
 * The source of what a function writes (its result, its failure, the
 * events it emitted) is lucent://fn/<function>: the same wherever it ran
 * (the shard is in the shardid extension), so that an emitted event,
 * itself an input, has the same identity when it is emitted again.
 *
 * Every record's id is derived from its input's identity, (source, id)
 * as CloudEvents defines it (docs/architecture.md, decision 3): a result
 * from (source, id, function), an emitted event from (source, id,
 * function, index), a failure from (source, id, function, "Failed"), a
 * dead letter from (source, id, "lucent.DeadLettered"), a rejection from
 * (origin, line, source and id, or the bytes).  Running the same input
 * again writes the same ids, which the store ignores.
 *
 * A unit keeps its records in one text buffer (offsets, not pointers, so
 * the buffer may grow): the CloudEvent JSON of each record, then the
 * strings the store indexes (id, type, subject, correlation and causation
 * ids, time).  Builders return NULL when memory runs out, having kept
 * nothing: the caller decides what that means for its event.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline.h"

#define REJECT_RAW_MAX 4096 /* bytes of an oversized input kept as "raw" */
/* One record (CloudEvent + its column copies) is ~0.5-1 KiB: allocated
 * once instead of growing 256 -> 512 -> 1024 (three reallocs and copies
 * per outcome were 1/3 of the shard thread's time). */
#define UNIT_TEXT_INITIAL 1536

/* What every record's envelope says. */
typedef struct evhead_s {
  const char *id, *type, *source, *subject, *corr, *caus, *shard, *fn;
  unsigned depth;
  const lu_event_t *context; /* copy business context from this event */
} evhead_t;

/* A string literal, its length folded. */
#define PUT_LIT(b, lit) lu__buf_put((b), (lit), sizeof(lit) - 1)

/* v in decimal at d (no NUL); its length. */
static size_t put_uint(char d[24], uint64_t v) {
  char t[24], *e = t + sizeof t, *q = e;
  do *--q = (char)('0' + v % 10); while ((v /= 10));
  size_t n = (size_t)(e - q);
  memcpy(d, q, n);
  return n;
}

/* a then b into buf (cap bytes), cut at cap - 1 bytes and NUL-terminated:
 * what lu__fmt(buf, cap, "%s%s", a, b) gives, without its cost. */
static void cat2(char *buf, size_t cap, const char *a, const char *b) {
  size_t na = strlen(a), nb = strlen(b);
  if (na > cap - 1) na = cap - 1;
  memcpy(buf, a, na);
  if (nb > cap - 1 - na) nb = cap - 1 - na;
  memcpy(buf + na, b, nb);
  buf[na + nb] = 0;
}

static size_t put_z(lu_buf_t *b, const char *s) {
  if (!s) return LU_NOFF;
  size_t off = b->len;
  lu__buf_put(b, s, strlen(s) + 1);
  return off;
}

static const char *at(const lu_buf_t *b, size_t off) {
  return off == LU_NOFF || b->oom ? NULL : b->p + off;
}

static const char *corr_of(const lu_event_t *ev) {
  return ev->correlationid ? ev->correlationid : ev->id;
}

/* A unit reported already, from the deciding turn's spare list (which
 * takes LU_UNIT_TAKE from the pool when it is empty), or NULL. */
static lu_unit_t *unit_reuse(lu_where_t w) {
  if (!w.spare) return NULL;
  if (!*w.spare && w.pool &&
      atomic_load_explicit(&w.pool->n, memory_order_relaxed)) {
    lu_unitpool_t *p = w.pool;
    pthread_mutex_lock(&p->lock);
    lu_unit_t *first = p->head, *last = NULL;
    size_t k = 0;
    for (lu_unit_t *u = first; u && k < LU_UNIT_TAKE; u = u->next)
      last = u, k++;
    if (last) {
      p->head = last->next;
      last->next = NULL;
      atomic_fetch_sub_explicit(&p->n, k, memory_order_relaxed);
      *w.spare = first;
    }
    pthread_mutex_unlock(&p->lock);
  }
  lu_unit_t *u = *w.spare;
  if (u) {
    *w.spare = u->next;
    u->next = NULL;
  }
  return u;
}

static lu_unit_t *unit_new(lu_where_t w, lu_outcome_kind_t kind,
                           int derived, uint64_t line, uint64_t t_submit) {
  lu_unit_t *u = unit_reuse(w);
  if (!u && !(u = calloc(1, sizeof *u))) return NULL;
  u->kind = kind;
  u->derived = derived;
  u->shard = w.shard;
  u->line = line;
  u->t_submit = t_submit;
  u->ev_id = u->ev_type = u->reason = u->result = LU_NOFF;
  u->rec = u->inline1;
  u->caprec = sizeof u->inline1 / sizeof *u->inline1;
  if (lu__buf_reserve(&u->text, UNIT_TEXT_INITIAL)) {
    lu__unit_free(u);
    return NULL;
  }
  return u;
}

void lu__unit_free(lu_unit_t *u) {
  if (!u) return;
  lu__buf_free(&u->text);
  if (u->rec != u->inline1) free(u->rec);
  free(u);
}

void lu__unit_free_list(lu_unit_t *u) {
  while (u) {
    lu_unit_t *next = u->next;
    lu__unit_free(u);
    u = next;
  }
}

/* A unit's text larger than this is not kept for reuse: a rare large
 * outcome must not pin its memory for the pool's lifetime. */
#define UNIT_TEXT_KEEP (16 * 1024)

void lu__unit_recycle(lu_unitpool_t *pool, lu_unit_t *const *units,
                      size_t nu) {
  lu_unit_t *head = NULL, *tail = NULL;
  size_t k = 0;
  size_t room = pool->max - atomic_load_explicit(&pool->n,
                                                 memory_order_relaxed);
  for (size_t i = 0; i < nu; i++) {
    lu_unit_t *u = units[i];
    if (k >= room || u->text.oom || u->text.cap > UNIT_TEXT_KEEP) {
      lu__unit_free(u);
      continue;
    }
    /* As calloc left it, but for the text buffer's memory. */
    lu_buf_t text = u->text;
    if (u->rec != u->inline1) free(u->rec);
    memset(u, 0, sizeof *u);
    text.len = 0;
    u->text = text;
    if (tail) tail->next = u;
    else head = u;
    tail = u;
    k++;
  }
  if (!head) return;
  pthread_mutex_lock(&pool->lock);
  /* Others may have given units back since room was read. */
  size_t n = atomic_load_explicit(&pool->n, memory_order_relaxed);
  if (n + k > pool->max) {
    pthread_mutex_unlock(&pool->lock);
    lu__unit_free_list(head);
    return;
  }
  tail->next = pool->head;
  pool->head = head;
  atomic_store_explicit(&pool->n, n + k, memory_order_relaxed);
  pthread_mutex_unlock(&pool->lock);
}

/* A unit that ran out of memory while being built: freed, NULL. */
static lu_unit_t *unit_check(lu_unit_t *u) {
  if (u && u->text.oom) {
    lu__unit_free(u);
    return NULL;
  }
  return u;
}

static void put_context_attr(lu_buf_t *b, const cJSON *it) {
  PUT_LIT(b, ",");
  lu__buf_json_str(b, it->string, strlen(it->string));
  PUT_LIT(b, ":");
  lu__buf_json_value(b, it);
}

/* Appends `,"name":value` for each business-context attribute of ev (any
 * top-level attribute that is not CloudEvents core or lucent-managed):
 * the ones its index found, or all of them found again when there were
 * too many to keep. */
static void put_business_context(lu_buf_t *b, const lu_event_t *ev) {
  if (!ev) return;
  if (ev->nctx <= LU_EVENT_CTX) {
    for (size_t i = 0; i < ev->nctx; i++) put_context_attr(b, ev->ctx[i]);
    return;
  }
  for (const cJSON *it = ev->root ? ev->root->child : NULL; it; it = it->next)
    if (it->string && !lu__event_is_core_attr(it->string))
      put_context_attr(b, it);
}

/* `,"name":"v"`: name is a literal (its `,"name":` is folded by the
 * compiler); nothing when v is absent or empty (CloudEvents: present
 * means not empty). */
#define PUT_ATTR(b, name, v) put_attr((b), ",\"" name "\":", \
                                      sizeof ",\"" name "\":" - 1, (v))
static void put_attr(lu_buf_t *b, const char *head, size_t hlen,
                     const char *v) {
  if (!v || !*v) return;
  lu__buf_put(b, head, hlen);
  lu__buf_json_str(b, v, strlen(v));
}

/* Writes one complete CloudEvent into u->text as record u->nrec, with
 * `data_json` (already JSON text; NULL = no data).  On allocation failure
 * u->text.oom is set (sticky) and the record may be incomplete. */
static void add_record(lu_unit_t *u, const evhead_t *h, const char *data_json,
                       size_t data_len) {
  lu_buf_t *b = &u->text;
  if (u->nrec == u->caprec) {
    size_t cap = u->caprec * 4;
    lu_urec_t *p = u->rec == u->inline1 ? malloc(cap * sizeof *p)
                                        : realloc(u->rec, cap * sizeof *p);
    if (!p) {
      b->oom = 1;
      return;
    }
    if (u->rec == u->inline1) memcpy(p, u->inline1, sizeof u->inline1);
    u->rec = p;
    u->caprec = cap;
  }
  lu_urec_t *r = &u->rec[u->nrec++];
  char tbuf[32];
  lu__rfc3339(lu__wall_ms(), tbuf);
  r->json = b->len;
  PUT_LIT(b, "{\"specversion\":\"1.0\"");
  PUT_ATTR(b, "id", h->id);
  PUT_ATTR(b, "source", h->source);
  PUT_ATTR(b, "type", h->type);
  PUT_ATTR(b, "subject", h->subject);
  PUT_ATTR(b, "time", tbuf);
  PUT_LIT(b, ",\"datacontenttype\":\"application/json\"");
  PUT_ATTR(b, "correlationid", h->corr);
  PUT_ATTR(b, "causationid", h->caus);
  put_business_context(b, h->context);
  PUT_ATTR(b, "shardid", h->shard);
  PUT_ATTR(b, "function", h->fn);
  if (h->depth) {
    char d[24];
    PUT_LIT(b, ",\"causationdepth\":");
    lu__buf_put(b, d, put_uint(d, h->depth));
  }
  if (data_json) {
    PUT_LIT(b, ",\"data\":");
    lu__buf_put(b, data_json, data_len);
  }
  PUT_LIT(b, "}");
  r->json_len = b->len - r->json;
  lu__buf_put(b, "", 1); /* NUL after the JSON */
  r->id = put_z(b, h->id);
  r->type = put_z(b, h->type);
  r->subject = put_z(b, h->subject);
  r->corr = put_z(b, h->corr);
  r->caus = put_z(b, h->caus);
  r->time = put_z(b, tbuf);
}

/* The input's id and type, for the report. */
static void put_input(lu_unit_t *u, const lu_event_t *ev) {
  u->ev_id = put_z(&u->text, ev->id);
  u->ev_type = put_z(&u->text, ev->type);
}

lu_unit_t *lu__outcome_rejected(lu_where_t w, int derived,
                                const char *origin, uint64_t line,
                                uint64_t t_submit, const char *raw,
                                size_t len, size_t max_bytes,
                                const lu_event_t *ev, const char *reason) {
  lu_unit_t *u = unit_new(w, LU_OUTCOME_REJECTED, derived, line, t_submit);
  if (!u) return NULL;
  char lbuf[24], id[37];
  lu__fmt(lbuf, sizeof lbuf, "%" PRIu64, line);
  /* Replaying the same input of the same origin rejects it under the
   * same id; the bytes count whole (a NUL inside them too), as a hash. */
  char hbuf[24];
  lu__fmt(hbuf, sizeof hbuf, "%016llx",
          (unsigned long long)lu__key_hash(raw, len));
  const char *parts[] = {"lucent.Rejected", origin ? origin : "", lbuf,
                         ev ? ev->source : "", ev ? ev->id : hbuf};
  lu__derive_id(id, parts, 5);
  lu_buf_t data = {0};
  lu__buf_puts(&data, "{\"reason\":");
  lu__buf_json_str(&data, reason, strlen(reason));
  if (origin && *origin) {
    lu__buf_puts(&data, ",\"origin\":");
    lu__buf_json_str(&data, origin, strlen(origin));
  }
  if (line) {
    lu__buf_puts(&data, ",\"line\":");
    lu__buf_puts(&data, lbuf);
  }
  lu__buf_puts(&data, ",\"size\":");
  char sbuf[24];
  lu__fmt(sbuf, sizeof sbuf, "%zu", len);
  lu__buf_puts(&data, sbuf);
  size_t keep = len;
  if (len > max_bytes) {
    keep = len < REJECT_RAW_MAX ? len : REJECT_RAW_MAX;
    lu__buf_puts(&data, ",\"truncated\":true");
  }
  lu__buf_puts(&data, ",\"raw\":");
  lu__buf_json_str(&data, raw, keep);
  if (!lu__utf8_valid(raw, keep, NULL)) { /* raw is lossy: keep the bytes */
    lu__buf_puts(&data, ",\"raw_base64\":\"");
    lu__buf_base64(&data, raw, keep);
    lu__buf_puts(&data, "\"");
  }
  lu__buf_puts(&data, "}");
  evhead_t h = {.id = id,
                .type = "lucent.Rejected",
                .source = "lucent://intake",
                .subject = ev ? ev->subject : NULL,
                .corr = ev ? corr_of(ev) : NULL,
                .caus = ev ? ev->id : NULL,
                .shard = w.id,
                .context = ev};
  if (data.oom) u->text.oom = 1;
  else add_record(u, &h, data.p, data.len);
  lu__buf_free(&data);
  if (ev) put_input(u, ev);
  u->reason = put_z(&u->text, reason);
  return unit_check(u);
}

lu_unit_t *lu__outcome_dead(lu_where_t w, const lu_item_t *it,
                            const char *reason, unsigned attempts) {
  const lu_event_t *ev = it->ev;
  lu_unit_t *u = unit_new(w, LU_OUTCOME_DEAD_LETTERED, it->derived,
                          it->line, it->t_submit);
  if (!u) return NULL;
  u->once = it->once;
  char id[37];
  const char *parts[] = {ev->source, ev->id, "lucent.DeadLettered"};
  lu__derive_id(id, parts, 3);
  lu_buf_t data = {0};
  size_t evlen;
  const char *evjson = lu_event_json(it->ev, &evlen);
  lu__buf_puts(&data, "{\"reason\":");
  lu__buf_json_str(&data, reason, strlen(reason));
  lu__buf_puts(&data, ",\"event\":");
  lu__buf_put(&data, evjson ? evjson : "null", evjson ? evlen : 4);
  lu__buf_puts(&data, "}");
  evhead_t h = {.id = id,
                .type = "lucent.DeadLettered",
                .source = "lucent://manager",
                .subject = ev->subject,
                .corr = corr_of(ev),
                .caus = ev->id,
                .shard = w.id,
                .context = ev};
  if (data.oom || !evjson) u->text.oom = 1;
  else add_record(u, &h, data.p, data.len);
  lu__buf_free(&data);
  u->attempts = attempts;
  put_input(u, ev);
  u->reason = put_z(&u->text, reason);
  return unit_check(u);
}

void lu__outcome_id(const lu_event_t *ev, const char *fn, int failed,
                    char id[37], char *type, size_t tcap) {
  const char *parts[] = {ev->source, ev->id, fn, "Failed"};
  lu__derive_id(id, parts, failed ? 4 : 3);
  cat2(type, tcap, fn, failed ? "Failed" : "Completed");
}

lu_unit_t *lu__outcome_failed(lu_where_t w, const lu_item_t *it,
                              const char *reason, uint64_t exec_ns) {
  const lu_event_t *ev = it->ev;
  const char *name = it->fn->fn->name;
  lu_unit_t *u = unit_new(w, LU_OUTCOME_FAILED, it->derived, it->line,
                          it->t_submit);
  if (!u) return NULL;
  u->once = it->once;
  char id[37], type[256], subject[320], src[80], abuf[24];
  lu__outcome_id(ev, name, 1, id, type, sizeof type);
  cat2(subject, sizeof subject, "function-result-", corr_of(ev));
  cat2(src, sizeof src, "lucent://fn/", name);
  abuf[put_uint(abuf, it->attempts)] = 0;
  lu_buf_t d = {0};
  lu__buf_puts(&d, "{\"reason\":");
  lu__buf_json_str(&d, reason, strlen(reason));
  lu__buf_puts(&d, ",\"attempts\":");
  lu__buf_puts(&d, abuf);
  lu__buf_puts(&d, ",\"input\":{\"id\":");
  lu__buf_json_str(&d, ev->id, strlen(ev->id));
  lu__buf_puts(&d, ",\"type\":");
  lu__buf_json_str(&d, ev->type, strlen(ev->type));
  lu__buf_puts(&d, "}}");
  evhead_t h = {.id = id, .type = type, .source = src, .subject = subject,
                .corr = corr_of(ev), .caus = ev->id, .shard = w.id,
                .fn = name, .context = ev};
  if (d.oom) u->text.oom = 1;
  else add_record(u, &h, d.p, d.len);
  lu__buf_free(&d);
  u->attempts = it->attempts;
  u->exec_ns = exec_ns;
  u->fn = it->fn;
  put_input(u, ev);
  u->reason = put_z(&u->text, reason);
  return unit_check(u);
}

/* cJSON value -> compact JSON in the scratch buffer, valid until its next
 * use; NULL on allocation failure. */
static const char *print_json(lu_buf_t *print, const cJSON *v, size_t *len) {
  print->len = 0;
  lu__buf_json_value(print, v);
  if (print->oom) {
    lu__buf_free(print);
    return NULL;
  }
  *len = print->len;
  return print->p;
}

lu_unit_t *lu__outcome_completed(lu_where_t w, const lu_item_t *it,
                                 const lu_out_t *out, lu_buf_t *print,
                                 uint64_t exec_ns,
                                 lu_event_t *kids[LU_MAX_EMIT],
                                 size_t *nkids) {
  const lu_event_t *ev = it->ev;
  const char *name = it->fn->fn->name;
  *nkids = 0;
  lu_unit_t *u = unit_new(w, LU_OUTCOME_COMPLETED, it->derived, it->line,
                          it->t_submit);
  if (!u) return NULL;
  u->once = it->once;
  char id[37], type[256], subject[320], src[80];
  lu__outcome_id(ev, name, 0, id, type, sizeof type);
  cat2(subject, sizeof subject, "function-result-", corr_of(ev));
  cat2(src, sizeof src, "lucent://fn/", name);
  size_t dlen;
  const char *dj = print_json(print, out->result, &dlen);
  if (!dj) {
    lu__unit_free(u);
    return NULL;
  }
  evhead_t h = {.id = id, .type = type, .source = src, .subject = subject,
                .corr = corr_of(ev), .caus = ev->id, .shard = w.id,
                .fn = name, .context = ev};
  add_record(u, &h, dj, dlen);
  u->result = u->text.len;
  u->result_len = dlen;
  lu__buf_put(&u->text, dj, dlen);
  lu__buf_put(&u->text, "", 1);

  /* Emitted events: stored with the result, then parsed back to re-enter
   * the pipeline (they must be exactly what is stored). */
  for (size_t i = 0; i < out->nemit && !u->text.oom; i++) {
    const lu_emit_t *e = &out->emit[i];
    char eid[37], ibuf[24];
    ibuf[put_uint(ibuf, i)] = 0;
    const char *ep[] = {ev->source, ev->id, name, ibuf};
    lu__derive_id(eid, ep, 4);
    const char *ej = print_json(print, e->data, &dlen);
    if (!ej) {
      u->text.oom = 1;
      break;
    }
    evhead_t eh = {.id = eid, .type = e->type, .source = src,
                   .subject = e->subject ? e->subject : ev->subject,
                   .corr = corr_of(ev), .caus = ev->id, .shard = w.id,
                   .fn = name, .depth = ev->depth + 1, .context = ev};
    size_t before = u->nrec;
    add_record(u, &eh, ej, dlen);
    if (u->text.oom) break;
    const lu_urec_t *r = &u->rec[before];
    char err[128];
    int rc = lu_event_parse(&kids[*nkids], u->text.p + r->json, r->json_len,
                            err, sizeof err);
    if (rc) {
      /* We wrote valid JSON: only memory can fail here. */
      u->text.oom = 1;
      break;
    }
    (*nkids)++;
  }
  u->attempts = it->attempts;
  u->exec_ns = exec_ns;
  u->fn = it->fn;
  put_input(u, ev);
  if (u->text.oom) {
    for (size_t i = 0; i < *nkids; i++) lu_event_free(kids[i]);
    *nkids = 0;
  }
  return unit_check(u);
}

size_t lu__unit_records(lu_unit_t *const *units, size_t nu,
                        lu_record_t *recs) {
  size_t nr = 0;
  for (size_t i = 0; i < nu; i++) {
    const lu_unit_t *u = units[i];
    for (size_t k = 0; k < u->nrec; k++) {
      const lu_urec_t *r = &u->rec[k];
      recs[nr++] = (lu_record_t){
          .id = at(&u->text, r->id),
          .type = at(&u->text, r->type),
          .subject = at(&u->text, r->subject),
          .correlationid = at(&u->text, r->corr),
          .causationid = at(&u->text, r->caus),
          .time = at(&u->text, r->time),
          .json = at(&u->text, r->json),
          .len = r->json_len,
          .flags = u->once ? LU_RECORD_ONCE : 0,
      };
    }
  }
  return nr;
}

void lu__unit_outcome(const lu_unit_t *u, const char *shard_id, uint64_t now,
                      lu_outcome_t *o) {
  *o = (lu_outcome_t){
      .kind = u->kind,
      .derived = u->derived,
      .line = u->line,
      .event_id = at(&u->text, u->ev_id),
      .event_type = at(&u->text, u->ev_type),
      .function = u->fn ? u->fn->fn->name : NULL,
      .shard = shard_id,
      .attempts = u->attempts,
      .reason = at(&u->text, u->reason),
      .stored_json = at(&u->text, u->rec[0].json),
      .result_json = at(&u->text, u->result),
      .exec_ns = u->exec_ns,
      .total_ns = now - u->t_submit,
  };
}
