/*
 * bus_nats.c - lucent's bus on NATS: how events reach a shard process and
 * move between shard processes.  The manager code is the same as in
 * embedded mode; this file only plugs into its hooks (lu_bus_t,
 * the transport interface of lucent/bus.h).
 *
 * At-least-once (the default):
 *
 *   lucent publish --> LUCENT_INTAKE, subject lucent.intake.<p>, p = FNV-1a
 *                      of the event's routing key (its type's key path in
 *                      the routes table), else its subject, mod P
 *                      (intake_layout.c, docs/protocol.md: any client may
 *                      publish there); one event or a
 *                      pack of consecutive ones per message (intake_pack.c:
 *                      split here, acked when all of them are finished)
 *   intake-<p>     --> pulled by the partition's owner: the shard that wins
 *                      rendezvous hashing of "intake-<p>" over the view
 *   owner routes   --> runs it, or sends it to its owner over core NATS
 *                      (lucent.cfwd.<target>) and acks the intake message
 *                      when the owner replies that the outcome is stored
 *                      (fwd_core.c); without that reply, or with --forward
 *                      jetstream, publishes it to LUCENT_FWD subject
 *                      lucent.fwd.<target> (Nats-Msg-Id: hash of the bytes
 *                      and the target, so a redelivered forward is deduped)
 *   fwd-<shard>    --> pulled by <shard>; while <shard> is out of the view,
 *                      by the winner of rendezvous("fwd-<shard>"), which
 *                      routes each event once more (hop limit 2)
 *   acks           --> an intake or forward message is acked only after its
 *                      outcome is in the event store, or after the forward
 *                      it became is stored in LUCENT_FWD.  Emitted events
 *                      go through LUCENT_FWD too (even to this shard), so
 *                      nothing lives only in memory once its cause is acked.
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
 * A dying shard's unacked messages come back after AckWait to whoever pulls
 * its consumers then; results are idempotent (docs/architecture.md, decision
 * 3), so a
 * re-execution stores nothing twice.  Order: one puller per partition and
 * per forward queue keeps the events of one partition key (a routing key,
 * else a subject) in order in steady state: they all take one path to
 * their shard (README, "Order").  A takeover replays what the dead puller
 * held first (adopt()), but what was running when it died runs again, after
 * newer events of the same key may have run; retried events are not
 * ordered either.
 *
 * At-most-once (--delivery at-most-once): core NATS only.  lucent publish
 * sends to lucent.amo.intake (queue group: any shard takes it), forwards go
 * to lucent.amo.fwd.<target>, emitted events stay in their process.  A
 * shard that dies loses what it held.
 *
 * Content modes: a single-event intake message and an exec request are
 * CloudEvents in the NATS binding's structured mode (the JSON event as
 * payload) or binary mode (ce-* headers, the data as payload; decoded by
 * ce_binary.c into the same structured JSON, which is what runs, is
 * forwarded and is rejected: msg_event).
 *
 * Request/reply (both modes): lucent.exec (queue group lucent-exec) takes a
 * CloudEvent; the shard that gets it routes it and either runs it or passes
 * the request, reply subject included, to lucent.exec.<owner>; the shard
 * that runs it replies once the outcome is stored.  A request that finds
 * its shard's thread asleep runs on the delivery thread that took it, and
 * so do the requests waiting behind it, as one run whose outcomes make one
 * store batch (lu_manager_run with LU_RUN_INLINE: no hand-off, no thread woken).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <xxhash.h>

#include "fwd_core.h"
#include "intake_layout.h"
#include "intake_pack.h"
#include "membership.h"
#include "request.h"
#include "retry.h"

#define MAX_FWD_PULLERS 256 /* forward queues: ours and dead shards' */
#define FETCH_BATCH 256
/* How long an idle pull request waits on the server.  A message that
 * arrives meanwhile is delivered at once (puller_main), so this only
 * sets how often idle pullers poll: at 200 ms, 16 intake and the forward
 * pullers of three serves cost exec's p99 17% (bench/README.md). */
#define FETCH_WAIT_MS 1000
#define FWD_MAP_SIZE 65536 /* power of two */
#define FWD_ACK_WAIT_MS 5000 /* a durable forward's answer, at most */
/* How long a durable forward is tried again after failures an election
 * or a reconnect explains (docs/nats-notes.md a2: elections of 4 to 20 s
 * here): the forward alone, not its cause (fwd_retry). */
#define FWD_RETRY_MS 60000
#define MAX_VIEW 256       /* shards in a view (the manager keeps as many) */

typedef struct puller_s {
  struct lu_natsbus_s *b;
  char consumer[96]; /* intake-<p> or fwd-<shard> */
  char stream[32];
  char filter[128];
  char target[64];   /* fwd: the shard the queue belongs to */
  int is_fwd;
  lu_pull_t pull;     /* our pull requests (puller_main) */
  uint64_t rerun_until;  /* up to this stream sequence, messages may have
                          * run before (replayed: given out before a
                          * takeover or resync) */
  uint64_t replay_until; /* messages up to this stream sequence come
                          * again after a takeover: suspect */
  int maybe_deleted;      /* adopt() failed after asking for the delete */
  uint64_t lost_suspects; /* the replay_until that takeover would have set */
  pthread_t thread;
  _Atomic int want;
  _Atomic int adopt; /* how to take it when pulling starts (adopt()) */
  _Atomic size_t holding; /* messages pulled and not finished (pulled_t) */
} puller_t;

/* How a consumer that becomes ours is taken (adopt()). */
enum {
  ADOPT_NONE,     /* ours already */
  ADOPT_HANDOVER, /* its last puller is alive: wait until it has finished */
  ADOPT_TAKEOVER, /* its last puller is gone: replay what it held first */
  ADOPT_RESYNC,   /* ours, but the server restarted: its state may lie */
  ADOPT_ENSURE    /* ours: pulls find no consumer (a crash lost it) */
};

struct lu_natsbus_s {
  natsConnection *nc;
  jsCtx *js;    /* forwards (ack handler) */
  jsCtx *jsm;   /* management and pulls */
  lu_manager_t *m;
  lu_natsbus_cfg_t cfg;
  char self[64];
  lu_membership_t *ms;
  lu_kvsess_t *kv;
  pthread_mutex_t lock; /* pullers */
  pthread_cond_t cond;
  puller_t **pullers; /* partitions + MAX_FWD_PULLERS slots */
  unsigned npullers, max_pullers;
  unsigned partitions; /* of LUCENT_INTAKE (intake_layout.c) */
  pthread_t claimer;
  int claimer_started; /* a pthread_t has no "none" value */
  uint32_t claim_delay_ms;
  uint64_t reconnects_seen; /* the claimer's: resync_after_reconnect */
  int stopping;
  pthread_mutex_t fwlock;
  lu_ptrmap_t fwmap; /* in-flight JetStream forwards -> their fwbox_t */
  struct fwbox_s *fwretry; /* failed forwards to send again, under
                            * keeplock; the keeper sends them */
  natsSubscription *exec_sub, *exec_self_sub, *amo_sub, *amo_fwd_sub;
  pthread_mutex_t heldlock; /* held: messages pulled and not acked yet */
  struct pulled_s *held;
  pthread_t keeper;
  int keeper_running, keeper_stop;
  pthread_mutex_t keeplock;
  pthread_cond_t keepcond;
  /* The claimer's copy of the view (reclaim), and of the one before. */
  char (*view_ids)[LU_SHARD_ID_MAX];
  uint64_t *view_seeds;
  char (*prev_ids)[LU_SHARD_ID_MAX];
  uint64_t *prev_seeds;
  unsigned prev_n;
  int have_prev;
  lu_cfwd_t *cfwd; /* confirmed core forwarding (at-least-once) */
  _Atomic uint64_t pulled, forwarded, forward_errors, exec_requests,
      exec_forwarded, forwards_js, forwards_amo;
  _Atomic int js_published; /* nats.c's async pending list exists */
};

