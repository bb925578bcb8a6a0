/*
 * assets.c - lucent's JetStream assets: configuration, creation, replica
 * count (assets.h says what and why).
 */
#include "assets.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lucent/log.h"
#include "nats_internal.h"
#include "retry.h"

/* The duplicate window of the work queues: outlasts redeliveries. */
#define LU_ASSETS_QUEUE_DUP_NS ((int64_t)120 * 1000000000)

int lu__assets_parse_replicas(const char *s, unsigned *out) {
  if (!s || *s < '0' || *s > '9') return -1;
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || *end || v > LU_ASSETS_MAX_REPLICAS) return -1;
  *out = (unsigned)v;
  return 0;
}

static const char *flag_of(const lu_assets_opts_t *o) {
  return o && o->flag ? o->flag : "--replicas";
}

void lu__assets_reason(natsStatus s, jsErrCode jerr, char *buf, size_t cap) {
  if (s == NATS_NO_RESPONDERS) {
    lu__fmt(buf, cap, "JetStream is not enabled on the server (start "
                      "nats-server with -js)");
    return;
  }
  char r[300];
  lu__nats_reason(s, r, sizeof r);
  if (jerr)
    lu__fmt(buf, cap, "%s (JetStream error %d)", r, (int)jerr);
  else
    lu__fmt(buf, cap, "%s", r);
}

/* Retry a failed API call?  "No responders" on the API means no
 * JetStream at all: said at once. */
static int api_again(lu_retry_t *r, natsStatus s, jsErrCode jerr) {
  if (s == NATS_NO_RESPONDERS) return 0;
  char why[300];
  lu__assets_reason(s, jerr, why, sizeof why);
  return lu__retry_again(r, s, (int)jerr, why);
}

/* Per-call options: the wait asked, else the context's (NULL). */
static jsOptions *call_opts(const lu_assets_opts_t *o, jsOptions *jo) {
  if (!o || !o->wait_ms) return NULL;
  jsOptions_Init(jo);
  jo->Wait = (int64_t)o->wait_ms;
  return jo;
}

static lu_retry_t retry_of(const lu_assets_opts_t *o, const char *what) {
  return (lu_retry_t){.window_ms = o ? o->retry_ms : 0, .what = what,
                      .who = o ? o->who : NULL};
}

natsStatus lu__assets_stream_info(jsCtx *js, const char *name,
                                  const lu_assets_opts_t *o,
                                  jsStreamInfo **si, jsErrCode *jerr) {
  char what[96];
  lu__fmt(what, sizeof what, "reading stream %s", name);
  lu_retry_t r = retry_of(o, what);
  for (;;) {
    *jerr = 0;
    *si = NULL;
    jsOptions jo;
    natsStatus s = js_GetStreamInfo(si, js, name, call_opts(o, &jo), jerr);
    if (s == NATS_OK || s == NATS_NOT_FOUND) {
      lu__retry_ok(&r);
      return s;
    }
    if (!api_again(&r, s, *jerr)) return s;
  }
}

/* Creates the stream (lu__nats_create_stream: a concurrent creator is
 * found, not fought), retried through an election.  A replica count the
 * server cannot give is said with the fix. */
static int create_stream(jsCtx *js, jsStreamConfig *cfg,
                         const lu_assets_opts_t *o, jsStreamInfo **si,
                         char *err, size_t errlen) {
  char what[96];
  lu__fmt(what, sizeof what, "creating stream %s", cfg->Name);
  lu_retry_t r = retry_of(o, what);
  natsStatus s;
  jsErrCode jerr;
  for (;;) {
    jerr = 0;
    s = lu__nats_create_stream(js, cfg, si, &jerr);
    if (s == NATS_OK) {
      lu__retry_ok(&r);
      return 0;
    }
    if (!api_again(&r, s, jerr)) break;
  }
  char why[300];
  lu__assets_reason(s, jerr, why, sizeof why);
  if (jerr == JSStreamReplicasNotSupportedErr)
    lu__fmt(err, errlen,
            "cannot create stream %s with %ld replicas: the NATS server is "
            "a single server, not a cluster, and keeps one copy (%s); use "
            "%s 1, or a cluster of at least %ld nodes",
            cfg->Name, (long)cfg->Replicas, why, flag_of(o),
            (long)cfg->Replicas);
  else if (jerr == JSClusterNoPeersErr || jerr == JSInsufficientResourcesErr)
    lu__fmt(err, errlen,
            "cannot create stream %s with %ld replicas: %s; the cluster "
            "needs at least %ld nodes up with JetStream, or ask fewer "
            "with %s",
            cfg->Name, (long)cfg->Replicas, why, (long)cfg->Replicas,
            flag_of(o));
  else
    lu__fmt(err, errlen, "cannot create stream %s: %s", cfg->Name, why);
  return LU_EIO;
}

