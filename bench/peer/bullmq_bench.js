#!/usr/bin/env node
/*
 * bullmq_bench.js - the BullMQ side of the peer comparison (bench/peer/
 * run.sh runs it; see bench/peer/README.md).  A durable job queue on one
 * redis-server (AOF, fsync every second) that run.sh starts.
 *
 *   node bullmq_bench.js rr     --redis-port P [--redis-pid PID] --round R
 *                               [--n1 N] [--n64 N] [--cdf FILE]
 *   node bullmq_bench.js events --redis-port P [--redis-pid PID] --round R
 *                               [-n N] [--partitions 16]
 *                               [--global-concurrency 1] [--worker-concurrency 1]
 *   node bullmq_bench.js worker --redis-port P --queues a,b,.. [--concurrency C]
 *                               [--exec-log FILE] [--lock-ms MS] [--stalled-ms MS]
 *
 * Every worker is its own Node process (as every lucent serve is), forked
 * by this script and stopped by PID; the client (producer, caller) is this
 * process.  BullMQ's defaults everywhere (lockDuration and stalledInterval
 * 30 s, maxStalledCount 1, completed jobs and their results kept), except
 * where stated.  Payloads are bench_nats's ~310-byte CloudEvents (same
 * generator), the whole event as the job's data.
 *
 *   rr      a job added to queue "rr" and the caller waits for its
 *           completion: Queue.add, then job.waitUntilFinished(QueueEvents)
 *           (BullMQ's own request/response; the result is stored in the
 *           job's hash, as lucent stores exec's result in LUCENT_EVENTS).
 *           1 worker process, Worker concurrency 64, returning {seq}; 1 in
 *           flight: latency of each request, 64 in flight: requests/s.
 *   events  keyed durable events to 2 workers in per-key order.  BullMQ
 *           OSS has no key partitioning (groups are BullMQ Pro), so: 16
 *           queues keyed-0..15 (a key's queue: FNV-1a(data.key) mod 16),
 *           each with global concurrency 1 (Queue.setGlobalConcurrency: one
 *           active job per queue across all workers, so a key's jobs run
 *           one at a time in the order they were added), and every worker
 *           process has a Worker (concurrency 1) on every queue, so that
 *           either worker can take any partition and one dying leaves its
 *           partitions to the other.  The producer adds in chunks of 1024
 *           events, one Queue.addBulk per partition of a chunk (a MULTI),
 *           the chunks one after the other (per-partition order kept),
 *           jobId = the event's id (a second add of the same event is a
 *           no-op, like lucent's Nats-Msg-Id).  From the first add until
 *           the queues' completed sets hold N jobs (polled every 5 ms).
 *           (--partitions 1 --global-concurrency 0 --worker-concurrency
 *           16: one queue, no order, for a reference.)
 *
 * Output: JSON lines on stdout, same fields as bench_nats, system
 * "bullmq"; CDF rows appended to --cdf.  CPU per message: this process
 * (client), the worker processes (serve), redis-server (server; with the
 * AOF rewrites it forked).
 */
"use strict";

const { fork } = require("child_process");
const fs = require("fs");
const { Queue, QueueEvents, Worker } = require("bullmq");
const IORedis = require("ioredis");
const U = require("./peer_util");

const PORT = Number(U.arg("--redis-port", "6379"));
const REDIS_PID = Number(U.arg("--redis-pid", "0"));
const ROUND = Number(U.arg("--round", "1"));
const MAX_MS = Number(U.arg("--max-seconds", "60")) * 1000;
const CONN = { host: "127.0.0.1", port: PORT };

function redis() {
	return new IORedis(Object.assign({ maxRetriesPerRequest: null, enableOfflineQueue: true }, CONN));
}

/* ---- worker process ---------------------------------------------------- */

async function worker() {
	const queues = U.arg("--queues", "").split(",").filter(Boolean);
	const opts = { connection: CONN, concurrency: Number(U.arg("--concurrency", "1")) };
	if (U.arg("--lock-ms", null)) opts.lockDuration = Number(U.arg("--lock-ms"));
	if (U.arg("--stalled-ms", null)) opts.stalledInterval = Number(U.arg("--stalled-ms"));
	const logFile = U.arg("--exec-log", null);
	const fd = logFile ? fs.openSync(logFile, "a") : -1; /* O_APPEND */
	const processor = async job => {
		const d = job.data && job.data.data;
		if (!d) throw new Error("no data");
		if (fd >= 0) {
			/* one write(2): a line is whole or absent after kill -9 */
			fs.writeSync(fd, `${d.key} ${d.kseq} ${process.hrtime.bigint()} ${process.pid} ${job.attemptsStarted || job.attemptsMade + 1}\n`);
			return { seq: d.seq, key: d.key, kseq: d.kseq };
		}
		return { seq: typeof d.seq === "number" ? d.seq : -1 };
	};
	const ws = queues.map(q => {
		const w = new Worker(q, processor, opts);
		w.on("error", e => process.stderr.write(`bullmq worker ${q}: ${e && e.message}\n`));
		return w;
	});
	await Promise.all(ws.map(w => w.waitUntilReady()));
	process.send && process.send({ ready: true });
	let stopping = false;
	const stop = () => {
		if (stopping) return;
		stopping = true;
		Promise.all(ws.map(w => w.close()))
			.catch(() => {})
			.then(() => process.exit(0));
	};
	process.on("SIGTERM", stop);
	process.on("SIGINT", stop);
	process.on("disconnect", stop);
}

