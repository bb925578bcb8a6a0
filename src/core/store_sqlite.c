/*
 * store_sqlite.c - the embedded event store: one SQLite database file (or
 * ":memory:") holding every event lucent appends, in append order.
 *
 * Schema (version 2):
 *
 *   events(seq INTEGER PRIMARY KEY,      -- store order, the rowid
 *          idh INTEGER NOT NULL UNIQUE,  -- 64-bit key of id (note 2)
 *          id TEXT NOT NULL,             -- CloudEvents id
 *          type TEXT NOT NULL, subject TEXT, correlationid TEXT,
 *          causationid TEXT, time TEXT,
 *          body TEXT NOT NULL)           -- the event's JSON, as received
 *
 * Only `idh` is indexed (UNIQUE: it is what makes appends idempotent).  See
 * note 5 for why type, subject and correlationid are not.  Version 1 (a
 * UNIQUE index on the text `id`, no idh) is still read and appended to.
 *
 * A lucent store is recognised by PRAGMA application_id (LU_APP_ID, "lucn")
 * and PRAGMA user_version (the schema version).  A database is initialised
 * only when it is empty (a new file, or an existing file of 0 bytes); any
 * other database - someone else's SQLite file, a lucent store of a newer
 * schema, or a file that is not SQLite at all - is refused with LU_ESTORE
 * and a message naming the path, and is left untouched: the identity check
 * runs before anything (even the journal mode) is written.
 *
 * Design notes:
 *
 *  1. WAL journal.  The writer appends while `lucent events` (or the
 *     sqlite3 shell) reads: in WAL mode readers never block the writer and
 *     the writer never blocks readers.  WAL with synchronous=NORMAL also
 *     makes a commit a sequential append to the -wal file with no fsync
 *     (the fsync happens at checkpoints): a crash can lose the last
 *     commits but never corrupts the database.  The checkpoint interval is
 *     raised (LU_WAL_CHECKPOINT_PAGES) because the default would
 *     checkpoint after nearly every batch.
 *
 *  2. INSERT OR IGNORE = idempotency.  docs/architecture.md, decision 3: a
 *  result
 *     event's id is derived from (input id, function name), so a retried or
 *     redelivered execution produces the same ids again.  `id` is UNIQUE
 *     and the insert ignores a conflicting row, so the second write is a
 *     no-op and *inserted tells the caller it was a duplicate.
 *     The unique key is not the 36-byte text but idh, XXH3-64 of it: an
 *     index entry of ~12 bytes instead of ~45 is 3-4x fewer random leaf
 *     pages per batch (the index was half of the store's cost).  Two ids
 *     may share a hash, so idh is an open-addressing slot: on a conflict
 *     the row in that slot is read, and if its id differs the insert tries
 *     idh+1, idh+2, ... until it finds the same id (a duplicate) or a free
 *     slot.  Rows are never deleted, so an id always probes the same way.
 *     Only a conflict (a replay, or a true collision, ~n^2/2^65) costs the
 *     extra lookup.  Note that
 *     OR IGNORE would also silently skip a row violating NOT NULL, so
 *     missing id/type/body are checked here, before the insert, and fail
 *     the batch instead.
 *
 *  3. One transaction per batch (group commit).  A commit is the expensive
 *     part of a write; the caller hands over a whole batch and pays for one
 *     BEGIN IMMEDIATE ... COMMIT.  All-or-nothing: on any error the
 *     transaction is rolled back and nothing of the batch is stored, so the
 *     caller can retry the whole batch (idempotency makes that safe).
 *     BEGIN IMMEDIATE takes the write lock up front, so a busy database is
 *     met by the busy timeout instead of failing mid-batch on a lock
 *     upgrade.
 *
 *  4. Hot path.  The statements are prepared once (SQLITE_PREPARE_PERSISTENT)
 *     and live as long as the store; every bind is SQLITE_STATIC (the
 *     records are borrowed for the call), so an append allocates nothing
 *     per row on our side.  The connection is opened NOMUTEX: a store is
 *     used by one thread at a time (store.h), so SQLite's per-call mutex is
 *     pure overhead.  What remains is SQLite's own b-tree work, dominated by
 *     the UNIQUE index on random ids: it touches a random leaf page per row,
 *     which is copied to the journal (":memory:") or written to the WAL
 *     (file) once per batch.
 *
 *  5. Queries scan.  Every index with random keys costs about one random
 *     leaf page per row, written to the WAL at each commit: with indexes on
 *     type, subject and correlationid the pipeline stored 2-4x fewer events
 *     per second than with `id` alone, and writing is what a store does
 *     all day.  Queries (`lucent events`) are rare, so they walk the table
 *     in seq order with the filters in the WHERE clause: no sort, a few
 *     million rows per second.  A user who queries one attribute often can
 *     add an index with the sqlite3 shell (CREATE INDEX ... ON
 *     events(correlationid)); SQLite maintains it and the planner uses it.
 *     The WHERE clause has one of 8 shapes (type/subject/correlationid
 *     present or not), each prepared on first use and kept.  seq > ? and
 *     LIMIT ? are always present (0 and -1 when unused).

 *  6. Checkpoints off the write path.  SQLite's autocheckpoint runs in the
 *     writer's commit and fsyncs there, stalling every append behind it.
 *     A file store that writes has a second connection and thread: the WAL
 *     hook (which replaces autocheckpoint) wakes it when the WAL passes
 *     LU_WAL_CHECKPOINT_PAGES, and it runs a PASSIVE checkpoint, which
 *     never blocks the writer.
 *
 *  7. ":memory:" keeps no rollback journal.  An in-memory store lives and
 *     dies with its process, so the journal only served to undo a batch
 *     that failed half-way, and copying every page it touched halved the
 *     store's speed.  Bad records are refused before the transaction
 *     starts; a failure inside SQLite (out of memory: an in-memory store
 *     has no disk and no triggers) keeps the rows already inserted, and
 *     the caller's retry of the whole batch adds the rest, once each
 *     (INSERT OR IGNORE).
 *
 * Errors: every failing call leaves its message in the store (lu_store_
 * errmsg); lu_store_open* write theirs to the caller's err buffer.  Messages
 * name the path ("cannot open store /x/y.db: unable to open database file
 * (No such file or directory)").  SQLite codes never leave this file.
 *
 * Re-entrancy: the query callback must not call back into the same store
 * (append, query, count): those calls fail with LU_ESTATE.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>
#include <xxhash.h>

#include "internal.h"

#define LU_APP_ID 0x6c75636e /* "lucn" */
#define LU_SCHEMA_VERSION 2 /* what new stores get */
#define LU_SCHEMA_OLDEST 1  /* the oldest version still read and written */
#define LU_BUSY_TIMEOUT_MS 5000
#define LU_CACHE_KIB 32768 /* page cache for a file store: 32 MiB */
/* Checkpoint (in the background, note 6) when the WAL holds this many
 * pages (64 MiB at 4 KiB), not at SQLite's default 1000: the id index has
 * random keys, so one batch dirties ~1000+ pages and the default would
 * checkpoint after nearly every commit. */
