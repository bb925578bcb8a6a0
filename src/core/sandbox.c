/*
 * sandbox.c - running a suspect input's function in a child process.
 *
 * An input delivered again (lu_input_t.delivery > 1) may have crashed or
 * hung the process that took it first: a poison input.  Run in this
 * process, it would crash this one too, and the next, until every shard
 * of the fleet is dead.  So it runs isolated: fork, run the function in
 * the child on its copy of the event, send the output back on a pipe as
 * JSON, _exit.  The parent reads until the child is done or the hard
 * limit passes (then SIGKILL), and reads the verdict from waitpid:
 *
 *   a line of output        ran: out is filled as if run here
 *   killed by a signal      crashed: the caller dead-letters the input,
 *                           naming the signal and the function
 *   past the hard limit     hung: killed, dead-lettered likewise
 *   anything else           failed: the caller tries again later
 *
 * Suspect inputs come in crowds (a shard that dies leaves everything it
 * held to be redelivered), so one child runs a run of them, one line of
 * output per input; when one crashes or hangs it, that one ends and the
 * rest get a new child: a fork per crash, not per input.
 *
 * A function is pure (no I/O, no threads), so running it in a child
 * changes nothing it can see: the child has the same memory, its own
 * copy.  After fork only the calling thread exists in the child; the
 * allocator (glibc's or jemalloc) is fork-safe through its own atfork
 * handlers, and the child calls nothing else of this process but the
 * function, the JSON writer and write(2).  The child resets the fatal
 * signals to their defaults first, so that a crash there is reported by
 * waitpid, not by the crash handler of this process (crash.c).
 *
 * Cost: a fork and a pipe per run of suspect inputs, paid only by inputs
 * delivered again, never on the normal path.
 */
#define _GNU_SOURCE /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pipeline.h"

static void put_str_field(lu_buf_t *b, const char *k, const char *v) {
  lu__buf_puts(b, ",\"");
  lu__buf_puts(b, k);
  lu__buf_puts(b, "\":");
  if (v) lu__buf_json_str(b, v, strlen(v));
  else lu__buf_puts(b, "null");
}

static uint64_t process_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Writes one job's output as a line of JSON to fd; 0 or -1. */
static int write_frame(int fd, size_t i, lu_status_t st, uint64_t cpu,
                       const lu_out_t *out) {
  lu_buf_t b = {0};
  char head[128];
  lu__fmt(head, sizeof head,
          "{\"job\":%zu,\"status\":%d,\"cpu\":%llu,\"overflow\":%d", i,
          (int)st, (unsigned long long)cpu, out->overflow);
  lu__buf_puts(&b, head);
  put_str_field(&b, "reason", out->reason);
  lu__buf_puts(&b, ",\"result\":");
  lu__buf_json_value(&b, out->result);
  lu__buf_puts(&b, ",\"emit\":[");
  for (size_t k = 0; k < out->nemit; k++) {
    lu__buf_puts(&b, k ? ",{" : "{");
    lu__buf_puts(&b, "\"x\":0");
    put_str_field(&b, "type", out->emit[k].type);
    put_str_field(&b, "subject", out->emit[k].subject);
    lu__buf_puts(&b, ",\"data\":");
    lu__buf_json_value(&b, out->emit[k].data);
    lu__buf_puts(&b, "}");
  }
  lu__buf_puts(&b, "]}\n"); /* JSON text holds no raw newline */
  int rc = b.oom ? -1 : 0;
  for (size_t at = 0; !rc && at < b.len;) {
    ssize_t w = write(fd, b.p + at, b.len - at);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) rc = -1;
    else at += (size_t)w;
  }
  lu__buf_free(&b);
  return rc;
}

/* The child: runs jobs[from..n) in order, a line of output each, exits. */
static void child(const lu_sbx_job_t *jobs, size_t from, size_t n,
                  lu_out_t *out, int fd) {
  static const int fatal[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT,
                              SIGTRAP, SIGSYS};
  for (size_t i = 0; i < sizeof fatal / sizeof *fatal; i++)
    signal(fatal[i], SIG_DFL);
  for (size_t i = from; i < n; i++) {
    lu__out_reset(out);
    uint64_t c0 = process_cpu_ns();
    lu_status_t st = jobs[i].fe->fn->impl(&jobs[i].ctx, jobs[i].data, out);
    uint64_t cpu = process_cpu_ns() - c0;
    if (write_frame(fd, i, st, cpu, out)) _exit(4);
  }
  _exit(0);
}

/* The child's output into out, as the function left it there.  0, or -1
 * when it is not what a child writes. */
static int read_output(const char *text, size_t len, lu_out_t *out,
                       size_t *job, lu_status_t *status, uint64_t *cpu) {
  cJSON *j = cJSON_ParseWithLength(text, len);
  const cJSON *jb = cJSON_GetObjectItemCaseSensitive(j, "job");
  if (!cJSON_IsNumber(jb) || jb->valuedouble < 0) {
    cJSON_Delete(j);
    return -1;
  }
  *job = (size_t)jb->valuedouble;
  lu__out_reset(out);
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "status");
  const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "cpu");
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "emit");
  if (!cJSON_IsNumber(s) || !cJSON_IsNumber(c) || !cJSON_IsArray(e)) {
    cJSON_Delete(j);
    return -1;
  }
  *status = (lu_status_t)s->valueint;
  *cpu = (uint64_t)c->valuedouble;
  const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "reason");
  if (cJSON_IsString(r)) lu__fmt(out->reason, sizeof out->reason, "%s",
                                 r->valuestring);
  const cJSON *ov = cJSON_GetObjectItemCaseSensitive(j, "overflow");
  out->overflow = cJSON_IsTrue(ov) || (cJSON_IsNumber(ov) && ov->valueint);
  cJSON *res = cJSON_DetachItemFromObjectCaseSensitive(j, "result");
  if (res && !cJSON_IsNull(res)) lu_out_result(out, res);
  else cJSON_Delete(res);
  cJSON *it;
  cJSON_ArrayForEach(it, e) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(it, "type");
    const cJSON *sj = cJSON_GetObjectItemCaseSensitive(it, "subject");
    cJSON *d = cJSON_DetachItemFromObjectCaseSensitive(it, "data");
    if (d && cJSON_IsNull(d)) {
      cJSON_Delete(d);
      d = NULL;
    }
    lu_out_emit(out, cJSON_IsString(t) ? t->valuestring : "",
                cJSON_IsString(sj) ? sj->valuestring : NULL, d);
  }
  cJSON_Delete(j);
  return 0;
}

