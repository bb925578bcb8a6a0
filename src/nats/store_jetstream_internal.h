/*
 * store_jetstream_internal.h - what the two files of the event store on
 * JetStream share, and only they include: the store (js_store_t), the
 * headers its messages carry, and the calls each side makes into the
 * other.
 *
 *   store_jetstream.c       the stream, its messages (subjects, escaped
 *                           header values), opening, appends, closing
 *   store_jetstream_read.c  queries, counts and lookups by id
 *
 * Design notes 1-4 and 6-8 are in store_jetstream.c, 5 and 9 in
 * store_jetstream_read.c.  Not thread safe, as the store is not
 * (store_jetstream.c).  Internal.
 */
#ifndef LUCENT_STORE_JETSTREAM_INTERNAL_H
#define LUCENT_STORE_JETSTREAM_INTERNAL_H

#include <pthread.h>

#include "assets.h"
#include "nats_internal.h"

/* The headers of the store's messages (store_jetstream.c, at the top). */
#define HDR_ID "Nats-Msg-Id"
#define HDR_EXPECT_NONE "Nats-Expected-Last-Subject-Sequence"
#define HDR_SUBJECT "Lucent-Subject"
#define HDR_CORR "Lucent-Correlation"
#define HDR_TYPE "Lucent-Type"
#define HDR_COUNT LU_HDR_COUNT

/* An open store (the notes are store_jetstream.c's). */
typedef struct js_store_s {
  lu_store_t base; /* first: a lu_store_t * is a js_store_t * */
  natsConnection *nc; /* borrowed */
  jsCtx *js;
  int readonly;
  int busy; /* inside a query callback */
  size_t pack; /* records per message at most (note 7); 0, 1 = no packs */
  int pack_all; /* pack every record, not only LU_RECORD_ONCE ones */
  lu_buf_t packbuf; /* a pack's data, reused */
  int64_t dup_ns; /* the duplicate window we want */
  lu_assets_opts_t ao; /* replicas, ride-through window (assets.h) */
  char who[64];        /* ao.who's copy */
  int published; /* ever published: nats.c's pending map exists (its
                  * js_PublishAsyncGetPendingList crashes before) */
  /* Shared by the appender and ack_handler on nats.c's thread. */
  pthread_mutex_t mu;
  pthread_cond_t idle; /* nbatches fell to 0 */
  lu_ptrmap_t inflight; /* natsMsg * -> its js_batch_t (note 1) */
  size_t nbatches;      /* begun and not finished */
  _Atomic int lost_stream; /* an ack said no stream took it (note 6) */
  /* Reused buffers. */
  char *subj;
  size_t subjcap;
  char *esc;
  size_t esccap;
} js_store_t;

/* ---- store_jetstream.c ------------------------------------------------ */

/** Writes LU_SUBJ_EVENTS "." + the type's subject token + "." + tail into
 *  *buf (grown; the caller frees it), and whether the token is the type
 *  itself into *exact (note 3).  0 or LU_ENOMEM. */
int lu__jsstore_type_subject(char **buf, size_t *cap, const char *type,
                             const char *tail, int *exact);

/** A record's id as a subject token: XXH3-128 in hex (note 8). */
void lu__jsstore_id_token(char out[33], const char *id);

/** v as a header value (note 4): v itself, or its escaped form in *buf
 *  (grown; the caller frees it).  NULL only on ENOMEM. */
const char *lu__jsstore_hv_escape(char **buf, size_t *cap, const char *v);

/** Writes "event store on JetStream (...): " + fmt into the store's
 *  errmsg and returns LU_ESTORE. */
int lu__jsstore_fail(js_store_t *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/** Why a JetStream API call failed (s, jerr), in words, into buf. */
void lu__jsstore_reason(natsStatus s, jsErrCode jerr, char *buf, size_t cap);

/** The store called from inside a query callback: says so in errmsg and
 *  returns LU_ESTATE. */
int lu__jsstore_reentered(js_store_t *st);

/* ---- store_jetstream_read.c ------------------------------------------- */

/** The store ops query, count and has (lucent/store.h): the caller's
 *  thread; has may run beside appends (it uses its own buffer). */
int lu__jsstore_query(lu_store_t *base, const lu_query_t *q,
                      lu_store_row_cb cb, void *ud);
int64_t lu__jsstore_count(lu_store_t *base);
int lu__jsstore_has(lu_store_t *base, const char *type, const char *id);

#endif /* LUCENT_STORE_JETSTREAM_INTERNAL_H */
