/*
 * intake_layout.c - the partition count recorded in LUCENT_INTAKE's
 * subjects, the routes table in KV bucket lucent_routes, and the
 * partition of an event (intake_layout.h; docs/protocol.md, sections 2
 * and 6).
 *
 * Why the subjects hold P: the stream is what every process and client
 * already reads before publishing, so P travels with it and cannot
 * disagree with it; and JetStream refuses ("no responders") a publish to
 * lucent.intake.<p> with p >= P instead of storing it where no consumer
 * reads it (docs/nats-notes.md, g).
 *
 * Why one KV document for the routes: a client reads the whole table with
 * one KV get and caches it; serves merge into it with compare-and-set.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "intake_layout.h"
#include "lucent/log.h"
#include "membership.h"

/* ---- partitions ------------------------------------------------------- */

int lu__intake_subjects_parse(const char *const *subjects, int n,
                              unsigned *partitions) {
  static const char wild[] = LU_SUBJ_INTAKE ".>";
  if (n == 1 && subjects[0] && !strcmp(subjects[0], wild)) {
    *partitions = LU_INTAKE_PARTITIONS_V1;
    return 1;
  }
  if (n < 1 || n > LU_INTAKE_PARTITIONS_MAX) return -1;
  unsigned char seen[LU_INTAKE_PARTITIONS_MAX] = {0};
  size_t pl = strlen(LU_SUBJ_INTAKE ".");
  for (int i = 0; i < n; i++) {
    const char *s = subjects[i];
    if (!s || strncmp(s, LU_SUBJ_INTAKE ".", pl)) return -1;
    s += pl;
    /* a decimal number without a leading zero (but "0") */
    if (!*s || (s[0] == '0' && s[1]) || strspn(s, "0123456789") != strlen(s)
        || strlen(s) > 4)
      return -1;
    unsigned p = (unsigned)atoi(s);
    if (p >= (unsigned)n || seen[p]) return -1;
    seen[p] = 1;
  }
  *partitions = (unsigned)n;
  return 0;
}

/* The subjects of P partitions, in one allocation (free the array). */
static char **subjects_of(unsigned P) {
  size_t each = sizeof LU_SUBJ_INTAKE + 12;
  char **v = malloc(P * (sizeof *v + each));
  if (!v) return NULL;
  char *text = (char *)(v + P);
  for (unsigned i = 0; i < P; i++) {
    v[i] = text + i * each;
    snprintf(v[i], each, "%s.%u", LU_SUBJ_INTAKE, i);
  }
  return v;
}

static void partitions_err(char *err, size_t errlen, unsigned have,
                           unsigned want) {
  lu__fmt(err, errlen,
          "stream " LU_STREAM_INTAKE " has %u partitions (subjects "
          LU_SUBJ_INTAKE ".0.." LU_SUBJ_INTAKE ".%u), but --partitions "
          "says %u: the count is fixed when the stream is created.  Drop "
          "--partitions (every process reads the count from the stream), "
          "or delete the stream once it is empty to change it",
          have, have - 1, want);
}