#define LU_WAL_CHECKPOINT_PAGES 16384
#define LU_WAL_LIMIT_BYTES (64 * 1024 * 1024) /* WAL size kept after one */

enum { Q_TYPE = 1, Q_SUBJECT = 2, Q_CORR = 4, Q_SHAPES = 8 };

typedef struct sq_store_s {
  lu_store_t base; /* first: a lu_store_t * is a sq_store_t * */
  sqlite3 *db;
  char *path;          /* as given, for messages (owned) */
  int readonly;
  int nojournal;       /* ":memory:": no rollback journal (note 7) */
  int64_t version;     /* schema version of this store */
  int busy;            /* inside a query callback */
  /* Write statements; NULL in a read-only store. */
  sqlite3_stmt *begin, *commit, *rollback, *insert;
  sqlite3_stmt *slot;  /* the id in an idh slot (version 2, note 2) */
  sqlite3_stmt *count;
  sqlite3_stmt *query[Q_SHAPES]; /* by filter shape, prepared lazily */
  /* The checkpointer (file stores that write): its own connection and
   * thread, woken by the WAL hook (note 6). */
  sqlite3 *ckdb;
  pthread_t ckthread;
  pthread_mutex_t cklock;
  pthread_cond_t ckcond;
  int ckrun, ckwanted, ckstop;
} sq_store_t;

