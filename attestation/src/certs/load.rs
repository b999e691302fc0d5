//! Loading the certificates a user has: snpguest's certs directory (ark.pem, ask.pem,
//! asvk.pem, vcek.pem/.der, vlek.pem/.der), AMD KDS cert_chain PEMs (ASK then ARK, or ASK,
//! ARK, ASVK), and single PEM or DER files. Certificates are sorted into roles by their
//! subject common name, not by file name; a file whose name promises one role and holds
//! another is refused.

use std::path::Path;

use super::{CertError, CertRole, Certificate};

/// The certificates a user supplied, one per role at most.
#[derive(Debug, Clone, Default)]
pub struct CertBundle {
    /// ARK, if given (otherwise the built-in one is used).
    pub ark: Option<Certificate>,
    /// ASK, if given.
    pub ask: Option<Certificate>,
    /// ASVK, if given.
    pub asvk: Option<Certificate>,
    /// VCEK, if given.
    pub vcek: Option<Certificate>,
    /// VLEK, if given.
    pub vlek: Option<Certificate>,
    origins: Vec<(CertRole, String)>,
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The role a file name promises in snpguest's layout.
fn role_of_file_name(name: &str) -> Option<CertRole> {
    let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap_or(name);
    match stem.to_ascii_lowercase().as_str() {
        "ark" => Some(CertRole::Ark),
        "ask" => Some(CertRole::Ask),
        "asvk" => Some(CertRole::Asvk),
        "vcek" => Some(CertRole::Vcek),
        "vlek" => Some(CertRole::Vlek),
        _ => None,
    }
}

impl CertBundle {
    /// Loads every certificate file (.pem, .der, .crt, .cer) of a directory.
    pub fn from_dir(dir: &Path) -> Result<Self, CertError> {
        let entries = std::fs::read_dir(dir).map_err(|source| CertError::Read {
            path: dir.display().to_string(),
            source,
        })?;
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| matches!(e, "pem" | "der" | "crt" | "cer"))
            })
            .collect();
        files.sort();
        let mut bundle = Self::default();
        for file in &files {
            bundle.add_file(file)?;
        }
        if bundle.origins.is_empty() {
            return Err(CertError::EmptyDirectory(dir.display().to_string()));
        }
        Ok(bundle)
    }

    /// Adds every certificate of one file (PEM with one or more certificates, or DER).
    pub fn add_file(&mut self, path: &Path) -> Result<(), CertError> {
        let bytes = read(path)?;
        let what = path.display().to_string();
        let certs = Certificate::parse_all(&bytes, &what)?;
        let promised = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(role_of_file_name);
        for cert in certs {
            let role = cert.role().ok_or_else(|| CertError::UnknownRole {
                what: what.clone(),
                cn: cert.subject_cn.clone(),
            })?;
            if let Some(expected) = promised {
                if expected != role {
                    return Err(CertError::WrongFile {
                        file: what.clone(),
                        expected,
                        found: role,
                        cn: cert.subject_cn.clone(),
                    });
                }
            }
            self.add(cert, &what)?;
        }
        Ok(())
    }

    /// Adds one certificate, sorted by its subject; `what` names its origin.
    pub fn add(&mut self, cert: Certificate, what: &str) -> Result<(), CertError> {
        let role = cert.role().ok_or_else(|| CertError::UnknownRole {
            what: what.to_string(),
            cn: cert.subject_cn.clone(),
        })?;
        let slot = match role {
            CertRole::Ark => &mut self.ark,
            CertRole::Ask => &mut self.ask,
            CertRole::Asvk => &mut self.asvk,
            CertRole::Vcek => &mut self.vcek,
            CertRole::Vlek => &mut self.vlek,
        };
        match slot {
            Some(existing) if existing.der() == cert.der() => Ok(()),
            Some(_) => {
                let first = self
                    .origins
                    .iter()
                    .find(|(r, _)| *r == role)
                    .map(|(_, w)| w.clone())
                    .unwrap_or_default();
                Err(CertError::Duplicate {
                    role,
                    first,
                    second: what.to_string(),
                })
            }
            None => {
                *slot = Some(cert);
                self.origins.push((role, what.to_string()));
                Ok(())
            }
        }
    }

    /// Where the certificate of `role` came from, if given.
    pub fn origin(&self, role: CertRole) -> Option<&str> {
        self.origins
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, w)| w.as_str())
    }
}