/* The existing stream *si has the replica count asked (assets.h)?  Else
 * changes it, or refuses with what it has, what was asked and the fix.
 * *si is replaced by the updated info. */
static int reconcile(jsCtx *js, jsStreamInfo **si, const lu_assets_opts_t *o,
                     char *err, size_t errlen) {
  const jsStreamConfig *c = (*si)->Config;
  const char *name = c->Name;
  long have = c->Replicas > 0 ? (long)c->Replicas : 1;
  long want = o ? (long)o->replicas : 0;
  int clustered = (*si)->Cluster && (*si)->Cluster->Name;
  if (want == 0) {
    if (have != 1)
      LU_LOG(LU_LOG_INFO, o ? o->who : NULL, NULL,
             LU_KVS(LU_KV_STR("stream", name), LU_KV_INT("replicas", have)),
             "stream %s has %ld replicas: kept (%s not given)", name, have,
             flag_of(o));
    return 0;
  }
  if (want > 1 && !clustered) {
    lu__fmt(err, errlen,
            "stream %s: %s %ld asked, but the NATS server is a single "
            "server, not a cluster, and keeps one copy; use %s 1, or a "
            "cluster of at least %ld nodes",
            name, flag_of(o), want, flag_of(o), want);
    return LU_EINVAL;
  }
  if (want == have) return 0;
  jsStreamConfig cfg = *c;
  cfg.Replicas = want;
  char what[96];
  lu__fmt(what, sizeof what, "changing the replicas of stream %s", name);
  lu_retry_t r = retry_of(o, what);
  jsStreamInfo *nsi = NULL;
  jsErrCode jerr;
  natsStatus s;
  for (;;) {
    jerr = 0;
    jsOptions jo;
    s = js_UpdateStream(&nsi, js, &cfg, call_opts(o, &jo), &jerr);
    if (s == NATS_OK) break;
    if (!api_again(&r, s, jerr)) break;
  }
  if (s != NATS_OK) {
    char why[300];
    lu__assets_reason(s, jerr, why, sizeof why);
    lu__fmt(err, errlen,
            "stream %s has %ld replica%s and %s %ld was asked, but the "
            "server refused to change it: %s.  Keep it with %s %ld, or "
            "start enough nodes for %ld, or change or delete the stream "
            "by hand",
            name, have, have == 1 ? "" : "s", flag_of(o), want, why,
            flag_of(o), have, want);
    return LU_EIO;
  }
  LU_LOG(LU_LOG_WARN, o->who, NULL,
         LU_KVS(LU_KV_STR("stream", name), LU_KV_INT("from", have),
                LU_KV_INT("to", want)),
         "stream %s had %ld replica%s: changed to %ld (%s %ld); the server "
         "copies its messages in the background",
         name, have, have == 1 ? "" : "s", want, flag_of(o), want);
  jsStreamInfo_Destroy(*si);
  *si = nsi;
  return 0;
}

