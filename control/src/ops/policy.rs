//! `control isolate|unisolate|allow|disallow|rules`. Rules are kept as written (by container
//! name) in the state and compiled into the identity-keyed policy map, one key per rule side:
//! adding or removing a rule touches only its own keys, whatever the number of rules.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use weir_common::{
    addr::port_be,
    conntrack::{CtEntry, FlowKey},
    maps as names,
    policy::{
        IDENTITY_ANY, NetPair, Peer, PolicyKey, RuleSource, VERDICT_ALLOW, VERDICT_DENY, decide,
    },
};

use super::{Ctx, container};
use crate::{
    datapath::maps,
    error::{Context, Error, Result},
    state::{self, Rule, RuleKind, State},
    validate,
};

/// The map keys a rule speaks for (empty while a container it names does not exist).
pub fn keys_of(st: &State, r: &Rule) -> Vec<PolicyKey> {
    let id = |n: &str| st.containers.get(n).map(|c| c.identity);
    let Some(a) = id(&r.a) else { return vec![] };
    match (&r.kind, &r.b) {
        (RuleKind::Isolate, None) => vec![PolicyKey::new(IDENTITY_ANY, a, 0, 0)],
        (RuleKind::Isolate, Some(b)) => match id(b) {
            Some(b) => vec![PolicyKey::new(a, b, 0, 0), PolicyKey::new(b, a, 0, 0)],
            None => vec![],
        },
        (RuleKind::Allow, Some(b)) => match id(b) {
            Some(b) => {
                let (proto, port) = r
                    .port
                    .map(|(p, n)| (p.number(), port_be(n)))
                    .unwrap_or((0, 0));
                vec![PolicyKey::new(a, b, proto, port)]
            }
            None => vec![],
        },
        (RuleKind::Allow, None) => vec![],
    }
}

/// Every policy map entry the state calls for. At one key, an allow beats a deny.
pub fn compile(st: &State) -> HashMap<PolicyKey, u32> {
    let mut out = HashMap::new();
    for r in &st.rules {
        let v = if r.kind == RuleKind::Allow {
            VERDICT_ALLOW
        } else {
            VERDICT_DENY
        };
        for k in keys_of(st, r) {
            let e = out.entry(k).or_insert(v);
            if v == VERDICT_ALLOW {
                *e = VERDICT_ALLOW;
            }
        }
    }
    out
}

/// Recomputes and writes the given keys from all rules.
fn write_keys(ctx: &Ctx, st: &State, keys: &[PolicyKey]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let wanted: HashSet<PolicyKey> = keys.iter().copied().collect();
    let mut verdicts: HashMap<PolicyKey, u32> = HashMap::new();
    for r in &st.rules {
        let v = if r.kind == RuleKind::Allow {
            VERDICT_ALLOW
        } else {
            VERDICT_DENY
        };
        for k in keys_of(st, r).into_iter().filter(|k| wanted.contains(k)) {
            let e = verdicts.entry(k).or_insert(v);
            if v == VERDICT_ALLOW {
                *e = VERDICT_ALLOW;
            }
        }
    }
    let mut m = maps::hash::<PolicyKey, u32>(&ctx.inst, names::POLICY)?;
    for k in wanted {
        match verdicts.get(&k) {
            Some(v) => m.insert(k, *v, 0).ctx(|| "writing the policy map".into())?,
            None => {
                let _ = m.remove(&k);
            }
        }
    }
    Ok(())
}

/// Installs the entries of every rule naming `name` (after the container got its identity).
pub fn apply_for(ctx: &Ctx, st: &State, name: &str) -> Result<()> {
    let keys: Vec<PolicyKey> = st
        .rules
        .iter()
        .filter(|r| r.a == name || r.b.as_deref() == Some(name))
        .flat_map(|r| keys_of(st, r))
        .collect();
    write_keys(ctx, st, &keys)
}

