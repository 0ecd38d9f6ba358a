//! Which CNI spec versions weir-cni speaks, and what each allows.

use serde::Serialize;

use super::error::{CniError, CniResult, code};

/// Every version whose configuration and result format we implement. 0.3.x and 0.4.0 results
/// carry `"version": "4"` on IPs; 1.x results do not. CHECK exists from 0.4.0, STATUS and GC
/// from 1.1.0.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version reported when the runtime did not say which it speaks.
pub const LATEST: &str = "1.1.0";

/// A supported spec version, ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(u8, u8, u8);

impl Version {
    pub const V0_4_0: Version = Version(0, 4, 0);
    pub const V1_0_0: Version = Version(1, 0, 0);
    pub const V1_1_0: Version = Version(1, 1, 0);

    /// Parses a version we support; anything else is "incompatible version" (code 1).
    pub fn parse(s: &str) -> CniResult<Self> {
        if s.is_empty() {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!(
                    "the network configuration has no cniVersion (that means 0.1.0); weir-cni supports {}",
                    SUPPORTED.join(", ")
                ),
            ));
        }
        if !SUPPORTED.contains(&s) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!(
                    "cniVersion {s:?} is not supported; weir-cni supports {}",
                    SUPPORTED.join(", ")
                ),
            ));
        }
        let mut it = s.split('.').map(|p| p.parse::<u8>().unwrap_or(0));
        Ok(Version(
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
        ))
    }

    /// Results before 1.0.0 name the IP family on every address.
    pub fn ips_carry_family(self) -> bool {
        self < Self::V1_0_0
    }

    /// Fails with code 1 when `command` does not exist in this version.
    pub fn require(self, at_least: Version, command: &str) -> CniResult<()> {
        if self < at_least {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("config version does not allow {command}"),
                format!("{command} needs cniVersion {at_least} or later"),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The VERSION result.
#[derive(Debug, Serialize)]
pub struct VersionInfo {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<&'static str>,
}

/// VERSION echoes the version the runtime asked with (any string: VERSION is how a runtime
/// finds out what we speak) and lists ours.
pub fn info(asked: Option<&str>) -> VersionInfo {
    VersionInfo {
        cni_version: asked
            .filter(|s| !s.is_empty())
            .unwrap_or(LATEST)
            .to_string(),
        supported_versions: SUPPORTED.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_supported_and_orders() {
        assert!(Version::parse("0.3.1").unwrap() < Version::parse("0.4.0").unwrap());
        assert!(Version::parse("1.0.0").unwrap() < Version::V1_1_0);
        assert!(Version::parse("0.3.1").unwrap().ips_carry_family());
        assert!(!Version::parse("1.0.0").unwrap().ips_carry_family());
        for bad in ["", "0.2.0", "2.0.0", "1.0", "x", "0.1.0"] {
            assert_eq!(
                Version::parse(bad).unwrap_err().code,
                code::INCOMPATIBLE_VERSION
            );
        }
        assert!(
            Version::parse("0.3.1")
                .unwrap()
                .require(Version::V0_4_0, "CHECK")
                .is_err()
        );
    }
}
