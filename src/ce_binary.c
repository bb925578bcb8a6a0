/*
 * ce_binary.c - CloudEvents encodings lucent needs that cJSON does not
 * have: base64 (RFC 4648), for the raw bytes of a rejected input that is
 * not UTF-8 (raw_base64) and for data_base64.
 */
#include <stdint.h>
#include <string.h>

#include "internal.h"

/* ---- base64 (RFC 4648, standard alphabet, padded) --------------------- */

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void lu__buf_base64(lu_buf_t *b, const void *p, size_t n) {
  const unsigned char *s = p;
  if (lu__buf_reserve(b, (n + 2) / 3 * 4)) return;
  char q[4];
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
    q[0] = b64chars[v >> 18], q[1] = b64chars[(v >> 12) & 63];
    q[2] = b64chars[(v >> 6) & 63], q[3] = b64chars[v & 63];
    lu__buf_put(b, q, 4);
  }
  if (i < n) {
    uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
    q[0] = b64chars[v >> 18], q[1] = b64chars[(v >> 12) & 63];
    q[2] = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
    q[3] = '=';
    lu__buf_put(b, q, 4);
  }
  lu__buf_put(b, "", 0); /* NUL-terminated, also when n is 0 */
}

static int b64val(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

int lu__base64_decode(lu_buf_t *b, const char *s, size_t n) {
  if (n % 4) return LU_EINVAL;
  for (size_t i = 0; i < n; i += 4) {
    int last = i + 4 == n;
    int pad = last ? (s[n - 1] == '=') + (s[n - 2] == '=') : 0;
    int v[4];
    for (int k = 0; k < 4; k++) {
      v[k] = k >= 4 - pad ? 0 : b64val(s[i + k]);
      if (v[k] < 0) return LU_EINVAL;
    }
    uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
                 (uint32_t)v[2] << 6 | (uint32_t)v[3];
    char o[3] = {(char)(w >> 16), (char)(w >> 8), (char)w};
    lu__buf_put(b, o, (size_t)(3 - pad));
  }
  return b->oom ? LU_ENOMEM : 0;
}
