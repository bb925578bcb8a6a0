/*
 * registry.c - the functions known to a process.
 *
 * Descriptors come from linker sections (LU_FUNCTION; docs/architecture.md,
 * decision 1):
 * the executable's own through lu_fns_here(), a plugin's through its one
 * exported symbol lu_plugin_functions().  Everything is validated before
 * anything is added, so a bad plugin leaves the registry as it was.  The
 * registry is immutable once a manager runs on it, which is what lets shard
 * threads read it without locks.
 *
 * Per event type it keeps the candidates sorted by priority (desc), then
 * name: candidates[0] decides how the type is routed (its strategy), and
 * the selector scores all of them on the target shard.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

typedef struct typeent_s {
  char *type;
  const lu_fnent_t **cands;
  size_t n;
} typeent_t;

struct lu_registry_s {
  lu_fnent_t **fns; /* name order */
  size_t nfns;
  typeent_t *types; /* sorted by type name */
  size_t ntypes;
  void **plugins;
  size_t nplugins;
  char errmsg[512];
  struct lu_registry_s *kept_next; /* lu_registry_free with runs stuck */
};

static const char *const strategy_names[] = {
    [LU_STRAT_ROUND_ROBIN] = "round_robin",
    [LU_STRAT_HASH] = "hash_based",
    [LU_STRAT_LOAD_BALANCED] = "load_balanced",
    [LU_STRAT_STICKY] = "sticky_session",
};

const char *lu__strategy_name(int s) {
  return s >= 0 && s <= LU_STRAT_STICKY ? strategy_names[s] : "unknown";
}

int lu_registry_new(lu_registry_t **out) {
  *out = calloc(1, sizeof **out);
  return *out ? 0 : LU_ENOMEM;
}

static void fnent_free(lu_fnent_t *e) {
  if (!e) return;
  for (size_t i = 0; i < e->ntypes; i++) free(e->types[i]);
  free(e->types);
  free(e);
}

static void types_free(lu_registry_t *r) {
  for (size_t i = 0; i < r->ntypes; i++) {
    free(r->types[i].type);
    free(r->types[i].cands);
  }
  free(r->types);
  r->types = NULL;
  r->ntypes = 0;
}

/* Registries freed while a run abandoned past its hard limit had not
 * returned: kept whole (reachable, so no leak checker counts them). */
static lu_registry_t *_Atomic kept;

void lu_registry_free(lu_registry_t *r) {
  if (!r) return;
  /* A function abandoned past its hard limit may still be running (a
   * detached thread in an endless loop) with pointers into this registry
   * and code in its plugins: unloading them would have it run unmapped
   * code (SIGSEGV at the process's exit).  It is kept as it is instead;
   * the process is about to end, or has a thread spinning for ever. */
  if (lu__runs_stuck() > 0) {
    r->kept_next = atomic_load(&kept);
    while (!atomic_compare_exchange_weak(&kept, &r->kept_next, r)) {
    }
    return;
  }
  for (size_t i = 0; i < r->nfns; i++) fnent_free(r->fns[i]);
  free(r->fns);
  types_free(r);
  for (size_t i = 0; i < r->nplugins; i++) dlclose(r->plugins[i]);
  free(r->plugins);
  free(r);
}

const char *lu_registry_errmsg(const lu_registry_t *r) {
  return r ? r->errmsg : "";
}
size_t lu_registry_count(const lu_registry_t *r) { return r ? r->nfns : 0; }
const lu_fn_t *lu_registry_at(const lu_registry_t *r, size_t i) {
  return r && i < r->nfns ? r->fns[i]->fn : NULL;
}
const lu_fnent_t *lu__registry_entry(const lu_registry_t *r, size_t i) {
  return r && i < r->nfns ? r->fns[i] : NULL;
}

static int seterr(lu_registry_t *r, int rc, const char *origin,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int seterr(lu_registry_t *r, int rc, const char *origin,
                  const char *fmt, ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (origin)
    lu__fmt(r->errmsg, sizeof r->errmsg, "%s: %s", origin, msg);
  else
    lu__fmt(r->errmsg, sizeof r->errmsg, "%s", msg);
  return rc;
}

static int valid_ident(const char *s) {
  if (!s || !*s) return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || *s == '_' || *s == '.' || *s == '-'))
      return 0;
  return 1;
}

/* A key path: dot-separated non-empty segments. */
static int valid_path(const char *p) {
  if (!p || !*p || *p == '.') return 0;
  for (const char *s = p; *s; s++)
    if (*s == '.' && (s[1] == '.' || s[1] == 0)) return 0;
  return 1;
}