static const char SCHEMA_SQL[] =
    "CREATE TABLE events("
    "seq INTEGER PRIMARY KEY,"
    " idh INTEGER NOT NULL UNIQUE,"
    " id TEXT NOT NULL,"
    " type TEXT NOT NULL,"
    " subject TEXT,"
    " correlationid TEXT,"
    " causationid TEXT,"
    " time TEXT,"
    " body TEXT NOT NULL);";

/* ---- helpers ---------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *path,
                    const char *reason) {
  if (err && errlen) lu__fmt(err, errlen, "cannot open store %s: %s", path,
                             reason);
}

/* SQLite's message for the last error on db, plus the OS reason when there
 * is one ("unable to open database file (Permission denied)"). */
static void db_reason(sqlite3 *db, int rc, char *buf, size_t cap) {
  const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  int sys = db ? sqlite3_system_errno(db) : 0;
  int io = (rc & 0xff) == SQLITE_CANTOPEN || (rc & 0xff) == SQLITE_IOERR ||
           (rc & 0xff) == SQLITE_READONLY || (rc & 0xff) == SQLITE_PERM;
  if (sys && io)
    lu__fmt(buf, cap, "%s (%s)", msg, strerror(sys));
  else
    lu__fmt(buf, cap, "%s", msg);
}

/* Records the store's last error: "<what>: <sqlite reason>". */
static int store_fail(sq_store_t *st, int rc, const char *what) {
  char reason[512];
  db_reason(st->db, rc, reason, sizeof reason);
  lu__fmt(st->base.errmsg, sizeof st->base.errmsg, "store %s: %s: %s", st->path, what,
          reason);
  return LU_ESTORE;
}

/* Runs a statement that returns one integer (a PRAGMA, a count). */
static int query_int(sqlite3 *db, const char *sql, int64_t *out) {
  sqlite3_stmt *s = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
  if (rc != SQLITE_OK) return rc;
  rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    *out = sqlite3_column_int64(s, 0);
    rc = SQLITE_OK;
  } else if (rc == SQLITE_DONE) {
    *out = 0;
    rc = SQLITE_OK;
  }
  sqlite3_finalize(s);
  return rc;
}

static void checkpointer_stop(sq_store_t *st);

static void store_free(sq_store_t *st) {
  if (!st) return;
  checkpointer_stop(st);
  sqlite3_finalize(st->begin);
  sqlite3_finalize(st->commit);
  sqlite3_finalize(st->rollback);
  sqlite3_finalize(st->insert);
  sqlite3_finalize(st->slot);
  sqlite3_finalize(st->count);
  for (int i = 0; i < Q_SHAPES; i++) sqlite3_finalize(st->query[i]);
  sqlite3_close(st->db); /* all statements are finalized: never BUSY */
  free(st->path);
  free(st);
}

static int prepare(sq_store_t *st, const char *sql, sqlite3_stmt **out) {
  return sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out,
                            NULL);
}

/* What the database is: 0 = a lucent store of a version we read (in
 * *version), 1 = empty (may be initialised), LU_ESTORE = something else
 * (reason in buf). */
