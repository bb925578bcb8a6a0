/*
 * opts.c - option parsing for every subcommand: getopt_long with one
 * style of error message (cli.h, cli_getopt).
 *
 * getopt_long's own messages start with argv[0], which is the subcommand
 * ("run: unrecognized option '--x'"), and differ by libc; lucent's other
 * errors start with "lucent: ".  So opterr is off and the errors are
 * worded here, once:
 *
 *   lucent: unknown option '--frob'
 *   lucent: unknown option '-q'
 *   lucent: ambiguous option '--s' (--shards, --store)
 *   lucent: option '--plugin' needs a value
 *   lucent: option '--json' takes no value
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* The long option argv element `arg` ("--name" or "--name=value") names,
 * as its length of name (after the dashes). */
static size_t long_name_len(const char *arg) {
  return strcspn(arg + 2, "=");
}

/* Prints "ambiguous option" with the candidates and returns 1 when the
 * (abbreviated) long option `arg` matches more than one entry and none
 * exactly; returns 0 otherwise. */
static int ambiguous(const char *arg, const struct option *lo) {
  size_t n = long_name_len(arg), hits = 0;
  const char *name = arg + 2;
  char list[512] = "";
  for (const struct option *o = lo; o && o->name; o++) {
    if (strncmp(o->name, name, n) != 0) continue;
    if (strlen(o->name) == n) return 0; /* exact */
    size_t at = strlen(list);
    snprintf(list + at, sizeof list - at, "%s--%s", hits ? ", " : "",
             o->name);
    hits++;
  }
  if (hits < 2) return 0;
  cli_error("ambiguous option '--%.*s' (%s)", (int)n, name, list);
  return 1;
}

/* The entry the (possibly abbreviated) long option `arg` selected, given
 * getopt's optopt (that entry's val); NULL if none fits. */
static const struct option *selected(const struct option *lo,
                                     const char *arg, int val) {
  size_t n = long_name_len(arg);
  for (const struct option *o = lo; o && o->name; o++)
    if (!o->flag && o->val == val && strncmp(o->name, arg + 2, n) == 0)
      return o;
  return NULL;
}

int cli_getopt(int argc, char **argv, const char *shortopts,
               const struct option *longopts) {
  char so[128];
  /* A leading ':' makes getopt tell a missing value (':') from an unknown
   * option ('?'); a leading '+' or '-' (scanning mode) stays first. */
  if (shortopts[0] == '+' || shortopts[0] == '-')
    snprintf(so, sizeof so, "%c:%s", shortopts[0], shortopts + 1);
  else
    snprintf(so, sizeof so, ":%s", shortopts);
  opterr = 0;
  optopt = 0;
  int c = getopt_long(argc, argv, so, longopts, NULL);
  if (c != '?' && c != ':') return c;

  /* On an error with a long option, getopt has moved past its element. */
  const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "";
  int is_long = strncmp(arg, "--", 2) == 0 && arg[2] != 0;
  const struct option *o = is_long && optopt ? selected(longopts, arg, optopt)
                                             : NULL;
  if (c == ':') {
    if (o)
      cli_error("option '--%s' needs a value", o->name);
    else if (is_long)
      cli_error("option '--%.*s' needs a value", (int)long_name_len(arg),
                arg + 2);
    else
      cli_error("option '-%c' needs a value", optopt);
    return '?';
  }
  if (o && o->has_arg == no_argument) {
    cli_error("option '--%s' takes no value", o->name);
    return '?';
  }
  if (is_long && !optopt) {
    if (!ambiguous(arg, longopts))
      cli_error("unknown option '--%.*s'", (int)long_name_len(arg), arg + 2);
    return '?';
  }
  if (optopt > 0 && optopt < 128)
    cli_error("unknown option '-%c'", optopt);
  else
    cli_error("unknown option '%s'", arg);
  return '?';
}
