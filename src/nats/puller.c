/*
 * puller.c - the at-least-once queues of the NATS bus (bus_nats.c draws
 * the whole path): pulling the intake partitions' and forward queues'
 * consumers, holding and acknowledging what was pulled, deciding which
 * consumers this shard pulls as the view changes (the claimer), and
 * keeping what it holds from redelivery (the keeper).
 *
 * Pulling is ours, not nats.c's natsSubscription_Fetch: each puller sends
 * pull requests ({"batch":N,"expires":...} to $JS.API.CONSUMER.MSG.NEXT)
 * with its own inbox as the reply subject, handles each message as it
 * comes, and acks by publishing +ACK/-NAK/+WPI to the message's reply
 * subject.  nats.c 3.4.1's Fetch was seen handing back more messages than
 * the batch it was asked for (leftovers of an earlier pull request),
 * written past the end of the array it allocated for them: a heap
 * overflow that crashed serves under load (bench/README.md, NATS mode).
 *
 * A dying shard's unacked messages come back after AckWait to whoever
 * pulls its consumers then; results are idempotent (docs/architecture.md,
 * decision 3), so a re-execution stores nothing twice.  Order: one puller
 * per partition and per forward queue keeps the events of one partition
 * key (a routing key, else a subject) in order in steady state: they all
 * take one path to their shard (README, "Order").  A takeover replays
 * what the dead puller held first (adopt()), but what was running when it
 * died runs again, after newer events of the same key may have run;
 * retried events are not ordered either.
 *
 * Threads: one puller per consumer this shard pulls (puller_main), the
 * claimer (lu__natsbus_claimer_main) and the keeper
 * (lu__natsbus_keeper_main), both started by bus_nats.c; a pulled message
 * is acked on whichever thread finishes its last event (pulled_done).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "bus_internal.h"
#include "intake_pack.h"
#include "retry.h"

#define FETCH_BATCH 256
/* How long an idle pull request waits on the server.  A message that
 * arrives meanwhile is delivered at once (puller_main), so this only
 * sets how often idle pullers poll: at 200 ms, 16 intake and the forward
 * pullers of three serves cost exec's p99 17% (bench/README.md). */
#define FETCH_WAIT_MS 1000

/* ---- streams and consumers ------------------------------------------- */

int lu__natsbus_ensure_consumer(lu_natsbus_t *b, const char *stream,
                                const char *name, const char *filter,
                                uint32_t retry_ms, char *err, size_t errlen) {
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = name;
  cc.AckPolicy = js_AckExplicit;
  cc.AckWait = (int64_t)b->cfg.ack_wait_ms * 1000000; /* ns */
  cc.FilterSubject = filter;
  cc.MaxAckPending = 8192;
  cc.DeliverPolicy = js_DeliverAll;
  char what[160];
  lu__fmt(what, sizeof what, "creating consumer %s on %s", name, stream);
  lu_retry_t r = {.window_ms = retry_ms, .what = what, .who = b->self};
  for (;;) {
    jsConsumerInfo *ci = NULL;
    if (js_GetConsumerInfo(&ci, b->jsm, stream, name, NULL, NULL) ==
        NATS_OK) {
      jsConsumerInfo_Destroy(ci);
      lu__retry_ok(&r);
      return 0;
    }
    jsErrCode jerr = 0;
    natsStatus s = js_AddConsumer(&ci, b->jsm, stream, &cc, NULL, &jerr);
    if (s == NATS_OK) {
      jsConsumerInfo_Destroy(ci);
      lu__retry_ok(&r);
      return 0;
    }
    /* A timeout may have made it; a slow or electing cluster answers
     * later (serves starting together on a busy cluster met both). */
    if (!lu__retry_again(&r, s, (int)jerr, NULL)) {
      if (js_GetConsumerInfo(&ci, b->jsm, stream, name, NULL, NULL) ==
          NATS_OK) {
        jsConsumerInfo_Destroy(ci);
        return 0;
      }
      lu__fmt(what, sizeof what, "cannot create consumer %s on %s", name,
              stream);
      lu__natsbus_err(err, errlen, what, s, jerr);
      return LU_EIO;
    }
  }
}

/* ---- acknowledging what we pulled ------------------------------------ */

/* The JetStream ack protocol: verb (+ACK, -NAK, +WPI) published to the
 * reply subject the consumer gave m.  (natsMsg_Ack needs a message from a
 * nats.c pull subscription; ours come to a plain inbox, puller_main.) */
static void js_reply(natsConnection *nc, natsMsg *m, const char *verb) {
  const char *r = natsMsg_GetReply(m);
  if (r && *r) natsConnection_Publish(nc, r, verb, (int)strlen(verb));
}

/* A message handed back to whoever pulls its queue next (not a failure):
 * redelivered after 1 s, not at once (docs/nats-notes.md c4). */
#define NAK_HANDBACK "-NAK {\"delay\": 1000000000}"

/* What the JetStream ack subject of a pulled message says:
 * $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>,
 * or, from newer servers, $JS.ACK.<domain>.<account>.<stream>.<consumer>.
 * <delivered>.<sseq>... (docs/nats-notes.md, c1). */
typedef struct jsmeta_s {
  unsigned delivered; /* 1 = first delivery */
  uint64_t sseq;      /* stream sequence */
  char stream[64];
} jsmeta_t;

/* A message pulled from an intake or forward queue: acked once every event
 * in it is finished here (one, or the lines of an intake pack,
 * intake_pack.c), NAKed if any failed: it then comes back whole. */
typedef struct pulled_s {
  _Atomic size_t remaining;
  _Atomic int ok;
  natsMsg *msg;
  natsConnection *nc;
  struct lu_natsbus_s *b;
  _Atomic size_t *holding;      /* its puller's count */
  struct pulled_s *prev, *next; /* on b->held, under b->heldlock */
  uint64_t touched_ns;          /* pulled, or last said in progress */
  jsmeta_t mt;                  /* what its ack subject says (hold) */
} pulled_t;

/* Messages we hold are kept from redelivery while we work on them (the
 * keeper thread says +WPI for each every AckWait / 4): one that waits in
 * a queue, or a suspect running isolated (sandbox: a fork each), must not
 * come back to another shard - and be suspect there in turn - only
 * because this one is slow.  Only a shard that dies lets them go. */
static void held_add(pulled_t *j) {
  lu_natsbus_t *b = j->b;
  j->touched_ns = lu__now_ns();
  pthread_mutex_lock(&b->heldlock);
  j->prev = NULL;
  j->next = b->held;
  if (b->held) b->held->prev = j;
  b->held = j;
  pthread_mutex_unlock(&b->heldlock);
}

static void held_remove(pulled_t *j) {
  lu_natsbus_t *b = j->b;
  pthread_mutex_lock(&b->heldlock);
  if (j->prev) j->prev->next = j->next;
  else b->held = j->next;
  if (j->next) j->next->prev = j->prev;
  pthread_mutex_unlock(&b->heldlock);
  atomic_fetch_sub(j->holding, 1);
}