int lu__assets_queue(jsCtx *js, const char *name,
                     const char *const *subjects, int n,
                     const lu_assets_opts_t *o, char *err, size_t errlen) {
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus s = lu__assets_stream_info(js, name, o, &si, &jerr);
  int rc = 0;
  if (s == NATS_OK) {
    rc = reconcile(js, &si, o, err, errlen);
  } else if (s == NATS_NOT_FOUND) {
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = name;
    sc.Subjects = (const char **)subjects;
    sc.SubjectsLen = n;
    sc.Storage = js_FileStorage;
    sc.Retention = js_WorkQueuePolicy; /* acked = done: the stream empties */
    sc.Duplicates = LU_ASSETS_QUEUE_DUP_NS; /* ns: outlasts redeliveries */
    sc.Replicas = o && o->replicas ? (int64_t)o->replicas : 1;
    rc = create_stream(js, &sc, o, &si, err, errlen);
    /* Created at the same moment by another process with another count:
     * the same rule as for one found. */
    if (!rc && si) rc = reconcile(js, &si, o, err, errlen);
  } else {
    char why[300];
    lu__assets_reason(s, jerr, why, sizeof why);
    lu__fmt(err, errlen, "cannot create stream %s: %s", name, why);
    rc = LU_EIO;
  }
  jsStreamInfo_Destroy(si);
  return rc;
}

int lu__assets_intake(jsCtx *js, const char *const *subjects, int n,
                      const lu_assets_opts_t *o, char *err, size_t errlen) {
  return lu__assets_queue(js, LU_STREAM_INTAKE, subjects, n, o, err, errlen);
}

int lu__assets_fwd(jsCtx *js, const lu_assets_opts_t *o, char *err,
                   size_t errlen) {
  static const char *const subj[] = {LU_SUBJ_FWD ".>"};
  return lu__assets_queue(js, LU_STREAM_FWD, subj, 1, o, err, errlen);
}

/* Does the stream's configuration serve as the event store? */
static int events_config_ok(const jsStreamConfig *c, char *why, size_t cap) {
  static const char want[] = LU_SUBJ_EVENTS ".>";
  for (int i = 0; i < c->SubjectsLen; i++)
    if (c->Subjects[i] && strcmp(c->Subjects[i], want) == 0) return 1;
  lu__fmt(why, cap,
          "stream " LU_STREAM_EVENTS " exists but does not take subjects %s "
          "(it was not created by lucent)",
          want);
  return 0;
}

int lu__assets_events(jsCtx *js, int create, int64_t dup_ns,
                      const lu_assets_opts_t *o, jsStreamInfo **out,
                      char *err, size_t errlen) {
  if (out) *out = NULL;
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus s = lu__assets_stream_info(js, LU_STREAM_EVENTS, o, &si, &jerr);
  if (s == NATS_NOT_FOUND && !create) {
    lu__fmt(err, errlen, "no lucent event store on this server (stream "
                         LU_STREAM_EVENTS " not found)");
    return LU_ENOENT;
  }
  int rc = 0;
  if (s == NATS_NOT_FOUND) {
    static const char *const subjects[] = {LU_SUBJ_EVENTS ".>"};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = LU_STREAM_EVENTS;
    cfg.Description = "lucent event store";
    cfg.Subjects = (const char **)subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Retention = js_LimitsPolicy;
    cfg.Discard = js_DiscardOld;
    cfg.Duplicates = dup_ns;
    cfg.Replicas = o && o->replicas ? (int64_t)o->replicas : 1;
    /* Ours, or another shard's created at the same moment: checked below
     * like any stream found. */
    rc = create_stream(js, &cfg, o, &si, err, errlen);
  } else if (s != NATS_OK) {
    lu__assets_reason(s, jerr, err, errlen);
    rc = LU_ESTORE;
  }
  if (!rc && !events_config_ok(si->Config, err, errlen)) rc = LU_ESTORE;
  if (!rc && create && si->Config->Duplicates < dup_ns) {
    /* Made by an older or differently configured lucent: widen the
     * duplicate window, never narrow it (someone may rely on it). */
    jsStreamConfig cfg = *si->Config;
    jsStreamInfo *si2 = NULL;
    cfg.Duplicates = dup_ns;
    jerr = 0;
    s = js_UpdateStream(&si2, js, &cfg, NULL, &jerr);
    if (s == NATS_OK) {
      jsStreamInfo_Destroy(si);
      si = si2;
    } else {
      lu__assets_reason(s, jerr, err, errlen);
      rc = LU_ESTORE;
    }
  }
  if (!rc && create) rc = reconcile(js, &si, o, err, errlen);
  if (rc == LU_EIO) rc = LU_ESTORE; /* the store's code for "refused" */
  if (!rc && out) {
    *out = si;
    si = NULL;
  }
  jsStreamInfo_Destroy(si);
  return rc;
}