static int identify(sqlite3 *db, int64_t *version, char *buf, size_t cap) {
  int64_t app = 0, ver = 0, objs = 0;
  int rc = query_int(db, "PRAGMA application_id", &app);
  if (rc == SQLITE_OK) rc = query_int(db, "PRAGMA user_version", &ver);
  if (rc == SQLITE_OK)
    rc = query_int(db, "SELECT count(*) FROM sqlite_master", &objs);
  if (rc != SQLITE_OK) {
    db_reason(db, rc, buf, cap);
    return LU_ESTORE;
  }
  if (app == LU_APP_ID) {
    *version = ver;
    if (ver >= LU_SCHEMA_OLDEST && ver <= LU_SCHEMA_VERSION) return 0;
    if (ver > LU_SCHEMA_VERSION)
      lu__fmt(buf, cap,
              "lucent store schema version %" PRId64
              " is newer than this lucent supports (%d)",
              ver, LU_SCHEMA_VERSION);
    else
      lu__fmt(buf, cap, "damaged lucent store (schema version %" PRId64 ")",
              ver);
    return LU_ESTORE;
  }
  if (app == 0 && objs == 0) return 1;
  if (app != 0)
    lu__fmt(buf, cap,
            "not a lucent event store (an SQLite database of another "
            "application, application_id 0x%08" PRIx32 ")",
            (uint32_t)app);
  else
    lu__fmt(buf, cap,
            "not a lucent event store (an SQLite database holding other "
            "tables: %" PRId64 " schema objects)",
            objs);
  return LU_ESTORE;
}

/* Initialises an empty database inside a write transaction, re-checking
 * its identity under the lock (another process may have won the race). */
static int create_schema(sqlite3 *db, char *buf, size_t cap) {
  char sql[sizeof SCHEMA_SQL + 128];
  int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    db_reason(db, rc, buf, cap);
    return LU_ESTORE;
  }
  int64_t ver;
  int what = identify(db, &ver, buf, cap);
  if (what == 1) {
    lu__fmt(sql, sizeof sql,
            "%sPRAGMA application_id=%d;PRAGMA user_version=%d;", SCHEMA_SQL,
            LU_APP_ID, LU_SCHEMA_VERSION);
    rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc == SQLITE_OK) return 0;
    db_reason(db, rc, buf, cap);
    what = LU_ESTORE;
  }
  if (!sqlite3_get_autocommit(db))
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  return what == 0 ? 0 : LU_ESTORE;
}

/* ---- the checkpointer (note 6) ---------------------------------------- */

static void *checkpointer_main(void *arg) {
  sq_store_t *st = arg;
  pthread_mutex_lock(&st->cklock);
  for (;;) {
    while (!st->ckwanted && !st->ckstop)
      pthread_cond_wait(&st->ckcond, &st->cklock);
    if (st->ckstop) break;
    st->ckwanted = 0;
    pthread_mutex_unlock(&st->cklock);
    /* PASSIVE: copies what no reader needs and fsyncs, without ever
     * blocking the writer; the writer restarts the WAL when it can. */
    sqlite3_wal_checkpoint_v2(st->ckdb, "main", SQLITE_CHECKPOINT_PASSIVE,
                              NULL, NULL);
    pthread_mutex_lock(&st->cklock);
  }
  pthread_mutex_unlock(&st->cklock);
  return NULL;
}

/* Runs after every commit of the writer with the WAL's size in pages;
 * replaces SQLite's autocheckpoint (which would fsync in the writer). */
static int wal_hook(void *ud, sqlite3 *db, const char *name, int pages) {
  (void)db, (void)name;
  sq_store_t *st = ud;
  if (pages >= LU_WAL_CHECKPOINT_PAGES) {
    pthread_mutex_lock(&st->cklock);
    st->ckwanted = 1;
    pthread_cond_signal(&st->ckcond);
    pthread_mutex_unlock(&st->cklock);
  }
  return SQLITE_OK;
}

static int checkpointer_start(sq_store_t *st) {
  int rc = sqlite3_open_v2(st->path, &st->ckdb,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) return rc;
  sqlite3_busy_timeout(st->ckdb, LU_BUSY_TIMEOUT_MS);
  pthread_mutex_init(&st->cklock, NULL);
  pthread_cond_init(&st->ckcond, NULL);
  if (pthread_create(&st->ckthread, NULL, checkpointer_main, st) != 0) {
    pthread_mutex_destroy(&st->cklock);
    pthread_cond_destroy(&st->ckcond);
    return SQLITE_ERROR;
  }
  st->ckrun = 1;
  sqlite3_wal_hook(st->db, wal_hook, st);
  return SQLITE_OK;
}

