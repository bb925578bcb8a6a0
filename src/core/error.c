/* error.c - names and messages of the LU_E* codes (one X-macro list). */
#include "lucent/error.h"

const char *lu_err_name(int err) {
  switch (err) {
    case 0: return "LU_OK";
#define XX(name, value, msg) \
    case LU_##name: return "LU_" #name;
    LU_ERRNO_MAP(XX)
#undef XX
    default: return "LU_UNKNOWN";
  }
}

const char *lu_strerror(int err) {
  switch (err) {
    case 0: return "success";
#define XX(name, value, msg) \
    case LU_##name: return msg;
    LU_ERRNO_MAP(XX)
#undef XX
    default: return "unknown error";
  }
}
