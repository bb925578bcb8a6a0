/*
 * config.c - lu_config_t: its defaults, the import of a caller's config
 * of any size this library knows (lucent.h: how lu_config_t grows), and
 * the checks lu_manager_new runs on it before anything starts.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "pipeline.h"
#include "shard.h"

#define MAX_SHARDS LU_VIEW_MAX

/* Where each field of lu_config_t ends, in order.  A caller's struct of
 * struct_size bytes holds the fields that end within it (an older
 * lu_config_t is a prefix of this one; src/util/abi.c reads it).  A field
 * appended to lu_config_t is appended here too: the assertion below
 * catches a forgotten one. */
#define END(f) LU_ABI_END(lu_config_t, f)
static const size_t field_ends[] = {
    END(struct_size), END(shards), END(shard_ids), END(store),
    END(store_handle), END(max_event_bytes), END(queue_capacity),
    END(max_depth), END(w_load), END(w_resources), END(w_priority),
    END(w_affinity), END(shard_cpu_millis), END(shard_memory_mb),
    END(breaker_failures), END(breaker_cooldown_ms), END(store_batch),
    END(seed), END(on_outcome), END(on_outcome_ud), END(threads),
    END(on_explain), END(on_explain_ud),
};
_Static_assert(sizeof(lu_config_t) - END(on_explain_ud) <
                   _Alignof(lu_config_t),
               "a field appended to lu_config_t: add it to field_ends and "
               "name it here");
static const lu_abi_t config_abi = {
    .type = "lu_config_t",
    .init = "lu_config_init",
    .size = sizeof(lu_config_t),
    .min = END(shards), /* the smallest accepted: struct_size and shards */
    .ends = field_ends,
    .n = sizeof field_ends / sizeof field_ends[0],
};

static void defaults(lu_config_t *c) {
  memset(c, 0, sizeof *c);
  c->struct_size = sizeof *c;
  c->shards = 1;
  c->store = ":memory:";
  c->max_event_bytes = 1u << 20;
  c->queue_capacity = 1024;
  c->max_depth = 16;
  c->w_load = 0.3, c->w_resources = 0.25, c->w_priority = 0.25,
  c->w_affinity = 0.2;
  c->shard_cpu_millis = 1000;
  c->shard_memory_mb = 1024;
  c->breaker_failures = 5;
  c->breaker_cooldown_ms = 1000;
  c->store_batch = 4096;
}

int lu_config_init_sized(lu_config_t *cfg, size_t size) {
  lu_config_t d;
  defaults(&d);
  return lu__abi_init(&config_abi, cfg, size, &d);
}

int lu__config_import(lu_config_t *cfg, const lu_config_t *in, char *errbuf,
                      size_t errlen) {
  defaults(cfg);
  if (!in) return 0;
  return lu__abi_import(&config_abi, cfg, in, errbuf, errlen);
}

const char *lu_outcome_name(lu_outcome_kind_t k) {
  switch (k) {
#define XX(n, s) \
    case LU_OUTCOME_##n: return s;
    LU_OUTCOME_MAP(XX)
#undef XX
    default: return "unknown";
  }
}

int lu__config_check(lu_config_t *cfg, char *errbuf, size_t errlen) {
#define BAD(...)                                             \
  do {                                                       \
    if (errbuf) lu__fmt(errbuf, errlen, __VA_ARGS__);        \
    return LU_EINVAL;                                        \
  } while (0)
  if (cfg->shards < 1 || cfg->shards > MAX_SHARDS)
    BAD("shards must be 1..%d (got %u)", MAX_SHARDS, cfg->shards);
  if (!cfg->queue_capacity) BAD("queue capacity must be at least 1");
  if (cfg->max_event_bytes < 64) BAD("max event size must be at least 64");
  if (!cfg->store_batch) cfg->store_batch = 4096;
  const double w[] = {cfg->w_load, cfg->w_resources, cfg->w_priority,
                      cfg->w_affinity};
  for (size_t i = 0; i < 4; i++)
    if (!isfinite(w[i]) || w[i] < 0)
      BAD("selection weights must be finite and not negative");
  if (cfg->w_load + cfg->w_resources + cfg->w_priority + cfg->w_affinity == 0)
    cfg->w_load = 0.3, cfg->w_resources = 0.25, cfg->w_priority = 0.25,
    cfg->w_affinity = 0.2;
  for (unsigned i = 0; cfg->shard_ids && i < cfg->shards; i++) {
    if (cfg->shard_ids[i] && !lu__shard_id_valid(cfg->shard_ids[i]))
      BAD("shard id '%.80s' is not valid: 1 to %d characters of "
          "[A-Za-z0-9_-]",
          cfg->shard_ids[i], LU_SHARD_ID_MAX - 1);
    for (unsigned k = 0; k < i; k++)
      if (cfg->shard_ids[i] && cfg->shard_ids[k] &&
          !strcmp(cfg->shard_ids[i], cfg->shard_ids[k]))
        BAD("shard id '%s' is given twice", cfg->shard_ids[i]);
  }
#undef BAD
  return 0;
}
