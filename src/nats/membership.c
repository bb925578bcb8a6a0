/*
 * membership.c - the shard view over NATS: who is alive, and how loaded.
 *
 * Every shard publishes a heartbeat on lucent.hb.<id> every interval (core
 * NATS: a lost heartbeat is replaced by the next one) carrying its load;
 * every shard subscribes to lucent.hb.* and keeps, per shard, when it was
 * last heard and what it reported.  A shard is in the view while it was
 * heard within the timeout (default 6 intervals); one that stops cleanly
 * says so ("leaving") and drops out at once.  With a static list
 * (--shards a,b,c) the view is that list, and heartbeats only carry loads.
 *
 * On every change the manager's view is replaced (lu__manager_set_view)
 * and the owner's callback runs, so the bus can re-claim its consumers.
 *
 *   heartbeat: {"id":"shard-a","load":12,"seq":42,"leaving":false}
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lucent/log.h"
#include "membership.h"

/* Peers known at once: live ones, plus those heard since the last
 * refresh.  Past it a heartbeat of a new id is dropped, with a warning
 * (at most one per 10 s): never silently. */
#define MAX_PEERS 4096
#define WARN_EVERY_NS (10000 * NS_PER_MS)

typedef struct peer_s {
  char id[LU_SHARD_ID_MAX];
  uint64_t last_ms;
  uint64_t load;
  int leaving;
} peer_t;

struct lu_membership_s {
  natsConnection *nc;
  lu_manager_t *m;
  char self[LU_SHARD_ID_MAX];
  char **fixed; /* static view, or NULL */
  unsigned nfixed;
  uint32_t interval_ms, timeout_ms;
  void (*on_change)(void *ud);
  void *ud;
  natsSubscription *sub;
  pthread_t thread;
  int started; /* thread runs (a pthread_t has no "none" value) */
  int inited;  /* lock and cond made */
  pthread_mutex_t lock;
  pthread_cond_t cond; /* monotonic */
  int stop;
  /* The peer table (under lock): every shard heard and not expired.  A
   * peer leaves it at the refresh after it said "leaving" or went silent
   * for the timeout, so its size is the live shards plus the newcomers
   * since the last refresh, however many ids a fleet uses over its life
   * (restarted pods get new ids). */
  peer_t *peers;
  unsigned npeers, cappeers;
  const char **ids; /* refresh's scratch: cappeers + nfixed entries */
  uint64_t seq;
  uint64_t warned_ns; /* last "table full" warning */
  _Atomic uint64_t dropped; /* heartbeats of new peers dropped: full */
  int view_logged; /* the refresh thread's */
};

static uint64_t now_ms(void) { return lu__now_ns() / NS_PER_MS; }

int lu__hb_parse(const char *data, size_t len, lu_hb_t *hb) {
  memset(hb, 0, sizeof *hb);
  cJSON *j = data ? cJSON_ParseWithLength(data, len) : NULL;
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
  const cJSON *load = cJSON_GetObjectItemCaseSensitive(j, "load");
  const cJSON *leaving = cJSON_GetObjectItemCaseSensitive(j, "leaving");
  int rc = LU_EINVAL;
  if (cJSON_IsString(id) && lu_shard_id_valid(id->valuestring)) {
    lu__fmt(hb->id, sizeof hb->id, "%s", id->valuestring);
    /* A load is a count: negative, NaN or not a number reads 0, and one
     * past what a uint64_t holds is clamped (the cast would be UB). */
    double d = cJSON_IsNumber(load) ? load->valuedouble : 0;
    hb->load = d > 0 && d < 18446744073709551615.0 ? (uint64_t)d
               : d >= 18446744073709551615.0        ? UINT64_MAX
                                                    : 0;
    hb->leaving = cJSON_IsTrue(leaving);
    rc = 0;
  }
  cJSON_Delete(j);
  return rc;
}

/* The peer with this id, made if new; NULL when the table is full or out
 * of memory (counted and warned about).  Under ms->lock. */
static peer_t *peer_get(lu_membership_t *ms, const char *id) {
  for (unsigned i = 0; i < ms->npeers; i++)
    if (!strcmp(ms->peers[i].id, id)) return &ms->peers[i];
  if (ms->npeers == ms->cappeers) {
    unsigned cap = ms->cappeers ? ms->cappeers * 2 : 64;
    if (cap > MAX_PEERS) cap = MAX_PEERS;
    peer_t *p = cap > ms->cappeers ? realloc(ms->peers, cap * sizeof *p)
                                   : NULL;
    const char **ids = p ? realloc(ms->ids, (cap + ms->nfixed + 1) *
                                                sizeof *ids)
                         : NULL;
    if (p) ms->peers = p;
    if (ids) ms->ids = ids;
    if (!p || !ids) {
      atomic_fetch_add(&ms->dropped, 1);
      uint64_t now = lu__now_ns();
      if (!ms->warned_ns || now - ms->warned_ns >= WARN_EVERY_NS) {
        ms->warned_ns = now;
        LU_LOG(LU_LOG_WARN, ms->self, NULL,
               LU_KVS(LU_KV_STR("peer", id), LU_KV_UINT("peers", ms->npeers),
                      LU_KV_UINT("dropped", atomic_load(&ms->dropped))),
               "heartbeat of a new shard dropped: peer table full");
      }
      return NULL;
    }
    ms->cappeers = cap;
  }
  peer_t *p = &ms->peers[ms->npeers++];
  memset(p, 0, sizeof *p);
  lu__fmt(p->id, sizeof p->id, "%s", id);
  return p;
}

