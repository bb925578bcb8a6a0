// test.js - the client's protocol pieces against docs/protocol.md, with no
// server: the partition test vectors (the same ones lucent's C unit test
// asserts: tests/unit/test_partition.c), the binding's percent-encoding
// example, and the binary-mode mapping.
//
// RUN:
//   npm install && npm test          (or: node --test test.js)
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { fnv1a64, partition, partitionKey, intakeSubject, percentEncode, encodeBinary, encodeStructured } = require("./lucent");

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
    assert.equal(partition(key), p, `partition of ${JSON.stringify(key.slice(0, 20))}`);
    assert.equal(partition(Buffer.from(key, "utf8")), p); // bytes, not UTF-16 units
  }
});

test("the key is the subject, else the id", () => {
  assert.equal(partitionKey({ id: "i", subject: "order-1" }), "order-1");
  assert.equal(partitionKey({ id: "order-42" }), "order-42");
  assert.equal(intakeSubject({ id: "i", subject: "order-1" }), "lucent.intake.13");
  assert.equal(intakeSubject({ id: "order-42" }), "lucent.intake.4");
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
