/*
 * nats_api.c - lucent/nats.h, the public face of liblucent-nats: checks
 * what a caller gives (NULL pointers, option structs of another size,
 * values out of range) and calls the layer's internals - lu__nats_connect
 * (nats_conn.c), the JetStream store (store_jetstream.c) and the bus
 * (bus_nats.c) - which trust their callers.
 *
 * A serve outlives its bus by design: lu_nats_serve_stop() frees the bus
 * and keeps its last counters, so that a program reads them after the
 * stop (the stop's summary) and frees the serve when it likes.  Its lock
 * guards only the bus pointer: stats and metrics never wait for a stop,
 * which takes the bus out from under the lock before stopping it.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "intake_layout.h"
#include "lucent/nats.h"
#include "membership.h"
#include "retry.h"

_Static_assert(LU_NATS_MAX_REPLICAS == LU_ASSETS_MAX_REPLICAS,
               "lucent/nats.h and assets.h disagree on replicas");
_Static_assert(LU_NATS_PARTITIONS_DEFAULT == LU_INTAKE_PARTITIONS_DEFAULT &&
                   LU_NATS_PARTITIONS_MAX == LU_INTAKE_PARTITIONS_MAX,
               "lucent/nats.h and intake_layout.h disagree on partitions");
_Static_assert(LU_NATS_RETRY_MS == LU_RETRY_DEFAULT_MS,
               "lucent/nats.h and retry.h disagree on the retry window");

/* What lu_nats_serve_free() gives a stop it makes itself (lucent serve's
 * own wait for one shard's bus). */
#define SERVE_STOP_MS 5000
/* A stored record's headers and its pack line need some room. */
#define RECORD_ROOM 4096

struct lu_nats_s {
  natsConnection *nc;
  int bulk;
};

struct lu_nats_serve_s {
  pthread_mutex_t mu;
  lu_natsbus_t *bus; /* NULL once a stop began */
  lu_natsbus_stats_t last; /* the counters once bus is NULL */
  char shard[LU_SHARD_ID_MAX];
};

/* ---- option structs (src/util/abi.c) ----------------------------------- */

/* Where each field ends, in order: a field appended to a struct is
 * appended to its list, and the assertion beside it catches a forgotten
 * one. */
#define END(T, f) LU_ABI_END(T, f)
#define LAST_FIELD(T, f, what)                                                 \
  _Static_assert(sizeof(T) - END(T, f) < _Alignof(T),                          \
                 "a field appended to " what ": add it to its list")

static const size_t conn_ends[] = {
    END(lu_nats_opts_t, struct_size),
    END(lu_nats_opts_t, urls),
    END(lu_nats_opts_t, user),
    END(lu_nats_opts_t, password),
    END(lu_nats_opts_t, token),
    END(lu_nats_opts_t, creds),
    END(lu_nats_opts_t, tls_ca),
    END(lu_nats_opts_t, tls_cert),
    END(lu_nats_opts_t, tls_key),
    END(lu_nats_opts_t, name),
    END(lu_nats_opts_t, max_reconnect),
    END(lu_nats_opts_t, reconnect_wait_ms),
    END(lu_nats_opts_t, connect_timeout_ms),
    END(lu_nats_opts_t, bulk),
};
LAST_FIELD(lu_nats_opts_t, bulk, "lu_nats_opts_t");

static const size_t store_ends[] = {
    END(lu_nats_store_opts_t, struct_size),
    END(lu_nats_store_opts_t, read_only),
    END(lu_nats_store_opts_t, replicas),
    END(lu_nats_store_opts_t, dup_window_ms),
    END(lu_nats_store_opts_t, retry_ms),
    END(lu_nats_store_opts_t, pack),
    END(lu_nats_store_opts_t, pack_every),
    END(lu_nats_store_opts_t, who),
};
LAST_FIELD(lu_nats_store_opts_t, who, "lu_nats_store_opts_t");

