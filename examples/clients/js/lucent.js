// lucent.js - a small lucent client for Node.js, written from
// docs/protocol.md (lucent wire protocol v1) and nothing else: publish
// CloudEvents to a distributed lucent in either content mode of the
// CloudEvents NATS binding, and call exec (request/reply).
//
//   const { Lucent, partition } = require("./lucent");
//   const lc = await Lucent.connect({ servers: "nats://127.0.0.1:4222" });
//   await lc.publishStructured({ type: "OrderPlaced", source: "/shop", ... });
//   await lc.publishBinary({ ... });
//   const reply = await lc.exec({ ... }, { binary: true });
//   await lc.close();
//
// Dependencies: npm `nats` 2.x (the NATS client) and `cloudevents` (the
// official SDK: every event is built and validated as a CloudEvent before
// it is sent, so an invalid one fails here, not as a lucent.Rejected).
"use strict";

const { connect, headers: natsHeaders } = require("nats");
const { CloudEvent } = require("cloudevents");

/** Intake partitions of protocol v1 (docs/protocol.md, "Partitions"). */
const PARTITIONS = 16;
const INTAKE = "lucent.intake"; // + ".<p>", stream LUCENT_INTAKE
const EXEC = "lucent.exec";

const FNV_BASIS = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;
const MASK64 = 0xffffffffffffffffn;

/** FNV-1a 64 of bytes (a string is taken as its UTF-8 bytes), a BigInt. */
function fnv1a64(key) {
  const bytes = typeof key === "string" ? Buffer.from(key, "utf8") : key;
  let h = FNV_BASIS;
  for (const b of bytes) {
    h ^= BigInt(b);
    h = (h * FNV_PRIME) & MASK64;
  }
  return h;
}

/** The intake partition of a key: FNV-1a 64 of its UTF-8 bytes mod P. */
function partition(key, P = PARTITIONS) {
  return Number(fnv1a64(key) % BigInt(P));
}

/** The key of an event: its subject if it has one, else its id. */
function partitionKey(event) {
  return event.subject != null && event.subject !== "" ? event.subject : event.id;
}

/** The subject an event is published to: lucent.intake.<p>. */
function intakeSubject(event, P = PARTITIONS) {
  return `${INTAKE}.${partition(partitionKey(event), P)}`;
}

/** A CloudEvent from a plain object (strict validation: throws on an
 *  invalid event, e.g. an extension named TenantID). */
function toCloudEvent(event) {
  return event instanceof CloudEvent ? event : new CloudEvent(event, true);
}

// json-format.md 3.1.1: a media type whose subtype is json or ends in +json.
function isJsonType(ct) {
  const t = ct.split(";")[0].trim().toLowerCase();
  const sub = t.slice(t.indexOf("/") + 1);
  return t.includes("/") && (sub === "json" || sub.endsWith("+json"));
}

/** Percent-encodes a header value as the NATS binding 3.1.3.2 says: the
 *  UTF-8 bytes of space, '"', '%' and everything outside U+0021..U+007E as
 *  %XY, upper case. */