static void pulled_done(void *ctx, const lu_outcome_t *o, int stored) {
  (void)o;
  pulled_t *j = ctx;
  if (!stored) atomic_store(&j->ok, 0);
  if (atomic_fetch_sub(&j->remaining, 1) != 1) return;
  /* NAKed: redelivered; ids are idempotent.  The reply goes out before
   * the hold ends: a shard asking whether we still hold the consumer
   * (lu__natsbus_on_held) hears "no" only after it (same connection,
   * so the server has it first). */
  js_reply(j->nc, j->msg, atomic_load(&j->ok) ? "+ACK" : "-NAK");
  held_remove(j);
  lu__nats_msg_release(j->msg);
  free(j);
}

/* Is this done the acknowledgement of an intake or forward message? */
int lu__natsbus_acks_message(lu_done_t d) { return d.fn == pulled_done; }

/* A confirmed forward waits longer than half the AckWait for a live owner
 * (bus_nats.c, cfwd_extend): its intake message is still being worked
 * on. */
void lu__natsbus_in_progress(lu_done_t d) {
  if (d.fn == pulled_done) {
    pulled_t *j = d.ctx;
    js_reply(j->nc, j->msg, "+WPI");
  }
}

static int js_meta(natsMsg *m, jsmeta_t *mt) {
  memset(mt, 0, sizeof *mt);
  mt->delivered = 1;
  const char *r = natsMsg_GetReply(m);
  if (!r || strncmp(r, "$JS.ACK.", 8)) return -1;
  const char *tok[16];
  size_t len[16];
  unsigned n = 0;
  for (const char *p = r + 8; n < 16;) {
    const char *dot = strchr(p, '.');
    tok[n] = p;
    len[n++] = dot ? (size_t)(dot - p) : strlen(p);
    if (!dot) break;
    p = dot + 1;
  }
  unsigned at = n >= 10 ? 2 : 0; /* domain and account first */
  if (n < at + 4) return -1;
  if (len[at] < sizeof mt->stream) {
    memcpy(mt->stream, tok[at], len[at]);
    mt->stream[len[at]] = 0;
  }
  mt->delivered = (unsigned)strtoul(tok[at + 2], NULL, 10);
  mt->sseq = strtoull(tok[at + 3], NULL, 10);
  if (!mt->delivered) mt->delivered = 1;
  return 0;
}

/* One event of a pulled message (the whole message, or a line of a
 * pack): its outcome or its failure counts toward the message's ack. */
static void take_one(lu_natsbus_t *b, pulled_t *j, const lu_input_t *in,
                     const char *reject_why) {
  atomic_fetch_add(&j->remaining, 1);
  lu_done_t done = {pulled_done, j};
  int rc = reject_why ? lu_manager_reject(b->m, in, reject_why, done)
                      : lu_manager_take(b->m, in, done);
  if (rc) pulled_done(j, NULL, 0); /* not taken: the message comes back */
}

static void submit_pack(lu_natsbus_t *b, pulled_t *j, const char *data,
                        size_t len, const char *origin, unsigned delivery,
                        unsigned replayed) {
  /* j->remaining is 1, ours, until every line is submitted. */
  const char *cursor = NULL, *ev;
  size_t at = 0, l;
  for (size_t i = 0; (ev = lu__pack_next(data, len, &at, &l)); i++) {
    lu_input_t in = {.json = ev, .len = l,
                     .line = lu__pack_line(j->msg, i, &cursor),
                     .origin = origin, .delivery = delivery,
                     .replayed = replayed};
    take_one(b, j, &in, NULL);
  }
  pulled_done(j, NULL, 1);
}

/* ---- pulling ---------------------------------------------------------- */

/* msg holds `events` events (lu__nats_msg_events): more is an intake pack. */
/* Every message the consumer gave this puller, held or handed back:
 * the highest stream sequence is what lu__natsbus_on_held answers. */
static void note_given(puller_t *p, uint64_t sseq) {
  if (sseq > atomic_load(&p->last_sseq)) atomic_store(&p->last_sseq, sseq);
}

/* A message just taken from the inbox, held from now on (the keeper
 * keeps it from redelivery: held_add) until its events are finished.
 * NULL (and NAKed) without memory. */
static pulled_t *hold(puller_t *p, natsMsg *msg) {
  lu_natsbus_t *b = p->b;
  jsmeta_t mt;
  js_meta(msg, &mt);
  note_given(p, mt.sseq);
  atomic_fetch_add(&b->pulled, 1);
  pulled_t *j = malloc(sizeof *j);
  if (!j) {
    js_reply(b->nc, msg, "-NAK");
    natsMsg_Destroy(msg);
    return NULL;
  }
  atomic_init(&j->remaining, 1);
  atomic_init(&j->ok, 1);
  j->msg = msg;
  j->mt = mt;
  j->nc = b->nc;
  j->b = b;
  j->holding = &p->holding;
  atomic_fetch_add(&p->holding, 1);
  held_add(j);
  return j;
}

/* The Msg-Id move_to_end gives a copy.  On intake, Lucent-Delivery is
 * believed only there: a publisher's own would make its events run
 * isolated, or dead-letter them as over budget on sight. */
#define MOVED_ID_PREFIX "lucent-moved:"

static int moved_copy(natsMsg *m) {
  const char *id = NULL;
  return natsMsgHeader_Get(m, "Nats-Msg-Id", &id) == NATS_OK && id &&
         !strncmp(id, MOVED_ID_PREFIX, sizeof MOVED_ID_PREFIX - 1);
}

static void handle_pulled(puller_t *p, pulled_t *j) {
  lu_natsbus_t *b = p->b;
  natsMsg *msg = j->msg;
  size_t events = lu__nats_msg_events(msg);
  /* Its identity (for rejections) and whether it comes again: a
   * redelivery, or one a takeover replays, is suspect and runs isolated
   * (it may be what killed the shard that had it). */
  const jsmeta_t mt = j->mt;
  unsigned delivery = mt.delivered;
  if (delivery < 2 && mt.sseq && mt.sseq <= p->replay_until) delivery = 2;
  /* Replayed after a resync: it may have run before the server lost the
   * acks (adopt). */
  unsigned replayed = mt.sseq && mt.sseq <= p->rerun_until;
  /* A forward's cause was suspect before it was forwarded, and a message
   * a takeover moved (move_to_end) was held by the dead puller: either
   * says so in a header. */
  unsigned hd = 0, hr = 0;
  if (p->is_fwd || moved_copy(msg)) lu__delivery_hdr_read(msg, &hd, &hr);
  if (hd > delivery) delivery = hd;
  replayed = replayed || hr;
  char origin[96];
  lu__fmt(origin, sizeof origin, "%s:%llu", mt.stream[0] ? mt.stream : "?",
          (unsigned long long)mt.sseq);
  const char *data = natsMsg_GetData(msg);
  int len = natsMsg_GetDataLength(msg);
  if (!p->is_fwd && events > 1) {
    submit_pack(b, j, data ? data : "", len > 0 ? (size_t)len : 0, origin,
                delivery, replayed);
    return;
  }
  if (p->is_fwd) {
    lu_input_t in = {.json = data ? data : "",
                     .len = len > 0 ? (size_t)len : 0,
                     .origin = origin, .delivery = delivery,
                     .replayed = replayed};
    int rc = lu_manager_accept(b->m, &in, p->target,
                               (unsigned)lu__natsbus_hdr_u64(msg,
                                                             "Lucent-Hops", 0),
                               (lu_done_t){pulled_done, j});
    if (rc == LU_EBUSY) {
      /* Its shard is back: let it have it.  Later, not at once: a NAK
       * counts as a delivery (docs/nats-notes.md c2), and until the view
       * change moves this queue to its shard, an immediate NAK comes
       * straight back here - dozens of deliveries in a second, and the
       * event dead-lettered as over budget when it reaches its shard. */
      js_reply(b->nc, msg, NAK_HANDBACK);
      held_remove(j); /* after the NAK: see pulled_done */
      natsMsg_Destroy(msg);
      free(j);
    } else if (rc) {
      pulled_done(j, NULL, 0);
    }
  } else {
    const char *json;
    size_t jlen;
    lu_buf_t own = {0};
    char why[320];
    int bad = lu__natsbus_msg_event(msg, &json, &jlen, &own, why,
                                    sizeof why);
    lu_input_t in = {.json = json, .len = jlen,
                     .line = lu__natsbus_hdr_u64(msg, "Lucent-Line", 0),
                     .origin = origin, .delivery = delivery,
                     .replayed = replayed};
    take_one(b, j, &in, bad ? why : NULL);
    pulled_done(j, NULL, 1); /* drops the 1 it started with */
    lu__buf_free(&own);
  }
}

