/*
 * ids.c - randomness (splitmix64, for jitter and two choices) and the
 * deterministic ids of results (XXH3-128 of the parts, in UUID shape).
 */
#include <string.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "util.h"

uint64_t lu__rand_next(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double lu__rand_unit(uint64_t *state) {
  return (double)(lu__rand_next(state) >> 11) * 0x1.0p-53;
}

/* Parts this long in all are hashed in one call from the stack; longer
 * ones stream.  Both give the same hash (XXH3 streams what it would hash
 * at once), and one call skips the streaming state (~0.6 KB to set up
 * per id, one per outcome). */
#define DERIVE_ONESHOT 512

void lu__derive_id(char buf[37], const char *const *parts, size_t n) {
  char cat[DERIVE_ONESHOT];
  size_t len = 0;
  XXH128_hash_t h;
  for (size_t i = 0; i < n && len <= sizeof cat; i++) {
    const char *p = parts[i] ? parts[i] : "";
    size_t k = strlen(p);
    if (k >= sizeof cat - len) {
      len = sizeof cat + 1; /* too long: stream below */
      break;
    }
    memcpy(cat + len, p, k + 1); /* with its 0 byte */
    len += k + 1;
  }
  if (len <= sizeof cat) {
    h = XXH3_128bits(cat, len);
  } else {
    XXH3_state_t st;
    static const char zero = 0;
    XXH3_128bits_reset(&st);
    for (size_t i = 0; i < n; i++) {
      const char *p = parts[i] ? parts[i] : "";
      XXH3_128bits_update(&st, p, strlen(p));
      XXH3_128bits_update(&st, &zero, 1);
    }
    h = XXH3_128bits_digest(&st);
  }
  unsigned char b[16];
  for (int i = 0; i < 8; i++) {
    b[i] = (unsigned char)(h.high64 >> (56 - 8 * i));
    b[8 + i] = (unsigned char)(h.low64 >> (56 - 8 * i));
  }
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x80); /* version 8: custom */
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  static const char hex[] = "0123456789abcdef";
  char *o = buf;
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
    *o++ = hex[b[i] >> 4];
    *o++ = hex[b[i] & 15];
  }
  *o = 0;
}

