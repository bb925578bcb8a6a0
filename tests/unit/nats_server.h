/*
 * nats_server.h - a real nats-server for C tests (header-only, static
 * functions; include it from any test).
 *
 *   lu_test_nats_t srv;
 *   int rc = lu_test_nats_start(&srv, NULL);  // -js on a free port
 *   if (rc == LU_TEST_NATS_SKIP) skip();       // no nats-server here
 *   ... connect to srv.url ...
 *   lu_test_nats_restart(&srv);                // same port, same -sd dir
 *   lu_test_nats_stop(&srv);                   // kills it, removes the dir
 *
 * The binary is $LUCENT_TEST_NATS_SERVER, else nats-server on PATH or in
 * /usr/sbin.  Each server listens on 127.0.0.1 on a free port with its
 * JetStream directory in a fresh temporary directory under
 * $LUCENT_TEST_TMP (or /tmp); its output goes to <dir>/server.log.  Servers
 * still running at exit, or when the test dies of SIGABRT/SIGSEGV/SIGTERM
 * (a failed assertion under a sanitizer), are killed by their PID; and
 * where util-linux's setpriv exists the server is started through
 * `setpriv --pdeathsig KILL`, so that it dies with the test even when the
 * test ends in _exit (ThreadSanitizer's halt_on_error) or SIGKILL.
 */
#ifndef LUCENT_TEST_NATS_SERVER_H
#define LUCENT_TEST_NATS_SERVER_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Every helper is static; not every test uses every one. */
#define LU_TEST_NATS_FN static __attribute__((unused))

#define LU_TEST_NATS_SKIP 77
#define LU_TEST_NATS_MAX_ARGS 24

typedef struct lu_test_nats_s {
  pid_t pid;             /* 0 when stopped */
  int port;
  char dir[PATH_MAX];    /* temp dir: JetStream store and server.log */
  char url[64];          /* nats://127.0.0.1:<port> */
  char bin[PATH_MAX];
  char *extra[LU_TEST_NATS_MAX_ARGS]; /* extra args (owned copies) */
  int nextra;
} lu_test_nats_t;

/* Every running server, for the exit and crash handlers. */
static pid_t lu_test_nats_pids[16];

LU_TEST_NATS_FN void lu_test_nats_kill_all(void) {
  for (size_t i = 0; i < sizeof lu_test_nats_pids / sizeof *lu_test_nats_pids;
       i++)
    if (lu_test_nats_pids[i] > 0) {
      kill(lu_test_nats_pids[i], SIGKILL);
      lu_test_nats_pids[i] = 0;
    }
}

LU_TEST_NATS_FN void lu_test_nats_on_signal(int sig) {
  lu_test_nats_kill_all();
  signal(sig, SIG_DFL);
  raise(sig);
}

LU_TEST_NATS_FN void lu_test_nats_track(pid_t pid, int add) {
  static int installed;
  if (!installed) {
    installed = 1;
    atexit(lu_test_nats_kill_all);
    signal(SIGABRT, lu_test_nats_on_signal);
    signal(SIGSEGV, lu_test_nats_on_signal);
    signal(SIGTERM, lu_test_nats_on_signal);
    signal(SIGINT, lu_test_nats_on_signal);
  }
  for (size_t i = 0; i < sizeof lu_test_nats_pids / sizeof *lu_test_nats_pids;
       i++) {
    if (add && lu_test_nats_pids[i] == 0) {
      lu_test_nats_pids[i] = pid;
      return;
    }
    if (!add && lu_test_nats_pids[i] == pid) {
      lu_test_nats_pids[i] = 0;
      return;
    }
  }
}

/* The nats-server binary: 0, or LU_TEST_NATS_SKIP when there is none. */
LU_TEST_NATS_FN int lu_test_nats_find(char *buf, size_t cap) {
  const char *env = getenv("LUCENT_TEST_NATS_SERVER");
  if (env && *env) {
    snprintf(buf, cap, "%s", env);
    return access(buf, X_OK) == 0 ? 0 : LU_TEST_NATS_SKIP;
  }
  const char *path = getenv("PATH");
  char dirs[8192];
  snprintf(dirs, sizeof dirs, "%s:/usr/sbin:/usr/local/sbin:/sbin",
           path ? path : "/usr/bin:/bin");
  for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d;
       d = strtok_r(NULL, ":", &save)) {
    snprintf(buf, cap, "%s/nats-server", d);
    if (access(buf, X_OK) == 0) return 0;
  }
  return LU_TEST_NATS_SKIP;
}

/* A loopback port nobody listens on right now. */
LU_TEST_NATS_FN int lu_test_nats_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  socklen_t len = sizeof a;
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  close(fd);
  return ntohs(a.sin_port);
}

LU_TEST_NATS_FN int lu_test_nats_accepts(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  if (fd >= 0) close(fd);
  return ok;
}

LU_TEST_NATS_FN void lu_test_nats_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Spawns the server with the recorded port, dir and extra args, and waits
 * (up to 10 s) until it accepts connections.  0, or -1. */
