//! Validation of a route's `kafka` table (async routes, HTTP → Kafka): topic, brokers (the
//! route's own or `[analytics.kafka]`'s), key source, record headers, acks, timeout, body bound
//! and methods, each problem reported with its key path.

use super::file::KafkaRouteFile;
use crate::config::kafka_route::*;
use crate::config::route::file::RouteFile;
use crate::config::validate::{join, Checker};
use crate::config::*;

/// Longest accepted `timeout` (librdkafka's `message.timeout.ms` must fit; a client waits this).
const MAX_KAFKA_ROUTE_TIMEOUT: Duration = Duration::from_secs(300);

impl Checker {
    /// `routes[i].kafka` (a route with it has neither `upstream` nor `respond`).
    pub(in crate::config) fn kafka_route(
        &mut self,
        path: &str,
        r: &RouteFile,
    ) -> Option<RouteTarget> {
        let k = r.kafka.clone()?;
        let before = self.problems.len();
        for (key, set) in [
            ("upstream", r.upstream.is_some()),
            ("respond", r.respond.is_some()),
            ("split", r.split.is_some()),
            ("split_by", r.split_by.is_some()),
            ("body", r.body.is_some()),
            ("location", r.location.is_some()),
            ("content_type", r.content_type.is_some()),
        ] {
            if set {
                self.problem(
                    join(path, key),
                    "not with `kafka` (the route produces to Kafka)",
                );
            }
        }
        if r.max_body_bytes.is_some() {
            let msg = "not with `kafka` (its `max_bytes` bounds the body)";
            self.problem(join(path, "max_body_bytes"), msg);
        }
        let path = join(path, "kafka");
        let route = self.kafka_table(&path, k);
        (self.problems.len() == before).then_some(RouteTarget::Kafka(route))
    }

