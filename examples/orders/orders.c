/*
 * orders.c - the "orders" example domain, built as a lucent plugin.
 *
 * An online shop: a customer places an order, the order is validated, its
 * stock reserved, its fraud risk scored, its payment captured and the
 * customer notified.  Each step is a pure function; each emits the event
 * that triggers the next, so one OrderPlaced runs a chain five functions
 * deep:
 *
 *   OrderPlaced        -> ValidateOrder      (round_robin)
 *   OrderValidated     -> ReserveInventory   (hash_based on items.0.sku)
 *   InventoryReserved  -> ScoreFraudModel  | (lucent picks one of the two
 *                         ScoreFraudRules    per event: see below)
 *   FraudScored        -> ProcessPayment     (sticky_session on customer.id)
 *   PaymentCaptured    -> SendNotification   (round_robin)
 *
 * and, off the main chain:
 *
 *   CustomerRegistered -> SendNotification   (a welcome mail)
 *   CustomerUpdated    -> UpdateCustomerProfile (hash_based on customer.id)
 *
 * Every event of the chain carries the whole order forward, so each
 * function finds what it and its routing key need:
 *
 *   {"orderId": "o-1-17", "customer": {"id": "cust-0042", ...},
 *    "items": [{"sku": "SKU-00012", "qty": 2, "price": 19.99}, ...],
 *    "currency": "EUR", ...}
 *
 * to which ValidateOrder adds "total" and "itemCount", ReserveInventory
 * "reservationId", ScoreFraud* "score" and "method", ProcessPayment
 * "paymentId" and "capturedAt".
 *
 * The rules (fn.h): a function reads `ctx` and `data`, writes only through
 * `out`, and does no I/O, keeps no globals, reads no clock and draws no
 * random numbers -- lucent supplies lu_ctx_now_ms() and lu_ctx_new_id().
 * Because of that lucent may retry or replay any of them safely.
 *
 * Input:  orders_gen (gen.c) writes these events; sample.jsonl has 20.
 *
 * RUN: (the plugin is build/examples/liborders.so; built outside lucent's
 *      tree: examples/cmake/, or the README's "How to write a function")
 *   cmake --build build --target orders orders_gen lucent_cli
 *   build/lucent functions --plugin build/examples/liborders.so
 *   build/examples/orders_gen -n 1000 --bad 10 --seed 1 2> /dev/null |
 *     build/lucent run --plugin build/examples/liborders.so --shards 4 \
 *       --input - --no-progress 2> /dev/null
 *
 * OUTPUT: (columns shortened; the counts and timings vary from run to run)
 *   FUNCTION ... EVENTS ... STRATEGY ... CPU   MEM PRIO TIMEOUT RETRIES
 *   ProcessPayment ... FraudScored ... sticky_session(customer.id) ...
 *   ReserveInventory ... OrderValidated ... hash_based(items.0.sku) ...
 *   ScoreFraudModel ... InventoryReserved ... load_balanced ...
 *   ScoreFraudRules ... InventoryReserved ... hash_based(customer.id) ...
 *   SendNotification ... PaymentCaptured,CustomerRegistered round_robin ...
 *   UpdateCustomerProfile ... CustomerUpdated ... hash_based(customer.id) ...
 *   ValidateOrder ... OrderPlaced ... round_robin ...
 *   lucent run: 1000 events in ... on 4 shards, store :memory:
 *   outcomes: ... 8 rejected, ... = 1000 (all accounted for)
 *   ...
 *   per function (latency: inside the function; e2e: submit to stored):
 *   ...
 *     ScoreFraudModel ... closed
 *     ScoreFraudRules ... closed
 *   ...
 */
#include <stdint.h>
#include <string.h>

#include <lucent/fn.h>

/* ---- small helpers (pure, static: they are not functions lucent sees) -- */

/* A member of an object (NULL if absent or `obj` is not an object). */
static const cJSON *get(const cJSON *obj, const char *key) {
  return cJSON_GetObjectItemCaseSensitive(obj, key);
}

