//! The simulation root of trust: an ARK, an ASK and one chip's VCEK, with AMD's formats
//! and the simulation's names, their private keys, the chip ID and the TCB the VCEK
//! certifies. Generated on first use and kept in a directory outside git (the keys 0600).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use p384::ecdsa::signature::Signer;
use rand_core::{OsRng, RngCore};
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::RsaPrivateKey;

use super::certificates::{self, CertSpec, CA_VALIDITY, VCEK_VALIDITY};
use super::SimError;
use crate::certs::{CertBundle, CertRole, Certificate, PublicKey};
use crate::report::{Generation, TcbParts, TcbVersion};

/// Size of the CA keys, as AMD's.
const RSA_BITS: usize = 4096;

/// Files of a root directory. The certificate names are snpguest's; the `.key` files are
/// ignored by certificate loaders ([`CertBundle::from_dir`] reads .pem/.der/.crt/.cer).
const ARK_PEM: &str = "ark.pem";
const ASK_PEM: &str = "ask.pem";
const VCEK_PEM: &str = "vcek.pem";
const ARK_KEY: &str = "ark.key";
const ASK_KEY: &str = "ask.key";
const VCEK_KEY: &str = "vcek.key";
const README: &str = "README";

const README_TEXT: &str = "\
Cloister simulation root of trust: NOT AMD.