/* ---- client helpers ---------------------------------------------------- */

/* Forks a worker process; resolves once its Workers are connected. */
function startWorker(id, queues, extra) {
	return new Promise((resolve, reject) => {
		const args = ["worker", "--redis-port", String(PORT), "--queues", queues.join(",")].concat(extra || []);
		const c = U.track(fork(__filename, args, { stdio: ["ignore", "ignore", "inherit", "ipc"] }));
		c.workerId = id;
		const t = setTimeout(() => reject(new Error(`worker ${id} did not start in 30 s`)), 30000);
		c.on("message", m => {
			if (m && m.ready) {
				clearTimeout(t);
				resolve(c);
			}
		});
		c.once("exit", (code, sig) => {
			clearTimeout(t);
			reject(new Error(`worker ${id} exited (${code}${sig ? " " + sig : ""})`));
		});
	});
}

function cpuSnap() {
	return {
		self: U.selfCpu(),
		serve: [...U.children].reduce((a, c) => a + U.cpuOf(c.pid), 0),
		server: U.cpuOf(REDIS_PID, true)
	};
}
function cpuFill(r, a, b, n) {
	r.cpu_client_us = (b.self - a.self) / 1e3 / n;
	r.cpu_serve_us = (b.serve - a.serve) / 1e3 / n;
	r.cpu_server_us = REDIS_PID ? (b.server - a.server) / 1e3 / n : -1;
}

function out(scenario, config, r) {
	U.line(Object.assign({ scenario, system: "bullmq", config, round: ROUND }, r));
}

/* ---- request/response -------------------------------------------------- */

async function callLoop(queue, qe, events, total, window) {
	const lat = [];
	let sent = 0,
		errors = 0,
		firstErr = "";
	const deadline = Date.now() + MAX_MS;
	const t0 = process.hrtime.bigint();
	let tLast = t0;
	async function lane() {
		while (sent < total && Date.now() < deadline) {
			const i = sent++;
			const ev = events[i % events.length];
			const a = process.hrtime.bigint();
			try {
				const job = await queue.add(ev.type, ev);
				const res = await job.waitUntilFinished(qe, 30000);
				if (!res || res.seq !== ev.data.seq) throw new Error(`bad result ${JSON.stringify(res)}`);
			} catch (e) {
				if (!errors++) firstErr = String(e && e.message);
			}
			tLast = process.hrtime.bigint();
			lat.push(Number(tLast - a));
		}
	}
	await Promise.all(Array.from({ length: window }, lane));
	lat.sort((x, y) => x - y);
	return {
		n: total,
		done: lat.length - errors,
		errors: errors + (total - sent),
		why: firstErr,
		rate: (lat.length * 1e9) / Number(tLast - t0),
		p50_us: U.pct(lat, 0.5) / 1e3,
		p99_us: U.pct(lat, 0.99) / 1e3,
		p999_us: U.pct(lat, 0.999) / 1e3,
		max_us: lat.length ? lat[lat.length - 1] / 1e3 : 0,
		lat
	};
}

async function rr() {
	const n1 = Number(U.arg("--n1", "10000")),
		n64 = Number(U.arg("--n64", "50000"));
	const conn = redis();
	await conn.flushall();
	await startWorker("worker-1", ["rr"], ["--concurrency", "64"]);
	const queue = new Queue("rr", { connection: conn });
	const qe = new QueueEvents("rr", { connection: CONN });
	qe.setMaxListeners(0);
	queue.setMaxListeners(0); /* one "closing" listener per waiting call */
	await Promise.all([queue.waitUntilReady(), qe.waitUntilReady()]);
	const events = U.genEvents(Math.max(n1, n64), "Tick");
	await callLoop(queue, qe, events, 1000, 1); /* warm-up */
	for (const [scenario, n, w] of [
		["rr1", n1, 1],
		["rr64", n64, 64]
	]) {
		const c0 = cpuSnap();
		const r = await callLoop(queue, qe, events, n, w);
		const c1 = cpuSnap();
		cpuFill(r, c0, c1, n);
		U.writeCdf(U.arg("--cdf", null), "bullmq", w, ROUND, r.lat);
		delete r.lat;
		out(scenario, "1 worker, concurrency 64", r);
	}
	await qe.close();
	await queue.close();
	await U.stopAll();
	await conn.flushall();
	conn.disconnect();
}

