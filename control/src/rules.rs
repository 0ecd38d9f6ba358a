//! Policy rules as the user wrote them (`isolate A B`, `allow A B --port 80/tcp`): one line
//! each in the rule book, a [`Book`] beside the state.

use std::{fmt, str::FromStr};

use crate::{
    book::Book,
    error::{Error, Result},
    instance::Instance,
    state::Proto,
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

/// The rule book (see [`crate::book`]).
pub type RuleBook = Book<Rule>;

impl RuleBook {
    pub fn open(inst: &Instance) -> Result<Self> {
        Book::load(inst.rules_file())
    }

    /// The rules naming container `name`.
    pub fn naming(&self, name: &str) -> Result<Vec<Rule>> {
        // Names hold no spaces: a line that does not contain the name cannot name it.
        self.matching(name, |r| r.names(name))
    }

    /// Drops every rule naming container `name` (it is going away).
    pub fn forget(&mut self, name: &str) -> Result<usize> {
        // Names hold no spaces: a line that does not contain the name cannot name it.
        self.retain(name, |r| !r.names(name))
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn forgetting_a_container_drops_only_its_rules() {
        let d = tempfile::tempdir().unwrap();
        let inst = Instance::new(d.path()).unwrap();
        let mut b = RuleBook::open(&inst).unwrap();
        b.extend(&[
            rule("isolate a b"),
            rule("isolate ab c"),
            rule("allow c a --port 80/tcp"),
        ])
        .unwrap();
        assert_eq!(b.forget("a").unwrap(), 2);
        assert_eq!(b.items().unwrap(), vec![rule("isolate ab c")]);
    }
}
