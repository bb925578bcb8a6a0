#!/usr/bin/env node
/*
 * kill_bench.js - kill -9 of a worker during keyed durable events, the same
 * scenario for lucent and BullMQ (bench/peer/run.sh runs it; see
 * bench/peer/README.md).
 *
 *   node kill_bench.js --system lucent --nats URL --lucent PATH --plugin PATH
 *                      [--ack-wait-ms MS] --round R -n N [--keys K] --tmp DIR
 *   node kill_bench.js --system bullmq --redis-port P [--partitions 16]
 *                      [--lock-ms MS] [--stalled-ms MS] --round R -n N
 *                      [--keys K] --tmp DIR
 *
 * Two workers (lucent: `lucent serve` worker-1 and worker-2, at-least-once,
 * with peer_plugin.c's PeerKeyed; BullMQ: two bullmq_bench.js worker
 * processes on 16 queues of global concurrency 1, as in its events
 * scenario).  N events over K keys (default 1000), each with data.kseq, its
 * number among its key's events in publish order, and the key as its
 * CloudEvent subject (--subjects stream: bench_nats's 1000 stream-NNNN
 * subjects, unrelated to the key); published at once
 * (lucent: `lucent publish` of a JSON Lines file; BullMQ: addBulk per
 * partition, as in events).  When the workers have executed N x --kill-at
 * (default 1/3; 0: no kill, for a reference) events, worker-1 gets SIGKILL; --down-ms (3000) later it is
 * started again with the same name.  The run ends when every event has a
 * stored result (lucent: a PeerKeyedCompleted in LUCENT_EVENTS, watched on
 * its subjects; BullMQ: the job in a queue's completed set), or after
 * --max-seconds (default 120).  lucent then also waits until the intake
 * and forward consumers have nothing pending (what was not acknowledged is
 * redelivered, and may run again, after the finish).
 *
 * Counted (one JSON line, scenario "kill"):
 *   lost            events without a stored result at the end
 *   stored_twice    events with more than one stored result (lucent: read
 *                   back with `lucent events --nats`; BullMQ: one result
 *                   field per job hash, so only a second job of the same
 *                   event could, and jobId = event id forbids it)
 *   executed_twice  events executed more than once (every execution appends
 *                   a line to an execution log: the plugin's, the worker's)
 *   out_of_order    executions of a key that began after an execution of a
 *                   later event of the same key (a re-execution included);
 *                   out_of_order_first: first executions only
 *   finish_s        from the first publish until every event had a result
 */
"use strict";

const { spawn, execFileSync } = require("child_process");
const fs = require("fs");
const path = require("path");
const U = require("./peer_util");

const SYSTEM = U.arg("--system", "");
const ROUND = Number(U.arg("--round", "1"));
const N = Number(U.arg("-n", "30000"));
const KEYS = Number(U.arg("--keys", "1000"));
const KILL_AT = Number(U.arg("--kill-at", String(1 / 3)));
const DOWN_MS = Number(U.arg("--down-ms", "3000"));
const MAX_MS = Number(U.arg("--max-seconds", "120")) * 1000;
const TMP = U.arg("--tmp", "/tmp");
const SUBJECTS = U.arg("--subjects", "key"); /* "stream": bench_nats's subjects */
const IDS = ["worker-1", "worker-2"];

function now() {
	return Number(process.hrtime.bigint()) / 1e9;
}