/* Disconnected, refused or restarting: wait a little before asking
 * again. */
static void pull_backoff(void) {
  struct timespec ts = {0, 200 * 1000000L};
  nanosleep(&ts, NULL);
}

/* A pull request ended with status st.  409 (refused: deleted, too many
 * waiting) waits a little and has adopt() check that the consumer exists
 * (and make it if not).  503 (no responders: no such consumer - a crash
 * lost it - or its stream lost its leader) has the partition taken over
 * again once the stream answers (a resync, as after a reconnect): a new
 * leader may hold acknowledged messages its copy missed the deletion of,
 * or a pending message it never redelivers (docs/nats-notes.md e2). */
static void pull_status(puller_t *p, const char *st) {
  int is503 = !strcmp(st, "503");
  if (strcmp(st, "409") && !is503) return;
  pull_backoff();
  int none = ADOPT_NONE;
  atomic_compare_exchange_strong(&p->adopt, &none,
                                 is503 ? ADOPT_RESYNC : ADOPT_ENSURE);
}

/* A pull request expired with no answer at all: no message, and not the
 * 408 a consumer sends when a request expires empty.  Nobody holds the
 * request: the consumer is gone (deleted by hand, or by a takeover that
 * could not create it again), and a pull of a missing consumer gets no
 * reply - not even 503, since JetStream's API answers that subject
 * (docs/nats-notes.md, c5).  adopt() checks, and makes it again if so;
 * a late 408 on a busy machine only costs that check. */
static void pull_unanswered(puller_t *p) {
  int none = ADOPT_NONE;
  atomic_compare_exchange_strong(&p->adopt, &none, ADOPT_ENSURE);
}

/* We stopped pulling this consumer, but our last requests stay open on the
 * server until `until` and may still deliver into the inbox, where nobody
 * would read them until AckWait.  Hand back (NAK) what comes until then.
 * A NAKed message stays pending on the consumer until someone pulls it
 * (docs/nats-notes.md, c6): its new owner must not wait for it to be
 * acknowledged (adopt(), HANDOVER). */
static void pull_release(puller_t *p, uint64_t until) {
  unsigned long long back = 0;
  for (;;) {
    uint64_t now = lu__now_ns();
    int64_t ms = now < until ? (int64_t)((until - now) / NS_PER_MS) : 0;
    natsMsg *m = NULL;
    if (natsSubscription_NextMsg(&m, p->pull.sub, ms > 0 ? ms : 1) !=
        NATS_OK) {
      if (lu__now_ns() >= until) break;
      continue;
    }
    if (!lu__nats_pull_status(m)) {
      jsmeta_t mt;
      js_meta(m, &mt);
      note_given(p, mt.sseq);
      js_reply(p->b->nc, m, NAK_HANDBACK);
      back++;
    }
    natsMsg_Destroy(m);
  }
  if (back)
    LU_LOG(LU_LOG_INFO, p->b->self, NULL,
           LU_KVS(LU_KV_STR("consumer", p->consumer),
                  LU_KV_UINT("messages", back)),
           "handed back %llu messages of %s that came after it moved", back,
           p->consumer);
}

/* Should a puller's wait end now (it is no longer wanted, or we stop)? */
static int puller_cancelled(puller_t *p) {
  pthread_mutex_lock(&p->b->lock);
  int stop = p->b->stopping || !atomic_load(&p->want);
  pthread_mutex_unlock(&p->b->lock);
  return stop;
}

/* HANDOVER: has the shard that pulled the consumer before let go of it -
 * no pull request of its own open, none of its messages held?  Then what
 * is still pending was handed back (pull_release) and waits for a pull,
 * not for an ack: waiting on, up to 2 x AckWait, stalled the partition
 * (docs/nats-notes.md, c6).  A shard that does not answer (busy, or one
 * that predates the question) is waited for as before. */
static int prev_let_go(puller_t *p, const char *prev, uint64_t floor) {
  if (!prev[0]) return 0;
  char subj[128], body[64];
  lu__fmt(subj, sizeof subj, "%s.%s", LU_SUBJ_HELD, prev);
  natsMsg *r = NULL;
  if (natsConnection_RequestString(&r, p->b->nc, subj, p->consumer, 500) !=
      NATS_OK)
    return 0;
  int len = natsMsg_GetDataLength(r);
  lu__fmt(body, sizeof body, "%.*s", len > 0 && len < 63 ? len : 0,
          natsMsg_GetData(r) ? natsMsg_GetData(r) : "");
  natsMsg_Destroy(r);
  /* Let go, and it was given messages above the ack floor, where every
   * pending one is.  A shard that never pulled the consumer ("-"), or
   * did long ago (all it was given is acked by now), says nothing about
   * them: the view's guess at the previous puller can be wrong (a
   * static view, a restart, two joins at once), and what a dead puller
   * held must stay suspect.  (The consumer's Delivered.Stream cannot
   * tell: a filtered consumer's moves past other subjects' messages.)
   * What this cannot tell apart: a shard that pulled the consumer
   * recently but not last, whose messages are above the floor until
   * they are acked.  The claimer's rendezvous gives a consumer one
   * puller per view, so that needs two view changes within one
   * handover. */
  unsigned long long seq = 0;
  char end = 0;
  return sscanf(body, "0 %llu%c", &seq, &end) == 1 && seq > floor;
}

