//! The AMD certificate chain: ARK (built in, or user-supplied and equal to the built-in one)
//! → ASK or ASVK → VCEK or VLEK. The Cloister simulation root (`crate::sim`) has the same
//! structure and is checked by the same code; its ARK is trusted only with
//! [`VerifyOptions::trust_sim_root`].

use super::{rfc3339, Check, VerifyOptions};
use crate::certs::{
    builtin_roots, sim_distinguished_name, BuiltinRoots, CertBundle, CertRole, Certificate,
    PublicKey, SignatureAlg,
};
use crate::report::Generation;

/// The distinguished name AMD uses before the common name, as x509-parser prints it.
const AMD_DN_PREFIX: &str =
    "OU=Engineering, C=US, L=Santa Clara, ST=CA, O=Advanced Micro Devices, CN=";

/// A chain whose checks have run; reusable for many reports of the same chip.
#[derive(Debug, Clone)]
pub struct VerifiedChain {
    /// The generation the chain was verified for.
    pub generation: Generation,
    /// VCEK or VLEK.
    pub kind: CertRole,
    /// The endorsement key certificate.
    pub vek: Certificate,
    /// The chain's checks (ARK, ASK/ASVK, VCEK/VLEK, CRL).
    pub checks: Vec<Check>,
    /// True when the ARK is the Cloister simulation's, trusted because
    /// [`VerifyOptions::trust_sim_root`] asked for it.
    pub sim_root_trusted: bool,
}

