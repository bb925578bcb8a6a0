/*
 * store_jetstream.c - the event store on NATS JetStream: stream
 * LUCENT_EVENTS holds every event lucent appends, one message each, in
 * append order; shard processes on many machines append to it and
 * `lucent events --nats` reads it back.  This file has the stream, its
 * messages, opening and appends; store_jetstream_read.c reads it.
 *
 *   stream LUCENT_EVENTS   subjects lucent.events.>, file storage, limits
 *                          retention (kept forever), duplicate window
 *                          dup_window_ms (default 2 min)
 *   message                subject  lucent.events.<type>.<id token>
 *                                   (XXH3-128 of the event id, hex)
 *                          headers  Nats-Expected-Last-Subject-Sequence: 0
 *                                   Lucent-Subject      when it has one
 *                                   Lucent-Correlation  when it has one
 *                                   Lucent-Type         only when the type
 *                                                       is not its own
 *                                                       subject token
 *                          data     the event's JSON, as given
 *
 * The stream sequence is the store sequence: it starts at 1 and grows by
 * one per stored (not duplicate) message, like the SQLite store's seq.
 *
 * A store can also pack (lu__store_jetstream_set_pack: `lucent serve`
 * packs every result with --delivery at-most-once, and the results of
 * `lucent exec` requests, LU_RECORD_ONCE, in both modes): consecutive
 * records of one type in a batch then travel as one message, note 7:
 *
 *   packed message         subject  lucent.events.<type>.pack
 *                          headers  Nats-Msg-Id     <first id>+<count>
 *                                   Lucent-Count    how many events
 *                                   Lucent-Type     as above
 *                          data     the events' JSON, one per line
 *
 * Design notes:
 *
 *  1. Appends are asynchronous publishes.  A batch's records go out with
 *     js_PublishMsgAsync, each message with its own timeout
 *     (LU_JS_APPEND_TIMEOUT_MS, nats.c's MaxWait), and each message maps
 *     to its batch (st->inflight) until ack_handler, on nats.c's thread,
 *     gets its ack, refusal or timeout.  The batch's last answer finishes
 *     it: its owner's callback says stored, or LU_ESTORE with why.  Any
 *     refusal or timeout fails the whole batch: the caller retries it, and
 *     the retry stores nothing twice (note 8).  Unlike SQLite a failed batch
 *     is not rolled back: the messages acked before the failure stay
 *     stored; the retry finds them as duplicates.
 *     lu_store_append_begin returns once the batch is published, so the
 *     manager's store thread can publish the next batch while this one's
 *     acks travel (manager.c: appends in flight); lu_store_append begins a
 *     batch and waits for it.
 *
 *  2. Nothing outlives its batch.  While the connection is down publishes
 *     wait in nats.c's reconnect buffer; if the server is back within the
 *     timeout they are stored and acked and the batch succeeds; otherwise
 *     it fails, and the buffered copies may still be stored on reconnect
 *     (harmless: same ids).  lu_store_append also bounds its own wait: a
 *     batch with no answer at all past the timeout is taken back from
 *     st->inflight (late answers are then ignored).  Closing waits for
 *     every batch begun, then takes back what nats.c still holds and waits
 *     for handlers already running.
 *
 *  3. Subjects.  A type may contain dots (they become subject levels,
 *     which is fine: lucent.events.> still covers it).  Characters that a
 *     subject cannot carry (spaces, control bytes, the wildcards '*' and
 *     '>') become '_', empty levels become '_', and a very long type is
 *     replaced by a hash; when that changes the type, the exact type
 *     travels in a Lucent-Type header and queries compare it.  One more
 *     token always follows the type's (an id token, or "pack"), so the
 *     filter lucent.events.<type>.* selects exactly one type: "a.*" does
 *     not match the records of type "a.b".
 *
 *  4. Headers cost client CPU (docs/nats-notes.md: ~2.4 us for 3 fresh
 *  headers),
 *     so only what queries filter on is sent: subject and correlation id
 *     (the causation id is in the JSON for whoever needs it).  Header
 *     values are escaped where NATS would alter them (it trims spaces and
 *     drops empty values; CR/LF would break the header block): such a
 *     value is sent with every byte < 0x20, 0x7f and '\' as \xHH and an
 *     empty value as \e; queries escape their value the same way, so the
 *     comparison stays exact.
 *
 *  6. A stream deleted under a running store (by hand, to start afresh)
 *     makes appends fail with "no responders"; a writable store then
 *     creates it again, so the caller's retry stores the batch - as the
 *     SQLite store creates a missing file.
 *
 *  7. Packing.  Every JetStream message costs nats-server ~13 us of CPU
 *     (bench/README.md, NATS mode) whatever its size: one message per
 *     result caps a store near 80k events/s on two cores.  A packed store
 *     sends up to `pack` consecutive records of the same type (and at most
 *     LU_JS_PACK_BYTES) as one message of JSON Lines; a record holding a
 *     raw newline byte (never one lucent writes: its JSON is compact)
 *     travels alone.  What a pack gives up: per-event deduplication (the
 *     pack's id is its first event's id and its size, so the store's own
 *     retry of a failed batch, which packs the same way, is still
 *     deduplicated, but a redelivered input is not: that is why only
 *     records that are never redelivered are packed - all of them with
 *     at-most-once delivery, exec results (LU_RECORD_ONCE) with
 *     either), per-event stream sequences (the events of a pack share its
 *     sequence; --after skips whole packs), the subject and correlation
 *     headers (queries parse each packed event to filter on them), and
 *     the cheap count (lu__jsstore_count reads every message's headers
 *     instead of the stream's message count).  Readers other than lucent
 *     see Lucent-Count.
 *
 *  8. Stored once, however late (docs/architecture.md, decision 3).  A
 *     record's subject ends in a token of its id, and it is published with
 *     Nats-Expected-Last-Subject-Sequence: 0: JetStream refuses it (error
 *     10071) when that subject already has a message, i.e. when the record
 *     was stored before - by a retry, a redelivery hours later, a
 *     republished input, or another shard that ran the same input during
 *     a takeover.  That refusal counts as a duplicate.  Nats-Msg-Id would
 *     only hold for the stream's duplicate window (2 min), so single
 *     records no longer carry it (it cost ~260 B of server memory per
 *     message for the window).  The price: nats-server keeps a subject
 *     index entry per record, ~300 B of memory per record per replica for
 *     as long as the record is kept (measured on nats-server 2.9,
 *     bench/README.md): the cost of deciding "stored before?" without a
 *     lookup.  Packs are not deduplicated this way (note 7: their records
 *     are never redelivered) and share one subject per type.
 *
 * Notes 5 (queries) and 9 (leader elections) are with the reader, in
 * store_jetstream_read.c.
 *
 * Errors leave their message in the store (lu_store_errmsg); opening
 * writes it to the caller's buffer.  natsStatus codes never leave the
 * store (this file and store_jetstream_read.c).  Not thread safe
 * (store.h): one caller at a time, as with SQLite; the callbacks of
 * batches begun run on nats.c's thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "retry.h"
#include "store_jetstream_internal.h"

#define LU_JS_DUP_WINDOW_MS 120000u /* default duplicate window: 2 min */
#define LU_JS_MAX_PENDING 4096      /* async publishes in flight */
#define LU_JS_APPEND_TIMEOUT_MS 5000
#define LU_JS_BATCHES_IN_FLIGHT 4   /* js_batches_in_flight */
#define LU_JS_API_WAIT_MS 5000      /* stream info, consumer create, ... */
#define LU_JS_MAX_TOKEN 200         /* longer types are hashed (note 3) */
#define LU_JS_PACK_BYTES (512 * 1024) /* below the default 1 MiB payload */