static void checkpointer_stop(sq_store_t *st) {
  if (st->ckrun) {
    sqlite3_wal_hook(st->db, NULL, NULL);
    pthread_mutex_lock(&st->cklock);
    st->ckstop = 1;
    pthread_cond_signal(&st->ckcond);
    pthread_mutex_unlock(&st->cklock);
    pthread_join(st->ckthread, NULL);
    pthread_mutex_destroy(&st->cklock);
    pthread_cond_destroy(&st->ckcond);
    st->ckrun = 0;
  }
  sqlite3_close(st->ckdb); /* NULL is a no-op */
  st->ckdb = NULL;
}

static int sq_append(lu_store_t *base, const lu_record_t *recs, size_t n,
                     size_t *inserted);
static int sq_query(lu_store_t *base, const lu_query_t *q, lu_store_row_cb cb,
                    void *ud);
static int64_t sq_count(lu_store_t *base);
static void sq_close(lu_store_t *base);
static const lu_store_ops_t sqlite_ops = {.name = "sqlite",
                                          .append = sq_append,
                                          .query = sq_query,
                                          .count = sq_count,
                                          .close = sq_close};

/* Both opens.  ro: read-only (the file must exist and be a lucent store). */
static int store_open(lu_store_t **out, const char *uri, int ro, char *err,
                      size_t errlen) {
  char reason[512];
  if (err && errlen) err[0] = 0;
  if (!out) return LU_EINVAL;
  *out = NULL;
  if (!uri || !*uri) {
    if (err && errlen) lu__fmt(err, errlen, "cannot open store: no path");
    return LU_EINVAL;
  }
  int mem = strcmp(uri, ":memory:") == 0;
  if (mem && ro) {
    set_err(err, errlen, uri, "an in-memory store cannot be opened "
                              "read-only (it would always be empty)");
    return LU_EINVAL;
  }
  if (!mem) {
    /* SQLite's reasons for these are vague ("unable to open database
     * file", "disk I/O error"): say what is wrong ourselves. */
    struct stat sb;
    if (stat(uri, &sb) == 0) {
      if (S_ISDIR(sb.st_mode)) {
        set_err(err, errlen, uri, "is a directory");
        return LU_ESTORE;
      }
    } else if (errno == ENOENT && ro) {
      set_err(err, errlen, uri, "no such file");
      return LU_ENOENT;
    } else if (errno != ENOENT) {
      set_err(err, errlen, uri, strerror(errno));
      return LU_ESTORE;
    }
  }

  sq_store_t *st = calloc(1, sizeof *st);
  if (st) st->base.ops = &sqlite_ops;
  if (st) st->path = strdup(uri);
  if (!st || !st->path) {
    free(st);
    set_err(err, errlen, uri, "out of memory");
    return LU_ENOMEM;
  }
  st->readonly = ro;
  int flags = (ro ? SQLITE_OPEN_READONLY
                  : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
              SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(uri, &st->db, flags, NULL);
  if (rc != SQLITE_OK) goto sqlfail;
  sqlite3_extended_result_codes(st->db, 1);
  sqlite3_busy_timeout(st->db, LU_BUSY_TIMEOUT_MS);
  if (!ro && sqlite3_db_readonly(st->db, "main") == 1) {
    /* SQLite falls back to read-only when the file is not writable. */
    set_err(err, errlen, uri, "file is not writable");
    store_free(st);
    return LU_ESTORE;
  }

  int what = identify(st->db, &st->version, reason, sizeof reason);
  if (what == 1 && ro) {
    lu__fmt(reason, sizeof reason, "not a lucent event store (empty file)");
    what = LU_ESTORE;
  }
  if (what < 0) goto fail;

  if (!ro) {
    int64_t ignored;
    /* Before the schema, so that the new file is WAL from its first
     * transaction; ":memory:" answers "memory" and stays so.  Where WAL
     * is impossible (no shared memory on the file system) SQLite keeps
     * the old mode: still correct, readers then block the writer. */
    if (!mem) {
      rc = query_int(st->db, "PRAGMA journal_mode=WAL", &ignored);
      if (rc != SQLITE_OK) goto sqlfail;
      lu__fmt(reason, sizeof reason,
              "PRAGMA cache_size=-%d;PRAGMA journal_size_limit=%d",
              LU_CACHE_KIB, LU_WAL_LIMIT_BYTES);
      rc = sqlite3_exec(st->db, reason, NULL, NULL, NULL);
      if (rc != SQLITE_OK) goto sqlfail;
    }
    rc = sqlite3_exec(st->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    if (rc != SQLITE_OK) goto sqlfail;
    if (mem) {
      int64_t ignored2;
      rc = query_int(st->db, "PRAGMA journal_mode=OFF", &ignored2);
      if (rc != SQLITE_OK) goto sqlfail;
      st->nojournal = 1;
    }
    if (what == 1) {
      if (create_schema(st->db, reason, sizeof reason) != 0) goto fail;
      st->version = LU_SCHEMA_VERSION;
    }
    if ((rc = prepare(st, "BEGIN IMMEDIATE", &st->begin)) != SQLITE_OK ||
        (rc = prepare(st, "COMMIT", &st->commit)) != SQLITE_OK ||
        (rc = prepare(st, "ROLLBACK", &st->rollback)) != SQLITE_OK ||
        (rc = prepare(st,
                      st->version >= 2
                          ? "INSERT OR IGNORE INTO events(id,type,subject,"
                            "correlationid,causationid,time,body,idh) "
                            "VALUES(?1,?2,?3,?4,?5,?6,?7,?8)"
                          : "INSERT OR IGNORE INTO events(id,type,subject,"
                            "correlationid,causationid,time,body) "
                            "VALUES(?1,?2,?3,?4,?5,?6,?7)",
                      &st->insert)) != SQLITE_OK)
      goto sqlfail;
    if (st->version >= 2 &&
        (rc = prepare(st, "SELECT id FROM events WHERE idh = ?1",
                      &st->slot)) != SQLITE_OK)
      goto sqlfail;
  }
  rc = prepare(st, "SELECT count(*) FROM events", &st->count);
  if (rc != SQLITE_OK) goto sqlfail;
  if (!ro && !mem && (rc = checkpointer_start(st)) != SQLITE_OK) goto sqlfail;
  *out = &st->base;
  return 0;

sqlfail:
  db_reason(st->db, rc, reason, sizeof reason);
fail:
  set_err(err, errlen, uri, reason);
  store_free(st);
  return LU_ESTORE;
}

/* ---- public API ------------------------------------------------------- */

int lu_store_open(lu_store_t **out, const char *uri, char *err,
                  size_t errlen) {
  return store_open(out, uri, 0, err, errlen);
}

int lu_store_open_readonly(lu_store_t **out, const char *uri, char *err,
                           size_t errlen) {
  return store_open(out, uri, 1, err, errlen);
}

static int reentered(sq_store_t *st) {
  lu__fmt(st->base.errmsg, sizeof st->base.errmsg,
          "store %s: called from inside a query callback", st->path);
  return LU_ESTATE;
}

/* The idempotency key of an id (note 2). */
static int64_t id_key(const char *id) {
  return (int64_t)XXH3_64bits(id, strlen(id));
}

/* Whether slot h holds the event id: *same = 1 if so, 0 if another id. */
static int slot_holds(sq_store_t *st, int64_t h, const char *id, int *same) {
  sqlite3_bind_int64(st->slot, 1, h);
  int rc = sqlite3_step(st->slot);
  if (rc == SQLITE_ROW) {
    const char *have = (const char *)sqlite3_column_text(st->slot, 0);
    *same = have && strcmp(have, id) == 0;
    rc = SQLITE_OK;
  } else {
    /* The insert just met this slot taken: no row is an error. */
    rc = rc == SQLITE_DONE ? SQLITE_CORRUPT : sqlite3_reset(st->slot);
  }
  sqlite3_reset(st->slot);
  return rc;
}

static int sq_append(lu_store_t *base, const lu_record_t *recs, size_t n,
                     size_t *inserted) {
  sq_store_t *st = (sq_store_t *)base;
  if (inserted) *inserted = 0;
  if (!st || (n && !recs)) return LU_EINVAL;
  if (st->busy) return reentered(st);
  if (st->readonly) {
    lu__fmt(st->base.errmsg, sizeof st->base.errmsg,
            "store %s: opened read-only, cannot append", st->path);
    return LU_ESTORE;
  }
  st->base.errmsg[0] = 0;
  if (!n) return 0;

  /* Refuse a bad record before anything is written (OR IGNORE would
   * otherwise skip it silently, and a journal-less store could not undo
   * the rows before it). */
  for (size_t i = 0; i < n; i++) {
    const lu_record_t *r = &recs[i];
    if (!r->id || !r->type || !r->json) {
      lu__fmt(st->base.errmsg, sizeof st->base.errmsg,
              "store %s: record %zu of the batch has no %s; batch not "
              "stored",
              st->path, i, !r->id ? "id" : !r->type ? "type" : "JSON body");
      return LU_ESTORE;
    }
  }
  sqlite3_stmt *ins = st->insert;
  size_t added = 0, i;
  int rc = sqlite3_step(st->begin);
  sqlite3_reset(st->begin);
  if (rc != SQLITE_DONE) return store_fail(st, rc, "begin");

  for (i = 0; i < n; i++) {
    const lu_record_t *r = &recs[i];
    /* A NULL pointer binds SQL NULL; bind errors resurface in step. */
    sqlite3_bind_text(ins, 1, r->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 2, r->type, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 3, r->subject, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 4, r->correlationid, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 5, r->causationid, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 6, r->time, -1, SQLITE_STATIC);
    sqlite3_bind_text64(ins, 7, r->json, r->len, SQLITE_STATIC, SQLITE_UTF8);
    int64_t h = st->version >= 2 ? id_key(r->id) : 0;
    for (;;) {
      if (st->version >= 2) sqlite3_bind_int64(ins, 8, h);
      rc = sqlite3_step(ins);
      if (rc != SQLITE_DONE) {
        rc = sqlite3_reset(ins);
        goto record_fail;
      }
      sqlite3_reset(ins);
      if (sqlite3_changes64(st->db)) {
        added++;
        break;
      }
      if (st->version < 2) break; /* UNIQUE(id): a duplicate */
      /* Slot h is taken: by this id (a duplicate), or by another id with
       * the same hash (probe the next slot; note 2). */
      int same = 0;
      rc = slot_holds(st, h, r->id, &same);
      if (rc != SQLITE_OK) goto record_fail;
      if (same) break;
      h = (int64_t)((uint64_t)h + 1);
    }
  }
  sqlite3_clear_bindings(ins); /* drop the pointers into caller memory */

  rc = sqlite3_step(st->commit);
  sqlite3_reset(st->commit);
  if (rc != SQLITE_DONE) {
    store_fail(st, rc, "commit");
    goto rollback;
  }
  if (inserted) *inserted = added;
  return 0;

record_fail: {
    char what[64];
    lu__fmt(what, sizeof what, "record %zu of the batch", i);
    store_fail(st, rc, what);
    lu__fmt(st->base.errmsg + strlen(st->base.errmsg),
            sizeof st->base.errmsg - strlen(st->base.errmsg),
            "; batch not stored");
  }
rollback:
  sqlite3_clear_bindings(ins);
  /* Some errors (I/O, full disk) already rolled the transaction back.
   * Without a journal (":memory:", note 7) ROLLBACK is undefined: keep
   * what was inserted; the caller's retry of the batch completes it. */
  if (!sqlite3_get_autocommit(st->db)) {
    sqlite3_stmt *end = st->nojournal ? st->commit : st->rollback;
    sqlite3_step(end);
    sqlite3_reset(end);
  }
  return LU_ESTORE;
}

/* The statement for a filter shape, prepared on first use.  It cannot be
 * running already: the store refuses calls from inside a callback. */
static int query_stmt(sq_store_t *st, unsigned shape, sqlite3_stmt **out) {
  if (st->query[shape]) {
    *out = st->query[shape];
    return SQLITE_OK;
  }
  char sql[256];
  lu__fmt(sql, sizeof sql,
          "SELECT seq, body FROM events WHERE seq > ?1%s%s%s "
          "ORDER BY seq LIMIT ?5",
          shape & Q_TYPE ? " AND type = ?2" : "",
          shape & Q_SUBJECT ? " AND subject = ?3" : "",
          shape & Q_CORR ? " AND correlationid = ?4" : "");
  int rc = prepare(st, sql, &st->query[shape]);
  *out = st->query[shape];
  return rc;
}

static int sq_query(lu_store_t *base, const lu_query_t *q, lu_store_row_cb cb,
                    void *ud) {
  sq_store_t *st = (sq_store_t *)base;
  static const lu_query_t all = {0};
  if (!st || !cb) return LU_EINVAL;
  if (st->busy) return reentered(st);
  if (!q) q = &all;
  st->base.errmsg[0] = 0;
  unsigned shape = (q->type ? Q_TYPE : 0) | (q->subject ? Q_SUBJECT : 0) |
                   (q->correlationid ? Q_CORR : 0);
  sqlite3_stmt *s;
  int rc = query_stmt(st, shape, &s);
  if (rc != SQLITE_OK) return store_fail(st, rc, "query");

  sqlite3_int64 after = q->after_seq > (uint64_t)INT64_MAX
                            ? INT64_MAX : (sqlite3_int64)q->after_seq;
  sqlite3_int64 limit = q->limit == 0 || q->limit > (size_t)INT64_MAX
                            ? -1 : (sqlite3_int64)q->limit;
  sqlite3_bind_int64(s, 1, after);
  if (q->type) sqlite3_bind_text(s, 2, q->type, -1, SQLITE_STATIC);
  if (q->subject) sqlite3_bind_text(s, 3, q->subject, -1, SQLITE_STATIC);
  if (q->correlationid)
    sqlite3_bind_text(s, 4, q->correlationid, -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 5, limit);

  int ret = 0;
  st->busy = 1;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    const char *body = (const char *)sqlite3_column_text(s, 1);
    size_t len = (size_t)sqlite3_column_bytes(s, 1);
    if (!body) { /* NOT NULL column: only on allocation failure */
      rc = sqlite3_errcode(st->db);
      break;
    }
    ret = cb(ud, (uint64_t)sqlite3_column_int64(s, 0), body, len);
    if (ret) break;
  }
  st->busy = 0;
  if (!ret && rc != SQLITE_DONE) {
    int rc2 = sqlite3_reset(s);
    ret = store_fail(st, rc2 != SQLITE_OK ? rc2 : rc, "query");
  } else {
    sqlite3_reset(s);
  }
  sqlite3_clear_bindings(s);
  return ret;
}

static int64_t sq_count(lu_store_t *base) {
  sq_store_t *st = (sq_store_t *)base;
  if (!st) return LU_EINVAL;
  if (st->busy) return reentered(st);
  st->base.errmsg[0] = 0;
  int rc = sqlite3_step(st->count);
  int64_t n = rc == SQLITE_ROW ? sqlite3_column_int64(st->count, 0) : -1;
  if (rc != SQLITE_ROW) rc = sqlite3_reset(st->count);
  else sqlite3_reset(st->count);
  if (n < 0) return store_fail(st, rc, "count");
  return n;
}

static void sq_close(lu_store_t *base) { store_free((sq_store_t *)base); }
