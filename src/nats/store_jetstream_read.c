/*
 * store_jetstream_read.c - the read side of the event store on JetStream
 * (store_jetstream.c has the stream, its messages and the write side):
 * queries and counts, which read the stream through an ephemeral
 * consumer, and the lookup by id, which asks for one subject's last
 * message.
 *
 * Design notes (numbered with store_jetstream.c's):
 *
 *  5. Queries read the stream with an ephemeral pull consumer (AckNone,
 *     memory storage, filtered on lucent.events.<type>.* when the query has
 *     a type, starting at after_seq + 1), in batches of LU_JS_FETCH
 *     pulled by hand (lu_pull_t, no_wait requests: not nats.c's Fetch,
 *     whose heap overflow puller.c describes).  A query must terminate
 *     even while appends go on: it stops at the stream's last sequence as
 *     read when it started, or when a message says nothing more is
 *     pending for the filter (NumPending 0), or when the consumer had
 *     nothing to deliver at all.  Filters on subject and correlation id
 *     compare headers.  The consumer is
 *     deleted at the end (and expires on the server if we die); one lost
 *     midway (a reader paused past LU_JS_QUERY_IDLE_MS, a server restart)
 *     is replaced by one starting after the last event seen.
 *
 *  9. Leader elections.  When the node leading LUCENT_EVENTS dies, the
 *     other replicas elect a new leader in ~5 s (docs/nats-notes.md a2);
 *     meanwhile stream info, consumer creation and pulls time out or get
 *     503.  Opening, queries and counts ride through that for the
 *     store's retry_ms (lu_js_store_opts_t; retry.h: one log line when an
 *     episode starts, one when it ends), resuming after the last event
 *     seen.  Appends do not retry here: a failed batch is the writer's
 *     to retry (lu_config_t.store_retry_ms), the whole batch at once.
 *
 * Errors leave their message in the store (lu_store_errmsg).  One caller
 * at a time, as for the whole store (store_jetstream.c); lu__jsstore_has
 * may also be called from shard threads while appends run.
 */
#include <stdlib.h>
#include <string.h>

#include "retry.h"
#include "store_jetstream_internal.h"

#define LU_JS_FETCH 1024            /* messages per query fetch */
#define LU_JS_FETCH_WAIT_MS 5000
/* A query's consumer outlives this much reader inactivity (a paused
 * `lucent events | less`); past it, or after a server restart, the query
 * resumes with a new consumer, at most LU_JS_QUERY_REOPEN times. */
#define LU_JS_QUERY_IDLE_MS 600000
#define LU_JS_QUERY_REOPEN 3

/* ---- lookup by id ----------------------------------------------------- */

/* Is a record of this type and id stored?  Its subject holds at most one
 * message (store_jetstream.c note 8), so one "last by subject" lookup
 * tells.  Called from shard threads while appends run: it uses its own
 * buffer, and the connection, which is thread safe.  Records stored in
 * packs are not found (only exec and at-most-once results are packed:
 * neither comes back to be run again). */
int lu__jsstore_has(lu_store_t *base, const char *type, const char *id) {
  js_store_t *st = (js_store_t *)base;
  char tok[33], *subj = NULL;
  size_t cap = 0;
  int exact;
  lu__jsstore_id_token(tok, id);
  if (lu__jsstore_type_subject(&subj, &cap, type, tok, &exact))
    return LU_ENOMEM;
  natsMsg *msg = NULL;
  jsErrCode jerr = 0;
  natsStatus s = js_GetLastMsg(&msg, st->js, LU_STREAM_EVENTS, subj, NULL,
                               &jerr);
  free(subj);
  if (s == NATS_OK) {
    natsMsg_Destroy(msg);
    return 1;
  }
  return s == NATS_NOT_FOUND || jerr == 10037 ? 0 : LU_ESTORE;
}

/* ---- query (note 5) --------------------------------------------------- */

/* Does header h of m equal want (escaped as at append)? */
static int hdr_is(js_store_t *st, natsMsg *m, const char *h,
                  const char *want) {
  const char *v = NULL;
  if (natsMsgHeader_Get(m, h, &v) != NATS_OK || !v) return 0;
  const char *w = lu__jsstore_hv_escape(&st->esc, &st->esccap, want);
  return w && strcmp(v, w) == 0;
}

/* Is m (a single event or a pack) of the query's type? */
static int type_matches(js_store_t *st, natsMsg *m, const lu_query_t *q,
                        int type_exact) {
  if (q->type) {
    const char *v = NULL;
    if (natsMsgHeader_Get(m, HDR_TYPE, &v) == NATS_OK && v) {
      if (!hdr_is(st, m, HDR_TYPE, q->type)) return 0;
    } else if (!type_exact) {
      return 0; /* the subject matched, but is another type's */
    }
  }
  return 1;
}

