//! The verdict on one report: every check of verification and policy, rendered as a table
//! for people or as JSON for programs.

use serde::Serialize;

use cloister_attestation::verify::{Check, Outcome};

/// One line of context about the report (generation, version, signer, measurement).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fact {
    /// What it is.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// The verdict: accepted only when no check failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// True when no check failed.
    pub accepted: bool,
    /// Context about the report.
    pub facts: Vec<Fact>,
    /// Every check, in order.
    pub checks: Vec<Check>,
}

impl Verdict {
    /// Builds a verdict from facts and checks.
    pub fn new(facts: Vec<Fact>, checks: Vec<Check>) -> Self {
        Self {
            accepted: checks.iter().all(Check::ok),
            facts,
            checks,
        }
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.outcome == Outcome::Fail)
    }

    /// A plain-text table: one row per check, then the verdict line.
    pub fn table(&self) -> String {
        let name_w = self
            .checks
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let exp_w = self
            .checks
            .iter()
            .map(|c| c.expected.chars().count())
            .max()
            .unwrap_or(8)
            .clamp(8, 60);
        let mut out = String::new();
        for f in &self.facts {
            out.push_str(&format!("{:<14} {}\n", format!("{}:", f.name), f.value));
        }
        if !self.facts.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!(
            "{:<6} {:<name_w$}  {:<exp_w$}  {}\n",
            "RESULT", "CHECK", "EXPECTED", "FOUND"
        ));
        for c in &self.checks {
            out.push_str(&format!(
                "{:<6} {:<name_w$}  {:<exp_w$}  {}\n",
                c.outcome.to_string(),
                c.name,
                c.expected,
                c.found
            ));
        }
        let failed = self.failures().count();
        out.push('\n');
        if self.accepted {
            out.push_str(&format!(
                "VERDICT: ACCEPTED ({} checks passed, {} skipped)\n",
                self.checks
                    .iter()
                    .filter(|c| c.outcome == Outcome::Pass)
                    .count(),
                self.checks
                    .iter()
                    .filter(|c| c.outcome == Outcome::Skip)
                    .count()
            ));
        } else {
            let names: Vec<_> = self.failures().map(|c| c.name.as_str()).collect();
            out.push_str(&format!(
                "VERDICT: REJECTED ({failed} failed: {})\n",
                names.join(", ")
            ));
        }
        out
    }

    /// The verdict as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}
