/*
 * view.c - members and the shard view (view.h).
 *
 * Two locks, never held together except members_lock -> lock (set):
 * members_lock guards the member table (find, create, reclaim), the
 * view's rwlock guards what routing reads (the live members and their
 * seeds).  A member is freed only by lu__view_set, under both locks, and
 * only when it is out of the view; nothing keeps a member pointer past
 * the lock it read it under (routing copies the id and the local shard
 * out: lu_dest_t), and loads are reported under members_lock.  So a
 * member out of the view can go at any time: it is kept while the table
 * has room (its load report survives a blink), and when a new id needs a
 * slot the member out of the view the longest goes.  A
 * new shard is never ignored for want of a slot while any member is out
 * of the view; when it must be (more live shards than the view holds),
 * a warning says so.
 */
#include <stdlib.h>
#include <string.h>

#include "lucent/log.h"
#include "view.h"

#define WARN_EVERY_NS (10000 * NS_PER_MS)

int lu__view_init(lu_view_t *v) {
  memset(v, 0, sizeof *v);
  if (pthread_mutex_init(&v->members_lock, NULL)) return LU_ENOMEM;
  if (pthread_rwlock_init(&v->lock, NULL)) {
    pthread_mutex_destroy(&v->members_lock);
    return LU_ENOMEM;
  }
  return 0;
}

void lu__view_destroy(lu_view_t *v) {
  for (unsigned i = 0; i < LU_MEMBERS_MAX; i++) free(v->members[i]);
  pthread_mutex_destroy(&v->members_lock);
  pthread_rwlock_destroy(&v->lock);
}

int lu__shard_id_valid(const char *id) {
  size_t n = 0;
  if (!id) return 0;
  for (; id[n]; n++) {
    char c = id[n];
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
             (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok || n + 1 >= LU_SHARD_ID_MAX) return 0;
  }
  return n > 0;
}

/* The member with this id (its seed: lu__shard_seed(id), compared first:
 * a refresh looks up every id of the view in the whole table). */
static lu_member_t *find_seeded(lu_view_t *v, const char *id, uint64_t seed) {
  for (unsigned i = 0; i < LU_MEMBERS_MAX; i++) {
    lu_member_t *mb = v->members[i];
    if (mb && mb->seed == seed && !strcmp(mb->id, id)) return mb;
  }
  return NULL;
}

static lu_member_t *find(lu_view_t *v, const char *id) {
  return find_seeded(v, id, lu__shard_seed(id));
}

/* A free slot, reclaiming a member out of the view when none is free:
 * the one out the longest.  Under members_lock, with the view write-locked by the caller when it
 * may reclaim.  -1: every slot holds a local or live member. */
static int free_slot(lu_view_t *v, int may_reclaim) {
  int oldest = -1;
  for (unsigned i = 0; i < LU_MEMBERS_MAX; i++) {
    lu_member_t *mb = v->members[i];
    if (!mb) return (int)i;
    if (!may_reclaim || mb->local || !mb->left_ms) continue;
    if (oldest < 0 || mb->left_ms < v->members[oldest]->left_ms)
      oldest = (int)i;
  }
  if (oldest >= 0) {
    free(v->members[oldest]);
    v->members[oldest] = NULL;
    v->nmembers--;
    v->reclaimed++;
  }
  return oldest;
}

static lu_member_t *create(lu_view_t *v, const char *id, int may_reclaim) {
  int slot = free_slot(v, may_reclaim);
  if (slot < 0) return NULL;
  lu_member_t *mb = calloc(1, sizeof *mb);
  if (!mb) return NULL;
  lu__fmt(mb->id, sizeof mb->id, "%s", id);
  mb->seed = lu__shard_seed(mb->id);
  mb->slot = (unsigned)slot;
  v->members[slot] = mb;
  v->nmembers++;
  return mb;
}

lu_member_t *lu__view_add_local(lu_view_t *v, const char *id,
                                struct lu_shard_s *s,
                                const _Atomic uint64_t *load, int *err) {
  *err = 0;
  pthread_mutex_lock(&v->members_lock);
  lu_member_t *mb = find(v, id);
  if (mb) {
    pthread_mutex_unlock(&v->members_lock);
    *err = LU_EEXIST;
    return NULL;
  }
  mb = create(v, id, 0);
  if (mb) {
    mb->local = s;
    mb->local_load = load;
  }
  pthread_mutex_unlock(&v->members_lock);
  if (!mb) *err = LU_ENOMEM;
  return mb;
}

