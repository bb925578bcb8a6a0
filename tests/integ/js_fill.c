/*
 * js_fill.c - test helper: appends JSON Lines events from stdin to an
 * event store through lucent's own store code, so that `lucent events`
 * can be tested on the same events in both backends without running
 * shards.
 *
 *   js_fill URL < events.jsonl              JetStream (stream created)
 *   js_fill --store FILE.db < events.jsonl  SQLite
 *
 * Prints "appended N, inserted M".  Batches of 1000, like a store thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "nats_internal.h"

static const char *str(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

int main(int argc, char **argv) {
  int sqlite = argc == 3 && strcmp(argv[1], "--store") == 0;
  if (argc != 2 && !sqlite) {
    fprintf(stderr, "usage: js_fill (URL | --store FILE.db) < events.jsonl\n");
    return 2;
  }
  natsConnection *nc = NULL;
  lu_store_t *st = NULL;
  char err[1024];
  lu_nats_opts_t o = {.urls = argv[1]};
  int orc = sqlite ? lu_store_open(&st, argv[2], err, sizeof err)
                   : lu__nats_connect(&nc, &o, err, sizeof err);
  if (!orc && !sqlite)
    orc = lu__store_jetstream_open(&st, nc, 1, 0, err, sizeof err);
  if (orc) {
    fprintf(stderr, "js_fill: %s\n", err);
    natsConnection_Destroy(nc);
    return 1;
  }
  enum { CAP = 1000 };
  lu_record_t *recs = calloc(CAP, sizeof *recs);
  cJSON **docs = calloc(CAP, sizeof *docs);
  char **lines = calloc(CAP, sizeof *lines);
  size_t n = 0, total = 0, inserted = 0;
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  int rc = 0, eof = 0;
  while (!eof && !rc) {
    len = getline(&line, &cap, stdin);
    if (len < 0) {
      eof = 1;
    } else {
      while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = 0;
      if (!len) continue;
      cJSON *d = cJSON_ParseWithLength(line, (size_t)len);
      if (!d) {
        fprintf(stderr, "js_fill: not JSON: %s\n", line);
        rc = 1;
        break;
      }
      lines[n] = strdup(line);
      docs[n] = d;
      recs[n] = (lu_record_t){str(d, "id"),          str(d, "type"),
                              str(d, "subject"),     str(d, "correlationid"),
                              str(d, "causationid"), str(d, "time"),
                              lines[n],              (size_t)len};
      n++;
    }
    if (n && (n == CAP || eof)) {
      size_t ins = 0;
      if (lu_store_append(st, recs, n, &ins) != 0) {
        fprintf(stderr, "js_fill: %s\n", lu_store_errmsg(st));
        rc = 1;
      }
      total += n;
      inserted += ins;
      for (size_t i = 0; i < n; i++) {
        cJSON_Delete(docs[i]);
        free(lines[i]);
      }
      n = 0;
    }
  }
  for (size_t i = 0; i < n; i++) {
    cJSON_Delete(docs[i]);
    free(lines[i]);
  }
  if (!rc) printf("appended %zu, inserted %zu\n", total, inserted);
  free(line);
  free(recs);
  free(docs);
  free(lines);
  lu_store_close(st);
  if (nc) {
    natsConnection_Destroy(nc);
    nats_Close();
  }
  return rc;
}