static void on_hb(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                  void *closure) {
  (void)nc, (void)sub;
  lu_membership_t *ms = closure;
  lu_hb_t hb;
  const char *d = natsMsg_GetData(msg);
  int dl = natsMsg_GetDataLength(msg);
  if (lu__hb_parse(d, dl > 0 ? (size_t)dl : 0, &hb) == 0 &&
      strcmp(hb.id, ms->self) != 0) {
    pthread_mutex_lock(&ms->lock);
    peer_t *p = peer_get(ms, hb.id);
    if (p) {
      p->last_ms = now_ms();
      p->load = hb.load;
      p->leaving = hb.leaving;
    }
    pthread_mutex_unlock(&ms->lock);
    if (p) lu_manager_report_load(ms->m, hb.id, hb.load);
    /* A join or a leave is worth acting on now, not at the next tick. */
    if (p && (hb.leaving || !lu_manager_in_view(ms->m, hb.id))) {
      pthread_mutex_lock(&ms->lock);
      pthread_cond_signal(&ms->cond);
      pthread_mutex_unlock(&ms->lock);
    }
  }
  natsMsg_Destroy(msg);
}

unsigned lu__membership_peers(lu_membership_t *ms) {
  pthread_mutex_lock(&ms->lock);
  unsigned n = ms->npeers;
  pthread_mutex_unlock(&ms->lock);
  return n;
}

static void publish_hb(lu_membership_t *ms, int leaving) {
  char subj[128], body[256];
  lu__fmt(subj, sizeof subj, "%s.%s", LU_SUBJ_HB, ms->self);
  lu__fmt(body, sizeof body,
          "{\"id\":\"%s\",\"load\":%llu,\"seq\":%llu,\"leaving\":%s}",
          ms->self, (unsigned long long)lu_manager_load(ms->m),
          (unsigned long long)ms->seq++, leaving ? "true" : "false");
  natsConnection_PublishString(ms->nc, subj, body);
}

/* Recomputes the live set and installs it if it changed, and drops the
 * peers that are not live (said "leaving", or silent for the timeout)
 * from the table.  Returns 1 when the view changed. */
static int refresh(lu_membership_t *ms) {
  unsigned n = 0;
  uint64_t now = now_ms();
  pthread_mutex_lock(&ms->lock);
  const char *one[1];
  const char **ids = ms->ids ? ms->ids : one;
  unsigned keep = 0;
  for (unsigned i = 0; i < ms->npeers; i++) {
    peer_t *p = &ms->peers[i];
    if (p->leaving || !p->last_ms || now - p->last_ms > ms->timeout_ms)
      continue; /* expired: out of the table */
    if (keep != i) ms->peers[keep] = *p;
    keep++;
  }
  ms->npeers = keep;
  if (ms->fixed) { /* heartbeats only carry loads */
    ids = (const char **)ms->fixed;
    n = ms->nfixed;
  } else {
    for (unsigned i = 0; i < ms->npeers; i++) ids[n++] = ms->peers[i].id;
  }
  int changed = lu_manager_set_view(ms->m, ids, n);
  pthread_mutex_unlock(&ms->lock);
  /* The first view is logged too: the one this shard starts with. */
  int first = !ms->view_logged;
  ms->view_logged = 1;
  if ((changed || first) && lu_log_enabled(LU_LOG_INFO)) {
    size_t total = lu_manager_view(ms->m, NULL, 0);
    char (*v)[LU_SHARD_ID_MAX] = calloc(total + 1, sizeof *v);
    lu_buf_t b = {0};
    size_t vn = v ? lu_manager_view(ms->m, v, total + 1) : 0;
    for (size_t i = 0; i < vn && i <= total; i++) {
      if (i) lu__buf_puts(&b, ",");
      lu__buf_puts(&b, v[i]);
    }
    LU_LOG(LU_LOG_INFO, ms->self, NULL,
           LU_KVS(LU_KV_UINT("shards", vn),
                  LU_KV_STR("view", b.p && !b.oom ? b.p : "")),
           "shard view changed");
    lu__buf_free(&b);
    free(v);
  }
  return changed;
}

