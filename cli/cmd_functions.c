/*
 * cmd_functions.c - `lucent functions --plugin PATH [--json]`: the registry
 * as the process sees it, or the load error naming the bad function.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lucent/lucent.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: lucent functions --plugin PATH [--plugin PATH ...] [--json]\n"
          "  Lists every registered function: event types, sharding strategy,\n"
          "  resources.  Bad metadata fails here, naming the function.\n");
}

int cmd_functions(int argc, char **argv) {
  static const struct option opts[] = {{"plugin", required_argument, 0, 'p'},
                                       {"json", no_argument, 0, 'j'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  lu_registry_t *reg = NULL;
  int json = 0, nplug = 0, c, rc = 0;
  if (lu_registry_new(&reg)) return 1;
  optind = 1;
  while ((c = cli_getopt(argc, argv, "p:jh", opts)) != -1) {
    switch (c) {
      case 'p':
        nplug++;
        if (lu_registry_load_plugin(reg, optarg)) {
          cli_error("%s", lu_registry_errmsg(reg));
          lu_registry_free(reg);
          return 1;
        }
        break;
      case 'j': json = 1; break;
      case 'h': usage(stdout); lu_registry_free(reg); return 0;
      default: usage(stderr); lu_registry_free(reg); return 2;
    }
  }
  if (!nplug || optind < argc) {
    if (!nplug) cli_error("--plugin is required");
    else cli_error("unexpected argument '%s'", argv[optind]);
    usage(stderr);
    lu_registry_free(reg);
    return 2;
  }
  char *js = lu_registry_json(reg);
  if (!js) {
    cli_error("out of memory");
    lu_registry_free(reg);
    return 1;
  }
  if (json) {
    puts(js);
  } else {
    /* The text view reads the same JSON, so both views cannot disagree. */
    cJSON *arr = cJSON_Parse(js);
    printf("%-22s %-30s %-28s %5s %5s %4s %7s %7s\n", "FUNCTION", "EVENTS",
           "STRATEGY", "CPU", "MEM", "PRIO", "TIMEOUT", "RETRIES");
    const cJSON *f;
    cJSON_ArrayForEach(f, arr) {
      char events[256] = "", strat[128];
      const cJSON *t;
      cJSON_ArrayForEach(t, cJSON_GetObjectItem(f, "events")) {
        if (events[0]) strncat(events, ",", sizeof events - strlen(events) - 1);
        strncat(events, t->valuestring, sizeof events - strlen(events) - 1);
      }
      const cJSON *st = cJSON_GetObjectItem(f, "strategy");
      const cJSON *field = cJSON_GetObjectItem(st, "field");
      snprintf(strat, sizeof strat, "%s%s%s%s",
               cJSON_GetObjectItem(st, "type")->valuestring,
               field ? "(" : "", field ? field->valuestring : "",
               field ? ")" : "");
      const cJSON *r = cJSON_GetObjectItem(f, "resources");
      printf("%-22s %-30s %-28s %5d %5d %4d %5dms %7d\n",
             cJSON_GetObjectItem(f, "name")->valuestring, events, strat,
             cJSON_GetObjectItem(r, "cpu_millis")->valueint,
             cJSON_GetObjectItem(r, "memory_mb")->valueint,
             cJSON_GetObjectItem(r, "priority")->valueint,
             cJSON_GetObjectItem(r, "timeout_ms")->valueint,
             cJSON_GetObjectItem(r, "max_retries")->valueint);
    }
    cJSON_Delete(arr);
  }
  free(js);
  lu_registry_free(reg);
  return rc;
}
