#!/usr/bin/env bash
# test_handover.sh - a shard joins while another is busy: the partitions
# it takes from the live one are handed over without a stall.
#
# A shard that stops pulling a consumer (the view changed) hands back
# (NAKs) what its last pull requests still deliver.  A NAKed message
# stays pending until somebody pulls it (docs/nats-notes.md, c6), so a new
# owner that waited for the consumer to have nothing pending before it
# pulled waited for nothing, up to its bound of 2 x AckWait (80 s seen
# under ASan in test_distributed).  It now asks the old owner whether it
# has let go (puller.c, prev_let_go).
#
# Asserted first: the question's answers for a consumer the shard pulls
# ("busy"), one it has no puller of ("-"), and no answer to an empty one.
# Then, with AckWait 300 s (so that the old stall, 600 s, is far
# past the test's ordinary patience of 120 s for outcomes): a second
# shard joining during a steady stream of inputs, where the first one
# hands messages back, takes them over as a handover that says so
# ("handed_back":true), and every input gets its one outcome.  The old
# owner hands messages back only when its last pull request still
# delivers after the view change: a round where it did not is run again
# (3 rounds at most), and then the test is skipped (exit 77) as unable to
# make the case.  Exit 77 without nats-server.
. "$(dirname "$0")/../integ/lib.sh"
. "$(dirname "$0")/../integ/nats.sh"
CHECK="python3 $(dirname "$0")/../integ/check_outcomes.py"
SLOW=${LUCENT_TEST_SLOW:-1}
N=${LUCENT_TEST_FAULT_EVENTS:-20000}
[ "$N" -le 6000 ] || N=6000 # a steady stream while b joins is enough
ACK_WAIT_MS=$((300000 * SLOW))

nats_start
trap 'cleanup_shards; nats_stop; [ -n "${LUCENT_TEST_KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T"' EXIT

serve() { # serve ID
  "$LUCENT" serve --nats "$NATS_URL" --shard "$1" --plugin "$LUCENT_PLUGIN" \
    --ack-wait-ms "$ACK_WAIT_MS" --log-format json \
    >> "$T/$1.out" 2>> "$T/$1.log" &
  SHARD_PIDS+=($!)
}

# The question itself: a consumer this shard pulls is busy, one it has
# no puller of is "-" (not "let go": that would clear a dead shard's
# suspects), and a question without a consumer name gets no answer.
REQ="python3 $(dirname "$0")/natsreq.py --servers $NATS_URL --timeout 2"
serve q
wait_view q "q"
for _ in $(seq 1 $((100 * SLOW))); do # until q pulls intake-0 (its claimer)
  [ "$($REQ req lucent.held.q intake-0)" = busy ] && break
  sleep 0.1
done
[ "$($REQ req lucent.held.q intake-0)" = busy ] || fail "held: a pulled consumer is not busy: $($REQ req lucent.held.q intake-0)"
[ "$($REQ req lucent.held.q no-such-consumer)" = - ] || fail "held: an unknown consumer is not '-'"
rc=0
$REQ req lucent.held.q "" > /dev/null 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "held: an empty question was answered (natsreq exit $rc)"
cleanup_shards
pass "the handover question: busy, unknown, and an empty one unanswered"

made=
for round in 1 2 3; do
  a=a$round b=b$round # new shards each round
  serve "$a"
  wait_view "$a" "$a"
  "$LUCENT_GEN" -n "$N" --seed $((20 + round)) > "$T/in$round.jsonl" 2>/dev/null
  base=$(count)
  # A steady stream, one event per message (no packs), 200 at a time
  # for ~8 s: pull requests of a's are open and delivering when b joins.
  split -l 200 "$T/in$round.jsonl" "$T/chunk$round."
  (for c in "$T/chunk$round".*; do
     "$LUCENT" publish --nats "$NATS_URL" --pack 1 --input "$c" > /dev/null || exit 1
     sleep 0.15
   done) > "$T/pub$round.out" 2>&1 &
  pub=$!
  for _ in $(seq 1 $((100 * SLOW))); do # a is well under way
    [ $(($(count) - base)) -gt 1000 ] && break
    sleep 0.1
  done
  serve "$b"
  wait_view "$a" "$a,$b"
  wait_view "$b" "$a,$b"
  wait "$pub" || fail "publish (round $round): $(tail -2 "$T/pub$round.out")"
  store_outcomes "$T/in$round.jsonl" 120 "$base"
  $CHECK "$T/in$round.jsonl" "$T/stored.jsonl" || fail "books (round $round)"
  cleanup_shards
  if grep -q '"msg":"handed back' "$T/$a.log"; then
    grep -q '"how":"handover".*"handed_back":true' "$T/$b.log" ||
      fail "a handed messages back, but b never took a consumer as a handover of them: $(grep '"msg":"took' "$T/$b.log" | head -3)"
    made=$round
    break
  fi
  echo "# round $round: a handed nothing back (no pull request open at the view change); again"
done
if [ -z "$made" ]; then
  echo "skip: a never handed messages back in 3 rounds: the case was not made"
  exit 77
fi
pass "handover after a hand-back: no stall, every input one outcome (round $made)"
echo "2 passed, 0 failed"
