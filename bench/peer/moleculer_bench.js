#!/usr/bin/env node
/*
 * moleculer_bench.js - the Moleculer side of the peer comparison
 * (bench/peer/run.sh runs it; see bench/README.md, "Peer comparison").
 *
 *   node moleculer_bench.js rr      --nats URL --round R [--n1 N] [--n64 N] [--cdf FILE]
 *   node moleculer_bench.js events  --nats URL --round R [-n N]
 *   node moleculer_bench.js keymove [--keys N] [--rounds R]
 *
 * Every broker is its own Node process, as every lucent shard is its own
 * process: this script is the client and forks the worker brokers
 * (`worker NODEID`), which it stops by PID at the end.  Settings, the same
 * for every scenario: NATS transporter (the `nats` npm client), JSON
 * serializer, built-in balancer (the caller picks the endpoint and sends to
 * that node's subject), no logger, no metrics, no tracing, no validator
 * (lucent validates the CloudEvent envelope, not the data), default
 * heartbeats.  Payloads are the same ~310-byte CloudEvents bench_nats
 * sends (same generator: seq, key, sensor, value, ...), passed as params.
 *
 *   rr       a worker with action bench.noop returning {seq} (what lucent's
 *            NoopTick returns); 1 call in flight: latency of each call
 *            (process.hrtime), 64 in flight: calls/s.
 *   events   two workers with an event handler "bench.keyed" that counts;
 *            the client's registry uses the Shard strategy with shardKey
 *            "data.key" (the key lucent's NoopKeyed hashes), and the
 *            client broker.emit()s N events; from the first emit until
 *            the workers' counts (polled with a call every 5 ms) add up
 *            to N.  Moleculer events are fire-and-forget: nothing is
 *            stored, a dying worker loses what it had.
 *   keymove  Moleculer's own ShardStrategy (its ring, 10 vnodes per node):
 *            owners of 10k keys over worker-1,worker-2, then over
 *            worker-1..3; the share that changes owner.
 *
 * Output: JSON lines on stdout, same fields as bench_nats; CDF rows
 * (system,inflight,round,quantile,latency_us) appended to --cdf.
 */
"use strict";

const { fork } = require("child_process");
const fs = require("fs");
const { ServiceBroker, Strategies } = require("moleculer");

