//! Validation of a route's answer of its own (`respond` with `body`, `location` and
//! `content_type`), each problem with its key path.

use super::{is_redirect, Respond, Template};
use crate::config::route::file::RouteFile;
use crate::config::validate::{join, Checker};
use crate::config::RouteTarget;

impl Checker {
    /// A `respond` route: its status with the `body`, `location` and `content_type` that go
    /// with it (`None` on any problem).
    pub(in crate::config) fn respond(
        &mut self,
        path: &str,
        r: &RouteFile,
        status: i64,
    ) -> Option<RouteTarget> {
        let before = self.problems.len();
        if !(200..=599).contains(&status) {
            self.problem(join(path, "respond"), "must be a status from 200 to 599");
        }
        let status = status.clamp(200, 599) as u16;
        let mut template = |key: &str, text: &Option<String>| {
            let t = text.as_deref().map(Template::parse)?;
            t.map_err(|m| self.problem(join(path, key), m)).ok()
        };
        let body = template("body", &r.body);
        let location = template("location", &r.location);
        if r.location
            .as_deref()
            .is_some_and(|l| l.chars().any(char::is_control))
        {
            self.problem(
                join(path, "location"),
                "must not contain control characters (it is a header value)",
            );
        }
        if matches!(status, 204 | 304) && r.body.is_some() {
            self.problem(join(path, "body"), format!("a {status} answer has no body"));
        }
        if let Some(t) = &r.content_type {
            let valid = !t.trim().is_empty() && http::HeaderValue::from_str(t).is_ok();
            if !valid {
                self.problem(
                    join(path, "content_type"),
                    "must be a header value, e.g. \"application/json\"",
                );
            } else if is_redirect(status) || matches!(status, 204 | 304) {
                self.problem(join(path, "content_type"), "only for an answer with a body");
            }
        }
        if is_redirect(status) {
            if r.location.is_none() {
                self.problem(
                    join(path, "location"),
                    format!("required with respond = {status} (where to)"),
                );
            }
            if r.body.is_some() {
                self.problem(
                    join(path, "body"),
                    "not with a redirect (lb writes a short one naming the location)",
                );
            }
        } else if r.location.is_some() {
            self.problem(
                join(path, "location"),
                "only with a redirect status (301, 302, 303, 307, 308)",
            );
        }
        (self.problems.len() == before).then_some(RouteTarget::Respond(Respond {
            status,
            body,
            location,
            content_type: r.content_type.clone(),
        }))
    }

    /// `body`, `location` and `content_type` belong to `respond` routes.
    pub(in crate::config) fn only_respond(&mut self, path: &str, r: &RouteFile) {
        let only_respond = [
            ("body", &r.body),
            ("location", &r.location),
            ("content_type", &r.content_type),
        ];
        for (key, v) in only_respond {
            if v.is_some() {
                self.problem(join(path, key), "only with `respond`");
            }
        }
    }
}
