"""Sends numbered click events to a local cluster's HTTP ingest, and checks its output.

  events.py send DIR FIRST COUNT   requests FIRST..FIRST+COUNT-1 of producer "example"
  events.py check DIR              every acknowledged event in DIR/out exactly once, with the
                                   running count a reference computes

Each request carries the producer id and its sequence number, so a retry (to another node,
after a failure) is applied once. Acknowledged requests are appended to DIR/acked.txt.
"""
import collections, glob, json, os, sys, time, urllib.error, urllib.request

ROWS = 50
USERS = 13


def apis(dir):
    with open(os.path.join(dir, "nodes", "cluster.json")) as f:
        return [n["api"] for n in json.load(f)["nodes"]]


def rows(seq):
    for r in range(ROWS):
        i = seq * ROWS + r
        yield {"id": i, "user": f"u{i % USERS}", "page": f"/p/{i % 7}"}


def send(dir, first, count):
    doors = apis(dir)
    with open(os.path.join(dir, "acked.txt"), "a") as acked:
        for seq in range(first, first + count):
            body = "".join(json.dumps(r) + "\n" for r in rows(seq)).encode()
            deadline = time.time() + 60
            for attempt in range(10_000):
                door = doors[(seq + attempt) % len(doors)]
                req = urllib.request.Request(
                    f"http://{door}/ingest/clicks", data=body, method="POST",
                    headers={"X-Quiver-Producer": "example", "X-Quiver-Seq": str(seq)})
                try:
                    with urllib.request.urlopen(req, timeout=15) as answer:
                        if answer.status == 200:
                            acked.write(f"{seq}\n")
                            acked.flush()
                            break
                except (urllib.error.URLError, OSError) as e:
                    if time.time() > deadline:
                        sys.exit(f"request {seq} not acknowledged within 60 s: {e}")
                    time.sleep(0.1)
    print(f"sent requests {first}..{first + count - 1} ({count * ROWS} events), all acknowledged")


def output(dir):
    out = []
    for path in glob.glob(os.path.join(dir, "out", "p*", "part-*.jsonl")):
        with open(path) as f:
            out.extend(json.loads(line) for line in f)
    return out


def check(dir):
    with open(os.path.join(dir, "acked.txt")) as f:
        acked = sorted({int(line) for line in f})
    expected, counts = {}, collections.Counter()
    for seq in acked:
        for r in rows(seq):
            counts[r["user"]] += 1
            expected[r["id"]] = counts[r["user"]]
    deadline = time.time() + 60
    while True:
        got = output(dir)
        if len(got) >= len(expected) or time.time() > deadline:
            break
        time.sleep(0.2)
    ids = collections.Counter(r["id"] for r in got)
    twice = [i for i, n in ids.items() if n > 1]
    missing = [i for i in expected if i not in ids]
    wrong = [r for r in got if expected.get(r["id"]) != r["clicks_so_far"]]
    print(f"{len(expected)} events acknowledged, {len(got)} rows in the output: "
          f"{len(missing)} missing, {len(twice)} twice, {len(wrong)} with a wrong running count")
    if missing or twice or wrong:
        sys.exit("FAILED")
    print("every acknowledged event is in the output exactly once, with the right count")


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        check(sys.argv[2])