static const size_t serve_ends[] = {
    END(lu_nats_serve_opts_t, struct_size),
    END(lu_nats_serve_opts_t, delivery),
    END(lu_nats_serve_opts_t, static_view),
    END(lu_nats_serve_opts_t, heartbeat_ms),
    END(lu_nats_serve_opts_t, ack_wait_ms),
    END(lu_nats_serve_opts_t, durable_forward),
    END(lu_nats_serve_opts_t, replicas),
    END(lu_nats_serve_opts_t, partitions),
    END(lu_nats_serve_opts_t, exec_reply_executed),
};
LAST_FIELD(lu_nats_serve_opts_t, exec_reply_executed, "lu_nats_serve_opts_t");

#define ABI(T, init_name, list)                                                \
  {                                                                            \
    .type = #T, .init = init_name, .size = sizeof(T), .min = sizeof(size_t),   \
    .ends = list, .n = sizeof list / sizeof list[0]                            \
  }
static const lu_abi_t conn_abi =
    ABI(lu_nats_opts_t, "lu_nats_opts_init", conn_ends);
static const lu_abi_t store_abi =
    ABI(lu_nats_store_opts_t, "lu_nats_store_opts_init", store_ends);
static const lu_abi_t serve_abi =
    ABI(lu_nats_serve_opts_t, "lu_nats_serve_opts_init", serve_ends);

static void conn_defaults(lu_nats_opts_t *o) {
  memset(o, 0, sizeof *o);
  o->struct_size = sizeof *o;
}

static void store_defaults(lu_nats_store_opts_t *o) {
  memset(o, 0, sizeof *o);
  o->struct_size = sizeof *o;
  o->retry_ms = LU_NATS_RETRY_MS;
  o->pack = 256; /* exec results: lucent serve's --pack (bench/README.md) */
}

static void serve_defaults(lu_nats_serve_opts_t *o) {
  memset(o, 0, sizeof *o);
  o->struct_size = sizeof *o;
}

int lu_nats_opts_init_sized(lu_nats_opts_t *o, size_t size) {
  lu_nats_opts_t d;
  conn_defaults(&d);
  return lu__abi_init(&conn_abi, o, size, &d);
}

int lu_nats_store_opts_init_sized(lu_nats_store_opts_t *o, size_t size) {
  lu_nats_store_opts_t d;
  store_defaults(&d);
  return lu__abi_init(&store_abi, o, size, &d);
}

int lu_nats_serve_opts_init_sized(lu_nats_serve_opts_t *o, size_t size) {
  lu_nats_serve_opts_t d;
  serve_defaults(&d);
  return lu__abi_init(&serve_abi, o, size, &d);
}

/* err as every call here takes it: NULL or 0 bytes write nowhere. */
#define ERRBUF(err, errlen)                                                    \
  char dummy_[8];                                                              \
  if (!(err) || !(errlen)) {                                                   \
    (err) = dummy_;                                                            \
    (errlen) = sizeof dummy_;                                                  \
  }                                                                            \
  (err)[0] = 0

/* ---- the connection ---------------------------------------------------- */

int lu_nats_connect(lu_nats_t **out, const lu_nats_opts_t *o, char *err,
                    size_t errlen) {
  ERRBUF(err, errlen);
  if (!out) {
    lu__fmt(err, errlen, "lu_nats_connect: no place for the connection");
    return LU_EINVAL;
  }
  *out = NULL;
  if (!o) {
    lu__fmt(err, errlen, "lu_nats_connect: no options (urls is required)");
    return LU_EINVAL;
  }
  lu_nats_opts_t opts;
  conn_defaults(&opts);
  int rc = lu__abi_import(&conn_abi, &opts, o, err, errlen);
  if (rc) return rc;
  lu_nats_t *n = calloc(1, sizeof *n);
  if (!n) {
    lu__fmt(err, errlen, "cannot connect to NATS: out of memory");
    return LU_ENOMEM;
  }
  rc = lu__nats_connect(&n->nc, &opts, err, errlen);
  if (rc) {
    free(n);
    return rc;
  }
  n->bulk = opts.bulk;
  *out = n;
  return 0;
}