int lu__intake_stream_ensure(jsCtx *js, unsigned want, int create,
                             const lu_assets_opts_t *ao, unsigned *partitions,
                             char *err, size_t errlen) {
  lu_assets_opts_t none = {0};
  if (!ao) ao = &none;
  *partitions = 0;
  if (want > LU_INTAKE_PARTITIONS_MAX) {
    lu__fmt(err, errlen, "--partitions must be in 1..%u",
            (unsigned)LU_INTAKE_PARTITIONS_MAX);
    return LU_EINVAL;
  }
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus s = lu__assets_stream_info(js, LU_STREAM_INTAKE, ao, &si, &jerr);
  if (s != NATS_OK && s != NATS_NOT_FOUND) {
    char r[300];
    lu__assets_reason(s, jerr, r, sizeof r);
    lu__fmt(err, errlen, "cannot read stream " LU_STREAM_INTAKE ": %s", r);
    return LU_EIO;
  }
  if (s != NATS_OK) { /* not found */
    if (!create) {
      lu__fmt(err, errlen, "no lucent intake on this server (stream "
                           LU_STREAM_INTAKE " not found: no shard has run)");
      return LU_ENOENT;
    }
    unsigned P = want ? want : LU_INTAKE_PARTITIONS_DEFAULT;
    char **subj = subjects_of(P);
    if (!subj) return LU_ENOMEM;
    int rc = lu__assets_intake(js, (const char *const *)subj, (int)P, ao,
                               err, errlen);
    free(subj);
    if (rc) return rc;
    /* Read back: another process may have created it first, its way.
     * Just created with replicas, it may not answer until its leader is
     * elected: the read rides through that. */
    s = lu__assets_stream_info(js, LU_STREAM_INTAKE, ao, &si, &jerr);
    if (s != NATS_OK) {
      char r[300];
      lu__assets_reason(s, jerr, r, sizeof r);
      int gone = s == NATS_NOT_FOUND;
      lu__fmt(err, errlen,
              "stream " LU_STREAM_INTAKE " %s after it was created%s%s",
              gone ? "vanished" : "cannot be read", gone ? "" : ": ",
              gone ? "" : r);
      return LU_EIO;
    }
  }
  unsigned have = 0;
  int kind = lu__intake_subjects_parse(si->Config->Subjects,
                                       si->Config->SubjectsLen, &have);
  int rc = 0;
  if (kind < 0) {
    lu__fmt(err, errlen, "stream " LU_STREAM_INTAKE " is not lucent's "
            "intake: its subjects are not " LU_SUBJ_INTAKE ".0.."
            LU_SUBJ_INTAKE ".<P-1> (first: '%s')",
            si->Config->SubjectsLen > 0 ? si->Config->Subjects[0] : "");
    rc = LU_EINVAL;
  } else if (want && want != have) {
    partitions_err(err, errlen, have, want);
    rc = LU_EINVAL;
  } else if (kind == 1 && create) {
    /* A v1 stream (lucent.intake.>): list its 16 subjects, keeping what
     * it holds, so that a stray partition is refused from now on. */
    char **subj = subjects_of(have);
    jsStreamConfig sc = *si->Config;
    sc.Subjects = (const char **)subj;
    sc.SubjectsLen = (int)have;
    jsStreamInfo *ni = NULL;
    if (!subj ||
        js_UpdateStream(&ni, js, &sc, NULL, &jerr) != NATS_OK) {
      LU_LOG(LU_LOG_WARN, NULL, NULL, LU_KVS(LU_KV_INT("jerr", (int)jerr)),
             "stream " LU_STREAM_INTAKE " keeps its v1 subject "
             LU_SUBJ_INTAKE ".>: it could not be updated");
    }
    jsStreamInfo_Destroy(ni);
    free(subj);
  }
  jsStreamInfo_Destroy(si);
  if (!rc && create && ao->replicas) { /* replicas reconciled (assets.c) */
    char **subj = subjects_of(have);
    if (!subj) return LU_ENOMEM;
    rc = lu__assets_intake(js, (const char *const *)subj, (int)have, ao, err,
                           errlen);
    free(subj);
  }
  if (!rc) *partitions = have;
  return rc;
}

/* ---- routes ----------------------------------------------------------- */

struct lu_routes_s {
  cJSON *root;        /* {"version":1,"types":{...}} */
  const cJSON *types; /* borrowed from root */
};

int lu__routes_new(lu_routes_t **out) {
  *out = NULL;
  lu_routes_t *r = calloc(1, sizeof *r);
  if (!r) return LU_ENOMEM;
  r->root = cJSON_CreateObject();
  cJSON *t = cJSON_CreateObject();
  if (!r->root || !t || !cJSON_AddNumberToObject(r->root, "version", 1)) {
    cJSON_Delete(t);
    lu__routes_free(r);
    return LU_ENOMEM;
  }
  cJSON_AddItemToObject(r->root, "types", t);
  r->types = t;
  *out = r;
  return 0;
}

