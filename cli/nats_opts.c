/*
 * nats_opts.c - the shared NATS connection options of the `lucent`
 * subcommands (see nats_opts.h).
 */
#include <stdlib.h>

#include "nats_opts.h"

int cli_nats_opt(int c, const char *arg, lu_nats_opts_t *o) {
  switch (c) {
    case CLI_OPT_NATS: o->urls = arg; return 1;
    case CLI_OPT_NATS_USER: o->user = arg; return 1;
    case CLI_OPT_NATS_PASSWORD: o->password = arg; return 1;
    case CLI_OPT_NATS_TOKEN: o->token = arg; return 1;
    case CLI_OPT_NATS_CREDS: o->creds = arg; return 1;
    case CLI_OPT_NATS_TLS_CA: o->tls_ca = arg; return 1;
    case CLI_OPT_NATS_TLS_CERT: o->tls_cert = arg; return 1;
    case CLI_OPT_NATS_TLS_KEY: o->tls_key = arg; return 1;
    default: return 0;
  }
}

static const char *env(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

void cli_nats_env(lu_nats_opts_t *o) {
  if (!o->urls) o->urls = env("LUCENT_NATS_URL");
  if (!o->user && !o->token && !o->creds) o->user = env("LUCENT_NATS_USER");
  if (o->user && !o->password) o->password = env("LUCENT_NATS_PASSWORD");
  if (!o->token && !o->user && !o->creds) o->token = env("LUCENT_NATS_TOKEN");
}
