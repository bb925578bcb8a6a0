/*
 * fuzz_intake_pack.c - intake packs (src/nats/intake_pack.c), both ways.
 *
 * Reading: what a shard does with a pulled intake message (puller.c,
 * submit_pack): Lucent-Count, the events one per line (lu__pack_next),
 * each one's line from Lucent-Lines (lu__pack_line), each parsed.  Input:
 * the Lucent-Count value, a newline, the Lucent-Lines value, a newline,
 * then the data.
 *
 * Writing: the lines that parse as events are packed (lu__packer_add,
 * lu__packer_flush) as `lucent publish` does, and the messages must read
 * back as the same events, in order, with the same line numbers.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "intake_pack.h"
#include "nats_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  /* natsMsg_Destroy hands messages to the library's collector: open the
   * library first, as a connection would. */
  return nats_Open(-1) == NATS_OK ? 0 : 1;
}

#define MAXEV 256

typedef struct got_s {
  const char *json[MAXEV];
  size_t len[MAXEV];
  uint64_t line[MAXEV];
  size_t n;
} got_t;

static char *line_of(const char **s, const char *end) {
  const char *nl = memchr(*s, '\n', (size_t)(end - *s));
  if (!nl) return NULL;
  size_t n = (size_t)(nl - *s);
  char *v = malloc(n + 1);
  if (!v) return NULL;
  memcpy(v, *s, n);
  v[n] = 0;
  *s = nl + 1;
  return v;
}

/* Reads a message back, checking it against want[*k..]. */
static void read_back(natsMsg *m, const got_t *want, size_t *k) {
  const char *d = natsMsg_GetData(m);
  size_t len = (size_t)natsMsg_GetDataLength(m);
  size_t events = lu__nats_msg_events(m);
  const char *cursor = NULL, *ev;
  size_t at = 0, l, i = 0;
  if (events == 1) { /* a single event travels whole */
    if (*k >= want->n || len != want->len[*k] ||
        memcmp(d, want->json[*k], len) ||
        lu__pack_line(m, 0, &cursor) != want->line[*k])
      abort();
    (*k)++;
    return;
  }
  for (; (ev = lu__pack_next(d, len, &at, &l)); i++, (*k)++) {
    if (*k >= want->n || l != want->len[*k] || memcmp(ev, want->json[*k], l))
      abort();
    if (lu__pack_line(m, i, &cursor) != want->line[*k]) abort();
  }
  if (i != events) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *s = (const char *)data, *end = s + size;
  char *count = line_of(&s, end);
  char *lines = count ? line_of(&s, end) : NULL;
  if (!lines) {
    free(count);
    return 0;
  }
  natsMsg *m = NULL;
  if (natsMsg_Create(&m, "lucent.intake.0", NULL, s, (int)(end - s)) !=
      NATS_OK) {
    free(count);
    free(lines);
    return 0;
  }
  if (*count) natsMsgHeader_Set(m, LU_HDR_COUNT, count);
  if (*lines) natsMsgHeader_Set(m, "Lucent-Lines", lines);
  (void)lu__nats_msg_events(m);
  const char *cursor = NULL, *ev;
  size_t at = 0, l;
  got_t got = {0};
  lu_event_t *parsed[MAXEV] = {0};
  const char *d = natsMsg_GetData(m);
  size_t dl = (size_t)natsMsg_GetDataLength(m);
  for (size_t i = 0; (ev = lu__pack_next(d, dl, &at, &l)); i++) {
    uint64_t line = lu__pack_line(m, i, &cursor);
    lu_event_t *e = NULL;
    char err[128];
    if (lu_event_parse(&e, ev, l, err, sizeof err) == 0 && got.n < MAXEV) {
      parsed[got.n] = e;
      got.json[got.n] = ev;
      got.len[got.n] = l;
      got.line[got.n] = line;
      got.n++;
    } else {
      lu_event_free(e);
    }
  }
  /* Pack them again, as the publisher does, and read the packs back. */
  lu_packer_t *p = NULL;
  if (lu__packer_new(&p, 4, 16) == 0) {
    size_t k = 0, dropped = 0;
    for (size_t i = 0; i < got.n; i++) {
      natsMsg *ready = NULL;
      if (lu__packer_add(p, 0, lu_event_id(parsed[i]), got.json[i],
                         got.len[i], got.line[i], &ready, &dropped))
        abort();
      if (ready) read_back(ready, &got, &k);
      natsMsg_Destroy(ready);
    }
    for (;;) {
      natsMsg *ready = NULL;
      if (lu__packer_flush(p, &ready, &dropped)) abort();
      if (!ready) break;
      read_back(ready, &got, &k);
      natsMsg_Destroy(ready);
    }
    if (k != got.n || dropped) abort();
    lu__packer_free(p);
  }
  for (size_t i = 0; i < got.n; i++) lu_event_free(parsed[i]);
  natsMsg_Destroy(m);
  free(count);
  free(lines);
  return 0;
}
