//! Policy rules as the user wrote them, and the rule book that keeps them.
//!
//! The book is a text file beside the state, one rule per line in the syntax `control rules`
//! prints and `control rules import` reads. Hosts keep tens of thousands of rules, so a change
//! must not cost a pass over all of them: adding a rule appends one line, finding one is a
//! substring search, and only removal rewrites the file (bytes, no parsing). Keeping the rules
//! inside the JSON state made `control isolate` parse and rewrite every rule, 13 ms at 10,000
//! rules — twice what `iptables -I` takes.

use std::{
    collections::HashSet,
    fmt,
    fs::{self, OpenOptions},
    os::unix::fs::FileExt,
    path::PathBuf,
    str::FromStr,
};

use crate::{
    error::{Context, Error, Result},
    instance::Instance,
    state::{self, Proto},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    Isolate,
    Allow,
}

/// `isolate A B` and `isolate A` deny; `allow A B [--port PORT/PROTO]` is an exception.
/// `isolate` pairs are kept with the smaller name first, so each rule has one spelling.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    pub kind: RuleKind,
    pub a: String,
    /// None only for `isolate A` (A accepts no new connections from other containers).
    pub b: Option<String>,
    pub port: Option<(Proto, u16)>,
}

impl Rule {
    /// The rules whose policy-map keys can coincide with this rule's: at a shared key an
    /// allow beats an isolate, so a change recomputes the key from these alone.
    pub fn key_sharers(&self) -> Vec<Rule> {
        let rule = |kind, a: &str, b: &str| {
            let (a, b) = if kind == RuleKind::Isolate && b < a {
                (b, a)
            } else {
                (a, b)
            };
            Rule {
                kind,
                a: a.to_string(),
                b: Some(b.to_string()),
                port: None,
            }
        };
        match (&self.kind, &self.b, &self.port) {
            (RuleKind::Isolate, Some(b), _) => vec![
                self.clone(),
                rule(RuleKind::Allow, &self.a, b),
                rule(RuleKind::Allow, b, &self.a),
            ],
            (RuleKind::Allow, Some(b), None) => {
                vec![self.clone(), rule(RuleKind::Isolate, &self.a, b)]
            }
            _ => vec![self.clone()],
        }
    }

    pub fn names(&self, name: &str) -> bool {
        self.a == name || self.b.as_deref() == Some(name)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            RuleKind::Isolate => write!(f, "isolate {}", self.a)?,
            RuleKind::Allow => write!(f, "allow {}", self.a)?,
        }
        if let Some(b) = &self.b {
            write!(f, " {b}")?;
        }
        if let Some((p, n)) = self.port {
            write!(f, " --port {n}/{}", p.name())?;
        }
        Ok(())
    }
}

/// Parses one rule as written (syntax only: whether the containers exist is the caller's
/// business). The error says what the syntax is.
impl FromStr for Rule {
    type Err = Error;

    fn from_str(line: &str) -> Result<Self> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let bad = || {
            Error::invalid(format!(
                "invalid rule {line:?}: expected `isolate A [B]` or `allow A B [--port PORT/PROTO]`"
            ))
        };
        let (kind, a, b, port) = match w.as_slice() {
            ["isolate", a] => (RuleKind::Isolate, *a, None, None),
            ["isolate", a, b] => (RuleKind::Isolate, *a, Some(*b), None),
            ["allow", a, b] => (RuleKind::Allow, *a, Some(*b), None),
            ["allow", a, b, "--port", p] => (
                RuleKind::Allow,
                *a,
                Some(*b),
                Some(crate::validate::port_spec(p)?),
            ),
            _ => return Err(bad()),
        };
        let (a, b) = match (kind, b) {
            (RuleKind::Isolate, Some(b)) if b < a => (b, Some(a)),
            _ => (a, b),
        };
        Ok(Rule {
            kind,
            a: a.to_string(),
            b: b.map(str::to_string),
            port,
        })
    }
}

/// The rule book of an instance (see the module docs). Changes happen under the instance lock.
pub struct RuleBook {
    path: PathBuf,
    /// The file's content: whole lines, each ending in '\n'.
    text: String,
}

