/*
 * test_abi.c - what a program compiled against one lucent relies on when
 * it runs with another: the version macros and lu_version().  Linked
 * with the shared library and its public headers only, as an embedder
 * is.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lucent/lucent.h"

static void test_version(void **state) {
  (void)state;
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", LU_VERSION_MAJOR, LU_VERSION_MINOR,
           LU_VERSION_PATCH);
  assert_string_equal(LU_VERSION, want);
  assert_string_equal(lu_version_string(), LU_VERSION);
  assert_int_equal(lu_version(), LU_VERSION_NUMBER);
  assert_int_equal(LU_VERSION_NUMBER, LU_VERSION_MAJOR * 1000000u +
                                          LU_VERSION_MINOR * 1000u +
                                          LU_VERSION_PATCH);
#if LU_VERSION_NUMBER < 2000
#error "LU_VERSION_NUMBER must be usable in #if"
#endif
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_version),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