/* Binds to the bucket, retried through an election or a slow server
 * (js_KeyValue reads the stream's info).  NATS_NOT_FOUND when it does
 * not exist. */
static natsStatus kv_bind(jsCtx *js, const lu_assets_opts_t *o,
                          kvStore **kv) {
  lu_retry_t r = retry_of(o, "opening KV bucket " LU_KV_SESSIONS);
  for (;;) {
    natsStatus s = js_KeyValue(kv, js, LU_KV_SESSIONS);
    if (s == NATS_OK || s == NATS_NOT_FOUND) {
      lu__retry_ok(&r);
      return s;
    }
    if (!api_again(&r, s, 0)) return s;
  }
}

int lu__assets_sessions(jsCtx *js, int64_t ttl_ns, const lu_assets_opts_t *o,
                        kvStore **kv, char *err, size_t errlen) {
  *kv = NULL;
  /* A bucket is the stream KV_<bucket>: its replicas are reconciled like
   * any stream's. */
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus s =
      lu__assets_stream_info(js, "KV_" LU_KV_SESSIONS, o, &si, &jerr);
  int rc = 0;
  if (s == NATS_OK) {
    rc = reconcile(js, &si, o, err, errlen);
    jsStreamInfo_Destroy(si);
    if (rc) return rc == LU_EINVAL ? LU_EINVAL : LU_EIO;
    s = kv_bind(js, o, kv);
  } else if (s == NATS_NOT_FOUND) {
    kvConfig cfg;
    kvConfig_Init(&cfg);
    cfg.Bucket = LU_KV_SESSIONS;
    cfg.Description = "lucent sticky-session bindings";
    cfg.History = 1;
    cfg.TTL = ttl_ns; /* nanoseconds (trap 2) */
    cfg.StorageType = js_FileStorage;
    cfg.Replicas = o && o->replicas ? (int)o->replicas : 1;
    char created[300] = "";
    lu_retry_t r = retry_of(o, "creating KV bucket " LU_KV_SESSIONS);
    for (;;) {
      s = js_CreateKeyValue(kv, js, &cfg);
      if (s == NATS_OK) {
        lu__retry_ok(&r);
        break;
      }
      lu__fmt(created, sizeof created, "%s", nats_GetLastError(NULL));
      if (strstr(created, "non-clustered")) {
        lu__fmt(err, errlen,
                "cannot create KV bucket %s with %d replicas: the NATS "
                "server is a single server, not a cluster, and keeps one "
                "copy; use %s 1, or a cluster of at least %d nodes",
                LU_KV_SESSIONS, cfg.Replicas, flag_of(o), cfg.Replicas);
        return LU_EINVAL;
      }
      /* It exists now with another configuration (another process made
       * it a moment ago, another TTL), or a timeout may have made it:
       * use it, and check its replicas.  (Serves starting together on a
       * busy cluster met both.) */
      natsStatus cs = s;
      if (cs == NATS_ERR || cs == NATS_TIMEOUT) {
        jerr = 0;
        s = kv_bind(js, o, kv);
        if (s == NATS_OK) {
          lu__retry_ok(&r);
          if (js_GetStreamInfo(&si, js, "KV_" LU_KV_SESSIONS, NULL, NULL) ==
              NATS_OK) {
            rc = reconcile(js, &si, o, err, errlen);
            jsStreamInfo_Destroy(si);
            if (rc) {
              kvStore_Destroy(*kv);
              *kv = NULL;
              return rc == LU_EINVAL ? LU_EINVAL : LU_EIO;
            }
          }
          break;
        }
      }
      if (!api_again(&r, cs, 0)) {
        lu__fmt(err, errlen, "cannot create KV bucket %s: %s",
                LU_KV_SESSIONS, created);
        return cs == NATS_NO_MEMORY ? LU_ENOMEM : LU_EIO;
      }
    }
  }
  if (s == NATS_OK) return 0;
  lu__assets_reason(s, jerr, err, errlen);
  return s == NATS_NO_MEMORY ? LU_ENOMEM : LU_EIO;
}