impl VerifiedChain {
    /// True when no chain check failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(Check::ok)
    }

    /// Runs every chain check for `vek` as a certificate of `generation`.
    pub fn build(
        certs: &CertBundle,
        vek: Certificate,
        generation: Generation,
        opts: &VerifyOptions,
    ) -> Self {
        let kind = vek.role().unwrap_or(CertRole::Vcek);
        let mut checks = Vec::new();
        let Some(roots) = builtin_roots(generation) else {
            checks.push(Check::new(
                "ark.builtin",
                false,
                format!("built-in ARK-{generation}"),
                "built-in roots failed to load",
            ));
            return Self {
                generation,
                kind,
                vek,
                checks,
                sim_root_trusted: false,
            };
        };
        let at = opts.at.unix_timestamp();

        // A chain of the Cloister simulation root, recognised by its names.
        let simulation = [&certs.ark, &certs.ask, &certs.asvk]
            .into_iter()
            .flatten()
            .any(Certificate::is_simulation)
            || vek.is_simulation();
        let mut sim_root_trusted = false;

        // ARK: the built-in one, or a user-supplied one that must equal it; for a simulated
        // chain, the simulation's (trusted only when asked).
        let ark = match &certs.ark {
            _ if simulation => {
                let (ark, trusted) =
                    simulation_ark(&mut checks, certs, &vek, roots, generation, opts);
                sim_root_trusted = trusted;
                ark
            }
            Some(user) => {
                let same = user.der() == roots.ark.der();
                let (ok, found) = if same {
                    (
                        true,
                        format!("given ARK equals the built-in ARK-{generation}"),
                    )
                } else if opts.allow_untrusted_ark {
                    (
                        true,
                        format!(
                            "given ARK {} (sha256 {}) is NOT the built-in one; accepted because explicitly allowed",
                            user.subject_cn,
                            user.fingerprint()
                        ),
                    )
                } else {
                    (
                        false,
                        format!(
                            "given ARK {} (sha256 {}) is not the built-in one",
                            user.subject_cn,
                            user.fingerprint()
                        ),
                    )
                };
                checks.push(Check::new(
                    "ark.trusted",
                    ok,
                    format!(
                        "AMD's ARK-{generation} (sha256 {})",
                        roots.ark.fingerprint()
                    ),
                    found,
                ));
                user
            }
            None => {
                checks.push(Check::new(
                    "ark.trusted",
                    true,
                    format!("AMD's ARK-{generation}"),
                    "built-in ARK used",
                ));
                &roots.ark
            }
        };
        let (inter_role, inter) = if kind == CertRole::Vlek {
            (CertRole::Asvk, certs.asvk.as_ref().unwrap_or(&roots.asvk))
        } else {
            (CertRole::Ask, certs.ask.as_ref().unwrap_or(&roots.ask))
        };

        let names = if sim_root_trusted {
            Names::Simulation
        } else {
            Names::Amd
        };
        cert_checks(
            &mut checks,
            CertRole::Ark,
            ark,
            ark,
            generation,
            names,
            opts,
            at,
        );
        cert_checks(
            &mut checks,
            inter_role,
            inter,
            ark,
            generation,
            names,
            opts,
            at,
        );
        cert_checks(&mut checks, kind, &vek, inter, generation, names, opts, at);

        // productName names the generation.
        let name = prefix(kind);
        if opts.check_product_name {
            let product = vek.amd.product_name.as_deref();
            let ok = product.and_then(Generation::from_product_name) == Some(generation);
            checks.push(Check::new(
                format!("{name}.product_name"),
                ok,
                format!("productName {generation} or {generation}-<stepping>"),
                product.unwrap_or("no productName extension").to_string(),
            ));
        } else {
            checks.push(Check::skip(
                format!("{name}.product_name"),
                "productName names the generation",
                "switched off",
            ));
        }

        if kind == CertRole::Vlek {
            checks.push(Check::new(
                "vlek.csp_id",
                vek.amd.csp_id.as_deref().is_some_and(|s| !s.is_empty()),
                "a CSP-ID extension (1.3.6.1.4.1.3704.1.5) naming the cloud provider",
                vek.amd.csp_id.clone().unwrap_or_else(|| "absent".into()),
            ));
        }

        if let Some(crl) = &opts.crl {
            let sig = crl.verify_signed_by(ark);
            checks.push(Check::new(
                "crl.signature",
                sig.is_ok(),
                format!("signed by {}", ark.subject_cn),
                sig.err().unwrap_or_else(|| "valid signature".into()),
            ));
            checks.push(Check::new(
                "crl.issuer",
                crl.issuer_der == ark.subject_der,
                format!("issuer {}", ark.subject_cn),
                format!("issuer {}", crl.issuer_cn),
            ));
            let fresh = crl.this_update <= at && crl.next_update.is_none_or(|n| at <= n);
            checks.push(Check::new(
                "crl.validity",
                fresh,
                format!("thisUpdate <= {} <= nextUpdate", rfc3339(at)),
                format!(
                    "thisUpdate {}, nextUpdate {}",
                    rfc3339(crl.this_update),
                    crl.next_update
                        .map(rfc3339)
                        .unwrap_or_else(|| "absent".into())
                ),
            ));
            let revoked = crl.revokes(inter);
            checks.push(Check::new(
                "crl.revocation",
                !revoked,
                format!(
                    "{inter_role} serial {} not revoked",
                    hex::encode(&inter.serial)
                ),
                if revoked {
                    format!("{inter_role} {} is REVOKED", inter.subject_cn)
                } else {
                    format!(
                        "{} revoked serials, none is the {inter_role}",
                        crl.revoked_serials.len()
                    )
                },
            ));
        }

        Self {
            generation,
            kind,
            vek,
            checks,
            sim_root_trusted,
        }
    }
}

