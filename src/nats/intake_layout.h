/*
 * intake_layout.h - how intake is laid out on the NATS server, and how an
 * event finds its partition (docs/protocol.md, sections 2 and 6, v2):
 *
 *  - the partition count P of a deployment, chosen when stream
 *    LUCENT_INTAKE is created and recorded in its subjects, listed one by
 *    one: lucent.intake.0 .. lucent.intake.<P-1>.  Every process and
 *    client reads P back from there; a publish to a subject outside the
 *    list gets "no responders" instead of being stored for ever;
 *  - the routes table: for each event type, the strategy of the function
 *    that routes it and, for hash_based and sticky_session, its key path.
 *    Serves write it (KV bucket lucent_routes, key "routes", one JSON
 *    document); publishers read it;
 *  - the partition key of an event: the text of its routing key when its
 *    type routes by one and the data has it, else its subject, else its
 *    id (a line that is not an event: its bytes); p = FNV-1a 64 mod P.
 *
 * Internal to the NATS layer, the CLI and the benchmarks.  Calls that
 * talk to the server take a borrowed connection or JetStream context and
 * are safe from any thread (each uses its own JetStream context where it
 * makes one); strings they return in err are NUL-terminated and
 * truncated to errlen.
 */
#ifndef LUCENT_INTAKE_LAYOUT_H
#define LUCENT_INTAKE_LAYOUT_H

#include "assets.h"
#include "nats_internal.h"

/** Protocol v1's fixed count, and what a stream on the old wildcard
 *  subject lucent.intake.> is read as. */
#define LU_INTAKE_PARTITIONS_V1 16
/** P of a stream created without --partitions: v1's 16.  More leaves
 *  room for more pulling processes, at a cost measured in bench/README.md
 *  ("Partitions"): choose it with --partitions when the stream is made. */
#define LU_INTAKE_PARTITIONS_DEFAULT 16
/** The largest P lucent creates or accepts. */
#define LU_INTAKE_PARTITIONS_MAX 1024

#define LU_KV_ROUTES "lucent_routes"
#define LU_ROUTES_KEY "routes"

/* ---- partitions ------------------------------------------------------- */

/** Reads P from a stream's subjects: 0 and *partitions when they are
 *  exactly lucent.intake.0 .. lucent.intake.<P-1> in any order; 1 and
 *  *partitions = 16 for the v1 wildcard lucent.intake.>; -1 when they are
 *  anything else (not lucent's layout). */
int lu__intake_subjects_parse(const char *const *subjects, int n,
                              unsigned *partitions);

/** Makes sure stream LUCENT_INTAKE exists and says how many partitions it
 *  has, in *partitions.
 *   - want: the count asked for (--partitions), 0 = whatever the stream
 *     has, or LU_INTAKE_PARTITIONS_DEFAULT when it is created here;
 *   - create: 0 = never create or change it (LU_ENOENT when missing).
 *  A stream on the v1 wildcard is converted to the 16 explicit subjects
 *  when create is set (messages are kept).  Errors, each with err: a
 *  stream whose count differs from want (LU_EINVAL: "stream
 *  LUCENT_INTAKE has 64 partitions; --partitions 16 ..."), a stream on
 *  other subjects (LU_EINVAL), want outside 1..LU_INTAKE_PARTITIONS_MAX
 *  (LU_EINVAL), NATS failures (LU_EIO).  ao: how it is created and its
 *  replicas reconciled (assets.h; NULL = the defaults). */
int lu__intake_stream_ensure(jsCtx *js, unsigned want, int create,
                             const lu_assets_opts_t *ao, unsigned *partitions,
                             char *err, size_t errlen);

/* ---- routes ----------------------------------------------------------- */

/** The routes table: event type -> {"strategy": ..., "key": path (keyed
 *  strategies only), "function": name}.  The caller owns a table it got
 *  from _new, _parse or _fetch and frees it with lu__routes_free.  Not
 *  thread safe while it is changed; lookups of a table nobody changes
 *  are, and the strings they return live as long as the table. */
typedef struct lu_routes_s lu_routes_t;

/** An empty table (0 or LU_ENOMEM). */
int lu__routes_new(lu_routes_t **out);
/** A table from its JSON document ({"version":1,"types":{...}}): 0,
 *  LU_EINVAL (not such a document: err says why), LU_ENOMEM. */
int lu__routes_parse(lu_routes_t **out, const char *json, size_t len,
                     char *err, size_t errlen);
/** Puts every type of reg in r with its router's strategy and key;
 *  *changed (may be NULL) counts the types added or changed.  0 or
 *  LU_ENOMEM. */
int lu__routes_add_registry(lu_routes_t *r, const lu_registry_t *reg,
                            unsigned *changed);
/** The key path events of `type` are routed by, or NULL (no such type,
 *  or a strategy without a key). */
const char *lu__routes_key(const lu_routes_t *r, const char *type);
/** How many types the table has. */
size_t lu__routes_count(const lu_routes_t *r);
/** The document, compact JSON, malloc'ed (NULL without memory). */
char *lu__routes_json(const lu_routes_t *r);
void lu__routes_free(lu_routes_t *r);

/** A serve's part: merges its registry's routes into the server's table
 *  (KV bucket lucent_routes, created if missing; compare-and-set, so
 *  serves starting together do not lose each other's types).  A type the
 *  table routes otherwise is overwritten (this registry is the newer
 *  deployment) and logged.  replicas: the bucket's copies when it is
 *  created here (--replicas; 0 = 1).  0, or LU_EIO with err. */
int lu__routes_publish(natsConnection *nc, const lu_registry_t *reg,
                       unsigned replicas, char *err, size_t errlen);
/** A publisher's part: the server's table.  0; LU_ENOENT when there is
 *  none yet (no serve has started: err says so); LU_EIO, LU_EINVAL (a
 *  document that is not a table) with err. */
int lu__routes_fetch(lu_routes_t **out, natsConnection *nc, char *err,
                     size_t errlen);

/* ---- the partition of an event ---------------------------------------- */

typedef enum {
  LU_PKEY_ROUTE,   /* the routing key's value (its type routes by one) */
  LU_PKEY_SUBJECT, /* the CloudEvents subject */
  LU_PKEY_ID,      /* the id: no subject */
  LU_PKEY_BYTES    /* not a valid event: its bytes */
} lu_pkey_kind_t;

/** An event's partition key.  text points into the event (or buf, or the
 *  line): valid while they are. */
typedef struct lu_pkey_s {
  lu_pkey_kind_t kind;
  int key_missing; /* its type routes by a key the data lacks */
  const char *text;
  size_t len;
  char buf[32];
} lu_pkey_t;

/** The partition key of an event (ev NULL: a line that is not one, json
 *  its bytes) under routes (NULL = none known: subject, else id). */
void lu__intake_key(const lu_routes_t *routes, const lu_event_t *ev,
                    const char *json, size_t len, lu_pkey_t *k);
/** FNV-1a 64 of the partition key, mod partitions (>= 1). */
unsigned lu__intake_partition(const lu_routes_t *routes, unsigned partitions,
                              const lu_event_t *ev, const char *json,
                              size_t len);

#endif /* LUCENT_INTAKE_LAYOUT_H */
