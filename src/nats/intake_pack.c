/*
 * intake_pack.c - intake packs (at-least-once).
 *
 * Every JetStream message costs nats-server about the same CPU whatever
 * its size, and an intake message costs four of them (the publish, its
 * ack to the publisher, the delivery to the shard, the shard's ack).  So
 * `lucent publish` groups consecutive valid events of one intake
 * partition, up to LU_INTAKE_PACK_EVENTS, into one message:
 *
 *   single event    subject  lucent.intake.<p>
 *                   headers  Nats-Msg-Id   the event id
 *                            Lucent-Line   its input line
 *                   data     the event's JSON
 *
 *   pack            subject  lucent.intake.<p>
 *                   headers  Nats-Msg-Id   pack-<XXH3-128 of the data>
 *                            Lucent-Count  how many events
 *                            Lucent-Lines  their input lines, "12,13,17"
 *                   data     the events' JSON, one per line
 *
 * A pack is one work item for JetStream: its shard splits it and acks it
 * once every event in it has its outcome stored (or NAKs it, and all of
 * it comes back).  What packs give up:
 *
 *   - Deduplication at intake is per pack: publishing the same file twice
 *     makes the same packs (they depend only on the input), so the second
 *     time stores nothing; but the same event in a different pack is run
 *     again.  Its outcome's id is the same (docs/architecture.md, decision
 *     3), so the
 *     event store still keeps one.
 *   - A redelivered pack runs all its events again (same ids, same rule).
 *
 * Order is unchanged: a pack holds consecutive events of one partition, in
 * input order, and the shard submits them in that order.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "intake_pack.h"
#include "membership.h" /* subjects */

typedef struct pack_s {
  lu_buf_t body;   /* JSON Lines, no final newline */
  lu_buf_t lines;  /* "12,13,17" */
  size_t n;
  char *first_id; /* a pack of one travels as a single event */
  uint64_t first_line;
} pack_t;

struct lu_packer_s {
  size_t max_events;
  unsigned next_flush;
  size_t pending;
  unsigned partitions;
  pack_t packs[]; /* one per partition */
};

int lu__packer_new(lu_packer_t **out, size_t max_events,
                   unsigned partitions) {
  *out = NULL;
  if (max_events < 2 || !partitions) return LU_EINVAL;
  lu_packer_t *p = calloc(1, sizeof *p + partitions * sizeof(pack_t));
  if (!p) return LU_ENOMEM;
  p->max_events = max_events;
  p->partitions = partitions;
  *out = p;
  return 0;
}

static void pack_reset(pack_t *k) {
  k->body.len = 0;
  k->lines.len = 0;
  k->body.oom = k->lines.oom = 0;
  k->n = 0;
  free(k->first_id);
  k->first_id = NULL;
}

void lu__packer_free(lu_packer_t *p) {
  if (!p) return;
  for (unsigned i = 0; i < p->partitions; i++) {
    pack_reset(&p->packs[i]);
    lu__buf_free(&p->packs[i].body);
    lu__buf_free(&p->packs[i].lines);
  }
  free(p);
}

size_t lu__packer_pending(const lu_packer_t *p) { return p->pending; }

int lu__intake_dedup_id(lu_buf_t *out, const char *source, const char *id) {
  char n[24];
  out->len = 0;
  lu__fmt(n, sizeof n, "%zu:", strlen(source));
  lu__buf_puts(out, n);
  lu__ce_pct_encode(out, source, strlen(source));
  lu__ce_pct_encode(out, id, strlen(id));
  lu__buf_put(out, "", 1);
  if (out->oom) return LU_ENOMEM;
  out->len--; /* the NUL is there, not counted */
  return 0;
}

natsStatus lu__intake_msg(natsMsg **out, unsigned partition, const char *id,
                          const char *json, size_t len, uint64_t line) {
  char subj[64], lbuf[24];
  lu__fmt(subj, sizeof subj, "%s.%u", LU_SUBJ_INTAKE, partition);
  lu__fmt(lbuf, sizeof lbuf, "%" PRIu64, line);
  *out = NULL;
  natsStatus s = natsMsg_Create(out, subj, NULL, json, (int)len);
  if (s == NATS_OK) s = natsMsgHeader_Set(*out, "Nats-Msg-Id", id);
  if (s == NATS_OK) s = natsMsgHeader_Set(*out, "Lucent-Line", lbuf);
  if (s != NATS_OK) {
    natsMsg_Destroy(*out);
    *out = NULL;
  }
  return s;
}