/* The books from the execution logs. */
function execBooks(logs, evs) {
	const ex = U.readExecLogs(logs);
	const times = new Map(); /* "key kseq" -> executions */
	const maxSeen = new Map(); /* key -> highest kseq begun so far */
	let outOfOrder = 0,
		outOfOrderFirst = 0;
	for (const e of ex) {
		const id = `${e.key} ${e.kseq}`;
		const k = (times.get(id) || 0) + 1;
		times.set(id, k);
		const m = maxSeen.has(e.key) ? maxSeen.get(e.key) : -1;
		if (e.kseq < m) {
			outOfOrder++;
			if (k === 1) outOfOrderFirst++;
		} else maxSeen.set(e.key, e.kseq);
	}
	let twice = 0,
		never = 0;
	for (const ev of evs) {
		const k = times.get(`${ev.data.key} ${ev.data.kseq}`) || 0;
		if (k > 1) twice++;
		if (!k) never++;
	}
	return { executions: ex.length, executed_twice: twice, never_executed: never, out_of_order: outOfOrder, out_of_order_first: outOfOrderFirst };
}

/* Waits for fn() to be true, polling every `ms`, until `until` (epoch ms). */
async function waitFor(fn, until, ms) {
	while (Date.now() < until) {
		if (await fn()) return true;
		await U.sleep(ms || 5);
	}
	return false;
}

/* The common loop: kill worker-1 at N x KILL_AT executions, start it again
 * DOWN_MS later, until stored() reaches N or the deadline.  h.armed(fn),
 * if given, receives the kill so that a harness that sees progress as it
 * comes (lucent's results) can kill without waiting for the next poll. */
async function drive(h, t0, deadline) {
	const lc = new U.LineCounter(h.logs);
	const r = { kill_at_s: null, restart_at_s: null, executed_at_kill: 0, finish_s: null };
	let restartAt = 0;
	const kill = () => {
		if (r.kill_at_s !== null) return;
		r.executed_at_kill = lc.count();
		h.kill();
		r.kill_at_s = now() - t0;
		restartAt = Date.now() + DOWN_MS;
	};
	if (h.armed && KILL_AT > 0) h.armed(kill);
	while (Date.now() < deadline) {
		if (KILL_AT > 0 && r.kill_at_s === null && lc.count() >= N * KILL_AT) kill();
		if (restartAt && Date.now() >= restartAt) {
			restartAt = 0;
			r.restart_at_s = now() - t0;
			await h.restart();
		}
		if ((await h.stored()) >= N && (r.kill_at_s !== null || KILL_AT <= 0) && !restartAt) {
			r.finish_s = now() - t0;
			break;
		}
		await U.sleep(5);
	}
	return r;
}

/* ---- lucent -------------------------------------------------------------- */