/// The `ark.trusted` check of a chain of the Cloister simulation root, and the ARK to check
/// it with: the given simulation ARK, trusted (true) only with `trust_sim_root`. Without
/// the option the check fails, naming the simulation root.
fn simulation_ark<'a>(
    checks: &mut Vec<Check>,
    certs: &'a CertBundle,
    vek: &Certificate,
    roots: &'a BuiltinRoots,
    generation: Generation,
    opts: &VerifyOptions,
) -> (&'a Certificate, bool) {
    let sim_ark = certs.ark.as_ref().filter(|a| a.is_simulation());
    let fallback = certs.ark.as_ref().unwrap_or(&roots.ark);
    let expected = format!(
        "AMD's ARK-{generation} (sha256 {}){}",
        roots.ark.fingerprint(),
        if opts.trust_sim_root {
            ", or the Cloister simulation ARK (--trust-sim-root)"
        } else {
            ""
        }
    );
    let (ark, trusted, found) = match (opts.trust_sim_root, sim_ark) {
        (true, Some(ark)) => (
            ark,
            true,
            format!(
                "CLOISTER SIMULATION ROOT {} (sha256 {}) trusted because --trust-sim-root was given: NOT AMD; the report comes from the simulated platform and proves nothing about AMD hardware",
                ark.subject_cn,
                ark.fingerprint()
            ),
        ),
        (true, None) => (
            fallback,
            false,
            "the chain is the Cloister simulation root's, but its ARK was not given (--trust-sim-root trusts the simulation ARK given with the certificates, ark.pem)".to_string(),
        ),
        (false, _) => (
            fallback,
            false,
            format!(
                "the report is signed by the Cloister simulation root, not AMD ({} sha256 {}): it comes from the simulated platform; pass --trust-sim-root to accept simulated reports",
                if sim_ark.is_some() { "ARK" } else { "VEK" },
                sim_ark.unwrap_or(vek).fingerprint()
            ),
        ),
    };
    checks.push(Check::new("ark.trusted", trusted, expected, found));
    (ark, trusted)
}

/// Whose distinguished names a chain must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Names {
    /// AMD's (OU=Engineering, ..., O=Advanced Micro Devices).
    Amd,
    /// The Cloister simulation's ([`crate::certs::SIM_ORGANIZATION`]).
    Simulation,
}

fn prefix(role: CertRole) -> &'static str {
    match role {
        CertRole::Ark => "ark",
        CertRole::Ask => "ask",
        CertRole::Asvk => "asvk",
        CertRole::Vcek => "vcek",
        CertRole::Vlek => "vlek",
    }
}

