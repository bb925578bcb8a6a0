/*
 * store_double.h - an event store for tests (header-only): a backend of
 * lucent/store.h's lu_store_ops_t that keeps each record's id once
 * (idempotent, as every store must be) and fails appends on command.
 * Synchronous only (the writer's append_sync path).  It allocates once, at
 * open, through the allocator it is given (an allocation-failure test
 * passes the real one).
 *
 *   lu_store_t *st = sd_open(malloc, free);
 *   sd_of(st)->fail_next = 2;    // the next 2 appends fail (LU_ESTORE)
 *   sd_of(st)->fail_always = 1;  // every append fails
 *   cfg.store_handle = st;       // the manager owns it from here
 */
#ifndef LUCENT_TEST_STORE_DOUBLE_H
#define LUCENT_TEST_STORE_DOUBLE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "lucent/store.h"

#define SD_MAX_IDS 65536

typedef struct sd_store_s {
  struct lu_store_s base; /* first: lu_store_t points here */
  void (*free_fn)(void *);
  pthread_mutex_t mu;
  char (*ids)[40];        /* stored ids, in order */
  unsigned *times;        /* how many appends carried each stored id */
  size_t nids;
  _Atomic unsigned fail_next;  /* fail this many appends from now */
  _Atomic int fail_always;
  _Atomic unsigned appends, failures;
} sd_store_t;

static inline sd_store_t *sd_of(lu_store_t *st) { return (sd_store_t *)st; }

/* The index of id, or nids. */
static inline size_t sd_find(sd_store_t *s, const char *id) {
  for (size_t i = 0; i < s->nids; i++)
    if (!strcmp(s->ids[i], id)) return i;
  return s->nids;
}

static int sd_append(lu_store_t *st, const lu_record_t *recs, size_t n,
                     size_t *inserted) {
  sd_store_t *s = sd_of(st);
  if (inserted) *inserted = 0;
  atomic_fetch_add(&s->appends, 1);
  unsigned f = atomic_load(&s->fail_next);
  if (atomic_load(&s->fail_always) ||
      (f && atomic_compare_exchange_strong(&s->fail_next, &f, f - 1))) {
    atomic_fetch_add(&s->failures, 1);
    snprintf(s->base.errmsg, sizeof s->base.errmsg,
             "store double: append refused (as asked)");
    return LU_ESTORE;
  }
  pthread_mutex_lock(&s->mu);
  size_t added = 0;
  for (size_t i = 0; i < n; i++) {
    size_t k = sd_find(s, recs[i].id);
    if (k < s->nids) { /* idempotent: already stored */
      s->times[k]++;
      continue;
    }
    if (s->nids == SD_MAX_IDS) continue;
    snprintf(s->ids[s->nids], sizeof s->ids[0], "%s", recs[i].id);
    s->times[s->nids++] = 1;
    added++;
  }
  pthread_mutex_unlock(&s->mu);
  if (inserted) *inserted = added;
  s->base.errmsg[0] = 0;
  return 0;
}

static int sd_query(lu_store_t *st, const lu_query_t *q, lu_store_row_cb cb,
                    void *ud) {
  (void)st, (void)q, (void)cb, (void)ud;
  return 0;
}

static int64_t sd_count(lu_store_t *st) {
  sd_store_t *s = sd_of(st);
  pthread_mutex_lock(&s->mu);
  int64_t n = (int64_t)s->nids;
  pthread_mutex_unlock(&s->mu);
  return n;
}

/* What the test reads after the manager is gone: sd_close keeps the
 * counts here (the last store closed). */
static size_t sd_closed_nids;

static void sd_close(lu_store_t *st) {
  sd_store_t *s = sd_of(st);
  sd_closed_nids = s->nids;
  pthread_mutex_destroy(&s->mu);
  s->free_fn(s->ids);
  s->free_fn(s->times);
  s->free_fn(s);
}

static const lu_store_ops_t sd_ops = {.name = "double",
                                      .append = sd_append,
                                      .query = sd_query,
                                      .count = sd_count,
                                      .close = sd_close};

static inline lu_store_t *sd_open(void *(*malloc_fn)(size_t),
                                  void (*free_fn)(void *)) {
  sd_store_t *s = malloc_fn(sizeof *s);
  if (!s) return NULL;
  memset(s, 0, sizeof *s);
  s->base.ops = &sd_ops;
  s->free_fn = free_fn;
  s->ids = malloc_fn(SD_MAX_IDS * sizeof *s->ids);
  s->times = malloc_fn(SD_MAX_IDS * sizeof *s->times);
  if (!s->ids || !s->times || pthread_mutex_init(&s->mu, NULL)) {
    free_fn(s->ids);
    free_fn(s->times);
    free_fn(s);
    return NULL;
  }
  return &s->base;
}

#endif /* LUCENT_TEST_STORE_DOUBLE_H */
