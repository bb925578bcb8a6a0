/*
 * test_nats_conn.c - lu__nats_connect against real nats-servers: plain,
 * user/password, token and TLS servers; wrong URLs and wrong credentials
 * fail fast with messages that name the server and the reason; a
 * connection survives a server restart.  Skips (exit 77) without
 * nats-server.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "nats_internal.h"
#include "nats_server.h"

/* Does the message contain needle?  Prints it when not. */
static int has(const char *msg, const char *needle) {
  if (strstr(msg, needle)) return 1;
  fprintf(stderr, "message '%s' lacks '%s'\n", msg, needle);
  return 0;
}

/* ThreadSanitizer: nats.c 3.4.1 reads a TLS connection (SSL_read on its
 * reader thread) while publishers write it (SSL_write under the
 * connection lock), and TSan flags the memory OpenSSL touches for both.
 * That is inside nats.c and OpenSSL, not lucent: ignore what the
 * interceptors see called from those two libraries. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void) {
  return "called_from_lib:libssl.so\n"
         "called_from_lib:libcrypto.so\n";
}

static uint64_t ms_since(uint64_t t0) { return (lu__now_ns() - t0) / 1000000; }

/* A round trip through the server: subscribe, publish, receive. */
static void roundtrip(natsConnection *nc) {
  natsSubscription *sub = NULL;
  natsMsg *m = NULL;
  assert_int_equal(natsConnection_SubscribeSync(&sub, nc, "lu.test.rt"),
                   NATS_OK);
  assert_int_equal(natsConnection_PublishString(nc, "lu.test.rt", "ping"),
                   NATS_OK);
  assert_int_equal(natsSubscription_NextMsg(&m, sub, 2000), NATS_OK);
  assert_string_equal(natsMsg_GetData(m), "ping");
  natsMsg_Destroy(m);
  natsSubscription_Destroy(sub);
}

static int connect_to(natsConnection **nc, const lu_nats_opts_t *o,
                      char *err, size_t cap) {
  err[0] = 0;
  int rc = lu__nats_connect(nc, o, err, cap);
  if (rc) assert_null(*nc);
  return rc;
}

static void test_connect_ok(void **state) {
  lu_test_nats_t *srv = *state;
  natsConnection *nc = NULL;
  char err[512];
  lu_nats_opts_t o = {.urls = srv->url};
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), 0);
  assert_string_equal(err, "");
  roundtrip(nc);
  natsConnection_Destroy(nc);

  /* Several URLs, the first one dead: the live one is used. */
  char urls[256];
  snprintf(urls, sizeof urls, "nats://127.0.0.1:1 , %s", srv->url);
  o.urls = urls;
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), 0);
  roundtrip(nc);
  natsConnection_Destroy(nc);

  /* A bulk connection (no SendAsap) works the same, if later. */
  o.bulk = 1;
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), 0);
  roundtrip(nc);
  natsConnection_Destroy(nc);
  o.bulk = 0;

  /* No scheme is fine too. */
  snprintf(urls, sizeof urls, "127.0.0.1:%d", srv->port);
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), 0);
  natsConnection_Destroy(nc);
}

static void test_wrong_url_fails_fast(void **state) {
  (void)state;
  natsConnection *nc = (natsConnection *)1;
  char err[512];
  lu_nats_opts_t o = {.urls = "nats://127.0.0.1:1"};
  uint64_t t0 = lu__now_ns();
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EIO);
  assert_true(ms_since(t0) < 1500);
  assert_true(has(err, "cannot connect to nats://127.0.0.1:1"));
  assert_true(has(err, "no server available"));
  assert_true(has(err, "connection refused"));

  /* Several dead URLs: each is named with its reason. */
  o.urls = "nats://127.0.0.1:1,nats://127.0.0.1:2";
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EIO);
  assert_true(has(err, "any of nats://127.0.0.1:1, nats://127.0.0.1:2"));
  assert_true(has(err, "nats://127.0.0.1:2: connection refused"));

  /* A host that does not resolve. */
  o.urls = "nats://no-such-host.invalid:4222";
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EIO);
  assert_true(has(err, "no-such-host.invalid"));

  /* A password in the URL never shows in messages. */
  o.urls = "nats://bob:s3cret@127.0.0.1:1";
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EIO);
  assert_null(strstr(err, "s3cret"));
  assert_true(has(err, "nats://bob:***@127.0.0.1:1"));
}

