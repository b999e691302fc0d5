//! Applying a [`Policy`] to a report that has been verified as genuine. Each rule gives one
//! [`Check`] named "policy.`<rule>`" with what was expected and what was found.

use cloister_attestation::report::{
    AttestationReport, Generation, PlatformInfo, SigningKey, TcbParts, TcbVersion,
};
use cloister_attestation::verify::Check;

use crate::file::{Hex, Policy, Signer, TcbMinimum, Vmpl};

fn yes_no(b: bool) -> &'static str {
    if b {
        "set"
    } else {
        "clear"
    }
}

/// A guest-policy bit that the tenant may allow (fails when set and not allowed).
fn allowed_bit(out: &mut Vec<Check>, name: &str, bit: u32, set: bool, allowed: bool) {
    out.push(Check::new(
        format!("policy.{name}"),
        allowed || !set,
        if allowed {
            format!("POLICY bit {bit} set or clear (allowed)")
        } else {
            format!("POLICY bit {bit} clear ({name} refused)")
        },
        format!("bit {bit} {}", yes_no(set)),
    ));
}

/// A guest-policy bit that the tenant may require (fails when required and clear).
fn required_bit(out: &mut Vec<Check>, name: &str, bit: u32, set: bool, required: bool) {
    if required {
        out.push(Check::new(
            format!("policy.{name}"),
            set,
            format!("POLICY bit {bit} set (required)"),
            format!("bit {bit} {}", yes_no(set)),
        ));
    }
}

fn exact<const N: usize>(out: &mut Vec<Check>, name: &str, want: &Option<Hex<N>>, got: &[u8; N]) {
    if let Some(want) = want {
        out.push(Check::new(
            format!("policy.{name}"),
            want.0 == *got,
            hex::encode(want.0),
            hex::encode(got),
        ));
    }
}

fn tcb_min(
    out: &mut Vec<Check>,
    name: &str,
    min: &Option<TcbMinimum>,
    tcb: TcbVersion,
    g: Generation,
) {
    let Some(min) = min else { return };
    let parts = tcb.parts(g);
    let want = TcbParts {
        fmc: (g.has_fmc() || min.fmc > 0).then_some(min.fmc),
        bootloader: min.bootloader,
        tee: min.tee,
        snp: min.snp,
        microcode: min.microcode,
    };
    out.push(Check::new(
        format!("policy.{name}"),
        parts.at_least(&want),
        format!("each component at least {want}"),
        parts.to_string(),
    ));
}

fn mit_vector(out: &mut Vec<Check>, name: &str, min: Option<u64>, got: Option<u64>) {
    let Some(min) = min else { return };
    let (ok, found) = match got {
        Some(v) => (v & min == min, format!("{v:#x}")),
        None => (min == 0, "absent (report version below 5)".to_string()),
    };
    out.push(Check::new(
        format!("policy.{name}"),
        ok,
        format!("all bits of {min:#x} set"),
        found,
    ));
}

fn describe_platform(pp: &crate::file::PlatformPolicy) -> String {
    let mut parts = Vec::new();
    if !pp.allow_smt_enabled {
        parts.push("SMT disabled");
    }
    if !pp.allow_tsme_enabled {
        parts.push("TSME disabled");
    }
    if pp.require_ecc {
        parts.push("ECC enabled");
    }
    if pp.require_rapl_disabled {
        parts.push("RAPL disabled");
    }
    if pp.require_ciphertext_hiding {
        parts.push("ciphertext hiding enabled");
    }
    if pp.require_alias_check_complete {
        parts.push("alias check complete");
    }
    if parts.is_empty() {
        "no platform requirement".into()
    } else {
        parts.join(", ")
    }
}

