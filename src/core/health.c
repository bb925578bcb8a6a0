/*
 * health.c - the readiness checks behind /readyz.
 *
 * Four checks, each with ok and a detail line:
 *
 *   registry  at least one function loaded;
 *   store     the source's check_store if it has one; else, for an SQLite
 *             file, writable: a probe connection of our own (not the manager's,
 *             which belongs to the store thread) runs BEGIN IMMEDIATE;
 *             ROLLBACK with a 200 ms busy timeout, so a database another
 *             process holds locked, a read-only file or a vanished
 *             directory all fail.  The answer is cached for a second, so
 *             scraping /readyz often cannot load the store.  The store is
 *             also not ready while the manager reports batches it could
 *             not write within the last store_error_window_s seconds
 *             (counted from when a check first saw the counter grow);
 *   bus       the source's check_bus, else ok with the bus's name;
 *   shard     the source's check_shard, else ok (embedded: every shard
 *             is in the process).
 *
 * The probe holds the write lock for microseconds at most once a second;
 * the manager's store connection waits for it with its own busy timeout.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "obs_internal.h"

#define PROBE_EVERY_NS 1000000000ull
#define PROBE_BUSY_MS 200

struct lu_health_s {
  lu_obs_source_t src;
  char *store_path, *bus;
  pthread_mutex_t lock;
  sqlite3 *db;            /* the probe connection, opened lazily */
  int probed, probe_ok;
  uint64_t probe_ns;
  char probe_detail[256];
  uint64_t errors_seen, errors_ns; /* last count, when it last grew */
};

lu_health_t *lu__health_new(const lu_obs_source_t *src) {
  lu_health_t *h = calloc(1, sizeof *h);
  if (!h) return NULL;
  h->src = *src;
  const char *p = src->store_path;
  if (p && *p && strcmp(p, ":memory:")) {
    h->store_path = strdup(p);
    if (!h->store_path) {
      free(h);
      return NULL;
    }
  }
  h->bus = strdup(src->bus && *src->bus ? src->bus : "inproc");
  if (!h->bus) {
    free(h->store_path);
    free(h);
    return NULL;
  }
  h->src.store_path = h->store_path;
  h->src.bus = h->bus;
  if (!h->src.store_error_window_s) h->src.store_error_window_s = 10;
  pthread_mutex_init(&h->lock, NULL);
  return h;
}

void lu__health_free(lu_health_t *h) {
  if (!h) return;
  if (h->db) sqlite3_close(h->db);
  pthread_mutex_destroy(&h->lock);
  free(h->store_path);
  free(h->bus);
  free(h);
}

