#!/usr/bin/env python3
"""Live per-backend rate, errors and p99 from lb's `summary` records on Kafka (kafka-python).

lb (with `[analytics.kafka] records = ["summary", ...]`) sends one summary record per backend per
second; this prints, for each second that completes, one line per backend:

    upstream/backend            req/s   4xx/s   5xx/s    p99 ms  state

  pip install kafka-python
  python3 consumer.py --bootstrap 127.0.0.1:9092 [--topic load_metrics] [--from-beginning]
  python3 consumer.py --bootstrap 127.0.0.1:9092 --once    # what is on the topic now, then exit

Records of other types (`request`, `event`) on the same topic are skipped. No consumer group is
joined (partitions are assigned), so any number of these can watch side by side.
"""

import argparse
import json
import sys
import time

from kafka import KafkaConsumer, TopicPartition


def fmt_ms(v):
    return "-" if v is None else "%.2f" % v


def print_second(ts, rows, out):
    out.write("-- %s\n" % ts)
    out.write("%-32s %8s %7s %7s %9s  %s\n" % ("upstream/backend", "req/s", "4xx/s", "5xx/s", "p99 ms", "state"))
    for key in sorted(rows):
        r = rows[key]
        out.write(
            "%-32s %8d %7d %7d %9s  %s\n"
            % (key, r.get("requests", 0), r.get("errors_4xx", 0), r.get("errors_5xx", 0), fmt_ms(r.get("p99_ms")), r.get("state", ""))
        )
    out.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--topic", default="load_metrics")
    ap.add_argument("--from-beginning", action="store_true", help="start at the earliest offset (default: new records only)")
    ap.add_argument("--once", action="store_true", help="read the topic from the beginning to its end, print, exit")
    ap.add_argument("--max-records", type=int, default=0, help="exit after this many summary records (0: never)")
    ap.add_argument("--timeout", type=float, default=10.0, help="with --once: give up after this many seconds")
    args = ap.parse_args()

    c = KafkaConsumer(bootstrap_servers=args.bootstrap, group_id=None, enable_auto_commit=False)
    parts = c.partitions_for_topic(args.topic) or set()
    tps = [TopicPartition(args.topic, p) for p in sorted(parts)]
    if not tps:
        sys.exit("topic %s not found on %s" % (args.topic, args.bootstrap))
    c.assign(tps)
    if args.from_beginning or args.once:
        c.seek_to_beginning(*tps)
    else:
        c.seek_to_end(*tps)
    end = c.end_offsets(tps) if args.once else None
    deadline = time.time() + args.timeout

    # Samples of the second being filled, by ts_ms; a second is printed once a later one starts.
    seconds, printed, count = {}, -1, 0
    while True:
        for msgs in c.poll(timeout_ms=500).values():
            for m in msgs:
                try:
                    v = json.loads(m.value)
                except ValueError:
                    continue
                if v.get("metric_type") != "summary" or v.get("ts_ms", 0) <= printed:
                    continue
                key = "%s/%s" % (v.get("upstream", ""), v.get("backend", ""))
                seconds.setdefault(v["ts_ms"], ({}, v.get("ts", "")))[0][key] = v
                count += 1
        done = [t for t in sorted(seconds) if t < max(seconds, default=0)]
        for t in done:
            rows, ts = seconds.pop(t)
            print_second(ts, rows, sys.stdout)
            printed = t
        limit = args.max_records and count >= args.max_records
        at_end = args.once and all(c.position(tp) >= off for tp, off in end.items())
        if limit or at_end or (args.once and time.time() >= deadline):
            for t in sorted(seconds):
                print_second(seconds[t][1], seconds[t][0], sys.stdout)
            break
    c.close()


if __name__ == "__main__":
    main()
