/*
 * lucent/store.h - the event store: where outcomes and emitted events are
 * appended and read back.
 *
 * Backends: "sqlite" (a file path or ":memory:"), "jetstream" (`lucent serve`),
 * or one of your own (the end of this file).
 * Appends are idempotent: an event whose id is already stored is ignored,
 * however long ago it was stored (docs/architecture.md, decision 3; the
 * JetStream store compares type and id, which is the same for the ids
 * lucent derives: no two of its records share an id).  Appends happen in
 * batches, one transaction each (group commit; SQLite runs in WAL mode).
 */
#ifndef LUCENT_STORE_H
#define LUCENT_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lu_store_s lu_store_t;

/** lu_record_t.flags: the record is appended once: its input is never
 *  redelivered (a request answered on lucent exec), so no later append
 *  can repeat it and a store may skip per-record deduplication for it
 *  (for example, write it in one message with its neighbours). */
#define LU_RECORD_ONCE 1u

/** One event to append.  All strings are borrowed for the call; `json` is
 *  the full CloudEvent text (len bytes).  subject, correlationid and
 *  causationid may be NULL.  flags: LU_RECORD_* (0 for most records). */
typedef struct lu_record_s {
  const char *id, *type, *subject, *correlationid, *causationid, *time;
  const char *json;
  size_t len;
  unsigned flags;
} lu_record_t;

/** Filter for lu_store_query(): NULL/0 fields match everything. */
typedef struct lu_query_s {
  const char *type;
  const char *subject;
  const char *correlationid;
  uint64_t after_seq;  /**< only events stored after this sequence */
  size_t limit;        /**< at most this many; 0 = all */
} lu_query_t;

/** Opens a store.  uri: a file path (created if missing) or ":memory:".
 *  Errors: LU_ESTORE with the reason in err (unwritable path, not a lucent
 *  database, ...). */
LU_EXTERN int lu_store_open(lu_store_t **out, const char *uri, char *err,
                            size_t errlen);

/** Opens an existing store read-only (for `lucent events`); LU_ENOENT if
 *  the file does not exist. */
LU_EXTERN int lu_store_open_readonly(lu_store_t **out, const char *uri,
                                     char *err, size_t errlen);

/** Appends n records in one transaction; ids already stored are skipped.
 *  *inserted (may be NULL) receives how many were new.  Returns 0 or
 *  LU_ESTORE.  A record without id, type or JSON fails the batch before
 *  anything is written.  Any other failure rolls the batch back in a file
 *  store; an in-memory store keeps no journal and may keep part of it.
 *  Either way, appending the same batch again stores each record once.
 *  Not thread safe with other calls on the same store. */
LU_EXTERN int lu_store_append(lu_store_t *st, const lu_record_t *recs,
                              size_t n, size_t *inserted);

/** Calls cb for each matching event in store order, with its sequence
 *  number and JSON text (borrowed for the call).  cb returns 0 to go on,
 *  anything else to stop (returned by lu_store_query).  Returns 0 or
 *  LU_ESTORE.  Not thread safe with other calls on the same store. */
typedef int (*lu_store_row_cb)(void *ud, uint64_t seq, const char *json,
                               size_t len);
LU_EXTERN int lu_store_query(lu_store_t *st, const lu_query_t *q,
                             lu_store_row_cb cb, void *ud);

/** Number of stored events, or a negative LU_E* code. */
LU_EXTERN int64_t lu_store_count(lu_store_t *st);

/** Whether an event of this type and id is stored: 1 yes, 0 no, or a
 *  negative LU_E* code (LU_EINVAL: the backend cannot tell, as
 *  "sqlite" cannot while its writer holds it).  lucent asks it of an input
 *  that may have run before, to run the function that ran then (its
 *  outcome and emitted events get the same ids, stored once) rather than
 *  a competing one.  Thread safe with appends on the same store
 *  ("jetstream"); writes no errmsg. */
LU_EXTERN int lu_store_has(lu_store_t *st, const char *type, const char *id);

/** The last error's message ("" when none).  Borrowed. */
LU_EXTERN const char *lu_store_errmsg(const lu_store_t *st);

/** The backend's name: "sqlite" or "jetstream".  Static storage. */
LU_EXTERN const char *lu_store_backend(const lu_store_t *st);

/** Closes the store; NULL is a no-op. */
LU_EXTERN void lu_store_close(lu_store_t *st);

/* ======================================================================
 * Writing a backend.  lucent's own are SQLite (lu_store_open) and
 * JetStream (liblucent-nats); another backend fills a lu_store_ops_t and
 * starts its own store object with a struct lu_store_s.
 * ==================================================================== */

/** Called exactly once when an append begun with lu_store_append_begin
 *  is finished: rc 0 (every record is stored; inserted = how many were
 *  new) or LU_ESTORE with why (borrowed for the call).  It may run on the
 *  backend's own thread, and must not block long. */
typedef void (*lu_store_done_fn)(void *ctx, int rc, size_t inserted,
                                 const char *why);

/** A backend's operations.  Every call gets the store object the backend
 *  made (its struct starts with a struct lu_store_s), and leaves a
 *  message in its errmsg when it fails. */
typedef struct lu_store_ops_s {
  const char *name; /**< "sqlite", "jetstream", ... */
  /** As lu_store_append. */
  int (*append)(lu_store_t *st, const lu_record_t *recs, size_t n,
                size_t *inserted);
  /** As lu_store_append_begin; NULL when the backend only appends
   *  synchronously (then batches_in_flight is NULL too). */
  int (*append_begin)(lu_store_t *st, const lu_record_t *recs, size_t n,
                      lu_store_done_fn done, void *ctx);
  size_t (*batches_in_flight)(const lu_store_t *st);
  /** As lu_store_query and lu_store_count. */
  int (*query)(lu_store_t *st, const lu_query_t *q, lu_store_row_cb cb,
               void *ud);
  int64_t (*count)(lu_store_t *st);
  /** As lu_store_has; NULL when the backend cannot tell. */
  int (*has)(lu_store_t *st, const char *type, const char *id);
  /** Frees everything (lu_store_close). */
  void (*close)(lu_store_t *st);
} lu_store_ops_t;

/** The head of every backend's store object: a backend's own struct
 *  starts with it, and lu_store_t pointers point at it. */
struct lu_store_s {
  const lu_store_ops_t *ops;
  char errmsg[1024]; /**< the last error, NUL-terminated ("" = none) */
};

/** How many batches begun with lu_store_append_begin a writer should keep
 *  in flight at once: 0 when st only appends synchronously; 1 when it
 *  packs every record (fewer, larger batches make fewer messages); more
 *  when batches do not change what is sent. */
LU_EXTERN size_t lu_store_batches_in_flight(const lu_store_t *st);

/** Begins appending recs and returns without waiting for the store: the
 *  records are copied before it returns; done is called exactly once when
 *  they are stored or have failed - possibly before this returns, on this
 *  thread, else on the backend's.  Same single-caller rule as
 *  lu_store_append for the calls themselves.  0 = begun; else nothing was
 *  begun, done is not called, and lu_store_errmsg says why (LU_EINVAL for
 *  a backend that only appends synchronously). */
LU_EXTERN int lu_store_append_begin(lu_store_t *st, const lu_record_t *recs,
                                    size_t n, lu_store_done_fn done,
                                    void *ctx);

#ifdef __cplusplus
}
#endif
#endif /* LUCENT_STORE_H */
