//! `control isolate|unisolate|allow|disallow|rules`. Rules are kept as written (by container
//! name) in the rule book and compiled into the identity-keyed policy map, one key per rule
//! side: adding or removing a rule touches only its own keys and the few rules that can share
//! them, whatever the number of rules.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use weir_common::{
    addr::port_be,
    conntrack::{CtEntry, FlowKey},
    policy::{
        IDENTITY_ANY, NetPair, Peer, PolicyKey, RuleSource, VERDICT_ALLOW, VERDICT_DENY, decide,
    },
};

use super::{Change, Ctx, container, tx};
use crate::{
    datapath::maps,
    error::{Context, Error, Result},
    rules::{Rule, RuleBook, RuleKind},
    state::{Proto, State},
};

/// The map keys a rule speaks for (empty while a container it names does not exist).
pub fn keys_of(st: &State, r: &Rule) -> Vec<PolicyKey> {
    keys_with(|n| st.identities(n), r)
}

/// [`keys_of`] with the identities of each name from `ids`: compiling every rule looks them
/// up in an index built once, not by a scan of every container per rule.
fn keys_with(ids: impl Fn(&str) -> Vec<u32>, r: &Rule) -> Vec<PolicyKey> {
    // A container on several networks has an identity per network: a rule covers them all.
    let a_ids = ids(&r.a);
    let b_ids = r.b.as_deref().map(&ids).unwrap_or_default();
    let port = r
        .port
        .map(|(p, n)| (p.number(), port_be(n)))
        .unwrap_or((0, 0));
    let mut keys = Vec::new();
    for &a in &a_ids {
        match (&r.kind, &r.b) {
            (RuleKind::Isolate, None) => keys.push(PolicyKey::new(IDENTITY_ANY, a, 0, 0)),
            (RuleKind::Isolate, Some(_)) => {
                for &b in &b_ids {
                    keys.extend([PolicyKey::new(a, b, 0, 0), PolicyKey::new(b, a, 0, 0)]);
                }
            }
            (RuleKind::Allow, Some(_)) => {
                keys.extend(b_ids.iter().map(|&b| PolicyKey::new(a, b, port.0, port.1)));
            }
            (RuleKind::Allow, None) => {}
        }
    }
    keys
}

fn verdict(r: &Rule) -> u32 {
    match r.kind {
        RuleKind::Allow => VERDICT_ALLOW,
        RuleKind::Isolate => VERDICT_DENY,
    }
}

/// The policy map entries `rules` call for. At one key, an allow beats a deny.
pub fn compile<'a>(
    st: &State,
    rules: impl IntoIterator<Item = &'a Rule>,
) -> HashMap<PolicyKey, u32> {
    let mut by_name: HashMap<&str, Vec<u32>> = HashMap::new();
    for (n, c) in &st.containers {
        by_name.entry(n.as_str()).or_default().push(c.identity);
        if let Some(a) = c.alias.as_deref() {
            by_name.entry(a).or_default().push(c.identity);
        }
    }
    let ids = |n: &str| by_name.get(n).cloned().unwrap_or_default();
    let mut out = HashMap::new();
    for r in rules {
        let v = verdict(r);
        for k in keys_with(ids, r) {
            let e = out.entry(k).or_insert(v);
            if v == VERDICT_ALLOW {
                *e = VERDICT_ALLOW;
            }
        }
    }
    out
}

/// Rewrites the map keys of `changed` (just added or removed) from the rules of the book
/// that can share them.
fn write_keys(ctx: &Ctx, st: &State, book: &RuleBook, changed: &[Rule]) -> Result<()> {
    let keys: HashSet<PolicyKey> = changed.iter().flat_map(|r| keys_of(st, r)).collect();
    if keys.is_empty() {
        return Ok(());
    }
    // A few searches of the text beat indexing it; an import asks thousands of questions.
    let lines = (changed.len() > 8).then(|| book.lines());
    let present = |r: &Rule| match &lines {
        Some(l) => l.contains(r.to_string().as_str()),
        None => book.contains(r),
    };
    let sharers: HashSet<Rule> = changed
        .iter()
        .flat_map(Rule::key_sharers)
        .filter(|r| present(r))
        .collect();
    let verdicts = compile(st, &sharers);
    let mut m = maps::policy(&ctx.inst)?;
    for k in keys {
        match verdicts.get(&k) {
            Some(v) => m.insert(k, *v, 0).ctx(|| "writing the policy map".into())?,
            None => {
                let _ = m.remove(&k);
            }
        }
    }
    Ok(())
}

