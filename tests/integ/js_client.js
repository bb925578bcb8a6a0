// js_client.js - drives the JavaScript client (examples/clients/js/lucent.js)
// for test_js_client.sh; every answer is JSON Lines on stdout.
//
//   node js_client.js partitions FILE     per line of FILE (JSON events):
//                                         {"line","partition","subject"}, by
//                                         subject, 16 partitions (no server)
//   node js_client.js partitions-live FILE
//                                         the same with the server's
//                                         partition count and routes table
//   node js_client.js publish FILE        publishes every event of FILE, odd
//                                         lines structured, even lines binary:
//                                         {"line","id","mode","subject","seq"}
//   node js_client.js exec FILE           exec of every event of FILE, in both
//                                         modes: {"line","mode","reply"|"error"}
//   node js_client.js pretty              a pretty-printed (multi-line)
//                                         structured event of a type nobody
//                                         handles, published (id js-pretty-1)
//                                         and exec'd (js-pretty-2): {"what",
//                                         "ack"|"reply"}
//   node js_client.js bad                 binary-mode messages lucent must
//                                         reject: one intake message without
//                                         ce-id, one exec request without
//                                         ce-type: {"what","ack"|"reply"}
//
// The NATS URL is $LUCENT_NATS_URL.  Modules come from NODE_PATH (the
// test installs the client's package.json outside the source tree).
"use strict";

const fs = require("fs");
const path = require("path");
const { headers } = require("nats");

const client = require(path.join(process.env.LUCENT_SRC || path.join(__dirname, "../.."), "examples/clients/js/lucent.js"));

function events(file) {
  return fs
    .readFileSync(file, "utf8")
    .split("\n")
    .map((l, i) => [i + 1, l])
    .filter(([, l]) => l.trim() !== "")
    .map(([n, l]) => [n, JSON.parse(l)]);
}

const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

async function main() {
  const [cmd, file] = process.argv.slice(2);
  if (cmd === "partitions") {
    for (const [line, ev] of events(file)) {
      out({ line, partition: client.partition(client.partitionKey(ev), 16), subject: client.intakeSubject(ev, 16) });
    }
    return;
  }
  const lc = await client.Lucent.connect({ servers: process.env.LUCENT_NATS_URL });
  try {
    if (cmd === "partitions-live") {
      for (const [line, ev] of events(file)) {
        const subject = client.intakeSubject(ev, lc.partitions, lc.routes);
        out({ line, partition: Number(subject.split(".").pop()), subject, key: client.partitionKey(ev, lc.routes) });
      }
    } else if (cmd === "publish") {
      for (const [line, ev] of events(file)) {
        const mode = line % 2 ? "structured" : "binary";
        const r = mode === "binary" ? await lc.publishBinary(ev) : await lc.publishStructured(ev);
        out({ line, id: r.id, mode, subject: r.subject, seq: r.seq, duplicate: r.duplicate });
      }
    } else if (cmd === "exec") {
      for (const [line, ev] of events(file)) {
        for (const binary of [false, true]) {
          const e = { ...ev, id: `${ev.id}-${binary ? "bin" : "str"}` };
          try {
            out({ line, mode: binary ? "binary" : "structured", reply: await lc.exec(e, { binary, timeout: 10000 }) });
          } catch (err) {
            out({ line, mode: binary ? "binary" : "structured", error: err.message, code: err.code, reply: err.reply });
          }
        }
      }
    } else if (cmd === "pretty") {
      const ev = { specversion: "1.0", id: "js-pretty-1", type: "NobodyHandles", source: "/tests/js", subject: "js-pretty", data: { note: "two\nlines", n: [1, 2] } };
      const ack = await lc.js.publish("lucent.intake." + client.partition("js-pretty", lc.partitions), Buffer.from(JSON.stringify(ev, null, 2) + "\n"), { msgID: ev.id });
      out({ what: "intake", ack: { stream: ack.stream, seq: ack.seq } });
      const m = await lc.nc.request("lucent.exec", Buffer.from(JSON.stringify({ ...ev, id: "js-pretty-2" }, null, 2)), { timeout: 10000 });
      out({ what: "exec", reply: JSON.parse(Buffer.from(m.data).toString("utf8")) });
    } else if (cmd === "bad") {
      const h = headers();
      h.set("ce-specversion", "1.0");
      h.set("ce-type", "OrderPlaced");
      h.set("ce-source", "/tests/js");
      const ack = await lc.js.publish("lucent.intake.3", Buffer.from('{"orderId":"x"}'), { headers: h, msgID: "js-bad-no-id" });
      out({ what: "intake without ce-id", ack: { stream: ack.stream, seq: ack.seq } });
      const r = headers();
      r.set("ce-specversion", "1.0");
      r.set("ce-id", "js-bad-exec");
      r.set("ce-source", "/tests/js");
      const m = await lc.nc.request("lucent.exec", Buffer.from("{}"), { headers: r, timeout: 10000 });
      out({ what: "exec without ce-type", reply: JSON.parse(Buffer.from(m.data).toString("utf8")) });
    } else {
      throw new Error(`unknown command ${cmd}`);
    }
  } finally {
    await lc.close();
  }
}

main().catch((err) => {
  console.error(`js_client.js: ${err.stack || err}`);
  process.exit(1);
});