void lu_nats_close(lu_nats_t *n) {
  if (!n) return;
  lu__nats_msg_release_all(); /* none of ours outlives the connection */
  natsConnection_Destroy(n->nc);
  free(n);
}

int lu_nats_connected(const lu_nats_t *n) {
  return n && natsConnection_Status(n->nc) == NATS_CONN_STATUS_CONNECTED;
}

size_t lu_nats_max_record_bytes(const lu_nats_t *n) {
  if (!n) return 0;
  int64_t max = natsConnection_GetMaxPayload(n->nc);
  return max > 2 * RECORD_ROOM ? (size_t)max - RECORD_ROOM : RECORD_ROOM;
}

/* ---- the event store --------------------------------------------------- */

int lu_nats_store_open(lu_store_t **out, lu_nats_t *n,
                       const lu_nats_store_opts_t *o, char *err,
                       size_t errlen) {
  ERRBUF(err, errlen);
  if (!out || !n) {
    lu__fmt(err, errlen, "lu_nats_store_open: %s is NULL",
            !out ? "out" : "the connection");
    if (out) *out = NULL;
    return LU_EINVAL;
  }
  *out = NULL;
  lu_nats_store_opts_t so;
  store_defaults(&so);
  int rc = o ? lu__abi_import(&store_abi, &so, o, err, errlen) : 0;
  if (rc) return rc;
  if (so.replicas > LU_NATS_MAX_REPLICAS) {
    lu__fmt(err, errlen,
            "the event store: replicas must be 0 (as found) or 1..%d, not %u",
            LU_NATS_MAX_REPLICAS, so.replicas);
    return LU_EINVAL;
  }
  lu_js_store_opts_t jo = {
      .create = !so.read_only,
      .dup_window_ms = so.dup_window_ms,
      .assets = {
          .replicas = so.replicas, .retry_ms = so.retry_ms, .who = so.who}};
  rc = lu__store_jetstream_open_with(out, n->nc, &jo, err, errlen);
  if (rc) return rc;
  /* Not shared yet: no append can run beside this. */
  lu__store_jetstream_set_pack(*out, so.pack, so.pack_every);
  return 0;
}

/* ---- serving a shard --------------------------------------------------- */

int lu_nats_serve_start(lu_nats_serve_t **out, lu_nats_t *n, lu_manager_t *m,
                        const lu_nats_serve_opts_t *o, char *err,
                        size_t errlen) {
  ERRBUF(err, errlen);
  if (!out || !n || !m) {
    lu__fmt(err, errlen, "lu_nats_serve_start: %s is NULL",
            !out ? "out"
            : !n ? "the connection"
                 : "the manager");
    if (out) *out = NULL;
    return LU_EINVAL;
  }
  *out = NULL;
  lu_nats_serve_opts_t so;
  serve_defaults(&so);
  int rc = o ? lu__abi_import(&serve_abi, &so, o, err, errlen) : 0;
  if (rc) return rc;
  unsigned shards = lu_manager_shard_count(m);
  if (shards != 1) {
    lu__fmt(err, errlen,
            "a manager served on NATS runs one shard, this one runs %u: "
            "make one manager per shard (lu_config_t.shards = 1, "
            "shard_ids its id) and serve each",
            shards);
    return LU_EINVAL;
  }
  if (so.delivery != LU_NATS_AT_LEAST_ONCE &&
      so.delivery != LU_NATS_AT_MOST_ONCE) {
    lu__fmt(err, errlen, "unknown delivery mode %d", (int)so.delivery);
    return LU_EINVAL;
  }
  if (so.replicas > LU_NATS_MAX_REPLICAS) {
    lu__fmt(err, errlen, "replicas must be 0 (as found) or 1..%d, not %u",
            LU_NATS_MAX_REPLICAS, so.replicas);
    return LU_EINVAL;
  }
  if (so.partitions > LU_NATS_PARTITIONS_MAX) {
    lu__fmt(err, errlen,
            "partitions must be 0 (the stream's) or 1..%d, "
            "not %u",
            LU_NATS_PARTITIONS_MAX, so.partitions);
    return LU_EINVAL;
  }
  if (n->bulk) {
    lu__fmt(err, errlen,
            "a bulk connection (lu_nats_opts_t.bulk) delays "
            "every forward and reply: serve on one without");
    return LU_EINVAL;
  }
  lu_nats_serve_t *s = calloc(1, sizeof *s);
  if (!s) {
    lu__fmt(err, errlen, "cannot serve: out of memory");
    return LU_ENOMEM;
  }
  lu_shard_stats_t st;
  lu_manager_shard_stats(m, 0, &st);
  lu__fmt(s->shard, sizeof s->shard, "%s", st.id);
  lu_natsbus_cfg_t bc = {
      .shard = s->shard,
      .static_view = so.static_view,
      .delivery = so.delivery == LU_NATS_AT_MOST_ONCE
                      ? LU_DELIVERY_AT_MOST_ONCE
                      : LU_DELIVERY_AT_LEAST_ONCE,
      .hb_interval_ms = so.heartbeat_ms,
      .ack_wait_ms = so.ack_wait_ms,
      .durable_forward = so.durable_forward,
      .replicas = so.replicas,
      .partitions = so.partitions,
      .exec_reply_executed = so.exec_reply_executed,
  };
  rc = lu__natsbus_start(&s->bus, n->nc, m, &bc, err, errlen);
  if (rc) {
    free(s);
    return rc;
  }
  pthread_mutex_init(&s->mu, NULL);
  *out = s;
  return 0;
}