/// Removes the entries of every rule naming `name` (before the container goes away).
pub fn remove_for(ctx: &Ctx, st: &State, name: &str) -> Result<()> {
    let mut m = maps::hash::<PolicyKey, u32>(&ctx.inst, names::POLICY)?;
    for r in st
        .rules
        .iter()
        .filter(|r| r.a == name || r.b.as_deref() == Some(name))
    {
        for k in keys_of(st, r) {
            let _ = m.remove(&k);
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct RuleInfo {
    pub kind: RuleKind,
    pub a: String,
    pub b: Option<String>,
    pub port: Option<String>,
    pub text: String,
}

pub fn describe(r: &Rule) -> String {
    let port = r
        .port
        .map(|(p, n)| format!(" --port {n}/{}", p.name()))
        .unwrap_or_default();
    match (&r.kind, &r.b) {
        (RuleKind::Isolate, None) => format!("isolate {}", r.a),
        (RuleKind::Isolate, Some(b)) => format!("isolate {} {b}", r.a),
        (RuleKind::Allow, Some(b)) => format!("allow {} {b}{port}", r.a),
        (RuleKind::Allow, None) => format!("allow {}", r.a),
    }
}

pub fn list(st: &State) -> Vec<RuleInfo> {
    st.rules
        .iter()
        .map(|r| RuleInfo {
            kind: r.kind,
            a: r.a.clone(),
            b: r.b.clone(),
            port: r.port.map(|(p, n)| format!("{n}/{}", p.name())),
            text: describe(r),
        })
        .collect()
}

/// Builds a rule from command arguments, checking the containers exist.
pub fn rule(
    st: &State,
    kind: RuleKind,
    a: &str,
    b: Option<&str>,
    port: Option<&str>,
) -> Result<Rule> {
    st.container(a)?;
    if let Some(b) = b {
        st.container(b)?;
        if a == b {
            return Err(Error::invalid(format!(
                "{a:?} twice: a container always reaches itself"
            )));
        }
    }
    let port = port.map(validate::port_spec).transpose()?;
    if kind == RuleKind::Allow && b.is_none() {
        return Err(Error::invalid(
            "allow needs two containers: control allow FROM TO [--port PORT/PROTO]",
        ));
    }
    // `isolate A B` and `isolate B A` are the same rule.
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

/// Adds (`add`) or removes a rule. Returns false when nothing changed (idempotent).
/// With `cut`, established flows the new policy denies are cut too.
pub async fn change(
    ctx: &Ctx,
    kind: RuleKind,
    a: &str,
    b: Option<&str>,
    port: Option<&str>,
    add: bool,
    cut: bool,
) -> Result<bool> {
    let (_lock, mut st) = ctx.begin().await?;
    let r = rule(&st, kind, a, b, port)?;
    let present = st.rules.contains(&r);
    if present == add {
        if cut {
            cut_denied(ctx, &st)?;
        }
        return Ok(false);
    }
    let j = state::Journal::begin(&ctx.inst, &describe(&r))?;
    let keys = keys_of(&st, &r);
    if add {
        st.rules.push(r);
    } else {
        st.rules.retain(|x| *x != r);
    }
    state::save(&ctx.inst, &st)?;
    write_keys(ctx, &st, &keys)?;
    j.done()?;
    if cut {
        cut_denied(ctx, &st)?;
    }
    Ok(true)
}

/// Parses one rule line: `isolate A [B]` or `allow A B [--port PORT/PROTO]` (blank lines and
/// `#` comments are skipped: returns None).
pub fn parse_line(st: &State, line: &str) -> Result<Option<Rule>> {
    let line = line.split('#').next().unwrap_or("").trim();
    if line.is_empty() {
        return Ok(None);
    }
    let w: Vec<&str> = line.split_whitespace().collect();
    let bad = || {
        Error::invalid(format!(
            "invalid rule {line:?}: expected `isolate A [B]` or `allow A B [--port PORT/PROTO]`"
        ))
    };
    match w.as_slice() {
        ["isolate", a] => rule(st, RuleKind::Isolate, a, None, None).map(Some),
        ["isolate", a, b] => rule(st, RuleKind::Isolate, a, Some(b), None).map(Some),
        ["allow", a, b] => rule(st, RuleKind::Allow, a, Some(b), None).map(Some),
        ["allow", a, b, "--port", p] => rule(st, RuleKind::Allow, a, Some(b), Some(p)).map(Some),
        _ => Err(bad()),
    }
}

/// Adds many rules in one change (all or nothing: any invalid line fails before anything is
/// applied). Returns how many were new.
pub async fn import(ctx: &Ctx, text: &str) -> Result<usize> {
    let (_lock, mut st) = ctx.begin().await?;
    let mut new = Vec::new();
    let mut seen: HashSet<Rule> = st.rules.iter().cloned().collect();
    for (i, line) in text.lines().enumerate() {
        let r =
            parse_line(&st, line).map_err(|e| Error::invalid(format!("line {}: {e}", i + 1)))?;
        if let Some(r) = r
            && seen.insert(r.clone())
        {
            new.push(r);
        }
    }
    if new.is_empty() {
        return Ok(0);
    }
    let j = state::Journal::begin(&ctx.inst, &format!("rules import ({} rules)", new.len()))?;
    let keys: Vec<PolicyKey> = new.iter().flat_map(|r| keys_of(&st, r)).collect();
    let n = new.len();
    st.rules.extend(new);
    state::save(&ctx.inst, &st)?;
    write_keys(ctx, &st, &keys)?;
    j.done()?;
    Ok(n)
}

/// The current policy as the datapath sees it, evaluated in user space over the state.
struct Compiled<'a> {
    rules: HashMap<PolicyKey, u32>,
    st: &'a State,
}

impl RuleSource for Compiled<'_> {
    fn rule(&self, key: &PolicyKey) -> Option<u32> {
        self.rules.get(key).copied()
    }
    fn connected(&self, pair: &NetPair) -> bool {
        self.st.net_links.iter().any(|(a, b)| {
            match (self.st.networks.get(a), self.st.networks.get(b)) {
                (Some(x), Some(y)) => NetPair::new(x.id, y.id) == *pair,
                _ => false,
            }
        })
    }
}

/// Cuts established container-to-container flows (including hairpin) that the current policy
/// would not allow to start. Returns how many flows were cut.
pub fn cut_denied(ctx: &Ctx, st: &State) -> Result<usize> {
    let by_id: HashMap<u32, Peer> = st
        .containers
        .values()
        .filter_map(|c| {
            Some((
                c.identity,
                Peer {
                    identity: c.identity,
                    network: st.networks.get(&c.network)?.id,
                },
            ))
        })
        .collect();
    let compiled = Compiled {
        rules: compile(st),
        st,
    };
    container::purge_conntrack(ctx, |_k: &FlowKey, e: &CtEntry| {
        if e.is_reply() {
            return false;
        }
        let (Some(src), Some(dst)) = (by_id.get(&e.src_identity), by_id.get(&e.dst_identity))
        else {
            return false; // world and host flows are not container policy
        };
        // The port the target sees is the rewritten destination port of the original direction.
        !decide(&compiled, *src, *dst, e.rewrite.proto, e.rewrite.dport).0
    })
}
