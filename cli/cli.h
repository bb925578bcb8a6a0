/*
 * cli.h - the `lucent` command: one file per subcommand (cmd_<name>.c),
 * dispatched by main.c.  Each takes argc/argv with argv[0] = the
 * subcommand name, parses its own options with cli_getopt, and returns
 * the process exit code: 0 ok, 1 runtime failure, 2 usage error.
 */
#ifndef LUCENT_CLI_H
#define LUCENT_CLI_H

#include <getopt.h>

int cmd_functions(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_events(int argc, char **argv);
int cmd_top(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_publish(int argc, char **argv);
int cmd_exec(int argc, char **argv);

/** Prints "lucent: <message>\n" to stderr (printf format). */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** getopt_long (GNU argument permutation, abbreviated long options) with
 *  lucent's one wording of option errors, printed with cli_error:
 *  "unknown option '--x'", "unknown option '-x'", "ambiguous option '--s'
 *  (--shards, --store)", "option '--x' needs a value", "option '--x' takes
 *  no value".  Returns the next option, -1 at the end, or '?' after such a
 *  message (the caller prints its usage and exits 2).  Set optind = 1
 *  before the first call; shortopts as getopt_long's, without the leading
 *  ':' (added here). */
int cli_getopt(int argc, char **argv, const char *shortopts,
               const struct option *longopts);

#endif