/* ---- subjects and header values (notes 3, 4) -------------------------- */

static int subj_bad(unsigned char c) {
  return c <= ' ' || c == 0x7f || c == '*' || c == '>';
}

/* Writes LU_SUBJ_EVENTS "." + the type's token + "." + tail into *buf
 * (grown): tail is a record's id token, "pack", or "*" for a query's
 * filter (note 3).  Sets *exact to whether the token is the type itself.
 * 0 or LU_ENOMEM. */
int lu__jsstore_type_subject(char **buf, size_t *cap, const char *type,
                             const char *tail, int *exact) {
  size_t tl = strlen(type);
  size_t need = sizeof LU_SUBJ_EVENTS + 2 * tl + 48 + strlen(tail);
  if (need > *cap) {
    char *p = realloc(*buf, need);
    if (!p) return LU_ENOMEM;
    *buf = p;
    *cap = need;
  }
  char *o = *buf;
  memcpy(o, LU_SUBJ_EVENTS ".", sizeof LU_SUBJ_EVENTS);
  o += sizeof LU_SUBJ_EVENTS;
  char *tok = o;
  int same = tl > 0;
  int level_empty = 1;
  for (size_t i = 0; i < tl; i++) {
    unsigned char c = (unsigned char)type[i];
    if (c == '.') {
      if (level_empty) { /* "a..b", ".a": an empty level */
        *o++ = '_';
        same = 0;
      }
      *o++ = '.';
      level_empty = 1;
      continue;
    }
    if (subj_bad(c)) {
      c = '_';
      same = 0;
    }
    *o++ = (char)c;
    level_empty = 0;
  }
  if (level_empty) { /* "", "a." */
    *o++ = '_';
    same = 0;
  }
  *o = 0;
  if ((size_t)(o - tok) > LU_JS_MAX_TOKEN) {
    lu__fmt(tok, *cap - (size_t)(tok - *buf), "_long.%016" PRIx64,
            lu__key_hash(type, tl));
    same = 0;
    o = tok + strlen(tok);
  }
  *o++ = '.';
  memcpy(o, tail, strlen(tail) + 1);
  *exact = same;
  return 0;
}

