#!/usr/bin/env python3
"""Reads lb's analytics records back from Kafka for the integration test, with kafka-python (not
lb's code, not librdkafka).

  consume.py --bootstrap HOST:PORT --topic T [--want-type request --want N] [--timeout S]
      Reads every partition from the earliest offset (no consumer group: partitions are assigned)
      until N records of --want-type were seen and every partition is read to its end, or the
      timeout passed. Prints one JSON object: {"records": [{"partition", "key", "value"}...]}
      where value is the record parsed as JSON.
      With --raw: every record counts towards N, and each is {"partition", "offset", "key",
      "value", "headers": [[name, value]...]} with key, value and header values in hex.
  consume.py produce --bootstrap HOST:PORT --topic T < lines
      Sends each stdin line (a JSON record) keyed by its "upstream/backend"; prints {"sent": N}.
"""

import argparse
import json
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def consume(args):
    c = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=200,
    )
    deadline = time.time() + args.timeout
    parts = None
    while parts is None and time.time() < deadline:
        parts = c.partitions_for_topic(args.topic)
        if parts is None:
            time.sleep(0.05)
    tps = [TopicPartition(args.topic, p) for p in sorted(parts or [])]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    records, seen = [], 0
    while True:
        batch = c.poll(timeout_ms=200, max_records=10000)
        for tp, msgs in batch.items():
            for m in msgs:
                if args.raw:
                    records.append(raw_record(tp.partition, m))
                    seen += 1
                    continue
                value = json.loads(m.value)
                records.append({"partition": tp.partition, "key": m.key.decode() if m.key else None, "value": value})
                if value.get("metric_type") == args.want_type:
                    seen += 1
        at_end = all(c.position(tp) >= off for tp, off in c.end_offsets(tps).items()) if tps else False
        if (seen >= args.want and at_end) or time.time() >= deadline:
            break
    c.close()
    print(json.dumps({"records": records}))


def hexed(b):
    return None if b is None else b.hex()


def raw_record(partition, m):
    return {
        "partition": partition,
        "offset": m.offset,
        "key": hexed(m.key),
        "value": hexed(m.value),
        "headers": [[k, hexed(v)] for k, v in (m.headers or [])],
    }


def produce(args):
    p = KafkaProducer(bootstrap_servers=args.bootstrap)
    n = 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        v = json.loads(line)
        key = "%s/%s" % (v.get("upstream", ""), v.get("backend", ""))
        p.send(args.topic, key=key.encode(), value=line.encode())
        n += 1
    p.flush(10)
    p.close()
    print(json.dumps({"sent": n}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", nargs="?", default="consume", choices=["consume", "produce"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--want-type", default="request")
    ap.add_argument("--want", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--raw", action="store_true")
    args = ap.parse_args()
    (produce if args.mode == "produce" else consume)(args)


if __name__ == "__main__":
    main()