int lu__routes_parse(lu_routes_t **out, const char *json, size_t len,
                     char *err, size_t errlen) {
  *out = NULL;
  cJSON *root = cJSON_ParseWithLength(json, len);
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "version");
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "types");
  if (!cJSON_IsObject(root) || !cJSON_IsNumber(v) || v->valuedouble != 1 ||
      !cJSON_IsObject(t)) {
    lu__fmt(err, errlen, "the routes table (KV " LU_KV_ROUTES " key "
            LU_ROUTES_KEY ") is not a version 1 table");
    cJSON_Delete(root);
    return LU_EINVAL;
  }
  lu_routes_t *r = calloc(1, sizeof *r);
  if (!r) {
    cJSON_Delete(root);
    return LU_ENOMEM;
  }
  r->root = root;
  r->types = t;
  *out = r;
  return 0;
}

void lu__routes_free(lu_routes_t *r) {
  if (!r) return;
  cJSON_Delete(r->root);
  free(r);
}

const char *lu__routes_key(const lu_routes_t *r, const char *type) {
  if (!r || !type) return NULL;
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(r->types, type);
  const char *k =
      cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "key"));
  return k && *k ? k : NULL;
}

size_t lu__routes_count(const lu_routes_t *r) {
  return r ? (size_t)cJSON_GetArraySize(r->types) : 0;
}

char *lu__routes_json(const lu_routes_t *r) {
  return r ? cJSON_PrintUnformatted(r->root) : NULL;
}

/* Is s (NULL = "") the string value of member name of o? */
static int same_str(const cJSON *o, const char *name, const char *s) {
  const char *v =
      cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, name));
  return !strcmp(v ? v : "", s ? s : "");
}

/* Puts type -> its router's route; 1 if that changed the table. */
static int put_type(lu_routes_t *r, const lu_registry_t *reg,
                    const char *type, int *oom) {
  const lu_fn_t *fn = lu_registry_router(reg, type);
  if (!fn) return 0;
  const char *strat = fn->strategy ? fn->strategy : "round_robin";
  int keyed = !strcmp(strat, "hash_based") || !strcmp(strat, "sticky_session");
  const char *key = keyed ? fn->key : NULL;
  cJSON *types = (cJSON *)r->types;
  cJSON *old = cJSON_GetObjectItemCaseSensitive(types, type);
  if (old && same_str(old, "strategy", strat) && same_str(old, "key", key) &&
      same_str(old, "function", fn->name))
    return 0;
  if (old && !same_str(old, "key", key))
    LU_LOG(LU_LOG_WARN, NULL, NULL,
           LU_KVS(LU_KV_STR("type", type), LU_KV_STR("key", key ? key : "")),
           "the routes table routed %s by another key: this registry's "
           "route replaces it", type);
  cJSON *e = cJSON_CreateObject();
  if (!e || !cJSON_AddStringToObject(e, "strategy", strat) ||
      (key && !cJSON_AddStringToObject(e, "key", key)) ||
      !cJSON_AddStringToObject(e, "function", fn->name)) {
    cJSON_Delete(e);
    *oom = 1;
    return 0;
  }
  if (old) cJSON_ReplaceItemInObjectCaseSensitive(types, type, e);
  else cJSON_AddItemToObject(types, type, e);
  return 1;
}

