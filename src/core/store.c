/*
 * store.c - the event store interface: dispatch to the backend (SQLite in
 * store_sqlite.c, JetStream in store_jetstream.c).  The manager and the CLI
 * only ever call these.
 */
#include "internal.h"

int lu_store_append(lu_store_t *st, const lu_record_t *recs, size_t n,
                    size_t *inserted) {
  if (inserted) *inserted = 0;
  if (!st) return LU_EINVAL;
  return st->ops->append(st, recs, n, inserted);
}

size_t lu_store_batches_in_flight(const lu_store_t *st) {
  return st && st->ops->append_begin ? st->ops->batches_in_flight(st) : 0;
}

int lu_store_append_begin(lu_store_t *st, const lu_record_t *recs, size_t n,
                           lu_store_done_fn done, void *ctx) {
  if (!st || !done) return LU_EINVAL;
  if (!st->ops->append_begin) return LU_EINVAL;
  return st->ops->append_begin(st, recs, n, done, ctx);
}

int lu_store_query(lu_store_t *st, const lu_query_t *q, lu_store_row_cb cb,
                   void *ud) {
  if (!st) return LU_EINVAL;
  return st->ops->query(st, q, cb, ud);
}

int64_t lu_store_count(lu_store_t *st) {
  if (!st) return LU_EINVAL;
  return st->ops->count(st);
}

int lu_store_has(lu_store_t *st, const char *type, const char *id) {
  if (!st || !type || !id || !st->ops->has) return LU_EINVAL;
  return st->ops->has(st, type, id);
}

const char *lu_store_errmsg(const lu_store_t *st) {
  return st ? st->errmsg : "no store";
}

const char *lu_store_backend(const lu_store_t *st) {
  return st ? st->ops->name : "none";
}

void lu_store_close(lu_store_t *st) {
  if (st) st->ops->close(st);
}
