/*
 * bus_nats.c - lucent's bus on NATS: how events reach a shard process and
 * move between shard processes.  The manager code is the same as in
 * embedded mode; the bus only plugs into its hooks (lu_bus_t, the
 * transport interface of lucent/bus.h).  This file has those hooks
 * (forwarding, sticky sessions), the glue of confirmed core forwarding
 * (fwd_core.c), and the bus's start, stop and counters; puller.c and
 * exec_nats.c take what comes in, and bus_internal.h is what the three
 * share.
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
 * The queues (intake-<p>, fwd-<shard>) are pulled, acked and claimed by
 * puller.c, which also says what a takeover does to order.
 *
 * At-most-once (--delivery at-most-once): core NATS only.  lucent publish
 * sends to lucent.amo.intake (queue group: any shard takes it), forwards go
 * to lucent.amo.fwd.<target>, emitted events stay in their process.  A
 * shard that dies loses what it held.
 *
 * Content modes: a single-event intake message and an exec request are
 * CloudEvents in the NATS binding's structured mode (the JSON event as
 * payload) or binary mode (ce-* headers, the data as payload; decoded by
 * src/util/ce.c into the same structured JSON, which is what runs, is
 * forwarded and is rejected: lu__natsbus_msg_event).
 *
 * What comes over core NATS subscriptions - exec requests (request/reply,
 * both modes: lucent.exec, lucent.exec.<shard>) and at-most-once events -
 * is taken by exec_nats.c.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <xxhash.h>

#include "bus_internal.h"
#include "intake_layout.h"
#include "request.h"
#include "retry.h"

#define FWD_MAP_SIZE 65536 /* power of two */
#define FWD_ACK_WAIT_MS 5000 /* a durable forward's answer, at most */
/* How long a durable forward is tried again after failures an election
 * or a reconnect explains (docs/nats-notes.md a2: elections of 4 to 20 s
 * here): the forward alone, not its cause (fw_retry). */
#define FWD_RETRY_MS 60000

/* ---- small helpers ---------------------------------------------------- */

void lu__natsbus_err(char *err, size_t errlen, const char *what,
                     natsStatus s, jsErrCode jerr) {
  char r[256];
  lu__nats_reason(s, r, sizeof r);
  if (jerr)
    lu__fmt(err, errlen, "%s: %s (JetStream error %d)", what, r, (int)jerr);
  else
    lu__fmt(err, errlen, "%s: %s", what, r);
}

/* A numeric header's value, or dflt when the message has none. */
uint64_t lu__natsbus_hdr_u64(natsMsg *msg, const char *name, uint64_t dflt) {
  const char *v = NULL;
  if (natsMsgHeader_Get(msg, name, &v) != NATS_OK || !v) return dflt;
  return strtoull(v, NULL, 10);
}

/* ---- the event a message carries: structured or binary mode ----------- */

/* The CloudEvent in a single-event message (an intake message, an exec
 * request): in structured mode its payload (*json points into the
 * message); in the binding's binary mode (a ce-specversion header:
 * src/util/ce.c) the structured JSON decoded from its headers and payload,
 * in *own.  Returns 0, or LU_EINVAL for a binary-mode message that is not
 * a valid event: why says why and *json is the message's headers and
 * payload as text, for its lucent.Rejected.  The caller frees *own. */
int lu__natsbus_msg_event(natsMsg *m, const char **json, size_t *len,
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
    b->fwretry_new = 1;
    pthread_cond_signal(&b->keepcond);
  }
  pthread_mutex_unlock(&b->keeplock);
  if (!queued) {
    natsMsg_Destroy(copy);
    box->msg = NULL;
  }
  return queued;
}

uint64_t lu__natsbus_fw_resend(lu_natsbus_t *b, uint64_t now) {
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
    if (!(b->cfwd && fw->hops == 1 && lu__natsbus_acks_message(done) &&
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
  lu__natsbus_in_progress(done);
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

/* ---- lifecycle -------------------------------------------------------- */

static void on_view_change(void *ud) {
  lu_natsbus_t *b = ud;
  pthread_mutex_lock(&b->lock);
  pthread_cond_broadcast(&b->cond); /* wake the claimer now */
  pthread_mutex_unlock(&b->lock);
}

static natsStatus subscribe(lu_natsbus_t *b, natsSubscription **sub,
                            const char *subj, const char *queue,
                            natsMsgHandler cb) {
  return lu__nats_subscribe(b->nc, sub, subj, queue, cb, b);
}

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
    lu__natsbus_err(err, errlen, "JetStream", s, 0);
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
    if (!rc)
      rc = lu__natsbus_ensure_consumer(b, LU_STREAM_FWD, name, filter,
                                       ao.retry_ms, err, errlen);
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
  /* Answering "have you let go of it?" before joining the view: a shard
   * that takes one of our consumers over in a handover asks (puller.c). */
  if (!amo) {
    char hsubj[128];
    lu__fmt(hsubj, sizeof hsubj, "%s.%s", LU_SUBJ_HELD, b->self);
    if (subscribe(b, &b->held_sub, hsubj, NULL, lu__natsbus_on_held) !=
        NATS_OK) {
      lu__fmt(err, errlen, "cannot subscribe to %s", hsubj);
      lu__natsbus_stop(b, 0, NULL);
      return LU_EIO;
    }
  }
  rc = lu__membership_start(&b->ms, nc, m, b->self, cfg->static_view,
                            cfg->hb_interval_ms, on_view_change, b, err,
                            errlen);
  if (rc) {
    lu__natsbus_stop(b, 0, NULL);
    return rc;
  }
  char subj[128];
  lu__fmt(subj, sizeof subj, "%s.%s", LU_SUBJ_EXEC, b->self);
  s = subscribe(b, &b->exec_sub, LU_SUBJ_EXEC, "lucent-exec",
                lu__natsbus_on_exec);
  if (s == NATS_OK)
    s = subscribe(b, &b->exec_self_sub, subj, NULL, lu__natsbus_on_exec);
  if (s == NATS_OK && amo) {
    lu__fmt(subj, sizeof subj, "%s.%s", LU_SUBJ_AMO_FWD, b->self);
    s = subscribe(b, &b->amo_sub, LU_SUBJ_AMO_INTAKE, "lucent-amo",
                  lu__natsbus_on_amo);
    if (s == NATS_OK)
      s = subscribe(b, &b->amo_fwd_sub, subj, NULL, lu__natsbus_on_amo);
  }
  if (s == NATS_OK) s = natsConnection_Flush(nc);
  if (s != NATS_OK) {
    lu__natsbus_err(err, errlen, "cannot subscribe", s, 0);
    lu__natsbus_stop(b, 0, NULL);
    return LU_EIO;
  }
  if (!amo) {
    uint32_t hb = cfg->hb_interval_ms ? cfg->hb_interval_ms : 250;
    b->claim_delay_ms = cfg->static_view ? 0 : hb * 6;
    if (pthread_create(&b->claimer, NULL, lu__natsbus_claimer_main, b)) {
      lu__fmt(err, errlen, "cannot start the claimer thread");
      lu__natsbus_stop(b, 0, NULL);
      return LU_ENOMEM;
    }
    b->claimer_started = 1;
    if (pthread_create(&b->keeper, NULL, lu__natsbus_keeper_main, b) == 0)
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
  lu__nats_unsubscribe(&b->held_sub);
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
