/*
 * lucent/bus.h - plugging a transport into a manager.
 *
 * A manager runs alone (embedded: every shard in this process) until a
 * bus is installed.  A bus connects managers in several processes: it
 * moves events to shards of other processes, tells the manager which
 * shards are alive (the view) and how loaded they are, and feeds it the
 * events that arrive.  lucent's own bus is NATS (liblucent-nats:
 * lu_nats_serve_start() in lucent/nats.h installs it, as `lucent serve`
 * does); the unit tests plug in an in-process double the same way.
 *
 *   lu_bus_t bus = {.forward = my_forward, .ud = me};
 *   lu_manager_set_bus(m, &bus);             // before any event
 *   lu_manager_set_view(m, ids, n);          // whenever membership changes
 *   lu_input_t in = {.json = json, .len = len, .line = line,
 *                    .origin = where, .delivery = n};
 *   lu_manager_take(m, &in, done);           // an input arrived
 *   lu_manager_accept(m, &in, target, hops, done); // a forward
 *
 * Completion: every call that takes a lu_done_t calls it exactly once,
 * when the event is finished here: its outcome is stored (o != NULL), or
 * it was forwarded to another process (o == NULL, once the bus says the
 * forward is safe).  `stored` is 0 when the store or the forward failed:
 * the transport should then let the input come back (a NAK) rather than
 * acknowledge it.  A call that fails never calls its done.
 *
 * Threads: every call here is thread safe.  done may run on any thread
 * (the writer, a worker, the store's or the bus's own) and must not block
 * long: acknowledge, reply, free.
 */
#ifndef LUCENT_BUS_H
#define LUCENT_BUS_H

#include <stddef.h>
#include <stdint.h>

#include "lucent.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Bytes of a shard id, NUL included: ids are 1 to 63 characters of
 *  [A-Za-z0-9_-] (they go into subjects, names and JSON unescaped). */
#define LU_SHARD_ID_MAX 64

/** Is id a valid shard id?  1 or 0. */
LU_EXTERN int lu_shard_id_valid(const char *id);

/** Who to tell when an event is finished here (see the top of the file).
 *  o and its strings are borrowed for the call. */
typedef struct lu_done_s {
  void (*fn)(void *ctx, const lu_outcome_t *o, int stored);
  void *ctx;
} lu_done_t;

/** lu_bus_t.flags: emitted events go through forward() even to a shard of
 *  this process, so that they are durable before their parent's input is
 *  acknowledged; the parent's done then waits for every child's. */
#define LU_BUS_DURABLE_EMIT 1u
/** lu_bus_t.flags: the transport already spreads inputs evenly over the
 *  processes (a partitioned intake), so an input whose function may run
 *  anywhere (round_robin) runs where it arrived instead of taking a hop. */
#define LU_BUS_SPREAD_INTAKE 2u

/** One event on its way to a shard of another process. */
typedef struct lu_fwd_s {
  const char *target;   /**< the shard it is pinned to (an id of the view) */
  const char *json;     /**< its JSON text, borrowed for the call */
  size_t len;
  unsigned hops;        /**< forwards so far, this one included */
  unsigned delivery;    /**< its input's delivery count (lu_input_t): the
                             receiver passes it on, so that a suspect
                             input runs isolated wherever it lands */
  unsigned replayed;    /**< lu_input_t.replayed, passed on likewise */
} lu_fwd_t;

/** A transport.  Copied by lu_manager_set_bus(); ud is borrowed and must
 *  outlive the manager's use of the bus. */
typedef struct lu_bus_s {
  /** Forwards one event to the shard it names, pinned there.  Must call
   *  done.fn (if set) exactly once, when the forward is safe or has
   *  failed.  Any thread.  Required. */
  void (*forward)(void *ud, const lu_fwd_t *fwd, lu_done_t done);
  /** Sticky-session bindings shared across processes: writes the id of
   *  the shard bound to key (klen bytes, any bytes) into out (cap bytes),
   *  binding it to `candidate` when it is unbound or its shard is gone.
   *  0, or an LU_E* code (the manager then uses the candidate).  NULL: the
   *  manager's own table, which only this process sees. */
  int (*sticky)(void *ud, const char *key, size_t klen,
                const char *candidate, char *out, size_t cap);
  void *ud;
  unsigned flags; /**< LU_BUS_* */
  /** An input held here longer than this (ms) may have been given to
   *  another process meanwhile (this one was frozen or cut off, and the
   *  transport redelivered it): before choosing among competing functions
   *  for it, the manager looks for an outcome one of them stored, as for
   *  lu_input_t.replayed.  0 = never. */
  uint32_t handed_on_after_ms;
} lu_bus_t;

/** Installs a bus (copied).  Call before any event is submitted.
 *  LU_EINVAL without forward. */
LU_EXTERN int lu_manager_set_bus(lu_manager_t *m, const lu_bus_t *bus);

/* ---- membership ------------------------------------------------------- */

/** Replaces the view with these shard ids; this process's shards are
 *  always in it, ids that are not valid shard ids are skipped.  Returns 1
 *  when the view changed, else 0.  Routing sees it at once. */
LU_EXTERN int lu_manager_set_view(lu_manager_t *m, const char *const *ids,
                                  unsigned n);

/** Copies up to cap ids of the view (sorted, so every process orders the
 *  same view the same way) into ids; returns how many the view has (may
 *  exceed cap). */
