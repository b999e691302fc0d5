//! A throwaway AMD-shaped PKI for CRL tests, made at test time with the `openssl` CLI
//! (Debian package `openssl`, installed by scripts/install-deps.sh). No key or CRL is
//! committed: every run makes new ones.
//!
//! The certificates are AMD's own Milan ARK and ASK and the Milan VCEK from the shared
//! vectors, re-keyed: same subject and issuer names (byte for byte), serials, validity and
//! AMD extensions, but new keys (RSA-4096 for the ARK and ASK as AMD's, EC P-384 for the
//! VCEK) and RSASSA-PSS SHA-384 salt 48 signatures made by this module. The vector's report
//! is re-signed with the new VCEK key, so the whole test chain passes every check of the
//! verifier once its ARK is allowed (`allow_untrusted_ark`). CRLs are made with
//! `openssl ca -gencrl` with fixed thisUpdate/nextUpdate, so freshness never depends on the
//! day the tests run.
//!
//! Used by attestation/tests/crl.rs and garbage.rs, and by tests/tests/verify_cli.rs
//! (through `#[path]`), so it depends on std only.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// OpenSSL signing options for AMD's signature: RSASSA-PSS, SHA-384 (MGF1 SHA-384), salt 48.
const PSS: [&str; 4] = [
    "-sigopt",
    "rsa_padding_mode:pss",
    "-sigopt",
    "rsa_pss_saltlen:48",
];

/// Extensions of the re-keyed CA certificates (the verifier wants CA:TRUE and keyCertSign).
const CA_EXTENSIONS: &str = "\
[ ca_self ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[ ca ]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// Runs `openssl` with `args` in `dir`; panics with its stderr when it fails, and loudly
/// when the CLI is missing (a test that needs it must not pass without it).
pub fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the openssl CLI ({e}); these tests need it: apt-get install openssl \
                 (scripts/install-deps.sh installs it)"
            )
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A fresh directory under `parent` named `<tag>-<pid>`; directories of earlier runs with
/// the same tag whose process is gone are removed first.
fn fresh_dir(parent: &Path, tag: &str) -> PathBuf {
    std::fs::create_dir_all(parent).unwrap();
    for entry in std::fs::read_dir(parent).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix(tag)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|p| p.parse::<u32>().ok())
        {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = parent.join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The serial number of a PEM certificate, as openssl prints it (upper-case hex).
pub fn serial_hex(dir: &Path, cert: &Path) -> String {
    let out = openssl(dir, &["x509", "-in", &s(cert), "-noout", "-serial"]);
    String::from_utf8(out)
        .unwrap()
        .trim()
        .strip_prefix("serial=")
        .expect("openssl x509 -serial prints serial=<hex>")
        .to_string()
}

/// Generates an RSA key of `bits` bits into `dir/name`.
fn rsa_key(dir: &Path, name: &str, bits: u32) -> PathBuf {
    let path = dir.join(name);
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            &format!("rsa_keygen_bits:{bits}"),
            "-out",
            &s(&path),
        ],
    );
    path
}

/// Re-keys a CA certificate as a self-signed one: same subject (hence issuer), serial and
/// validity, `key`'s public key, CA extensions, RSASSA-PSS SHA-384 signature by `key`.
fn rekey_self_signed(dir: &Path, real: &Path, key: &Path, out: &Path) {
    let ext = dir.join("ca-extensions.cnf");
    std::fs::write(&ext, CA_EXTENSIONS).unwrap();
    let mut args = vec![
        "x509".to_string(),
        "-in".into(),
        s(real),
        "-key".into(),
        s(key),
        "-clrext".into(),
        "-extfile".into(),
        s(&ext),
        "-extensions".into(),
        "ca_self".into(),
        "-preserve_dates".into(),
        "-sha384".into(),
        "-out".into(),
        s(out),
    ];
    args.extend(PSS.iter().map(|a| a.to_string()));
    openssl(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// A certificate revocation list to make: who signs it, its dates, what it lists.
pub struct CrlSpec<'a> {
    /// File name in the PKI directory.
    pub name: &'a str,
    /// The CA certificate whose subject becomes the CRL issuer.
    pub issuer_cert: &'a Path,
    /// The key that signs the CRL (need not belong to `issuer_cert`).
    pub key: &'a Path,
    /// thisUpdate, `YYMMDDHHMMSSZ`.
    pub this_update: &'a str,
    /// nextUpdate, `YYMMDDHHMMSSZ`.
    pub next_update: &'a str,
    /// Serials (hex) of the revoked certificates.
    pub revoked: &'a [&'a str],
}