/* The message of partition i's pack of two or more. */
static natsStatus pack_msg(natsMsg **out, unsigned i, const pack_t *k) {
  char subj[64], hdr[64];
  lu__fmt(subj, sizeof subj, "%s.%u", LU_SUBJ_INTAKE, i);
  natsStatus s = natsMsg_Create(out, subj, NULL, k->body.p, (int)k->body.len);
  XXH128_hash_t h = XXH3_128bits(k->body.p, k->body.len);
  lu__fmt(hdr, sizeof hdr, "pack-%016llx%016llx",
          (unsigned long long)h.high64, (unsigned long long)h.low64);
  if (s == NATS_OK) s = natsMsgHeader_Set(*out, "Nats-Msg-Id", hdr);
  lu__fmt(hdr, sizeof hdr, "%zu", k->n);
  if (s == NATS_OK) s = natsMsgHeader_Set(*out, LU_HDR_COUNT, hdr);
  if (s == NATS_OK) s = natsMsgHeader_Set(*out, "Lucent-Lines", k->lines.p);
  return s;
}

/* The message for partition i's pack; the pack is emptied either way. */
static int take(lu_packer_t *p, unsigned i, natsMsg **ready,
                size_t *dropped) {
  pack_t *k = &p->packs[i];
  *ready = NULL;
  if (!k->n) return 0;
  natsMsg *m = NULL;
  natsStatus s = NATS_NO_MEMORY;
  /* (An allocation that failed while it was filled fails it here.)  A
   * pack of one is a plain event. */
  if (!k->body.oom && !k->lines.oom && k->first_id)
    s = k->n == 1 ? lu__intake_msg(&m, i, k->first_id, k->body.p,
                                   k->body.len, k->first_line)
                  : pack_msg(&m, i, k);
  p->pending -= k->n;
  if (s != NATS_OK) {
    *dropped += k->n;
    natsMsg_Destroy(m);
    pack_reset(k);
    return s == NATS_NO_MEMORY ? LU_ENOMEM : LU_EIO;
  }
  pack_reset(k);
  *ready = m;
  return 0;
}

int lu__packer_add(lu_packer_t *p, unsigned partition, const char *id,
                   const char *json, size_t len, uint64_t line,
                   natsMsg **ready, size_t *dropped) {
  *ready = NULL;
  unsigned i = partition % p->partitions;
  pack_t *k = &p->packs[i];
  int rc = 0;
  /* Does not fit next to what the pack holds: that goes first. */
  if (k->n && k->body.len + 1 + len > LU_INTAKE_PACK_BYTES)
    rc = take(p, i, ready, dropped);
  if (k->n) lu__buf_put(&k->body, "\n", 1);
  lu__buf_put(&k->body, json, len);
  char num[24];
  lu__fmt(num, sizeof num, "%s%" PRIu64, k->n ? "," : "", line);
  lu__buf_puts(&k->lines, num);
  if (!k->n) {
    k->first_id = strdup(id ? id : ""); /* NULL: fails at take */
    k->first_line = line;
  }
  k->n++;
  p->pending++;
  if (k->n >= p->max_events && !*ready) rc = take(p, i, ready, dropped);
  return rc;
}

int lu__packer_flush(lu_packer_t *p, natsMsg **ready, size_t *dropped) {
  *ready = NULL;
  for (unsigned t = 0; t < p->partitions; t++) {
    unsigned i = (p->next_flush + t) % p->partitions;
    if (p->packs[i].n) {
      p->next_flush = (i + 1) % p->partitions;
      return take(p, i, ready, dropped);
    }
  }
  return 0;
}

uint64_t lu__pack_line(natsMsg *m, size_t i, const char **cursor) {
  const char *v = NULL;
  if (!*cursor) {
    if (natsMsgHeader_Get(m, "Lucent-Lines", &v) != NATS_OK || !v) {
      if (i || natsMsgHeader_Get(m, "Lucent-Line", &v) != NATS_OK || !v)
        return 0;
      return strtoull(v, NULL, 10);
    }
    *cursor = v;
  }
  const char *c = *cursor;
  if (!*c) return 0;
  char *end;
  uint64_t n = strtoull(c, &end, 10);
  *cursor = *end == ',' ? end + 1 : end;
  return end == c ? 0 : n;
}
