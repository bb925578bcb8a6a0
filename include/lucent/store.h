/*
 * lucent/store.h - the event store: where outcomes and emitted events are
 * appended and read back.
 *
 * Backends: "sqlite" (a file path or ":memory:"), and later "jetstream".
 * Appends are idempotent: an event whose id is already stored is ignored
 * (DESIGN.md decision 3).  Appends happen in batches, one transaction each
 * (group commit; SQLite runs in WAL mode).
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

/** lu_record_t.flags: the record will never be appended again by a
 *  redelivery (a `lucent exec` result: requests are not redelivered), so
 *  a store may write it without per-event deduplication, for example in
 *  one message with its neighbours (the JetStream store's packs). */
#define LU_RECORD_PACKABLE 1u

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

/** The last error's message ("" when none).  Borrowed. */
LU_EXTERN const char *lu_store_errmsg(const lu_store_t *st);

/** The backend's name: "sqlite" or "jetstream".  Static storage. */
LU_EXTERN const char *lu_store_backend(const lu_store_t *st);

/** Closes the store; NULL is a no-op. */
LU_EXTERN void lu_store_close(lu_store_t *st);

#ifdef __cplusplus
}
#endif
#endif /* LUCENT_STORE_H */