/* Validates one descriptor and builds its entry; NULL + errmsg on error. */
static lu_fnent_t *make_entry(lu_registry_t *r, const lu_fn_t *f,
                              const char *origin, int *rc) {
  *rc = LU_EMETA;
  if (!f || !f->name || !valid_ident(f->name)) {
    seterr(r, LU_EMETA, origin, "function with a missing or invalid name");
    return NULL;
  }
  const char *nm = f->name;
  if (!f->impl) {
    seterr(r, LU_EMETA, origin, "function %s: no implementation", nm);
    return NULL;
  }
  int strat = -1;
  const char *sname = f->strategy ? f->strategy : "round_robin";
  for (int i = 0; i <= LU_STRAT_STICKY; i++)
    if (strcmp(sname, strategy_names[i]) == 0) strat = i;
  if (strat < 0) {
    seterr(r, LU_EMETA, origin,
           "function %s: unknown sharding strategy '%s' (want round_robin, "
           "hash_based, load_balanced or sticky_session)", nm, sname);
    return NULL;
  }
  if (strat == LU_STRAT_HASH || strat == LU_STRAT_STICKY) {
    if (!valid_path(f->key)) {
      seterr(r, LU_EMETA, origin,
             "function %s: strategy %s needs a field path (got %s%s%s)", nm,
             sname, f->key ? "'" : "", f->key ? f->key : "none",
             f->key ? "'" : "");
      return NULL;
    }
  } else if (f->key) {
    seterr(r, LU_EMETA, origin,
           "function %s: strategy %s takes no field path ('%s')", nm, sname,
           f->key);
    return NULL;
  }
  if (f->load_bound != 0 && (strat != LU_STRAT_HASH || !(f->load_bound > 1))) {
    seterr(r, LU_EMETA, origin,
           "function %s: load_bound must be > 1 and is only for hash_based "
           "(got %g with %s)", nm, f->load_bound, sname);
    return NULL;
  }
  if (f->priority < 0 || f->priority > 10) {
    seterr(r, LU_EMETA, origin, "function %s: priority %d outside 1..10", nm,
           (int)f->priority);
    return NULL;
  }
  if (f->max_retries > 100) {
    seterr(r, LU_EMETA, origin, "function %s: max_retries %u above 100", nm,
           f->max_retries);
    return NULL;
  }
  lu_fnent_t *e = calloc(1, sizeof *e);
  if (!e) goto oom;
  e->fn = f;
  e->strategy = strat;
  e->priority = f->priority ? f->priority : 5;
  e->timeout_ms = f->timeout_ms ? f->timeout_ms : 1000;
  e->backoff_ms = f->retry_backoff_ms ? f->retry_backoff_ms : 10;
  e->ttl_ms = f->session_ttl_ms ? f->session_ttl_ms : 300000;
  /* Event types: separated by spaces or commas. */
  const char *s = f->events ? f->events : "";
  while (*s) {
    s += strspn(s, " ,\t");
    size_t n = strcspn(s, " ,\t");
    if (!n) break;
    char **t = realloc(e->types, (e->ntypes + 1) * sizeof *t);
    if (!t) goto oom;
    e->types = t;
    if (!(e->types[e->ntypes] = strndup(s, n))) goto oom;
    if (!valid_ident(e->types[e->ntypes])) {
      seterr(r, LU_EMETA, origin, "function %s: invalid event type '%s'", nm,
             e->types[e->ntypes]);
      e->ntypes++;
      fnent_free(e);
      return NULL;
    }
    e->ntypes++;
    s += n;
  }
  if (!e->ntypes) {
    seterr(r, LU_EMETA, origin, "function %s: handles no event type", nm);
    fnent_free(e);
    return NULL;
  }
  *rc = 0;
  return e;
oom:
  fnent_free(e);
  *rc = seterr(r, LU_ENOMEM, origin, "out of memory");
  return NULL;
}

static int cmp_fn_name(const void *a, const void *b) {
  const lu_fnent_t *x = *(lu_fnent_t *const *)a, *y = *(lu_fnent_t *const *)b;
  return strcmp(x->fn->name, y->fn->name);
}

static int cmp_cand(const void *a, const void *b) {
  const lu_fnent_t *x = *(lu_fnent_t *const *)a, *y = *(lu_fnent_t *const *)b;
  if (x->priority != y->priority) return y->priority - x->priority;
  return strcmp(x->fn->name, y->fn->name);
}