/// The rules naming record `name`, by its own name or by its alias.
fn naming_record(st: &State, book: &RuleBook, name: &str) -> Result<Vec<Rule>> {
    let mut rules = book.naming(name)?;
    if let Some(alias) = st.containers.get(name).and_then(|c| c.alias.as_deref()) {
        rules.extend(book.naming(alias)?);
    }
    Ok(rules)
}

/// Installs the entries of every rule naming record `name` or its alias (after the container
/// got its identity, or its alias).
pub fn apply_for(ctx: &Ctx, st: &State, name: &str) -> Result<()> {
    let book = RuleBook::open(&ctx.inst)?;
    let mine = naming_record(st, &book, name)?;
    write_keys(ctx, st, &book, &mine)
}

/// Removes the entries that record `name` (before it goes away) contributes to rules naming
/// it or its alias: its own identity's keys only, so a rule naming a container on several
/// networks keeps holding for the attachments that stay.
pub fn remove_for(ctx: &Ctx, st: &State, name: &str) -> Result<()> {
    let Some(id) = st.containers.get(name).map(|c| c.identity) else {
        return Ok(());
    };
    let book = RuleBook::open(&ctx.inst)?;
    let mut m = maps::policy(&ctx.inst)?;
    for r in naming_record(st, &book, name)? {
        for k in keys_of(st, &r)
            .into_iter()
            .filter(|k| k.src == id || k.dst == id)
        {
            let _ = m.remove(&k);
        }
    }
    Ok(())
}

/// The names rules give that no container answers to now: a runtime's containers that are
/// stopped (their rules wait for them), or not yet named.
pub fn waiting_names(ctx: &Ctx, st: &State) -> Result<Vec<String>> {
    let mut names: Vec<String> = RuleBook::open(&ctx.inst)?
        .items()?
        .into_iter()
        .flat_map(|r| [Some(r.a), r.b])
        .flatten()
        .filter(|n| st.answering(n).is_empty())
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Forgets the rules naming `name` once no container answers to it: a front end whose
/// containers are named by their runtime (weir-docker) calls this when the runtime's
/// container is gone for good, not when it merely stops (its rules then wait for it).
pub async fn forget_name(ctx: &Ctx, name: &str) -> Result<usize> {
    let (_lock, st) = ctx.begin().await?;
    if !st.answering(name).is_empty() {
        return Ok(0);
    }
    let mut book = RuleBook::open(&ctx.inst)?;
    if book.naming(name)?.is_empty() {
        return Ok(0);
    }
    // No container answers: the rules hold no map entries to take away.
    tx::run(
        ctx,
        &format!("forget rules of {name}"),
        &mut (),
        async |_| book.forget(name),
    )
    .await
}

#[derive(Debug, Serialize)]
pub struct RuleInfo {
    pub kind: RuleKind,
    pub a: String,
    pub b: Option<String>,
    pub port: Option<String>,
    pub text: String,
}

pub fn list(book: &RuleBook) -> Result<Vec<RuleInfo>> {
    Ok(book
        .items()?
        .into_iter()
        .map(|r| RuleInfo {
            kind: r.kind,
            port: r.port.map(|(p, n)| format!("{n}/{}", p.name())),
            text: r.to_string(),
            a: r.a,
            b: r.b,
        })
        .collect())
}

/// Checks that the containers a rule names exist and that it makes sense.
pub fn check(st: &State, r: &Rule) -> Result<()> {
    let a = st.answering_some(&r.a)?;
    if let Some(b) = &r.b {
        if r.a == *b {
            return Err(Error::invalid(format!(
                "{b:?} twice: a container always reaches itself"
            )));
        }
        if st.answering_some(b)?.iter().any(|n| a.contains(n)) {
            return Err(Error::invalid(format!(
                "{:?} and {b:?} are one container: a container always reaches itself",
                r.a
            )));
        }
    }
    Ok(())
}

/// Builds a rule from parsed command arguments (the containers are checked by [`change`]).
pub fn rule(kind: RuleKind, a: &str, b: Option<&str>, port: Option<(Proto, u16)>) -> Result<Rule> {
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

/// Whether a rule change also cuts the established flows the new policy denies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    Keep,
    Established,
}

/// What [`change`] did.
#[derive(Debug)]
pub struct RuleChange {
    pub rule: Rule,
    /// False when the rule was already present (added) or absent (removed).
    pub changed: bool,
    /// Established flows cut, with [`Cut::Established`].
    pub cut: Option<usize>,
}

/// Adds or removes a rule; idempotent.
pub async fn change(ctx: &Ctx, r: Rule, change: Change, cut: Cut) -> Result<RuleChange> {
    let (_lock, st) = ctx.begin().await?;
    check(&st, &r)?;
    let mut book = RuleBook::open(&ctx.inst)?;
    let changed = book.contains(&r) != (change == Change::Add);
    if changed {
        tx::run(ctx, &r.to_string(), &mut (), async |_| {
            match change {
                Change::Add => book.append(&r)?,
                Change::Remove => {
                    book.remove(&r)?;
                }
            }
            write_keys(ctx, &st, &book, std::slice::from_ref(&r))
        })
        .await?;
    }
    let cut = match cut {
        Cut::Established => Some(cut_denied(ctx, &st, &book)?),
        Cut::Keep => None,
    };
    Ok(RuleChange {
        rule: r,
        changed,
        cut,
    })
}

/// Parses one rule line of an import file: `isolate A [B]` or `allow A B [--port PORT/PROTO]`
/// (blank lines and `#` comments are skipped: returns None).
pub fn parse_line(st: &State, line: &str) -> Result<Option<Rule>> {
    let line = line.split('#').next().unwrap_or("").trim();
    if line.is_empty() {
        return Ok(None);
    }
    let r: Rule = line.parse()?;
    check(st, &r)?;
    Ok(Some(r))
}

/// Adds many rules in one change (all or nothing: any invalid line fails before anything is
/// applied). Returns how many were new.
pub async fn import(ctx: &Ctx, text: &str) -> Result<usize> {
    let (_lock, st) = ctx.begin().await?;
    let mut book = RuleBook::open(&ctx.inst)?;
    let mut new = Vec::new();
    {
        let have = book.lines();
        let mut seen = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let r = parse_line(&st, line)
                .map_err(|e| Error::invalid(format!("line {}: {e}", i + 1)))?;
            if let Some(r) = r {
                let l = r.to_string();
                if !have.contains(l.as_str()) && seen.insert(l) {
                    new.push(r);
                }
            }
        }
    }
    if new.is_empty() {
        return Ok(0);
    }
    let what = format!("rules import ({} rules)", new.len());
    tx::run(ctx, &what, &mut (), async |_| {
        book.extend(&new)?;
        write_keys(ctx, &st, &book, &new)
    })
    .await?;
    Ok(new.len())
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
        self.st
            .net_links
            .iter()
            .any(|(a, b)| crate::desired::net_pair(self.st, a, b) == Some(*pair))
    }
}