static int matches(js_store_t *st, natsMsg *m, const lu_query_t *q,
                   int type_exact) {
  if (!type_matches(st, m, q, type_exact)) return 0;
  if (q->subject && !hdr_is(st, m, HDR_SUBJECT, q->subject)) return 0;
  if (q->correlationid && !hdr_is(st, m, HDR_CORR, q->correlationid))
    return 0;
  return 1;
}

/* Does a packed event's attribute `name` equal want? */
static int attr_is(const cJSON *ev, const char *name, const char *want) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(ev, name);
  return cJSON_IsString(v) && strcmp(v->valuestring, want) == 0;
}

/* Calls the query's callback for each event of a pack that matches the
 * query's subject and correlation id (parsed from its JSON: a pack has no
 * such headers), as emit() for one event.  Returns the callback's value,
 * and sets *done when the limit is reached. */
static int emit_pack(js_store_t *st, natsMsg *m, uint64_t seq,
                     const lu_query_t *q, lu_store_row_cb cb, void *ud,
                     size_t *emitted, int *done) {
  const char *d = natsMsg_GetData(m);
  size_t len = (size_t)natsMsg_GetDataLength(m);
  int ret = 0;
  size_t at = 0, ll;
  for (const char *line;
       !*done && (line = lu__pack_next(d, len, &at, &ll));) {
    if (q->subject || q->correlationid) {
      cJSON *ev = cJSON_ParseWithLength(line, ll);
      int ok = ev && (!q->subject || attr_is(ev, "subject", q->subject)) &&
               (!q->correlationid ||
                attr_is(ev, "correlationid", q->correlationid));
      cJSON_Delete(ev);
      if (!ok) continue;
    }
    lu_buf_t *b = &st->packbuf; /* the callback wants a NUL at len */
    b->len = 0;
    lu__buf_put(b, line, ll);
    if (b->oom) {
      lu__buf_free(b);
      *done = 1;
      return lu__jsstore_fail(st, "query: out of memory");
    }
    st->busy = 1;
    ret = cb(ud, seq, b->p, ll);
    st->busy = 0;
    if (ret) *done = 1;
    if (q->limit && ++*emitted >= q->limit) *done = 1;
  }
  return ret;
}

/* A query's consumer (note 5), pulled by hand (lu_pull_t). */
typedef struct qcons_s {
  lu_pull_t pull;
  char name[96]; /* the ephemeral consumer's */
} qcons_t;

/* A reader's ride through a leader election (note 9): for the store's
 * retry_ms, one log line per episode. */
static lu_retry_t read_retry(const js_store_t *st, const char *what) {
  return (lu_retry_t){.window_ms = st->ao.retry_ms, .what = what,
                      .who = st->ao.who};
}

/* The stream's info, through an election (note 9). */
static natsStatus info_retry(js_store_t *st, jsStreamInfo **si,
                             jsErrCode *jerr) {
  lu_retry_t r = read_retry(st, "reading stream " LU_STREAM_EVENTS);
  for (;;) {
    *jerr = 0;
    natsStatus s = js_GetStreamInfo(si, st->js, LU_STREAM_EVENTS, NULL, jerr);
    if (s == NATS_OK || s == NATS_NOT_FOUND ||
        !lu__retry_again(&r, s, (int)*jerr, NULL)) {
      if (s == NATS_OK) lu__retry_ok(&r);
      return s;
    }
  }
}

/* Pending messages the consumer still has for us, or -1 when it cannot
 * be asked (gone, server unreachable past the retry window). */
static int64_t consumer_pending(js_store_t *st, const qcons_t *qc) {
  jsConsumerInfo *ci = NULL;
  lu_retry_t r = read_retry(st, "reading the query's consumer");
  for (;;) {
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, st->js, LU_STREAM_EVENTS,
                                      qc->name, NULL, &jerr);
    if (s == NATS_OK) break;
    /* Gone (not found): the caller makes another one. */
    if (!lu__retry_again(&r, s, (int)jerr, NULL)) return -1;
  }
  lu__retry_ok(&r);
  int64_t n = (int64_t)ci->NumPending;
  jsConsumerInfo_Destroy(ci);
  return n;
}