async function lucent() {
	const { connect } = require("nats");
	const URL = U.arg("--nats", "nats://127.0.0.1:4222");
	const LUCENT = U.arg("--lucent", "lucent");
	const PLUGIN = U.arg("--plugin", "");
	const ackWait = U.arg("--ack-wait-ms", null);
	const nc = await connect({ servers: URL, name: "peer-kill" });
	const jsm = await nc.jetstreamManager();
	const drop = async () => {
		for (const s of ["LUCENT_INTAKE", "LUCENT_FWD", "LUCENT_EVENTS"]) await jsm.streams.delete(s).catch(() => {});
	};
	await drop();
	const logs = IDS.map(id => path.join(TMP, `kill-lucent-exec-${id}.log`));
	for (const f of logs) fs.rmSync(f, { force: true });
	const procs = {};
	const serve = id => {
		const out = fs.openSync(path.join(TMP, `kill-lucent-serve-${id}.log`), "a");
		const args = ["serve", "--nats", URL, "--shard", id, "--plugin", PLUGIN, "--log-format", "text"];
		if (ackWait) args.push("--ack-wait-ms", ackWait);
		const c = U.track(spawn(LUCENT, args, { stdio: ["ignore", out, out], env: Object.assign({}, process.env, { LUCENT_PEER_EXEC_LOG: logs[IDS.indexOf(id)] }) }));
		fs.closeSync(out);
		procs[id] = c;
		return c;
	};
	const serveLog = id => fs.readFileSync(path.join(TMP, `kill-lucent-serve-${id}.log`), "utf8");
	for (const id of IDS) fs.rmSync(path.join(TMP, `kill-lucent-serve-${id}.log`), { force: true });
	IDS.forEach(serve);
	/* both in one view, every intake partition and forward queue pulled */
	/* the text log's "shard view changed ... view=worker-1,worker-2" */
	const view = `view=${IDS.join(",")}`;
	if (!(await waitFor(() => IDS.every(id => serveLog(id).includes(view)), Date.now() + 30000, 50)))
		throw new Error(`serves never saw ${view}: ${IDS.map(serveLog).join(" | ").slice(-400)}`);
	const consumers = Array.from({ length: 16 }, (_, p) => ["LUCENT_INTAKE", `intake-${p}`]).concat(IDS.map(id => ["LUCENT_FWD", `fwd-${id}`]));
	const pulled = async () => {
		let k = 0;
		for (const [s, c] of consumers) {
			const ci = await jsm.consumers.info(s, c).catch(() => null);
			if (ci && ci.num_waiting > 0) k++;
		}
		return k === consumers.length;
	};
	if (!(await waitFor(pulled, Date.now() + 15000, 50))) process.stderr.write("kill_bench: not every lucent consumer is pulled after 15 s\n");
	await U.sleep(500);

	/* the results, as they reach LUCENT_EVENTS's subjects */
	const ids = new Set();
	let unparsed = 0,
		killAt = null; /* drive's kill, once armed */
	const dec = new TextDecoder();
	nc.subscribe("lucent.events.>", {
		callback: (err, m) => {
			if (err) return;
			try {
				const e = JSON.parse(dec.decode(m.data));
				if (e.type === "PeerKeyedCompleted") ids.add(e.causationid);
				if (killAt && ids.size >= N * KILL_AT) killAt();
			} catch (x) {
				unparsed++;
			}
		}
	});
	await nc.flush();

	const evs = U.genEvents(N, "PeerKeyed", { keys: KEYS, subjects: SUBJECTS });
	const input = path.join(TMP, "kill-lucent-events.jsonl");
	fs.writeFileSync(input, evs.map(e => JSON.stringify(e)).join("\n") + "\n");
	const deadline = Date.now() + MAX_MS;
	const t0 = now();
	let pubOut = "";
	const pub = U.track(spawn(LUCENT, ["publish", "--nats", URL, "--input", input, "--json"], { stdio: ["ignore", "pipe", "inherit"] }));
	pub.stdout.on("data", d => (pubOut += d));
	const r = await drive(
		{
			logs,
			kill: () => procs["worker-1"].kill("SIGKILL"),
			armed: fn => (killAt = fn),
			restart: async () => {
				serve("worker-1");
			},
			stored: () => ids.size
		},
		t0,
		deadline
	);
	await new Promise(res => (pub.exitCode !== null ? res() : pub.once("exit", res)));
	/* settled: nothing pending or unacknowledged in any consumer */
	const idle = async () => {
		for (const [s, c] of consumers) {
			const ci = await jsm.consumers.info(s, c).catch(() => null);
			if (ci && (ci.num_pending > 0 || ci.num_ack_pending > 0)) return false;
		}
		return true;
	};
	if (await waitFor(idle, deadline + 30000, 100)) r.settled_s = now() - t0;
	await U.sleep(500);

	/* the books: the store read back as `lucent events --nats` reads it */
	const stored = new Map();
	const text = execFileSync(LUCENT, ["events", "--nats", URL, "--type", "PeerKeyedCompleted"], { maxBuffer: 1 << 30 }).toString();
	for (const l of text.split("\n")) {
		if (!l) continue;
		const e = JSON.parse(l);
		stored.set(e.causationid, (stored.get(e.causationid) || 0) + 1);
	}
	const all = Number(execFileSync(LUCENT, ["events", "--nats", URL, "--count"]).toString().trim());
	let lost = 0,
		twice = 0;
	for (const ev of evs) {
		const k = stored.get(ev.id) || 0;
		if (!k) lost++;
		if (k > 1) twice++;
	}
	await U.stopAll(30000);
	await drop();
	fs.rmSync(input, { force: true });
	await nc.close();
	const pubRes = (() => {
		try {
			return JSON.parse(pubOut);
		} catch (e) {
			return null;
		}
	})();
	return Object.assign(r, {
		config: `2 serves, at-least-once, ack wait ${ackWait || "default 10000"} ms`,
		lost,
		stored_twice: twice,
		stored_other: all - [...stored.values()].reduce((a, b) => a + b, 0),
		published: pubRes ? pubRes.accepted : -1,
		unparsed,
		logs
	});
}

