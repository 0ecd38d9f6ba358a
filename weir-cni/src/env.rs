//! The execution parameters a runtime passes in the environment (SPEC.md §2 "Parameters"),
//! validated as the spec words them; every failure is code 4 naming the variable.

use std::{collections::BTreeMap, path::PathBuf};

use super::error::{CniError, CniResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// What a runtime told us about one invocation.
#[derive(Debug, Clone)]
pub struct Env {
    pub command: Command,
    /// Set for ADD, DEL and CHECK.
    pub container_id: String,
    /// Required for ADD and CHECK; optional for DEL (the namespace may be gone already).
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: Args,
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`. Unknown keys are ignored (runtimes add
/// their own, e.g. K8S_POD_INFRA_CONTAINER_ID).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args(pub BTreeMap<String, String>);

impl Args {
    pub fn parse(s: &str) -> CniResult<Self> {
        let mut m = BTreeMap::new();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                CniError::env(format!(
                    "invalid CNI_ARGS: {pair:?} is not KEY=VALUE (pairs are separated by ';')"
                ))
            })?;
            if k.is_empty() {
                return Err(CniError::env(format!(
                    "invalid CNI_ARGS: {pair:?} has an empty key"
                )));
            }
            m.insert(k.to_string(), v.to_string());
        }
        Ok(Self(m))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Parses the command alone (VERSION needs nothing else).
pub fn command(get: &impl Fn(&str) -> Option<String>) -> CniResult<Command> {
    let c = get("CNI_COMMAND").unwrap_or_default();
    Ok(match c.as_str() {
        "ADD" => Command::Add,
        "DEL" => Command::Del,
        "CHECK" => Command::Check,
        "VERSION" => Command::Version,
        "STATUS" => Command::Status,
        "GC" => Command::Gc,
        "" => {
            return Err(CniError::env(
                "required env variables [CNI_COMMAND] missing: weir-cni is a CNI plugin, run by a container runtime",
            ));
        }
        other => {
            return Err(CniError::env(format!(
                "unknown CNI_COMMAND {other:?}: use ADD, DEL, CHECK, VERSION, STATUS or GC"
            )));
        }
    })
}

/// Reads and validates everything `command` requires.
pub fn parse(get: impl Fn(&str) -> Option<String>) -> CniResult<Env> {
    let command = command(&get)?;
    let per_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
    let needs_netns = matches!(command, Command::Add | Command::Check);
    let val = |k: &str| get(k).filter(|v| !v.is_empty());

    let mut missing = Vec::new();
    let container_id = val("CNI_CONTAINERID");
    let ifname = val("CNI_IFNAME");
    let netns = val("CNI_NETNS");
    if per_attachment {
        if container_id.is_none() {
            missing.push("CNI_CONTAINERID");
        }
        if ifname.is_none() {
            missing.push("CNI_IFNAME");
        }
    }
    if needs_netns && netns.is_none() {
        missing.push("CNI_NETNS");
    }
    if !missing.is_empty() {
        return Err(CniError::env(format!(
            "required env variables [{}] missing for {}",
            missing.join(","),
            command.name()
        )));
    }
    let container_id = container_id.unwrap_or_default();
    let ifname = ifname.unwrap_or_default();
    if per_attachment {
        container_id_valid(&container_id)?;
        ifname_valid(&ifname)?;
    }
    Ok(Env {
        command,
        container_id,
        netns: netns.map(PathBuf::from),
        ifname,
        args: Args::parse(&val("CNI_ARGS").unwrap_or_default())?,
    })
}

/// SPEC: starts with an alphanumeric character, then alphanumerics, `_`, `.` or `-`.
fn container_id_valid(id: &str) -> CniResult<()> {
    let first = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first || !rest {
        return Err(CniError::env(format!(
            "invalid CNI_CONTAINERID {id:?}: must start with a letter or digit, then letters, digits, '_', '.' or '-'"
        )));
    }
    Ok(())
}

/// SPEC: a Linux interface name: not empty, not `.` or `..`, under 16 bytes, no `/`, `:` or
/// whitespace — and no `%`, which the kernel would expand into a number (`eth%d` → `eth0`),
/// so the interface would not be found under the name asked for.
fn ifname_valid(name: &str) -> CniResult<()> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 15
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '%' || c.is_whitespace());
    if bad {
        return Err(CniError::env(format!(
            "invalid CNI_IFNAME {name:?}: use 1-15 characters without '/', ':', '%' or whitespace"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;

    fn env(vars: &[(&str, &str)]) -> CniResult<Env> {
        let m: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(move |k| m.get(k).cloned())
    }

    #[test]
    fn add_needs_id_netns_ifname() {
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("CNI_CONTAINERID") && e.msg.contains("CNI_NETNS"));
        let ok = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.0.0.5"),
        ])
        .unwrap();
        assert_eq!(ok.args.get("K8S_POD_NAME"), Some("web"));
        assert_eq!(ok.args.get("IP"), Some("10.0.0.5"));
    }

    #[test]
    fn del_without_netns_is_fine() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert!(e.netns.is_none());
    }

    #[test]
    fn rejects_bad_values() {
        for (k, v) in [
            ("CNI_CONTAINERID", "-abc"),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_IFNAME", "a-very-long-name0"),
            ("CNI_IFNAME", "eth:0"),
            ("CNI_IFNAME", ".."),
            ("CNI_IFNAME", "eth%d"),
            ("CNI_ARGS", "novalue"),
            ("CNI_COMMAND", "FROB"),
        ] {
            let mut vars = vec![
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "abc"),
                ("CNI_IFNAME", "eth0"),
            ];
            vars.retain(|(kk, _)| *kk != k);
            vars.push((k, v));
            let e = env(&vars).unwrap_err();
            assert_eq!(e.code, code::INVALID_ENV, "{k}={v}");
            assert!(e.msg.contains(k), "{k}: {}", e.msg);
        }
        assert_eq!(env(&[]).unwrap_err().code, code::INVALID_ENV);
    }

    #[test]
    fn version_needs_nothing_else() {
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
    }
}
