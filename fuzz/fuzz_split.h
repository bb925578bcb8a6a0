/*
 * fuzz_split.h - turns a fuzzer's bytes into message headers and a
 * payload: "name: value" lines up to an empty line, then the payload.
 * Header text is copied (NUL-terminated); at most 64 headers.
 */
#ifndef LUCENT_FUZZ_SPLIT_H
#define LUCENT_FUZZ_SPLIT_H

#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef struct fz_msg_s {
  char *text; /* the header block, NULs in place of separators */
  lu_hdr_t h[64];
  size_t n;
  const char *payload;
  size_t plen;
} fz_msg_t;

static int fz_split(fz_msg_t *m, const uint8_t *data, size_t size) {
  memset(m, 0, sizeof *m);
  const char *s = (const char *)data;
  const char *blank = NULL;
  for (size_t i = 0; i + 1 < size; i++)
    if (s[i] == '\n' && s[i + 1] == '\n') {
      blank = s + i;
      break;
    }
  size_t hl = blank ? (size_t)(blank - s) : 0;
  m->payload = blank ? blank + 2 : s;
  m->plen = blank ? size - hl - 2 : size;
  m->text = malloc(hl + 1);
  if (!m->text) return -1;
  memcpy(m->text, s, hl);
  m->text[hl] = 0;
  char *line = m->text, *end = m->text + hl;
  while (line < end && m->n < 64) {
    char *nl = memchr(line, '\n', (size_t)(end - line));
    if (nl) *nl = 0;
    char *colon = strstr(line, ": ");
    if (colon) {
      *colon = 0;
      m->h[m->n++] = (lu_hdr_t){line, colon + 2};
    }
    if (!nl) break;
    line = nl + 1;
  }
  return 0;
}

static void fz_free(fz_msg_t *m) { free(m->text); }

#endif
