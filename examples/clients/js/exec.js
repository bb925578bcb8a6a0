// exec.js - runs functions through lucent's request/reply (lucent.exec):
// the shard that runs the event replies once its outcome is stored.  The
// same request in both content modes gets the same reply format; a type
// no function handles gets success:false and the reason.
//
// RUN:
//   (a nats-server and a `lucent serve` with the orders plugin, as in
//   publish.js)
//   LUCENT_NATS_URL=nats://127.0.0.1:4222 node exec.js
//
// OUTPUT:
//   structured UpdateCustomerProfile on a: {"customerId":"cust-0042","updated":["email"]}
//   binary     UpdateCustomerProfile on a: {"customerId":"cust-0042","updated":["email"]}
//   binary     Nope: DEAD_LETTERED: no function handles event type 'Nope'
"use strict";

const { Lucent, LucentError } = require("./lucent");

function customerUpdated(n) {
  return {
    id: `js-exec-${n}-${Date.now()}`, // exec is not deduplicated: a fresh id each run
    type: "CustomerUpdated",
    source: "/examples/clients/js",
    data: { customer: { id: "cust-0042", email: `c42+${n}@example.com` } },
  };
}

async function main() {
  const lc = await Lucent.connect({ servers: process.env.LUCENT_NATS_URL || "nats://127.0.0.1:4222" });
  try {
    for (const [mode, binary] of [["structured", false], ["binary", true]]) {
      const r = await lc.exec(customerUpdated(binary ? 2 : 1), { binary, timeout: 5000 });
      console.log(`${mode.padEnd(10)} ${r.function} on ${r.shard}: ${JSON.stringify(r.result)}`);
    }
    try {
      await lc.exec({ id: `js-nope-${Date.now()}`, type: "Nope", source: "/examples/clients/js" }, { binary: true });
    } catch (err) {
      if (!(err instanceof LucentError)) throw err;
      console.log(`${"binary".padEnd(10)} Nope: ${err.code}: ${err.message}`);
    }
  } finally {
    await lc.close();
  }
}

main().catch((err) => {
  console.error(`exec.js: ${err.message}`);
  process.exit(1);
});
