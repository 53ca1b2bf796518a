#!/usr/bin/env bash
# Cluster mode on one machine: starts a local 3-node cluster, submits clicks.toml, sends events
# over HTTP, kills the leader and then a worker with SIGKILL, restarts them, and shows the
# status at each step; at the end it checks that every acknowledged event is in the output
# exactly once (with the right running count).
set -euo pipefail
cd "$(dirname "$0")/../.."

./plugins/build.sh
cargo build --release -p quiver-cli
Q=$PWD/target/release/quiver
DIR=$PWD/target/cluster-example
rm -rf "$DIR"
mkdir -p "$DIR"
cp examples/cluster/clicks.toml "$DIR/"

step() { echo; echo "== $*"; }
status() { "$Q" cluster status --dir "$DIR/nodes"; }
# node_field ID FIELD: a field of node ID in the local cluster's layout.
node_field() {
  python3 -c 'import json,sys; n=[n for n in json.load(open(sys.argv[1]))["nodes"] if n["id"]==int(sys.argv[2])][0]; print(n[sys.argv[3]])' \
    "$DIR/nodes/cluster.json" "$1" "$2"
}
leader() { "$Q" cluster status --dir "$DIR/nodes" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])'; }
kill9() { pkill -9 -f -- "node --id $1 --data-dir $DIR/nodes/n$1 " ; }
restart() {
  "$Q" node --id "$1" --data-dir "$(node_field "$1" data_dir)" --listen "$(node_field "$1" peer)" \
    --api "$(node_field "$1" api)" >/dev/null 2>>"$DIR/nodes/n$1.log" &
}
wait_until() { # wait_until SECONDS COMMAND...: retries COMMAND until it succeeds
  local until=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > until)); then echo "timed out waiting for: $*"; exit 1; fi
    sleep 0.2
  done
}

step "quiver cluster up --nodes 3 --dir $DIR/nodes"
"$Q" cluster up --nodes 3 --dir "$DIR/nodes" 2>"$DIR/up.log" &
UP=$!
# Stops the cluster (its nodes take a final checkpoint), and the nodes restarted by hand.
trap 'kill -TERM $UP 2>/dev/null || true; pkill -TERM -f -- "--data-dir $DIR/nodes/" || true; wait || true' EXIT
wait_until 60 status
status

step "quiver cluster submit clicks.toml"
"$Q" cluster submit "$DIR/clicks.toml" --dir "$DIR/nodes"

step "sending events to every node's ingest"
python3 examples/cluster/events.py send "$DIR" 0 40
status

L=$(leader)
step "kill -9 the leader (node $L), and keep sending"
kill9 "$L"
python3 examples/cluster/events.py send "$DIR" 40 40
status
step "node $L restarted: it rejoins as a follower and catches up"
restart "$L"
wait_until 30 "$Q" cluster status --addr "$(node_field "$L" peer)" --local
sleep 1
status

L=$(leader)
W=$(( L % 3 + 1 ))
step "kill -9 a worker (node $W), and keep sending: its partitions move to the others"
kill9 "$W"
python3 examples/cluster/events.py send "$DIR" 80 40
sleep 2
status
step "node $W restarted"
restart "$W"
wait_until 30 "$Q" cluster status --addr "$(node_field "$W" peer)" --local
python3 examples/cluster/events.py send "$DIR" 120 20
sleep 1
status

step "checking the output in $DIR/out"
python3 examples/cluster/events.py check "$DIR"