static void *hb_main(void *arg) {
  lu_membership_t *ms = arg;
  pthread_mutex_lock(&ms->lock);
  while (!ms->stop) {
    pthread_mutex_unlock(&ms->lock);
    publish_hb(ms, 0);
    if (refresh(ms) && ms->on_change) ms->on_change(ms->ud);
    pthread_mutex_lock(&ms->lock);
    if (ms->stop) break;
    /* Monotonic: a step of the wall clock must not stall heartbeats (a
     * step back of an hour would silence this shard for an hour). */
    lu__cond_wait_until(&ms->cond, &ms->lock,
                        lu__now_ns() + (uint64_t)ms->interval_ms * NS_PER_MS);
  }
  pthread_mutex_unlock(&ms->lock);
  return NULL;
}

/* Frees what start made (the thread is not running). */
static void membership_free(lu_membership_t *ms) {
  for (unsigned i = 0; i < ms->nfixed; i++) free(ms->fixed[i]);
  free(ms->fixed);
  free(ms->peers);
  free(ms->ids);
  if (ms->inited) {
    pthread_mutex_destroy(&ms->lock);
    pthread_cond_destroy(&ms->cond);
  }
  free(ms);
}

int lu__membership_start(lu_membership_t **out, natsConnection *nc,
                         lu_manager_t *m, const char *self,
                         const char *static_view, uint32_t interval_ms,
                         void (*on_change)(void *ud), void *ud, char *err,
                         size_t errlen) {
  *out = NULL;
  lu_membership_t *ms = calloc(1, sizeof *ms);
  if (!ms) {
    lu__fmt(err, errlen, "out of memory");
    return LU_ENOMEM;
  }
  ms->nc = nc;
  ms->m = m;
  lu__fmt(ms->self, sizeof ms->self, "%s", self);
  ms->interval_ms = interval_ms ? interval_ms : 250;
  ms->timeout_ms = ms->interval_ms * 6;
  ms->on_change = on_change;
  ms->ud = ud;
  if (pthread_mutex_init(&ms->lock, NULL)) {
    free(ms);
    lu__fmt(err, errlen, "cannot initialise a mutex");
    return LU_ENOMEM;
  }
  if (lu__cond_init_mono(&ms->cond)) { /* hb_main's waits: monotonic */
    pthread_mutex_destroy(&ms->lock);
    free(ms);
    lu__fmt(err, errlen, "cannot initialise a condition variable");
    return LU_ENOMEM;
  }
  ms->inited = 1;
  if (static_view && *static_view) {
    char *copy = strdup(static_view), *save = NULL;
    int oom = !copy;
    for (char *t = copy ? strtok_r(copy, ", ", &save) : NULL; t && !oom;
         t = strtok_r(NULL, ", ", &save)) {
      char **f = realloc(ms->fixed, (ms->nfixed + 1) * sizeof *f);
      char *id = f ? strdup(t) : NULL;
      if (f) ms->fixed = f;
      if (!id) oom = 1;
      else ms->fixed[ms->nfixed++] = id;
    }
    free(copy);
    if (oom) {
      membership_free(ms);
      lu__fmt(err, errlen, "out of memory");
      return LU_ENOMEM;
    }
  }
  char subj[64];
  lu__fmt(subj, sizeof subj, "%s.*", LU_SUBJ_HB);
  natsStatus s = lu__nats_subscribe(nc, &ms->sub, subj, NULL, on_hb, ms);
  if (s == NATS_OK) s = natsConnection_Flush(nc);
  if (s != NATS_OK) {
    char r[256];
    lu__nats_reason(s, r, sizeof r);
    lu__fmt(err, errlen, "cannot subscribe to heartbeats: %s", r);
    lu__membership_stop(ms);
    return LU_EIO;
  }
  refresh(ms);
  if (pthread_create(&ms->thread, NULL, hb_main, ms)) {
    lu__fmt(err, errlen, "cannot start the heartbeat thread");
    lu__membership_stop(ms);
    return LU_ENOMEM;
  }
  ms->started = 1;
  *out = ms;
  return 0;
}

void lu__membership_stop(lu_membership_t *ms) {
  if (!ms) return;
  if (ms->started) {
    pthread_mutex_lock(&ms->lock);
    ms->stop = 1;
    pthread_cond_signal(&ms->cond);
    pthread_mutex_unlock(&ms->lock);
    pthread_join(ms->thread, NULL);
    ms->started = 0;
    publish_hb(ms, 1); /* others drop us now, not after the timeout */
    natsConnection_Flush(ms->nc);
  }
  lu__nats_unsubscribe(&ms->sub); /* no callback runs on `ms` after it */
  membership_free(ms);
}