/// Signature, names, validity, algorithms and key usage of one certificate.
#[allow(clippy::too_many_arguments)]
fn cert_checks(
    checks: &mut Vec<Check>,
    role: CertRole,
    cert: &Certificate,
    issuer: &Certificate,
    generation: Generation,
    names: Names,
    opts: &VerifyOptions,
    at: i64,
) {
    let name = prefix(role);
    let sig = cert.verify_signed_by(issuer);
    checks.push(Check::new(
        format!("{name}.signature"),
        sig.is_ok(),
        format!(
            "{role} signed by {} (RSASSA-PSS SHA-384)",
            issuer.subject_cn
        ),
        sig.err().unwrap_or_else(|| "valid signature".into()),
    ));

    let is_ca = matches!(role, CertRole::Ark | CertRole::Ask | CertRole::Asvk);
    if opts.check_names {
        let want_subject = role.expected_common_name(generation);
        let want_issuer = match role {
            CertRole::Ark | CertRole::Ask | CertRole::Asvk => format!("ARK-{generation}"),
            CertRole::Vcek => format!("SEV-{generation}"),
            CertRole::Vlek => format!("SEV-VLEK-{generation}"),
        };
        let chained = cert.issuer_der == issuer.subject_der;
        let expected_dn = |dn: &str, cn: &str| match names {
            Names::Amd => dn == format!("{AMD_DN_PREFIX}{cn}"),
            Names::Simulation => dn == sim_distinguished_name(cn),
        };
        let located = expected_dn(&cert.subject, &cert.subject_cn)
            && expected_dn(&cert.issuer, &cert.issuer_cn);
        let mut found = format!(
            "subject CN {}, issuer CN {}",
            cert.subject_cn, cert.issuer_cn
        );
        if !chained {
            found.push_str(", issuer name differs from the signer's subject");
        }
        if !located {
            found.push_str(&format!(
                ", names are {:?} / {:?}",
                cert.subject, cert.issuer
            ));
        }
        checks.push(Check::new(
            format!("{name}.names"),
            cert.subject_cn == want_subject && cert.issuer_cn == want_issuer && chained && located,
            format!(
                "subject CN {want_subject}, issuer CN {want_issuer} (= issuer's subject), {}",
                match names {
                    Names::Amd => "AMD's OU/C/L/ST/O",
                    Names::Simulation => "the Cloister simulation's OU/C/L/ST/O",
                }
            ),
            found,
        ));
    } else {
        checks.push(Check::skip(
            format!("{name}.names"),
            "names per generation",
            "switched off",
        ));
    }

    if opts.check_validity {
        let ok = cert.valid_at(at);
        let found = if at > cert.not_after {
            format!(
                "EXPIRED on {} (checked at {})",
                rfc3339(cert.not_after),
                rfc3339(at)
            )
        } else if at < cert.not_before {
            format!(
                "not valid before {} (checked at {})",
                rfc3339(cert.not_before),
                rfc3339(at)
            )
        } else {
            format!(
                "valid {} to {}",
                rfc3339(cert.not_before),
                rfc3339(cert.not_after)
            )
        };
        checks.push(Check::new(
            format!("{name}.validity"),
            ok,
            format!("valid at {}", rfc3339(at)),
            found,
        ));
    } else {
        checks.push(Check::skip(
            format!("{name}.validity"),
            "valid at the instant",
            "switched off",
        ));
    }

    if opts.check_algorithms {
        let sig_ok =
            cert.signature_alg == SignatureAlg::RsaPssSha384 && cert.signature_alg_consistent;
        let (key_ok, key_want) = if is_ca {
            (
                matches!(cert.public_key, PublicKey::Rsa { bits: 4096, .. }),
                "RSA-4096",
            )
        } else {
            (matches!(cert.public_key, PublicKey::EcP384(_)), "EC P-384")
        };
        checks.push(Check::new(
            format!("{name}.algorithms"),
            sig_ok && key_ok,
            format!("RSASSA-PSS SHA-384 salt 48 signature, {key_want} key"),
            format!(
                "{}{} signature, {} key",
                cert.signature_alg,
                if cert.signature_alg_consistent {
                    ""
                } else {
                    " (TBS algorithm differs)"
                },
                cert.public_key.describe()
            ),
        ));
    } else {
        checks.push(Check::skip(
            format!("{name}.algorithms"),
            "AMD's algorithms",
            "switched off",
        ));
    }

    if opts.check_key_usage {
        let v3 = cert.x509_version == 2;
        let (ok, want, found) = if is_ca {
            let ca = cert.basic_constraints_ca == Some(true);
            let sign = cert.key_usage.is_some_and(|k| k.key_cert_sign);
            (
                ca && sign,
                "X.509 v3, CA:TRUE, keyUsage keyCertSign",
                format!(
                    "CA {:?}, keyCertSign {}",
                    cert.basic_constraints_ca,
                    cert.key_usage.is_some_and(|k| k.key_cert_sign)
                ),
            )
        } else {
            let not_ca = cert.basic_constraints_ca != Some(true);
            let sign = cert
                .key_usage
                .is_none_or(|k| k.digital_signature && !k.key_cert_sign);
            (
                not_ca && sign,
                "X.509 v3, not a CA, keyUsage absent or digitalSignature only",
                format!(
                    "CA {:?}, keyUsage {:?}",
                    cert.basic_constraints_ca, cert.key_usage
                ),
            )
        };
        let critical_ok = cert.unknown_critical.is_empty();
        checks.push(Check::new(
            format!("{name}.key_usage"),
            ok && v3 && critical_ok,
            format!("{want}, no unknown critical extension"),
            format!(
                "v{}, {found}{}",
                cert.x509_version + 1,
                if critical_ok {
                    String::new()
                } else {
                    format!(", unknown critical {:?}", cert.unknown_critical)
                }
            ),
        ));
    } else {
        checks.push(Check::skip(
            format!("{name}.key_usage"),
            "key usage",
            "switched off",
        ));
    }
}
