/*
 * peer_util.js - what bullmq_bench.js and kill_bench.js share: options,
 * bench_nats's event generator, CPU time from /proc, percentiles, the JSON
 * lines and CDF rows that report.py reads, and child processes stopped by
 * PID.  (moleculer_bench.js keeps its own copies.)
 */
"use strict";

const fs = require("fs");

function arg(name, def) {
	const i = process.argv.indexOf(name);
	return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

/* bench_nats's generator (gen_events): the same bytes, parsed.  With
 * opts.keys, data.key is one of that many keys (k-00000..) and data.kseq
 * the event's number among its key's events (0, 1, ...), in publish
 * order, and (unless opts.subjects is "stream") the CloudEvent's subject
 * is the key too: lucent keeps the events of one subject in order (its
 * intake partition is the subject's hash; data.key only picks the owner). */
function genEvents(n, type, opts) {
	const nkeys = (opts && opts.keys) || 0;
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
	const kseq = new Map();
	const out = new Array(n);
	for (let i = 0; i < n; i++) {
		const r = next();
		const stream = Number(r % 1000n),
			tenant = Number((r >> 10n) % 8n),
			user = Number((r >> 20n) % 5000n),
			sensor = Number((r >> 33n) % 64n);
		let key = Number((r >> 13n) % 10000n);
		if (nkeys) key %= nkeys;
		const value = Number((r >> 40n) % 100000n) / 100;
		const ms = i % 86400000;
		const data = { seq: i, key: `k-${pad(key, 5)}`, sensor: `s-${pad(sensor, 2)}`, value, unit: "C", ok: (r & 1n) === 1n };
		if (nkeys) {
			const k = kseq.get(data.key) || 0;
			kseq.set(data.key, k + 1);
			data.kseq = k;
		}
		out[i] = {
			specversion: "1.0",
			id: `evt-${nonce}-${pad(i, 10)}`,
			type,
			source: "bench://sensors",
			subject: nkeys && opts.subjects !== "stream" ? data.key : `stream-${pad(stream, 4)}`,
			time: `2025-01-01T${pad(Math.floor(ms / 3600000), 2)}:${pad(Math.floor(ms / 60000) % 60, 2)}:${pad(Math.floor(ms / 1000) % 60, 2)}.${pad(ms % 1000, 3)}Z`,
			correlationid: `corr-${pad(i, 10)}`,
			tenantid: `tenant-${tenant}`,
			userid: `user-${pad(user, 5)}`,
			data
		};
	}
	return out;
}

/* FNV-1a, 32 bits: a key's partition. */
function fnv1a(str) {
	let h = 0x811c9dc5;
	for (let i = 0; i < str.length; i++) {
		h ^= str.charCodeAt(i);
		h = Math.imul(h, 0x01000193) >>> 0;
	}
	return h >>> 0;
}

/* CPU time of a process in ns (utime + stime, and with children also the
 * children it has waited for: redis-server's AOF rewrites are forks). */
function cpuOf(pid, children) {
	if (!pid) return 0;
	try {
		const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
		const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
		let t = Number(f[11]) + Number(f[12]);
		if (children) t += Number(f[13]) + Number(f[14]);
		return t * 1e7; /* ticks (100 Hz) -> ns */
	} catch (e) {
		return 0;
	}
}

function selfCpu() {
	const u = process.cpuUsage();
	return (u.user + u.system) * 1e3;
}

function pct(sorted, q) {
	if (!sorted.length) return 0;
	let k = Math.ceil(q * sorted.length);
	if (k < 1) k = 1;
	if (k > sorted.length) k = sorted.length;
	return sorted[k - 1];
}

function writeCdf(file, system, inflight, round, lat) {
	if (!file || !lat.length) return;
	const qs = [0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0];
	const rows = qs.map(q => `${system},${inflight},${round},${q.toFixed(4)},${(pct(lat, q) / 1e3).toFixed(2)}`);
	fs.appendFileSync(file, rows.join("\n") + "\n");
}

function line(o) {
	process.stdout.write(JSON.stringify(o) + "\n");
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

/* Child processes of this script, stopped by PID: SIGTERM, SIGKILL after
 * `grace` ms; SIGKILL for all of them if this process exits first. */
const children = new Set();
function track(c) {
	children.add(c);
	c.once("exit", () => children.delete(c));
	return c;
}
function stopChild(c, grace) {
	return new Promise(resolve => {
		if (c.exitCode !== null || c.signalCode !== null) return resolve();
		const t = setTimeout(() => c.kill("SIGKILL"), grace || 10000);
		c.once("exit", () => {
			clearTimeout(t);
			resolve();
		});
		c.kill("SIGTERM");
	});
}
function stopAll(grace) {
	return Promise.all([...children].map(c => stopChild(c, grace)));
}
process.on("exit", () => {
	for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});
/* For the client side: a signal ends this process (and so, by the exit
 * handler above, its children). */
function exitOnSignals() {
	for (const sig of ["SIGINT", "SIGTERM"])
		process.on(sig, () => {
			process.stderr.write(`${process.argv[1]}: ${sig}\n`);
			process.exit(130);
		});
}

/* Lines of the execution logs (the peer plugin's and the BullMQ worker's):
 * "<key> <kseq> <monotonic ns> <pid> <attempt>". */
function readExecLogs(files) {
	const ex = [];
	for (const f of files) {
		let text = "";
		try {
			text = fs.readFileSync(f, "utf8");
		} catch (e) {
			continue;
		}
		for (const l of text.split("\n")) {
			const p = l.split(" ");
			if (p.length < 5) continue;
			ex.push({ key: p[0], kseq: Number(p[1]), t: BigInt(p[2]), pid: Number(p[3]), attempt: Number(p[4]) });
		}
	}
	ex.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0));
	return ex;
}

/* Counting newline bytes as they are appended, for a progress figure. */
class LineCounter {
	constructor(files) {
		this.files = files.map(f => ({ f, off: 0, n: 0 }));
	}
	count() {
		let n = 0;
		for (const x of this.files) {
			let fd;
			try {
				fd = fs.openSync(x.f, "r");
			} catch (e) {
				continue;
			}
			const buf = Buffer.allocUnsafe(1 << 16);
			for (;;) {
				const k = fs.readSync(fd, buf, 0, buf.length, x.off);
				if (k <= 0) break;
				for (let i = 0; i < k; i++) if (buf[i] === 10) x.n++;
				x.off += k;
			}
			fs.closeSync(fd);
			n += x.n;
		}
		return n;
	}
}

module.exports = { exitOnSignals, arg, genEvents, fnv1a, cpuOf, selfCpu, pct, writeCdf, line, sleep, track, stopChild, stopAll, children, readExecLogs, LineCounter };
