#!/usr/bin/env python3
"""Spark Structured Streaming over lb's analytics records (`[analytics.kafka]`).

Reads the topic, parses the JSON records and keeps two running aggregates on the console:
records per `metric_type`, and per backend per minute from `request` records (requests, 5xx,
p99 latency approximated with `percentile_approx`).

  spark-submit --packages org.apache.spark:spark-sql-kafka-0-10_2.12:3.5.1 spark_job.py \
      --bootstrap 127.0.0.1:9092 --topic load_metrics

The Kafka source (`spark-sql-kafka-0-10`) comes from Maven via `--packages`; match its Scala and
Spark versions to your Spark. lb's tests do not run this job (no Spark or Maven here).
"""

import argparse

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

# The union of the three record types' fields (absent fields are null).
SCHEMA = StructType(
    [
        StructField("metric_type", StringType()),
        StructField("ts", StringType()),
        StructField("ts_ms", LongType()),
        # request
        StructField("method", StringType()),
        StructField("path", StringType()),
        StructField("status", LongType()),
        StructField("upstream", StringType()),
        StructField("backend", StringType()),
        StructField("attempts", LongType()),
        StructField("duration_ms", DoubleType()),
        StructField("bytes_in", LongType()),
        StructField("bytes_out", LongType()),
        StructField("protocol", StringType()),
        StructField("grpc_status", LongType()),  # gRPC calls only
        # summary
        StructField("requests", LongType()),
        StructField("errors_4xx", LongType()),
        StructField("errors_5xx", LongType()),
        StructField("p50_ms", DoubleType()),
        StructField("p90_ms", DoubleType()),
        StructField("p99_ms", DoubleType()),
        StructField("in_flight", LongType()),
        StructField("state", StringType()),
        # event
        StructField("kind", StringType()),
        StructField("message", StringType()),
    ]
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--topic", default="load_metrics")
    args = ap.parse_args()

    spark = SparkSession.builder.appName("lb-load-metrics").getOrCreate()
    raw = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", args.bootstrap)
        .option("subscribe", args.topic)
        .option("startingOffsets", "latest")
        .load()
    )
    records = raw.select(
        F.col("key").cast("string").alias("key"),
        F.from_json(F.col("value").cast("string"), SCHEMA).alias("r"),
    ).select("key", "r.*")
    records = records.withColumn("event_time", (F.col("ts_ms") / 1000).cast("timestamp"))

    by_type = records.groupBy("metric_type").count()

    per_backend = (
        records.where(F.col("metric_type") == "request")
        .withWatermark("event_time", "2 minutes")
        .groupBy(F.window("event_time", "1 minute"), "upstream", "backend")
        .agg(
            F.count("*").alias("requests"),
            F.sum(F.when(F.col("status") >= 500, 1).otherwise(0)).alias("errors_5xx"),
            F.percentile_approx("duration_ms", 0.99).alias("p99_ms"),
        )
    )

    q1 = by_type.writeStream.outputMode("complete").format("console").start()
    q2 = per_backend.writeStream.outputMode("update").format("console").option("truncate", False).start()
    q1.awaitTermination()
    q2.awaitTermination()


if __name__ == "__main__":
    main()