/* ---- keyed durable events ---------------------------------------------- */

/* What events and kill_bench.js share: P queues with global concurrency
 * 1, the producer, and the completed/failed counts. */
function partitionNames(P) {
	return Array.from({ length: P }, (_, i) => `keyed-${i}`);
}

async function keyedSetup(conn, P, globalConcurrency) {
	await conn.flushall();
	const names = partitionNames(P);
	const queues = names.map(q => new Queue(q, { connection: conn }));
	await Promise.all(queues.map(q => q.waitUntilReady()));
	const gc = globalConcurrency === undefined ? 1 : globalConcurrency;
	if (gc > 0) await Promise.all(queues.map(q => q.setGlobalConcurrency(gc)));
	return { names, queues };
}

/* Adds evs in publish order: chunks of 1024 one after the other, one
 * addBulk per partition of a chunk.  Returns the events not added. */
async function produce(queues, evs, deadline) {
	const P = queues.length;
	let failed = 0,
		i = 0;
	for (; i < evs.length && Date.now() < deadline; i += 1024) {
		const parts = Array.from({ length: P }, () => []);
		for (let j = i; j < Math.min(i + 1024, evs.length); j++) {
			const ev = evs[j];
			parts[U.fnv1a(ev.data.key) % P].push({ name: ev.type, data: ev, opts: { jobId: ev.id } });
		}
		const res = await Promise.allSettled(parts.map((b, p) => (b.length ? queues[p].addBulk(b) : null)));
		res.forEach((x, p) => {
			if (x.status === "rejected") failed += parts[p].length;
		});
	}
	return failed + Math.max(0, evs.length - i);
}

async function counts(mon, names) {
	const pl = mon.pipeline();
	for (const q of names) pl.zcard(`bull:${q}:completed`).zcard(`bull:${q}:failed`);
	const rs = await pl.exec();
	let completed = 0,
		failed = 0;
	rs.forEach(([err, v], k) => {
		if (err) throw err;
		if (k % 2) failed += v;
		else completed += v;
	});
	return { completed, failed };
}

async function events() {
	const n = Number(U.arg("-n", "50000")),
		P = Number(U.arg("--partitions", "16")),
		gc = Number(U.arg("--global-concurrency", "1")),
		wc = U.arg("--worker-concurrency", "1");
	const conn = redis(),
		mon = redis();
	const { names, queues } = await keyedSetup(conn, P, gc);
	const ws = await Promise.all(["worker-1", "worker-2"].map(id => startWorker(id, names, ["--concurrency", wc])));
	const evs = U.genEvents(n, "Keyed");
	const c0 = cpuSnap();
	const deadline = Date.now() + MAX_MS;
	const t0 = process.hrtime.bigint();
	let t1 = 0n,
		have = { completed: 0, failed: 0 },
		notAdded = 0;
	const poll = (async () => {
		let last = -1,
			since = Date.now();
		while (Date.now() < deadline) {
			have = await counts(mon, names);
			if (have.completed + have.failed >= n) {
				t1 = process.hrtime.bigint();
				return;
			}
			if (have.completed !== last) {
				last = have.completed;
				since = Date.now();
			} else if (Date.now() - since > 20000) return; /* no progress for 20 s */
			await U.sleep(5);
		}
	})();
	notAdded = await produce(queues, evs, deadline);
	const tAdded = process.hrtime.bigint();
	await poll;
	if (!t1) t1 = process.hrtime.bigint();
	const c1 = cpuSnap();
	const done = Math.min(have.completed, n);
	const r = {
		n,
		done,
		errors: n - done + notAdded,
		why: done === n && !notAdded ? "" : `completed ${have.completed}, failed ${have.failed} of ${n}; ${notAdded} not added`,
		rate: (done * 1e9) / Number(t1 - t0),
		added_s: Number(tAdded - t0) / 1e9
	};
	cpuFill(r, c0, c1, n);
	out("events", `2 workers, ${P} queues, global concurrency ${gc || "none"}, worker concurrency ${wc}`, r);
	await Promise.all(queues.map(q => q.close()));
	await U.stopAll();
	void ws;
	await conn.flushall();
	conn.disconnect();
	mon.disconnect();
}

module.exports = { startWorker, partitionNames, keyedSetup, produce, counts, redis };

/* ---- main ------------------------------------------------------------- */

if (require.main === module) {
	const cmd = process.argv[2];
	const run = { rr, events, worker }[cmd];
	if (!run) {
		process.stderr.write("usage: bullmq_bench.js rr|events|worker [options]\n");
		process.exit(2);
	}
	if (cmd !== "worker") U.exitOnSignals();
	Promise.resolve()
		.then(run)
		.then(() => {
			if (cmd !== "worker") process.exit(0);
		})
		.catch(e => {
			process.stderr.write(`bullmq_bench: ${e && e.stack ? e.stack : e}\n`);
			process.exit(1);
		});
}