static void close_consumer(js_store_t *st, qcons_t *qc) {
  if (!qc) return;
  lu__nats_pull_close(&qc->pull);
  /* Deletes the ephemeral consumer; failure is harmless (it expires). */
  if (qc->name[0])
    js_DeleteConsumer(st->js, LU_STREAM_EVENTS, qc->name, NULL, NULL);
  free(qc);
}

/* An ephemeral AckNone consumer on filter from stream sequence `from`
 * (note 5).  0, or an error in st->errmsg. */
static int open_consumer(js_store_t *st, const char *filter, uint64_t from,
                         int headers_only, qcons_t **out) {
  *out = NULL;
  jsConsumerConfig cfg;
  jsConsumerConfig_Init(&cfg);
  cfg.AckPolicy = js_AckNone;
  cfg.FilterSubject = filter;
  cfg.MemoryStorage = true;
  cfg.InactiveThreshold = LU_JS_QUERY_IDLE_MS * NS_PER_MS;
  cfg.Description = "lucent events query";
  cfg.HeadersOnly = headers_only != 0;
  if (from > 1) {
    cfg.DeliverPolicy = js_DeliverByStartSequence;
    cfg.OptStartSeq = from;
  } else {
    cfg.DeliverPolicy = js_DeliverAll;
  }
  qcons_t *qc = calloc(1, sizeof *qc);
  if (!qc) return lu__jsstore_fail(st, "out of memory");
  jsConsumerInfo *ci = NULL;
  jsErrCode jerr = 0;
  natsStatus s;
  lu_retry_t r = read_retry(st, "creating the query's consumer");
  for (;;) {
    jerr = 0;
    s = js_AddConsumer(&ci, st->js, LU_STREAM_EVENTS, &cfg, NULL, &jerr);
    if (s == NATS_OK || !lu__retry_again(&r, s, (int)jerr, NULL)) break;
  }
  if (s == NATS_OK) lu__retry_ok(&r);
  if (s == NATS_OK) {
    lu__fmt(qc->name, sizeof qc->name, "%s", ci->Name);
    jsConsumerInfo_Destroy(ci);
    s = lu__nats_pull_open(&qc->pull, st->nc, LU_STREAM_EVENTS, qc->name);
  }
  if (s == NATS_OK) {
    *out = qc;
    return 0;
  }
  close_consumer(st, qc);
  char why[400];
  lu__jsstore_reason(s, jerr, why, sizeof why);
  return lu__jsstore_fail(st, "query: cannot create a consumer: %s", why);
}

static void batch_free(natsMsgList *list) {
  for (int i = 0; i < list->Count; i++) natsMsg_Destroy(list->Msgs[i]);
  free(list->Msgs);
  memset(list, 0, sizeof *list);
}

/* The next batch of a query's or count's consumer: what is there now, up
 * to LU_JS_FETCH messages (note 5), into list (free it with batch_free).
 * NATS_OK with at least one message; NATS_NOT_FOUND when the consumer
 * said it has nothing now; NATS_TIMEOUT when it said nothing at all. */
static natsStatus fetch_batch(qcons_t *qc, natsMsgList *list) {
  memset(list, 0, sizeof *list);
  list->Msgs = calloc(LU_JS_FETCH, sizeof *list->Msgs);
  if (!list->Msgs) return NATS_NO_MEMORY;
  /* Request k is answered on <inbox>.<k>: a late status of an earlier
   * request does not end this one. */
  char reply[sizeof qc->pull.inbox + 24];
  natsStatus s = lu__nats_pull_request(&qc->pull, LU_JS_FETCH, 0, reply,
                                       sizeof reply);
  uint64_t until = lu__now_ns() + (uint64_t)LU_JS_FETCH_WAIT_MS * NS_PER_MS;
  while (s == NATS_OK && list->Count < LU_JS_FETCH) {
    uint64_t now = lu__now_ns();
    if (now >= until) {
      s = NATS_TIMEOUT;
      break;
    }
    natsMsg *m = NULL;
    s = natsSubscription_NextMsg(&m, qc->pull.sub,
                                 (int64_t)((until - now) / NS_PER_MS) + 1);
    if (s != NATS_OK) break;
    if (lu__nats_pull_status(m)) { /* 404, 408: a request is over */
      int ours = strcmp(natsMsg_GetSubject(m), reply) == 0;
      natsMsg_Destroy(m);
      if (ours) s = NATS_NOT_FOUND;
      continue;
    }
    list->Msgs[list->Count++] = m; /* an earlier request's too: in order */
  }
  return list->Count ? NATS_OK : s;
}