/// Cuts established container-to-container flows (including hairpin) that the current policy
/// would not allow to start. Returns how many flows were cut.
pub fn cut_denied(ctx: &Ctx, st: &State, book: &RuleBook) -> Result<usize> {
    let by_id: HashMap<u32, Peer> = st
        .containers
        .values()
        .filter_map(|c| {
            let net = st.networks.get(&c.network)?;
            Some((
                c.identity,
                Peer {
                    identity: c.identity,
                    network: net.id,
                    network_isolated: net.isolated,
                },
            ))
        })
        .collect();
    let compiled = Compiled {
        rules: compile(st, &book.items()?),
        st,
    };
    // (reply entry, initiator, target, protocol, the port the target sees): identities, so
    // one rule cuts the flows of both families.
    let denied = |reply: bool, s: u32, d: u32, proto: u8, port: u16| {
        if reply {
            return false;
        }
        let (Some(src), Some(dst)) = (by_id.get(&s), by_id.get(&d)) else {
            return false; // world and host flows are not container policy
        };
        !decide(&compiled, *src, *dst, proto, port).0
    };
    // The port the target sees is the rewritten destination port of the original direction.
    let v4 = container::purge_conntrack(ctx, |_k: &FlowKey, e: &CtEntry| {
        denied(
            e.is_reply(),
            e.src_identity,
            e.dst_identity,
            e.rewrite.proto,
            e.rewrite.dport,
        )
    })?;
    let v6 = container::purge_conntrack6(ctx, |_, e| {
        denied(
            e.is_reply(),
            e.src_identity,
            e.dst_identity,
            e.rewrite.proto,
            e.rewrite.dport,
        )
    })?;
    Ok(v4 + v6)
}
