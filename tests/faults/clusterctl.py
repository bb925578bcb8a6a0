#!/usr/bin/env python3
"""clusterctl.py - reads a nats-server cluster's monitoring ports (for
cluster.sh; python3 only, proxies ignored).

  clusterctl.py PORTS ready          0 when every node that is up answers
                                     /healthz "ok", all of them name the same
                                     JetStream meta leader, and that leader
                                     lists each of them as current; prints
                                     the leader's index.  1 with the reason
                                     on stderr otherwise.
  clusterctl.py PORTS node-ready I   0 when node I answers /healthz "ok"
                                     (2.9.10: JetStream current with the
                                     meta leader and every stream and
                                     consumer it holds caught up), sees a
                                     meta leader, and the leader lists it as
                                     current (when I is not the leader).
  clusterctl.py PORTS meta-leader    the meta leader's index (nothing: none)
  clusterctl.py PORTS stream NAME    one JSON line about stream NAME as the
                                     nodes that are up report it:
                                     {"leader": i|null, "nodes": [i...],
                                      "replicas": R, "current": bool,
                                      "lag": n, "messages": n, "last_seq": n,
                                      "per_node": {"nI": [messages,
                                                   first_seq, last_seq]}}
                                     "current": every replica the leader
                                     lists is current; "nodes" lists the
                                     nodes holding it (leader first);
                                     "per_node": each node's own copy as
                                     it reports it (replicas can differ:
                                     compare them to find leftovers).

PORTS: monitoring ports of nodes 1..N, comma-separated, "-" for a node that
is down.  Nodes are named n1..nN (cluster.sh's --server_name).
"""
import json
import sys
import urllib.request

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(port, path, timeout=2.0):
    with OPENER.open("http://127.0.0.1:%s%s" % (port, path),
                     timeout=timeout) as r:
        return json.loads(r.read().decode())


def healthz(port):
    try:
        return get(port, "/healthz")
    except urllib.error.HTTPError as e:  # 503 with a JSON body
        try:
            return json.loads(e.read().decode())
        except ValueError:
            return {"status": "unavailable", "error": str(e)}
    except (OSError, ValueError) as e:
        return {"status": "unavailable", "error": str(e)}


def jsz(port, query=""):
    try:
        return get(port, "/jsz" + query)
    except (OSError, ValueError):
        return None


def up_nodes(ports):
    return [(i + 1, p) for i, p in enumerate(ports) if p != "-"]


def index(name):
    return int(name[1:]) if name and name.startswith("n") else None


def meta(ports):
    """{index: meta_cluster} for the nodes that answer."""
    out = {}
    for i, p in up_nodes(ports):
        j = jsz(p)
        if j is not None:
            out[i] = j.get("meta_cluster") or {}
    return out


def cmd_ready(ports):
    nodes = up_nodes(ports)
    for i, p in nodes:
        h = healthz(p)
        if h.get("status") != "ok":
            return fail("n%d healthz: %s" % (i, h.get("error", h)))
    m = meta(ports)
    leaders = {mc.get("leader") for mc in m.values()}
    if len(m) != len(nodes) or len(leaders) != 1 or not next(iter(leaders)):
        return fail("meta leaders seen: %s" %
                    {i: mc.get("leader") for i, mc in m.items()})
    leader = index(next(iter(leaders)))
    if leader not in m:
        return fail("meta leader n%s is not up" % leader)
    current = {r["name"] for r in m[leader].get("replicas") or []
               if r.get("current")}
    for i, _ in nodes:
        if i != leader and "n%d" % i not in current:
            return fail("n%d not current with meta leader n%d" % (i, leader))
    print(leader)
    return 0


def cmd_node_ready(ports, i):
    if i < 1 or i > len(ports) or ports[i - 1] == "-":
        return fail("n%d is down" % i)
    h = healthz(ports[i - 1])
    if h.get("status") != "ok":
        return fail("n%d healthz: %s" % (i, h.get("error", h)))
    m = meta(ports)
    mine = m.get(i, {}).get("leader")
    if not mine:
        return fail("n%d sees no meta leader" % i)
    leader = index(mine)
    if leader == i:
        return 0
    if leader not in m:
        return fail("meta leader n%d is not up" % leader)
    for r in m[leader].get("replicas") or []:
        if r.get("name") == "n%d" % i and r.get("current"):
            return 0
    return fail("n%d not current with meta leader n%d" % (i, leader))


def cmd_meta_leader(ports):
    m = meta(ports)
    for i, mc in m.items():
        if mc.get("leader") == "n%d" % i:  # the leader's own word
            print(i)
            return 0
    return 1


def cmd_stream(ports, name):
    q = "?accounts=true&streams=true&config=true"
    seen = {}
    for i, p in up_nodes(ports):
        j = jsz(p, q)
        if not j:
            continue
        for acc in j.get("account_details") or []:
            for s in acc.get("stream_detail") or []:
                if s.get("name") == name:
                    seen[i] = s
    leader = None
    for i, s in seen.items():
        cl = s.get("cluster") or {}
        # An R1 stream in a cluster names its host as leader; a stream
        # on a single server has no cluster block.
        if cl.get("leader") == "n%d" % i or (not cl and len(seen) == 1):
            leader = i
    out = {"leader": leader, "nodes": [], "replicas": None,
           "current": False, "lag": None, "messages": None, "last_seq": None,
           "per_node": {}}
    for i, s in seen.items():  # each node's own copy: replicas may differ
        st = s.get("state") or {}
        out["per_node"]["n%d" % i] = [st.get("messages"), st.get("first_seq"),
                                      st.get("last_seq")]
    if leader is not None:
        s = seen[leader]
        reps = (s.get("cluster") or {}).get("replicas") or []
        out["replicas"] = (s.get("config") or {}).get("num_replicas")
        out["current"] = all(r.get("current") for r in reps) and \
            len(reps) + 1 >= (out["replicas"] or 1)
        out["lag"] = sum(r.get("lag", 0) for r in reps)
        out["messages"] = (s.get("state") or {}).get("messages")
        out["last_seq"] = (s.get("state") or {}).get("last_seq")
    out["nodes"] = ([leader] if leader else []) + sorted(
        i for i in seen if i != leader)
    print(json.dumps(out))
    return 0 if leader is not None else 1


def fail(msg):
    print(msg, file=sys.stderr)
    return 1


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    ports = argv[0].split(",")
    cmd = argv[1]
    if cmd == "ready":
        return cmd_ready(ports)
    if cmd == "node-ready" and len(argv) == 3:
        return cmd_node_ready(ports, int(argv[2]))
    if cmd == "meta-leader":
        return cmd_meta_leader(ports)
    if cmd == "stream" and len(argv) == 3:
        return cmd_stream(ports, argv[2])
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
