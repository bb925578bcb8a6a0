/*
 * main.c - the `lucent` command: dispatches to one subcommand per file.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "lucent/lucent.h"

void cli_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("lucent: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static const struct {
  const char *name;
  int (*fn)(int, char **);
  const char *help;
} cmds[] = {
    {"run", cmd_run, "process a JSON Lines file of events on N shards"},
    {"functions", cmd_functions, "list the functions of a plugin"},
    {"events", cmd_events, "print stored events as JSON Lines"},
    {"top", cmd_top, "live view of a running lucent (--http ADDR:PORT)"},
    {"serve", cmd_serve, "run one shard process on NATS (distributed)"},
    {"publish", cmd_publish, "send a JSON Lines file of events to NATS"},
    {"exec", cmd_exec, "execute a function over NATS and wait for it"},
};

static void usage(FILE *f) {
  fprintf(f, "usage: lucent <command> [options]   (lucent <command> --help)\n"
             "       lucent -V | --version\n"
             "\ncommands:\n");
  for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
    fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].help);
  fprintf(f, "  %-10s %s\n", "version", "print the version");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *c = argv[1];
  if (!strcmp(c, "-h") || !strcmp(c, "--help") || !strcmp(c, "help")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(c, "version") || !strcmp(c, "--version") || !strcmp(c, "-V")) {
    printf("lucent %s\n", lu_version_string());
    return 0;
  }
  for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
    if (!strcmp(c, cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
  if (c[0] == '-' && c[1]) cli_error("unknown option '%s'", c);
  else cli_error("unknown command '%s'", c);
  usage(stderr);
  return 2;
}