void lu__natsbus_on_held(natsConnection *nc, natsSubscription *sub,
                         natsMsg *msg, void *closure) {
  (void)sub;
  lu_natsbus_t *b = closure;
  const char *reply = natsMsg_GetReply(msg);
  char name[96];
  int len = natsMsg_GetDataLength(msg);
  if (!reply || !*reply || len <= 0 || (size_t)len >= sizeof name) {
    natsMsg_Destroy(msg);
    return;
  }
  memcpy(name, natsMsg_GetData(msg), (size_t)len);
  name[len] = 0;
  char out[48] = "-"; /* no puller of it here */
  pthread_mutex_lock(&b->lock);
  for (unsigned i = 0; i < b->npullers; i++) {
    puller_t *p = b->pullers[i];
    if (strcmp(p->consumer, name)) continue;
    /* want before released (puller_main stores them the other way):
     * a puller about to pull again is never seen let go. */
    int busy = atomic_load(&p->holding) || atomic_load(&p->want) ||
               !atomic_load(&p->released);
    if (busy) lu__fmt(out, sizeof out, "busy");
    else
      lu__fmt(out, sizeof out, "0 %llu",
              (unsigned long long)atomic_load(&p->last_sseq));
    break;
  }
  pthread_mutex_unlock(&b->lock);
  natsConnection_PublishString(nc, reply, out);
  natsMsg_Destroy(msg);
}

/* ---- messages a new consumer would skip ------------------------------- */

/* nats-server 2.9.10 keeps, per message block, each subject's count and
 * first and last sequence (docs/nats-notes.md, h).  Removing
 * the subject's last message while others are left does not update
 * "last"; removing its first when one message is left then takes that
 * stale "last" as the new first.  The message left lies below it, and
 * every filtered read starts at that first from then on:
 * a consumer created with DeliverAll never delivers the message,
 * next_by_subj and a subject purge skip it, and a restart keeps it so.
 * In a work queue, acks are those removals: a
 * pack that runs long while later messages of its partition are acked is
 * enough (seen in test_distributed: a killed shard's pack, 24 of its
 * events never ran).  A live consumer is not affected: it has passed
 * those sequences, and redelivers what it holds by sequence.  A consumer
 * created again is, and nothing on the server can start it lower
 * (DeliverByStartSequence is refused on a work queue, and would start at
 * the same stale first).  So adopt() looks for what the old consumer
 * held and a filtered read misses, and moves each such message to the
 * end of its subject, where every read finds it. */

/* JetStream API answers; nats.c's own default. */
#define API_WAIT_MS 5000

/* The first message of our subject at or after stream sequence `from`,
 * as a filtered read finds it: *seq, or 0 when it finds none.  0, or -1
 * when the server did not answer.  (nats.c 3.4.1 gets by subject only
 * through the direct get, which the streams do not allow.) */
static int next_on_subject(puller_t *p, uint64_t from, uint64_t *seq) {
  char subj[96], num[32];
  lu__fmt(subj, sizeof subj, "$JS.API.STREAM.MSG.GET.%s", p->stream);
  lu__fmt(num, sizeof num, "%llu", (unsigned long long)from);
  lu_buf_t req = {0};
  lu__buf_puts(&req, "{\"seq\":");
  lu__buf_puts(&req, num);
  lu__buf_puts(&req, ",\"next_by_subj\":");
  lu__buf_json_str(&req, p->filter, strlen(p->filter));
  lu__buf_puts(&req, "}");
  natsMsg *r = NULL;
  natsStatus s = req.oom ? NATS_NO_MEMORY
                         : natsConnection_Request(&r, p->b->nc, subj, req.p,
                                                  (int)req.len, API_WAIT_MS);
  lu__buf_free(&req);
  if (s != NATS_OK) return -1;
  cJSON *j = cJSON_ParseWithLength(natsMsg_GetData(r),
                                   (size_t)natsMsg_GetDataLength(r));
  natsMsg_Destroy(r);
  const cJSON *at = lu__json_path(j, "message.seq");
  const cJSON *code = lu__json_path(j, "error.err_code");
  int rc = -1;
  if (cJSON_IsNumber(at) && at->valuedouble >= 1) {
    *seq = (uint64_t)at->valuedouble;
    rc = 0;
  } else if (cJSON_IsNumber(code) && code->valueint == 10037) {
    *seq = 0; /* no message found */
    rc = 0;
  }
  cJSON_Delete(j);
  return rc;
}

/* Moves message `seq` to the end of the stream if it is on our subject:
 * a copy first (its headers, a Nats-Msg-Id of its own - its original id
 * would be refused as a duplicate within the window - and Lucent-Delivery
 * saying it is suspect and may have run: handle_pulled), then the
 * original is deleted.  A failure between the two leaves both; tried
 * again, the copy is a duplicate within the window, and past it runs
 * twice with the same ids (stored once).  1 moved, 0 not ours or gone,
 * -1 on errors. */
static int move_to_end(puller_t *p, uint64_t seq, unsigned delivery) {
  lu_natsbus_t *b = p->b;
  natsMsg *m = NULL, *c = NULL;
  jsErrCode jerr = 0;
  natsStatus s = js_GetMsg(&m, b->jsm, p->stream, seq, NULL, &jerr);
  if (s == NATS_NOT_FOUND || jerr == 10037) return 0;
  if (s != NATS_OK) return -1;
  if (strcmp(natsMsg_GetSubject(m), p->filter)) {
    natsMsg_Destroy(m);
    return 0;
  }
  unsigned d, r;
  lu__delivery_hdr_read(m, &d, &r);
  char dbuf[24], id[128];
  lu__delivery_hdr(dbuf, d > delivery ? d : delivery, 1);
  lu__fmt(id, sizeof id, MOVED_ID_PREFIX "%s:%llu", p->stream,
          (unsigned long long)seq);
  s = natsMsg_Create(&c, p->filter, NULL, natsMsg_GetData(m),
                     natsMsg_GetDataLength(m));
  const char **keys = NULL;
  int n = 0;
  natsStatus hs = s == NATS_OK ? natsMsgHeader_Keys(m, &keys, &n) : s;
  if (hs == NATS_NOT_FOUND) hs = NATS_OK; /* no headers */
  for (int i = 0; hs == NATS_OK && i < n; i++) {
    /* Not the server's own (Nats-Msg-Id, Nats-Expected-*, Nats-Rollup,
     * ...: the copy could be refused for ever), nor the suspicion, set
     * below. */
    if (!strncasecmp(keys[i], "Nats-", 5) ||
        !strcasecmp(keys[i], LU_HDR_DELIVERY))
      continue;
    const char **vals = NULL;
    int nv = 0;
    hs = natsMsgHeader_Values(m, keys[i], &vals, &nv);
    for (int k = 0; hs == NATS_OK && k < nv; k++)
      hs = natsMsgHeader_Add(c, keys[i], vals[k]);
    free((void *)vals);
  }
  free((void *)keys);
  natsMsg_Destroy(m);
  if (hs == NATS_OK) hs = natsMsgHeader_Set(c, LU_HDR_DELIVERY, dbuf);
  if (hs != NATS_OK) {
    natsMsg_Destroy(c);
    return -1;
  }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MsgId = id;
  po.ExpectStream = p->stream;
  po.MaxWait = API_WAIT_MS;
  jsPubAck *pa = NULL;
  s = js_PublishMsg(&pa, b->jsm, c, &po, &jerr);
  natsMsg_Destroy(c);
  jsPubAck_Destroy(pa); /* stored, or stored by an earlier try */
  if (s != NATS_OK) return -1;
  jerr = 0;
  s = js_DeleteMsg(b->jsm, p->stream, seq, NULL, &jerr);
  if (s != NATS_OK && s != NATS_NOT_FOUND && jerr != 10057) return -1;
  return 1;
}

