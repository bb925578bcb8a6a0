/*
 * bus_internal.h - what the three files of the NATS bus share, and only
 * they include:
 *
 *   bus_nats.c   the transport hooks (forwarding, confirmed-forward glue,
 *                sticky sessions), start, stop, counters and metrics
 *   puller.c     the at-least-once queues: pulling them, holding and
 *                acknowledging what was pulled, claiming them over the
 *                view, the keeper
 *   exec_nats.c  what comes over core NATS subscriptions: exec requests
 *                (request/reply) and at-most-once events
 *
 * The bus (struct lu_natsbus_s) is made and freed by bus_nats.c; the
 * other two use the fields their comments name.  Internal.
 */
#ifndef LUCENT_BUS_INTERNAL_H
#define LUCENT_BUS_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "fwd_core.h"
#include "membership.h"

#define MAX_FWD_PULLERS 256 /* forward queues: ours and dead shards' */
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
  /* No pull request of ours is open (never pulled, or let go after
   * pull_release): with holding 0, nothing of the consumer is ours. */
  _Atomic int released;
  /* The highest stream sequence this puller was given (0: none): what
   * lu__natsbus_on_held answers with, so that the asker can tell a shard
   * given what is pending now (above the ack floor) from one that never
   * pulled the consumer, or only long ago. */
  _Atomic uint64_t last_sseq;
  /* HANDOVER: the shard that pulled it before (adopt() asks it); written
   * by the claimer and read by adopt(), both under b->lock. */
  char prev[LU_SHARD_ID_MAX];
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
  int fwretry_new;         /* one was queued since the keeper looked */
  natsSubscription *exec_sub, *exec_self_sub, *amo_sub, *amo_fwd_sub;
  natsSubscription *held_sub; /* lucent.held.<self> (puller.c) */
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

/* ---- bus_nats.c ------------------------------------------------------- */

/** "<what>: <nats.c's reason>" (with the JetStream error code when jerr is
 *  not 0) into err; any thread. */
void lu__natsbus_err(char *err, size_t errlen, const char *what,
                     natsStatus s, jsErrCode jerr);

/** A numeric header's value, or dflt when msg has none; any thread. */
uint64_t lu__natsbus_hdr_u64(natsMsg *msg, const char *name, uint64_t dflt);

/** The CloudEvent in a single-event message, structured or binary mode:
 *  *json points into m or into *own (the caller frees *own); 0, or
 *  LU_EINVAL with why for a bad binary-mode event.  Any thread. */
int lu__natsbus_msg_event(natsMsg *m, const char **json, size_t *len,
                          lu_buf_t *own, char *why, size_t wcap);

/** The keeper's part of forwarding: publishes again the failed durable
 *  forwards that are due (queued by the ack handler, b->fwretry) and
 *  returns the next due time in ns (0: none).  On the keeper thread. */
uint64_t lu__natsbus_fw_resend(lu_natsbus_t *b, uint64_t now);

/* ---- puller.c --------------------------------------------------------- */

/** Finds or creates the durable pull consumer `name` on stream (filter,
 *  the bus's AckWait), riding through an election or a slow server for
 *  up to retry_ms (0: one try; retry.h); 0, or LU_EIO with err.  Start
 *  or puller thread. */
int lu__natsbus_ensure_consumer(lu_natsbus_t *b, const char *stream,
                                const char *name, const char *filter,
                                uint32_t retry_ms, char *err, size_t errlen);

/** Is d the acknowledgement of a pulled intake or forward message?
 *  Any thread. */
int lu__natsbus_acks_message(lu_done_t d);

/** Tells JetStream that the pulled message d acknowledges is still being
 *  worked on (+WPI); no-op for any other d.  Any thread, d must be
 *  pending (not yet called). */
void lu__natsbus_in_progress(lu_done_t d);

/** nats.c handler (closure: the bus) of lucent.held.<self>: a shard
 *  taking over one of our consumers in a handover asks whether we have
 *  let go of it (body: the consumer's name).  Answers "0 <seq>" when no
 *  pull request of ours is open on it and we hold none of its messages
 *  (seq: the highest stream sequence we were given of it, 0 if none),
 *  "busy" while we pull it or hold some, "-" for a consumer we have no
 *  puller of.  On nats.c's delivery thread; takes msg. */
void lu__natsbus_on_held(natsConnection *nc, natsSubscription *sub,
                         natsMsg *msg, void *closure);

/** The claimer thread (arg: the bus): decides which consumers this shard
 *  pulls, every second and at each view change, until b->stopping. */
void *lu__natsbus_claimer_main(void *arg);

/** The keeper thread (arg: the bus): +WPI for every held message every
 *  AckWait / 4, and failed forwards sent again when due
 *  (lu__natsbus_fw_resend), until b->keeper_stop. */
void *lu__natsbus_keeper_main(void *arg);

/* ---- exec_nats.c ------------------------------------------------------ */

/** nats.c handler (closure: the bus) of lucent.exec and
 *  lucent.exec.<self>: routes, runs or forwards a request and replies;
 *  on nats.c's delivery thread; takes msg. */
void lu__natsbus_on_exec(natsConnection *nc, natsSubscription *sub,
                         natsMsg *msg, void *closure);

/** nats.c handler (closure: the bus) of the at-most-once intake and
 *  forwards: takes the event, or loses it; on nats.c's delivery thread;
 *  takes msg. */
void lu__natsbus_on_amo(natsConnection *nc, natsSubscription *sub,
                        natsMsg *msg, void *closure);

#endif /* LUCENT_BUS_INTERNAL_H */