/* What a child may take to start, beyond its first job's hard limit. */
#define CHILD_START_NS (2000ull * NS_PER_MS)

/* One child for jobs[from..n): calls cb for each job whose output came,
 * in order, and returns how far it got.  *verdict says how the child
 * ended: LU_SANDBOX_RAN (all done), CRASHED (*sig) or HUNG at job
 * `returned`, or FAILED (no fork, unreadable output). */
static size_t one_child(const lu_sbx_job_t *jobs, size_t from, size_t n,
                        lu_out_t *out, lu_sbx_result_fn cb, void *ud,
                        int *verdict, int *sig) {
  *sig = 0;
  int p[2];
  if (pipe2(p, O_CLOEXEC)) {
    *verdict = LU_SANDBOX_FAILED;
    return from;
  }
  pid_t pid = fork();
  if (pid < 0) {
    close(p[0]);
    close(p[1]);
    *verdict = LU_SANDBOX_FAILED;
    return from;
  }
  if (pid == 0) {
    close(p[0]);
    child(jobs, from, n, out, p[1]);
  }
  close(p[1]);
  lu_buf_t b = {0};
  size_t next = from;   /* the job whose output comes next */
  uint64_t t_job = lu__now_ns();
  int hung = 0, eof = 0, bad = 0;
  while (!eof && !bad && next < n) {
    /* The first job's clock starts at the fork: a child's start (copying
     * a large process's page tables, a sanitizer's set-up) is not the
     * function's time. */
    uint64_t now = lu__now_ns(),
             hard_ns = jobs[next].hard_ns + (next == from ? CHILD_START_NS : 0);
    if (now - t_job >= hard_ns) {
      hung = 1;
      break;
    }
    struct pollfd pf = {.fd = p[0], .events = POLLIN};
    uint64_t wait_ms = (hard_ns - (now - t_job)) / NS_PER_MS + 1;
    int k = poll(&pf, 1, wait_ms > 1000 ? 1000 : (int)wait_ms);
    if (k < 0 && errno != EINTR) break;
    if (k <= 0) continue;
    char chunk[16384];
    ssize_t r = read(p[0], chunk, sizeof chunk);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      eof = 1;
      break;
    }
    lu__buf_put(&b, chunk, (size_t)r);
    if (b.oom) break;
    /* Every complete line is one job's output. */
    char *line = b.p, *nl;
    while (!bad && (nl = memchr(line, '\n', b.len - (size_t)(line - b.p)))) {
      size_t job;
      lu_status_t st = LU_FAIL;
      uint64_t cpu = 0;
      uint64_t t1 = lu__now_ns();
      if (read_output(line, (size_t)(nl - line), out, &job, &st, &cpu) ||
          job != next) {
        bad = 1;
        break;
      }
      cb(ud, job, LU_SANDBOX_RAN, st, cpu, t1 - t_job, 0);
      next++;
      t_job = t1;
      line = nl + 1;
    }
    size_t left = b.len - (size_t)(line - b.p);
    memmove(b.p, line, left);
    b.len = left;
  }
  close(p[0]);
  if (hung || bad || next < n) kill(pid, SIGKILL);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  lu__buf_free(&b);
  if (next == n) *verdict = LU_SANDBOX_RAN;
  else if (hung) *verdict = LU_SANDBOX_HUNG;
  else if (!bad && WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL) {
    *sig = WTERMSIG(st);
    *verdict = LU_SANDBOX_CRASHED;
  } else if (!bad && WIFSIGNALED(st)) {
    *sig = SIGKILL; /* killed from outside (the OOM killer, say) */
    *verdict = LU_SANDBOX_CRASHED;
  } else {
    *verdict = LU_SANDBOX_FAILED;
  }
  return next;
}

void lu__sandbox_run(const lu_sbx_job_t *jobs, size_t n, lu_out_t *out,
                     lu_sbx_result_fn cb, void *ud) {
  size_t from = 0;
  while (from < n) {
    int verdict, sig;
    size_t at = one_child(jobs, from, n, out, cb, ud, &verdict, &sig);
    if (verdict == LU_SANDBOX_RAN) return;
    if (verdict == LU_SANDBOX_FAILED) {
      /* No child, or one that made no sense: the rest try again later. */
      for (size_t i = at; i < n; i++)
        cb(ud, i, LU_SANDBOX_FAILED, LU_FAIL, 0, 0, 0);
      return;
    }
    /* Job `at` crashed or hung its child: it ends; the rest get a new
     * child (one crash costs one more fork, not one per job). */
    lu__out_reset(out);
    cb(ud, at, verdict, LU_FAIL, 0, 0, sig);
    from = at + 1;
  }
}