function arg(name, def) {
	const i = process.argv.indexOf(name);
	return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

const URL = arg("--nats", "nats://127.0.0.1:4222");
const ROUND = Number(arg("--round", "1"));

function brokerOptions(nodeID, extra) {
	return Object.assign(
		{
			nodeID,
			namespace: "bench",
			transporter: { type: "NATS", options: { url: URL } },
			serializer: "JSON",
			logger: false,
			metrics: false,
			tracing: false,
			validator: false,
			requestTimeout: 30000
		},
		extra || {}
	);
}

/* bench_nats's generator (gen_events): the same bytes, parsed. */
function genEvents(n, type) {
	const nonce = ((process.pid ^ Math.floor(Date.now() / 1000)) & 0xfffff).toString(16);
	let s = 42n;
	const M = (1n << 64n) - 1n;
	const next = () => {
		s = (s + 0x9e3779b97f4a7c15n) & M;
		let z = s;
		z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
		z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M;
		return z ^ (z >> 31n);
	};
	const pad = (v, w) => String(v).padStart(w, "0");
	const out = new Array(n);
	for (let i = 0; i < n; i++) {
		const r = next();
		const stream = Number(r % 1000n),
			tenant = Number((r >> 10n) % 8n),
			user = Number((r >> 20n) % 5000n),
			sensor = Number((r >> 33n) % 64n),
			key = Number((r >> 13n) % 10000n);
		const value = Number((r >> 40n) % 100000n) / 100;
		const ms = i % 86400000;
		out[i] = {
			specversion: "1.0",
			id: `evt-${nonce}-${pad(i, 10)}`,
			type,
			source: "bench://sensors",
			subject: `stream-${pad(stream, 4)}`,
			time: `2025-01-01T${pad(Math.floor(ms / 3600000), 2)}:${pad(Math.floor(ms / 60000) % 60, 2)}:${pad(Math.floor(ms / 1000) % 60, 2)}.${pad(ms % 1000, 3)}Z`,
			correlationid: `corr-${pad(i, 10)}`,
			tenantid: `tenant-${tenant}`,
			userid: `user-${pad(user, 5)}`,
			data: { seq: i, key: `k-${pad(key, 5)}`, sensor: `s-${pad(sensor, 2)}`, value, unit: "C", ok: (r & 1n) === 1n }
		};
	}
	return out;
}

/* ---- worker process ---------------------------------------------------- */

async function worker(nodeID) {
	const broker = new ServiceBroker(brokerOptions(nodeID));
	let count = 0;
	broker.createService({
		name: "bench",
		actions: {
			noop(ctx) {
				const d = ctx.params && ctx.params.data;
				return { seq: d && typeof d.seq === "number" ? d.seq : -1 };
			},
			count() {
				return { nodeID, count };
			},
			reset() {
				count = 0;
				return { nodeID, count };
			}
		},
		events: {
			"bench.keyed"() {
				count++;
			}
		}
	});
	await broker.start();
	process.send && process.send({ ready: nodeID });
	const stop = () => broker.stop().then(() => process.exit(0));
	process.on("SIGTERM", stop);
	process.on("SIGINT", stop);
	process.on("disconnect", stop);
}

/* ---- client helpers -------------------------------------------------- */

const children = [];
function killChildren() {
	for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
}
process.on("exit", killChildren);

function startWorkers(ids) {
	return Promise.all(
		ids.map(
			id =>
				new Promise((resolve, reject) => {
					const c = fork(__filename, ["worker", id, "--nats", URL], { stdio: ["ignore", "ignore", "inherit", "ipc"] });
					children.push(c);
					const t = setTimeout(() => reject(new Error(`worker ${id} did not start in 30 s`)), 30000);
					c.on("message", m => {
						if (m && m.ready === id) {
							clearTimeout(t);
							resolve(c);
						}
					});
					c.on("exit", code => reject(new Error(`worker ${id} exited (${code})`)));
				})
		)
	);
}

async function stopWorkers() {
	await Promise.all(
		children.map(
			c =>
				new Promise(resolve => {
					if (c.exitCode !== null) return resolve();
					const t = setTimeout(() => {
						c.kill("SIGKILL");
					}, 10000);
					c.once("exit", () => {
						clearTimeout(t);
						resolve();
					});
					c.kill("SIGTERM");
				})
		)
	);
	children.length = 0;
}

async function waitNodes(broker, ids, action) {
	const until = Date.now() + 30000;
	for (;;) {
		const nodes = broker.registry.getNodeList({ onlyAvailable: true }).map(n => n.id);
		const eps = action ? broker.registry.getActionEndpoints(action) : null;
		const haveEps = !action || (eps && eps.endpoints.filter(e => e.isAvailable).length >= ids.length);
		if (ids.every(id => nodes.includes(id)) && haveEps) return;
		if (Date.now() > until) throw new Error(`workers ${ids} not seen within 30 s`);
		await new Promise(r => setTimeout(r, 50));
	}
}

function cpuOf(pid) {
	try {
		const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
		const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
		return (Number(f[11]) + Number(f[12])) * 1e7; /* ticks (100 Hz) -> ns */
	} catch (e) {
		return 0;
	}
}
const serverPid = Number(arg("--server-pid", "0"));
function cpuSnap() {
	const u = process.cpuUsage();
	return {
		self: (u.user + u.system) * 1e3,
		serve: children.reduce((a, c) => a + cpuOf(c.pid), 0),
		server: serverPid ? cpuOf(serverPid) : 0
	};
}
function cpuFill(r, a, b, n) {
	r.cpu_client_us = (b.self - a.self) / 1e3 / n;
	r.cpu_serve_us = (b.serve - a.serve) / 1e3 / n;
	r.cpu_server_us = serverPid ? (b.server - a.server) / 1e3 / n : -1;
}

function pct(sorted, q) {
	if (!sorted.length) return 0;
	let k = Math.ceil(q * sorted.length);
	if (k < 1) k = 1;
	if (k > sorted.length) k = sorted.length;
	return sorted[k - 1];
}

function line(scenario, config, r) {
	const o = Object.assign({ scenario, system: "moleculer", config, round: ROUND }, r);
	process.stdout.write(JSON.stringify(o) + "\n");
}

function writeCdf(inflight, lat) {
	const file = arg("--cdf", null);
	if (!file || !lat.length) return;
	const qs = [0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0];
	const rows = qs.map(q => `moleculer,${inflight},${ROUND},${q.toFixed(4)},${(pct(lat, q) / 1e3).toFixed(2)}`);
	fs.appendFileSync(file, rows.join("\n") + "\n");
}

/* ---- scenarios --------------------------------------------------------- */

async function callLoop(broker, events, total, window, maxMs) {
	const lat = [];
	let sent = 0,
		errors = 0,
		firstErr = "";
	const deadline = Date.now() + maxMs;
	const t0 = process.hrtime.bigint();
	let tLast = t0;
	async function lane() {
		while (sent < total && Date.now() < deadline) {
			const i = sent++;
			const ev = events[i % events.length];
			const a = process.hrtime.bigint();
			try {
				const res = await broker.call("bench.noop", ev);
				if (!res || res.seq !== ev.data.seq) throw new Error(`bad reply ${JSON.stringify(res)}`);
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
		p50_us: pct(lat, 0.5) / 1e3,
		p99_us: pct(lat, 0.99) / 1e3,
		p999_us: pct(lat, 0.999) / 1e3,
		max_us: lat.length ? lat[lat.length - 1] / 1e3 : 0,
		lat
	};
}

async function rr() {
	const n1 = Number(arg("--n1", "10000")),
		n64 = Number(arg("--n64", "50000")),
		maxMs = Number(arg("--max-seconds", "60")) * 1000;
	await startWorkers(["worker-1"]);
	const broker = new ServiceBroker(brokerOptions("client"));
	await broker.start();
	await waitNodes(broker, ["worker-1"], "bench.noop");
	const events = genEvents(Math.max(n1, n64), "Tick");
	await callLoop(broker, events, 1000, 1, maxMs); /* warm-up */
	for (const [scenario, n, w] of [
		["rr1", n1, 1],
		["rr64", n64, 64]
	]) {
		const c0 = cpuSnap();
		const r = await callLoop(broker, events, n, w, maxMs);
		const c1 = cpuSnap();
		cpuFill(r, c0, c1, n);
		writeCdf(w, r.lat);
		delete r.lat;
		line(scenario, "1 worker", r);
	}
	await broker.stop();
	await stopWorkers();
}

async function events() {
	const n = Number(arg("-n", "50000")),
		maxMs = Number(arg("--max-seconds", "60")) * 1000;
	const ids = ["worker-1", "worker-2"];
	await startWorkers(ids);
	const broker = new ServiceBroker(
		brokerOptions("client", {
			registry: { strategy: "Shard", strategyOptions: { shardKey: "data.key" } }
		})
	);
	await broker.start();
	await waitNodes(broker, ids, "bench.count");
	/* wait until both workers' event listeners are known */
	for (const until = Date.now() + 30000; ; ) {
		const list = broker.registry.events.get("bench.keyed", "bench");
		if (list && list.endpoints.filter(e => e.isAvailable).length >= 2) break;
		if (Date.now() > until) throw new Error("event endpoints not seen");
		await new Promise(r => setTimeout(r, 50));
	}
	const evs = genEvents(n, "Keyed");
	const count = async () => {
		const rs = await Promise.all(ids.map(id => broker.call("bench.count", {}, { nodeID: id })));
		return rs.reduce((a, r) => a + r.count, 0);
	};
	await Promise.all(ids.map(id => broker.call("bench.reset", {}, { nodeID: id })));
	const c0 = cpuSnap();
	const deadline = Date.now() + maxMs;
	const t0 = process.hrtime.bigint();
	for (let i = 0; i < n && Date.now() < deadline; i++) {
		broker.emit("bench.keyed", evs[i]);
		if ((i & 1023) === 1023) await new Promise(r => setImmediate(r)); /* let the socket drain */
	}
	let have = 0,
		last = 0,
		since = Date.now(),
		t1 = 0n;
	while (Date.now() < deadline) {
		have = await count();
		if (have >= n) {
			t1 = process.hrtime.bigint();
			break;
		}
		if (have !== last) {
			last = have;
			since = Date.now();
		} else if (Date.now() - since > 20000) break;
		await new Promise(r => setTimeout(r, 5));
	}
	if (!t1) t1 = process.hrtime.bigint();
	const c1 = cpuSnap();
	const perWorker = await Promise.all(ids.map(id => broker.call("bench.count", {}, { nodeID: id })));
	const r = {
		n,
		done: Math.min(have, n),
		errors: have === n ? 0 : Math.abs(n - have),
		why: have === n ? "" : `workers counted ${have} of ${n}`,
		rate: (Math.min(have, n) * 1e9) / Number(t1 - t0),
		split: perWorker.map(p => `${p.nodeID}:${p.count}`).join(",")
	};
	cpuFill(r, c0, c1, n);
	line("events", "2 workers, Shard(data.key)", r);
	await broker.stop();
	await stopWorkers();
}

function keymove() {
	const keys = Number(arg("--keys", "10000")),
		rounds = Number(arg("--rounds", "3"));
	const workers = arg("--workers", "worker-1,worker-2,worker-3").split(",");
	const fakeBroker = { localBus: { on() {} } };
	const owners = ids => {
		const s = new Strategies.Shard(null, fakeBroker, { shardKey: "key" });
		s.rebuild(ids.map(id => ({ id })));
		return k => s.getNodeIDByKey(k);
	};
	for (let r = 1; r <= rounds; r++) {
		const before = owners(workers.slice(0, -1)),
			after = owners(workers);
		let moved = 0,
			toNew = 0;
		for (let i = 0; i < keys; i++) {
			const k = `r${r}-k-${i}`;
			const a = before(k),
				b = after(k);
			if (a !== b) {
				moved++;
				if (b === workers[workers.length - 1]) toNew++;
			}
		}
		process.stdout.write(
			JSON.stringify({
				scenario: "keymove",
				system: "moleculer",
				round: r,
				keys,
				workers_before: workers.length - 1,
				workers_after: workers.length,
				moved,
				share: moved / keys,
				ideal: 1 / workers.length,
				to_new: toNew
			}) + "\n"
		);
	}
}

/* ---- main ------------------------------------------------------------- */

const cmd = process.argv[2];
const run = { rr, events, keymove, worker: () => worker(process.argv[3]) }[cmd];
if (!run) {
	process.stderr.write("usage: moleculer_bench.js rr|events|keymove [options]\n");
	process.exit(2);
}
Promise.resolve()
	.then(run)
	.then(() => {
		if (cmd !== "worker") process.exit(0);
	})
	.catch(e => {
		process.stderr.write(`moleculer_bench: ${e && e.stack ? e.stack : e}\n`);
		killChildren();
		process.exit(1);
	});