/* How many messages the stream holds on our subject (LONG_MAX when it
 * cannot say: then nothing bounds the walk but `pending`). */
static long subject_msgs(puller_t *p) {
  jsStreamInfo *si = NULL;
  jsOptions so;
  jsOptions_Init(&so);
  so.Stream.Info.SubjectsFilter = p->filter;
  long n = LONG_MAX;
  if (js_GetStreamInfo(&si, p->b->jsm, p->stream, &so, NULL) == NATS_OK) {
    n = 0;
    for (int i = 0; si->State.Subjects && i < si->State.Subjects->Count; i++)
      n += (long)si->State.Subjects->List[i].Msgs;
  }
  if (si) jsStreamInfo_Destroy(si);
  return n;
}

/* What the old consumer held - `pending` unacknowledged messages, all
 * above its ack floor and at most `given` - that a new consumer would
 * not deliver: moved to the end (move_to_end).  First what a filtered
 * read finds there, step by step (one request per message held: a
 * partition's few packs, or a forward queue's hundreds); only when that
 * is short, sequence by sequence until the missing ones are found.
 * Returns how many were moved, or -1 on errors (nothing lost: the old
 * consumer is still there, and the next try looks again). */
static long unhide(puller_t *p, uint64_t floor, uint64_t given,
                   int64_t pending, uint64_t waiting, unsigned delivery) {
  uint64_t *seen = malloc((size_t)pending * sizeof *seen);
  if (!seen) return -1;
  size_t nseen = 0;
  for (uint64_t s = floor + 1; s <= given && nseen < (size_t)pending;) {
    uint64_t v = 0;
    if (next_on_subject(p, s, &v)) {
      free(seen);
      return -1;
    }
    if (!v || v > given) break;
    seen[nseen++] = v;
    s = v + 1;
  }
  long moved = 0, missing = (long)((size_t)pending - nseen);
  /* NumAckPending can count more than the stream holds (acks a crashed
   * server lost: e1): walking every sequence up to `given` for those
   * would cost a request each.  The subject's message count is right
   * (only its first sequence goes stale), so what is really hidden is
   * what it holds beyond what a filtered read sees. */
  if (missing > 0) {
    long hidden = subject_msgs(p) - (long)nseen - (long)waiting;
    if (hidden < missing) missing = hidden > 0 ? hidden : 0;
  }
  size_t k = 0;
  for (uint64_t s = floor + 1; s <= given && moved < missing; s++) {
    if (k < nseen && seen[k] == s) {
      k++;
      continue;
    }
    int r = move_to_end(p, s, delivery);
    if (r < 0) {
      free(seen);
      return -1;
    }
    moved += r;
  }
  free(seen);
  return moved;
}

/* Takes a consumer that has just become ours, before the first pull
 * (docs/nats-notes.md, d and e):
 *
 *  - handover (its last puller is alive and stops pulling it now): wait,
 *    at most 2 x AckWait, until it has acknowledged what it held
 *    (NumAckPending 0), so that nothing of the partition runs in two
 *    places or out of order;
 *  - then, and at once for a takeover (its last puller died): delete the
 *    consumer, remove the messages at or below its ack floor that a
 *    server crash left in the work queue (acked, but their deletion was
 *    lost: they would never be delivered nor removed), and create it
 *    again with DeliverAll.  What the dead puller held comes first, in
 *    stream order, before anything newer - not after AckWait, behind
 *    newer messages of the same partition - except what the server's
 *    subject index hides from a new consumer: moved to the end first
 *    (unhide), it comes last.  Those messages (stream
 *    sequences up to what it had been given) are suspect: one of them
 *    may be what killed it, so they run isolated (replay_until).  The new
 *    consumer counts deliveries from 1 again: replay_until is what keeps
 *    the suspicion.
 *
 *  - resync (ours already, after a reconnect: resync_after_reconnect):
 *    as a takeover, but what we hold is not suspect, and nothing waits.
 *
 * Deleting the consumer is safe because nobody else pulls it: a puller
 * stopped by a view change NAKs what still comes (pull_release), and a
 * late ack of the old puller is still honoured by the new consumer of
 * the same name.  Errors (a restarted server, a lost connection, a
 * timeout during an election) return -1: the puller pulls nothing and
 * tries the same again until it works - a failure may come after the
 * delete, and then only this brings the consumer back.  A consumer that
 * does not exist yet (a new partition or shard) is created here, not by
 * the claimer, so that a slow server never holds the claimer on a view
 * that has changed meanwhile. */