/// Makes a PEM CRL per `spec` in `dir` with `openssl ca -gencrl`; returns its path.
/// Each call works in its own subdirectory and writes its own file (`<n>-<name>`), so
/// tests running in parallel threads never share a file.
pub fn make_crl(dir: &Path, spec: &CrlSpec<'_>) -> PathBuf {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let ca = dir.join(format!("{n}-{}.ca", spec.name));
    let _ = std::fs::remove_dir_all(&ca);
    std::fs::create_dir_all(&ca).unwrap();
    // `openssl ca` insists that the CA certificate matches the signing key; when they
    // differ (a forged CRL) the issuer certificate is re-keyed with the signing key first,
    // which keeps its subject, i.e. the CRL's issuer name, byte for byte.
    let cert = ca.join("issuer.pem");
    rekey_self_signed(&ca, spec.issuer_cert, spec.key, &cert);
    // index.txt: one revoked entry per serial (expiry and revocation date fixed).
    let index: String = spec
        .revoked
        .iter()
        .map(|serial| format!("R\t451022182420Z\t250601000000Z\t{serial}\tunknown\t/CN=revoked\n"))
        .collect();
    std::fs::write(ca.join("index.txt"), index).unwrap();
    let config = ca.join("ca.cnf");
    std::fs::write(
        &config,
        format!(
            "[ ca ]\ndefault_ca = test_ca\n[ test_ca ]\ndatabase = {}\ncertificate = {}\n\
             private_key = {}\nnew_certs_dir = {}\ndefault_md = sha384\ndefault_crl_days = 30\n",
            s(&ca.join("index.txt")),
            s(&cert),
            s(spec.key),
            s(&ca),
        ),
    )
    .unwrap();
    let out = dir.join(format!("{n}-{}", spec.name));
    let mut args = vec![
        "ca",
        "-batch",
        "-config",
        config.to_str().unwrap(),
        "-gencrl",
        "-crl_lastupdate",
        spec.this_update,
        "-crl_nextupdate",
        spec.next_update,
        "-md",
        "sha384",
        "-out",
        out.to_str().unwrap(),
    ];
    args.extend(PSS);
    openssl(dir, &args);
    out
}

/// The test PKI: re-keyed Milan ARK, ASK and VCEK, and the re-signed report.
pub struct Pki {
    /// Where everything lives.
    pub dir: PathBuf,
    /// Test ARK (subject ARK-Milan, self-signed by `ark_key`), PEM.
    pub ark: PathBuf,
    /// Its RSA-4096 key.
    pub ark_key: PathBuf,
    /// Test ASK (SEV-Milan, signed by the test ARK), PEM.
    pub ask: PathBuf,
    /// The test ASK's serial (hex), the same as AMD's Milan ASK's.
    pub ask_serial: String,
    /// Test VCEK (signed by the test ASK; AMD extensions of the vector's VCEK), PEM.
    pub vcek: PathBuf,
    /// ASK then ARK, PEM (as the KDS serves a cert_chain).
    pub chain: PathBuf,
    /// The vector's report, re-signed with the test VCEK key.
    pub report: PathBuf,
    /// An RSA key that belongs to no certificate of the chain.
    pub foreign_key: PathBuf,
}