static void test_bad_options(void **state) {
  (void)state;
  natsConnection *nc = NULL;
  char err[512];
  lu_nats_opts_t o = {.urls = ""};
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EINVAL);
  assert_true(has(err, "URL"));
  o.urls = " , ";
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EINVAL);
  o.urls = "http://127.0.0.1:4222";
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EINVAL);
  assert_true(has(err, "scheme 'http'"));
  o.urls = "nats://127.0.0.1:99999";
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EINVAL);
  assert_true(has(err, "port"));
  o.urls = "nats://:4222";
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EINVAL);

  o = (lu_nats_opts_t){.urls = "nats://127.0.0.1:1", .password = "x"};
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EINVAL);
  o = (lu_nats_opts_t){.urls = "nats://127.0.0.1:1", .user = "u",
                       .token = "t"};
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EINVAL);
  o = (lu_nats_opts_t){.urls = "nats://127.0.0.1:1",
                       .creds = "/nonexistent/x.creds"};
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EINVAL);
  assert_true(has(err, "/nonexistent/x.creds"));
  o = (lu_nats_opts_t){.urls = "nats://127.0.0.1:1", .tls_cert = "/x.pem"};
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EINVAL);
  o = (lu_nats_opts_t){.urls = "nats://127.0.0.1:1",
                       .tls_ca = "/nonexistent/ca.pem"};
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EINVAL);
  assert_true(has(err, "/nonexistent/ca.pem"));
  assert_int_equal(lu__nats_connect(NULL, &o, err, sizeof err), LU_EINVAL);
  assert_int_equal(lu__nats_connect(&nc, NULL, err, sizeof err), LU_EINVAL);
}

static void test_user_password(void **state) {
  (void)state;
  static const char *const args[] = {"--user", "a", "--pass", "b", NULL};
  lu_test_nats_t srv;
  assert_int_equal(lu_test_nats_start(&srv, args), 0);
  natsConnection *nc = NULL;
  char err[512];
  lu_nats_opts_t o = {.urls = srv.url, .user = "a", .password = "b"};
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), 0);
  roundtrip(nc);
  natsConnection_Destroy(nc);

  o.password = "wrong";
  uint64_t t0 = lu__now_ns();
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EPROTO);
  assert_true(ms_since(t0) < 1500);
  assert_true(has(err, "authorization violation"));
  assert_true(has(err, srv.url));
  assert_null(strstr(err, "wrong")); /* no password in messages */

  o = (lu_nats_opts_t){.urls = srv.url}; /* no credentials at all */
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EPROTO);
  assert_true(has(err, "authorization"));
  lu_test_nats_stop(&srv);
}

static void test_token(void **state) {
  (void)state;
  static const char *const args[] = {"--auth", "s3cr3t-token", NULL};
  lu_test_nats_t srv;
  assert_int_equal(lu_test_nats_start(&srv, args), 0);
  natsConnection *nc = NULL;
  char err[512];
  lu_nats_opts_t o = {.urls = srv.url, .token = "s3cr3t-token"};
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), 0);
  roundtrip(nc);
  natsConnection_Destroy(nc);
  o.token = "nope";
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EPROTO);
  assert_true(has(err, "authorization"));
  lu_test_nats_stop(&srv);
}

/* ---- TLS -------------------------------------------------------------- */

/* A throwaway CA and a server certificate for IP 127.0.0.1 and the DNS
 * name lucent-test.invalid (deliberately not "localhost"). */
static int make_certs(const char *dir) {
  char cmd[PATH_MAX + 1024];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && "
           "printf 'subjectAltName=IP:127.0.0.1,DNS:lucent-test.invalid\\n' "
           "> san.ext && "
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
           " -nodes -keyout ca.key -out ca.pem -days 2"
           " -subj /CN=lucent-test-ca && "
           "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
           " -nodes -keyout server.key -out server.csr"
           " -subj /CN=lucent-test.invalid && "
           "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key"
           " -CAcreateserial -out server.pem -days 2 -extfile san.ext && "
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
           " -nodes -keyout other.key -out other.pem -days 2"
           " -subj /CN=other-ca",
           dir);
  char full[sizeof cmd + 64];
  snprintf(full, sizeof full, "( %s ) >/dev/null 2>&1", cmd);
  return system(full);
}