ark.pem, ask.pem and vcek.pem have the formats of AMD's ARK, ASK and VCEK certificates,
but their organization is \"Cloister simulation (not Advanced Micro Devices)\" and their
keys (*.key, PKCS#8 PEM) were generated on this machine. Reports signed with them come
from `cloister run --platform sim` and prove nothing about AMD hardware. `cloister
verify` accepts them only with --trust-sim-root. Never commit this directory.
";

/// The simulated platform of one processor generation: what its CPUID says and the TCB
/// its VCEK certifies.
#[derive(Debug, Clone, Copy)]
pub(super) struct SimPlatform {
    /// CPUID family (combined), model (combined) and stepping.
    pub family: u8,
    pub model: u8,
    pub stepping: u8,
    /// productName of the VCEK.
    pub product_name: &'static str,
    /// TCB of a newly generated root.
    pub tcb: TcbParts,
}

impl SimPlatform {
    pub(super) fn of(generation: Generation) -> Self {
        match generation {
            Generation::Milan => Self {
                family: 0x19,
                model: 0x01,
                stepping: 0x00,
                product_name: "Milan-B0",
                tcb: TcbParts {
                    fmc: None,
                    bootloader: 4,
                    tee: 0,
                    snp: 22,
                    microcode: 0xD5,
                },
            },
            Generation::Genoa => Self {
                family: 0x19,
                model: 0x11,
                stepping: 0x01,
                product_name: "Genoa",
                tcb: TcbParts {
                    fmc: None,
                    bootloader: 10,
                    tee: 0,
                    snp: 23,
                    microcode: 0x48,
                },
            },
            Generation::Turin => Self {
                family: 0x1A,
                model: 0x02,
                stepping: 0x01,
                product_name: "Turin",
                tcb: TcbParts {
                    fmc: Some(1),
                    bootloader: 4,
                    tee: 1,
                    snp: 4,
                    microcode: 0x50,
                },
            },
        }
    }

    /// CPUID Fn0000_0001_EAX for this family, model and stepping (the secrets page FMS).
    pub(super) fn fms(&self) -> u32 {
        let (family, model) = (u32::from(self.family), u32::from(self.model));
        let (base_family, ext_family) = if family >= 0xF {
            (0xF, family - 0xF)
        } else {
            (family, 0)
        };
        (ext_family << 20)
            | ((model >> 4) << 16)
            | (base_family << 8)
            | ((model & 0xF) << 4)
            | u32::from(self.stepping & 0xF)
    }
}

/// The simulation root: ARK and ASK (RSA-4096, RSASSA-PSS SHA-384) and one chip's VCEK
/// (EC P-384), with the chip ID and TCB the VCEK certifies. Its certificates have AMD's
/// structure and the simulation's names ([`crate::certs::SIM_ORGANIZATION`]).
pub struct SimRoot {
    generation: Generation,
    platform: SimPlatform,
    ark_key: RsaPrivateKey,
    ask_key: RsaPrivateKey,
    vcek_key: p384::ecdsa::SigningKey,
    ark: Certificate,
    ask: Certificate,
    vcek: Certificate,
    chip_id: [u8; 64],
    tcb: TcbParts,
}

impl std::fmt::Debug for SimRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRoot")
            .field("generation", &self.generation)
            .field("ark", &self.ark.fingerprint())
            .field("vcek", &self.vcek.fingerprint())
            .field("chip_id", &hex::encode(self.chip_id))
            .field("tcb", &self.tcb)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> SimError + '_ {
    move |source| SimError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn pem(der: &[u8]) -> Result<String, SimError> {
    x509_cert::der::pem::encode_string("CERTIFICATE", LineEnding::LF, der)
        .map_err(|e| SimError::Certificate(format!("PEM encoding: {e}")))
}

fn parse_cert(der: &[u8], what: &str) -> Result<Certificate, SimError> {
    Certificate::from_der(der, what).map_err(|e| SimError::Certificate(e.to_string()))
}

impl SimRoot {
    /// Generates a new root for `product`: two RSA-4096 keys (seconds of CPU time, made on
    /// two threads), a P-384 VCEK key, a random chip ID, and the three certificates, valid
    /// from a day ago (clock skew) for 25 years (ARK, ASK) and 7 years (VCEK), as AMD's.
    pub fn generate(product: Generation) -> Result<SimRoot, SimError> {
        let (ark_key, ask_key) = std::thread::scope(|s| {
            let ark = s.spawn(|| RsaPrivateKey::new(&mut OsRng, RSA_BITS));
            let ask = s.spawn(|| RsaPrivateKey::new(&mut OsRng, RSA_BITS));
            (ark.join(), ask.join())
        });
        let key = |k: std::thread::Result<rsa::Result<RsaPrivateKey>>| match k {
            Ok(Ok(k)) => Ok(k),
            Ok(Err(e)) => Err(SimError::Crypto(format!(
                "RSA-{RSA_BITS} key generation: {e}"
            ))),
            Err(_) => Err(SimError::Crypto(
                "RSA key generation thread panicked".into(),
            )),
        };
        let (ark_key, ask_key) = (key(ark_key)?, key(ask_key)?);
        let vcek_key = p384::ecdsa::SigningKey::random(&mut OsRng);
        let platform = SimPlatform::of(product);
        let mut chip_id = [0u8; 64];
        if let Some(prefix) = chip_id.get_mut(..product.hwid_len()) {
            OsRng.fill_bytes(prefix);
        }
        let not_before = now_unix().saturating_sub(24 * 3600);
        let ark_cn = CertRole::Ark.expected_common_name(product);
        let ask_cn = CertRole::Ask.expected_common_name(product);
        let vcek_cn = CertRole::Vcek.expected_common_name(product);

        let ark_spki = certificates::rsa_spki(&ark_key)?;
        let ask_spki = certificates::rsa_spki(&ask_key)?;
        let ark_der = certificates::sign(
            CertSpec {
                serial: 1,
                subject_cn: &ark_cn,
                issuer_cn: &ark_cn,
                not_before,
                not_after: not_before + CA_VALIDITY,
                extensions: certificates::ark_extensions(&ark_spki)?,
                spki: ark_spki.clone(),
            },
            &ark_key,
        )?;
        let ask_der = certificates::sign(
            CertSpec {
                serial: 2,
                subject_cn: &ask_cn,
                issuer_cn: &ark_cn,
                not_before,
                not_after: not_before + CA_VALIDITY,
                extensions: certificates::ask_extensions(&ask_spki, &ark_spki)?,
                spki: ask_spki,
            },
            &ark_key,
        )?;
        let hwid = chip_id.get(..product.hwid_len()).unwrap_or(&chip_id);
        let vcek_der = certificates::sign(
            CertSpec {
                serial: 1,
                subject_cn: &vcek_cn,
                issuer_cn: &ask_cn,
                not_before,
                not_after: not_before + VCEK_VALIDITY,
                extensions: certificates::vcek_extensions(
                    product,
                    platform.product_name,
                    platform.tcb,
                    hwid,
                )?,
                spki: certificates::p384_spki(&p384::PublicKey::from(vcek_key.verifying_key()))?,
            },
            &ask_key,
        )?;
        Ok(SimRoot {
            generation: product,
            platform,
            ark: parse_cert(&ark_der, "simulation ARK")?,
            ask: parse_cert(&ask_der, "simulation ASK")?,
            vcek: parse_cert(&vcek_der, "simulation VCEK")?,
            ark_key,
            ask_key,
            vcek_key,
            chip_id,
            tcb: platform.tcb,
        })
    }

    /// Loads the root from `dir`, or generates a Genoa root and saves it there when `dir`
    /// has none (the directory 0700, the private keys 0600). Safe against a concurrent
    /// caller: a new root is written to a fresh directory and renamed into place, and the
    /// loser of a race loads the winner's root. No key is ever meant for git.
    pub fn load_or_create(dir: &Path) -> Result<SimRoot, SimError> {
        Self::load_or_create_for(dir, Generation::Genoa)
    }

    /// [`SimRoot::load_or_create`] for another generation: a root found in `dir` must be
    /// of `product`.
    pub fn load_or_create_for(dir: &Path, product: Generation) -> Result<SimRoot, SimError> {
        let of_product = |root: SimRoot| {
            if root.generation == product {
                Ok(root)
            } else {
                Err(SimError::Inconsistent {
                    dir: dir.display().to_string(),
                    detail: format!("it holds a {} root, not a {product} one", root.generation),
                })
            }
        };
        if dir.join(VCEK_KEY).exists() {
            return of_product(Self::load(dir)?);
        }
        let root = Self::generate(product)?;
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        let staging = parent.join(format!(
            ".{}.partial-{}-{}",
            dir.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("sim-root"),
            std::process::id(),
            OsRng.next_u64()
        ));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(io_err(&staging))?;
        if let Err(e) = root.save_into(&staging) {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        match fs::rename(&staging, dir) {
            Ok(()) => Ok(root),
            Err(_) => {
                // `dir` exists and is not empty: another process won, or the user keeps
                // other files there.
                let _ = fs::remove_dir_all(&staging);
                if dir.join(VCEK_KEY).exists() {
                    of_product(Self::load(dir)?)
                } else {
                    root.save_into(dir)?;
                    Ok(root)
                }
            }
        }
    }

    /// Loads a root saved by [`SimRoot::load_or_create`], checking that it hangs together:
    /// every certificate is the simulation's, ARK → ASK → VCEK signatures verify, each
    /// private key belongs to its certificate, and the VCEK names a known generation, its
    /// TCB and a chip ID of the generation's length.
    pub fn load(dir: &Path) -> Result<SimRoot, SimError> {
        let inconsistent = |detail: String| SimError::Inconsistent {
            dir: dir.display().to_string(),
            detail,
        };
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read(&path).map_err(io_err(&path))
        };
        let cert = |name: &str, role: CertRole| -> Result<Certificate, SimError> {
            let path = dir.join(name);
            let certs = Certificate::parse_all(&read(name)?, &path.display().to_string())
                .map_err(|e| SimError::Certificate(e.to_string()))?;
            let [c] = <[Certificate; 1]>::try_from(certs).map_err(|v| {
                inconsistent(format!("{name} holds {} certificates, not one", v.len()))
            })?;
            if c.role() != Some(role) || !c.is_simulation() {
                return Err(inconsistent(format!(
                    "{name} is not a Cloister simulation {role}: subject {}",
                    c.subject
                )));
            }
            Ok(c)
        };
        let ark = cert(ARK_PEM, CertRole::Ark)?;
        let ask = cert(ASK_PEM, CertRole::Ask)?;
        let vcek = cert(VCEK_PEM, CertRole::Vcek)?;
        let text = |name: &str| -> Result<String, SimError> {
            let path = dir.join(name);
            if let Ok(meta) = fs::metadata(&path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    log::warn!(
                        "{}: private key of the simulation root is readable by others",
                        path.display()
                    );
                }
            }
            String::from_utf8(read(name)?)
                .map_err(|_| inconsistent(format!("{name} is not PEM text")))
        };
        let rsa_key = |name: &str| -> Result<RsaPrivateKey, SimError> {
            RsaPrivateKey::from_pkcs8_pem(&text(name)?)
                .map_err(|e| inconsistent(format!("{name}: {e}")))
        };
        let ark_key = rsa_key(ARK_KEY)?;
        let ask_key = rsa_key(ASK_KEY)?;
        let vcek_key = p384::SecretKey::from_pkcs8_pem(&text(VCEK_KEY)?)
            .map(p384::ecdsa::SigningKey::from)
            .map_err(|e| inconsistent(format!("{VCEK_KEY}: {e}")))?;

        for (name, c, issuer) in [
            ("ARK", &ark, &ark),
            ("ASK", &ask, &ark),
            ("VCEK", &vcek, &ask),
        ] {
            c.verify_signed_by(issuer)
                .map_err(|e| inconsistent(format!("{name} certificate: {e}")))?;
        }
        for (name, c, key) in [("ARK", &ark, &ark_key), ("ASK", &ask, &ask_key)] {
            let der = key
                .to_public_key()
                .to_pkcs1_der()
                .map_err(|e| inconsistent(format!("{name} key: {e}")))?;
            if !matches!(&c.public_key, PublicKey::Rsa { der: d, .. } if d.as_slice() == der.as_bytes())
            {
                return Err(inconsistent(format!(
                    "the {name} private key does not belong to the {name} certificate"
                )));
            }
        }
        let point = vcek_key.verifying_key().to_encoded_point(false);
        if !matches!(&vcek.public_key, PublicKey::EcP384(p) if p.as_slice() == point.as_bytes()) {
            return Err(inconsistent(
                "the VCEK private key does not belong to the VCEK certificate".into(),
            ));
        }
        let generation = vcek
            .amd
            .product_name
            .as_deref()
            .and_then(Generation::from_product_name)
            .ok_or_else(|| inconsistent("the VCEK names no known generation".into()))?;
        let tcb = vcek
            .amd
            .tcb(generation)
            .map_err(|missing| inconsistent(format!("the VCEK lacks {missing}")))?;
        let hwid = vcek
            .amd
            .hwid
            .as_deref()
            .filter(|h| h.len() == generation.hwid_len())
            .ok_or_else(|| {
                inconsistent("the VCEK's hwID is missing or of the wrong size".into())
            })?;
        let mut chip_id = [0u8; 64];
        if let Some(dst) = chip_id.get_mut(..hwid.len()) {
            dst.copy_from_slice(hwid);
        }
        Ok(SimRoot {
            generation,
            platform: SimPlatform::of(generation),
            ark,
            ask,
            vcek,
            ark_key,
            ask_key,
            vcek_key,
            chip_id,
            tcb,
        })
    }

    /// Writes the root (certificates, keys 0600, a README) into the existing directory
    /// `dir`, refusing to overwrite any file.
    fn save_into(&self, dir: &Path) -> Result<(), SimError> {
        let write = |name: &str, mode: u32, bytes: &[u8]| -> Result<(), SimError> {
            let path = dir.join(name);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
                .map_err(io_err(&path))?;
            f.write_all(bytes).map_err(io_err(&path))?;
            f.sync_all().map_err(io_err(&path))
        };
        let key_pem = |k: &RsaPrivateKey| {
            k.to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| SimError::Crypto(format!("PKCS#8 encoding: {e}")))
        };
        write(ARK_KEY, 0o600, key_pem(&self.ark_key)?.as_bytes())?;
        write(ASK_KEY, 0o600, key_pem(&self.ask_key)?.as_bytes())?;
        let vcek_secret = p384::SecretKey::from(&self.vcek_key);
        let vcek_pem = vcek_secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| SimError::Crypto(format!("PKCS#8 encoding: {e}")))?;
        write(VCEK_KEY, 0o600, vcek_pem.as_bytes())?;
        write(ARK_PEM, 0o644, pem(self.ark.der())?.as_bytes())?;
        write(ASK_PEM, 0o644, pem(self.ask.der())?.as_bytes())?;
        write(VCEK_PEM, 0o644, pem(self.vcek.der())?.as_bytes())?;
        write(README, 0o644, README_TEXT.as_bytes())
    }

    /// Writes ark.pem, ask.pem and vcek.pem into `dir` (created if missing), the layout of
    /// snpguest's certificate directory that `cloister verify --certs DIR` loads. No key is
    /// written.
    pub fn export_cert_dir(&self, dir: &Path) -> Result<(), SimError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        for (name, cert) in [
            (ARK_PEM, &self.ark),
            (ASK_PEM, &self.ask),
            (VCEK_PEM, &self.vcek),
        ] {
            let path = dir.join(name);
            // Written aside and renamed into place: a parallel launch sharing the root, or
            // a `verify --certs` reading it, never sees a half-written file.
            let tmp = dir.join(format!(".{name}.{}", std::process::id()));
            fs::write(&tmp, pem(cert.der())?).map_err(io_err(&tmp))?;
            fs::rename(&tmp, &path).map_err(io_err(&path))?;
        }
        Ok(())
    }

    /// The processor generation the root simulates.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The ARK certificate, DER.
    pub fn ark_der(&self) -> &[u8] {
        self.ark.der()
    }

    /// The ASK certificate, DER.
    pub fn ask_der(&self) -> &[u8] {
        self.ask.der()
    }

    /// The VCEK certificate, DER.
    pub fn vcek_der(&self) -> &[u8] {
        self.vcek.der()
    }

    /// The ARK, ASK and VCEK as a bundle for [`crate::verify::verify`].
    pub fn cert_bundle(&self) -> CertBundle {
        let mut bundle = CertBundle::default();
        for (cert, what) in [
            (&self.ark, "simulation ARK"),
            (&self.ask, "simulation ASK"),
            (&self.vcek, "simulation VCEK"),
        ] {
            // Three distinct roles: adding cannot fail.
            let _ = bundle.add(cert.clone(), what);
        }
        bundle
    }

    /// The simulated chip's CHIP_ID (on Turin 8 bytes followed by zeros), = the VCEK hwID.
    pub fn chip_id(&self) -> [u8; 64] {
        self.chip_id
    }

    /// The TCB the VCEK certifies: the simulated platform's current, committed, launch and
    /// reported TCB.
    pub fn tcb(&self) -> TcbVersion {
        TcbVersion::from_parts(self.tcb, self.generation)
    }

    /// CPUID family, model and stepping of the simulated processor.
    pub fn cpuid_fms(&self) -> (u8, u8, u8) {
        (
            self.platform.family,
            self.platform.model,
            self.platform.stepping,
        )
    }

    pub(super) fn platform(&self) -> &SimPlatform {
        &self.platform
    }

    /// Signs `signed` (report bytes 0..0x2A0) with the VCEK: ECDSA P-384 with SHA-384, R
    /// and S little-endian in 72-byte fields as the report stores them.
    pub(super) fn sign_report(&self, signed: &[u8]) -> ([u8; 72], [u8; 72]) {
        let signature: p384::ecdsa::Signature = self.vcek_key.sign(signed);
        let (r, s) = signature.split_bytes();
        let le = |be: &[u8]| {
            let mut out = [0u8; 72];
            for (d, s) in out.iter_mut().zip(be.iter().rev()) {
                *d = *s;
            }
            out
        };
        (le(&r), le(&s))
    }
}
