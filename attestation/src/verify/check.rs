//! One verification check's result: its name, what was expected, what was found, outcome.

use serde::Serialize;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The check passed.
    Pass,
    /// The check failed.
    Fail,
    /// The check does not apply (for example hwID of a masked CHIP_ID) or was switched off.
    Skip,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pass => "pass",
            Self::Fail => "FAIL",
            Self::Skip => "skip",
        })
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Dotted name, for example "vcek.tcb" or "policy.debug".
    pub name: String,
    /// What was required.
    pub expected: String,
    /// What was found.
    pub found: String,
    /// Pass, fail or skip.
    pub outcome: Outcome,
}

impl Check {
    /// A check that passes when `ok`.
    pub fn new(
        name: impl Into<String>,
        ok: bool,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            expected: expected.into(),
            found: found.into(),
            outcome: if ok { Outcome::Pass } else { Outcome::Fail },
        }
    }

    /// A check that does not apply, with the reason in `found`.
    pub fn skip(
        name: impl Into<String>,
        expected: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            expected: expected.into(),
            found: reason.into(),
            outcome: Outcome::Skip,
        }
    }

    /// True unless the check failed.
    pub fn ok(&self) -> bool {
        self.outcome != Outcome::Fail
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}]: expected {}, found {}",
            self.name, self.outcome, self.expected, self.found
        )
    }
}
