/*
 * fwd_core.h - confirmed forwarding over core NATS, for at-least-once
 * shards (fwd_core.c has the protocol and why it loses nothing).
 *
 * Only bus_nats.c uses it: it forwards an intake event to the shard that
 * owns it with lu__cfwd_send, and runs the events other shards forward to
 * it through cfg.accept.
 */
#ifndef LUCENT_FWD_CORE_H
#define LUCENT_FWD_CORE_H

#include <nats/nats.h>

#include "lucent/bus.h"
#include "lucent/lucent.h"
#include "util.h"

typedef struct lu_cfwd_s lu_cfwd_t;

typedef struct lu_cfwd_cfg_s {
  natsConnection *nc; /**< borrowed; SendAsap on (docs/nats-notes.md, trap 1) */
  const char *self;   /**< this shard: it serves lucent.cfwd.<self> */
  /** Forwards waiting for their reply at most (0 = 1024); a sender blocks
   *  while that many wait. */
  unsigned max_inflight;
  /** How long a forward waits for its reply before it takes the durable
   *  path, or, with extend, is extended (0 = 5000 ms).  Keep it below the
   *  intake's AckWait. */
  uint32_t timeout_ms;
  /** With extend: how long a forward to an owner that stays in the view
   *  may wait in all before it takes the durable path (0 = 12 x
   *  timeout_ms). */
  uint32_t max_wait_ms;
  /** The durable path: forwards an event (borrowed for the call; hops is
   *  1) that could not be confirmed, and calls done when that forward is
   *  stored or has failed.  Called from the sweeper, the reply thread or
   *  lu__cfwd_finish; never with a lock of this module held. */
  void (*fallback)(void *ud, const lu_fwd_t *fwd, lu_done_t done);
  /** Runs an event another shard forwarded here, pinned (in borrowed for
   *  the call; hops is 1; in->delivery from the sender); calls done once
   *  its outcome is stored (or done.fn is NULL: nobody waits) and returns
   *  0, or returns an LU_E* code without calling done.  On a nats.c
   *  delivery thread; may block (backpressure). */
  int (*accept)(void *ud, const lu_input_t *in, lu_done_t done);
  /** Is shard `id` still in the view?  Forwards to a shard that left take
   *  the durable path at once.  Sweeper thread, no lock held. */
  int (*alive)(void *ud, const char *id);
  /** A forward to a live owner waited timeout_ms: keep what done
   *  acknowledges from being redelivered (natsMsg_InProgress), then it
   *  waits timeout_ms more.  NULL: take the durable path at once.  Called
   *  on the sweeper with this module's lock held (so that done stays
   *  valid): must not call into this module. */
  void (*extend)(void *ud, lu_done_t done);
  void *ud;
} lu_cfwd_cfg_t;

/** Subscribes lucent.cfwd.<self> and a reply inbox, and starts the
 *  sweeper thread.  cfg is copied (self too).  Returns 0, or LU_EIO
 *  (subscription failed; err says why) or LU_ENOMEM. */
int lu__cfwd_start(lu_cfwd_t **out, const lu_cfwd_cfg_t *cfg, char *err,
                   size_t errlen);

/** Sends one event on its first hop (json borrowed for the call) to
 *  shard `target` (at most 63 bytes) and calls done(ctx, NULL, stored)
 *  exactly once: when the target has stored its outcome (stored = 1) or
 *  could not store it (0), or, when no reply comes, when cfg.fallback's
 *  forward is done.  Blocks while
 *  max_inflight forwards wait for replies, so that a sender never takes
 *  the durable path (and overtakes its own earlier events) for lack of
 *  room.  Returns 0, or -1 when nothing was sent (stopping, target id too
 *  long, publish failed): done is then not called and the caller forwards
 *  the durable way (also when done.fn is NULL).  Thread safe. */
int lu__cfwd_send(lu_cfwd_t *f, const char *target, const char *json,
                  size_t len, unsigned delivery, unsigned replayed,
                  lu_done_t done);

/** Stops taking forwards from other shards: the subscription is drained
 *  (what already arrived goes to cfg.accept), later ones find no
 *  responder and their senders take the durable path. */
void lu__cfwd_stop_serving(lu_cfwd_t *f);

/** Stops sending: waits up to timeout_ms for the replies still awaited,
 *  then hands every forward still waiting to cfg.fallback.  After it,
 *  lu__cfwd_send returns -1. */
void lu__cfwd_finish(lu_cfwd_t *f, uint32_t timeout_ms);

/** Forwards sent, confirmed by their target, and handed to the durable
 *  path (no responder, target gone, timeout, finish). */
typedef struct lu_cfwd_stats_s {
  uint64_t sent, confirmed, fallbacks;
  uint64_t extensions; /* late replies waited for longer (extend) */
} lu_cfwd_stats_t;
void lu__cfwd_stats(lu_cfwd_t *f, lu_cfwd_stats_t *out);

/** Unsubscribes and frees; calls lu__cfwd_stop_serving and
 *  lu__cfwd_finish(f, 0) first if they were not.  NULL is a no-op. */
void lu__cfwd_free(lu_cfwd_t *f);

#endif /* LUCENT_FWD_CORE_H */