/* ---- BullMQ -------------------------------------------------------------- */

async function bullmq() {
	const B = require("./bullmq_bench");
	const P = Number(U.arg("--partitions", "16"));
	const extra = [];
	if (U.arg("--lock-ms", null)) extra.push("--lock-ms", U.arg("--lock-ms"));
	if (U.arg("--stalled-ms", null)) extra.push("--stalled-ms", U.arg("--stalled-ms"));
	const conn = B.redis(),
		mon = B.redis();
	const { names, queues } = await B.keyedSetup(conn, P);
	const logs = IDS.map(id => path.join(TMP, `kill-bullmq-exec-${id}.log`));
	for (const f of logs) fs.rmSync(f, { force: true });
	const procs = {};
	const start = async id => (procs[id] = await B.startWorker(id, names, extra.concat(["--exec-log", logs[IDS.indexOf(id)]])));
	await Promise.all(IDS.map(start));
	const evs = U.genEvents(N, "PeerKeyed", { keys: KEYS, subjects: SUBJECTS });
	const deadline = Date.now() + MAX_MS;
	const t0 = now();
	let have = { completed: 0, failed: 0 };
	const producing = B.produce(queues, evs, deadline);
	const r = await drive(
		{
			logs,
			kill: () => procs["worker-1"].kill("SIGKILL"),
			restart: () => start("worker-1"),
			stored: async () => {
				have = await B.counts(mon, names);
				return have.completed + have.failed;
			}
		},
		t0,
		deadline
	);
	const notAdded = await producing;
	/* the books: every queue's completed set */
	const done = new Map();
	for (const q of names) for (const id of await mon.zrange(`bull:${q}:completed`, 0, -1)) done.set(id, (done.get(id) || 0) + 1);
	let lost = 0,
		twice = 0;
	for (const ev of evs) {
		const k = done.get(ev.id) || 0;
		if (!k) lost++;
		if (k > 1) twice++;
	}
	await Promise.all(queues.map(q => q.close()));
	await U.stopAll();
	await conn.flushall();
	conn.disconnect();
	mon.disconnect();
	return Object.assign(r, {
		config: `2 workers, ${P} queues, global concurrency 1, lock ${U.arg("--lock-ms", "default 30000")} ms, stalled check ${U.arg("--stalled-ms", "default 30000")} ms`,
		lost,
		stored_twice: twice,
		failed: have.failed,
		not_added: notAdded,
		logs
	});
}

/* ---- main ------------------------------------------------------------- */

async function main() {
	const run = { lucent, bullmq }[SYSTEM];
	if (!run) throw new Error("--system lucent or bullmq");
	const evs = U.genEvents(N, "PeerKeyed", { keys: KEYS, subjects: SUBJECTS }); /* keys and kseqs as the run's */
	const r = await run();
	const books = execBooks(r.logs, evs);
	delete r.logs;
	const o = Object.assign({ scenario: "kill", system: SYSTEM, round: ROUND, n: N, keys: KEYS, errors: 0, why: "" }, r, books);
	if (o.finish_s === null) o.why = `not finished within ${MAX_MS / 1000} s`;
	U.line(o);
}

U.exitOnSignals();
main()
	.then(() => process.exit(0))
	.catch(e => {
		process.stderr.write(`kill_bench: ${e && e.stack ? e.stack : e}\n`);
		process.exit(1);
	});