void lu_nats_serve_stop(lu_nats_serve_t *s, uint32_t timeout_ms) {
  if (!s) return;
  pthread_mutex_lock(&s->mu);
  lu_natsbus_t *b = s->bus;
  if (b) lu__natsbus_stats(b, &s->last); /* what stats says meanwhile */
  s->bus = NULL;
  pthread_mutex_unlock(&s->mu);
  if (!b) return;
  lu_natsbus_stats_t final;
  lu__natsbus_stop(b, timeout_ms, &final);
  pthread_mutex_lock(&s->mu);
  s->last = final;
  pthread_mutex_unlock(&s->mu);
}

void lu_nats_serve_free(lu_nats_serve_t *s) {
  if (!s) return;
  lu_nats_serve_stop(s, SERVE_STOP_MS);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

int lu_nats_serve_stats_sized(const lu_nats_serve_t *cs,
                              lu_nats_serve_stats_t *out, size_t size) {
  if (!cs || !out) return LU_EINVAL;
  lu_nats_serve_t *s = (lu_nats_serve_t *)cs; /* its lock only */
  lu_natsbus_stats_t b;
  pthread_mutex_lock(&s->mu);
  if (s->bus)
    lu__natsbus_stats(s->bus, &b);
  else
    b = s->last;
  pthread_mutex_unlock(&s->mu);
  lu_nats_serve_stats_t r = {
      .pulled = b.pulled,
      .forwarded = b.forwarded,
      .forward_errors = b.forward_errors,
      .exec_requests = b.exec_requests,
      .exec_forwarded = b.exec_forwarded,
      .dropped = b.dropped,
      .forwards_confirmed = b.forward_confirmed,
      .forward_fallbacks = b.forward_fallbacks,
      .forwards_jetstream = b.forwards_jetstream,
      .forwards_at_most_once = b.forwards_amo,
      .claimed = b.claimed,
  };
  /* A caller's struct from older headers gets the counters it holds; one
   * from newer headers, zeros past ours. */
  memcpy(out, &r, size < sizeof r ? size : sizeof r);
  if (size > sizeof r) memset((char *)out + sizeof r, 0, size - sizeof r);
  return 0;
}

size_t lu_nats_serve_metrics(const lu_nats_serve_t *cs, lu_metric_t *out,
                             size_t cap) {
  if (!cs) return 0;
  lu_nats_serve_t *s = (lu_nats_serve_t *)cs; /* its lock only */
  pthread_mutex_lock(&s->mu);
  size_t n = s->bus && out ? lu__natsbus_metrics(s->bus, out, cap) : 0;
  pthread_mutex_unlock(&s->mu);
  return n;
}