static int cmp_type(const void *a, const void *b) {
  return strcmp(((const typeent_t *)a)->type, ((const typeent_t *)b)->type);
}

/* Rebuilds the type index from r->fns. */
static int build_types(lu_registry_t *r) {
  types_free(r);
  for (size_t i = 0; i < r->nfns; i++) {
    lu_fnent_t *e = r->fns[i];
    e->index = i;
    for (size_t t = 0; t < e->ntypes; t++) {
      typeent_t *te = NULL;
      for (size_t k = 0; k < r->ntypes; k++)
        if (strcmp(r->types[k].type, e->types[t]) == 0) te = &r->types[k];
      if (!te) {
        typeent_t *nt = realloc(r->types, (r->ntypes + 1) * sizeof *nt);
        if (!nt) return LU_ENOMEM;
        r->types = nt;
        te = &r->types[r->ntypes++];
        memset(te, 0, sizeof *te);
        if (!(te->type = strdup(e->types[t]))) return LU_ENOMEM;
      }
      const lu_fnent_t **c = realloc(te->cands, (te->n + 1) * sizeof *c);
      if (!c) return LU_ENOMEM;
      te->cands = c;
      te->cands[te->n++] = e;
    }
  }
  for (size_t k = 0; k < r->ntypes; k++)
    qsort(r->types[k].cands, r->types[k].n, sizeof *r->types[k].cands,
          cmp_cand);
  qsort(r->types, r->ntypes, sizeof *r->types, cmp_type);
  return 0;
}

int lu_registry_add(lu_registry_t *r, const lu_fn_t *const *fns, size_t n,
                    const char *origin) {
  if (!r || (n && !fns)) return LU_EINVAL;
  r->errmsg[0] = 0;
  lu_fnent_t **add = calloc(n ? n : 1, sizeof *add);
  if (!add) return LU_ENOMEM;
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    add[i] = make_entry(r, fns[i], origin, &rc);
    if (rc) break;
    /* Duplicates: against the registry and within this batch. */
    for (size_t k = 0; k < r->nfns && !rc; k++)
      if (strcmp(r->fns[k]->fn->name, fns[i]->name) == 0)
        rc = seterr(r, LU_EEXIST, origin,
                    "duplicate function name %s (already registered)",
                    fns[i]->name);
    for (size_t k = 0; k < i && !rc; k++)
      if (strcmp(add[k]->fn->name, fns[i]->name) == 0)
        rc = seterr(r, LU_EEXIST, origin, "duplicate function name %s",
                    fns[i]->name);
  }
  if (!rc) {
    lu_fnent_t **all = realloc(r->fns, (r->nfns + n + 1) * sizeof *all);
    if (!all) {
      rc = LU_ENOMEM;
    } else {
      r->fns = all;
      memcpy(r->fns + r->nfns, add, n * sizeof *add);
      r->nfns += n;
      qsort(r->fns, r->nfns, sizeof *r->fns, cmp_fn_name);
      free(add);
      return build_types(r);
    }
  }
  for (size_t i = 0; i < n; i++) fnent_free(add[i]);
  free(add);
  return rc;
}

typedef size_t (*plugin_fn)(const lu_fn_t *const **out, unsigned *abi);

