/*
 * nats_opts.h - the connection options every NATS-speaking subcommand
 * takes (serve, publish, exec, events --nats), parsed the same way
 * everywhere.  Splice CLI_NATS_LONGOPTS into an option table (read with
 * cli_getopt), offer each option to cli_nats_opt() before your own
 * switch, and print CLI_NATS_USAGE in your usage text:
 *
 *   static const struct option opts[] = {
 *       {"type", required_argument, 0, 't'},
 *       CLI_NATS_LONGOPTS,
 *       {0, 0, 0, 0}};
 *   lu_nats_opts_t nats;
 *   lu_nats_opts_init(&nats);  // lucent/nats.h
 *   while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
 *     if (cli_nats_opt(c, optarg, &nats)) continue;
 *     switch (c) { ... }
 *   }
 *   cli_nats_env(&nats);  // LUCENT_NATS_* for what was not given
 *
 * The option values are >= CLI_NATS_OPT_BASE, so they never collide with
 * a command's single-character options.
 */
#ifndef LUCENT_CLI_NATS_OPTS_H
#define LUCENT_CLI_NATS_OPTS_H

#include <getopt.h>

#include "lucent/nats.h"

enum {
  CLI_NATS_OPT_BASE = 0x4e00,
  CLI_OPT_NATS = CLI_NATS_OPT_BASE,
  CLI_OPT_NATS_USER,
  CLI_OPT_NATS_PASSWORD,
  CLI_OPT_NATS_TOKEN,
  CLI_OPT_NATS_CREDS,
  CLI_OPT_NATS_TLS_CA,
  CLI_OPT_NATS_TLS_CERT,
  CLI_OPT_NATS_TLS_KEY,
  CLI_NATS_OPT_END
};

/* Entries for a struct option table (no terminator). */
#define CLI_NATS_LONGOPTS                                           \
  {"nats", required_argument, 0, CLI_OPT_NATS},                     \
      {"user", required_argument, 0, CLI_OPT_NATS_USER},            \
      {"password", required_argument, 0, CLI_OPT_NATS_PASSWORD},    \
      {"token", required_argument, 0, CLI_OPT_NATS_TOKEN},          \
      {"creds", required_argument, 0, CLI_OPT_NATS_CREDS},          \
      {"tls-ca", required_argument, 0, CLI_OPT_NATS_TLS_CA},        \
      {"tls-cert", required_argument, 0, CLI_OPT_NATS_TLS_CERT},    \
      {"tls-key", required_argument, 0, CLI_OPT_NATS_TLS_KEY}

/* Usage lines for the options above (each starts with 4 spaces). */
#define CLI_NATS_USAGE                                                     \
  "    --nats URLS         NATS server(s), comma-separated\n"               \
  "                        (nats://HOST:PORT or tls://HOST:PORT;\n"         \
  "                        default $LUCENT_NATS_URL)\n"                     \
  "    --user NAME         NATS user ($LUCENT_NATS_USER)\n"                 \
  "    --password PW       NATS password ($LUCENT_NATS_PASSWORD; the\n"     \
  "                        variable keeps it out of `ps`)\n"                \
  "    --token TOKEN       NATS token ($LUCENT_NATS_TOKEN)\n"               \
  "    --creds FILE        NATS credentials file (JWT + NKey seed)\n"       \
  "    --tls-ca FILE       CA certificates to verify the server (turns\n"   \
  "                        TLS on)\n"                                       \
  "    --tls-cert FILE     client certificate for TLS (with --tls-key)\n"   \
  "    --tls-key FILE      the client certificate's private key\n"

/** If c is one of the NATS options, stores arg in o and returns 1; else
 *  returns 0 (the caller handles c).  Strings are borrowed from argv. */
int cli_nats_opt(int c, const char *arg, lu_nats_opts_t *o);

/** Fills what the command line did not give from LUCENT_NATS_URL,
 *  LUCENT_NATS_USER, LUCENT_NATS_PASSWORD and LUCENT_NATS_TOKEN.  A token
 *  from the environment is not used when a user was given, and a user
 *  from the environment not when a token or creds file was given. */
void cli_nats_env(lu_nats_opts_t *o);

#endif /* LUCENT_CLI_NATS_OPTS_H */
