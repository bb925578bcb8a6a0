/*
 * fuzz_ce_binary.c - the CloudEvents binary-mode decoder
 * (lu__ce_binary_decode, src/util/ce.c): ce-* headers and a payload from
 * any sender on the NATS server, made into the structured JSON lucent
 * runs.  Input: "name: value" lines, an empty line, the payload
 * (fuzz_split.h).  What it accepts must be valid UTF-8 JSON; the raw text
 * of what it refuses is built too (as a rejection does).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_split.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_msg_t m;
  if (fz_split(&m, data, size)) return 0;
  (void)lu__ce_binary_mode(m.h, m.n);
  lu_buf_t out = {0};
  char why[256];
  int rc = lu__ce_binary_decode(&out, m.h, m.n, m.payload, m.plen, why,
                                sizeof why);
  if (rc == 0) {
    if (out.oom || !out.p) abort();
    if (!lu__utf8_valid(out.p, out.len, NULL)) abort();
    cJSON *j = cJSON_ParseWithLength(out.p, out.len);
    if (!cJSON_IsObject(j)) {
      fprintf(stderr, "decoded text is not a JSON object: %s\n", out.p);
      abort();
    }
    cJSON_Delete(j);
  } else if (rc != LU_EINVAL) {
    abort();
  }
  lu__buf_free(&out);
  lu_buf_t raw = {0};
  lu__ce_binary_raw(&raw, m.h, m.n, m.payload, m.plen);
  lu__buf_free(&raw);
  fz_free(&m);
  return 0;
}
