/*
 * cli.h - the `lucent` command: one file per subcommand (cmd_<name>.c),
 * dispatched by main.c.  Each takes argc/argv with argv[0] = the
 * subcommand name, parses its own options with getopt_long, and returns
 * the process exit code: 0 ok, 1 runtime failure, 2 usage error.
 */
#ifndef LUCENT_CLI_H
#define LUCENT_CLI_H

int cmd_functions(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_events(int argc, char **argv);
int cmd_top(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_publish(int argc, char **argv);
int cmd_exec(int argc, char **argv);

/** Prints "lucent: <message>\n" to stderr (printf format). */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