/* A fetch of a query or count brought nothing (status s).  Fine if
 * nothing is left (messages can vanish under limits or a purge); a
 * consumer that has messages and sends none (its stream has no leader:
 * an election, note 9) is asked again within fr's window; a lost one is
 * replaced by one from `next`.  0: done; 1: fetch again (*qc may be new);
 * LU_ESTORE: failed, the reason in st's errmsg prefixed by `what`. */
static int fetch_none(js_store_t *st, qcons_t **qc, natsStatus s,
                      lu_retry_t *fr, int *reopened, const char *filter,
                      uint64_t next, int headers_only, const char *what) {
  int64_t pending = consumer_pending(st, *qc);
  if (pending == 0) return 0;
  if (pending > 0 &&
      lu__retry_again(fr, s == NATS_OK || s == NATS_NOT_FOUND ? NATS_TIMEOUT
                                                              : s,
                      0, NULL))
    return 1;
  if (pending < 0 && *reopened < LU_JS_QUERY_REOPEN &&
      natsConnection_Status(st->nc) == NATS_CONN_STATUS_CONNECTED) {
    close_consumer(st, *qc);
    *qc = NULL;
    (*reopened)++;
    if (open_consumer(st, filter, next, headers_only, qc) != 0)
      return LU_ESTORE;
    return consumer_pending(st, *qc) == 0 ? 0 : 1;
  }
  if (s == NATS_TIMEOUT || s == NATS_NOT_FOUND || s == NATS_OK)
    return lu__jsstore_fail(st, "%s: the server sent nothing within %d ms",
                            what, LU_JS_FETCH_WAIT_MS);
  char why[400];
  lu__jsstore_reason(s, 0, why, sizeof why);
  return lu__jsstore_fail(st, "%s: %s", what, why);
}

/* Where message m stands in a query or count that reads up to stream
 * sequence `last` and has looked at everything before *next. */
enum {
  READ_FAIL = -1, /* no JetStream metadata: said in st's errmsg */
  READ_PAST,      /* appended after the read began: stop */
  READ_SEEN,      /* before *next (a replaced consumer's): skip */
  READ_TAKE       /* the next one: *next moved past it, *seq set, and
                   * *final says whether it is the read's last */
};
static int read_step(js_store_t *st, natsMsg *m, const char *what,
                     uint64_t last, uint64_t *next, uint64_t *seq,
                     int *final) {
  jsMsgMetaData *md = NULL;
  if (natsMsg_GetMetaData(&md, m) != NATS_OK) {
    lu__jsstore_fail(st, "%s: a message without JetStream metadata", what);
    return READ_FAIL;
  }
  *seq = md->Sequence.Stream;
  uint64_t left = md->NumPending;
  jsMsgMetaData_Destroy(md);
  if (*seq > last) return READ_PAST;
  if (*seq < *next) return READ_SEEN;
  *next = *seq + 1;
  *final = *seq >= last || left == 0;
  return READ_TAKE;
}

