/*
 * fwd_core.c - confirmed forwarding over core NATS (at-least-once mode).
 *
 * An intake event owned by another shard used to go through the LUCENT_FWD
 * stream: one more JetStream write, fetch and ack per forwarded event, and
 * each JetStream message costs nats-server about as much CPU as the rest
 * of the event's path together (bench/README.md, "Peer comparison").
 * Instead, the intake message itself stays unacked until the event's owner
 * has stored its outcome:
 *
 *   origin  request lucent.cfwd.<target>, body = the event, reply subject
 *           <inbox>.<slot>.<generation>; the intake message stays unacked
 *   target  runs it, pinned (never routed again), and once its outcome is
 *           stored replies "1" ("0": the store failed)
 *   origin  "1": done(stored) acks the intake message; "0": done(failed)
 *           NAKs it, and it comes back to be routed again
 *
 * Nothing is lost: until the reply, the event is in JetStream as an unacked
 * intake message.  A forward that gets no confirmation (no responder: the
 * target is not serving lucent.cfwd yet or any more; the target left the
 * view; no reply within timeout_ms, e.g. it died and came back at once)
 * takes the durable path (cfg.fallback: LUCENT_FWD, as before).  A reply
 * that is only late, from an owner still in the view, is waited for longer
 * (cfg.extend tells JetStream the intake message is in progress, so it is
 * not redelivered meanwhile), up to max_wait_ms.  If the
 * target did run it meanwhile, it runs twice, and its outcome's ids are the
 * same both times (docs/architecture.md, decision 3), so the store keeps one.
 *  If the
 * origin dies, its unacked intake messages are redelivered after AckWait to
 * the partition's next owner, which routes them again.
 *
 * Order: one origin's forwards to one target travel on one connection to
 * one subscription, so they arrive in the order they were sent.  A sender
 * blocks while max_inflight forwards wait for replies instead of taking the
 * durable path, which would let later events overtake it; only a failure
 * (the cases above) sends an event the durable way, as during a takeover.
 *
 * Only first hops come here: an event re-routed from a dead shard's queue
 * (hop 2) and emitted events keep the durable path.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fwd_core.h"
#include "nats_internal.h"

typedef struct slot_s {
  lu_done_t done; /* fn == NULL: free (a sender always passes one) */
  char *json;
  size_t len;
  unsigned delivery; /* its input's delivery count (> 1: suspect) */
  unsigned replayed; /* lu_input_t.replayed */
  uint64_t t0_ms; /* when it was sent */
  uint64_t t_ms;  /* when it was sent or last extended */
  uint32_t gen;   /* tells a late reply for an earlier use of the slot */
  int next_free;
  char target[64];
} slot_t;

struct lu_cfwd_s {
  lu_cfwd_cfg_t cfg;
  char self[64];
  natsInbox *inbox;
  natsSubscription *serve_sub, *reply_sub;
  pthread_mutex_t lock;
  pthread_cond_t room;   /* a slot was freed, or stopping */
  pthread_cond_t wake;   /* the sweeper's */
  pthread_t sweeper;
  int sweeper_started;
  int stopping;          /* finish: no more sends */
  int quit;              /* the sweeper stops */
  slot_t *slots;
  int free_head;
  unsigned inflight;
  _Atomic uint64_t sent, confirmed, fallbacks, extensions;
};

static uint64_t now_ms(void) { return lu__now_ns() / 1000000u; }

/* Takes slot idx out of the table if it still holds generation gen. */
static int take(lu_cfwd_t *f, unsigned idx, uint32_t gen, slot_t *out) {
  int got = 0;
  pthread_mutex_lock(&f->lock);
  slot_t *s = &f->slots[idx];
  if (s->done.fn && s->gen == gen) {
    *out = *s;
    s->done.fn = NULL;
    s->json = NULL;
    s->next_free = f->free_head;
    f->free_head = (int)idx;
    f->inflight--;
    pthread_cond_signal(&f->room);
    if (!f->inflight) pthread_cond_broadcast(&f->room); /* finish waits */
    got = 1;
  }
  pthread_mutex_unlock(&f->lock);
  return got;
}

/* A forward that was not confirmed goes the durable way. */
static void fall_back(lu_cfwd_t *f, slot_t *s) {
  atomic_fetch_add(&f->fallbacks, 1);
  /* The owner may have it after all (slow, not gone): whoever runs this
   * copy looks for its outcome first (lu_input_t.replayed). */
  lu_fwd_t fw = {.target = s->target, .json = s->json, .len = s->len,
                .hops = 1, .delivery = s->delivery, .replayed = 1};
  f->cfg.fallback(f->cfg.ud, &fw, s->done);
  free(s->json);
}