/* A record's id as a subject token: XXH3-128 in hex (an id may hold any
 * character, and be long; note 8). */
void lu__jsstore_id_token(char out[33], const char *id) {
  XXH128_hash_t h = XXH3_128bits(id, strlen(id));
  lu__fmt(out, 33, "%016llx%016llx", (unsigned long long)h.high64,
          (unsigned long long)h.low64);
}

static int hv_special(unsigned char c) {
  return c < 0x20 || c == 0x7f || c == '\\';
}

/* The header form of v: v itself when NATS carries it unchanged, else the
 * escaped form written into *buf (grown).  NULL only on ENOMEM. */
const char *lu__jsstore_hv_escape(char **buf, size_t *cap, const char *v) {
  size_t n = strlen(v);
  int esc = n == 0 || v[0] == ' ' || v[n - 1] == ' ';
  for (size_t i = 0; !esc && i < n; i++)
    esc = hv_special((unsigned char)v[i]);
  if (!esc) return v;
  if (4 * n + 3 > *cap) {
    char *p = realloc(*buf, 4 * n + 3);
    if (!p) return NULL;
    *buf = p;
    *cap = 4 * n + 3;
  }
  static const char hex[] = "0123456789abcdef";
  char *o = *buf;
  if (n == 0) {
    memcpy(o, "\\e", 3);
    return o;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)v[i];
    if (hv_special(c) || (c == ' ' && (i == 0 || i == n - 1))) {
      *o++ = '\\';
      *o++ = 'x';
      *o++ = hex[c >> 4];
      *o++ = hex[c & 15];
    } else {
      *o++ = (char)c;
    }
  }
  *o = 0;
  return *buf;
}

/* ---- errors ----------------------------------------------------------- */

/* The store's error sentence, "event store on JetStream (...): " + fmt,
 * into buf. */
static void vsay(char *buf, size_t cap, const char *fmt, va_list ap) {
  int n = snprintf(buf, cap,
                   "event store on JetStream (stream " LU_STREAM_EVENTS "): ");
  if (n > 0 && (size_t)n < cap) vsnprintf(buf + n, cap - (size_t)n, fmt, ap);
}