int lu__routes_add_registry(lu_routes_t *r, const lu_registry_t *reg,
                            unsigned *changed) {
  unsigned n = 0;
  int oom = 0;
  for (size_t i = 0; i < lu_registry_count(reg); i++) {
    const char *ev = lu_registry_at(reg, i)->events;
    char type[256];
    while (ev && *ev) {
      size_t sk = strspn(ev, " ,\t");
      ev += sk;
      size_t tl = strcspn(ev, " ,\t");
      if (!tl) break;
      if (tl < sizeof type) {
        memcpy(type, ev, tl);
        type[tl] = 0;
        n += (unsigned)put_type(r, reg, type, &oom);
      }
      ev += tl;
    }
  }
  if (changed) *changed = n;
  return oom ? LU_ENOMEM : 0;
}

/* The KV handle of the routes bucket; create: make it when missing, with
 * `replicas` copies (0 = 1; an existing bucket is kept as it is). */
static natsStatus routes_kv(kvStore **kv, jsCtx **js, natsConnection *nc,
                            int create, unsigned replicas) {
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = 5000;
  natsStatus s = natsConnection_JetStream(js, nc, &jo);
  if (s != NATS_OK) return s;
  s = js_KeyValue(kv, *js, LU_KV_ROUTES);
  if (s == NATS_OK || !create) return s;
  kvConfig cfg;
  kvConfig_Init(&cfg);
  cfg.Bucket = LU_KV_ROUTES;
  cfg.Description = "lucent routes: event type -> strategy and key path";
  cfg.History = 1;
  cfg.StorageType = js_FileStorage;
  cfg.Replicas = replicas ? (int)replicas : 1;
  s = js_CreateKeyValue(kv, *js, &cfg);
  if (s != NATS_OK) s = js_KeyValue(kv, *js, LU_KV_ROUTES); /* a race */
  return s;
}

/* One merge of reg into the table: NATS_OK, or the status that stopped
 * it (*rc LU_ENOMEM when memory did). */
static natsStatus routes_merge(natsConnection *nc, const lu_registry_t *reg,
                               unsigned replicas, int *rc) {
  kvStore *kv = NULL;
  jsCtx *js = NULL;
  natsStatus s = routes_kv(&kv, &js, nc, 1, replicas);
  for (int attempt = 0; s == NATS_OK && attempt < 20; attempt++) {
    kvEntry *e = NULL;
    uint64_t rev = 0;
    lu_routes_t *r = NULL;
    char why[256];
    s = kvStore_Get(&e, kv, LU_ROUTES_KEY);
    if (s == NATS_OK && kvEntry_Operation(e) == kvOp_Put) {
      rev = kvEntry_Revision(e);
      if (lu__routes_parse(&r, kvEntry_Value(e), (size_t)kvEntry_ValueLen(e),
                           why, sizeof why))
        r = NULL; /* not a table: replaced by ours */
    } else if (s == NATS_OK) {
      rev = kvEntry_Revision(e); /* deleted: update over the marker */
    } else if (s != NATS_NOT_FOUND) {
      break;
    }
    kvEntry_Destroy(e);
    s = NATS_OK;
    if (!r && lu__routes_new(&r)) {
      *rc = LU_ENOMEM;
      break;
    }
    unsigned changed = 0;
    if (lu__routes_add_registry(r, reg, &changed)) *rc = LU_ENOMEM;
    char *doc = !*rc && (changed || !rev) ? lu__routes_json(r) : NULL;
    lu__routes_free(r);
    if (*rc || (!changed && rev)) break; /* nothing new to say */
    if (!doc) {
      *rc = LU_ENOMEM;
      break;
    }
    uint64_t nrev = 0;
    s = rev ? kvStore_Update(&nrev, kv, LU_ROUTES_KEY, doc, (int)strlen(doc),
                             rev)
            : kvStore_Create(&nrev, kv, LU_ROUTES_KEY, doc, (int)strlen(doc));
    free(doc);
    if (s == NATS_OK) break;
    s = NATS_OK; /* another serve wrote first: merge again */
    struct timespec ts = {0, 5L * 1000000L * (attempt + 1)};
    nanosleep(&ts, NULL);
    if (attempt == 19) s = NATS_ERR;
  }
  kvStore_Destroy(kv);
  jsCtx_Destroy(js);
  return s;
}