static void test_tls(void **state) {
  (void)state;
  if (system("command -v openssl >/dev/null 2>&1") != 0) skip();
  char dir[PATH_MAX];
  const char *tmp = getenv("LUCENT_TEST_TMP");
  snprintf(dir, sizeof dir, "%s/lu_tls_XXXXXX", tmp && *tmp ? tmp : "/tmp");
  assert_non_null(mkdtemp(dir));
  assert_int_equal(make_certs(dir), 0);
  char cert[PATH_MAX + 16], key[PATH_MAX + 16], ca[PATH_MAX + 16],
      other[PATH_MAX + 16];
  assert_true(strlen(dir) < PATH_MAX - 16);
  snprintf(cert, sizeof cert, "%s/server.pem", dir);
  snprintf(key, sizeof key, "%s/server.key", dir);
  snprintf(ca, sizeof ca, "%s/ca.pem", dir);
  snprintf(other, sizeof other, "%s/other.pem", dir);
  const char *args[] = {"--tls", "--tlscert", cert, "--tlskey", key, NULL};
  lu_test_nats_t srv;
  assert_int_equal(lu_test_nats_start(&srv, args), 0);

  natsConnection *nc = NULL;
  char err[1024];
  lu_nats_opts_t o = {.urls = srv.url, .tls_ca = ca};
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), 0);
  roundtrip(nc);
  natsConnection_Destroy(nc);

  /* A tls:// URL turns TLS on; the CA still has to be trusted. */
  char url[128];
  snprintf(url, sizeof url, "tls://127.0.0.1:%d", srv.port);
  o = (lu_nats_opts_t){.urls = url, .tls_ca = ca};
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), 0);
  natsConnection_Destroy(nc);

  /* Without our CA (system CAs only): the certificate is refused. */
  o = (lu_nats_opts_t){.urls = url};
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EPROTO);
  assert_true(has(err, "TLS"));
  /* With another CA: refused too. */
  o = (lu_nats_opts_t){.urls = srv.url, .tls_ca = other};
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EPROTO);
  /* Without TLS options: nats.c follows the server into TLS, and cannot
   * verify it without the CA; the message says what to give. */
  o = (lu_nats_opts_t){.urls = srv.url};
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EPROTO);
  assert_true(has(err, "TLS"));
  assert_true(has(err, "--tls-ca"));
  /* A DNS name the certificate does not carry: the host name check
   * refuses it ("localhost" is not lucent-test.invalid). */
  snprintf(url, sizeof url, "nats://localhost:%d", srv.port);
  o = (lu_nats_opts_t){.urls = url, .tls_ca = ca};
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EPROTO);
  assert_true(has(err, "hostname mismatch"));
  lu_test_nats_stop(&srv);

  /* A plain server asked for TLS. */
  assert_int_equal(lu_test_nats_start(&srv, NULL), 0);
  o = (lu_nats_opts_t){.urls = srv.url, .tls_ca = ca};
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), LU_EPROTO);
  lu_test_nats_stop(&srv);

  char rm[PATH_MAX + 16];
  snprintf(rm, sizeof rm, "rm -rf '%s'", dir);
  assert_int_equal(system(rm), 0);
}

/* ---- reconnect -------------------------------------------------------- */

/* A whole file's text (NUL-terminated), or NULL. */
static char *slurp(int fd) {
  static char buf[1 << 16];
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  if (n < 0) return NULL;
  buf[n] = 0;
  return buf;
}

/* The connection survives a restart, and says so through the logger (JSON
 * records), never on stderr: a library writes no stray lines. */
