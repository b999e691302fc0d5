//! Checks of the report itself and of the report against its endorsement key certificate.

use super::{Check, VerifiedChain, VerifyOptions};
use crate::certs::CertRole;
use crate::report::{AttestationReport, SigningKey, SIG_ALGO_ECDSA_P384_SHA384};

/// Every report check, in a fixed order.
pub(super) fn check_report(
    report: &AttestationReport,
    chain: &VerifiedChain,
    opts: &VerifyOptions,
) -> Vec<Check> {
    let generation = chain.generation;
    let vek = &chain.vek;
    let vek_name = if chain.kind == CertRole::Vlek {
        "vlek"
    } else {
        "vcek"
    };
    let mut checks = Vec::with_capacity(8);

    if opts.check_reserved {
        let mut violations: Vec<String> = report
            .reserved_violations()
            .iter()
            .map(ToString::to_string)
            .collect();
        for (field, tcb) in [
            ("CURRENT_TCB", report.current_tcb),
            ("REPORTED_TCB", report.reported_tcb),
            ("COMMITTED_TCB", report.committed_tcb),
            ("LAUNCH_TCB", report.launch_tcb),
        ] {
            let reserved = tcb.reserved_bytes(generation);
            if reserved.iter().any(|&b| b != 0) {
                violations.push(format!(
                    "{field} reserved bytes ({generation} layout) = {}",
                    hex::encode(reserved)
                ));
            }
        }
        checks.push(Check::new(
            "report.reserved",
            violations.is_empty(),
            "reserved fields zero (POLICY bit 17 one)",
            if violations.is_empty() {
                "all as required".to_string()
            } else {
                violations.join("; ")
            },
        ));
    } else {
        checks.push(Check::skip(
            "report.reserved",
            "reserved fields zero",
            "switched off",
        ));
    }

    checks.push(Check::new(
        "report.signature_algo",
        report.signature_algo == SIG_ALGO_ECDSA_P384_SHA384,
        "1 (ECDSA P-384 with SHA-384)",
        report.signature_algo.to_string(),
    ));

    let expected_key = if chain.kind == CertRole::Vlek {
        SigningKey::Vlek
    } else {
        SigningKey::Vcek
    };
    if opts.check_signing_key {
        checks.push(Check::new(
            "report.signing_key",
            report.key_info.signing_key == expected_key && !report.key_info.mask_chip_key,
            format!(
                "KEY_INFO.SIGNING_KEY {expected_key} (the certificate is a {}), MASK_CHIP_KEY 0",
                chain.kind
            ),
            format!(
                "SIGNING_KEY {}, MASK_CHIP_KEY {}",
                report.key_info.signing_key,
                u8::from(report.key_info.mask_chip_key)
            ),
        ));
    } else {
        checks.push(Check::skip(
            "report.signing_key",
            "signing key kind",
            "switched off",
        ));
    }

    // The signature: ring's fixed-size format, R and S big-endian.
    let signature = report.signature_p384_fixed();
    let sig_result = match (&signature, vek.ecdsa_p384_key()) {
        (Err(e), _) => Err(e.to_string()),
        (_, None) => Err(format!(
            "{} key is {}, not EC P-384",
            chain.kind,
            vek.public_key.describe()
        )),
        (Ok(sig), Some(key)) => key.verify(report.signed_bytes(), sig).map_err(|_| {
            format!(
                "ECDSA P-384 signature does not verify with the {} key",
                chain.kind
            )
        }),
    };
    checks.push(Check::new(
        "report.signature",
        sig_result.is_ok(),
        format!("bytes 0..0x2A0 signed by the {}", chain.kind),
        sig_result.err().unwrap_or_else(|| "valid signature".into()),
    ));

    // The certificate's TCB equals the report's REPORTED_TCB.
    let name = format!("{vek_name}.tcb");
    if opts.check_tcb_extensions {
        let reported = report.reported_tcb.parts(generation);
        let (ok, found) = match vek.amd.tcb(generation) {
            Ok(cert_tcb) => {
                let reserved_zero = vek.amd.reserved_spl.iter().all(|s| s.unwrap_or(0) == 0);
                (
                    cert_tcb == reported && reserved_zero,
                    format!(
                        "certificate {cert_tcb}{}",
                        if reserved_zero {
                            ""
                        } else {
                            ", reserved SPL extensions not zero"
                        }
                    ),
                )
            }
            Err(missing) => (false, format!("certificate lacks {missing}")),
        };
        checks.push(Check::new(
            name,
            ok,
            format!("REPORTED_TCB {reported}"),
            found,
        ));
    } else {
        checks.push(Check::skip(
            name,
            "TCB extensions = REPORTED_TCB",
            "switched off",
        ));
    }

    // The host may report a TCB below the current one, never above it.
    let reported = report.reported_tcb.parts(generation);
    let current = report.current_tcb.parts(generation);
    checks.push(Check::new(
        "report.tcb_order",
        current.at_least(&reported),
        "REPORTED_TCB at most CURRENT_TCB in every component",
        format!("REPORTED_TCB {reported}, CURRENT_TCB {current}"),
    ));

    // hwID equals CHIP_ID (VCEK only; masked CHIP_ID cannot be compared).
    let name = format!("{vek_name}.hwid");
    let len = generation.hwid_len();
    if !opts.check_hwid {
        checks.push(Check::skip(name, "hwID = CHIP_ID", "switched off"));
    } else if chain.kind == CertRole::Vlek {
        checks.push(Check::skip(
            name,
            "hwID = CHIP_ID",
            "a VLEK is not bound to one chip",
        ));
    } else if report.chip_id_masked() {
        checks.push(Check::skip(
            name,
            "hwID = CHIP_ID",
            "CHIP_ID is masked (all zero) by the platform",
        ));
    } else {
        let chip = report.chip_id.get(..len).unwrap_or(&[]);
        let tail_zero = report
            .chip_id
            .get(len..)
            .unwrap_or(&[])
            .iter()
            .all(|&b| b == 0);
        let (ok, found) = match &vek.amd.hwid {
            Some(h) => (
                h.as_slice() == chip && tail_zero,
                format!("hwID {}", hex::encode(h)),
            ),
            None => (false, "certificate has no hwID extension".to_string()),
        };
        checks.push(Check::new(
            name,
            ok,
            format!(
                "CHIP_ID {}{}",
                hex::encode(chip),
                if tail_zero {
                    ""
                } else {
                    " followed by zeros (it is not)"
                }
            ),
            found,
        ));
    }
    checks
}