int lu__jsstore_query(lu_store_t *base, const lu_query_t *q,
                      lu_store_row_cb cb, void *ud) {
  js_store_t *st = (js_store_t *)base;
  static const lu_query_t all = {0};
  if (!st || !cb) return LU_EINVAL;
  if (st->busy) return lu__jsstore_reentered(st);
  if (!q) q = &all;
  st->base.errmsg[0] = 0;

  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  char why[512];
  natsStatus s = info_retry(st, &si, &jerr);
  if (s != NATS_OK) {
    if (s == NATS_NOT_FOUND)
      lu__fmt(why, sizeof why, "stream not found");
    else
      lu__jsstore_reason(s, jerr, why, sizeof why);
    return lu__jsstore_fail(st, "query: %s", why);
  }
  uint64_t last = si->State.LastSeq;
  jsStreamInfo_Destroy(si);
  if (last == 0 || q->after_seq >= last) return 0;

  int type_exact = 1;
  char *filter;
  if (q->type) {
    if (lu__jsstore_type_subject(&st->subj, &st->subjcap, q->type, "*",
                                 &type_exact) != 0)
      return lu__jsstore_fail(st, "out of memory");
    filter = strdup(st->subj);
  } else {
    filter = strdup(LU_SUBJ_EVENTS ".>");
  }
  if (!filter) return lu__jsstore_fail(st, "out of memory");

  /* next: the first stream sequence not yet looked at.  If the consumer
   * is lost midway (idle longer than LU_JS_QUERY_IDLE_MS behind a slow
   * reader, or a server restart: it lives in memory), a new one resumes
   * there, at most LU_JS_QUERY_REOPEN times. */
  uint64_t next = q->after_seq + 1;
  qcons_t *qc = NULL;
  int ret = open_consumer(st, filter, next, 0, &qc);
  int done = ret != 0, reopened = 0;
  size_t emitted = 0;
  if (!done) {
    int64_t pending = consumer_pending(st, qc);
    if (pending < 0)
      ret = lu__jsstore_fail(st, "query: cannot read the consumer's state");
    done = pending <= 0; /* 0: nothing matches at all */
  }
  lu_retry_t fr = read_retry(st, "reading " LU_STREAM_EVENTS);
  while (!done) {
    natsMsgList list;
    s = fetch_batch(qc, &list);
    if (s != NATS_OK || list.Count == 0) {
      batch_free(&list);
      int more = fetch_none(st, &qc, s, &fr, &reopened, filter, next, 0,
                            "query");
      if (more == 1) continue;
      if (more < 0) ret = more;
      break;
    }
    lu__retry_ok(&fr);
    for (int i = 0; i < list.Count && !done; i++) {
      natsMsg *m = list.Msgs[i];
      uint64_t seq;
      int final;
      int at = read_step(st, m, "query", last, &next, &seq, &final);
      if (at == READ_FAIL) ret = LU_ESTORE;
      if (at == READ_FAIL || at == READ_PAST) {
        done = 1;
        break;
      }
      if (at == READ_SEEN) continue;
      if (lu__nats_msg_events(m) > 1) { /* a pack, as counted */
        if (type_matches(st, m, q, type_exact))
          ret = emit_pack(st, m, seq, q, cb, ud, &emitted, &done);
      } else if (matches(st, m, q, type_exact)) {
        st->busy = 1;
        /* natsMsg data is NUL-terminated at its length. */
        ret = cb(ud, seq, natsMsg_GetData(m),
                 (size_t)natsMsg_GetDataLength(m));
        st->busy = 0;
        if (ret) done = 1;
        if (q->limit && ++emitted >= q->limit) done = 1;
      }
      if (final) done = 1;
    }
    batch_free(&list);
  }
  close_consumer(st, qc);
  free(filter);
  return ret;
}

/* ---- count ------------------------------------------------------------ */

/* The number of events: the stream's message count, corrected for packs
 * (store_jetstream.c note 7), which only reading every message's headers
 * can tell. */
int64_t lu__jsstore_count(lu_store_t *base) {
  js_store_t *st = (js_store_t *)base;
  if (!st) return LU_EINVAL;
  if (st->busy) return lu__jsstore_reentered(st);
  st->base.errmsg[0] = 0;
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus s = info_retry(st, &si, &jerr);
  if (s != NATS_OK) {
    char why[512];
    if (s == NATS_NOT_FOUND)
      lu__fmt(why, sizeof why, "stream not found");
    else
      lu__jsstore_reason(s, jerr, why, sizeof why);
    return lu__jsstore_fail(st, "count: %s", why);
  }
  uint64_t msgs = si->State.Msgs, first = si->State.FirstSeq,
           last = si->State.LastSeq;
  jsStreamInfo_Destroy(si);
  if (msgs == 0) return 0;

  qcons_t *qc = NULL;
  if (open_consumer(st, LU_SUBJ_EVENTS ".>", first, 1, &qc) != 0)
    return LU_ESTORE;
  uint64_t events = 0;
  int rc = 0, done = consumer_pending(st, qc) == 0, reopened = 0;
  uint64_t next = first;
  lu_retry_t fr = read_retry(st, "counting " LU_STREAM_EVENTS);
  while (!done) {
    natsMsgList list;
    s = fetch_batch(qc, &list);
    if (s != NATS_OK || list.Count == 0) {
      batch_free(&list);
      int more = fetch_none(st, &qc, s, &fr, &reopened, LU_SUBJ_EVENTS ".>",
                            next, 1, "count");
      if (more == 1) continue;
      if (more < 0) rc = more;
      break;
    }
    for (int i = 0; i < list.Count && !done; i++) {
      uint64_t seq;
      int final;
      int at = read_step(st, list.Msgs[i], "count", last, &next, &seq,
                         &final);
      if (at == READ_FAIL) rc = LU_ESTORE;
      if (at == READ_FAIL || at == READ_PAST) {
        done = 1;
        break;
      }
      if (at == READ_SEEN) continue;
      events += lu__nats_msg_events(list.Msgs[i]);
      if (final) done = 1;
    }
    lu__retry_ok(&fr);
    batch_free(&list);
  }
  close_consumer(st, qc);
  if (rc) return rc;
  return events > INT64_MAX ? INT64_MAX : (int64_t)events;
}
