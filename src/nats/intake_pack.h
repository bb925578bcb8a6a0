/*
 * intake_pack.h - at-least-once intake packs: `lucent publish` (and the
 * benchmark that publishes the same way) groups consecutive valid events
 * of one intake partition into one JetStream message; intake_pack.c says
 * what a pack looks like and what it gives up.
 */
#ifndef LUCENT_INTAKE_PACK_H
#define LUCENT_INTAKE_PACK_H

#include <nats/nats.h>

#include "lucent/bus.h"
#include "lucent/lucent.h"
#include "util.h"

/** Events per intake pack by default (`lucent publish --pack N`). */
#define LU_INTAKE_PACK_EVENTS 64
/** A pack's body is kept under this many bytes (an event larger than
 *  that travels alone). */
#define LU_INTAKE_PACK_BYTES (256u * 1024u)

typedef struct lu_packer_s lu_packer_t;

/** A packer of up to max_events (2 or more) events per message, for an
 *  intake of `partitions` partitions (intake_layout.h).  Returns 0,
 *  LU_EINVAL (max_events < 2, no partitions) or LU_ENOMEM.  Not thread
 *  safe: one publisher thread owns it. */
int lu__packer_new(lu_packer_t **out, size_t max_events,
                   unsigned partitions);
/** Frees it and what it still holds (unsent events are dropped: flush
 *  first).  NULL is a no-op. */
void lu__packer_free(lu_packer_t *p);

/** Adds one valid event: its id, its JSON text (one line, no newline; both
 *  copied), its input line number, and its intake partition.  When that
 *  partition's pack is full, or the event does not fit next to what it
 *  holds, *ready is a message to publish (owned by the caller; subject
 *  lucent.intake.<partition>), else NULL.  Returns 0, or LU_ENOMEM /
 *  LU_EIO (nats.c could not build the message; *ready is NULL and the
 *  partition's pack is dropped: count its events as failed). */
int lu__packer_add(lu_packer_t *p, unsigned partition, const char *id,
                   const char *json, size_t len, uint64_t line,
                   natsMsg **ready, size_t *dropped);

/** The next partition with events waiting, as a message (*ready, owned by
 *  the caller), or *ready NULL when none waits.  Call until NULL before
 *  waiting for input or exiting.  Returns 0 or LU_ENOMEM / LU_EIO as
 *  lu__packer_add (*dropped events lost). */
int lu__packer_flush(lu_packer_t *p, natsMsg **ready, size_t *dropped);

/** Events waiting in packs, not yet handed out. */
size_t lu__packer_pending(const lu_packer_t *p);

/** The intake deduplication id (Nats-Msg-Id) of an event: its identity,
 *  (source, id) as CloudEvents defines it, in the form every client can
 *  write (docs/protocol.md, section 3): "<bytes of source>:<source><id>",
 *  percent-encoded as a CloudEvents header value (lu__ce_pct_encode: NATS
 *  would trim or refuse some bytes in a header).  Two events with one id and two sources
 *  are two events.  Into out (reset first); 0 or LU_ENOMEM. */
int lu__intake_dedup_id(lu_buf_t *out, const char *source, const char *id);

/** The at-least-once intake message of one event, or of a line that is
 *  not one (json borrowed for the call): subject lucent.intake.<partition>,
 *  Nats-Msg-Id = id, Lucent-Line = line.  A pack of one takes this form
 *  too.  Returns nats.c's status; *out (the caller's) is NULL on failure. */
natsStatus lu__intake_msg(natsMsg **out, unsigned partition, const char *id,
                          const char *json, size_t len, uint64_t line);

/** Reads an intake message's line numbers: the i-th (0-based) event's
 *  line, from Lucent-Lines of a pack or Lucent-Line of a single event; 0
 *  when unknown.  *cursor starts at NULL and walks the header (call with
 *  i = 0, 1, 2 ... in order). */
uint64_t lu__pack_line(natsMsg *m, size_t i, const char **cursor);

#endif /* LUCENT_INTAKE_PACK_H */
