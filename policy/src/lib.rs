//! The tenant policy: a TOML file ([`Policy`]) saying what a genuine SEV-SNP report must
//! also satisfy (guest-policy bits, minimum SVN/TCB/firmware, exact IDs and measurements,
//! VMPL, ID block and author key, mitigation vectors, platform info), the checks that
//! apply it ([`Policy::check`]), and the [`Verdict`] that `cloister verify` prints.
//!
//! The same file is enforced at launch (`cloister run --policy`): [`Policy::check_launch`]
//! refuses, before the VM exists, a launch the policy forbids ([`LaunchRefusal`] names the
//! rule) and gives the SNP guest policy to launch with ([`Policy::guest_policy_bits`]);
//! the `[launch]` table ([`LaunchPolicy`]) holds the launch-only keys. See
//! `docs/launch-policy.md`.
//!
//! The policy covers every option of go-sev-guest's `validate.Options` (see
//! `docs/verify-checks.md` for the side-by-side table). Defaults are secure: debug refused,
//! migration agent refused, VMPL 0 required, provisional firmware refused, CXL refused.

mod checks;
mod file;
mod launch;
mod verdict;

pub use file::{
    Hex, LaunchPolicy, MajorMinor, PlatformPolicy, Policy, PolicyError, Signer, TcbMinimum, Vmpl,
};
pub use launch::{
    KvmPolicyRule, LaunchDescription, LaunchPlatform, LaunchRefusal, SmtConflict, VirtioDeviceInfo,
};
pub use verdict::{Fact, Verdict};

#[cfg(test)]
mod tests;