int lu__routes_publish(natsConnection *nc, const lu_registry_t *reg,
                       unsigned replicas, char *err, size_t errlen) {
  int rc = 0;
  natsStatus s;
  /* A server busy creating streams for several serves starting together
   * answers late: timeouts are tried again, for up to 30 s. */
  uint64_t until = lu__now_ns() + 30000 * NS_PER_MS;
  while ((s = routes_merge(nc, reg, replicas, &rc)) != NATS_OK && !rc &&
         (s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS) &&
         lu__now_ns() < until) {
    struct timespec ts = {0, 200L * 1000000L};
    nanosleep(&ts, NULL);
  }
  if (s != NATS_OK && !rc) {
    char r[256];
    lu__nats_reason(s, r, sizeof r);
    lu__fmt(err, errlen, "cannot write the routes table (KV bucket "
                         LU_KV_ROUTES "): %s", r);
    rc = LU_EIO;
  } else if (rc) {
    lu__fmt(err, errlen, "out of memory writing the routes table");
  }
  return rc;
}

int lu__routes_fetch(lu_routes_t **out, natsConnection *nc, char *err,
                     size_t errlen) {
  *out = NULL;
  kvStore *kv = NULL;
  jsCtx *js = NULL;
  kvEntry *e = NULL;
  natsStatus s = routes_kv(&kv, &js, nc, 0, 0);
  if (s == NATS_OK) s = kvStore_Get(&e, kv, LU_ROUTES_KEY);
  int rc = 0;
  if (s == NATS_OK && kvEntry_Operation(e) == kvOp_Put) {
    rc = lu__routes_parse(out, kvEntry_Value(e), (size_t)kvEntry_ValueLen(e),
                          err, errlen);
  } else if (s == NATS_OK || s == NATS_NOT_FOUND) {
    lu__fmt(err, errlen, "no routes table on the server (KV bucket "
                         LU_KV_ROUTES ", key " LU_ROUTES_KEY
                         "): no lucent serve has started");
    rc = LU_ENOENT;
  } else {
    char r[256];
    lu__nats_reason(s, r, sizeof r);
    lu__fmt(err, errlen, "cannot read the routes table: %s", r);
    rc = LU_EIO;
  }
  kvEntry_Destroy(e);
  kvStore_Destroy(kv);
  jsCtx_Destroy(js);
  return rc;
}

/* ---- the partition of an event ---------------------------------------- */

void lu__intake_key(const lu_routes_t *routes, const lu_event_t *ev,
                    const char *json, size_t len, lu_pkey_t *k) {
  k->key_missing = 0;
  if (!ev) {
    k->kind = LU_PKEY_BYTES;
    k->text = json;
    k->len = len;
    return;
  }
  const char *path = lu__routes_key(routes, lu_event_type(ev));
  if (path) {
    const char *t;
    size_t tl;
    if (lu__key_text(lu__json_path(lu_event_data(ev), path), k->buf,
                     sizeof k->buf, &t, &tl) == 0) {
      k->kind = LU_PKEY_ROUTE;
      k->text = t;
      k->len = tl;
      return;
    }
    k->key_missing = 1; /* rejected by its shard: any partition will do */
  }
  const char *subj = lu_event_attr(ev, "subject");
  k->kind = subj ? LU_PKEY_SUBJECT : LU_PKEY_ID;
  k->text = subj ? subj : lu_event_id(ev);
  k->len = strlen(k->text);
}

unsigned lu__intake_partition(const lu_routes_t *routes, unsigned partitions,
                              const lu_event_t *ev, const char *json,
                              size_t len) {
  lu_pkey_t k;
  lu__intake_key(routes, ev, json, len, &k);
  return (unsigned)(lu__fnv1a64(k.text, k.len) %
                    (partitions ? partitions : 1));
}
