// ce_check.js - checks every event lucent stored against CloudEvents 1.0
// with the official SDK (npm `cloudevents`), for test_ce_conformance.sh.
//
//   node ce_check.js STORED.jsonl [--input INPUT.jsonl]
//
// STORED.jsonl is `lucent events` output, one event per line.  Each line
// must be UTF-8 (decoded strictly) and JSON (JSON.parse); each event must
// have id, source, specversion and type of its own (the SDK would fill in
// a missing id), and `new CloudEvent(event, true)` - the SDK's strict
// validation: attribute names, extension value types, the JSON schema of
// the spec (uri-reference source, RFC 3339 time, non-empty subject, ...) -
// must not throw.  Beyond the SDK, the rules it leaves out: names at most
// 20 characters (lucent's rule), attribute values of the CloudEvents type
// system (string, boolean, integer within 32 bits, or null).  Not checked:
// control characters (escaped, so legal JSON) inside attribute strings,
// which the spec's String type excludes and the SDK accepts
// (docs/protocol.md, "What lucent accepts").
//
// With --input: every lucent.Rejected of an input line keeps that line
// losslessly: `raw` is the line when it is UTF-8 (and there is no
// raw_base64), else `raw_base64` is the standard base64 of its bytes.
//
// Prints a summary; exits 1 on the first 20 failures (all printed), 2 on
// a usage error.
"use strict";

const fs = require("fs");
const { CloudEvent } = require("cloudevents");

const args = process.argv.slice(2);
if (!args.length) {
  console.error("usage: node ce_check.js STORED.jsonl [--input INPUT.jsonl]");
  process.exit(2);
}
const stored = args[0];
const inputAt = args.indexOf("--input");
const input = inputAt > 0 ? args[inputAt + 1] : null;

const utf8 = new TextDecoder("utf-8", { fatal: true });
const failures = [];
const fail = (n, why, text) => failures.push(`line ${n}: ${String(why).slice(0, 200)}\n    ${String(text).slice(0, 300)}`);

// Lines of a file as byte buffers, without their "\n" (and a "\r" before).
function lines(file) {
  const buf = fs.readFileSync(file);
  const out = [];
  let start = 0;
  for (let i = 0; i <= buf.length; i++) {
    if (i === buf.length || buf[i] === 0x0a) {
      let end = i;
      if (end > start && buf[end - 1] === 0x0d) end--;
      if (i < buf.length || end > start) out.push(buf.subarray(start, end));
      start = i + 1;
    }
  }
  return out;
}

const events = [];
let n = 0;
for (const raw of lines(stored)) {
  n++;
  let text;
  try {
    text = utf8.decode(raw);
  } catch (e) {
    fail(n, "not UTF-8", raw.toString("latin1"));
    continue;
  }
  let ev;
  try {
    ev = JSON.parse(text);
  } catch (e) {
    fail(n, `not JSON: ${e.message}`, text);
    continue;
  }
  if (typeof ev !== "object" || ev === null || Array.isArray(ev)) {
    fail(n, "not a JSON object", text);
    continue;
  }
  for (const k of ["id", "source", "specversion", "type"]) {
    if (typeof ev[k] !== "string" || ev[k] === "") fail(n, `required attribute ${k} missing or empty`, text);
  }
  try {
    new CloudEvent(ev, true); // the official SDK, strict
  } catch (e) {
    fail(n, `CloudEvents SDK: ${e.message.split("\n")[0]}${e.errors && e.errors.length ? " " + JSON.stringify(e.errors) : ""}`, text);
  }
  for (const [k, v] of Object.entries(ev)) {
    if (k === "data" || k === "data_base64") continue;
    if (!/^[a-z0-9]{1,20}$/.test(k)) fail(n, `attribute name ${JSON.stringify(k)} is not [a-z0-9]{1,20}`, text);
    const ok =
      v === null || typeof v === "string" || typeof v === "boolean" ||
      (Number.isInteger(v) && v >= -2147483648 && v <= 2147483647);
    if (!ok) fail(n, `attribute ${k}: ${JSON.stringify(v)} is not a CloudEvents string, boolean or 32-bit integer`, text);
  }
  if ("data" in ev && "data_base64" in ev) fail(n, "both data and data_base64", text);
  events.push(ev);
}

let checkedRaw = 0;
if (input) {
  const inLines = lines(input);
  for (const ev of events) {
    if (ev.type !== "lucent.Rejected" || !ev.data || typeof ev.data.line !== "number") continue;
    const src = inLines[ev.data.line - 1];
    if (!src) {
      fail(ev.data.line, "a rejection of a line the input does not have", JSON.stringify(ev));
      continue;
    }
    if (ev.data.truncated) continue;
    let isText = true;
    try {
      utf8.decode(src);
    } catch (e) {
      isText = false;
    }
    if (isText) {
      if (ev.data.raw !== src.toString("utf8")) fail(ev.data.line, "raw is not the input line", JSON.stringify(ev.data));
      if ("raw_base64" in ev.data) fail(ev.data.line, "raw_base64 for a UTF-8 line", JSON.stringify(ev.data));
    } else if (ev.data.raw_base64 !== src.toString("base64")) {
      fail(ev.data.line, "raw_base64 is not the base64 of the input line's bytes", JSON.stringify(ev.data));
    }
    checkedRaw++;
  }
}

console.log(`ce_check: ${n} stored events, ${failures.length} failures${input ? `, ${checkedRaw} rejections' raw bytes checked` : ""}`);
for (const f of failures.slice(0, 20)) console.log("  " + f);
if (failures.length > 20) console.log(`  ... and ${failures.length - 20} more`);
process.exit(failures.length ? 1 : 0);
