/*
 * exec_nats.c - what reaches the NATS bus over core NATS subscriptions,
 * which bus_nats.c opens at start: exec requests, in both delivery
 * modes, and at-most-once events.
 *
 * Request/reply (both modes): lucent.exec (queue group lucent-exec) takes a
 * CloudEvent; the shard that gets it routes it and either runs it or passes
 * the request, reply subject included, to lucent.exec.<owner>; the shard
 * that runs it replies once the outcome is stored.  A request that finds
 * its shard's thread asleep runs on the delivery thread that took it, and
 * so do the requests waiting behind it, as one run whose outcomes make one
 * store batch (lu_manager_run with LU_RUN_INLINE: no hand-off, no thread
 * woken).
 *
 * At-most-once (--delivery at-most-once): lucent.amo.intake (queue group
 * lucent-amo) and lucent.amo.fwd.<self> hand each event to the manager as
 * it comes (on_amo); one that cannot be taken is lost, as what a dying
 * shard held is.
 *
 * Everything here runs on nats.c's delivery threads, one per
 * subscription.
 */
#include <stdlib.h>
#include <string.h>

#include "bus_internal.h"

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
  int bad =
      lu__natsbus_msg_event(msg, &data, &len, &own, why, sizeof why) != 0;
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
  unsigned attempt = (unsigned)lu__natsbus_hdr_u64(msg, LU_HDR_ATTEMPT, 1);
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

void lu__natsbus_on_exec(natsConnection *nc, natsSubscription *sub,
                         natsMsg *msg, void *closure) {
  (void)nc;
  lu_natsbus_t *b = closure;
  atomic_fetch_add(&b->exec_requests, 1);
  /* A burst whose last request did not run here: end it now rather than
   * leave the shard's turn to be taken over (~1 ms later). */
  if (!exec_request(b, sub, msg)) lu_manager_end_burst(b->m);
}

/* ---- at-most-once events --------------------------------------------- */

void lu__natsbus_on_amo(natsConnection *nc, natsSubscription *sub,
                        natsMsg *msg, void *closure) {
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
                      (unsigned)lu__natsbus_hdr_u64(msg, "Lucent-Hops", 1),
                      none);
  } else {
    const char *json;
    size_t jlen;
    lu_buf_t own = {0};
    char why[320];
    int bad =
        lu__natsbus_msg_event(msg, &json, &jlen, &own, why, sizeof why) != 0;
    lu_input_t in = {.json = json, .len = jlen,
                     .line = lu__natsbus_hdr_u64(msg, "Lucent-Line", 0),
                     .origin = LU_SUBJ_AMO_INTAKE};
    if (bad) lu_manager_reject(b->m, &in, why, none);
    else lu_manager_take(b->m, &in, none);
    lu__buf_free(&own);
  }
  lu__nats_msg_release(msg);
}
