// lucent.js - a small lucent client for Node.js, written from
// docs/protocol.md (lucent wire protocol v2) and nothing else: publish
// CloudEvents to a distributed lucent in either content mode of the
// CloudEvents NATS binding, partitioned as the protocol says (the routing
// key of a keyed type, else the subject, mod the stream's partition
// count), and call exec (request/reply).
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

/** Intake partitions of protocol v1, and of a v1 stream (lucent.intake.>). */
const PARTITIONS_V1 = 16;
const INTAKE = "lucent.intake"; // + ".<p>", stream LUCENT_INTAKE
const INTAKE_STREAM = "LUCENT_INTAKE";
const ROUTES_BUCKET = "lucent_routes"; // KV bucket, key "routes"
const ROUTES_KEY = "routes";
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
function partition(key, P) {
  if (!Number.isInteger(P) || P < 1) throw new RangeError("partition: P must be a positive integer");
  return Number(fnv1a64(key) % BigInt(P));
}

/** The partition count a stream's subjects record (protocol 2.2): exactly
 *  lucent.intake.0 .. lucent.intake.<P-1>, or the v1 wildcard
 *  lucent.intake.> (16).  Throws on anything else. */
function partitionsOf(subjects) {
  if (subjects.length === 1 && subjects[0] === `${INTAKE}.>`) return PARTITIONS_V1;
  const seen = new Set();
  for (const s of subjects) {
    const m = /^lucent\.intake\.(0|[1-9][0-9]{0,3})$/.exec(s);
    if (!m || Number(m[1]) >= subjects.length || seen.has(m[1])) {
      throw new Error(`stream ${INTAKE_STREAM} is not lucent's intake (subject ${JSON.stringify(s)})`);
    }
    seen.add(m[1]);
  }
  if (!subjects.length) throw new Error(`stream ${INTAKE_STREAM} has no subjects`);
  return subjects.length;
}

/** Follows a dotted key path ("customer.id", "items.0.sku") in data:
 *  objects by member name, arrays by decimal index (digits only). */
function jsonPath(data, path) {
  if (!path) return undefined;
  let cur = data;
  for (const seg of path.split(".")) {
    if (seg === "") return undefined;
    if (Array.isArray(cur)) {
      if (!/^[0-9]{1,18}$/.test(seg)) return undefined;
      cur = cur[Number(seg)];
    } else if (cur !== null && typeof cur === "object") {
      cur = Object.prototype.hasOwnProperty.call(cur, seg) ? cur[seg] : undefined;
    } else {
      return undefined;
    }
    if (cur === undefined) return undefined;
  }
  return cur;
}

/** C's printf("%.17g", x) for a finite double. */
function g17(x) {
  const [mant, exp] = x.toExponential(16).split("e");
  const e = Number(exp);
  if (e < -4 || e >= 17) {
    const m = mant.includes(".") ? mant.replace(/\.?0+$/, "") : mant;
    return `${m}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  }
  const f = x.toFixed(16 - e);
  return f.includes(".") ? f.replace(/\.?0+$/, "") : f;
}

/** The text of a routing key's value (protocol 6.1): a string as it is,
 *  true/false, an integral number within int64 in plain decimal, any
 *  other number as C's %.17g; undefined for null, objects, arrays. */
function keyText(v) {
  if (typeof v === "string") return v;
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "number" && Number.isFinite(v)) {
    if (Number.isInteger(v) && v >= -9223372036854775808 && v < 9223372036854775808) return BigInt(v).toString();
    return g17(v);
  }
  return undefined;
}

/** The partition key of an event (protocol 6.1, v2): the text of its
 *  routing key when its type routes by one (routes.types[type].key) and
 *  the data has it, else its subject, else its id. */
function partitionKey(event, routes = null) {
  const path = routes && routes.types && routes.types[event.type] && routes.types[event.type].key;
  if (path) {
    const k = keyText(jsonPath(event.data, path));
    if (k !== undefined) return k;
  }
  return event.subject != null && event.subject !== "" ? event.subject : event.id;
}

/** The subject an event is published to: lucent.intake.<p>. */
function intakeSubject(event, P, routes = null) {
  return `${INTAKE}.${partition(partitionKey(event, routes), P)}`;
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
  constructor(nc) {
    this.nc = nc;
    this.js = nc.jetstream();
    this.partitions = 0; // of the server's LUCENT_INTAKE (refresh())
    this.routes = null; // the server's routes table, or null
  }

  /** Connects to NATS (options as nats.js's connect()) and reads the
   *  intake layout: the partition count and the routes table. */
  static async connect(opts) {
    const lc = new Lucent(await connect(opts));
    try {
      await lc.refresh();
    } catch (err) {
      await lc.nc.close();
      throw err;
    }
    return lc;
  }

  /** Reads the partition count from LUCENT_INTAKE's subjects and the
   *  routes table from KV lucent_routes (protocol 2.2 and 6).  Without a
   *  stream: an error (no shard has run).  Without a table: routes null,
   *  every event by its subject. */
  async refresh() {
    const jsm = await this.nc.jetstreamManager();
    let si;
    try {
      si = await jsm.streams.info(INTAKE_STREAM);
    } catch (err) {
      throw new LucentError("NO_INTAKE", `no lucent intake on this server (stream ${INTAKE_STREAM}: ${err.message})`);
    }
    this.partitions = partitionsOf(si.config.subjects);
    this.routes = null;
    try {
      const kv = await this.js.views.kv(ROUTES_BUCKET, { bindOnly: true });
      const e = await kv.get(ROUTES_KEY);
      if (e && e.operation === "PUT") {
        const t = JSON.parse(Buffer.from(e.value).toString("utf8"));
        if (t.version === 1 && t.types && typeof t.types === "object") this.routes = t;
      }
    } catch (err) {
      this.routes = null; // no bucket yet: no serve has started
    }
  }

  async #publish(enc) {
    const subject = intakeSubject(enc.event, this.partitions, this.routes);
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
  PARTITIONS_V1,
  dedupId,
  fnv1a64,
  partition,
  partitionsOf,
  jsonPath,
  keyText,
  partitionKey,
  intakeSubject,
  percentEncode,
  encodeStructured,
  encodeBinary,
  Lucent,
  LucentError,
};