static int cmp_member(const void *a, const void *b) {
  return strcmp((*(lu_member_t *const *)a)->id, (*(lu_member_t *const *)b)->id);
}

int lu__view_set(lu_view_t *v, const char *const *ids, unsigned n) {
  lu_member_t *nv[LU_VIEW_MAX];
  unsigned vn = 0;
  uint64_t now_ms = lu__now_ns() / NS_PER_MS;
  pthread_mutex_lock(&v->members_lock);
  pthread_rwlock_wrlock(&v->lock);
  /* This process's shards are always in its own view. */
  for (unsigned i = 0; i < LU_MEMBERS_MAX && vn < LU_VIEW_MAX; i++)
    if (v->members[i] && v->members[i]->local) nv[vn++] = v->members[i];
  unsigned skipped = 0; /* valid ids left out: no room */
  const char *first_skipped = NULL;
  for (unsigned i = 0; i < n; i++) {
    if (!lu__shard_id_valid(ids[i])) continue;
    lu_member_t *mb = find_seeded(v, ids[i], lu__shard_seed(ids[i]));
    if (!mb && vn < LU_VIEW_MAX) mb = create(v, ids[i], 1);
    if (mb && mb->local) continue;
    int dup = 0;
    for (unsigned k = 0; mb && k < vn && !dup; k++) dup = nv[k] == mb;
    if (dup) continue;
    if (!mb || vn == LU_VIEW_MAX) {
      if (!skipped++) first_skipped = ids[i];
      continue;
    }
    nv[vn++] = mb;
  }
  if (skipped) {
    uint64_t now = lu__now_ns();
    if (!v->warned_ns || now - v->warned_ns >= WARN_EVERY_NS) {
      v->warned_ns = now;
      LU_LOG(LU_LOG_WARN, NULL, NULL,
             LU_KVS(LU_KV_UINT("skipped", skipped),
                    LU_KV_STR("first", first_skipped),
                    LU_KV_UINT("view_max", LU_VIEW_MAX)),
             "shards left out of the view: no room");
    }
  }
  /* Sorted by id: every process orders the same view the same way, so
   * round robin and indexes agree (rendezvous does not need it). */
  qsort(nv, vn, sizeof *nv, cmp_member);
  int changed = vn != v->n;
  for (unsigned i = 0; i < vn && !changed; i++) changed = nv[i] != v->v[i];
  if (changed) {
    /* Who left now starts their time out of the view; who came back
     * stops it. */
    for (unsigned i = 0; i < v->n; i++) v->v[i]->left_ms = now_ms ? now_ms : 1;
    for (unsigned i = 0; i < vn; i++) {
      nv[i]->left_ms = 0;
      v->v[i] = nv[i];
      v->seeds[i] = nv[i]->seed;
    }
    v->n = vn;
    v->gen++;
  }
  pthread_rwlock_unlock(&v->lock);
  pthread_mutex_unlock(&v->members_lock);
  return changed;
}

void lu__view_report_load(lu_view_t *v, const char *id, uint64_t load) {
  pthread_mutex_lock(&v->members_lock);
  lu_member_t *mb = find(v, id);
  if (mb && !mb->local)
    atomic_store_explicit(&mb->load, load, memory_order_relaxed);
  pthread_mutex_unlock(&v->members_lock);
}

int lu__view_contains(lu_view_t *v, const char *id) {
  int in = 0;
  pthread_rwlock_rdlock(&v->lock);
  for (unsigned i = 0; i < v->n && !in; i++) in = !strcmp(v->v[i]->id, id);
  pthread_rwlock_unlock(&v->lock);
  return in;
}

size_t lu__view_ids(lu_view_t *v, char (*ids)[LU_SHARD_ID_MAX], size_t cap) {
  pthread_rwlock_rdlock(&v->lock);
  size_t n = v->n;
  for (size_t i = 0; i < n && i < cap; i++)
    memcpy(ids[i], v->v[i]->id, LU_SHARD_ID_MAX);
  pthread_rwlock_unlock(&v->lock);
  return n;
}

unsigned lu__view_members(lu_view_t *v) {
  pthread_mutex_lock(&v->members_lock);
  unsigned n = v->nmembers;
  pthread_mutex_unlock(&v->members_lock);
  return n;
}