/* ---- origin: replies -------------------------------------------------- */

static void on_reply(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                     void *closure) {
  (void)nc, (void)sub;
  lu_cfwd_t *f = closure;
  const char *subj = natsMsg_GetSubject(msg);
  const char *g = strrchr(subj, '.'), *i = g;
  while (i && i > subj && *--i != '.') {
  }
  if (i && *i != '.') i = NULL;
  unsigned long idx = i ? strtoul(i + 1, NULL, 10) : (unsigned long)-1;
  uint32_t gen = g ? (uint32_t)strtoul(g + 1, NULL, 10) : 0;
  const char *data = natsMsg_GetData(msg);
  int len = natsMsg_GetDataLength(msg);
  /* "1" stored, "0" not stored; anything else (a no-responders status
   * has no body) means nobody took it. */
  int verdict = len == 1 && data && (data[0] == '1' || data[0] == '0')
                    ? data[0] - '0' : -1;
  slot_t s;
  if (idx < f->cfg.max_inflight && take(f, (unsigned)idx, gen, &s)) {
    if (verdict < 0) {
      fall_back(f, &s);
    } else {
      atomic_fetch_add(&f->confirmed, 1);
      free(s.json);
      s.done.fn(s.done.ctx, NULL, verdict);
    }
  }
  lu__nats_msg_release(msg);
}

int lu__cfwd_send(lu_cfwd_t *f, const char *target, const char *json,
                  size_t len, unsigned delivery, unsigned replayed,
                  lu_done_t done) {
  size_t tl = strlen(target);
  if (!done.fn || tl >= sizeof f->slots[0].target) return -1;
  char *copy = malloc(len ? len : 1);
  if (!copy) return -1;
  memcpy(copy, json, len);
  pthread_mutex_lock(&f->lock);
  while (!f->stopping && f->free_head < 0)
    pthread_cond_wait(&f->room, &f->lock);
  if (f->stopping) {
    pthread_mutex_unlock(&f->lock);
    free(copy);
    return -1;
  }
  unsigned idx = (unsigned)f->free_head;
  slot_t *s = &f->slots[idx];
  f->free_head = s->next_free;
  s->done = done;
  s->json = copy;
  s->len = len;
  s->delivery = delivery;
  s->replayed = replayed;
  s->t0_ms = s->t_ms = now_ms();
  uint32_t gen = ++s->gen;
  memcpy(s->target, target, tl + 1);
  f->inflight++;
  pthread_mutex_unlock(&f->lock);

  char subj[128], reply[192];
  lu__fmt(subj, sizeof subj, "%s.%s", LU_SUBJ_CFWD, target);
  lu__fmt(reply, sizeof reply, "%s.%u.%u", (const char *)f->inbox, idx, gen);
  natsStatus st;
  char dbuf[24];
  lu__delivery_hdr(dbuf, delivery, replayed);
  if (dbuf[0]) { /* rare: a suspect or replayed input says so (a header) */
    natsMsg *msg = NULL;
    st = natsMsg_Create(&msg, subj, reply, json, (int)len);
    if (st == NATS_OK) st = natsMsgHeader_Set(msg, LU_HDR_DELIVERY, dbuf);
    if (st == NATS_OK) st = natsConnection_PublishMsg(f->cfg.nc, msg);
    natsMsg_Destroy(msg);
  } else {
    st = natsConnection_PublishRequest(f->cfg.nc, subj, reply, json,
                                       (int)len);
  }
  if (st == NATS_OK) {
    atomic_fetch_add(&f->sent, 1);
    return 0;
  }
  slot_t back;
  if (take(f, idx, gen, &back)) { /* not sent: the caller decides */
    free(back.json);
    return -1;
  }
  return 0; /* the sweeper already handed it to the durable path */
}

/* ---- target: serving ------------------------------------------------- */

typedef struct served_s {
  lu_cfwd_t *f;
  char reply[];
} served_t;

static void served_done(void *ctx, const lu_outcome_t *o, int stored) {
  (void)o;
  served_t *sv = ctx;
  natsConnection_Publish(sv->f->cfg.nc, sv->reply, stored ? "1" : "0", 1);
  free(sv);
}