/* ---- small helpers ---------------------------------------------------- */

static void nats_err(char *err, size_t errlen, const char *what,
                     natsStatus s, jsErrCode jerr) {
  char r[256];
  lu__nats_reason(s, r, sizeof r);
  if (jerr)
    lu__fmt(err, errlen, "%s: %s (JetStream error %d)", what, r, (int)jerr);
  else
    lu__fmt(err, errlen, "%s: %s", what, r);
}

/* A numeric header's value, or dflt when the message has none. */
static uint64_t header_u64_or(natsMsg *msg, const char *name, uint64_t dflt) {
  const char *v = NULL;
  if (natsMsgHeader_Get(msg, name, &v) != NATS_OK || !v) return dflt;
  return strtoull(v, NULL, 10);
}

static uint64_t header_u64(natsMsg *msg, const char *name) {
  return header_u64_or(msg, name, 0);
}

/* ---- the event a message carries: structured or binary mode ----------- */

/* The CloudEvent in a single-event message (an intake message, an exec
 * request): in structured mode its payload (*json points into the
 * message); in the binding's binary mode (a ce-specversion header:
 * ce_binary.c) the structured JSON decoded from its headers and payload,
 * in *own.  Returns 0, or LU_EINVAL for a binary-mode message that is not
 * a valid event: why says why and *json is the message's headers and
 * payload as text, for its lucent.Rejected.  The caller frees *own. */
static int msg_event(natsMsg *m, const char **json, size_t *len,
                     lu_buf_t *own, char *why, size_t wcap) {
  const char *d = natsMsg_GetData(m);
  int dl = natsMsg_GetDataLength(m);
  *json = d ? d : "";
  *len = dl > 0 ? (size_t)dl : 0;
  const char **keys = NULL;
  int nk = 0;
  if (natsMsgHeader_Keys(m, &keys, &nk) != NATS_OK || nk <= 0) return 0;
  int ce = 0; /* only a binary-mode candidate pays for its values */
  for (int i = 0; i < nk && !ce; i++)
    ce = !strcasecmp(keys[i], "ce-specversion");
  if (!ce) {
    free((void *)keys);
    return 0;
  }
  lu_hdr_t stack[32], *h = stack;
  size_t n = 0, cap = 32;
  for (int i = 0; i < nk; i++) {
    const char **vals = NULL;
    int nv = 0;
    if (natsMsgHeader_Values(m, keys[i], &vals, &nv) != NATS_OK) continue;
    for (int k = 0; k < nv; k++) {
      if (n == cap) {
        lu_hdr_t *g = malloc(2 * cap * sizeof *g);
        if (!g) break;
        memcpy(g, h, n * sizeof *h);
        if (h != stack) free(h);
        h = g;
        cap *= 2;
      }
      h[n++] = (lu_hdr_t){keys[i], vals[k]};
    }
    free((void *)vals);
  }
  int rc = lu__msg_event(h, n, *json, *len, json, len, own, why, wcap);
  if (h != stack) free(h);
  free((void *)keys);
  return rc;
}

/* ---- streams and consumers ------------------------------------------- */

static int ensure_consumer(lu_natsbus_t *b, const char *stream,
                           const char *name, const char *filter, char *err,
                           size_t errlen) {
  jsConsumerInfo *ci = NULL;
  if (js_GetConsumerInfo(&ci, b->jsm, stream, name, NULL, NULL) == NATS_OK) {
    jsConsumerInfo_Destroy(ci);
    return 0;
  }
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = name;
  cc.AckPolicy = js_AckExplicit;
  cc.AckWait = (int64_t)b->cfg.ack_wait_ms * 1000000; /* ns */
  cc.FilterSubject = filter;
  cc.MaxAckPending = 8192;
  cc.DeliverPolicy = js_DeliverAll;
  jsErrCode jerr = 0;
  natsStatus s = js_AddConsumer(&ci, b->jsm, stream, &cc, NULL, &jerr);
  if (s == NATS_OK ||
      js_GetConsumerInfo(&ci, b->jsm, stream, name, NULL, NULL) == NATS_OK) {
    jsConsumerInfo_Destroy(ci);
    return 0;
  }
  char what[160];
  lu__fmt(what, sizeof what, "cannot create consumer %s on %s", name,
          stream);
  nats_err(err, errlen, what, s, jerr);
  return LU_EIO;
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
  held_remove(j);
  /* NAKed: redelivered; ids are idempotent. */
  js_reply(j->nc, j->msg, atomic_load(&j->ok) ? "+ACK" : "-NAK");
  lu__nats_msg_release(j->msg);
  free(j);
}

/* Is this done the acknowledgement of an intake or forward message? */
static int acks_a_message(lu_done_t d) { return d.fn == pulled_done; }

/* What the JetStream ack subject of a pulled message says:
 * $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>,
 * or, from newer servers, $JS.ACK.<domain>.<account>.<stream>.<consumer>.
 * <delivered>.<sseq>... (docs/nats-notes.md, c1). */
typedef struct jsmeta_s {
  unsigned delivered; /* 1 = first delivery */
  uint64_t sseq;      /* stream sequence */
  char stream[64];
} jsmeta_t;

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
/* A message just taken from the inbox, held from now on (the keeper
 * keeps it from redelivery: held_add) until its events are finished.
 * NULL (and NAKed) without memory. */
static pulled_t *hold(puller_t *p, natsMsg *msg) {
  lu_natsbus_t *b = p->b;
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
  j->nc = b->nc;
  j->b = b;
  j->holding = &p->holding;
  atomic_fetch_add(&p->holding, 1);
  held_add(j);
  return j;
}

