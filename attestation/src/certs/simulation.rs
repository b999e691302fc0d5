//! The names of Cloister's simulation root of trust (`crate::sim`): its ARK, ASK and VCEK
//! have AMD's structure and AMD's subject common names (ARK-Genoa, SEV-Genoa, SEV-VCEK), so
//! every loader and check treats them like AMD's, but the rest of the distinguished name
//! says that they are a simulation. One definition here, used by the simulator that makes
//! the certificates and by the verifier that recognises them.

/// organizationalUnitName of every simulation certificate (AMD's: "Engineering").
pub const SIM_ORGANIZATIONAL_UNIT: &str = "Cloister simulated secure processor";
/// countryName (AMD's: "US"); "ZZ" is the user-assigned code for "no country".
pub const SIM_COUNTRY: &str = "ZZ";
/// localityName (AMD's: "Santa Clara").
pub const SIM_LOCALITY: &str = "Nowhere";
/// stateOrProvinceName (AMD's: "CA").
pub const SIM_STATE: &str = "None";
/// organizationName (AMD's: "Advanced Micro Devices").
pub const SIM_ORGANIZATION: &str = "Cloister simulation (not Advanced Micro Devices)";

/// The distinguished name of a simulation certificate with common name `cn`, as
/// x509-parser prints it (the attributes in AMD's order: OU, C, L, ST, O, CN).
pub fn sim_distinguished_name(cn: &str) -> String {
    format!(
        "OU={SIM_ORGANIZATIONAL_UNIT}, C={SIM_COUNTRY}, L={SIM_LOCALITY}, ST={SIM_STATE}, O={SIM_ORGANIZATION}, CN={cn}"
    )
}

/// True when a printed distinguished name carries the simulation's organization.
pub fn names_simulation(dn: &str) -> bool {
    dn.split(", ")
        .any(|attr| attr == format!("O={SIM_ORGANIZATION}"))
}

impl super::Certificate {
    /// True when the subject or the issuer is the Cloister simulation (see
    /// [`SIM_ORGANIZATION`]): the certificate belongs to the simulation root, not to AMD.
    pub fn is_simulation(&self) -> bool {
        names_simulation(&self.subject) || names_simulation(&self.issuer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_simulation_organization_only() {
        assert!(names_simulation(&sim_distinguished_name("ARK-Genoa")));
        assert!(!names_simulation(
            "OU=Engineering, C=US, L=Santa Clara, ST=CA, O=Advanced Micro Devices, CN=ARK-Genoa"
        ));
        // The words elsewhere (a common name, another attribute) are not the organization.
        assert!(!names_simulation(&format!("CN={SIM_ORGANIZATION}")));
        assert!(!names_simulation(&format!("OU={SIM_ORGANIZATION}")));
    }
}
