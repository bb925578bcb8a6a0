/*
 * version.c - the library's own version (lucent.h, lu_version): compiled
 * in, so a program can tell the library it runs with from the headers it
 * was built against.
 */
#include "lucent/lucent.h"

unsigned lu_version(void) { return LU_VERSION_NUMBER; }

const char *lu_version_string(void) { return LU_VERSION; }