/* Tries to take the write lock once.  Under h->lock. */
static int probe(lu_health_t *h, char *detail, size_t cap) {
  if (!h->db) {
    sqlite3 *db = NULL;
    /* No CREATE: the manager made the file; a missing file is a fault. */
    int rc = sqlite3_open_v2(h->store_path, &db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
      lu__fmt(detail, cap, "%s: cannot open: %s", h->store_path,
              db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
      sqlite3_close(db);
      return 0;
    }
    sqlite3_busy_timeout(db, PROBE_BUSY_MS);
    h->db = db;
  }
  if (sqlite3_db_readonly(h->db, "main") == 1) {
    lu__fmt(detail, cap, "%s: file is not writable", h->store_path);
    sqlite3_close(h->db);
    h->db = NULL;
    return 0;
  }
  char *err = NULL;
  int rc = sqlite3_exec(h->db, "BEGIN IMMEDIATE", NULL, NULL, &err);
  if (rc != SQLITE_OK) {
    int busy = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
    lu__fmt(detail, cap, "%s: not writable: %s%s", h->store_path,
            err ? err : sqlite3_errstr(rc),
            busy ? " (another connection holds the write lock)" : "");
    sqlite3_free(err);
    if (!sqlite3_get_autocommit(h->db))
      sqlite3_exec(h->db, "ROLLBACK", NULL, NULL, NULL);
    if (!busy) { /* start afresh next time (file replaced, I/O error) */
      sqlite3_close(h->db);
      h->db = NULL;
    }
    return 0;
  }
  sqlite3_exec(h->db, "ROLLBACK", NULL, NULL, NULL);
  lu__fmt(detail, cap, "%s: writable", h->store_path);
  return 1;
}

int lu__health_store(lu_health_t *h, char *detail, size_t cap) {
  uint64_t now = lu__now_ns();
  uint64_t batches, records, errors;
  lu__manager_store_stats(h->src.manager, &batches, &records, &errors);
  pthread_mutex_lock(&h->lock);
  if (errors > h->errors_seen) {
    h->errors_seen = errors;
    h->errors_ns = now;
  }
  uint64_t window = (uint64_t)h->src.store_error_window_s * 1000000000ull;
  int ok;
  if (h->errors_ns && now - h->errors_ns < window) {
    lu__fmt(detail, cap,
            "%llu store batches could not be written (the last within "
            "%us)", (unsigned long long)errors, h->src.store_error_window_s);
    ok = 0;
  } else if (h->src.check_store) {
    detail[0] = 0;
    ok = h->src.check_store(h->src.ud, detail, cap) == 1;
  } else if (!h->store_path) {
    /* Not a file: SQLite in memory, or another backend, which says what
     * it is (a JetStream store is not "in memory"). */
    const char *be =
        lu_store_backend(lu_manager_store((lu_manager_t *)h->src.manager));
    if (!strcmp(be, "sqlite"))
      lu__fmt(detail, cap, "in memory");
    else
      lu__fmt(detail, cap, "%s store: no batch lost", be);
    ok = 1;
  } else {
    if (!h->probed || now - h->probe_ns >= PROBE_EVERY_NS) {
      h->probe_ok = probe(h, h->probe_detail, sizeof h->probe_detail);
      h->probe_ns = now;
      h->probed = 1;
    }
    lu__fmt(detail, cap, "%s", h->probe_detail);
    ok = h->probe_ok;
  }
  pthread_mutex_unlock(&h->lock);
  return ok;
}

static void check_json(lu_buf_t *b, const char *name, int ok,
                       const char *detail, int first) {
  if (!first) lu__buf_puts(b, ",");
  lu__buf_json_str(b, name, strlen(name));
  lu__buf_puts(b, ok ? ":{\"ok\":true,\"detail\":"
                     : ":{\"ok\":false,\"detail\":");
  lu__buf_json_str(b, detail, strlen(detail));
  lu__buf_puts(b, "}");
}

int lu__health_ready(lu_health_t *h, lu_buf_t *b) {
  char reg_d[96], store_d[320], bus_d[256], shard_d[256];
  size_t nfns = lu_registry_count(lu_manager_registry(h->src.manager));
  int reg_ok = nfns > 0;
  lu__fmt(reg_d, sizeof reg_d, "%zu function%s loaded", nfns,
          nfns == 1 ? "" : "s");
  int store_ok = lu__health_store(h, store_d, sizeof store_d);
  int bus_ok = 1, shard_ok = 1;
  if (h->src.check_bus) {
    bus_d[0] = 0;
    bus_ok = h->src.check_bus(h->src.ud, bus_d, sizeof bus_d) == 1;
  } else {
    lu__fmt(bus_d, sizeof bus_d, "%s", h->bus);
  }
  if (h->src.check_shard) {
    shard_d[0] = 0;
    shard_ok = h->src.check_shard(h->src.ud, shard_d, sizeof shard_d) == 1;
  } else {
    unsigned n = lu_manager_shard_count(h->src.manager);
    lu__fmt(shard_d, sizeof shard_d, "%u shard%s in this process", n,
            n == 1 ? "" : "s");
  }
  int ready = reg_ok && store_ok && bus_ok && shard_ok;
  lu__buf_puts(b, ready ? "{\"ready\":true,\"checks\":{"
                        : "{\"ready\":false,\"checks\":{");
  check_json(b, "registry", reg_ok, reg_d, 1);
  check_json(b, "store", store_ok, store_d, 0);
  check_json(b, "bus", bus_ok, bus_d, 0);
  check_json(b, "shard", shard_ok, shard_d, 0);
  lu__buf_puts(b, "}}\n");
  return ready;
}