impl Policy {
    /// Applies the policy to `report` (already verified as genuine, of `generation`).
    pub fn check(&self, report: &AttestationReport, generation: Generation) -> Vec<Check> {
        let mut out = Vec::new();
        let p = report.guest_policy();

        if let Some(min) = self.abi_minimum {
            let (maj, min_) = (p.abi_major(), p.abi_minor());
            out.push(Check::new(
                "policy.abi_minimum",
                (maj, min_) >= (min.major, min.minor),
                format!("guest policy ABI at least {min}"),
                format!("{maj}.{min_}"),
            ));
        }
        allowed_bit(&mut out, "smt", 16, p.smt_allowed(), self.allow_smt);
        allowed_bit(
            &mut out,
            "migration_agent",
            18,
            p.migrate_ma_allowed(),
            self.allow_migration_agent,
        );
        allowed_bit(&mut out, "debug", 19, p.debug_allowed(), self.allow_debug);
        required_bit(
            &mut out,
            "single_socket",
            20,
            p.single_socket_required(),
            self.require_single_socket,
        );
        allowed_bit(&mut out, "cxl", 21, p.cxl_allowed(), self.allow_cxl);
        required_bit(
            &mut out,
            "mem_aes_256_xts",
            22,
            p.mem_aes_256_xts_required(),
            self.require_mem_aes_256_xts,
        );
        required_bit(
            &mut out,
            "rapl_disabled",
            23,
            p.rapl_disabled_required(),
            self.require_rapl_disabled,
        );
        required_bit(
            &mut out,
            "ciphertext_hiding",
            24,
            p.ciphertext_hiding_required(),
            self.require_ciphertext_hiding,
        );
        required_bit(
            &mut out,
            "page_swap_disabled",
            25,
            p.page_swap_disabled(),
            self.require_page_swap_disabled,
        );

        out.push(Check::new(
            "policy.guest_svn",
            report.guest_svn >= self.minimum_guest_svn,
            format!("GUEST_SVN at least {}", self.minimum_guest_svn),
            report.guest_svn.to_string(),
        ));

        exact(
            &mut out,
            "report_data",
            &self.report_data,
            &report.report_data,
        );
        exact(&mut out, "host_data", &self.host_data, &report.host_data);
        exact(&mut out, "image_id", &self.image_id, &report.image_id);
        exact(&mut out, "family_id", &self.family_id, &report.family_id);
        exact(&mut out, "report_id", &self.report_id, &report.report_id);
        exact(
            &mut out,
            "report_id_ma",
            &self.report_id_ma,
            &report.report_id_ma,
        );
        exact(&mut out, "chip_id", &self.chip_id, &report.chip_id);
        if !self.measurements.is_empty() {
            out.push(Check::new(
                "policy.measurement",
                self.measurements.iter().any(|m| m.0 == report.measurement),
                format!(
                    "one of {}",
                    self.measurements
                        .iter()
                        .map(|m| hex::encode(m.0))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                hex::encode(report.measurement),
            ));
        }

        let cur = report.current_version;
        if let Some(b) = self.minimum_build {
            out.push(Check::new(
                "policy.minimum_build",
                cur.build >= b,
                format!("CURRENT_BUILD at least {b}"),
                cur.build.to_string(),
            ));
        }
        if let Some(v) = self.minimum_version {
            out.push(Check::new(
                "policy.minimum_version",
                (cur.major, cur.minor) >= (v.major, v.minor),
                format!("firmware API at least {v}"),
                format!("{}.{}", cur.major, cur.minor),
            ));
        }
        tcb_min(
            &mut out,
            "minimum_current_tcb",
            &self.minimum_current_tcb,
            report.current_tcb,
            generation,
        );
        tcb_min(
            &mut out,
            "minimum_reported_tcb",
            &self.minimum_reported_tcb,
            report.reported_tcb,
            generation,
        );
        tcb_min(
            &mut out,
            "minimum_committed_tcb",
            &self.minimum_committed_tcb,
            report.committed_tcb,
            generation,
        );
        tcb_min(
            &mut out,
            "minimum_launch_tcb",
            &self.minimum_launch_tcb,
            report.launch_tcb,
            generation,
        );

        // Provisional firmware: the platform runs something it has not committed.
        let current = report.current_tcb.parts(generation);
        let committed = report.committed_tcb.parts(generation);
        let com = report.committed_version;
        let found = format!(
            "CURRENT_TCB {current} / COMMITTED_TCB {committed}; current {cur} / committed {com}"
        );
        if self.permit_provisional_firmware {
            out.push(Check::new(
                "policy.provisional_firmware",
                current.at_least(&committed) && cur.build >= com.build && cur.api() >= com.api(),
                "committed TCB and version at most current (provisional firmware permitted)",
                found,
            ));
        } else {
            out.push(Check::new(
                "policy.provisional_firmware",
                report.current_tcb == report.committed_tcb && cur == com,
                "current TCB and version equal to committed (no provisional firmware)",
                found,
            ));
        }

        match self.vmpl {
            Vmpl::Level(level) => out.push(Check::new(
                "policy.vmpl",
                report.vmpl == u32::from(level),
                format!("VMPL {level}"),
                format!("VMPL {}", report.vmpl),
            )),
            Vmpl::Any => out.push(Check::skip(
                "policy.vmpl",
                "any VMPL",
                format!("VMPL {}", report.vmpl),
            )),
        }

        self.check_keys(report, &mut out);
        mit_vector(
            &mut out,
            "launch_mit_vector",
            self.minimum_launch_mit_vector,
            report.launch_mit_vector,
        );
        mit_vector(
            &mut out,
            "current_mit_vector",
            self.minimum_current_mit_vector,
            report.current_mit_vector,
        );

        if let Some(pp) = &self.platform {
            let pi = PlatformInfo(report.platform_info);
            let mut bad = Vec::new();
            if pi.smt_enabled() && !pp.allow_smt_enabled {
                bad.push("SMT enabled");
            }
            if pi.tsme_enabled() && !pp.allow_tsme_enabled {
                bad.push("TSME enabled");
            }
            if !pi.ecc_enabled() && pp.require_ecc {
                bad.push("ECC not enabled");
            }
            if !pi.rapl_disabled() && pp.require_rapl_disabled {
                bad.push("RAPL not disabled");
            }
            if !pi.ciphertext_hiding_enabled() && pp.require_ciphertext_hiding {
                bad.push("ciphertext hiding not enabled");
            }
            if !pi.alias_check_complete() && pp.require_alias_check_complete {
                bad.push("alias check not complete");
            }
            out.push(Check::new(
                "policy.platform_info",
                bad.is_empty(),
                describe_platform(pp),
                format!(
                    "PLATFORM_INFO {:#x}{}",
                    report.platform_info,
                    if bad.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", bad.join(", "))
                    }
                ),
            ));
        }

        if let Some(signer) = self.signer {
            let want = match signer {
                Signer::Vcek => SigningKey::Vcek,
                Signer::Vlek => SigningKey::Vlek,
            };
            out.push(Check::new(
                "policy.signer",
                report.key_info.signing_key == want,
                format!("signed by {want}"),
                report.key_info.signing_key.to_string(),
            ));
        }
        out
    }

    /// Author key and ID block rules (go-sev-guest's RequireAuthorKey / RequireIDBlock).
    fn check_keys(&self, report: &AttestationReport, out: &mut Vec<Check>) {
        let author_en = report.key_info.author_key_en;
        let author_trusted = author_en
            && self
                .trusted_author_key_digests
                .iter()
                .any(|d| d.0 == report.author_key_digest);
        if self.require_author_key {
            out.push(Check::new(
                "policy.author_key",
                author_trusted,
                "AUTHOR_KEY_EN 1 and AUTHOR_KEY_DIGEST among the trusted author keys",
                format!(
                    "AUTHOR_KEY_EN {}, AUTHOR_KEY_DIGEST {}",
                    u8::from(author_en),
                    hex::encode(report.author_key_digest)
                ),
            ));
        }
        if self.require_author_key || self.require_id_block {
            let id_trusted = self
                .trusted_id_key_digests
                .iter()
                .any(|d| d.0 == report.id_key_digest);
            out.push(Check::new(
                "policy.id_block",
                author_trusted || id_trusted,
                "ID_KEY_DIGEST among the trusted ID keys (or a trusted author key)",
                format!("ID_KEY_DIGEST {}", hex::encode(report.id_key_digest)),
            ));
        }
    }
}
