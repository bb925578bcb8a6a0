/* Test plugin: what LU_PLUGIN() of lucent 0.1 (plugin ABI 1) exported. */
#include <lucent/fn.h>
LU_FUNCTION(Ancient, .events = "A") { return LU_OK; }
__attribute__((visibility("default"))) size_t lu_plugin_functions(
    const lu_fn_t *const **out, unsigned *abi);
__attribute__((visibility("default"))) size_t lu_plugin_functions(
    const lu_fn_t *const **out, unsigned *abi) {
  *abi = 1;
  return lu_fns_here(out);
}