static void say(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(char *buf, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsay(buf, cap, fmt, ap);
  va_end(ap);
}

int lu__jsstore_fail(js_store_t *st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsay(st->base.errmsg, sizeof st->base.errmsg, fmt, ap);
  va_end(ap);
  return LU_ESTORE;
}

/* Why a JetStream API call failed, in words (assets.c's words, with the
 * wait this store uses). */
void lu__jsstore_reason(natsStatus s, jsErrCode jerr, char *buf, size_t cap) {
  if (s == NATS_TIMEOUT)
    lu__fmt(buf, cap, "JetStream did not answer within %d ms",
            LU_JS_API_WAIT_MS);
  else if (s == NATS_CONNECTION_CLOSED)
    lu__fmt(buf, cap, "the NATS connection is closed");
  else
    lu__assets_reason(s, jerr, buf, cap);
}

/* ---- appends in flight (note 1) ------------------------------------- */

/* An append begun: each of its messages maps to it in st->inflight until
 * nats.c hands that message's ack, refusal or timeout to ack_handler. */
typedef struct js_batch_s {
  size_t n;      /* events */
  size_t left;   /* messages published and not answered yet */
  int sealed;    /* publishing is over (all sent, or it stopped) */
  size_t acked, dups, failed; /* a timed-out message is in none */
  char refused[256]; /* the first refusal, as ack_handler got it */
  char stopped[512]; /* why publishing stopped early: a whole sentence */
  lu_store_done_fn done;
  void *ctx;
} js_batch_t;

/* Counts b out of the store (and frees it); under nothing. */
static void batch_forget(js_store_t *st, js_batch_t *b) {
  free(b);
  pthread_mutex_lock(&st->mu);
  if (--st->nbatches == 0) pthread_cond_broadcast(&st->idle);
  pthread_mutex_unlock(&st->mu);
}

/* Every message of b is answered: tell its owner.  Runs once, under no
 * lock, on whichever thread answered last. */
static void batch_finish(js_store_t *st, js_batch_t *b) {
  int rc = 0;
  size_t inserted = 0;
  char why[sizeof b->stopped + 128];
  if (b->stopped[0]) {
    lu__fmt(why, sizeof why, "%s", b->stopped);
    rc = LU_ESTORE;
  } else if (b->failed) {
    say(why, sizeof why, "%zu of %zu events not stored: %s; retry the batch",
        b->failed, b->n, b->refused);
    rc = LU_ESTORE;
  } else if (b->acked != b->n) { /* timeouts */
    int connected =
        natsConnection_Status(st->nc) == NATS_CONN_STATUS_CONNECTED;
    say(why, sizeof why,
        "no acks for %zu events within %d ms; batch not stored (retry "
        "it)%s",
        b->n - b->acked, LU_JS_APPEND_TIMEOUT_MS,
        connected ? "" : " (NATS connection lost, reconnecting)");
    rc = LU_ESTORE;
  } else {
    inserted = b->acked - b->dups;
  }
  b->done(b->ctx, rc, inserted, rc ? why : NULL);
  batch_forget(st, b);
}

static void ack_handler(jsCtx *js, natsMsg *msg, jsPubAck *pa,
                        jsPubAckErr *pae, void *closure) {
  js_store_t *st = closure;
  (void)js;
  size_t events = lu__nats_msg_events(msg);
  js_batch_t *finished = NULL;
  pthread_mutex_lock(&st->mu);
  js_batch_t *b = lu__ptrmap_take(&st->inflight, msg);
  if (b && pa) {
    b->acked += events;
    if (pa->Duplicate) b->dups += events;
  } else if (b && pae && pae->ErrCode == JSStreamWrongLastSequenceErr) {
    /* Its subject has a message: this record was stored before (note 8). */
    b->acked += events;
    b->dups += events;
  } else if (b && !(pae && pae->Err == NATS_TIMEOUT)) { /* refused */
    /* (A timeout only leaves acked short of n: batch_finish says so.) */
    if (pae && pae->Err == NATS_NO_RESPONDERS)
      atomic_store(&st->lost_stream, 1);
    if (!b->failed) {
      const char *id = NULL; /* a pack's; a single event has its subject */
      if (natsMsgHeader_Get(msg, HDR_ID, &id) != NATS_OK || !id)
        id = natsMsg_GetSubject(msg);
      if (pae && pae->Err == NATS_NO_RESPONDERS)
        lu__fmt(b->refused, sizeof b->refused,
                "no stream stores %s (stream " LU_STREAM_EVENTS
                " without a leader during an election, or deleted)",
                natsMsg_GetSubject(msg));
      else if (pae && pae->ErrCode)
        lu__fmt(b->refused, sizeof b->refused,
                "event %s refused: %s (JetStream error %d)", id ? id : "?",
                pae->ErrText ? pae->ErrText : "error", (int)pae->ErrCode);
      else
        lu__fmt(b->refused, sizeof b->refused, "event %s refused: %s",
                id ? id : "?",
                pae && pae->ErrText ? pae->ErrText : "error");
    }
    b->failed += events;
  }
  if (b && --b->left == 0 && b->sealed) finished = b;
  pthread_mutex_unlock(&st->mu);
  if (finished) batch_finish(st, finished);
  lu__nats_msg_release(msg); /* ours in an AckHandler; batched (nats_conn.c) */
}

/* ---- open ------------------------------------------------------------- */

static int js_append(lu_store_t *base, const lu_record_t *recs, size_t n,
                     size_t *inserted);
static int js_append_begin(lu_store_t *base, const lu_record_t *recs,
                           size_t n, lu_store_done_fn done, void *ctx);
static size_t js_batches_in_flight(const lu_store_t *base);
static void js_close(lu_store_t *base);
static const lu_store_ops_t jetstream_ops = {.name = "jetstream",
                                             .append = js_append,
                                             .append_begin = js_append_begin,
                                             .batches_in_flight =
                                                 js_batches_in_flight,
                                             .query = lu__jsstore_query,
                                             .count = lu__jsstore_count,
                                             .has = lu__jsstore_has,
                                             .close = js_close};

/* Waits (bounded) for every append begun to finish: each message has
 * its own timeout, so they all do.  Then takes back whatever nats.c still
 * holds (its handlers will not run) and waits for handlers already
 * running, so that none runs after the store is gone. */
static void quiesce(js_store_t *st) {
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += LU_JS_APPEND_TIMEOUT_MS / 1000 + 2;
  pthread_mutex_lock(&st->mu);
  while (st->nbatches &&
         pthread_cond_timedwait(&st->idle, &st->mu, &until) != ETIMEDOUT) {
  }
  pthread_mutex_unlock(&st->mu);
  if (!st->published) return;
  natsMsgList pending = {0};
  if (js_PublishAsyncGetPendingList(&pending, st->js) == NATS_OK)
    natsMsgList_Destroy(&pending);
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = 1000;
  js_PublishAsyncComplete(st->js, &po);
}

static void store_free(js_store_t *st) {
  if (!st) return;
  lu__buf_free(&st->packbuf);
  if (st->js) {
    quiesce(st);
    jsCtx_Destroy(st->js);
    /* Acked messages wait in the release batch (ack_handler): hand them
     * back now, while nats.c is surely still open. */
    lu__nats_msg_release_all();
  }
  pthread_mutex_destroy(&st->mu);
  pthread_cond_destroy(&st->idle);
  lu__ptrmap_free(&st->inflight);
  free(st->subj);
  free(st->esc);
  free(st);
}

static void js_close(lu_store_t *base) { store_free((js_store_t *)base); }

/* Finds (or, when writable, creates) the stream and checks that it is
 * ours; widens its duplicate window if it is narrower than ours, and
 * reconciles its replicas (assets.c).  `retry`: ride through an election
 * (not from the append path: the writer retries the batch itself).  0,
 * or LU_ENOENT / LU_ESTORE / LU_EINVAL with the reason in why. */
static int ensure_stream(js_store_t *st, int retry, char *why, size_t cap) {
  lu_assets_opts_t ao = st->ao;
  if (!retry) {
    /* From the append path: a stream without a leader (an election,
     * store_jetstream_read.c note 9) looks the same as a deleted one, and
     * this runs before every retry of the batch: ask briefly, do not hold
     * the writer for the context's 5 s each time. */
    ao.retry_ms = 0;
    ao.wait_ms = 1000;
  }
  return lu__assets_events(st->js, !st->readonly, st->dup_ns, &ao, NULL, why,
                           cap);
}

int lu__store_jetstream_open(lu_store_t **out, natsConnection *nc,
                             int create, uint32_t dup_window_ms, char *err,
                             size_t errlen) {
  lu_js_store_opts_t o = {.create = create,
                          .dup_window_ms = dup_window_ms,
                          .assets = {.retry_ms = LU_RETRY_DEFAULT_MS}};
  return lu__store_jetstream_open_with(out, nc, &o, err, errlen);
}

int lu__store_jetstream_open_with(lu_store_t **out, natsConnection *nc,
                                  const lu_js_store_opts_t *o, char *err,
                                  size_t errlen) {
  int create = o->create;
  uint32_t dup_window_ms = o->dup_window_ms;
  char dummy[8], why[512];
  if (!err || !errlen) {
    err = dummy;
    errlen = sizeof dummy;
  }
  err[0] = 0;
  if (!out) return LU_EINVAL;
  *out = NULL;
  if (!nc) {
    lu__fmt(err, errlen, "cannot open the event store on JetStream: no NATS "
                         "connection");
    return LU_EINVAL;
  }
  js_store_t *st = calloc(1, sizeof *st);
  if (!st) {
    lu__fmt(err, errlen, "cannot open the event store: out of memory");
    return LU_ENOMEM;
  }
  st->base.ops = &jetstream_ops;
  st->nc = nc;
  st->readonly = !create;
  st->ao = o->assets;
  if (st->ao.who) {
    lu__fmt(st->who, sizeof st->who, "%s", st->ao.who);
    st->ao.who = st->who;
  }
  pthread_mutex_init(&st->mu, NULL);
  lu__cond_init_mono(&st->idle);
  if (lu__ptrmap_init(&st->inflight, 4 * LU_JS_MAX_PENDING) != 0) {
    store_free(st);
    lu__fmt(err, errlen, "cannot open the event store: out of memory");
    return LU_ENOMEM;
  }

  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = LU_JS_API_WAIT_MS;
  jo.PublishAsync.MaxPending = LU_JS_MAX_PENDING;
  jo.PublishAsync.AckHandler = ack_handler;
  jo.PublishAsync.AckHandlerClosure = st;
  jo.PublishAsync.StallWait = LU_JS_APPEND_TIMEOUT_MS;
  natsStatus s = natsConnection_JetStream(&st->js, nc, &jo);
  if (s != NATS_OK) {
    lu__nats_reason(s, why, sizeof why);
    lu__fmt(err, errlen, "cannot open the event store on JetStream: %s",
            why);
    store_free(st);
    return LU_ESTORE;
  }

  st->dup_ns = (int64_t)(dup_window_ms ? dup_window_ms
                                       : LU_JS_DUP_WINDOW_MS) *
               NS_PER_MS; /* nanoseconds (docs/nats-notes.md, trap 2) */
  int rc = ensure_stream(st, 1, why, sizeof why);
  if (rc) {
    if (rc == LU_ENOENT)
      lu__fmt(err, errlen, "%s", why);
    else
      lu__fmt(err, errlen, "cannot open the event store on JetStream: %s",
              why);
    store_free(st);
    return rc;
  }
  *out = &st->base;
  return 0;
}

/* ---- append (notes 1, 2) ---------------------------------------------- */

int lu__jsstore_reentered(js_store_t *st) {
  lu__jsstore_fail(st, "called from inside a query callback");
  return LU_ESTATE;
}

/* Builds the message for one record.  0, or a message in st->errmsg. */
static int build_msg(js_store_t *st, const lu_record_t *r, size_t i,
                     natsMsg **out) {
  int exact;
  char tok[33];
  lu__jsstore_id_token(tok, r->id);
  if (lu__jsstore_type_subject(&st->subj, &st->subjcap, r->type, tok,
                               &exact) != 0)
    return lu__jsstore_fail(st, "out of memory");
  if (r->len > INT32_MAX)
    return lu__jsstore_fail(
        st, "record %zu of the batch is too large (%zu bytes)", i, r->len);
  natsMsg *m = NULL;
  natsStatus s = natsMsg_Create(&m, st->subj, NULL, r->json, (int)r->len);
  const char *v;
  /* Stored once, however late it comes again (note 8). */
  if (s == NATS_OK) s = natsMsgHeader_Set(m, HDR_EXPECT_NONE, "0");
  if (s == NATS_OK && r->subject) {
    v = lu__jsstore_hv_escape(&st->esc, &st->esccap, r->subject);
    s = v ? natsMsgHeader_Set(m, HDR_SUBJECT, v) : NATS_NO_MEMORY;
  }
  if (s == NATS_OK && r->correlationid) {
    v = lu__jsstore_hv_escape(&st->esc, &st->esccap, r->correlationid);
    s = v ? natsMsgHeader_Set(m, HDR_CORR, v) : NATS_NO_MEMORY;
  }
  if (s == NATS_OK && !exact) {
    v = lu__jsstore_hv_escape(&st->esc, &st->esccap, r->type);
    s = v ? natsMsgHeader_Set(m, HDR_TYPE, v) : NATS_NO_MEMORY;
  }
  if (s != NATS_OK) {
    natsMsg_Destroy(m);
    char why[256];
    lu__nats_reason(s, why, sizeof why);
    return lu__jsstore_fail(st, "record %zu of the batch: %s", i, why);
  }
  *out = m;
  return 0;
}

/* Can record r go in a pack?  When the store packs it (every record, or
 * those flagged LU_RECORD_ONCE), and not with a raw newline (note 7). */
static int packable(const js_store_t *st, const lu_record_t *r) {
  return (st->pack_all || (r->flags & LU_RECORD_ONCE)) &&
         !memchr(r->json, '\n', r->len);
}

/* How many records from recs[0] (of n) go in one message (note 7). */
static size_t pack_run(const js_store_t *st, const lu_record_t *recs,
                       size_t n) {
  if (st->pack < 2 || !packable(st, &recs[0])) return 1;
  size_t k = 1, bytes = recs[0].len;
  while (k < n && k < st->pack && strcmp(recs[k].type, recs[0].type) == 0 &&
         packable(st, &recs[k]) &&
         bytes + 1 + recs[k].len <= LU_JS_PACK_BYTES) {
    bytes += 1 + recs[k].len;
    k++;
  }
  return k;
}

/* Builds the message for recs[0..k-1], k >= 2, all of one type: their
 * JSON, one per line.  0, or a message in st->errmsg. */
static int build_pack(js_store_t *st, const lu_record_t *recs, size_t k,
                      size_t i, natsMsg **out) {
  int exact;
  if (lu__jsstore_type_subject(&st->subj, &st->subjcap, recs[0].type, "pack",
                               &exact) != 0)
    return lu__jsstore_fail(st, "out of memory");
  lu_buf_t *b = &st->packbuf;
  b->len = 0;
  for (size_t j = 0; j < k; j++) {
    if (j) lu__buf_put(b, "\n", 1);
    lu__buf_put(b, recs[j].json, recs[j].len);
  }
  if (b->oom) {
    lu__buf_free(b);
    return lu__jsstore_fail(st, "out of memory");
  }
  char count[24];
  lu__fmt(count, sizeof count, "%zu", k);
  natsMsg *m = NULL;
  natsStatus s = natsMsg_Create(&m, st->subj, NULL, b->p, (int)b->len);
  if (s == NATS_OK) s = natsMsgHeader_Set(m, HDR_COUNT, count);
  if (s == NATS_OK) {
    /* The pack's id: its first event's and its size (note 7). */
    size_t idlen = strlen(recs[0].id);
    char *id = malloc(idlen + sizeof count + 1);
    const char *v = NULL;
    if (id) {
      memcpy(id, recs[0].id, idlen);
      id[idlen] = '+';
      memcpy(id + idlen + 1, count, strlen(count) + 1);
      /* may be id itself */
      v = lu__jsstore_hv_escape(&st->esc, &st->esccap, id);
    }
    s = v ? natsMsgHeader_Set(m, HDR_ID, v) : NATS_NO_MEMORY;
    free(id);
  }
  if (s == NATS_OK && !exact) {
    const char *v = lu__jsstore_hv_escape(&st->esc, &st->esccap, recs[0].type);
    s = v ? natsMsgHeader_Set(m, HDR_TYPE, v) : NATS_NO_MEMORY;
  }
  if (s != NATS_OK) {
    natsMsg_Destroy(m);
    char why[256];
    lu__nats_reason(s, why, sizeof why);
    return lu__jsstore_fail(st, "records %zu..%zu of the batch: %s", i,
                            i + k - 1, why);
  }
  *out = m;
  return 0;
}

void lu__store_jetstream_set_pack(lu_store_t *base, size_t max_records,
                                  int all) {
  if (base && base->ops == &jetstream_ops) {
    ((js_store_t *)base)->pack = max_records;
    ((js_store_t *)base)->pack_all = all;
  }
}

/* The stream was deleted under us (an ack said no stream took the
 * subject): make it again, as the SQLite store recreates a missing file
 * (note 6).  1 if it was lost and is back. */
static int remake_lost_stream(js_store_t *st) {
  if (!atomic_exchange(&st->lost_stream, 0)) return 0;
  char why[300];
  if (ensure_stream(st, 0, why, sizeof why) == 0) return 1;
  atomic_store(&st->lost_stream, 1); /* next time */
  return 0;
}

/* Publishes recs as one batch (note 1); done is called exactly once when
 * every message is answered - maybe before this returns.  0 = begun, and
 * *out (when asked) is the batch if it may still be unfinished; else an
 * error in st->errmsg and nothing begun. */
static int js_begin(js_store_t *st, const lu_record_t *recs, size_t n,
                    lu_store_done_fn done, void *ctx, js_batch_t **out) {
  if (out) *out = NULL;
  if (!st || (n && !recs) || !done) return LU_EINVAL;
  if (st->busy) return lu__jsstore_reentered(st);
  if (st->readonly)
    return lu__jsstore_fail(st, "opened read-only, cannot append");
  st->base.errmsg[0] = 0;

  /* Check the whole batch before publishing any of it. */
  for (size_t i = 0; i < n; i++) {
    const lu_record_t *r = &recs[i];
    if (!r->id || !r->type || !r->json)
      return lu__jsstore_fail(
          st, "record %zu of the batch has no %s; batch not stored", i,
          !r->id ? "id" : !r->type ? "type" : "JSON body");
    if (!r->id[0])
      return lu__jsstore_fail(st, "record %zu of the batch has an empty "
                                  "id; batch not stored", i);
  }
  remake_lost_stream(st); /* so that this (retried) batch is stored */
  js_batch_t *b = calloc(1, sizeof *b);
  if (!b) return lu__jsstore_fail(st, "out of memory");
  b->n = n;
  b->done = done;
  b->ctx = ctx;
  pthread_mutex_lock(&st->mu);
  st->nbatches++;
  pthread_mutex_unlock(&st->mu);

  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = LU_JS_APPEND_TIMEOUT_MS; /* each message's own timeout */
  char why[sizeof b->stopped];
  why[0] = 0;
  for (size_t i = 0, k; i < n; i += k) {
    natsMsg *m = NULL;
    k = pack_run(st, recs + i, n - i);
    int rc = k > 1 ? build_pack(st, recs + i, k, i, &m)
                   : build_msg(st, &recs[i], i, &m);
    if (rc) {
      lu__fmt(why, sizeof why, "%s", st->base.errmsg);
      break;
    }
    pthread_mutex_lock(&st->mu);
    int mapped = lu__ptrmap_put(&st->inflight, m, b) == 0;
    if (mapped) b->left++;
    pthread_mutex_unlock(&st->mu);
    natsMsg *sent = m;
    natsStatus s = mapped ? js_PublishMsgAsync(st->js, &m, &po)
                          : NATS_INSUFFICIENT_BUFFER;
    if (s == NATS_OK) {
      st->published = 1;
      continue;
    }
    if (mapped) { /* not sent: no answer will come for it */
      pthread_mutex_lock(&st->mu);
      if (lu__ptrmap_take(&st->inflight, sent)) b->left--;
      pthread_mutex_unlock(&st->mu);
    }
    natsMsg_Destroy(m);
    char r[300];
    if (s == NATS_TIMEOUT)
      lu__fmt(r, sizeof r, "%d events in flight for %d ms",
              LU_JS_MAX_PENDING, LU_JS_APPEND_TIMEOUT_MS);
    else if (!mapped)
      lu__fmt(r, sizeof r, "too many events in flight");
    else
      lu__jsstore_reason(s, 0, r, sizeof r);
    say(why, sizeof why, "publishing record %zu of %zu: %s; batch not stored",
        i, n, r);
    break;
  }
  pthread_mutex_lock(&st->mu);
  memcpy(b->stopped, why, sizeof why);
  b->sealed = 1;
  int finished = b->left == 0;
  pthread_mutex_unlock(&st->mu);
  if (finished) batch_finish(st, b);
  else if (out) *out = b;
  return 0;
}

static int js_append_begin(lu_store_t *base, const lu_record_t *recs,
                           size_t n, lu_store_done_fn done, void *ctx) {
  return js_begin((js_store_t *)base, recs, n, done, ctx, NULL);
}

/* Several batches in flight, so that no batch waits for the one before's
 * acks, whether records are packed or not.  (Packing stores kept 1, for
 * fuller packs, until shards began their own batches; since then 4 is on
 * par for at-most-once events and 6% faster for exec on at-most-once
 * serves: bench/README.md, NATS mode.) */
static size_t js_batches_in_flight(const lu_store_t *base) {
  (void)base;
  return LU_JS_BATCHES_IN_FLIGHT;
}

/* lu_store_append: a batch begun, then waited for. */
typedef struct js_wait_s {
  pthread_mutex_t mu;
  pthread_cond_t cond;
  int finished, rc;
  size_t inserted;
  char why[1024];
} js_wait_t;

static void wait_done(void *ctx, int rc, size_t inserted, const char *why) {
  js_wait_t *w = ctx;
  pthread_mutex_lock(&w->mu);
  w->rc = rc;
  w->inserted = inserted;
  lu__fmt(w->why, sizeof w->why, "%s", why ? why : "");
  w->finished = 1;
  pthread_cond_signal(&w->cond);
  pthread_mutex_unlock(&w->mu);
}

static int js_append(lu_store_t *base, const lu_record_t *recs, size_t n,
                     size_t *inserted) {
  js_store_t *st = (js_store_t *)base;
  if (inserted) *inserted = 0;
  if (!st || (n && !recs)) return LU_EINVAL;
  if (st->busy) return lu__jsstore_reentered(st);
  if (!n && !st->readonly) {
    st->base.errmsg[0] = 0;
    return 0;
  }
  js_wait_t w = {.finished = 0};
  pthread_mutex_init(&w.mu, NULL);
  lu__cond_init_mono(&w.cond);
  js_batch_t *b = NULL;
  int rc = js_begin(st, recs, n, wait_done, &w, &b);
  if (rc == 0) {
    /* Every message times out by itself (note 1); this bound is a guard
     * against an answer that never comes at all. */
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += LU_JS_APPEND_TIMEOUT_MS / 1000 + 2;
    pthread_mutex_lock(&w.mu);
    while (!w.finished &&
           pthread_cond_timedwait(&w.cond, &w.mu, &until) != ETIMEDOUT) {
    }
    int finished = w.finished;
    pthread_mutex_unlock(&w.mu);
    size_t dropped = 0;
    if (!finished && b) {
      /* Take the batch back, unless its last answer is being handled
       * (then no message maps to it any more, and done is on its way). */
      pthread_mutex_lock(&st->mu);
      dropped = lu__ptrmap_drop_value(&st->inflight, b);
      pthread_mutex_unlock(&st->mu);
    }
    if (dropped) {
      batch_forget(st, b);
      rc = lu__jsstore_fail(st, "no acks for %zu events within %d ms; "
                                "batch not stored (retry it)",
                            n, LU_JS_APPEND_TIMEOUT_MS);
    } else {
      pthread_mutex_lock(&w.mu);
      while (!w.finished) pthread_cond_wait(&w.cond, &w.mu);
      pthread_mutex_unlock(&w.mu);
      rc = w.rc;
      if (rc) lu__fmt(st->base.errmsg, sizeof st->base.errmsg, "%s", w.why);
      else if (inserted) *inserted = w.inserted;
    }
  }
  pthread_mutex_destroy(&w.mu);
  pthread_cond_destroy(&w.cond);
  /* Made again now rather than at the next batch, so that the error can
   * say so. */
  if (rc == LU_ESTORE && remake_lost_stream(st))
    lu__fmt(st->base.errmsg + strlen(st->base.errmsg),
            sizeof st->base.errmsg - strlen(st->base.errmsg),
            " (stream " LU_STREAM_EVENTS " was missing: created again)");
  return rc;
}

