// test.js - the client's protocol pieces against docs/protocol.md, with no
// server: the partition test vectors of v1 (subjects) and v2 (routing
// keys), the same ones lucent's C unit test asserts
// (tests/unit/test_partition.c), the partition count read from stream
// subjects, the binding's percent-encoding example, and the binary-mode
// mapping.
//
// RUN:
//   npm install && npm test          (or: node --test test.js)
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { fnv1a64, partition, partitionKey, partitionsOf, keyText, intakeSubject, percentEncode, encodeBinary, encodeStructured } = require("./lucent");

// docs/protocol.md, "Partitions": key, FNV-1a 64 (hex), partition of 16.
const VECTORS = [
  ["", "cbf29ce484222325", 5],
  ["a", "af63dc4c8601ec8c", 12],
  ["foobar", "85944171f73967e8", 8],
  ["order-1", "dee4809f34bee86d", 13],
  ["order-42", "7d1deb86a05662d4", 4],
  ["customer/c-0001", "9e9f1a500f3f8ecd", 13],
  ["café", "48e8823acfa40d89", 9],
  ["日本語", "ee9ee2b5c854ef87", 7],
  ["😀", "feff073875020288", 8],
  ["The quick brown fox jumps over the lazy dog", "f3f9b7f5e7e47110", 0],
  ["x".repeat(1000), "e1add1d93134d2c5", 5],
];

test("FNV-1a 64 and the partition: the test vectors", () => {
  for (const [key, hex, p] of VECTORS) {
    assert.equal(fnv1a64(key).toString(16).padStart(16, "0"), hex, `hash of ${JSON.stringify(key.slice(0, 20))}`);
    assert.equal(partition(key, 16), p, `partition of ${JSON.stringify(key.slice(0, 20))}`);
    assert.equal(partition(Buffer.from(key, "utf8"), 16), p); // bytes, not UTF-16 units
  }
});

test("without routes the key is the subject, else the id", () => {
  assert.equal(partitionKey({ id: "i", subject: "order-1" }), "order-1");
  assert.equal(partitionKey({ id: "order-42" }), "order-42");
  assert.equal(intakeSubject({ id: "i", subject: "order-1" }, 16), "lucent.intake.13");
  assert.equal(intakeSubject({ id: "order-42" }, 16), "lucent.intake.4");
  assert.equal(intakeSubject({ id: "i", subject: "order-1" }, 64), "lucent.intake.45");
  assert.throws(() => partition("a", 0), RangeError);
});

// docs/protocol.md 6.2, v2: a routes table, events, key, p (P = 16, 64).
const ROUTES = {
  version: 1,
  types: {
    OrderValidated: { strategy: "hash_based", key: "items.0.sku", function: "ReserveInventory" },
    Payment: { strategy: "sticky_session", key: "customer.id", function: "Pay" },
    OrderPlaced: { strategy: "round_robin", function: "V" },
  },
};
const V2 = [
  [{ id: "e-1", type: "OrderValidated", subject: "order-1", data: { items: [{ sku: "SKU-1" }] } }, "SKU-1", 12, 44],
  [{ id: "e-2", type: "Payment", subject: "order-1", data: { customer: { id: "c-0042" } } }, "c-0042", 3, 51],
  [{ id: "e-3", type: "Payment", data: { customer: { id: 42 } } }, "42", 3, 35],
  [{ id: "e-5", type: "Payment", data: { customer: { id: 2.5 } } }, "2.5", 12, 28],
  [{ id: "e-6", type: "Payment", data: { customer: { id: 1e21 } } }, "1e+21", 5, 21],
  [{ id: "e-7", type: "Payment", data: { customer: { id: 0.1 } } }, "0.10000000000000001", 9, 25],
  [{ id: "e-8", type: "Payment", data: { customer: { id: -0 } } }, "0", 15, 47],
  [{ id: "e-9", type: "Payment", data: { customer: { id: true } } }, "true", 5, 37],
  [{ id: "e-10", type: "Payment", data: { customer: { id: -7 } } }, "-7", 13, 29],
  [{ id: "e-11", type: "Payment", subject: "order-1", data: { customer: {} } }, "order-1", 13, 45],
  [{ id: "e-9", type: "Payment", data: { customer: { id: null } } }, "e-9", 10, 10],
  [{ id: "e-13", type: "OrderPlaced", subject: "order-1", data: { customer: { id: "c" } } }, "order-1", 13, 45],
  [{ id: "e-9", type: "Nope", data: { items: [{ sku: "SKU-1" }] } }, "e-9", 10, 10],
];