static void handle_pulled(puller_t *p, pulled_t *j) {
  lu_natsbus_t *b = p->b;
  natsMsg *msg = j->msg;
  size_t events = lu__nats_msg_events(msg);
  /* Its identity (for rejections) and whether it comes again: a
   * redelivery, or one a takeover replays, is suspect and runs isolated
   * (it may be what killed the shard that had it). */
  jsmeta_t mt;
  js_meta(msg, &mt);
  unsigned delivery = mt.delivered;
  if (delivery < 2 && mt.sseq && mt.sseq <= p->replay_until) delivery = 2;
  /* Replayed after a resync: it may have run before the server lost the
   * acks (adopt). */
  unsigned replayed = mt.sseq && mt.sseq <= p->rerun_until;
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
    unsigned d, r;
    lu__delivery_hdr_read(msg, &d, &r);
    if (d > delivery) delivery = d; /* suspect before it was forwarded */
    lu_input_t in = {.json = data ? data : "",
                     .len = len > 0 ? (size_t)len : 0,
                     .origin = origin, .delivery = delivery,
                     .replayed = replayed || r};
    int rc = lu_manager_accept(b->m, &in, p->target,
                               (unsigned)header_u64(msg, "Lucent-Hops"),
                               (lu_done_t){pulled_done, j});
    if (rc == LU_EBUSY) {
      held_remove(j);
      /* Its shard is back: let it have it.  Later, not at once: a NAK
       * counts as a delivery (docs/nats-notes.md c2), and until the view
       * change moves this queue to its shard, an immediate NAK comes
       * straight back here - dozens of deliveries in a second, and the
       * event dead-lettered as over budget when it reaches its shard. */
      js_reply(b->nc, msg, NAK_HANDBACK);
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
    int bad = msg_event(msg, &json, &jlen, &own, why, sizeof why);
    lu_input_t in = {.json = json, .len = jlen,
                     .line = header_u64(msg, "Lucent-Line"),
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
 * would read them until AckWait.  Hand back (NAK) what comes until then. */
static void pull_release(puller_t *p, uint64_t until) {
  for (;;) {
    uint64_t now = lu__now_ns();
    int64_t ms = now < until ? (int64_t)((until - now) / NS_PER_MS) : 0;
    natsMsg *m = NULL;
    if (natsSubscription_NextMsg(&m, p->pull.sub, ms > 0 ? ms : 1) !=
        NATS_OK) {
      if (lu__now_ns() >= until) return;
      continue;
    }
    if (!lu__nats_pull_status(m)) js_reply(p->b->nc, m, NAK_HANDBACK);
    natsMsg_Destroy(m);
  }
}

/* Should a puller's wait end now (it is no longer wanted, or we stop)? */
static int puller_cancelled(puller_t *p) {
  pthread_mutex_lock(&p->b->lock);
  int stop = p->b->stopping || !atomic_load(&p->want);
  pthread_mutex_unlock(&p->b->lock);
  return stop;
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
 *    newer messages of the same partition.  Those messages (stream
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
      if (ensure_consumer(b, p->stream, p->consumer, p->filter, err,
                          sizeof err)) {
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
    jsStreamInfo *si = NULL;
    jsOptions so;
    jsOptions_Init(&so);
    so.Stream.Info.SubjectsFilter = p->filter;
    int clean = js_GetStreamInfo(&si, b->jsm, p->stream, &so, NULL) ==
                    NATS_OK &&
                (!si->State.Subjects || si->State.Subjects->Count == 0);
    if (si) jsStreamInfo_Destroy(si);
    if (clean) return 0;
  }
  /* Not ours any more (a view change while we waited): someone else
   * takes it now, and deleting it under them would drop their acks. */
  if (puller_cancelled(p)) return 0;
  p->maybe_deleted = 1; /* until it is made again: a timeout may lie */
  p->lost_suspects = pending > 0 && mode != ADOPT_RESYNC ? given : 0;
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
  if (ensure_consumer(b, p->stream, p->consumer, p->filter, err,
                      sizeof err)) {
    LU_LOG(LU_LOG_ERROR, b->self, NULL,
           LU_KVS(LU_KV_STR("consumer", p->consumer), LU_KV_STR("error", err)),
           "cannot create consumer %s again: %s", p->consumer, err);
    return -1;
  }
  p->maybe_deleted = 0;
  p->lost_suspects = 0;
  p->replay_until = pending > 0 && mode != ADOPT_RESYNC ? given : 0;
  p->rerun_until = given; /* what was given out may have run (resync) */
  LU_LOG(LU_LOG_INFO, b->self, NULL,
         LU_KVS(LU_KV_STR("consumer", p->consumer),
                LU_KV_STR("how", mode == ADOPT_RESYNC ? "resync"
                                 : mode == ADOPT_HANDOVER && !pending
                                     ? "handover" : "takeover"),
                LU_KV_INT("unacknowledged", pending),
                LU_KV_UINT("waiting", waiting),
                LU_KV_UINT("ack_floor", floor)),
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
    nats_err(err, sizeof err, "cannot pull", s, 0);
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

static void *claimer_main(void *arg) {
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

static void on_view_change(void *ud) {
  lu_natsbus_t *b = ud;
  pthread_mutex_lock(&b->lock);
  pthread_cond_broadcast(&b->cond); /* wake the claimer now */
  pthread_mutex_unlock(&b->lock);
}

/* ---- forwarding ------------------------------------------------------- */

/* In-flight durable forwards: message -> who to tell (a boxed lu_done_t). */
/* A durable forward in flight (fwmap) or waiting to be sent again
 * (b->fwretry). */
typedef struct fwbox_s {
  lu_done_t done;
  uint64_t first_ns; /* first failure (0: none yet) */
  uint64_t due_ns;   /* when to send it again */
  unsigned tries;
  natsMsg *msg;      /* on the retry list: the copy to send */
  struct fwbox_s *next;
} fwbox_t;

static int fw_put(lu_natsbus_t *b, natsMsg *msg, fwbox_t *box) {
  pthread_mutex_lock(&b->fwlock);
  int rc = lu__ptrmap_put(&b->fwmap, msg, box);
  pthread_mutex_unlock(&b->fwlock);
  return rc;
}

static fwbox_t *fw_take(lu_natsbus_t *b, natsMsg *msg) {
  pthread_mutex_lock(&b->fwlock);
  fwbox_t *box = lu__ptrmap_take(&b->fwmap, msg);
  pthread_mutex_unlock(&b->fwlock);
  return box;
}

static void fw_finish(fwbox_t *box, int stored) {
  lu_done_t d = box->done;
  if (box->msg) natsMsg_Destroy(box->msg);
  free(box);
  if (d.fn) d.fn(d.ctx, NULL, stored);
}

/* A copy of a forward's message (subject, headers, data), to send again:
 * the one nats.c hands back is released in its ack handler. */
static natsMsg *fw_copy(natsMsg *m) {
  natsMsg *c = NULL;
  if (natsMsg_Create(&c, natsMsg_GetSubject(m), NULL, natsMsg_GetData(m),
                     natsMsg_GetDataLength(m)) != NATS_OK)
    return NULL;
  const char **keys = NULL;
  int n = 0;
  natsStatus s = natsMsgHeader_Keys(m, &keys, &n);
  if (s == NATS_NOT_FOUND) s = NATS_OK; /* no headers */
  for (int i = 0; s == NATS_OK && i < n; i++) {
    const char *v = NULL;
    s = natsMsgHeader_Get(m, keys[i], &v);
    if (s == NATS_OK) s = natsMsgHeader_Set(c, keys[i], v ? v : "");
  }
  free((void *)keys);
  if (s != NATS_OK) {
    natsMsg_Destroy(c);
    return NULL;
  }
  return c;
}

/* Publishes a forward's message with box as its answer's handle (the
 * message becomes nats.c's).  NATS_OK, or the message is destroyed and
 * box is left to the caller. */
static natsStatus fw_publish(lu_natsbus_t *b, natsMsg *msg, fwbox_t *box) {
  /* Its own timeout: without one, a forward whose answer is lost (its
   * stream's leader died with it in flight) would wait for ever, and so
   * would its cause, held unacknowledged. */
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = FWD_ACK_WAIT_MS;
  natsStatus s = fw_put(b, msg, box) == 0 ? NATS_OK : NATS_INSUFFICIENT_BUFFER;
  if (s == NATS_OK) {
    natsMsg *keep = msg;
    s = js_PublishMsgAsync(b->js, &msg, &po);
    if (s == NATS_OK) atomic_store(&b->js_published, 1);
    else {
      fw_take(b, keep); /* not sent: we still own it */
      msg = keep;
    }
  }
  if (s != NATS_OK) natsMsg_Destroy(msg);
  return s;
}

/* A failed forward, to be sent again by the keeper (1 if queued).  Only
 * the forward is retried, not its cause: once another delivery of the
 * cause has run and acknowledged it (two processes ran it at once
 * around an election), a NAK brings nothing back, and the event the
 * forward carries - already stored as emitted - would never run. */
static int fw_retry(lu_natsbus_t *b, fwbox_t *box, natsMsg *failed,
                    const jsPubAckErr *pae) {
  uint64_t now = lu__now_ns();
  if (!box->first_ns) box->first_ns = now;
  if (!pae || !lu__retryable(pae->Err, (int)pae->ErrCode) ||
      now - box->first_ns >= (uint64_t)FWD_RETRY_MS * NS_PER_MS)
    return 0;
  natsMsg *copy = fw_copy(failed);
  if (!copy) return 0;
  box->msg = copy;
  box->tries++;
  uint64_t wait_ms = box->tries < 5 ? 100u << box->tries : 2000; /* 0.2-2 s */
  box->due_ns = now + wait_ms * NS_PER_MS;
  pthread_mutex_lock(&b->keeplock);
  int queued = !b->keeper_stop;
  if (queued) {
    box->next = b->fwretry;
    b->fwretry = box;
    pthread_cond_signal(&b->keepcond);
  }
  pthread_mutex_unlock(&b->keeplock);
  if (!queued) {
    natsMsg_Destroy(copy);
    box->msg = NULL;
  }
  return queued;
}

/* The keeper's part: sends again the forwards that are due; returns the
 * next due time (0: none). */
static uint64_t fw_resend(lu_natsbus_t *b, uint64_t now) {
  pthread_mutex_lock(&b->keeplock);
  fwbox_t *due = NULL, **pp = &b->fwretry;
  uint64_t next = 0;
  while (*pp) {
    fwbox_t *x = *pp;
    if (x->due_ns <= now) {
      *pp = x->next;
      x->next = due;
      due = x;
    } else {
      if (!next || x->due_ns < next) next = x->due_ns;
      pp = &x->next;
    }
  }
  pthread_mutex_unlock(&b->keeplock);
  while (due) {
    fwbox_t *x = due;
    due = x->next;
    natsMsg *m = x->msg;
    x->msg = NULL;
    if (fw_publish(b, m, x) != NATS_OK) {
      atomic_fetch_add(&b->forward_errors, 1);
      fw_finish(x, 0);
    }
  }
  return next;
}

static void on_fwd_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa,
                       jsPubAckErr *pae, void *closure) {
  (void)js;
  lu_natsbus_t *b = closure;
  fwbox_t *box = fw_take(b, msg);
  if (box && !pa && fw_retry(b, box, msg, pae)) box = NULL;
  if (!pa) atomic_fetch_add(&b->forward_errors, 1);
  if (box) fw_finish(box, pa != NULL);
  lu__nats_msg_release(msg);
}

/* The keeper: +WPI for every held message older than AckWait / 4, and
 * sends again the forwards that are due (fw_retry). */
static void *keeper_main(void *arg) {
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
    uint64_t due = fw_resend(b, now);
    uint64_t until = now + every / 2;
    if (due && due < until) until = due;
    pthread_mutex_lock(&b->keeplock);
    if (!b->keeper_stop && !(b->fwretry && b->fwretry->due_ns <= until))
      lu__cond_wait_until(&b->keepcond, &b->keeplock, until);
  }
  pthread_mutex_unlock(&b->keeplock);
  return NULL;
}

/* The durable forward: a LUCENT_FWD message, done when it is stored. */
static void js_forward(void *ud, const lu_fwd_t *fw, lu_done_t done) {
  lu_natsbus_t *b = ud;
  char subj[128], hbuf[16];
  atomic_fetch_add(&b->forwards_js, 1);
  lu__fmt(subj, sizeof subj, "%s.%s", LU_SUBJ_FWD, fw->target);
  lu__fmt(hbuf, sizeof hbuf, "%u", fw->hops);
  natsMsg *msg = NULL;
  natsStatus s = natsMsg_Create(&msg, subj, NULL, fw->json, (int)fw->len);
  if (s == NATS_OK) s = natsMsgHeader_Set(msg, "Lucent-Hops", hbuf);
  char dbuf[24];
  lu__delivery_hdr(dbuf, fw->delivery, fw->replayed);
  if (s == NATS_OK && dbuf[0])
    s = natsMsgHeader_Set(msg, LU_HDR_DELIVERY, dbuf);
  if (s == NATS_OK) {
    /* Same bytes to the same shard = the same forward: dedup id. */
    XXH128_hash_t h = XXH3_128bits_withSeed(fw->json, fw->len,
                                            lu__shard_seed(fw->target));
    char id[48];
    lu__fmt(id, sizeof id, "%016llx%016llx-%u", (unsigned long long)h.high64,
            (unsigned long long)h.low64, fw->hops);
    s = natsMsgHeader_Set(msg, "Nats-Msg-Id", id);
  }
  fwbox_t *box = s == NATS_OK ? calloc(1, sizeof *box) : NULL;
  if (s == NATS_OK && !box) s = NATS_NO_MEMORY;
  if (s == NATS_OK) {
    box->done = done;
    s = fw_publish(b, msg, box); /* msg is nats.c's or destroyed */
    msg = NULL;
  }
  if (s != NATS_OK) {
    atomic_fetch_add(&b->forward_errors, 1);
    natsMsg_Destroy(msg);
    free(box);
    if (done.fn) done.fn(done.ctx, NULL, 0);
  }
}

static void bus_forward(void *ud, const lu_fwd_t *fw, lu_done_t done) {
  lu_natsbus_t *b = ud;
  atomic_fetch_add(&b->forwarded, 1);
  if (b->cfg.delivery != LU_DELIVERY_AT_MOST_ONCE) {
    /* An intake message's first hop waits unacked for its owner's "stored"
     * (fwd_core.c); emitted events and re-routes stay durable. */
    if (!(b->cfwd && fw->hops == 1 && acks_a_message(done) &&
          lu__cfwd_send(b->cfwd, fw->target, fw->json, fw->len,
                        fw->delivery, fw->replayed, done) == 0))
      js_forward(b, fw, done);
    return;
  }
  /* At-most-once: core NATS.  A first hop travels bare (a header block is
   * half the CPU of a core message); on_amo reads a missing Lucent-Hops as
   * 1.  (Nothing is redelivered here, so nothing is suspect.) */
  char subj[128];
  atomic_fetch_add(&b->forwards_amo, 1);
  lu__fmt(subj, sizeof subj, "%s.%s", LU_SUBJ_AMO_FWD, fw->target);
  natsStatus s;
  if (fw->hops == 1) {
    s = natsConnection_Publish(b->nc, subj, fw->json, (int)fw->len);
  } else {
    char hbuf[16];
    lu__fmt(hbuf, sizeof hbuf, "%u", fw->hops);
    natsMsg *msg = NULL;
    s = natsMsg_Create(&msg, subj, NULL, fw->json, (int)fw->len);
    if (s == NATS_OK) s = natsMsgHeader_Set(msg, "Lucent-Hops", hbuf);
    if (s == NATS_OK) s = natsConnection_PublishMsg(b->nc, msg);
    natsMsg_Destroy(msg);
  }
  if (s != NATS_OK) atomic_fetch_add(&b->forward_errors, 1);
  if (done.fn) done.fn(done.ctx, NULL, s == NATS_OK);
}

/* A confirmed forward waits longer than half the AckWait for a live owner:
 * tell JetStream its intake message is still being worked on. */
static void cfwd_extend(void *ud, lu_done_t done) {
  (void)ud;
  if (done.fn == pulled_done) {
    pulled_t *j = done.ctx;
    js_reply(j->nc, j->msg, "+WPI");
  }
}

/* An event another shard sent us over core NATS: pinned here. */
static int cfwd_accept(void *ud, const lu_input_t *in, lu_done_t done) {
  lu_natsbus_t *b = ud;
  atomic_fetch_add(&b->pulled, 1);
  return lu_manager_accept(b->m, in, b->self, 1, done);
}

/* Alive = in the manager's view (which outlives the membership, so this
 * stays valid while the shard finishes its work during a stop). */
static int peer_alive(void *ud, const char *shard) {
  lu_natsbus_t *b = ud;
  return !strcmp(shard, b->self) || lu_manager_in_view(b->m, shard);
}

static int bus_sticky(void *ud, const char *key, size_t klen,
                      const char *candidate, char *out, size_t cap) {
  lu_natsbus_t *b = ud;
  if (!b->kv) return LU_ENOENT;
  return lu__kvsess_bind(b->kv, key, klen, candidate, peer_alive, b, out,
                         cap);
}

/* ---- request/reply ---------------------------------------------------- */

typedef struct reply_s {
  lu_natsbus_t *b;
  char subject[];
} reply_t;

/* stored: the outcome is in the store ("stored":true), or it was decided
 * and is on its way there (LU_RUN_EXECUTED: "stored":false). */
static void reply_json(lu_natsbus_t *b, const char *subject,
                       const lu_outcome_t *o, const char *error,
                       int stored) {
  lu_buf_t r = {0};
  int ok = o && o->kind == LU_OUTCOME_COMPLETED;
  lu__buf_puts(&r, ok ? "{\"success\":true" : "{\"success\":false");
  if (o) {
    lu__buf_puts(&r, ",\"outcome\":\"");
    lu__buf_puts(&r, lu_outcome_name(o->kind));
    lu__buf_puts(&r, "\"");
  }
  if (ok) {
    lu__buf_puts(&r, ",\"result\":");
    lu__buf_puts(&r, o->result_json ? o->result_json : "null");
  }
  const char *why = error ? error : o ? o->reason : NULL;
  if (why) {
    lu__buf_puts(&r, ",\"error\":");
    lu__buf_json_str(&r, why, strlen(why));
  }
  if (o && o->function) {
    lu__buf_puts(&r, ",\"function\":");
    lu__buf_json_str(&r, o->function, strlen(o->function));
  }
  if (o && o->shard) {
    lu__buf_puts(&r, ",\"shard\":");
    lu__buf_json_str(&r, o->shard, strlen(o->shard));
  }
  if (o && o->event_id) {
    lu__buf_puts(&r, ",\"eventId\":");
    lu__buf_json_str(&r, o->event_id, strlen(o->event_id));
  }
  if (o) {
    char a[48];
    lu__fmt(a, sizeof a, ",\"attempts\":%u,\"stored\":%s", o->attempts,
            stored ? "true" : "false");
    lu__buf_puts(&r, a);
  }
  lu__buf_puts(&r, "}");
  if (!r.oom) natsConnection_Publish(b->nc, subject, r.p, (int)r.len);
  lu__buf_free(&r);
}

static void reply_done(void *ctx, const lu_outcome_t *o, int stored) {
  reply_t *rp = ctx;
  reply_json(rp->b, rp->subject, o,
             !o ? "forwarded, but not executed here" :
             !stored ? "outcome could not be stored" : NULL, stored);
  free(rp);
}

/* LU_RUN_EXECUTED: the outcome as decided, not stored yet (stored = 0);
 * an outcome the watchdog decided comes through the store as usual. */
static void reply_executed(void *ctx, const lu_outcome_t *o, int stored) {
  reply_t *rp = ctx;
  reply_json(rp->b, rp->subject, o,
             o ? NULL : "forwarded, but not executed here", stored);
  free(rp);
}

/* When a request is answered: its Lucent-Exec-Reply header (executed or
 * stored), else the serve's --exec-reply.  -1: a header with another
 * value (the reply says so). */
static int exec_mode(lu_natsbus_t *b, natsMsg *msg, const char **hdr) {
  *hdr = NULL;
  if (natsMsgHeader_Get(msg, LU_HDR_EXEC_REPLY, hdr) != NATS_OK || !*hdr) {
    *hdr = NULL;
    return b->cfg.exec_reply_executed;
  }
  if (!strcmp(*hdr, "executed")) return 1;
  if (!strcmp(*hdr, "stored")) return 0;
  return -1;
}

/* A request the manager could not take (LU_ENOMEM: its done will not
 * run): the requester hears so now rather than time out. */
static void exec_oom(reply_t *rp) {
  reply_json(rp->b, rp->subject, NULL, "out of memory; try again", 0);
  free(rp);
}

/* Must this event run on a particular shard (hash or session owner)? */
static int needs_owner(lu_natsbus_t *b, const lu_event_t *ev) {
  const lu_fn_t *fn =
      lu_registry_router(lu_manager_registry(b->m), lu_event_type(ev));
  return fn && fn->strategy && (!strcmp(fn->strategy, "hash_based") ||
                                !strcmp(fn->strategy, "sticky_session"));
}

/* One request; 1 if it went to lu_manager_run. */
static int exec_request(lu_natsbus_t *b, natsSubscription *sub,
                        natsMsg *msg) {
  const char *reply = natsMsg_GetReply(msg);
  if (!reply || !*reply) {
    lu__nats_msg_release(msg);
    return 0;
  }
  reply_t *rp = malloc(sizeof *rp + strlen(reply) + 1);
  if (!rp) {
    lu__nats_msg_release(msg);
    return 0;
  }
  rp->b = b;
  strcpy(rp->subject, reply);
  const char *hdr;
  int executed = exec_mode(b, msg, &hdr);
  if (executed < 0) {
    reply_json(b, reply, NULL,
               "header " LU_HDR_EXEC_REPLY " wants executed or stored", 0);
    free(rp);
    lu__nats_msg_release(msg);
    return 0;
  }
  lu_done_t done = {executed ? reply_executed : reply_done, rp};
  lu_event_t *ev = NULL;
  char why[320];
  /* Structured or binary mode: data is the structured event either way
   * (binary mode: decoded into own, and forwarded that way). */
  const char *data;
  size_t len;
  lu_buf_t own = {0};
  int bad = msg_event(msg, &data, &len, &own, why, sizeof why) != 0;
  lu_input_t in = {.json = data, .len = len, .origin = LU_SUBJ_EXEC};
  if (bad || lu_event_parse(&ev, data, len, why, sizeof why) != 0) {
    /* Recorded as lucent.Rejected like any bad input; the reply says why,
     * once it is stored (nothing ran: nothing to answer early). */
    done.fn = reply_done;
    if (bad ? lu_manager_reject(b->m, &in, why, done)
            : lu_manager_take(b->m, &in, done))
      exec_oom(rp);
    lu__buf_free(&own);
    lu__nats_msg_release(msg);
    return 0;
  }
  /* Run it on this thread if the shard sleeps (LU_RUN_INLINE):
   * no hand-off to wake it.  When more requests wait behind this one, say
   * so (LU_RUN_MORE): the thread keeps the shard's turn and runs them
   * all as one run whose outcomes make one store batch.  (Running each on
   * its own, each its own batch, cost 16% of exec's rate with 64 in
   * flight; queueing them all for the shard's thread cost a wake-up per
   * burst and ~15% more serve CPU per request on 3 serves than this.) */
  int queued = 0;
  natsSubscription_GetPending(sub, &queued, NULL);
  /* A request sent again (cmd_exec.c: no reply in time, an election)
   * may have run already: not LU_RUN_ONCE, so its records are stored one
   * per message and deduplicated by id, never packed. */
  unsigned attempt = (unsigned)header_u64_or(msg, LU_HDR_ATTEMPT, 1);
  unsigned inl = (attempt > 1 ? 0u : LU_RUN_ONCE) | LU_RUN_INLINE |
                 (queued > 0 ? LU_RUN_MORE : 0) |
                 (executed ? LU_RUN_EXECUTED : 0);
  if (sub == b->exec_self_sub) { /* forwarded to us: pinned */
    if (lu_manager_run(b->m, ev, b->self, inl, done)) exec_oom(rp);
    lu__buf_free(&own);
    lu__nats_msg_release(msg);
    return 1;
  }
  char target[64];
  int local = 0;
  int rc = lu_manager_route(b->m, ev, target, sizeof target, &local, why,
                             sizeof why), ran = 0;
  if (rc != LU_ROUTE_OK) {
    lu_event_free(ev);
    done.fn = reply_done; /* answered once recorded, in both modes */
    if (lu_manager_take(b->m, &in, done)) /* records it */
      exec_oom(rp);
  } else if (local || !needs_owner(b, ev)) {
    /* The queue group already spread requests: a function that may run
     * anywhere (round_robin, load_balanced) runs where it landed. */
    if (lu_manager_run(b->m, ev, local ? target : b->self, inl, done))
      exec_oom(rp);
    else
      ran = 1;
  } else {
    lu_event_free(ev);
    free(rp);
    char subj[128];
    lu__fmt(subj, sizeof subj, "%s.%s", LU_SUBJ_EXEC, target);
    atomic_fetch_add(&b->exec_forwarded, 1);
    /* The owner answers as the request asked (its header goes along),
     * else as the owner's serve does; a request sent again says so. */
    natsMsg *fw = NULL;
    natsStatus st = natsMsg_Create(&fw, subj, reply, data, (int)len);
    if (st == NATS_OK && hdr)
      st = natsMsgHeader_Set(fw, LU_HDR_EXEC_REPLY, hdr);
    if (st == NATS_OK && attempt > 1) {
      char abuf[16];
      lu__fmt(abuf, sizeof abuf, "%u", attempt);
      st = natsMsgHeader_Set(fw, LU_HDR_ATTEMPT, abuf);
    }
    if (st == NATS_OK) st = natsConnection_PublishMsg(b->nc, fw);
    natsMsg_Destroy(fw);
    if (st != NATS_OK)
      reply_json(b, reply, NULL, "cannot forward the request", 0);
  }
  lu__buf_free(&own);
  lu__nats_msg_release(msg);
  return ran;
}

static void on_exec(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                    void *closure) {
  (void)nc;
  lu_natsbus_t *b = closure;
  atomic_fetch_add(&b->exec_requests, 1);
  /* A burst whose last request did not run here: end it now rather than
   * leave the shard's turn to be taken over (~1 ms later). */
  if (!exec_request(b, sub, msg)) lu_manager_end_burst(b->m);
}

static void on_amo(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                   void *closure) {
  (void)nc;
  lu_natsbus_t *b = closure;
  const char *data = natsMsg_GetData(msg);
  int len = natsMsg_GetDataLength(msg);
  lu_done_t none = {NULL, NULL};
  atomic_fetch_add(&b->pulled, 1);
  /* At most once: a message that cannot be taken (no memory) is lost,
   * as a message of a shard that dies is. */
  if (sub == b->amo_fwd_sub) {
    lu_input_t in = {.json = data ? data : "",
                     .len = len > 0 ? (size_t)len : 0};
    lu_manager_accept(b->m, &in, b->self,
                      (unsigned)header_u64_or(msg, "Lucent-Hops", 1), none);
  } else {
    const char *json;
    size_t jlen;
    lu_buf_t own = {0};
    char why[320];
    int bad = msg_event(msg, &json, &jlen, &own, why, sizeof why) != 0;
    lu_input_t in = {.json = json, .len = jlen,
                     .line = header_u64(msg, "Lucent-Line"),
                     .origin = LU_SUBJ_AMO_INTAKE};
    if (bad) lu_manager_reject(b->m, &in, why, none);
    else lu_manager_take(b->m, &in, none);
    lu__buf_free(&own);
  }
  lu__nats_msg_release(msg);
}

static natsStatus subscribe(lu_natsbus_t *b, natsSubscription **sub,
                            const char *subj, const char *queue,
                            natsMsgHandler cb) {
  return lu__nats_subscribe(b->nc, sub, subj, queue, cb, b);
}

/* ---- lifecycle -------------------------------------------------------- */

/* The KV bucket's TTL: the longest sticky-session TTL of the registry (a
 * function's session_ttl_ms, 0 meaning the default 5 minutes); 0 when no
 * function is sticky (no bucket then). */
static uint32_t sticky_ttl_ms(const lu_registry_t *reg) {
  uint32_t ttl = 0;
  for (size_t i = 0; i < lu_registry_count(reg); i++) {
    const lu_fn_t *fn = lu_registry_at(reg, i);
    if (!fn->strategy || strcmp(fn->strategy, "sticky_session")) continue;
    uint32_t t = fn->session_ttl_ms ? fn->session_ttl_ms : 300000;
    if (t > ttl) ttl = t;
  }
  return ttl;
}

int lu__natsbus_start(lu_natsbus_t **out, natsConnection *nc,
                      lu_manager_t *m, const lu_natsbus_cfg_t *cfg, char *err,
                      size_t errlen) {
  *out = NULL;
  lu_natsbus_t *b = calloc(1, sizeof *b);
  if (!b) return LU_ENOMEM;
  b->nc = nc;
  b->m = m;
  b->cfg = *cfg;
  if (!b->cfg.ack_wait_ms) b->cfg.ack_wait_ms = 10000;
  lu__fmt(b->self, sizeof b->self, "%s", cfg->shard);
  b->cfg.shard = b->self;
  b->cfg.static_view = NULL;
  pthread_mutex_init(&b->lock, NULL);
  lu__cond_init_mono(&b->cond); /* timed waits: monotonic deadlines */
  pthread_mutex_init(&b->fwlock, NULL);
  pthread_mutex_init(&b->heldlock, NULL);
  pthread_mutex_init(&b->keeplock, NULL);
  lu__cond_init_mono(&b->keepcond);
  b->view_ids = calloc(MAX_VIEW, sizeof *b->view_ids);
  b->view_seeds = calloc(MAX_VIEW, sizeof *b->view_seeds);
  b->prev_ids = calloc(MAX_VIEW, sizeof *b->prev_ids);
  b->prev_seeds = calloc(MAX_VIEW, sizeof *b->prev_seeds);
  int mapped = b->view_ids && b->view_seeds && b->prev_ids && b->prev_seeds &&
               lu__ptrmap_init(&b->fwmap, FWD_MAP_SIZE) == 0;
  int amo = cfg->delivery == LU_DELIVERY_AT_MOST_ONCE;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = 8192;
  jo.PublishAsync.StallWait = 10000; /* a stalled forward waits, not fails */
  jo.PublishAsync.AckHandler = on_fwd_ack;
  jo.PublishAsync.AckHandlerClosure = b;
  natsStatus s = mapped ? natsConnection_JetStream(&b->js, nc, &jo)
                          : NATS_NO_MEMORY;
  if (s == NATS_OK) s = natsConnection_JetStream(&b->jsm, nc, NULL);
  if (s != NATS_OK) {
    nats_err(err, errlen, "JetStream", s, 0);
    lu__natsbus_stop(b, 0, NULL);
    return LU_EIO;
  }
  int rc = 0;
  lu_assets_opts_t ao = {.replicas = cfg->replicas,
                         .retry_ms = LU_RETRY_DEFAULT_MS,
                         .who = b->self};
  if (!amo) {
    /* The partition count: the stream's, or cfg's when it creates it
     * (a different one is refused with the reason). */
    rc = lu__intake_stream_ensure(b->jsm, cfg->partitions, 1, &ao,
                                  &b->partitions, err, errlen);
    b->max_pullers = b->partitions + MAX_FWD_PULLERS;
    b->pullers = rc ? NULL : calloc(b->max_pullers, sizeof *b->pullers);
    if (!rc && !b->pullers) rc = LU_ENOMEM;
    /* What publishers partition by (docs/protocol.md, section 6). */
    if (!rc)
      rc = lu__routes_publish(nc, lu_manager_registry(m), cfg->replicas, err,
                              errlen);
    if (!rc) rc = lu__assets_fwd(b->jsm, &ao, err, errlen);
    char name[96], filter[128];
    lu__fmt(name, sizeof name, "fwd-%s", b->self);
    lu__fmt(filter, sizeof filter, "%s.%s", LU_SUBJ_FWD, b->self);
    if (!rc) rc = ensure_consumer(b, LU_STREAM_FWD, name, filter, err, errlen);
  }
  uint32_t ttl = sticky_ttl_ms(lu_manager_registry(m));
  if (!rc && ttl) {
    rc = lu__kvsess_open_with(&b->kv, nc, ttl, &ao, err, errlen);
    if (rc && rc != LU_EINVAL) rc = LU_EIO;
  }
  /* Serving lucent.cfwd.<self> before joining the view: a shard that is
   * in the view takes confirmed forwards.  A forward waits for its reply
   * half an AckWait at a time, marking its intake message in progress so
   * that it is not redelivered meanwhile, up to 6 AckWaits in all. */
  if (!rc && !amo && !cfg->durable_forward) {
    lu_cfwd_cfg_t fc = {.nc = nc,
                        .self = b->self,
                        .timeout_ms = b->cfg.ack_wait_ms / 2,
                        .fallback = js_forward,
                        .accept = cfwd_accept,
                        .alive = peer_alive,
                        .extend = cfwd_extend,
                        .ud = b};
    rc = lu__cfwd_start(&b->cfwd, &fc, err, errlen);
  }
  if (rc) {
    lu__natsbus_stop(b, 0, NULL);
    return rc;
  }
  /* How long before what this shard holds may be someone else's too: its
   * takers take over once it misses 6 heartbeats (a freeze, a stall), or
   * JetStream redelivers after AckWait, whichever comes first. */
  uint32_t view_ms = 6 * (cfg->hb_interval_ms ? cfg->hb_interval_ms : 250);
  uint32_t handed_on = b->cfg.ack_wait_ms < view_ms ? b->cfg.ack_wait_ms
                                                    : view_ms;
  lu_bus_t bus = {.forward = bus_forward,
                  .sticky = b->kv ? bus_sticky : NULL,
                  .ud = b,
                  /* Both intakes spread inputs over the processes (the
                   * partitions' owners, the at-most-once queue group);
                   * only at-least-once must make emitted events durable
                   * before their parent's ack. */
                  .flags = LU_BUS_SPREAD_INTAKE |
                           (amo ? 0u : LU_BUS_DURABLE_EMIT),
                  .handed_on_after_ms = amo ? 0 : handed_on};
  lu_manager_set_bus(m, &bus);
  rc = lu__membership_start(&b->ms, nc, m, b->self, cfg->static_view,
                            cfg->hb_interval_ms, on_view_change, b, err,
                            errlen);
  if (rc) {
    lu__natsbus_stop(b, 0, NULL);
    return rc;
  }
  char subj[128];
  lu__fmt(subj, sizeof subj, "%s.%s", LU_SUBJ_EXEC, b->self);
  s = subscribe(b, &b->exec_sub, LU_SUBJ_EXEC, "lucent-exec", on_exec);
  if (s == NATS_OK) s = subscribe(b, &b->exec_self_sub, subj, NULL, on_exec);
  if (s == NATS_OK && amo) {
    lu__fmt(subj, sizeof subj, "%s.%s", LU_SUBJ_AMO_FWD, b->self);
    s = subscribe(b, &b->amo_sub, LU_SUBJ_AMO_INTAKE, "lucent-amo", on_amo);
    if (s == NATS_OK) s = subscribe(b, &b->amo_fwd_sub, subj, NULL, on_amo);
  }
  if (s == NATS_OK) s = natsConnection_Flush(nc);
  if (s != NATS_OK) {
    nats_err(err, errlen, "cannot subscribe", s, 0);
    lu__natsbus_stop(b, 0, NULL);
    return LU_EIO;
  }
  if (!amo) {
    uint32_t hb = cfg->hb_interval_ms ? cfg->hb_interval_ms : 250;
    b->claim_delay_ms = cfg->static_view ? 0 : hb * 6;
    if (pthread_create(&b->claimer, NULL, claimer_main, b)) {
      lu__fmt(err, errlen, "cannot start the claimer thread");
      lu__natsbus_stop(b, 0, NULL);
      return LU_ENOMEM;
    }
    b->claimer_started = 1;
    if (pthread_create(&b->keeper, NULL, keeper_main, b) == 0)
      b->keeper_running = 1;
  }
  *out = b;
  return 0;
}

void lu__natsbus_stop(lu_natsbus_t *b, uint32_t timeout_ms,
                      lu_natsbus_stats_t *final) {
  if (!b) return;
  /* 1. Stop taking new work (what still comes to our pullers is NAKed:
   *    pull_release).  We stay in the view meanwhile, so nobody else
   *    pulls our partitions while we finish what we hold. */
  pthread_mutex_lock(&b->lock);
  b->stopping = 1;
  pthread_cond_broadcast(&b->cond);
  pthread_mutex_unlock(&b->lock);
  if (b->claimer_started) pthread_join(b->claimer, NULL);
  for (unsigned i = 0; i < b->npullers; i++)
    pthread_join(b->pullers[i]->thread, NULL);
  lu__nats_unsubscribe(&b->exec_sub);
  lu__nats_unsubscribe(&b->amo_sub);
  lu__cfwd_stop_serving(b->cfwd); /* later senders go durable */
  /* 2. Finish what we took: outcomes stored, acks sent, forwards acked
   *    (confirmed by their owner, or made durable in LUCENT_FWD). */
  if (b->m) lu_manager_drain(b->m);
  /* 3. Leave the view: the others take our partitions now, with nothing
   *    of ours unacknowledged in them (adopt(): a takeover with nothing
   *    to replay), so a key's events do not run in two places. */
  lu__membership_stop(b->ms);
  b->ms = NULL;
  lu__cfwd_finish(b->cfwd, timeout_ms ? timeout_ms : 1);
  if (b->js) {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = timeout_ms ? timeout_ms : 1;
    js_PublishAsyncComplete(b->js, &po);
  }
  lu__nats_unsubscribe(&b->exec_self_sub);
  lu__nats_unsubscribe(&b->amo_fwd_sub);
  if (b->keeper_running) { /* what we hold is acked by now, or let go */
    pthread_mutex_lock(&b->keeplock);
    b->keeper_stop = 1;
    pthread_cond_signal(&b->keepcond);
    pthread_mutex_unlock(&b->keeplock);
    pthread_join(b->keeper, NULL);
  }
  /* Forwards still waiting to be sent again (the keeper queues no more
   * now), then those still unanswered, taken back from nats.c (their
   * handlers will not run), fail: what caused them is NAKed and let go,
   * not held (and leaked) past the stop. */
  while (b->fwretry) {
    fwbox_t *x = b->fwretry;
    b->fwretry = x->next;
    fw_finish(x, 0);
  }
  natsMsgList pend = {0};
  if (b->js && atomic_load(&b->js_published) &&
      js_PublishAsyncGetPendingList(&pend, b->js) == NATS_OK) {
    for (int i = 0; i < pend.Count; i++) {
      fwbox_t *box = fw_take(b, pend.Msgs[i]);
      if (box) fw_finish(box, 0);
    }
    natsMsgList_Destroy(&pend);
    jsPubOptions po; /* handlers already running finish first */
    jsPubOptions_Init(&po);
    po.MaxWait = 1000;
    js_PublishAsyncComplete(b->js, &po);
  }
  if (b->nc) natsConnection_Flush(b->nc);
  if (final) lu__natsbus_stats(b, final); /* reads the pullers: first */
  for (unsigned i = 0; i < b->npullers; i++) {
    lu__nats_pull_close(&b->pullers[i]->pull);
    free(b->pullers[i]);
  }
  b->npullers = 0;
  free(b->pullers);
  lu__cfwd_free(b->cfwd);
  lu__nats_msg_release_all(); /* nothing of ours is held past the stop */
  lu__kvsess_close(b->kv);
  jsCtx_Destroy(b->js);
  jsCtx_Destroy(b->jsm);
  for (size_t i = 0; b->fwmap.keys && i <= b->fwmap.mask; i++)
    free(b->fwmap.vals[i]); /* forwards never answered: boxes only */
  lu__ptrmap_free(&b->fwmap);
  free(b->view_ids);
  free(b->view_seeds);
  free(b->prev_ids);
  free(b->prev_seeds);
  pthread_mutex_destroy(&b->lock);
  pthread_cond_destroy(&b->cond);
  pthread_mutex_destroy(&b->fwlock);
  pthread_mutex_destroy(&b->heldlock);
  pthread_mutex_destroy(&b->keeplock);
  pthread_cond_destroy(&b->keepcond);
  free(b);
}

void lu__natsbus_stats(lu_natsbus_t *b, lu_natsbus_stats_t *o) {
  memset(o, 0, sizeof *o);
  if (!b) return;
  o->pulled = atomic_load(&b->pulled);
  o->forwarded = atomic_load(&b->forwarded);
  o->forward_errors = atomic_load(&b->forward_errors);
  o->exec_requests = atomic_load(&b->exec_requests);
  o->exec_forwarded = atomic_load(&b->exec_forwarded);
  lu_cfwd_stats_t cs;
  lu__cfwd_stats(b->cfwd, &cs);
  o->forward_confirmed = cs.confirmed;
  o->forward_fallbacks = cs.fallbacks;
  o->forwards_jetstream = atomic_load(&b->forwards_js);
  o->forwards_amo = atomic_load(&b->forwards_amo);
  pthread_mutex_lock(&b->lock);
  for (unsigned i = 0; i < b->npullers; i++)
    o->claimed += atomic_load(&b->pullers[i]->want) ? 1 : 0;
  pthread_mutex_unlock(&b->lock);
  int64_t dropped = 0;
  if (b->amo_sub && natsSubscription_GetDropped(b->amo_sub, &dropped) ==
                        NATS_OK)
    o->dropped += (uint64_t)dropped;
}

size_t lu__natsbus_metrics(lu_natsbus_t *b, lu_metric_t *out, size_t cap) {
  static const char fwd[] = "lucent_bus_forwards_total";
  static const char fwd_help[] =
      "Events sent to another shard process, by path: core (confirmed by "
      "the owner once stored), jetstream (LUCENT_FWD), at_most_once.";
  lu_natsbus_stats_t st;
  lu__natsbus_stats(b, &st);
  const lu_metric_t m[] = {
      {fwd, "counter", fwd_help, "path", "core", st.forward_confirmed},
      {fwd, "counter", fwd_help, "path", "jetstream", st.forwards_jetstream},
      {fwd, "counter", fwd_help, "path", "at_most_once", st.forwards_amo},
      {"lucent_bus_forward_fallbacks_total", "counter",
       "Core forwards that got no confirmation (no responder, owner gone, "
       "timeout) and went through JetStream instead.",
       NULL, NULL, st.forward_fallbacks},
  };
  size_t n = sizeof m / sizeof *m;
  for (size_t i = 0; i < n && i < cap; i++) out[i] = m[i];
  return n;
}