impl Pki {
    /// Builds the PKI in a fresh directory under `parent` (use `CARGO_TARGET_TMPDIR`).
    /// `roots` holds AMD's Milan `ark.pem` and `ask.pem`; `vector` holds a Milan VCEK
    /// vector's `vek.der` and `report.bin`. Takes a few seconds (two RSA-4096 keys).
    pub fn milan(parent: &Path, tag: &str, roots: &Path, vector: &Path) -> Self {
        let dir = fresh_dir(parent, tag);
        let d = dir.as_path();
        let ark_key = rsa_key(d, "ark.key", 4096);
        let ask_key = rsa_key(d, "ask.key", 4096);
        let foreign_key = rsa_key(d, "foreign.key", 2048);
        let vcek_key = d.join("vcek.key");
        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-out",
                &s(&vcek_key),
            ],
        );

        let ark = d.join("ark.pem");
        rekey_self_signed(d, &roots.join("ark.pem"), &ark_key, &ark);

        // openssl x509 -CA only signs a self-signed input: self-sign with the new key
        // first, then sign with the issuer (the issuer name becomes the CA's subject).
        let ask_self = d.join("ask-self.pem");
        rekey_self_signed(d, &roots.join("ask.pem"), &ask_key, &ask_self);
        let ask_serial = serial_hex(d, &roots.join("ask.pem"));
        let ask = d.join("ask.pem");
        let mut args = vec![
            "x509".to_string(),
            "-in".into(),
            s(&ask_self),
            "-CA".into(),
            s(&ark),
            "-CAkey".into(),
            s(&ark_key),
            "-clrext".into(),
            "-extfile".into(),
            s(&d.join("ca-extensions.cnf")),
            "-extensions".into(),
            "ca".into(),
            "-preserve_dates".into(),
            "-set_serial".into(),
            format!("0x{ask_serial}"),
            "-sha384".into(),
            "-out".into(),
            s(&ask),
        ];
        args.extend(PSS.iter().map(|a| a.to_string()));
        openssl(d, &args.iter().map(String::as_str).collect::<Vec<_>>());

        // The VCEK has only AMD's extensions (no key identifiers), so it can be re-keyed
        // in place and keeps them all.
        let vek_der = vector.join("vek.der");
        let vcek_serial = {
            let out = openssl(
                d,
                &[
                    "x509",
                    "-in",
                    &s(&vek_der),
                    "-inform",
                    "DER",
                    "-noout",
                    "-serial",
                ],
            );
            String::from_utf8(out).unwrap().trim()["serial=".len()..].to_string()
        };
        let vcek_self = d.join("vcek-self.pem");
        openssl(
            d,
            &[
                "x509",
                "-in",
                &s(&vek_der),
                "-inform",
                "DER",
                "-key",
                &s(&vcek_key),
                "-preserve_dates",
                "-sha384",
                "-out",
                &s(&vcek_self),
            ],
        );
        let vcek = d.join("vcek.pem");
        let mut args = vec![
            "x509".to_string(),
            "-in".into(),
            s(&vcek_self),
            "-CA".into(),
            s(&ask),
            "-CAkey".into(),
            s(&ask_key),
            "-preserve_dates".into(),
            "-set_serial".into(),
            format!("0x{vcek_serial}"),
            "-sha384".into(),
            "-out".into(),
            s(&vcek),
        ];
        args.extend(PSS.iter().map(|a| a.to_string()));
        openssl(d, &args.iter().map(String::as_str).collect::<Vec<_>>());

        let chain = d.join("chain.pem");
        let mut pem = std::fs::read(&ask).unwrap();
        pem.extend(std::fs::read(&ark).unwrap());
        std::fs::write(&chain, pem).unwrap();

        // Re-sign the report: ECDSA P-384 SHA-384 over bytes 0..0x2A0; R and S go to 0x2A0
        // and 0x2E8 as 72-byte little-endian fields.
        let mut report = std::fs::read(vector.join("report.bin")).unwrap();
        assert_eq!(report.len(), 1184, "a report is 1184 bytes");
        let body = d.join("report-body.bin");
        std::fs::write(&body, &report[..0x2A0]).unwrap();
        let der = openssl(d, &["dgst", "-sha384", "-sign", &s(&vcek_key), &s(&body)]);
        let (r, sig) = ecdsa_der_values(&der);
        for (offset, value) in [(0x2A0, r), (0x2E8, sig)] {
            let field = &mut report[offset..offset + 72];
            field.fill(0);
            for (dst, src) in field.iter_mut().zip(value.iter().rev()) {
                *dst = *src;
            }
        }
        let report_path = d.join("report.bin");
        std::fs::write(&report_path, &report).unwrap();

        Self {
            ark,
            ark_key,
            ask,
            ask_serial,
            vcek,
            chain,
            report: report_path,
            foreign_key,
            dir,
        }
    }

    /// A CRL signed by the test ARK (issuer ARK-Milan), listing `revoked` serials.
    pub fn crl(
        &self,
        name: &str,
        this_update: &str,
        next_update: &str,
        revoked: &[&str],
    ) -> PathBuf {
        make_crl(
            &self.dir,
            &CrlSpec {
                name,
                issuer_cert: &self.ark,
                key: &self.ark_key,
                this_update,
                next_update,
                revoked,
            },
        )
    }

    /// A CRL naming `issuer_cert`'s subject as issuer but signed by the foreign key.
    pub fn forged_crl(
        &self,
        name: &str,
        issuer_cert: &Path,
        this_update: &str,
        next_update: &str,
    ) -> PathBuf {
        make_crl(
            &self.dir,
            &CrlSpec {
                name,
                issuer_cert,
                key: &self.foreign_key,
                this_update,
                next_update,
                revoked: &[],
            },
        )
    }
}

/// R and S (big-endian, leading zeros stripped) of a DER ECDSA-Sig-Value.
fn ecdsa_der_values(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    // SEQUENCE { INTEGER r, INTEGER s }; for P-384 every length is in short form.
    assert!(
        der.len() > 2 && der[0] == 0x30 && usize::from(der[1]) == der.len() - 2,
        "ECDSA signature DER: {der:02x?}"
    );
    let mut rest = &der[2..];
    let mut take = || {
        assert_eq!(rest[0], 0x02, "INTEGER expected: {der:02x?}");
        let len = usize::from(rest[1]);
        let value = rest[2..2 + len].to_vec();
        rest = &rest[2 + len..];
        let first = value.iter().position(|&b| b != 0).unwrap_or(value.len());
        value[first..].to_vec()
    };
    let r = take();
    let sig = take();
    assert!(r.len() <= 48 && sig.len() <= 48);
    (r, sig)
}

/// A small CRL without a PKI (one RSA-2048 key, a few seconds at most): issuer
/// `issuer_cert`'s subject, signed by a fresh key, listing two serials. For parser tests.
pub fn quick_crl(parent: &Path, tag: &str, issuer_cert: &Path) -> PathBuf {
    let dir = fresh_dir(parent, tag);
    let key = rsa_key(&dir, "quick.key", 2048);
    make_crl(
        &dir,
        &CrlSpec {
            name: "quick.crl.pem",
            issuer_cert,
            key: &key,
            this_update: "250101000000Z",
            next_update: "260101000000Z",
            revoked: &["010001", "0200AB"],
        },
    )
}