int lu_registry_load_plugin(lu_registry_t *r, const char *path) {
  if (!r || !path) return LU_EINVAL;
  struct stat sb;
  if (stat(path, &sb) != 0)
    return seterr(r, LU_ENOENT, NULL, "plugin %s: %s", path, strerror(errno));
  /* dlopen() searches the library path for names without a slash; a
   * plugin is always a file the user named, so make it a path. */
  char buf[4096];
  const char *p = path;
  if (!strchr(path, '/')) {
    lu__fmt(buf, sizeof buf, "./%s", path);
    p = buf;
  }
  void *h = dlopen(p, RTLD_NOW | RTLD_LOCAL);
  if (!h)
    return seterr(r, LU_EPLUGIN, NULL, "plugin %s: cannot load: %s", path,
                  dlerror());
  plugin_fn fn;
  *(void **)&fn = dlsym(h, LU_PLUGIN_SYMBOL);
  if (!fn) {
    dlclose(h);
    return seterr(r, LU_EPLUGIN, NULL,
                  "plugin %s: no %s symbol (did it use LU_PLUGIN()?)", path,
                  LU_PLUGIN_SYMBOL);
  }
  const lu_fn_t *const *fns = NULL;
  unsigned abi = 0;
  size_t n = fn(&fns, &abi);
  /* LU_PLUGIN_ABI: the plugin ABI, then the cJSON major version.  ABI 1
   * plugins wrote only their ABI (so a cJSON major of 0). */
  unsigned plugin_abi = abi & 0xffffu, cjson_major = abi >> 16;
  if (plugin_abi != LU_ABI_VERSION) {
    dlclose(h);
    return seterr(r, LU_EPLUGIN, NULL,
                  "plugin %s: built for lucent plugin ABI %u, this lucent "
                  "(%s) has ABI %u: rebuild it with this lucent's headers",
                  path, plugin_abi, LU_VERSION, LU_ABI_VERSION);
  }
  if (cjson_major != (unsigned)CJSON_VERSION_MAJOR) {
    dlclose(h);
    return seterr(r, LU_EPLUGIN, NULL,
                  "plugin %s: built against cJSON %u.x, this lucent uses "
                  "cJSON %d.x (functions exchange cJSON trees with it): "
                  "rebuild it against cJSON %d",
                  path, cjson_major, CJSON_VERSION_MAJOR, CJSON_VERSION_MAJOR);
  }
  if (!n) {
    dlclose(h);
    return seterr(r, LU_EPLUGIN, NULL, "plugin %s: registers no function",
                  path);
  }
  void **pl = realloc(r->plugins, (r->nplugins + 1) * sizeof *pl);
  if (!pl) {
    dlclose(h);
    return LU_ENOMEM;
  }
  r->plugins = pl;
  int rc = lu_registry_add(r, fns, n, path);
  if (rc) {
    dlclose(h);
    return rc;
  }
  r->plugins[r->nplugins++] = h;
  return 0;
}

const lu_fnent_t *const *lu__registry_candidates(const lu_registry_t *r,
                                                 const char *type,
                                                 size_t *n) {
  *n = 0;
  if (!r || !type) return NULL;
  size_t lo = 0, hi = r->ntypes;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(type, r->types[mid].type);
    if (c == 0) {
      *n = r->types[mid].n;
      return r->types[mid].cands;
    }
    if (c < 0) hi = mid;
    else lo = mid + 1;
  }
  return NULL;
}

char *lu_registry_json(const lu_registry_t *r) {
  cJSON *arr = cJSON_CreateArray();
  if (!arr) return NULL;
  for (size_t i = 0; r && i < r->nfns; i++) {
    const lu_fnent_t *e = r->fns[i];
    const lu_fn_t *f = e->fn;
    cJSON *o = cJSON_CreateObject(), *types = cJSON_CreateArray();
    if (!o || !types) {
      cJSON_Delete(o);
      cJSON_Delete(types);
      cJSON_Delete(arr);
      return NULL;
    }
    cJSON_AddItemToArray(arr, o);
    cJSON_AddStringToObject(o, "name", f->name);
    for (size_t t = 0; t < e->ntypes; t++)
      cJSON_AddItemToArray(types, cJSON_CreateString(e->types[t]));
    cJSON_AddItemToObject(o, "events", types);
    cJSON *st = cJSON_AddObjectToObject(o, "strategy");
    cJSON_AddStringToObject(st, "type", lu__strategy_name(e->strategy));
    if (f->key) cJSON_AddStringToObject(st, "field", f->key);
    if (e->strategy == LU_STRAT_STICKY)
      cJSON_AddNumberToObject(st, "ttl_ms", e->ttl_ms);
    if (f->load_bound > 0)
      cJSON_AddNumberToObject(st, "load_bound", f->load_bound);
    cJSON *res = cJSON_AddObjectToObject(o, "resources");
    cJSON_AddNumberToObject(res, "cpu_millis", f->cpu_millis);
    cJSON_AddNumberToObject(res, "memory_mb", f->memory_mb);
    cJSON_AddNumberToObject(res, "priority", e->priority);
    cJSON_AddNumberToObject(res, "timeout_ms", e->timeout_ms);
    cJSON_AddNumberToObject(res, "max_retries", f->max_retries);
    cJSON_AddNumberToObject(res, "retry_backoff_ms", e->backoff_ms);
    if (f->doc) cJSON_AddStringToObject(o, "doc", f->doc);
  }
  char *s = cJSON_PrintUnformatted(arr);
  cJSON_Delete(arr);
  return s;
}

const lu_fn_t *lu_registry_router(const lu_registry_t *reg, const char *type) {
  size_t n = 0;
  const lu_fnent_t *const *c =
      reg && type ? lu__registry_candidates(reg, type, &n) : NULL;
  return n ? c[0]->fn : NULL;
}
