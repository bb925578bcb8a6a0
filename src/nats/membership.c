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

#define MAX_PEERS 256

typedef struct peer_s {
  char id[64];
  uint64_t last_ms;
  uint64_t load;
  int leaving;
} peer_t;

struct lu_membership_s {
  natsConnection *nc;
  lu_manager_t *m;
  char self[64];
  char **fixed; /* static view, or NULL */
  unsigned nfixed;
  uint32_t interval_ms, timeout_ms;
  void (*on_change)(void *ud);
  void *ud;
  natsSubscription *sub;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int stop;
  peer_t peers[MAX_PEERS];
  unsigned npeers;
  uint64_t seq;
  int view_logged; /* the refresh thread's */
};

static uint64_t now_ms(void) { return lu__now_ns() / 1000000u; }

static peer_t *peer_get(lu_membership_t *ms, const char *id) {
  for (unsigned i = 0; i < ms->npeers; i++)
    if (!strcmp(ms->peers[i].id, id)) return &ms->peers[i];
  if (ms->npeers == MAX_PEERS) return NULL;
  peer_t *p = &ms->peers[ms->npeers++];
  memset(p, 0, sizeof *p);
  lu__fmt(p->id, sizeof p->id, "%s", id);
  return p;
}

static void on_hb(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                  void *closure) {
  (void)nc, (void)sub;
  lu_membership_t *ms = closure;
  cJSON *j = cJSON_ParseWithLength(natsMsg_GetData(msg),
                                   (size_t)natsMsg_GetDataLength(msg));
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
  const cJSON *load = cJSON_GetObjectItemCaseSensitive(j, "load");
  const cJSON *leaving = cJSON_GetObjectItemCaseSensitive(j, "leaving");
  if (cJSON_IsString(id) && strcmp(id->valuestring, ms->self) != 0 &&
      strlen(id->valuestring) < 64) {
    pthread_mutex_lock(&ms->lock);
    peer_t *p = peer_get(ms, id->valuestring);
    if (p) {
      p->last_ms = now_ms();
      p->load = cJSON_IsNumber(load) && load->valuedouble >= 0
                    ? (uint64_t)load->valuedouble : 0;
      p->leaving = cJSON_IsTrue(leaving);
    }
    pthread_mutex_unlock(&ms->lock);
    if (p) lu_manager_report_load(ms->m, id->valuestring, p->load);
    /* A join or a leave is worth acting on now, not at the next tick. */
    if (p && (p->leaving || !lu_manager_in_view(ms->m, id->valuestring))) {
      pthread_mutex_lock(&ms->lock);
      pthread_cond_signal(&ms->cond);
      pthread_mutex_unlock(&ms->lock);
    }
  }
  cJSON_Delete(j);
  natsMsg_Destroy(msg);
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

/* Recomputes the live set and installs it if it changed.  Returns 1 when
 * the view changed. */
static int refresh(lu_membership_t *ms) {
  const char *ids[MAX_PEERS + 1];
  unsigned n = 0;
  uint64_t now = now_ms();
  pthread_mutex_lock(&ms->lock);
  if (ms->fixed) {
    for (unsigned i = 0; i < ms->nfixed; i++) ids[n++] = ms->fixed[i];
  } else {
    for (unsigned i = 0; i < ms->npeers; i++) {
      peer_t *p = &ms->peers[i];
      if (!p->leaving && p->last_ms && now - p->last_ms <= ms->timeout_ms)
        ids[n++] = p->id;
    }
  }
  int changed = lu_manager_set_view(ms->m, ids, n);
  pthread_mutex_unlock(&ms->lock);
  /* The first view is logged too: the one this shard starts with. */
  int first = !ms->view_logged;
  ms->view_logged = 1;
  if ((changed || first) && lu_log_enabled(LU_LOG_INFO)) {
    char (*v)[LU_SHARD_ID_MAX] = calloc(MAX_PEERS + 1, sizeof *v);
    lu_buf_t b = {0};
    size_t vn = v ? lu_manager_view(ms->m, v, MAX_PEERS + 1) : 0;
    for (size_t i = 0; i < vn && i <= MAX_PEERS; i++) {
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

int lu__membership_start(lu_membership_t **out, natsConnection *nc,
                         lu_manager_t *m, const char *self,
                         const char *static_view, uint32_t interval_ms,
                         void (*on_change)(void *ud), void *ud, char *err,
                         size_t errlen) {
  *out = NULL;
  lu_membership_t *ms = calloc(1, sizeof *ms);
  if (!ms) return LU_ENOMEM;
  ms->nc = nc;
  ms->m = m;
  lu__fmt(ms->self, sizeof ms->self, "%s", self);
  ms->interval_ms = interval_ms ? interval_ms : 250;
  ms->timeout_ms = ms->interval_ms * 6;
  ms->on_change = on_change;
  ms->ud = ud;
  pthread_mutex_init(&ms->lock, NULL);
  lu__cond_init_mono(&ms->cond); /* hb_main's waits are monotonic */
  if (static_view && *static_view) {
    char *copy = strdup(static_view), *save = NULL;
    for (char *t = strtok_r(copy, ", ", &save); t;
         t = strtok_r(NULL, ", ", &save)) {
      char **f = realloc(ms->fixed, (ms->nfixed + 1) * sizeof *f);
      if (!f) break;
      ms->fixed = f;
      ms->fixed[ms->nfixed++] = strdup(t);
    }
    free(copy);
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
  pthread_create(&ms->thread, NULL, hb_main, ms);
  *out = ms;
  return 0;
}

void lu__membership_stop(lu_membership_t *ms) {
  if (!ms) return;
  if (ms->thread) {
    pthread_mutex_lock(&ms->lock);
    ms->stop = 1;
    pthread_cond_signal(&ms->cond);
    pthread_mutex_unlock(&ms->lock);
    pthread_join(ms->thread, NULL);
    publish_hb(ms, 1); /* others drop us now, not after the timeout */
    natsConnection_Flush(ms->nc);
  }
  lu__nats_unsubscribe(&ms->sub); /* no callback runs on `ms` after it */
  for (unsigned i = 0; i < ms->nfixed; i++) free(ms->fixed[i]);
  free(ms->fixed);
  pthread_mutex_destroy(&ms->lock);
  pthread_cond_destroy(&ms->cond);
  free(ms);
}