/* A string member, or NULL. */
static const char *get_str(const cJSON *obj, const char *key) {
  const cJSON *v = get(obj, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* data.customer.id, or NULL. */
static const char *customer_id(const cJSON *data) {
  return get_str(get(data, "customer"), "id");
}

/* Sets obj[key] = item, replacing an existing member rather than adding a
 * second one with the same name. */
static void put(cJSON *obj, const char *key, cJSON *item) {
  cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
  cJSON_AddItemToObject(obj, key, item);
}

/* Rounds a non-negative amount to `unit` (0.01 for cents). */
static double round_to(double v, double unit) {
  return (double)(int64_t)(v / unit + 0.5) * unit;
}

/* Sets the result and emits `type` with `next` as its data (both owned
 * here from now on).  A NULL tree means cJSON ran out of memory: that is
 * transient, so the call is retried. */
static lu_status_t finish(lu_out_t *out, cJSON *result, const char *type,
                          cJSON *next) {
  if (!result) {
    cJSON_Delete(next);
    return lu_out_fail(out, LU_RETRY, "out of memory");
  }
  lu_out_result(out, result);
  if (type && (!next || lu_out_emit(out, type, NULL, next) != 0))
    return lu_out_fail(out, LU_RETRY, "cannot emit %s", type);
  return LU_OK;
}

/* ---- the chain ------------------------------------------------------- */

LU_FUNCTION(ValidateOrder,
            .events = "OrderPlaced",
            LU_ROUND_ROBIN,
            .cpu_millis = 50, .memory_mb = 16, .priority = 8,
            .timeout_ms = 100,
            .doc = "checks an order's shape and prices it")
{
  const char *order_id = get_str(data, "orderId");
  const cJSON *items = get(data, "items");
  if (!order_id)
    return lu_out_fail(out, LU_FAIL, "orderId must be a string");
  if (!customer_id(data))
    return lu_out_fail(out, LU_FAIL, "customer.id must be a string");
  if (!cJSON_IsArray(items) || cJSON_GetArraySize(items) == 0)
    return lu_out_fail(out, LU_FAIL, "items must be a non-empty array");

  double total = 0;
  int n = 0;
  const cJSON *item;
  cJSON_ArrayForEach(item, items) {
    const cJSON *qty = get(item, "qty"), *price = get(item, "price");
    if (!get_str(item, "sku"))
      return lu_out_fail(out, LU_FAIL, "items[%d].sku must be a string", n);
    if (!cJSON_IsNumber(qty) || qty->valuedouble <= 0)
      return lu_out_fail(out, LU_FAIL, "items[%d].qty must be > 0", n);
    if (!cJSON_IsNumber(price) || price->valuedouble < 0)
      return lu_out_fail(out, LU_FAIL, "items[%d].price must be >= 0", n);
    total += qty->valuedouble * price->valuedouble;
    n++;
  }
  total = round_to(total, 0.01);

  cJSON *result = cJSON_CreateObject();
  cJSON_AddStringToObject(result, "orderId", order_id);
  cJSON_AddNumberToObject(result, "total", total);
  cJSON_AddNumberToObject(result, "itemCount", n);

  cJSON *next = cJSON_Duplicate(data, 1); /* the same order, priced */
  put(next, "total", cJSON_CreateNumber(total));
  put(next, "itemCount", cJSON_CreateNumber(n));
  return finish(out, result, "OrderValidated", next);
}

LU_FUNCTION(ReserveInventory,
            .events = "OrderValidated",
            LU_HASH_BASED("items.0.sku"), /* one shard owns a SKU's stock */
            .load_bound = 1.25,           /* ...unless a hot SKU swamps it */
            .cpu_millis = 100, .memory_mb = 64, .priority = 7,
            .timeout_ms = 200, .max_retries = 3, .retry_backoff_ms = 2,
            .doc = "reserves stock for every line of a validated order")
{
  const char *order_id = get_str(data, "orderId");
  const cJSON *items = get(data, "items");
  if (!order_id || !cJSON_IsArray(items))
    return lu_out_fail(out, LU_FAIL, "orderId and items are required");

  /* The stock service is "busy" on the first attempt for orders ending in
   * 7: a deterministic transient failure, so the retry path gets used. */
  size_t len = strlen(order_id);
  if (len > 0 && order_id[len - 1] == '7' && lu_ctx_attempt(ctx) == 1)
    return lu_out_fail(out, LU_RETRY, "stock service busy");

  char reservation[37];
  lu_ctx_new_id(ctx, 0, reservation);

  cJSON *result = cJSON_CreateObject();
  cJSON_AddStringToObject(result, "orderId", order_id);
  cJSON_AddStringToObject(result, "reservationId", reservation);
  cJSON_AddNumberToObject(result, "lines", cJSON_GetArraySize(items));

  cJSON *next = cJSON_Duplicate(data, 1);
  put(next, "reservationId", cJSON_CreateString(reservation));
  return finish(out, result, "InventoryReserved", next);
}

/* Two implementations of one step.  lucent scores both for every event
 * on the shard it landed on (README, "Selection") and runs the better fit:
 *
 *   ScoreFraudModel  the better score: priority 9, but 6x the cpu and 16x
 *                    the memory of the rules.  load_balanced: it fits
 *                    any shard equally (affinity 1 everywhere).  Having
 *                    the higher priority, it routes InventoryReserved:
 *                    the event lands on the less loaded of two shards.
 *   ScoreFraudRules  cheap, priority 6, and hash_based on customer.id: it
 *                    belongs on its customer's shard (affinity 1 there,
 *                    0 on any other).
 *
 * With the default weights (0.3 load, 0.25 resources, 0.25 priority, 0.2
 * affinity) on a shard of 1000 millicores and 1024 MB:
 *
 *                            load  resources  priority  affinity  total
 *   rules, customer's shard  1.0   0.900      0.556     1         0.864
 *   model                    1.0   0.400      0.889     1         0.822
 *   rules, another shard     1.0   0.900      0.556     0         0.664
 *
 * so the rules score the events that land on their customer's shard
 * (about 1 in n with n shards, every one with a single shard) and the
 * model all the others.  The load sub-score shifts the balance at run
 * time: a scorer whose typical run nears its deadline loses.  On shards
 * under 600 millicores (--shard-cpu) the model does not fit and the rules
 * score everything.  `lucent run --explain` prints every decision. */

/* Emits FraudScored: the order plus its score and how it was computed. */
static lu_status_t scored(lu_out_t *out, const cJSON *data, double score,
                          const char *method) {
  score = round_to(score > 1 ? 1 : score, 0.001);
  cJSON *result = cJSON_CreateObject();
  cJSON_AddStringToObject(result, "orderId", get_str(data, "orderId"));
  cJSON_AddNumberToObject(result, "score", score);
  cJSON_AddStringToObject(result, "method", method);

  cJSON *next = cJSON_Duplicate(data, 1);
  put(next, "score", cJSON_CreateNumber(score));
  put(next, "method", cJSON_CreateString(method));
  return finish(out, result, "FraudScored", next);
}

/* Sums the units of an order's items (qty was validated upstream). */
static double units(const cJSON *items) {
  double u = 0;
  const cJSON *item;
  cJSON_ArrayForEach(item, items) u += cJSON_GetNumberValue(get(item, "qty"));
  return u;
}

LU_FUNCTION(ScoreFraudRules,
            .events = "InventoryReserved",
            LU_HASH_BASED("customer.id"),
            .cpu_millis = 100, .memory_mb = 32, .priority = 6,
            .timeout_ms = 50,
            .doc = "fraud score from two fixed rules (cheap)")
{
  const cJSON *total = get(data, "total");
  if (!get_str(data, "orderId") || !cJSON_IsNumber(total))
    return lu_out_fail(out, LU_FAIL, "orderId and total are required");

  /* Rule 1: risk grows with the amount.  Rule 2: bulk orders are risky. */
  double score = 0.1 + total->valuedouble / 4000.0;
  if (units(get(data, "items")) >= 20) score += 0.2;
  return scored(out, data, score, "rules");
}

LU_FUNCTION(ScoreFraudModel,
            .events = "InventoryReserved",
            LU_LOAD_BALANCED,
            .cpu_millis = 600, .memory_mb = 512, .priority = 9,
            .timeout_ms = 250,
            .doc = "fraud score from a small risk model (better, costly)")
{
  const cJSON *total = get(data, "total");
  if (!get_str(data, "orderId") || !cJSON_IsNumber(total))
    return lu_out_fail(out, LU_FAIL, "orderId and total are required");

  /* A toy model: x weighs the amount and the number of units; the score
   * x^2 / (1 + x^2) rises smoothly from 0 towards 1. */
  double x = total->valuedouble / 1500.0 + units(get(data, "items")) / 40.0;
  return scored(out, data, x * x / (1 + x * x), "model");
}

LU_FUNCTION(ProcessPayment,
            .events = "FraudScored",
            LU_STICKY_SESSION("customer.id", 60000), /* one customer's
                                                        payments in order */
            .cpu_millis = 150, .memory_mb = 64, .priority = 8,
            .timeout_ms = 500,
            .doc = "captures the payment of a scored order")
{
  const char *order_id = get_str(data, "orderId");
  const cJSON *total = get(data, "total"), *score = get(data, "score");
  if (!order_id || !cJSON_IsNumber(total) || !cJSON_IsNumber(score))
    return lu_out_fail(out, LU_FAIL, "orderId, total and score are required");
  if (score->valuedouble > 0.9)
    return lu_out_fail(out, LU_FAIL, "payment declined: fraud score %.3f",
                       score->valuedouble);

  char payment[37];
  lu_ctx_new_id(ctx, 0, payment);

  cJSON *result = cJSON_CreateObject();
  cJSON_AddStringToObject(result, "orderId", order_id);
  cJSON_AddStringToObject(result, "paymentId", payment);
  cJSON_AddNumberToObject(result, "amount", total->valuedouble);

  cJSON *next = cJSON_Duplicate(data, 1);
  put(next, "paymentId", cJSON_CreateString(payment));
  put(next, "capturedAt", cJSON_CreateNumber((double)lu_ctx_now_ms(ctx)));
  return finish(out, result, "PaymentCaptured", next);
}

LU_FUNCTION(SendNotification,
            .events = "PaymentCaptured CustomerRegistered",
            LU_ROUND_ROBIN,
            .cpu_millis = 20, .memory_mb = 8, .priority = 3,
            .doc = "composes a receipt or a welcome mail for a mailer to send")
{
  const char *to = customer_id(data);
  if (!to) return lu_out_fail(out, LU_FAIL, "customer.id must be a string");

  const char *type = lu_ctx_type(ctx);
  int welcome = type && strcmp(type, "CustomerRegistered") == 0;

  cJSON *result = cJSON_CreateObject();
  cJSON_AddStringToObject(result, "channel", "email");
  cJSON_AddStringToObject(result, "to", to);
  cJSON_AddStringToObject(result, "template", welcome ? "welcome" : "receipt");
  if (!welcome && get_str(data, "orderId"))
    cJSON_AddStringToObject(result, "orderId", get_str(data, "orderId"));
  return finish(out, result, NULL, NULL);
}

/* ---- off the chain ------------------------------------------------------ */

LU_FUNCTION(UpdateCustomerProfile,
            .events = "CustomerUpdated",
            LU_HASH_BASED("customer.id"), /* one shard owns a profile */
            .cpu_millis = 50, .memory_mb = 32, .priority = 5,
            .doc = "applies a change to a customer's profile")
{
  const cJSON *customer = get(data, "customer");
  const char *id = get_str(customer, "id");
  if (!id) return lu_out_fail(out, LU_FAIL, "customer.id must be a string");

  /* The result lists the fields that change; "id" is the key, not one. */
  const cJSON *field;
  int changes = 0;
  cJSON_ArrayForEach(field, customer) {
    if (strcmp(field->string, "id") != 0) changes++;
  }
  if (changes == 0)
    return lu_out_fail(out, LU_FAIL, "customer %s: nothing to update", id);

  cJSON *result = cJSON_CreateObject();
  cJSON_AddStringToObject(result, "customerId", id);
  cJSON *fields = cJSON_AddArrayToObject(result, "updated");
  cJSON_ArrayForEach(field, customer) {
    if (strcmp(field->string, "id") != 0)
      cJSON_AddItemToArray(fields, cJSON_CreateString(field->string));
  }
  return finish(out, result, NULL, NULL);
}

LU_PLUGIN()
