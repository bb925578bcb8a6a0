/*
 * crash.c - saying which function and which event killed the process.
 *
 * A C function that crashes (a NULL write, abort()) takes its process
 * with it: nothing can be recovered in that process.  What can be done is
 * to say, before it dies, which function and which event did it (one
 * line on stderr), and to leave a marker file that the next run reads to
 * run that event isolated (sandbox.c) and dead-letter it if it crashes
 * again, rather than crash again.
 *
 * The handler runs on the crashing thread, in signal context: it uses
 * only async-signal-safe calls (open, write, close, signal, raise) and
 * reads only plain memory (the thread's runner record, run.c).  Then it
 * restores the default action and raises the signal again, so the
 * process dies of it as it would have (core dump, exit status).
 * Workers run on an alternate signal stack, so a stack overflow in a
 * function is reported too.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shard.h"

static const int fatal[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
static char marker[4096]; /* "" = none */
static _Atomic int installed;

/* ---- async-signal-safe writing ----------------------------------------- */

typedef struct out_s {
  char b[4096];
  size_t n;
} out_t;

static void put(out_t *o, const char *s) {
  for (; s && *s && o->n < sizeof o->b - 1; s++) o->b[o->n++] = *s;
}

static void put_u(out_t *o, unsigned long long v) {
  char d[24];
  int k = 0;
  do {
    d[k++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (k && o->n < sizeof o->b - 1) o->b[o->n++] = d[--k];
}

/* s as the inside of a JSON string (quotes, backslashes and control bytes
 * escaped; at most 256 bytes of it). */
static void put_json(out_t *o, const char *s) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; s && s[i] && i < 256 && o->n < sizeof o->b - 8; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      o->b[o->n++] = '\\';
      o->b[o->n++] = (char)c;
    } else if (c < 0x20) {
      put(o, "\\u00");
      o->b[o->n++] = hex[c >> 4];
      o->b[o->n++] = hex[c & 15];
    } else {
      o->b[o->n++] = (char)c;
    }
  }
}

static void write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= (size_t)w;
  }
}

static const char *signame(int sig) {
  switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGILL: return "SIGILL";
    case SIGFPE: return "SIGFPE";
    case SIGABRT: return "SIGABRT";
    default: return "a fatal signal";
  }
}

static void on_fatal(int sig) {
  int saved = errno;
  lu_runner_t *r = lu__runner();
  int busy = atomic_load_explicit(&r->state, memory_order_relaxed) ==
             LU_RUN_BUSY;
  const lu_item_t *it = busy ? r->item : NULL;
  const char *id = it && it->ev ? it->ev->id : NULL;
  const char *src = it && it->ev ? it->ev->source : NULL;
  out_t o = {{0}, 0};
  put(&o, "lucent: fatal ");
  put(&o, signame(sig));
  if (busy) {
    put(&o, " in function ");
    put(&o, r->fn);
    put(&o, " on event ");
    put(&o, id);
    put(&o, " (source ");
    put(&o, src);
    put(&o, ", shard ");
    put(&o, r->shard);
    if (it && it->line) {
      put(&o, ", line ");
      put_u(&o, it->line);
    }
    put(&o, ")");
  } else {
    put(&o, " outside any function");
  }
  put(&o, "\n");
  write_all(2, o.b, o.n);
  if (busy && marker[0]) {
    o.n = 0;
    put(&o, "{\"signal\":");
    put_u(&o, (unsigned long long)sig);
    put(&o, ",\"function\":\"");
    put_json(&o, r->fn);
    put(&o, "\",\"event\":\"");
    put_json(&o, id);
    put(&o, "\",\"source\":\"");
    put_json(&o, src);
    put(&o, "\",\"shard\":\"");
    put_json(&o, r->shard);
    put(&o, "\",\"line\":");
    put_u(&o, it ? it->line : 0);
    put(&o, "}\n");
    int fd = open(marker, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
      write_all(fd, o.b, o.n);
      close(fd);
    }
  }
  /* Die of it as we would have. */
  signal(sig, SIG_DFL);
  errno = saved;
  raise(sig);
}

int lu_crash_report_install(const char *marker_path) {
  if (marker_path && strlen(marker_path) >= sizeof marker) return LU_EINVAL;
  /* Written before the handler can see it: install once, path after. */
  if (marker_path) memcpy(marker, marker_path, strlen(marker_path) + 1);
  else marker[0] = 0;
  if (atomic_exchange(&installed, 1)) return 0;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_fatal;
  sa.sa_flags = SA_ONSTACK | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < sizeof fatal / sizeof *fatal; i++)
    if (sigaction(fatal[i], &sa, NULL)) return LU_EINVAL;
  lu__crash_altstack();
  return 0;
}

void lu__crash_altstack(void) {
  if (!atomic_load(&installed)) return;
  static _Thread_local void *alt;
  if (alt) return;
  /* A mapping of its own, not malloc: AddressSanitizer unmaps a thread's
   * alternate stack when the thread ends (UnsetAlternateSignalStack), and
   * munmap of heap memory failed its CHECK (every pool worker's exit
   * aborted under ASan).  Not unmapped here: the thread may still take a
   * signal on it until it is gone. */
  size_t sz = 64 * 1024;
  void *p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
  if (p == MAP_FAILED) return; /* a stack overflow then dies unreported */
  stack_t ss = {.ss_sp = p, .ss_size = sz, .ss_flags = 0};
  if (sigaltstack(&ss, NULL)) {
    munmap(p, sz);
    return;
  }
  alt = p;
}

int lu_crash_marker_read(const char *path, lu_crash_t *c) {
  memset(c, 0, sizeof *c);
  if (!path) return LU_EINVAL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? LU_ENOENT : LU_EIO;
  char buf[8192];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return LU_EPARSE;
  buf[n] = 0;
  cJSON *j = cJSON_Parse(buf);
  const cJSON *sig = cJSON_GetObjectItemCaseSensitive(j, "signal");
  const cJSON *fn = cJSON_GetObjectItemCaseSensitive(j, "function");
  const cJSON *ev = cJSON_GetObjectItemCaseSensitive(j, "event");
  const cJSON *src = cJSON_GetObjectItemCaseSensitive(j, "source");
  const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shard");
  const cJSON *line = cJSON_GetObjectItemCaseSensitive(j, "line");
  int ok = cJSON_IsNumber(sig) && cJSON_IsString(fn) && cJSON_IsString(ev);
  if (ok) {
    c->signal = sig->valueint;
    lu__fmt(c->function, sizeof c->function, "%s", fn->valuestring);
    lu__fmt(c->event_id, sizeof c->event_id, "%s", ev->valuestring);
    if (cJSON_IsString(src))
      lu__fmt(c->source, sizeof c->source, "%s", src->valuestring);
    if (cJSON_IsString(sh))
      lu__fmt(c->shard, sizeof c->shard, "%s", sh->valuestring);
    if (cJSON_IsNumber(line) && line->valuedouble >= 0)
      c->line = (uint64_t)line->valuedouble;
  }
  cJSON_Delete(j);
  return ok ? 0 : LU_EPARSE;
}