static void test_survives_restart(void **state) {
  (void)state;
  lu_test_nats_t srv;
  assert_int_equal(lu_test_nats_start(&srv, NULL), 0);
  FILE *logf = tmpfile(), *errf = tmpfile();
  assert_non_null(logf);
  assert_non_null(errf);
  lu_log_set_fd(fileno(logf));
  lu_log_set_format(LU_LOG_FORMAT_JSON);
  fflush(stderr);
  int saved = dup(2);
  assert_true(saved >= 0);
  assert_int_equal(dup2(fileno(errf), 2), 2);
  natsConnection *nc = NULL;
  char err[512];
  lu_nats_opts_t o = {.urls = srv.url, .reconnect_wait_ms = 50};
  assert_int_equal(connect_to(&nc, &o, err, sizeof err), 0);
  roundtrip(nc);
  assert_int_equal(lu_test_nats_restart(&srv, 300), 0);
  /* Back within a few reconnect rounds (50 ms doubling, capped 4 s), and
   * the reconnect logged (its callback runs on nats.c's thread). */
  int ok = 0;
  for (int i = 0; i < 100 && !ok; i++) {
    const char *t = slurp(fileno(logf));
    ok = natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED && t &&
         strstr(t, "\"msg\":\"nats: reconnected\"");
    if (!ok) lu_test_nats_sleep_ms(100);
  }
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  lu_log_set_fd(2);
  assert_true(ok);
  roundtrip(nc);
  natsConnection_Destroy(nc);
  const char *logs = slurp(fileno(logf));
  assert_non_null(logs);
  assert_true(has(logs, "\"msg\":\"nats: connection lost; reconnecting\""));
  /* One JSON object per line. */
  for (const char *l = logs; *l;) {
    const char *e = strchr(l, '\n');
    assert_non_null(e);
    cJSON *j = cJSON_ParseWithLength(l, (size_t)(e - l));
    if (!cJSON_IsObject(j)) fail_msg("not a JSON record: %.*s", (int)(e - l), l);
    cJSON_Delete(j);
    l = e + 1;
  }
  const char *stray = slurp(fileno(errf));
  assert_non_null(stray);
  if (strstr(stray, "lucent")) fail_msg("stray stderr output: %s", stray);
  fclose(logf);
  fclose(errf);
  lu_test_nats_stop(&srv);
}

static void test_reason(void **state) {
  (void)state;
  char buf[256];
  lu__nats_reason(NATS_TIMEOUT, buf, sizeof buf);
  assert_true(has(buf, "nats: "));
  assert_true(has(buf, "Timeout"));
}

static int setup(void **state) {
  static lu_test_nats_t srv;
  if (lu_test_nats_start(&srv, NULL) != 0) return -1;
  *state = &srv;
  return 0;
}

static int teardown(void **state) {
  lu_test_nats_stop(*state);
  return 0;
}

/* Messages released from several threads at once all get destroyed, once
 * (ASan: no overflow of the holder, no leak, no double free). */
enum { REL_THREADS = 4, REL_MSGS = 20000 };
static void *release_many(void *arg) {
  (void)arg;
  for (int i = 0; i < REL_MSGS; i++) {
    natsMsg *m = NULL;
    assert_int_equal(natsMsg_Create(&m, "t.release", NULL, "x", 1), NATS_OK);
    lu__nats_msg_release(m);
  }
  return NULL;
}

static void test_msg_release_threads(void **state) {
  (void)state;
  pthread_t t[REL_THREADS];
  for (int i = 0; i < REL_THREADS; i++)
    assert_int_equal(pthread_create(&t[i], NULL, release_many, NULL), 0);
  for (int i = 0; i < REL_THREADS; i++) pthread_join(t[i], NULL);
  lu__nats_msg_release(NULL); /* ignored */
  natsMsg *m = NULL;
  assert_int_equal(natsMsg_Create(&m, "t.release", NULL, "y", 1), NATS_OK);
  lu__nats_msg_release(m); /* held, not yet destroyed: */
  lu__nats_msg_release_all(); /* now it is (LeakSanitizer would say) */
  lu__nats_msg_release_all(); /* and nothing twice */
}

int main(void) {
  LU_TEST_NATS_REQUIRE();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_connect_ok),
      cmocka_unit_test(test_wrong_url_fails_fast),
      cmocka_unit_test(test_bad_options),
      cmocka_unit_test(test_user_password),
      cmocka_unit_test(test_token),
      cmocka_unit_test(test_tls),
      cmocka_unit_test(test_survives_restart),
      cmocka_unit_test(test_reason),
      cmocka_unit_test(test_msg_release_threads),
  };
  int rc = cmocka_run_group_tests(tests, setup, teardown);
  nats_Close();
  return rc;
}