static int adopt(puller_t *p, int mode) {
  lu_natsbus_t *b = p->b;
  jsConsumerInfo *ci = NULL;
  unsigned asked = 0;
  int let_go = 0; /* HANDOVER: what is pending was handed back */
  char prev[LU_SHARD_ID_MAX];
  pthread_mutex_lock(&b->lock);
  lu__fmt(prev, sizeof prev, "%s", p->prev);
  pthread_mutex_unlock(&b->lock);
  uint64_t until = lu__now_ns() + 2 * (uint64_t)b->cfg.ack_wait_ms * NS_PER_MS;
  /* A resync first lets what we hold of it finish: replayed while it is
   * still in our queues, a message would run twice at once, and neither
   * run could see the other's outcome in the store (ran_before).  The
   * keeper keeps them in progress meanwhile; bounded like a handover. */
  uint64_t held_until =
      lu__now_ns() + 6 * (uint64_t)b->cfg.ack_wait_ms * NS_PER_MS;
  while (mode == ADOPT_RESYNC && atomic_load(&p->holding) > 0 &&
         lu__now_ns() < held_until) {
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
    if (puller_cancelled(p)) return 0;
  }
  for (;;) {
    jsErrCode jerr = 0;
    natsStatus cs =
        js_GetConsumerInfo(&ci, b->jsm, p->stream, p->consumer, NULL, &jerr);
    if (cs == NATS_NOT_FOUND || jerr == 10014) {
      /* No such consumer: new, or lost - a server that crashed soon
       * after it was made may not have kept it (its stream kept the
       * messages), an operator or a failed takeover deleted it.  Made
       * (again) with DeliverAll, it delivers them all. */
      char err[256];
      if (lu__natsbus_ensure_consumer(b, p->stream, p->consumer, p->filter,
                                      0, err, sizeof err)) {
        LU_LOG(LU_LOG_DEBUG, b->self, NULL,
               LU_KVS(LU_KV_STR("consumer", p->consumer),
                      LU_KV_STR("error", err)),
               "cannot create consumer %s (trying again): %s", p->consumer,
               err);
        return -1;
      }
      /* A consumer that existed (ours, or one we deleted and could not
       * make again): what its stream holds may have run.  A new one's
       * messages have not. */
      if (mode == ADOPT_RESYNC || mode == ADOPT_ENSURE || p->maybe_deleted) {
        LU_LOG(LU_LOG_WARN, b->self, NULL,
               LU_KVS(LU_KV_STR("consumer", p->consumer)),
               "consumer %s was missing on the server; created it again",
               p->consumer);
        jsStreamInfo *si = NULL;
        if (js_GetStreamInfo(&si, b->jsm, p->stream, NULL, NULL) ==
            NATS_OK) {
          p->rerun_until = si->State.LastSeq;
          jsStreamInfo_Destroy(si);
        }
        p->replay_until = p->lost_suspects;
      }
      p->maybe_deleted = 0;
      p->lost_suspects = 0;
      return 0;
    }
    if (cs != NATS_OK) return -1;
    if (mode == ADOPT_ENSURE) { /* it is there: nothing to do */
      jsConsumerInfo_Destroy(ci);
      return 0;
    }
    if (mode != ADOPT_HANDOVER || ci->NumAckPending == 0 ||
        lu__now_ns() >= until)
      break;
    /* It has let go (asked below), and this is what the consumer says
     * after that answer: what is still pending was handed back. */
    if (let_go) break;
    /* Still pending: held by the shard that pulled it before, or handed
     * back by it (NAKed after it stopped pulling: pending until pulled,
     * never acked while we wait).  It knows which: ask it. */
    if (++asked % 4 == 0 &&
        prev_let_go(p, prev, ci->AckFloor.Stream)) {
      let_go = 1; /* read the consumer once more, after its last acks */
      jsConsumerInfo_Destroy(ci);
      ci = NULL;
      continue;
    }
    jsConsumerInfo_Destroy(ci);
    ci = NULL;
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
    if (puller_cancelled(p)) return 0;
  }
  uint64_t floor = ci->AckFloor.Stream, given = ci->Delivered.Stream;
  int64_t pending = ci->NumAckPending;
  uint64_t waiting = ci->NumPending;
  jsConsumerInfo_Destroy(ci);
  if (!floor && !given && !pending) return 0; /* new: nothing to do */
  if (mode == ADOPT_RESYNC && floor == given && !pending && !waiting) {
    /* Nothing delivered is open: the work queue must hold nothing at or
     * below the floor - unless a crash left acked messages there. */
    if (subject_msgs(p) == 0) return 0; /* clean (unknown: not) */
  }
  /* Not ours any more (a view change while we waited): someone else
   * takes it now, and deleting it under them would drop their acks. */
  if (puller_cancelled(p)) return 0;
  /* What the dead puller held is suspect; what a live one handed back
   * never ran, and what we resync is ours. */
  int suspect = pending > 0 && mode != ADOPT_RESYNC && !let_go;
  /* What it held that the new consumer would skip, moved while the old
   * one still exists: a failure leaves everything to look at again. */
  long moved =
      pending > 0 ? unhide(p, floor, given, pending, waiting, suspect ? 2 : 1)
                  : 0;
  if (moved < 0) return -1;
  if (moved)
    LU_LOG(LU_LOG_WARN, b->self, NULL,
           LU_KVS(LU_KV_STR("consumer", p->consumer),
                  LU_KV_INT("moved", moved)),
           "%s: %ld unacknowledged messages a new consumer would skip "
           "(nats-server's subject index) moved to the end of the queue",
           p->consumer, moved);
  p->maybe_deleted = 1; /* until it is made again: a timeout may lie */
  p->lost_suspects = suspect ? given : 0;
  if (js_DeleteConsumer(b->jsm, p->stream, p->consumer, NULL, NULL) !=
      NATS_OK)
    return -1;
  if (floor) {
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Purge.Subject = p->filter;
    o.Stream.Purge.Sequence = floor + 1; /* up to, not including */
    js_PurgeStream(b->jsm, p->stream, &o, NULL);
  }
  char err[256];
  if (lu__natsbus_ensure_consumer(b, p->stream, p->consumer, p->filter, 0, err,
                                  sizeof err)) {
    LU_LOG(LU_LOG_ERROR, b->self, NULL,
           LU_KVS(LU_KV_STR("consumer", p->consumer), LU_KV_STR("error", err)),
           "cannot create consumer %s again: %s", p->consumer, err);
    return -1;
  }
  p->maybe_deleted = 0;
  p->lost_suspects = 0;
  p->replay_until = suspect ? given : 0;
  p->rerun_until = given; /* what was given out may have run (resync) */
  LU_LOG(LU_LOG_INFO, b->self, NULL,
         LU_KVS(LU_KV_STR("consumer", p->consumer),
                LU_KV_STR("how", mode == ADOPT_RESYNC ? "resync"
                                 : mode == ADOPT_HANDOVER &&
                                         (!pending || let_go)
                                     ? "handover" : "takeover"),
                LU_KV_BOOL("handed_back", let_go),
                LU_KV_INT("unacknowledged", pending),
                LU_KV_UINT("waiting", waiting),
                LU_KV_UINT("ack_floor", floor), LU_KV_INT("moved", moved)),
         "took %s: %lld unacknowledged messages replayed first, in order",
         p->consumer, (long long)pending);
  return 0;
}

static void *puller_main(void *arg) {
  puller_t *p = arg;
  lu_natsbus_t *b = p->b;
  /* The first request asks for few messages: they may be intake packs of
   * 64 events each (the next requests adapt to what came). */
  int batch = FETCH_BATCH / 16, pulling = 0;
  int heard = 0;           /* a message or status since the last request */
  long left = 0;           /* messages asked for that have not come */
  uint64_t open_until = 0; /* when the last request has surely expired */
  size_t msgs = 0, events = 0; /* since the batch was last sized */
  for (;;) {
    if (pulling && !atomic_load(&p->want)) {
      pull_release(p, open_until);
      pulling = 0;
      left = 0;
      atomic_store(&p->released, 1); /* lu__natsbus_on_held */
    }
    pthread_mutex_lock(&b->lock);
    while (!b->stopping && !atomic_load(&p->want))
      lu__cond_wait_until(&b->cond, &b->lock, lu__now_ns() + 1000 * NS_PER_MS);
    int stop = b->stopping;
    pthread_mutex_unlock(&b->lock);
    if (stop) break;
    int mode = atomic_exchange(&p->adopt, ADOPT_NONE);
    if (mode != ADOPT_NONE) { /* before the first pull, or a resync */
      left = 0; /* a recreated consumer has no open request */
      open_until = 0;
      if (adopt(p, mode)) {
        /* Tried again until it works, whatever the mode: a takeover that
         * failed between deleting the consumer and creating it again
         * (a timeout during an election) left no consumer at all, and
         * pulls from a missing consumer are never answered. */
        pull_backoff(); /* the server may still be loading its streams */
        int none = ADOPT_NONE;
        atomic_compare_exchange_strong(&p->adopt, &none, mode);
        continue;
      }
      if (puller_cancelled(p)) continue;
    }
    if (!pulling) {
      /* released first, then want (lu__natsbus_on_held reads them the
       * other way): if the claimer has just let the consumer go, a shard
       * asking sees us busy until we have seen it too. */
      atomic_store(&p->released, 0);
      if (!atomic_load(&p->want)) {
        atomic_store(&p->released, 1);
        continue;
      }
    }
    pulling = 1;
    uint64_t now = lu__now_ns();
    if (now >= open_until) left = 0; /* every request has expired */
    if (left <= 0) { /* one request at a time: what we hold stays small */
      /* About FETCH_BATCH events per request, packs or not: the AckWait
       * of the last message of a request runs while the ones before it
       * run. */
      if (msgs && events) {
        size_t w = (size_t)FETCH_BATCH * msgs / events;
        batch = w < 1 ? 1 : w > FETCH_BATCH ? FETCH_BATCH : (int)w;
        msgs = events = 0;
      }
      /* Open until FETCH_WAIT_MS from now; a message that arrives
       * meanwhile comes at once. */
      if (lu__nats_pull_request(&p->pull, batch, FETCH_WAIT_MS, NULL, 0) !=
          NATS_OK) {
        pull_backoff();
        continue;
      }
      left += batch;
      heard = 0;
      open_until = now + (uint64_t)(FETCH_WAIT_MS + 200) * NS_PER_MS;
    }
    natsMsg *m = NULL;
    int64_t ms = (int64_t)((open_until - now) / NS_PER_MS);
    natsStatus s = natsSubscription_NextMsg(&m, p->pull.sub, ms > 0 ? ms : 1);
    if (s != NATS_OK) { /* timeout: our requests are over */
      if (s == NATS_TIMEOUT && left > 0 && !heard) pull_unanswered(p);
      left = 0;
      if (s != NATS_TIMEOUT) pull_backoff();
      continue;
    }
    heard = 1;
    const char *st = lu__nats_pull_status(m);
    if (st) {
      if (strcmp(st, "100") != 0) left = 0; /* a request is over */
      pull_status(p, st);
      natsMsg_Destroy(m);
      continue;
    }
    /* Everything the server has sent so far is taken out of the inbox
     * and held at once, before any of it is handed to the manager (which
     * blocks while the shard's queue is full): a message left waiting in
     * the inbox is not kept in progress by the keeper, and would come
     * back after AckWait - to be run a second time, as a suspect. */
    pulled_t *got[FETCH_BATCH];
    size_t ngot = 0;
    for (;;) {
      left--;
      size_t k = lu__nats_msg_events(m);
      msgs++;
      events += k;
      pulled_t *j = hold(p, m);
      if (j) got[ngot++] = j;
      int more = 0;
      m = NULL;
      if (ngot == FETCH_BATCH ||
          natsSubscription_GetPending(p->pull.sub, &more, NULL) != NATS_OK ||
          more <= 0 || natsSubscription_NextMsg(&m, p->pull.sub, 1) != NATS_OK)
        break;
      if ((st = lu__nats_pull_status(m))) {
        if (strcmp(st, "100") != 0) left = 0;
        pull_status(p, st);
        natsMsg_Destroy(m);
        break;
      }
    }
    for (size_t i = 0; i < ngot; i++) handle_pulled(p, got[i]);
  }
  return NULL;
}

