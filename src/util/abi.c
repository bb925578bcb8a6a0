/*
 * abi.c - options structs that grow without breaking the programs built
 * against older headers: lu_config_t, and the NATS layer's option
 * structs (lucent/nats.h).  The rules are written once, in lucent.h above
 * lu_config_t; this is the code that keeps them:
 *
 *   - the struct's first field is `size_t struct_size`, the sizeof the
 *     caller was compiled with, set by its _init() macro;
 *   - fields are only appended, so an older struct is a prefix of the
 *     library's;
 *   - the library reads the fields that lie wholly within struct_size
 *     (`ends` lists where each one ends, in order) and gives the others
 *     their defaults;
 *   - a struct_size of 0 (never initialised), smaller than the first
 *     fields, or larger than the library's (newer headers) is refused
 *     with a message that names the struct and what to do.
 */
#include <string.h>

#include "lucent/version.h"
#include "util.h"

/* How many bytes of a caller's struct of `size` bytes to read: up to the
 * end of the last field wholly within it. */
static size_t known_prefix(const lu_abi_t *a, size_t size) {
  size_t n = 0;
  for (size_t i = 0; i < a->n && a->ends[i] <= size; i++) n = a->ends[i];
  return n;
}

int lu__abi_init(const lu_abi_t *a, void *s, size_t size,
                 const void *defaults) {
  if (!s || size < sizeof(size_t)) return LU_EINVAL;
  memset(s, 0, size);
  memcpy(s, defaults, size < a->size ? known_prefix(a, size) : a->size);
  memcpy(s, &size, sizeof size); /* struct_size, the first field */
  return size >= a->min && size <= a->size ? 0 : LU_EINVAL;
}

int lu__abi_import(const lu_abi_t *a, void *dst, const void *in, char *err,
                   size_t errlen) {
  size_t size;
  memcpy(&size, in, sizeof size);
  if (size < a->min || size > a->size) {
    if (err && !size)
      lu__fmt(err, errlen,
              "%s has struct_size 0: fill it with %s() before setting "
              "fields",
              a->type, a->init);
    else if (err && size > a->size)
      lu__fmt(err, errlen,
              "%s of %zu bytes is from newer headers than this library "
              "(lucent %s, %zu bytes): run with the lucent the program was "
              "built against",
              a->type, size, LU_VERSION, a->size);
    else if (err)
      lu__fmt(err, errlen,
              "%s of %zu bytes is too small (at least %zu): fill it with "
              "%s()",
              a->type, size, a->min, a->init);
    return LU_EINVAL;
  }
  memcpy(dst, in, known_prefix(a, size));
  memcpy(dst, &a->size, sizeof a->size); /* now the library's own size */
  return 0;
}
