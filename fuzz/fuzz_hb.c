/*
 * fuzz_hb.c - the heartbeat parser (membership.c, lu__hb_parse): what
 * every shard reads from lucent.hb.* (any process on the NATS server may
 * publish there).  A heartbeat it accepts names a valid shard id.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "membership.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lu_hb_t hb;
  if (lu__hb_parse((const char *)data, size, &hb) == 0 &&
      !lu_shard_id_valid(hb.id))
    abort();
  return 0;
}