impl RuleBook {
    pub fn load(inst: &Instance) -> Result<Self> {
        let path = inst.rules_file();
        let mut text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(Error::Other(anyhow::anyhow!(
                    "reading {}: {e}",
                    path.display()
                )));
            }
        };
        // A command killed inside its one-line append leaves a line without its newline. That
        // rule was never acknowledged, and a prefix of a rule can be another valid rule
        // ("isolate a" of "isolate a b"): drop it.
        if !text.is_empty() && !text.ends_with('\n') {
            let keep = text.rfind('\n').map_or(0, |i| i + 1);
            text.truncate(keep);
        }
        Ok(Self { path, text })
    }

    pub fn len(&self) -> usize {
        self.text.bytes().filter(|b| *b == b'\n').count()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Whether the book holds `r`, found as its exact line.
    pub fn contains(&self, r: &Rule) -> bool {
        let line = r.to_string();
        self.text
            .strip_prefix(line.as_str())
            .is_some_and(|rest| rest.starts_with('\n'))
            || self.text.contains(&format!("\n{line}\n"))
    }

    /// The lines, for many membership tests at once.
    pub fn lines(&self) -> HashSet<&str> {
        self.text.lines().collect()
    }

    /// Every rule, in the order they were added.
    pub fn rules(&self) -> Result<Vec<Rule>> {
        self.text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                l.parse().map_err(|e: Error| Error::CorruptState {
                    path: self.path.clone(),
                    reason: format!("line {}: {e}", i + 1),
                })
            })
            .collect()
    }

    /// Adds one rule: a single durable append, whatever the size of the book.
    pub fn append(&mut self, r: &Rule) -> Result<()> {
        let line = format!("{r}\n");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)
            .ctx(|| format!("opening {}", self.path.display()))?;
        // Written at the end of what was loaded: that cuts off a torn line left on disk.
        let end = self.text.len() as u64;
        f.set_len(end)
            .and_then(|()| f.write_all_at(line.as_bytes(), end))
            .and_then(|()| f.sync_data())
            .ctx(|| format!("appending to {}", self.path.display()))?;
        self.text.push_str(&line);
        Ok(())
    }

    /// Adds many rules in one atomic replacement (all or none survive a crash).
    pub fn extend(&mut self, rules: &[Rule]) -> Result<()> {
        let mut text = self.text.clone();
        for r in rules {
            text.push_str(&r.to_string());
            text.push('\n');
        }
        state::write_atomic(&self.path, text.as_bytes(), true)?;
        self.text = text;
        Ok(())
    }

    /// Keeps the rules `keep` accepts; returns how many went. Lines are compared, not parsed,
    /// except by `keep` itself.
    pub fn retain(&mut self, keep: impl Fn(&Rule) -> bool) -> Result<usize> {
        let mut text = String::with_capacity(self.text.len());
        let mut gone = 0;
        for line in self.text.lines() {
            let r: Rule = line.parse()?;
            if keep(&r) {
                text.push_str(line);
                text.push('\n');
            } else {
                gone += 1;
            }
        }
        if gone > 0 {
            state::write_atomic(&self.path, text.as_bytes(), true)?;
            self.text = text;
        }
        Ok(gone)
    }

    /// Removes one rule by its line.
    pub fn remove(&mut self, r: &Rule) -> Result<bool> {
        let line = r.to_string();
        let mut text = String::with_capacity(self.text.len());
        let mut gone = false;
        for l in self.text.lines() {
            if !gone && l == line {
                gone = true;
            } else {
                text.push_str(l);
                text.push('\n');
            }
        }
        if gone {
            state::write_atomic(&self.path, text.as_bytes(), true)?;
            self.text = text;
        }
        Ok(gone)
    }

    /// Drops every rule naming container `name` (it is going away).
    pub fn forget(&mut self, name: &str) -> Result<usize> {
        // Names hold no spaces: a line that does not contain the name as a word cannot name it.
        if !self.text.split_whitespace().any(|w| w == name) {
            return Ok(0);
        }
        self.retain(|r| !r.names(name))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn rule(s: &str) -> Rule {
        s.parse().unwrap()
    }

    #[test]
    fn rules_round_trip_as_lines() {
        for s in [
            "isolate a",
            "isolate a b-1.x",
            "allow b a",
            "allow a b --port 53/udp",
            "allow a b --port 80/tcp",
        ] {
            assert_eq!(rule(s).to_string(), s);
        }
        // One spelling per isolate pair.
        assert_eq!(rule("isolate z a").to_string(), "isolate a z");
        assert_eq!(
            rule("allow a b --port 80").to_string(),
            "allow a b --port 80/tcp"
        );
        for bad in [
            "",
            "deny a b",
            "allow a",
            "allow a b 80",
            "allow a b --port 80/sctp",
            "allow a b --port 0/tcp",
            "isolate a b c",
        ] {
            assert!(bad.parse::<Rule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn key_sharers_are_the_rules_that_can_meet_at_a_key() {
        let s = |r: &str| -> Vec<String> {
            rule(r)
                .key_sharers()
                .iter()
                .map(|r| r.to_string())
                .collect()
        };
        assert_eq!(s("isolate a b"), ["isolate a b", "allow a b", "allow b a"]);
        assert_eq!(s("allow b a"), ["allow b a", "isolate a b"]);
        assert_eq!(s("allow a b --port 1/udp"), ["allow a b --port 1/udp"]);
        assert_eq!(s("isolate a"), ["isolate a"]);
    }

    fn book() -> (tempfile::TempDir, RuleBook) {
        let d = tempfile::tempdir().unwrap();
        let inst = Instance::new(d.path()).unwrap();
        let b = RuleBook::load(&inst).unwrap();
        (d, b)
    }

    #[test]
    fn book_appends_finds_and_removes_lines() {
        let (_d, mut b) = book();
        assert!(b.is_empty());
        b.append(&rule("isolate a b")).unwrap();
        b.extend(&[rule("isolate a"), rule("allow a bb --port 80/tcp")])
            .unwrap();
        assert_eq!(b.len(), 3);
        assert!(b.contains(&rule("isolate a b")));
        assert!(b.contains(&rule("isolate a")));
        assert!(!b.contains(&rule("isolate b")));
        assert!(!b.contains(&rule("allow a b --port 80/tcp")));
        assert!(b.remove(&rule("isolate a b")).unwrap());
        assert!(!b.remove(&rule("isolate a b")).unwrap());
        assert_eq!(b.forget("bb").unwrap(), 1);
        assert_eq!(b.rules().unwrap(), vec![rule("isolate a")]);
    }

    #[test]
    fn a_torn_append_is_dropped_on_load() {
        let (d, mut b) = book();
        b.append(&rule("isolate a b")).unwrap();
        let inst = Instance::new(d.path()).unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(inst.rules_file())
            .unwrap();
        f.write_all(b"isolate c").unwrap();
        let mut b = RuleBook::load(&inst).unwrap();
        assert_eq!(b.rules().unwrap(), vec![rule("isolate a b")]);
        b.append(&rule("isolate d")).unwrap();
        let b = RuleBook::load(&inst).unwrap();
        assert_eq!(
            b.rules().unwrap(),
            vec![rule("isolate a b"), rule("isolate d")]
        );
    }
}
