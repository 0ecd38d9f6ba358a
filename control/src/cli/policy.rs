//! `control isolate|unisolate|allow|disallow|rules`.

use clap::{Args, Subcommand};
use control::{
    Error, Result,
    ops::{Change, Ctx, policy},
    output::{json, lines},
    rules::{RuleBook, RuleKind},
    state, validate,
};

#[derive(Args)]
#[command(after_help = "\
Examples:
  control isolate app1 app2     # neither opens a new connection to the other
  control isolate db            # db accepts no new connection from any other container
  control allow app1 db --port 3306/tcp

Only new connections are checked: established ones continue unless --cut is given.
`control help allow` explains how rules combine.")]
pub struct IsolateArgs {
    /// A container.
    a: String,
    /// Another container; without it, A accepts no new connections from any other container.
    b: Option<String>,
    /// Also cut established connections the rules now deny (default: they continue).
    #[arg(long)]
    cut: bool,
}

#[derive(Args)]
#[command(after_help = "\
Examples:
  control allow app1 db --port 3306/tcp   # app1 may open connections to db on 3306/tcp only
  control allow web cache                 # web may open any connection to cache

How rules combine for a new connection from A to B on PROTO/PORT (the port B sees): the most
specific level that has a rule decides — 1. `allow A B --port PORT/PROTO`; 2. `isolate A B`
or `allow A B`; 3. `isolate B`; 4. the network default (same or connected network: allowed;
otherwise denied). At one level an allow beats an isolate. Replies always pass.")]
pub struct AllowArgs {
    /// The container that opens the connections.
    from: String,
    /// The container that accepts them.
    to: String,
    /// Only this port of TO, PORT[/tcp|/udp] (tcp if no protocol is given).
    #[arg(long, value_name = "PORT/PROTO")]
    port: Option<String>,
    /// With disallow: also cut established connections now denied.
    #[arg(long)]
    cut: bool,
}

#[derive(Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    action: Option<RulesCmd>,
    /// Print JSON instead of one rule per line.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum RulesCmd {
    /// Add the rules in FILE ("-" for stdin), one per line: `isolate A [B]` or
    /// `allow A B [--port PORT/PROTO]`; `#` starts a comment. All or nothing.
    Import {
        /// The file to read, or "-" for standard input.
        file: String,
    },
}

fn report(c: &policy::RuleChange, change: Change) {
    match (change, c.changed) {
        (Change::Add, true) => println!("added rule: {}", c.rule),
        (Change::Add, false) => println!("rule already present: {}", c.rule),
        (Change::Remove, true) => println!("removed rule: {}", c.rule),
        (Change::Remove, false) => println!("no such rule: {}", c.rule),
    }
    if let Some(n) = c.cut {
        println!("cut {n} established flow(s)");
    }
}

fn cut(flag: bool) -> policy::Cut {
    if flag {
        policy::Cut::Established
    } else {
        policy::Cut::Keep
    }
}

pub async fn isolate(ctx: &Ctx, a: IsolateArgs, change: Change) -> Result<()> {
    let r = policy::rule(RuleKind::Isolate, &a.a, a.b.as_deref(), None)?;
    let c = policy::change(ctx, r, change, cut(a.cut)).await?;
    report(&c, change);
    Ok(())
}

pub async fn allow(ctx: &Ctx, a: AllowArgs, change: Change) -> Result<()> {
    let port = a.port.as_deref().map(validate::port_spec).transpose()?;
    let r = policy::rule(RuleKind::Allow, &a.from, Some(&a.to), port)?;
    let c = policy::change(ctx, r, change, cut(a.cut)).await?;
    report(&c, change);
    Ok(())
}

pub async fn rules(ctx: &Ctx, a: RulesArgs) -> Result<()> {
    match a.action {
        Some(RulesCmd::Import { file }) => {
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| Error::invalid(format!("reading stdin: {e}")))?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| Error::invalid(format!("cannot read rules file {file}: {e}")))?
            };
            let n = policy::import(ctx, &text).await?;
            println!("added {n} rule(s)");
        }
        None => {
            state::load_required(&ctx.inst)?;
            let l = policy::list(&RuleBook::open(&ctx.inst)?)?;
            if a.json {
                json(&l);
            } else {
                lines(l.iter().map(|r| &r.text));
            }
        }
    }
    Ok(())
}
