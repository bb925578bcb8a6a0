// publish.js - publishes two orders to a distributed lucent, the first in
// the structured content mode of the CloudEvents NATS binding (the JSON
// event as the payload), the second in binary mode (ce-* headers, the
// order as the payload).  Each goes to lucent.intake.<p>, p = FNV-1a 64 of
// its partition key mod the stream's partition count (16 by default), as
// docs/protocol.md says (OrderPlaced is round_robin: the key is the
// subject; a hash_based type's would be its routing key), and is
// acknowledged once
// JetStream has stored it (not yet processed: the outcomes land in the
// event store, stream LUCENT_EVENTS, shortly after).
//
// RUN:
//   nats-server -js -sd /tmp/js &
//   build/lucent serve --nats nats://127.0.0.1:4222 --shard a \
//       --plugin build/examples/liborders.so &
//   cd examples/clients/js && npm install
//   LUCENT_NATS_URL=nats://127.0.0.1:4222 node publish.js
//   build/lucent events --nats nats://127.0.0.1:4222 --correlation js-corr-1
//
// OUTPUT:
//   structured js-order-1 -> lucent.intake.4 (LUCENT_INTAKE seq 1)
//   binary     js-order-2 -> lucent.intake.13 (LUCENT_INTAKE seq 2)
//
// A second run prints "(duplicate)" after each line: JetStream dropped the
// message (Nats-Msg-Id = the event's source and id, within the stream's
// 2-minute window); after the window lucent runs the event again and its
// event store keeps one outcome (result ids are derived from the input's
// source and id, and each is stored once however late it comes).
"use strict";

const { Lucent } = require("./lucent");

function order(n) {
  return {
    specversion: "1.0",
    id: `js-order-${n}`,
    type: "OrderPlaced",
    source: "/examples/clients/js",
    subject: `js-order-subject-${n}`, // the partition key: one stream, one partition
    correlationid: `js-corr-${n}`,
    tenantid: "acme",
    data: {
      orderId: `js-o-${n}`,
      customer: { id: "cust-0042", tier: "gold" },
      items: [{ sku: "SKU-00007", qty: 2, price: 19.99 }],
      currency: "EUR",
    },
  };
}

async function main() {
  const lc = await Lucent.connect({ servers: process.env.LUCENT_NATS_URL || "nats://127.0.0.1:4222" });
  try {
    for (const [mode, ev] of [["structured", order(1)], ["binary", order(2)]]) {
      const r = mode === "binary" ? await lc.publishBinary(ev) : await lc.publishStructured(ev);
      console.log(`${mode.padEnd(10)} ${r.id} -> ${r.subject} (${r.stream} seq ${r.seq})${r.duplicate ? " (duplicate)" : ""}`);
    }
  } finally {
    await lc.close();
  }
}

main().catch((err) => {
  console.error(`publish.js: ${err.message}`);
  process.exit(1);
});
