//! The report as text (one line per check, then the summary) and as one JSON document.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{Evidence, Report};
use crate::keys::Mode;

/// The most of an answer's body the JSON report carries.
const JSON_BODY_MAX: usize = 2000;

impl Report {
    /// One line per check (`PASS`/`FAIL`, its name, what was answered, why it matters),
    /// then `17/17 checks passed in 0.4 s`.
    pub fn text(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|check| check.name.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for check in &self.checks {
            let _ = writeln!(
                out,
                "{}  {:<width$}  {}  — {}",
                if check.passed { "PASS" } else { "FAIL" },
                check.name,
                check.detail,
                check.why,
            );
        }
        let _ = writeln!(
            out,
            "{} ({}, {})",
            self.summary(),
            self.target,
            if self.v2 {
                "APIv2 XML".to_owned()
            } else {
                format!("{} mode", mode_name(self.mode))
            }
        );
        out
    }

    /// The same as one JSON document: `{"target","mode","passed","duration_ms","summary",
    /// "checks":[{"name","passed","answer":{"status","latency_ms","body"} or "error",
    /// "detail","why"}…]}`.
    pub fn json(&self) -> Value {
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|check| {
                let mut value = json!({
                    "name": check.name,
                    "passed": check.passed,
                });
                match &check.evidence {
                    Evidence::Answer(answer) => {
                        value["answer"] = json!({
                            "status": answer.status.as_u16(),
                            "latency_ms": u64::try_from(answer.millis()).unwrap_or(u64::MAX),
                            "body": answer.body_excerpt(JSON_BODY_MAX),
                        });
                    }
                    Evidence::NoAnswer(failure) => value["error"] = json!(failure.to_string()),
                    Evidence::Nothing => value["error"] = json!(check.detail),
                }
                value["detail"] = json!(check.detail);
                value["why"] = json!(check.why);
                value
            })
            .collect();
        json!({
            "target": self.target,
            "mode": if self.v2 { "apiv2" } else { mode_name(self.mode) },
            "passed": self.passed(),
            "duration_ms": u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
            "summary": self.summary(),
            "checks": checks,
        })
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::PublicKey => "public-key",
        Mode::Certificate => "certificate",
    }
}