static void on_forward(natsConnection *nc, natsSubscription *sub,
                       natsMsg *msg, void *closure) {
  (void)nc, (void)sub;
  lu_cfwd_t *f = closure;
  const char *reply = natsMsg_GetReply(msg);
  const char *data = natsMsg_GetData(msg);
  int len = natsMsg_GetDataLength(msg);
  lu_done_t done = {NULL, NULL};
  served_t *sv = NULL;
  if (reply && *reply) {
    size_t rl = strlen(reply);
    sv = malloc(sizeof *sv + rl + 1);
    if (!sv) { /* no reply: the sender times out and goes durable */
      lu__nats_msg_release(msg);
      return;
    }
    sv->f = f;
    memcpy(sv->reply, reply, rl + 1);
    done = (lu_done_t){served_done, sv};
  }
  /* Without a reply subject nobody waits for it (not lucent's sender):
   * it still runs, at most once. */
  unsigned delivery, replayed;
  lu__delivery_hdr_read(msg, &delivery, &replayed);
  lu_input_t in = {.json = data ? data : "",
                   .len = len > 0 ? (size_t)len : 0,
                   .delivery = delivery, .replayed = replayed};
  if (f->cfg.accept(f->cfg.ud, &in, done)) free(sv); /* sender times out */
  lu__nats_msg_release(msg);
}

/* ---- sweeping: forwards that will not be confirmed -------------------- */

static void sweep(lu_cfwd_t *f) {
  /* Targets of waiting forwards, checked without our lock. */
  char gone[16][64];
  unsigned ngone = 0;
  char seen[16][64];
  unsigned nseen = 0;
  pthread_mutex_lock(&f->lock);
  for (unsigned i = 0; i < f->cfg.max_inflight && nseen < 16; i++) {
    slot_t *s = &f->slots[i];
    if (!s->done.fn) continue;
    unsigned k = 0;
    while (k < nseen && strcmp(seen[k], s->target)) k++;
    if (k == nseen) memcpy(seen[nseen++], s->target, sizeof seen[0]);
  }
  pthread_mutex_unlock(&f->lock);
  for (unsigned k = 0; k < nseen; k++)
    if (f->cfg.alive && !f->cfg.alive(f->cfg.ud, seen[k]))
      memcpy(gone[ngone++], seen[k], sizeof gone[0]);
  uint64_t now = now_ms();
  for (unsigned i = 0; i < f->cfg.max_inflight; i++) {
    pthread_mutex_lock(&f->lock);
    slot_t *s = &f->slots[i];
    int live = s->done.fn != NULL, gone_t = 0;
    for (unsigned k = 0; live && k < ngone; k++)
      gone_t |= !strcmp(gone[k], s->target);
    /* Late, with its owner still in the view: a busy owner (a backlog, slow
     * functions, retries).  Keep the source from being redelivered and
     * wait on, up to max_wait_ms; then, or if the owner left, go durable. */
    int late = live && now - s->t_ms >= f->cfg.timeout_ms;
    int expired = gone_t || (late && (!f->cfg.extend ||
                                      now - s->t0_ms >= f->cfg.max_wait_ms));
    if (late && !expired) {
      f->cfg.extend(f->cfg.ud, s->done); /* under our lock: see the header */
      s->t_ms = now;
      atomic_fetch_add(&f->extensions, 1);
    }
    uint32_t gen = s->gen;
    pthread_mutex_unlock(&f->lock);
    slot_t out;
    if (expired && take(f, i, gen, &out)) fall_back(f, &out);
  }
}

static void *sweeper_main(void *arg) {
  lu_cfwd_t *f = arg;
  uint32_t period = f->cfg.timeout_ms / 10;
  if (period < 20) period = 20;
  if (period > 250) period = 250;
  pthread_mutex_lock(&f->lock);
  while (!f->quit) {
    lu__cond_wait_until(&f->wake, &f->lock,
                        lu__now_ns() + (uint64_t)period * NS_PER_MS);
    if (f->quit || !f->inflight) continue;
    pthread_mutex_unlock(&f->lock);
    sweep(f);
    pthread_mutex_lock(&f->lock);
  }
  pthread_mutex_unlock(&f->lock);
  return NULL;
}

/* ---- lifecycle -------------------------------------------------------- */