test("v2: the routing key of a keyed type, else the subject, else the id", () => {
  for (const [ev, key, p16, p64] of V2) {
    assert.equal(partitionKey(ev, ROUTES), key, ev.id);
    assert.equal(intakeSubject(ev, 16, ROUTES), `lucent.intake.${p16}`, ev.id);
    assert.equal(intakeSubject(ev, 64, ROUTES), `lucent.intake.${p64}`, ev.id);
  }
});

test("key text: numbers as lucent prints them", () => {
  assert.equal(keyText(1e18), "1000000000000000000");
  assert.equal(keyText(9.3e18), "9.3e+18"); // beyond int64: %.17g
  assert.equal(keyText(1.5e-5), "1.5e-05");
  assert.equal(keyText(1e-5), "1.0000000000000001e-05");
  assert.equal(keyText(123456789.123), "123456789.123");
  assert.equal(keyText(null), undefined);
  assert.equal(keyText({}), undefined);
});

test("the partition count comes from the stream's subjects", () => {
  assert.equal(partitionsOf(["lucent.intake.1", "lucent.intake.0"]), 2);
  assert.equal(partitionsOf(["lucent.intake.>"]), 16);
  assert.equal(partitionsOf(Array.from({ length: 64 }, (_, i) => `lucent.intake.${i}`)), 64);
  assert.throws(() => partitionsOf(["lucent.intake.0", "lucent.intake.2"]), /not lucent's intake/);
  assert.throws(() => partitionsOf(["lucent.intake.01"]), /not lucent's intake/);
  assert.throws(() => partitionsOf(["orders.>"]), /not lucent's intake/);
});

test("header values are percent-encoded as the NATS binding 3.1.3.2 says", () => {
  assert.equal(percentEncode("Euro € 😀"), "Euro%20%E2%82%AC%20%F0%9F%98%80"); // the binding's example
  assert.equal(percentEncode('100% "sure"'), "100%25%20%22sure%22");
  assert.equal(percentEncode("/shop/eu?x=1"), "/shop/eu?x=1");
});

test("binary mode: ce- headers, content type, data as payload", () => {
  const { headers, payload } = encodeBinary({
    specversion: "1.0", id: "o-1", type: "OrderPlaced", source: "/shop", subject: "order 1",
    tenantid: "acme", data: { orderId: "o-1", total: 12.5 },
  });
  assert.equal(headers.get("ce-specversion"), "1.0");
  assert.equal(headers.get("ce-id"), "o-1");
  assert.equal(headers.get("ce-subject"), "order%201");
  assert.equal(headers.get("ce-tenantid"), "acme");
  assert.equal(headers.get("ce-datacontenttype"), "application/json");
  assert.equal(headers.get("content-type"), "application/json");
  assert.equal(headers.get("ce-data"), "");
  assert.deepEqual(JSON.parse(payload.toString()), { orderId: "o-1", total: 12.5 });

  const text = encodeBinary({ id: "t", type: "T", source: "/s", datacontenttype: "text/plain", data: "héllo" });
  assert.equal(text.payload.toString("utf8"), "héllo");
  const bin = encodeBinary({ id: "b", type: "T", source: "/s", datacontenttype: "image/png", data: new Uint8Array([0x89, 0x50]) });
  assert.deepEqual([...bin.payload], [0x89, 0x50]);
  assert.equal(bin.headers.get("content-type"), "image/png");
});

test("invalid events are refused before they are sent (official SDK, strict)", () => {
  assert.throws(() => encodeStructured({ id: "1", type: "T", source: "/s", TenantID: "a" }), /invalid extension name/);
  assert.throws(() => encodeBinary({ id: "1", type: "T", source: "/s", "my-ext": "a" }), /invalid extension name/);
});