    fn kafka_table(&mut self, path: &str, k: KafkaRouteFile) -> KafkaRoute {
        let topic = k.topic.unwrap_or_default();
        if topic.is_empty() {
            self.problem(join(path, "topic"), "required: the topic records go to");
        } else {
            self.topic(&join(path, "topic"), &topic);
        }
        let brokers = match (k.brokers, &self.analytics_brokers) {
            (Some(b), _) => b,
            (None, Some(b)) => b.clone(),
            (None, None) => {
                let msg = "required (or set [analytics.kafka].brokers, which routes then use)";
                self.problem(join(path, "brokers"), msg);
                Vec::new()
            }
        };
        if !brokers.is_empty() {
            self.brokers(&join(path, "brokers"), &brokers);
        }
        let key = self.kafka_key(&join(path, "key"), k.key.as_deref());
        let headers = k.headers.unwrap_or_default();
        let headers = headers
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                let name = http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes());
                name.map_err(|_| {
                    let msg = format!("{h:?} is not a header name");
                    self.problem(format!("{path}.headers[{i}]"), msg)
                })
                .ok()
            })
            .collect();
        let acks = match k.acks.as_deref().map(|n| (n, KafkaAcks::parse(n))) {
            None => DEFAULT_KAFKA_ROUTE_ACKS,
            Some((_, Some(acks))) if acks != KafkaAcks::None => acks,
            Some((other, _)) => {
                let msg = format!(
                    "{other:?}: expected \"all\" or \"leader\" (a 202 promises the broker has \
                     the record, so not \"none\")"
                );
                self.problem(join(path, "acks"), msg);
                DEFAULT_KAFKA_ROUTE_ACKS
            }
        };
        let timeout_path = join(path, "timeout");
        let timeout = self.duration(
            &timeout_path,
            k.timeout.as_deref(),
            DEFAULT_KAFKA_ROUTE_TIMEOUT,
            false,
        );
        if timeout > MAX_KAFKA_ROUTE_TIMEOUT || timeout < Duration::from_millis(1) {
            let msg = format!("from 1ms to {}s", MAX_KAFKA_ROUTE_TIMEOUT.as_secs());
            self.problem(timeout_path, msg);
        }
        let max_bytes = self.int(
            &join(path, "max_bytes"),
            k.max_bytes,
            1,
            MAX_KAFKA_ROUTE_BYTES as i64,
            DEFAULT_KAFKA_ROUTE_MAX_BYTES as i64,
        ) as u64;
        let methods = self.kafka_methods(path, k.methods);
        KafkaRoute {
            topic,
            brokers,
            key,
            headers,
            acks,
            timeout,
            max_bytes,
            methods,
        }
    }

    fn kafka_key(&mut self, path: &str, key: Option<&str>) -> KafkaKey {
        let Some(key) = key else {
            return KafkaKey::None;
        };
        if key == "none" {
            return KafkaKey::None;
        }
        if let Some(h) = key.strip_prefix("header:") {
            if let Ok(h) = http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
                return KafkaKey::Header(h);
            }
        }
        if let Some(n) = key.strip_prefix("path:") {
            if let Ok(n @ 1..=64) = n.parse::<usize>() {
                return KafkaKey::PathSegment(n);
            }
        }
        let msg = format!(
            "{key:?}: expected \"none\", \"header:NAME\" or \"path:N\" (N from 1 to 64, the \
             N-th path segment)"
        );
        self.problem(path, msg);
        KafkaKey::None
    }

    fn kafka_methods(&mut self, path: &str, methods: Option<Vec<String>>) -> Vec<http::Method> {
        let Some(methods) = methods else {
            return vec![http::Method::POST];
        };
        if methods.is_empty() {
            self.problem(join(path, "methods"), "must list at least one method");
        }
        let mut out = Vec::new();
        for (i, m) in methods.iter().enumerate() {
            match http::Method::from_bytes(m.as_bytes()) {
                Ok(m)
                    if m != http::Method::CONNECT
                        && m.as_str().bytes().all(|b| !b.is_ascii_lowercase()) =>
                {
                    out.push(m)
                }
                _ => self.problem(
                    format!("{path}.methods[{i}]"),
                    format!("{m:?} is not a method a route can take (upper case, e.g. \"POST\")"),
                ),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::config::kafka_route::KafkaKey;
    use crate::config::{parse, KafkaAcks, RouteTarget};
    use std::time::Duration;

    const TOP: &str =
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n\n[upstreams.a]\nbackends = [\"127.0.0.1:1\"]\n";

    fn problems(rest: &str) -> Vec<String> {
        crate::config::validate::problems_of(&format!("{TOP}\n{rest}"))
    }

    fn has(p: &[String], want: &str) {
        assert!(
            p.iter().any(|x| x.starts_with(want)),
            "{want:?} not in {p:#?}"
        );
    }

    #[test]
    fn a_kafka_route_is_read_with_its_defaults() {
        let text = format!(
            "{TOP}\n[[routes]]\npath_prefix = \"/ingest/\"\nkafka = {{ topic = \"load_test_topic\", brokers = [\"127.0.0.1:9092\"] }}\n\n[[routes]]\nupstream = \"a\"\n"
        );
        let c = parse(&text).unwrap();
        let RouteTarget::Kafka(k) = &c.routes[0].target else {
            panic!("{:?}", c.routes[0].target);
        };
        assert_eq!(k.topic, "load_test_topic");
        assert_eq!(k.brokers, ["127.0.0.1:9092"]);
        assert_eq!(k.key, KafkaKey::None);
        assert!(k.headers.is_empty());
        assert_eq!(k.acks, KafkaAcks::All);
        assert_eq!(k.timeout, Duration::from_secs(5));
        assert_eq!(k.max_bytes, 1 << 20);
        assert_eq!(k.methods, [http::Method::POST]);
        assert!(
            c.summary().contains("-> kafka:load_test_topic"),
            "{}",
            c.summary()
        );
    }

    #[test]
    fn every_key_is_read_and_brokers_default_to_analytics() {
        let text = format!(
            "{TOP}\n[analytics.kafka]\nbrokers = [\"10.0.0.1:9092\"]\n\n[[routes]]\npath_prefix = \"/k/\"\nkafka = {{ topic = \"t\", key = \"header:X-Key\", headers = [\"X-Request-Id\", \"x-tenant\"], acks = \"leader\", timeout = \"250ms\", max_bytes = 10, methods = [\"POST\", \"PUT\"] }}\n\n[[routes]]\npath_prefix = \"/p/\"\nkafka = {{ topic = \"t\", key = \"path:2\" }}\n"
        );
        let c = parse(&text).unwrap();
        let RouteTarget::Kafka(k) = &c.routes[0].target else {
            panic!()
        };
        assert_eq!(k.brokers, ["10.0.0.1:9092"]);
        assert_eq!(
            k.key,
            KafkaKey::Header(http::HeaderName::from_static("x-key"))
        );
        assert_eq!(k.headers, ["x-request-id", "x-tenant"]);
        assert_eq!(k.acks, KafkaAcks::Leader);
        assert_eq!(k.timeout, Duration::from_millis(250));
        assert_eq!(k.max_bytes, 10);
        assert_eq!(k.methods, [http::Method::POST, http::Method::PUT]);
        let RouteTarget::Kafka(p) = &c.routes[1].target else {
            panic!()
        };
        assert_eq!(p.key, KafkaKey::PathSegment(2));
    }

    #[test]
    fn every_problem_is_reported_at_its_key() {
        let p = problems(
            "[[routes]]\npath_prefix = \"/a/\"\nkafka = { topic = \"bad topic\", brokers = [\"nohost\"], key = \"cookie:x\", headers = [\"bad header\"], acks = \"none\", timeout = \"0s\", max_bytes = 0, methods = [\"get\"] }\nmirror = { upstream = \"a\" }\n\n\
             [[routes]]\npath_prefix = \"/b/\"\nkafka = { topic = \"t\" }\n\n\
             [[routes]]\npath_prefix = \"/c/\"\nupstream = \"a\"\nkafka = { topic = \"t\", brokers = [\"h:1\"], methods = [] }\nmax_body_bytes = 5\nsplit = [{ upstream = \"a\" }]\nsplit_by = \"client\"\n\n\
             [[routes]]\npath_prefix = \"/d/\"\nkafka = { brokers = [\"h:1\"], key = \"path:0\" }\nreplace_prefix = \"/x/\"\nrate_limits = []\n\n\
             [[routes]]\npath_prefix = \"/e/\"\nkafka = { topic = \"t\", brokers = [\"h:1\"], typo = 1 }\n",
        );
        has(&p, "routes[4].kafka.typo: unknown field `typo`");
        has(
            &p,
            "routes[0].mirror: only applies to routes with an upstream",
        );
        has(
            &p,
            "routes[0].kafka.topic: \"bad topic\" is not a topic name",
        );
        has(
            &p,
            "routes[0].kafka.brokers[0]: \"nohost\" is not host:port",
        );
        has(&p, "routes[0].kafka.key: \"cookie:x\": expected");
        has(
            &p,
            "routes[0].kafka.headers[0]: \"bad header\" is not a header name",
        );
        has(
            &p,
            "routes[0].kafka.acks: \"none\": expected \"all\" or \"leader\"",
        );
        has(&p, "routes[0].kafka.timeout: must be greater than zero");
        has(&p, "routes[0].kafka.max_bytes: must be at least 1");
        has(&p, "routes[0].kafka.methods[0]: \"get\" is not a method");
        has(
            &p,
            "routes[1].kafka.brokers: required (or set [analytics.kafka].brokers",
        );
        has(&p, "routes[2].upstream: not with `kafka`");
        has(&p, "routes[2].max_body_bytes: not with `kafka`");
        has(&p, "routes[2].split: not with `kafka`");
        has(&p, "routes[2].split_by: not with `kafka`");
        has(&p, "routes[2].kafka.methods: must list at least one method");
        has(&p, "routes[3].kafka.topic: required");
        has(&p, "routes[3].kafka.key: \"path:0\": expected");
        has(
            &p,
            "routes[3].replace_prefix: only applies to routes with an upstream",
        );
        has(
            &p,
            "routes[3].rate_limits: only applies to routes with an upstream",
        );
    }
}