/* Finds or creates the puller of a consumer (bound, not yet wanted). */
static puller_t *puller_get(lu_natsbus_t *b, const char *stream,
                            const char *consumer, const char *filter,
                            const char *target) {
  pthread_mutex_lock(&b->lock);
  for (unsigned i = 0; i < b->npullers; i++)
    if (!strcmp(b->pullers[i]->consumer, consumer)) {
      pthread_mutex_unlock(&b->lock);
      return b->pullers[i];
    }
  pthread_mutex_unlock(&b->lock);
  char err[256];
  /* The consumer itself is made by the puller (adopt()), not here. */
  if (b->npullers == b->max_pullers) return NULL;
  puller_t *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->b = b;
  atomic_init(&p->released, 1); /* no request open yet */
  lu__fmt(p->consumer, sizeof p->consumer, "%s", consumer);
  lu__fmt(p->stream, sizeof p->stream, "%s", stream);
  lu__fmt(p->filter, sizeof p->filter, "%s", filter);
  if (target) {
    p->is_fwd = 1;
    lu__fmt(p->target, sizeof p->target, "%s", target);
  }
  /* Pulled by hand (puller_main) from the durable we created
   * (docs/nats-notes.md
   * trap 3). */
  natsStatus s = lu__nats_pull_open(&p->pull, b->nc, p->stream, p->consumer);
  if (s != NATS_OK) {
    lu__natsbus_err(err, sizeof err, "cannot pull", s, 0);
    LU_LOG(LU_LOG_ERROR, b->self, NULL,
           LU_KVS(LU_KV_STR("consumer", p->consumer), LU_KV_STR("error", err)),
           "cannot pull");
    free(p);
    return NULL;
  }
  if (pthread_create(&p->thread, NULL, puller_main, p)) {
    LU_LOG(LU_LOG_ERROR, b->self, NULL,
           LU_KVS(LU_KV_STR("consumer", p->consumer)),
           "cannot start a puller thread");
    lu__nats_pull_close(&p->pull);
    free(p);
    return NULL; /* the claimer tries again within a second */
  }
  pthread_mutex_lock(&b->lock); /* only started pullers are joined */
  b->pullers[b->npullers++] = p;
  pthread_mutex_unlock(&b->lock);
  return p;
}

/* ---- claiming --------------------------------------------------------- */

/* The shard that should pull `consumer` now: rendezvous over the view. */
static int owns(const char *consumer, char (*ids)[LU_SHARD_ID_MAX], unsigned n,
                const uint64_t *seeds, const char *self) {
  if (!n) return 0;
  unsigned w = lu__rendezvous(lu__key_hash(consumer, strlen(consumer)),
                              seeds, n);
  return !strcmp(ids[w], self);
}

static int in_ids(char (*ids)[LU_SHARD_ID_MAX], unsigned n, const char *id) {
  for (unsigned i = 0; i < n; i++)
    if (!strcmp(ids[i], id)) return 1;
  return 0;
}

/* Who pulled `consumer` under the view before this one (a forward queue:
 * its own shard while that was in the view); "" when nobody. */
static void prev_puller(const lu_natsbus_t *b, const char *consumer,
                        const char *queue_of, char out[LU_SHARD_ID_MAX]) {
  out[0] = 0;
  if (queue_of && in_ids(b->prev_ids, b->prev_n, queue_of)) {
    lu__fmt(out, LU_SHARD_ID_MAX, "%s", queue_of);
    return;
  }
  if (!b->prev_n) return;
  unsigned w = lu__rendezvous(lu__key_hash(consumer, strlen(consumer)),
                              b->prev_seeds, b->prev_n);
  lu__fmt(out, LU_SHARD_ID_MAX, "%s", b->prev_ids[w]);
}

/* Starts pulling a consumer if it is not pulled yet: from its last puller
 * (handover, when that one is still in the view) or from one that is gone
 * (takeover); adopt() does the taking. */
static void want(lu_natsbus_t *b, puller_t *pl, const char *queue_of,
                 char (*ids)[LU_SHARD_ID_MAX], unsigned n) {
  if (!pl || atomic_load(&pl->want)) return;
  char prev[LU_SHARD_ID_MAX];
  prev_puller(b, pl->consumer, queue_of, prev);
  int alive = prev[0] && strcmp(prev, b->self) && in_ids(ids, n, prev);
  pthread_mutex_lock(&b->lock);
  lu__fmt(pl->prev, sizeof pl->prev, "%s", alive ? prev : "");
  pthread_mutex_unlock(&b->lock);
  atomic_store(&pl->adopt, alive ? ADOPT_HANDOVER : ADOPT_TAKEOVER);
  atomic_store(&pl->want, 1);
}