int lu__cfwd_start(lu_cfwd_t **out, const lu_cfwd_cfg_t *cfg, char *err,
                   size_t errlen) {
  *out = NULL;
  lu_cfwd_t *f = calloc(1, sizeof *f);
  if (!f) return LU_ENOMEM;
  f->cfg = *cfg;
  if (!f->cfg.max_inflight) f->cfg.max_inflight = 1024;
  if (!f->cfg.timeout_ms) f->cfg.timeout_ms = 5000;
  if (!f->cfg.max_wait_ms) f->cfg.max_wait_ms = 12 * f->cfg.timeout_ms;
  lu__fmt(f->self, sizeof f->self, "%s", cfg->self);
  f->cfg.self = f->self;
  pthread_mutex_init(&f->lock, NULL);
  /* Timed waits on both use monotonic deadlines (lu__cond_wait_until). */
  if (lu__cond_init_mono(&f->room) || lu__cond_init_mono(&f->wake)) {
    lu__fmt(err, errlen, "cannot initialise a condition variable");
    pthread_mutex_destroy(&f->lock);
    free(f);
    return LU_ENOMEM;
  }
  f->slots = calloc(f->cfg.max_inflight, sizeof *f->slots);
  if (!f->slots) {
    lu__cfwd_free(f);
    return LU_ENOMEM;
  }
  for (unsigned i = 0; i < f->cfg.max_inflight; i++)
    f->slots[i].next_free = i + 1 < f->cfg.max_inflight ? (int)i + 1 : -1;
  f->free_head = 0;
  char subj[160];
  natsStatus s = natsInbox_Create(&f->inbox);
  if (s == NATS_OK) {
    lu__fmt(subj, sizeof subj, "%s.*.*", (const char *)f->inbox);
    s = lu__nats_subscribe(f->cfg.nc, &f->reply_sub, subj, NULL, on_reply,
                           f);
  }
  if (s == NATS_OK) {
    lu__fmt(subj, sizeof subj, "%s.%s", LU_SUBJ_CFWD, f->self);
    s = lu__nats_subscribe(f->cfg.nc, &f->serve_sub, subj, NULL,
                           on_forward, f);
  }
  if (s == NATS_OK) s = natsConnection_Flush(f->cfg.nc);
  if (s != NATS_OK) {
    char r[256];
    lu__nats_reason(s, r, sizeof r);
    lu__fmt(err, errlen, "cannot subscribe %s.%s: %s", LU_SUBJ_CFWD, f->self,
            r);
    lu__cfwd_free(f);
    return LU_EIO;
  }
  if (pthread_create(&f->sweeper, NULL, sweeper_main, f)) {
    lu__fmt(err, errlen, "cannot start a thread");
    lu__cfwd_free(f);
    return LU_ENOMEM;
  }
  f->sweeper_started = 1;
  *out = f;
  return 0;
}

void lu__cfwd_stop_serving(lu_cfwd_t *f) {
  if (f) lu__nats_unsubscribe(&f->serve_sub);
}

void lu__cfwd_finish(lu_cfwd_t *f, uint32_t timeout_ms) {
  if (!f) return;
  uint64_t deadline = now_ms() + timeout_ms;
  pthread_mutex_lock(&f->lock);
  f->stopping = 1;
  pthread_cond_broadcast(&f->room); /* blocked senders give up */
  while (f->inflight && now_ms() < deadline) {
    lu__cond_wait_until(&f->room, &f->lock, lu__now_ns() + 20 * NS_PER_MS);
  }
  pthread_mutex_unlock(&f->lock);
  for (unsigned i = 0; f->slots && i < f->cfg.max_inflight; i++) {
    pthread_mutex_lock(&f->lock);
    uint32_t gen = f->slots[i].gen;
    pthread_mutex_unlock(&f->lock);
    slot_t out;
    if (take(f, i, gen, &out)) fall_back(f, &out);
  }
}

void lu__cfwd_stats(lu_cfwd_t *f, lu_cfwd_stats_t *o) {
  memset(o, 0, sizeof *o);
  if (!f) return;
  o->sent = atomic_load(&f->sent);
  o->confirmed = atomic_load(&f->confirmed);
  o->fallbacks = atomic_load(&f->fallbacks);
  o->extensions = atomic_load(&f->extensions);
}

void lu__cfwd_free(lu_cfwd_t *f) {
  if (!f) return;
  lu__cfwd_stop_serving(f);
  lu__cfwd_finish(f, 0);
  if (f->sweeper_started) {
    pthread_mutex_lock(&f->lock);
    f->quit = 1;
    pthread_cond_broadcast(&f->wake);
    pthread_mutex_unlock(&f->lock);
    pthread_join(f->sweeper, NULL);
  }
  lu__nats_unsubscribe(&f->reply_sub);
  natsInbox_Destroy(f->inbox);
  free(f->slots);
  pthread_mutex_destroy(&f->lock);
  pthread_cond_destroy(&f->room);
  pthread_cond_destroy(&f->wake);
  free(f);
}