LU_TEST_NATS_FN int lu_test_nats_spawn(lu_test_nats_t *s) {
  char port[16], log[PATH_MAX + 16];
  snprintf(port, sizeof port, "%d", s->port);
  snprintf(log, sizeof log, "%s/server.log", s->dir);
  char *argv[LU_TEST_NATS_MAX_ARGS + 16];
  int n = 0;
  const char *exe = s->bin;
  if (access("/usr/bin/setpriv", X_OK) == 0) {
    exe = "/usr/bin/setpriv";
    argv[n++] = (char *)"setpriv";
    argv[n++] = (char *)"--pdeathsig";
    argv[n++] = (char *)"KILL";
  }
  argv[n++] = s->bin;
  argv[n++] = (char *)"-a";
  argv[n++] = (char *)"127.0.0.1";
  argv[n++] = (char *)"-p";
  argv[n++] = port;
  argv[n++] = (char *)"-js";
  argv[n++] = (char *)"-sd";
  argv[n++] = s->dir;
  for (int i = 0; i < s->nextra; i++) argv[n++] = s->extra[i];
  argv[n] = NULL;

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND,
                                   0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  pid_t pid;
  int rc = posix_spawn(&pid, exe, &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    fprintf(stderr, "nats_server.h: cannot spawn %s: %s\n", s->bin,
            strerror(rc));
    return -1;
  }
  s->pid = pid;
  lu_test_nats_track(pid, 1);
  for (int i = 0; i < 1000; i++) {
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      fprintf(stderr, "nats_server.h: nats-server exited at start (see %s)\n",
              log);
      lu_test_nats_track(pid, 0);
      s->pid = 0;
      return -1;
    }
    if (lu_test_nats_accepts(s->port)) return 0;
    lu_test_nats_sleep_ms(10);
  }
  fprintf(stderr, "nats_server.h: nats-server not listening after 10 s\n");
  return -1;
}

/* Stops the process (SIGTERM, SIGKILL after 5 s); keeps the directory. */
LU_TEST_NATS_FN void lu_test_nats_kill(lu_test_nats_t *s, int sig) {
  if (s->pid <= 0) return;
  kill(s->pid, sig);
  for (int i = 0; i < 500; i++) {
    if (waitpid(s->pid, NULL, WNOHANG) == s->pid) goto done;
    lu_test_nats_sleep_ms(10);
  }
  kill(s->pid, SIGKILL);
  waitpid(s->pid, NULL, 0);
done:
  lu_test_nats_track(s->pid, 0);
  s->pid = 0;
}

/** Starts a server: extra is a NULL-terminated list of more arguments
 *  (e.g. {"--user", "a", "--pass", "b", NULL}) or NULL.  Returns 0,
 *  LU_TEST_NATS_SKIP when no nats-server is installed, or -1. */
LU_TEST_NATS_FN int lu_test_nats_start(lu_test_nats_t *s,
                                       const char *const *extra) {
  memset(s, 0, sizeof *s);
  if (lu_test_nats_find(s->bin, sizeof s->bin) != 0) return LU_TEST_NATS_SKIP;
  const char *tmp = getenv("LUCENT_TEST_TMP");
  snprintf(s->dir, sizeof s->dir, "%s/lu_nats_XXXXXX",
           tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(s->dir)) return -1;
  for (int i = 0; extra && extra[i] && i < LU_TEST_NATS_MAX_ARGS; i++)
    s->extra[s->nextra++] = strdup(extra[i]);
  for (int attempt = 0; attempt < 5; attempt++) {
    s->port = lu_test_nats_free_port();
    if (s->port <= 0) return -1;
    snprintf(s->url, sizeof s->url, "nats://127.0.0.1:%d", s->port);
    if (lu_test_nats_spawn(s) == 0) return 0;
    /* Most likely someone took the port in between: try another. */
  }
  return -1;
}

/** Kills the server (SIGKILL, like a crash) and starts it again on the
 *  same port with the same JetStream directory, after down_ms. */
LU_TEST_NATS_FN int lu_test_nats_restart(lu_test_nats_t *s, int down_ms) {
  lu_test_nats_kill(s, SIGKILL);
  if (down_ms > 0) lu_test_nats_sleep_ms(down_ms);
  for (int i = 0; i < 50; i++) {
    if (lu_test_nats_spawn(s) == 0) return 0;
    lu_test_nats_sleep_ms(100); /* the port may linger a moment */
  }
  return -1;
}

/* rm -rf path (no symlinks followed). */
LU_TEST_NATS_FN void lu_test_nats_rm(const char *path) {
  struct stat sb;
  if (lstat(path, &sb) != 0) return;
  if (S_ISDIR(sb.st_mode)) {
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      char sub[PATH_MAX];
      snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
      lu_test_nats_rm(sub);
    }
    if (d) closedir(d);
    rmdir(path);
  } else {
    unlink(path);
  }
}

/** Stops the server and removes its directory.  Safe to call twice. */
LU_TEST_NATS_FN void lu_test_nats_stop(lu_test_nats_t *s) {
  lu_test_nats_kill(s, SIGTERM);
  if (s->dir[0]) {
    lu_test_nats_rm(s->dir);
    s->dir[0] = 0;
  }
  for (int i = 0; i < s->nextra; i++) free(s->extra[i]);
  s->nextra = 0;
}

/* In main(): skip the test (exit 77) when there is no nats-server. */
#define LU_TEST_NATS_REQUIRE()                                          \
  do {                                                                  \
    char lu_bin_[PATH_MAX];                                             \
    if (lu_test_nats_find(lu_bin_, sizeof lu_bin_) != 0) {              \
      printf("skip: no nats-server (set LUCENT_TEST_NATS_SERVER)\n");   \
      return LU_TEST_NATS_SKIP;                                         \
    }                                                                   \
  } while (0)

#if defined(LUCENT_NATS_INTERNAL_H) && defined(fail_msg)
/* A connection to url through lucent's own connect, failing the test if
 * it cannot (for tests that include cmocka.h and nats_internal.h first). */
LU_TEST_NATS_FN natsConnection *lu_test_nats_connect(const char *url) {
  natsConnection *nc = NULL;
  char err[512];
  lu_nats_opts_t o = {.urls = url, .reconnect_wait_ms = 50};
  if (lu__nats_connect(&nc, &o, err, sizeof err) != 0)
    fail_msg("connect: %s", err);
  return nc;
}
#endif

#endif /* LUCENT_TEST_NATS_SERVER_H */