LU_EXTERN size_t lu_manager_view(lu_manager_t *m,
                                 char (*ids)[LU_SHARD_ID_MAX], size_t cap);

/** Is shard id in the view now? */
LU_EXTERN int lu_manager_in_view(lu_manager_t *m, const char *id);

/** Records the load another process reported for one of its shards (a
 *  heartbeat); ids not in the view are ignored. */
LU_EXTERN void lu_manager_report_load(lu_manager_t *m, const char *id,
                                      uint64_t load);

/** The load to report for this process: events queued, running and
 *  waiting to retry on its shards. */
LU_EXTERN uint64_t lu_manager_load(const lu_manager_t *m);

/* ---- events in -------------------------------------------------------- */

/** An input arrived (lu_input_t: its JSON text, origin and delivery
 *  count, copied): decoded, routed, run here or forwarded, as
 *  lu_manager_submit_input() does, and done is called once it is finished
 *  here.  Bad input is recorded as lucent.Rejected (done then gets that
 *  outcome).  0, or LU_ENOMEM (nothing was taken: done is not called; the
 *  transport lets the input come back). */
LU_EXTERN int lu_manager_take(lu_manager_t *m, const lu_input_t *in,
                              lu_done_t done);

/** An input the transport could not decode (a binary-mode message whose
 *  headers are not a valid event, say): recorded as lucent.Rejected with
 *  `reason` and in's bytes (copied), counted as an input; done as for
 *  lu_manager_take.  0, or LU_ENOMEM (nothing taken). */
LU_EXTERN int lu_manager_reject(lu_manager_t *m, const lu_input_t *in,
                                const char *reason, lu_done_t done);

/** An event another process forwarded to shard `target` arrived.  It runs
 *  here if target is one of this process's shards (pinned: never routed
 *  again).  If target is gone from the view and this process took over
 *  its queue, the event is routed once more (hops + 1; past 2 hops it
 *  runs here).  A redelivered one (in->delivery > 1) runs isolated, as
 *  lu_input_t says.  Returns 0; LU_EBUSY, without calling done, when
 *  target is another shard that is in the view (the transport gives the
 *  message back: it is that shard's), unless in->delivery reaches
 *  lu_config_t.max_deliveries (then it runs here: it must end); LU_ENOMEM
 *  (nothing taken). */
LU_EXTERN int lu_manager_accept(lu_manager_t *m, const lu_input_t *in,
                                const char *target, unsigned hops,
                                lu_done_t done);

/** Where lu_manager_route() would send ev. */
typedef enum lu_route_e {
  LU_ROUTE_OK = 0,     /**< target is set */
  LU_ROUTE_REJECT = 1, /**< the event cannot be routed (missing key) */
  LU_ROUTE_DEAD = 2    /**< nothing can run it (no function, depth, ...) */
} lu_route_t;

/** Routes ev without running it: LU_ROUTE_OK with the target shard's id
 *  in target (cap bytes) and *local set when it is a shard of this
 *  process; otherwise the reason in why (wcap bytes).  A transport uses it
 *  to send a request to its owner before taking it in. */
LU_EXTERN lu_route_t lu_manager_route(lu_manager_t *m, const lu_event_t *ev,
                                      char *target, size_t cap, int *local,
                                      char *why, size_t wcap);

/** lu_manager_run() flags. */
#define LU_RUN_ONCE 1u   /**< never redelivered: its records get
                              LU_RECORD_ONCE (a request/reply) */
#define LU_RUN_INLINE 2u /**< run it on the calling thread when its shard
                              is idle with nothing queued (no hand-off to
                              a worker); the call then returns after the
                              function ran and its outcome went to the
                              store */
#define LU_RUN_MORE 4u   /**< with LU_RUN_INLINE: another call follows
                              soon; keep the shard's turn between them so
                              a burst makes one store batch (its last call
                              should not say MORE; if none follows, a
                              worker takes the turn over within the
                              writer's hold time, ~1 ms, and nothing is
                              lost) */
#define LU_RUN_EXECUTED 8u /**< call done as soon as the outcome is
                              decided (the function returned for the
                              last time, or nothing can run it), before
                              it is stored, with stored = 0: the outcome
                              is then stored asynchronously, and a crash
                              or a store that keeps refusing it may lose
                              it after done has reported it.  done runs
                              on the thread that ran the function, with
                              no lucent lock held; the outcome's strings
                              live until done returns */

/** Runs ev (takes ownership, even on error) on this process's shard
 *  `target` (pinned; NULL or unknown: the first shard); done gets the
 *  outcome.  The caller must not hold any lock lucent calls back into.
 *  0, or LU_ENOMEM (done not called). */
LU_EXTERN int lu_manager_run(lu_manager_t *m, lu_event_t *ev,
                             const char *target, unsigned flags,
                             lu_done_t done);

/** Ends the calling thread's burst (LU_RUN_MORE) on m's shards early: the
 *  turn it kept is given back and its outcomes handed to the store now.
 *  A no-op otherwise. */
LU_EXTERN void lu_manager_end_burst(lu_manager_t *m);

/** The registry the manager was made with (borrowed). */
LU_EXTERN const lu_registry_t *lu_manager_registry(const lu_manager_t *m);

#ifdef __cplusplus
}
#endif
#endif /* LUCENT_BUS_H */