function percentEncode(value) {
  let out = "";
  for (const b of Buffer.from(String(value), "utf8")) {
    if (b > 0x20 && b < 0x7f && b !== 0x22 && b !== 0x25) out += String.fromCharCode(b);
    else out += "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

/** The intake deduplication id (Nats-Msg-Id): the event's identity,
 *  (source, id) as CloudEvents defines it, written as
 *  "<UTF-8 bytes of source>:<source><id>", both percent-encoded
 *  (docs/protocol.md, section 3).  Same event, same id, from any client. */
function dedupId(event) {
  const source = String(event.source);
  return `${Buffer.byteLength(source, "utf8")}:${percentEncode(source)}${percentEncode(event.id)}`;
}

const NOT_ATTRIBUTES = new Set(["data", "data_base64"]);

/** Structured content mode: the JSON event format as the payload. */
function encodeStructured(event) {
  const ce = toCloudEvent(event);
  return { event: ce, headers: undefined, payload: Buffer.from(JSON.stringify(ce), "utf8") };
}

/** Binary content mode: ce-<attribute> headers (percent-encoded),
 *  datacontenttype as both ce-datacontenttype and content-type, the data
 *  as the payload. */
function encodeBinary(event) {
  const ce = toCloudEvent(event);
  const h = natsHeaders();
  for (const [name, value] of Object.entries(ce)) {
    if (NOT_ATTRIBUTES.has(name) || value === undefined || value === null) continue;
    if (name === "datacontenttype") continue; // below
    const v = value instanceof Date ? value.toISOString() : value;
    if (typeof v === "object") throw new TypeError(`attribute ${name}: binary mode carries strings, booleans and integers`);
    h.set(`ce-${name}`, percentEncode(v));
  }
  let payload = Buffer.alloc(0);
  let ct = ce.datacontenttype;
  if (ce.data_base64) {
    payload = Buffer.from(ce.data_base64, "base64");
  } else if (ce.data !== undefined) {
    if (!ct) ct = "application/json"; // json-format 3.1.2: the implied type, made explicit
    if (typeof ce.data === "string" && !isJsonType(ct)) payload = Buffer.from(ce.data, "utf8");
    else payload = Buffer.from(JSON.stringify(ce.data), "utf8");
  }
  if (ct) {
    h.set("ce-datacontenttype", percentEncode(ct));
    h.set("content-type", ct);
  }
  return { event: ce, headers: h, payload };
}

/** An exec reply that says success:false, or no reply at all. */
class LucentError extends Error {
  constructor(code, message, reply) {
    super(message);
    this.code = code; // "NO_RESPONDERS", "TIMEOUT", "REJECTED", "FAILED", ...
    this.reply = reply; // the reply object, when there was one
  }
}

class Lucent {
  constructor(nc, opts = {}) {
    this.nc = nc;
    this.js = nc.jetstream();
    this.partitions = opts.partitions || PARTITIONS;
  }

  /** Connects to NATS (options as nats.js's connect()). */
  static async connect(opts) {
    return new Lucent(await connect(opts), opts);
  }

  async #publish(enc) {
    const subject = intakeSubject(enc.event, this.partitions);
    const opts = { msgID: dedupId(enc.event) }; // deduplicated by (source, id)
    if (enc.headers) opts.headers = enc.headers;
    const ack = await this.js.publish(subject, enc.payload, opts);
    // Acknowledged = stored durably in LUCENT_INTAKE; not yet processed.
    return { id: enc.event.id, subject, partition: Number(subject.split(".").pop()), stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate };
  }

  /** Publishes one event in structured mode; resolves once JetStream
   *  stored it: { id, subject, partition, stream, seq, duplicate }. */
  publishStructured(event) {
    return this.#publish(encodeStructured(event));
  }

  /** The same, in binary mode. */
  publishBinary(event) {
    return this.#publish(encodeBinary(event));
  }

  /** Runs an event now and resolves with lucent's reply ({ success: true,
   *  result, function, shard, eventId, attempts, outcome }); rejects with
   *  a LucentError when it did not succeed, no shard serves, or no reply
   *  came within timeout ms. */
  async exec(event, { binary = false, timeout = 5000 } = {}) {
    const enc = binary ? encodeBinary(event) : encodeStructured(event);
    let msg;
    try {
      msg = await this.nc.request(EXEC, enc.payload, { timeout, headers: enc.headers });
    } catch (err) {
      if (err && err.code === "503") throw new LucentError("NO_RESPONDERS", `no shard is serving ${EXEC}`);
      if (err && err.code === "TIMEOUT") throw new LucentError("TIMEOUT", `no reply within ${timeout} ms`);
      throw err;
    }
    const reply = JSON.parse(Buffer.from(msg.data).toString("utf8"));
    if (!reply.success) {
      // outcome: "failed", "rejected" or "dead_lettered"; none when the
      // request could not be run or forwarded at all.
      const code = reply.outcome ? reply.outcome.toUpperCase() : "FAILED";
      throw new LucentError(code, reply.error || "the execution did not succeed", reply);
    }
    return reply;
  }

  async close() {
    await this.nc.drain();
  }
}

module.exports = {
  PARTITIONS,
  dedupId,
  fnv1a64,
  partition,
  partitionKey,
  intakeSubject,
  percentEncode,
  encodeStructured,
  encodeBinary,
  Lucent,
  LucentError,
};