/* Decides which consumers this shard pulls, given the view now. */
static void reclaim(lu_natsbus_t *b) {
  /* The claimer thread's own arrays (reclaim runs only there). */
  char (*ids)[LU_SHARD_ID_MAX] = b->view_ids;
  uint64_t *seeds = b->view_seeds;
  size_t total = lu_manager_view(b->m, ids, MAX_VIEW);
  unsigned n = total < MAX_VIEW ? (unsigned)total : MAX_VIEW;
  for (unsigned i = 0; i < n; i++) seeds[i] = lu__shard_seed(ids[i]);
  if (!b->have_prev) {
    /* Our first claim: before we came, the others pulled it all. */
    b->prev_n = 0;
    for (unsigned i = 0; i < n; i++)
      if (strcmp(ids[i], b->self)) {
        memcpy(b->prev_ids[b->prev_n], ids[i], LU_SHARD_ID_MAX);
        b->prev_seeds[b->prev_n++] = seeds[i];
      }
    b->have_prev = 1;
  }
  for (unsigned p = 0; p < b->partitions; p++) {
    char name[32], filter[64];
    lu__fmt(name, sizeof name, "intake-%u", p);
    lu__fmt(filter, sizeof filter, "%s.%u", LU_SUBJ_INTAKE, p);
    int mine = owns(name, ids, n, seeds, b->self);
    puller_t *pl = mine ? puller_get(b, LU_STREAM_INTAKE, name, filter, NULL)
                        : NULL;
    want(b, pl, NULL, ids, n);
    if (!mine) { /* stop pulling if we had it */
      pthread_mutex_lock(&b->lock);
      for (unsigned i = 0; i < b->npullers; i++)
        if (!strcmp(b->pullers[i]->consumer, name))
          atomic_store(&b->pullers[i]->want, 0);
      pthread_mutex_unlock(&b->lock);
    }
  }
  /* Forward queues: each shard's own, and those of shards that are gone
   * (found from the stream's consumers). */
  jsConsumerNamesList *names = NULL;
  if (js_ConsumerNames(&names, b->jsm, LU_STREAM_FWD, NULL, NULL) ==
      NATS_OK && names) {
    for (int i = 0; i < names->Count; i++) {
      const char *c = names->List[i];
      if (strncmp(c, "fwd-", 4)) continue;
      const char *shard = c + 4;
      int alive = 0;
      for (unsigned k = 0; k < n; k++) alive |= !strcmp(ids[k], shard);
      int mine = alive ? !strcmp(shard, b->self)
                       : owns(c, ids, n, seeds, b->self);
      char filter[128];
      lu__fmt(filter, sizeof filter, "%s.%s", LU_SUBJ_FWD, shard);
      puller_t *pl = mine ? puller_get(b, LU_STREAM_FWD, c, filter, shard)
                          : NULL;
      want(b, pl, shard, ids, n);
      if (!mine) {
        pthread_mutex_lock(&b->lock);
        for (unsigned k = 0; k < b->npullers; k++)
          if (!strcmp(b->pullers[k]->consumer, c))
            atomic_store(&b->pullers[k]->want, 0);
        pthread_mutex_unlock(&b->lock);
      }
    }
    jsConsumerNamesList_Destroy(names);
  }
  memcpy(b->prev_ids, ids, (size_t)n * sizeof *ids);
  memcpy(b->prev_seeds, seeds, (size_t)n * sizeof *seeds);
  b->prev_n = n;
  pthread_mutex_lock(&b->lock);
  pthread_cond_broadcast(&b->cond);
  pthread_mutex_unlock(&b->lock);
}

/* After the connection came back, every partition we pull is taken over
 * again (adopt, ADOPT_RESYNC): a server that crashed lost the last
 * seconds of acks and deletions (docs/nats-notes.md e1), and what it
 * restored is wrong in two ways that never heal by themselves - acked
 * messages back in the work queue, at or below the ack floor or above it
 * (delivered, not pending: never delivered again, never removed), and a
 * message we had acked back as pending that the restored consumer never
 * redelivers, holding the ack floor for ever (seen with nats-server
 * 2.9).  Recreating the consumer replays both; what ran already is
 * recognised by the store (derived ids), so nothing is stored twice.  A
 * mere network blip costs a replay of what was in flight. */
static void resync_after_reconnect(lu_natsbus_t *b) {
  natsStatistics *st = NULL;
  uint64_t reconnects = 0;
  if (natsStatistics_Create(&st) != NATS_OK) return;
  if (natsConnection_GetStats(b->nc, st) == NATS_OK)
    natsStatistics_GetCounts(st, NULL, NULL, NULL, NULL, &reconnects);
  natsStatistics_Destroy(st);
  if (reconnects == b->reconnects_seen) return;
  b->reconnects_seen = reconnects;
  for (unsigned i = 0; i < b->npullers; i++) { /* the claimer's own list */
    puller_t *p = b->pullers[i];
    if (atomic_load(&p->want)) atomic_store(&p->adopt, ADOPT_RESYNC);
  }
}

void *lu__natsbus_claimer_main(void *arg) {
  lu_natsbus_t *b = arg;
  pthread_mutex_lock(&b->lock);
  /* A new shard first listens for a heartbeat timeout: claiming before it
   * knows the others would take their queues as if they were gone. */
  if (b->claim_delay_ms) {
    uint64_t until = lu__now_ns() + (uint64_t)b->claim_delay_ms * NS_PER_MS;
    while (!b->stopping &&
           lu__cond_wait_until(&b->cond, &b->lock, until) != ETIMEDOUT) {
    }
  }
  while (!b->stopping) {
    pthread_mutex_unlock(&b->lock);
    reclaim(b);
    resync_after_reconnect(b);
    pthread_mutex_lock(&b->lock);
    /* Every second also catches consumers of shards that died. */
    if (!b->stopping)
      lu__cond_wait_until(&b->cond, &b->lock, lu__now_ns() + 1000 * NS_PER_MS);
  }
  pthread_mutex_unlock(&b->lock);
  return NULL;
}

/* ---- the keeper ------------------------------------------------------- */

/* The keeper: +WPI for every held message older than AckWait / 4. */
void *lu__natsbus_keeper_main(void *arg) {
  lu_natsbus_t *b = arg;
  uint64_t every = (uint64_t)b->cfg.ack_wait_ms * NS_PER_MS / 4;
  pthread_mutex_lock(&b->keeplock);
  while (!b->keeper_stop) {
    pthread_mutex_unlock(&b->keeplock);
    uint64_t now = lu__now_ns();
    pthread_mutex_lock(&b->heldlock);
    for (pulled_t *j = b->held; j; j = j->next)
      if (now - j->touched_ns >= every) {
        js_reply(j->nc, j->msg, "+WPI");
        j->touched_ns = now;
      }
    pthread_mutex_unlock(&b->heldlock);
    uint64_t due = lu__natsbus_fw_resend(b, now);
    uint64_t until = now + every / 2;
    if (due && due < until) until = due;
    pthread_mutex_lock(&b->keeplock);
    if (!b->keeper_stop && !b->fwretry_new)
      lu__cond_wait_until(&b->keepcond, &b->keeplock, until);
    b->fwretry_new = 0;
  }
  pthread_mutex_unlock(&b->keeplock);
  return NULL;
}
