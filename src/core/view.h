/*
 * view.h - members and the shard view (view.c): every shard this process
 * knows of, and the live ones routing chooses from.
 *
 * A member is a shard id this process has seen: one of its own shards, or
 * another process's, heard in heartbeats or named in a static list.  The
 * view is the live members, sorted by id so that every process with the
 * same members orders them the same way.  Routing reads the view under a
 * read lock (many shard threads at once); membership replaces it under
 * the write lock.
 *
 * Members that leave the view are kept while the table has room (a shard
 * that blinks out and back keeps its load report) and reclaimed when it
 * needs room, the one out the longest first: a fleet whose shards come
 * and go under new ids (restarted pods), however fast, never fills it.  Nothing
 * outside this module keeps a member (routing copies what it needs out:
 * lu_dest_t); sticky sessions remember a shard by its seed.
 */
#ifndef LUCENT_VIEW_H
#define LUCENT_VIEW_H

#include "internal.h"

#define LU_VIEW_MAX 256      /* shards in a view */
#define LU_MEMBERS_MAX 1024  /* members known at once */

typedef struct lu_member_s {
  char id[LU_SHARD_ID_MAX];
  uint64_t seed;                /* rendezvous seed: hash of the id */
  struct lu_shard_s *local;     /* this process's shard, or NULL */
  const _Atomic uint64_t *local_load; /* its load counter when local */
  _Atomic uint64_t load;        /* remote: last reported load */
  unsigned slot;                /* index in the member table */
  uint64_t left_ms;             /* remote: when it left the view; 0 = in */
} lu_member_t;

typedef struct lu_view_s {
  pthread_mutex_t members_lock;  /* the member table */
  lu_member_t *members[LU_MEMBERS_MAX]; /* by slot; NULL = free slot */
  unsigned nmembers;             /* slots in use */
  pthread_rwlock_t lock;         /* the view */
  unsigned n;
  lu_member_t *v[LU_VIEW_MAX];
  uint64_t seeds[LU_VIEW_MAX];
  uint64_t gen;                  /* bumped at each change */
  uint64_t reclaimed;            /* members freed so far (members_lock) */
  uint64_t warned_ns;            /* last "no room" warning (both locks) */
} lu_view_t;

/** lu_shard_id_valid (lucent/bus.h). */
int lu__shard_id_valid(const char *id);

int lu__view_init(lu_view_t *v);
void lu__view_destroy(lu_view_t *v);

/** Adds one of this process's shards (id must be new): its member, or
 *  NULL with LU_EEXIST (duplicate id) / LU_ENOMEM in *err. */
lu_member_t *lu__view_add_local(lu_view_t *v, const char *id,
                                struct lu_shard_s *s,
                                const _Atomic uint64_t *load, int *err);

/** Replaces the view with the local members plus these ids (unknown ids
 *  become members; ids that are not valid shard ids are skipped).  Members
 *  out of the view are reclaimed (their slot freed) when the table needs
 *  room (see the top).  Valid ids beyond LU_VIEW_MAX live shards are left
 *  out with a warning (at most one per 10 s).  Returns 1 when the view
 *  changed.  Thread safe. */
int lu__view_set(lu_view_t *v, const char *const *ids, unsigned n);

/** Records a remote member's reported load (unknown ids are ignored: a
 *  heartbeat makes a member only through lu__view_set).  Thread safe. */
void lu__view_report_load(lu_view_t *v, const char *id, uint64_t load);

/** Is id in the view now?  Thread safe. */
int lu__view_contains(lu_view_t *v, const char *id);

/** Copies up to cap ids of the view, in view order, into ids; returns how
 *  many the view has (may exceed cap).  Thread safe. */
size_t lu__view_ids(lu_view_t *v, char (*ids)[LU_SHARD_ID_MAX], size_t cap);

/** Members in the table now (view or recently left).  Thread safe. */
unsigned lu__view_members(lu_view_t *v);

/** A member's load: its shard's counter when local, else its report. */
static inline uint64_t lu__member_load(const lu_member_t *mb) {
  return mb->local_load
             ? atomic_load_explicit(mb->local_load, memory_order_relaxed)
             : atomic_load_explicit(&mb->load, memory_order_relaxed);
}

#endif /* LUCENT_VIEW_H */
