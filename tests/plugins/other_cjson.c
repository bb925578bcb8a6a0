/* Test plugin: compiled against the next cJSON major version (as if its
 * cJSON headers said 2.x), so its cJSON trees are not the process's. */
#include <lucent/fn.h>
enum { real_cjson_major = CJSON_VERSION_MAJOR };
#undef CJSON_VERSION_MAJOR
#define CJSON_VERSION_MAJOR (real_cjson_major + 1)
LU_FUNCTION(Foreign, .events = "F") { return LU_OK; }
LU_PLUGIN()
