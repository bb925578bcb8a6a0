/*
 * ptrmap.c - a fixed-size map from pointers to pointers (open addressing,
 * linear probing, deletion by backward shift): the in-flight tables of the
 * NATS bus and the JetStream store.
 */
#include <stdlib.h>

#include "util.h"

static size_t ptr_slot(const lu_ptrmap_t *pm, const void *key) {
  uintptr_t x = (uintptr_t)key;
  return (size_t)((x >> 4) * 0x9e3779b97f4a7c15ull) & pm->mask;
}

int lu__ptrmap_init(lu_ptrmap_t *pm, size_t cap) {
  size_t c = 16;
  while (c < cap) c <<= 1;
  pm->keys = calloc(c, sizeof *pm->keys);
  pm->vals = calloc(c, sizeof *pm->vals);
  pm->mask = c - 1;
  pm->n = 0;
  if (pm->keys && pm->vals) return 0;
  lu__ptrmap_free(pm);
  return LU_ENOMEM;
}

void lu__ptrmap_free(lu_ptrmap_t *pm) {
  free(pm->keys);
  free(pm->vals);
  pm->keys = NULL;
  pm->vals = NULL;
  pm->mask = pm->n = 0;
}

int lu__ptrmap_put(lu_ptrmap_t *pm, const void *key, void *val) {
  if (!pm->keys || pm->n >= pm->mask) return -1; /* one slot stays empty */
  size_t i = ptr_slot(pm, key);
  while (pm->keys[i]) i = (i + 1) & pm->mask;
  pm->keys[i] = key;
  pm->vals[i] = val;
  pm->n++;
  return 0;
}

/* Empties slot i: later entries of the cluster move back into the hole
 * unless their home slot lies in (i, j] (deletion by backward shift). */
static void ptr_remove_at(lu_ptrmap_t *pm, size_t i) {
  size_t j = (i + 1) & pm->mask;
  while (pm->keys[j]) {
    size_t k = ptr_slot(pm, pm->keys[j]);
    int stays = i <= j ? (k > i && k <= j) : (k > i || k <= j);
    if (!stays) {
      pm->keys[i] = pm->keys[j];
      pm->vals[i] = pm->vals[j];
      i = j;
    }
    j = (j + 1) & pm->mask;
  }
  pm->keys[i] = NULL;
  pm->vals[i] = NULL;
  pm->n--;
}

void *lu__ptrmap_take(lu_ptrmap_t *pm, const void *key) {
  if (!pm->keys || !key) return NULL;
  size_t i = ptr_slot(pm, key);
  while (pm->keys[i] && pm->keys[i] != key) i = (i + 1) & pm->mask;
  if (!pm->keys[i]) return NULL;
  void *v = pm->vals[i];
  ptr_remove_at(pm, i);
  return v;
}

size_t lu__ptrmap_drop_value(lu_ptrmap_t *pm, const void *val) {
  size_t dropped = 0;
  /* A removal can shift an entry into slot i: look at it again.  Entries
   * only move back into the hole chain that starts at i, so nothing
   * unvisited lands behind the scan. */
  for (size_t i = 0; pm->keys && i <= pm->mask;) {
    if (pm->keys[i] && pm->vals[i] == val) {
      ptr_remove_at(pm, i);
      dropped++;
    } else {
      i++;
    }
  }
  return dropped;
}
