//! What each driver call does to Weir, through the control library: a Docker network is a Weir
//! network, a Docker endpoint a Weir container whose veth Docker moves into its sandbox.
//!
//! Docker's IDs name Weir's objects (`docker-<first 12 hex digits>`, as `docker network ls`
//! shortens them), so a restarted driver finds every network and endpoint in Weir's own state
//! and Docker never has to replay anything. Only an endpoint between CreateEndpoint and Join
//! is held in memory: Docker sends its address at CreateEndpoint and the interface is made at
//! Join, when the sandbox key is known.

use std::{collections::HashMap, net::Ipv4Addr, path::PathBuf, time::Duration};

use control::{
    Error, Result, netlink,
    ops::{
        Ctx,
        container::{self, Admit, AttachSpec, NetnsOwner, Origin, Peer},
        network::{self, Members, NetworkSpec, Reach},
        policy,
        publish::{self, HostPort},
    },
    state::{self, Container, Proto, State},
    validate,
};
use ipnet::Ipv4Net;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    api::{self, CreateEndpoint, CreateNetwork, EndpointRef, InterfaceName, JoinReply, NetworkRef},
    names::{EngineApi, News},
    ports,
};

/// How long a new endpoint's container is looked for in Docker's list: while rules wait for
/// a name (it is dark meanwhile), and otherwise.
const PATIENCE_DARK: Duration = Duration::from_secs(10);
const PATIENCE: Duration = Duration::from_secs(60);

/// The Weir name of a Docker object (network or endpoint) by its id.
pub fn weir_name(docker_id: &str) -> String {
    let short: String = docker_id.chars().take(12).collect();
    format!("docker-{short}")
}

/// The container end's name in dockerd's namespace until Docker renames it `ethN`: unique
/// there, at most 15 bytes.
fn peer_name(endpoint_id: &str) -> String {
    let short: String = endpoint_id.chars().take(12).collect();
    format!("wd{short}")
}

/// Docker ids are hex: anything else would make a name Weir refuses later, more obscurely.
fn check_id(what: &str, id: &str) -> Result<()> {
    if id.len() < 12 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::invalid(format!(
            "invalid {what} {id:?}: expected Docker's hex id"
        )));
    }
    Ok(())
}

/// An endpoint Docker created and has not joined yet.
struct Pending {
    network: String,
    ip: Ipv4Addr,
    ip6: Option<std::net::Ipv6Addr>,
    mac: [u8; 6],
}

/// Whether record `name` is one of weir-docker's (an endpoint's).
fn is_docker(name: &str, c: &Container) -> bool {
    name.starts_with("docker-") && c.external_netns.is_some() && c.cni_id.is_none()
}

pub struct Driver {
    ctx: Ctx,
    pending: HashMap<String, Pending>,
    /// The Engine API, when Docker can be asked for names.
    api: Option<EngineApi>,
    /// When each endpoint kept dark until named joined (how long it waited is logged).
    dark_since: HashMap<String, std::time::Instant>,
    news: mpsc::Sender<News>,
}

impl Driver {
    pub fn new(ctx: Ctx, api: Option<EngineApi>, news: mpsc::Sender<News>) -> Self {
        Self {
            ctx,
            pending: HashMap::new(),
            api,
            dark_since: HashMap::new(),
            news,
        }
    }

    /// After a start: names what was left unnamed (admitting what waits), follows Docker's
    /// events, and forgets the rules of containers removed while the driver was down.
    pub async fn resync(&mut self) -> Result<()> {
        let st = state::load_required(&self.ctx.inst)?;
        let unnamed: Vec<(String, Duration)> = st
            .containers
            .iter()
            .filter(|(n, c)| is_docker(n, c) && c.alias.is_none())
            .filter_map(|(n, _)| n.strip_prefix("docker-").map(str::to_string))
            .map(|short| (short, PATIENCE_DARK))
            .collect();
        let Some(api) = self.api.clone() else {
            for (short, _) in unnamed {
                self.hear(News::Named {
                    endpoint_id: short,
                    name: None,
                })
                .await;
            }
            return Ok(());
        };
        tokio::spawn(api.clone().follow(self.news.clone()));
        for (short, patience) in unnamed {
            tokio::spawn(api.clone().find(short, patience, self.news.clone()));
        }
        // Docker may not be up yet (the driver starts first): those rules wait for next time.
        let Ok(known) = api.container_names().await else {
            return Ok(());
        };
        for name in policy::waiting_names(&self.ctx, &st)? {
            if !known.contains(&name) {
                policy::forget_name(&self.ctx, &name).await?;
            }
        }
        Ok(())
    }

    /// Acts on what the Engine API told (see [`News`]); errors are logged, not answered.
    pub async fn hear(&mut self, news: News) {
        let r = match news {
            News::Named { endpoint_id, name } => self.named(&endpoint_id, name).await,
            News::Renamed { from, to } => self.renamed(&from, &to).await,
            News::Destroyed { name } => policy::forget_name(&self.ctx, &name).await.map(drop),
        };
        if let Err(e) = r {
            eprintln!("weir-docker: {e}");
        }
    }

    async fn named(&mut self, endpoint_id: &str, name: Option<String>) -> Result<()> {
        let record = weir_name(endpoint_id);
        let (_lock, mut st) = self.ctx.begin().await?;
        let Some(c) = st.containers.get(&record) else {
            return Ok(()); // gone meanwhile
        };
        if name.is_none() && c.phase == state::Phase::AwaitingName {
            eprintln!(
                "weir-docker: Docker did not name endpoint {endpoint_id}'s container: it runs as {record}, and rules by its Docker name do not hold for it"
            );
        }
        let alias = name.or_else(|| c.alias.clone());
        container::name(&self.ctx, &mut st, &record, alias.as_deref()).await?;
        if let Some(t) = self.dark_since.remove(&record) {
            eprintln!(
                "weir-docker: {record} ({}) admitted after {} ms",
                alias.as_deref().unwrap_or("unnamed"),
                t.elapsed().as_millis()
            );
        }
        Ok(())
    }

    async fn renamed(&mut self, from: &str, to: &str) -> Result<()> {
        let (_lock, mut st) = self.ctx.begin().await?;
        let records: Vec<String> = st
            .containers
            .iter()
            .filter(|(n, c)| is_docker(n, c) && c.alias.as_deref() == Some(from))
            .map(|(n, _)| n.clone())
            .collect();
        for r in records {
            container::name(&self.ctx, &mut st, &r, Some(to)).await?;
        }
        Ok(())
    }

    /// Answers one call (`method` is the URL path without its leading slash).
    pub async fn call(&mut self, method: &str, body: &[u8]) -> Value {
        let r = match method {
            "Plugin.Activate" => Ok(json!({ "Implements": ["NetworkDriver"] })),
            "NetworkDriver.GetCapabilities" => {
                Ok(json!({ "Scope": "local", "ConnectivityScope": "local" }))
            }
            "NetworkDriver.CreateNetwork" => match parse(body) {
                Ok(req) => self.create_network(req).await,
                Err(e) => Err(e),
            },
            "NetworkDriver.DeleteNetwork" => match parse(body) {
                Ok(req) => self.delete_network(req).await,
                Err(e) => Err(e),
            },
            "NetworkDriver.CreateEndpoint" => match parse(body) {
                Ok(req) => self.create_endpoint(req),
                Err(e) => Err(e),
            },
            "NetworkDriver.Join" => match parse(body) {
                Ok(req) => self.join(req).await,
                Err(e) => Err(e),
            },
            "NetworkDriver.ProgramExternalConnectivity" => match parse(body) {
                Ok(req) => self.program(req).await,
                Err(e) => Err(e),
            },
            "NetworkDriver.RevokeExternalConnectivity" => match parse(body) {
                Ok(req) => self.revoke(&req).await,
                Err(e) => Err(e),
            },
            "NetworkDriver.DeleteEndpoint" => match parse(body) {
                Ok(req) => self.delete_endpoint(&req).await,
                Err(e) => Err(e),
            },
            "NetworkDriver.EndpointOperInfo" => Ok(json!({ "Value": {} })),
            // The interface stays where Docker put it back until DeleteEndpoint; the
            // discovery notices carry nothing a local driver uses.
            "NetworkDriver.Leave"
            | "NetworkDriver.DiscoverNew"
            | "NetworkDriver.DiscoverDelete" => Ok(json!({})),
            other => Err(Error::invalid(format!(
                "weir-docker does not implement {other:?}"
            ))),
        };
        r.unwrap_or_else(|e| {
            eprintln!("weir-docker: {method}: {e}");
            api::err(e)
        })
    }

    async fn create_network(&mut self, req: CreateNetwork) -> Result<Value> {
        check_id("network id", &req.network_id)?;
        let spec = network_spec(&req)?;
        let name = weir_name(&req.network_id);
        network::create(&self.ctx, &name, spec).await?;
        Ok(json!({}))
    }

    async fn delete_network(&mut self, req: NetworkRef) -> Result<Value> {
        let name = weir_name(&req.network_id);
        match network::remove(&self.ctx, &name).await {
            // Deleting what is not there is done: Docker may repeat itself after a restart.
            Ok(()) | Err(Error::NotFound(_)) => Ok(json!({})),
            Err(e) => Err(e),
        }
    }

    fn create_endpoint(&mut self, req: CreateEndpoint) -> Result<Value> {
        check_id("endpoint id", &req.endpoint_id)?;
        let network = weir_name(&req.network_id);
        let st = state::load_required(&self.ctx.inst)?;
        let net = st.network(&network)?;
        let subnet = net
            .subnet
            .ok_or_else(|| Error::invalid(format!("network {network:?} has no IPv4 subnet")))?;
        let ip = address_in(&req.interface.address, subnet)?;
        container::choose_ip(&st, &network, Some(ip))?;
        let ip6 = match req
            .interface
            .address_ipv6
            .split('/')
            .next()
            .unwrap_or_default()
        {
            "" => None,
            a => Some(validate::ipv6("IPv6 address", a)?),
        };
        container::choose_ip6(&st, &network, ip6)?;
        let given = !req.interface.mac_address.is_empty();
        let mac = if given {
            netlink::parse_mac(&req.interface.mac_address).ok_or_else(|| {
                Error::invalid(format!(
                    "invalid MAC address {:?}",
                    req.interface.mac_address
                ))
            })?
        } else {
            container::mac_for(ip)
        };
        self.pending.insert(
            req.endpoint_id,
            Pending {
                network,
                ip,
                ip6,
                mac,
            },
        );
        // Docker takes a MAC from the driver only when the user gave none.
        Ok(if given {
            json!({ "Interface": {} })
        } else {
            json!({ "Interface": { "MacAddress": netlink::mac_string(&mac) } })
        })
    }

    async fn join(&mut self, req: EndpointRef) -> Result<Value> {
        let name = weir_name(&req.endpoint_id);
        let (_lock, mut st) = self.ctx.begin().await?;
        if !st.containers.contains_key(&name) {
            let (alias, admit) = self.naming_at_join(&st, &req.sandbox_key)?;
            let p = self.pending.get(&req.endpoint_id).ok_or_else(|| {
                Error::not_found(format!(
                    "endpoint {} was created before weir-docker restarted and never joined: remove the container and run it again",
                    req.endpoint_id
                ))
            })?;
            let spec = AttachSpec {
                name: name.clone(),
                network: p.network.clone(),
                origin: Origin::Docker {
                    endpoint_id: req.endpoint_id.clone(),
                },
                netns: NetnsOwner::Runtime(PathBuf::from(&req.sandbox_key)),
                peer: Peer::LeaveInHost,
                ifname: peer_name(&req.endpoint_id),
                ip: Some(p.ip),
                ip6: p.ip6,
                mac: Some(p.mac),
                ports: Vec::new(),
                host_ports: HostPort::CheckFree,
                alias: alias.clone(),
                admit,
            };
            container::attach(&self.ctx, &mut st, spec).await?;
            self.pending.remove(&req.endpoint_id);
            if alias.is_none() {
                self.look_up(&req.endpoint_id, admit);
            }
            if admit == Admit::WhenNamed {
                self.dark_since
                    .insert(name.clone(), std::time::Instant::now());
            }
        }
        let c = st.container(&name)?;
        let net = st.network(&c.network)?;
        Ok(serde_json::to_value(JoinReply {
            interface_name: InterfaceName {
                src_name: peer_name(&req.endpoint_id),
                dst_prefix: "eth".into(),
            },
            gateway: match (net.internal, net.gateway) {
                (false, Some(gw)) => gw.to_string(),
                _ => String::new(),
            },
            gateway_ipv6: match (net.internal, c.ip6, net.gateway6) {
                (false, Some(_), Some(gw6)) => gw6.to_string(),
                _ => String::new(),
            },
            disable_gateway_service: net.internal,
        })
        .expect("plain struct"))
    }

    /// The name a joining endpoint's container has, and when it may send: a further network
    /// of a container Weir knows (its sandbox is another endpoint's) has that one's name at
    /// once; otherwise, while rules wait for names no container answers to (a stopped Docker
    /// container's), it stays dark until Docker names it, for those rules may be its.
    fn naming_at_join(&self, st: &State, sandbox: &str) -> Result<(Option<String>, Admit)> {
        let sibling = st
            .containers
            .iter()
            .find(|(n, c)| is_docker(n, c) && c.external_netns.as_deref() == Some(sandbox));
        if let Some((_, c)) = sibling
            && let Some(alias) = &c.alias
        {
            return Ok((Some(alias.clone()), Admit::Now));
        }
        let waiting = self.api.is_some() && !policy::waiting_names(&self.ctx, st)?.is_empty();
        Ok((
            None,
            if waiting {
                Admit::WhenNamed
            } else {
                Admit::Now
            },
        ))
    }

    /// Starts looking for the endpoint's container name (heard by this same worker once the
    /// call it is in is answered).
    fn look_up(&self, endpoint_id: &str, admit: Admit) {
        let patience = match admit {
            Admit::WhenNamed => PATIENCE_DARK,
            Admit::Now => PATIENCE,
        };
        if let Some(api) = &self.api {
            let find = api
                .clone()
                .find(endpoint_id.to_string(), patience, self.news.clone());
            tokio::spawn(find);
        }
    }

    /// Publishes the endpoint's `-p` mappings: all of them or none.
    async fn program(&mut self, req: EndpointRef) -> Result<Value> {
        let name = weir_name(&req.endpoint_id);
        let st = state::load_required(&self.ctx.inst)?;
        let c = st.container(&name)?;
        // Docker also sends this to an internal network's endpoint when a container's gateway
        // endpoint changes at teardown: there is nothing to publish from there.
        if st.network(&c.network)?.internal {
            return Ok(json!({}));
        }
        let wanted = ports::bindings(&req.options)?;
        let mut done: Vec<(u16, Proto)> = Vec::new();
        for b in wanted {
            match publish::publish_on(&self.ctx, &name, b.port, b.host).await {
                Ok(info) => done.push((info.host_port, b.port.proto)),
                Err(e) => {
                    for (hp, proto) in done {
                        let _ = publish::unpublish(&self.ctx, &name, (hp, proto), None).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(json!({}))
    }

    async fn revoke(&mut self, req: &EndpointRef) -> Result<Value> {
        let name = weir_name(&req.endpoint_id);
        let book = control::published::PublishBook::open(&self.ctx.inst)?;
        for p in book.of(&name)? {
            publish::unpublish(&self.ctx, &name, (p.host_port, p.proto), p.host_ip).await?;
        }
        Ok(json!({}))
    }

    async fn delete_endpoint(&mut self, req: &EndpointRef) -> Result<Value> {
        self.pending.remove(&req.endpoint_id);
        let name = weir_name(&req.endpoint_id);
        let (_lock, mut st) = self.ctx.begin().await?;
        if st.containers.contains_key(&name) {
            let what = format!("docker delete-endpoint {name}");
            container::detach(&self.ctx, &mut st, std::slice::from_ref(&name), &what).await?;
        }
        Ok(json!({}))
    }
}

fn parse<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("the request is not the JSON expected: {e}")))
}

/// A network's IPv6 (`docker network create --ipv6 --subnet …`): one IPv6 pool, whose gateway
/// must be Weir's, `<prefix>::1` (Docker's default too).
fn network_ipv6(req: &CreateNetwork) -> Result<control::ops::network::Ipv6Choice> {
    use control::ops::network::Ipv6Choice;
    if req.options.get(api::ENABLE_IPV6) != Some(&json!(true)) {
        return Ok(Ipv6Choice::Off);
    }
    let [pool] = req.ipv6_data.as_slice() else {
        return Err(Error::invalid(format!(
            "a Weir network has one IPv6 subnet, not {}: give one IPv6 --subnet",
            req.ipv6_data.len()
        )));
    };
    let subnet6 = validate::subnet6(&pool.pool)?;
    let gw = control::ipv6::gateway_of(subnet6);
    let given = pool.gateway.split('/').next().unwrap_or_default();
    if !given.is_empty() && validate::ipv6("IPv6 gateway", given)? != gw {
        return Err(Error::invalid(format!(
            "a Weir network's IPv6 gateway is {gw}, the subnet's first address: drop --gateway for it or give {gw}"
        )));
    }
    Ok(Ipv6Choice::Subnet(subnet6))
}

/// The Weir network Docker's CreateNetwork asks for: its IPAM pool and gateway, internal or
/// not; options Weir cannot honour are refused rather than ignored.
fn network_spec(req: &CreateNetwork) -> Result<NetworkSpec> {
    let ipv6 = network_ipv6(req)?;
    let [pool] = req.ipv4_data.as_slice() else {
        return Err(Error::invalid(format!(
            "a Weir network has one IPv4 subnet, not {}: give one --subnet",
            req.ipv4_data.len()
        )));
    };
    let subnet = validate::subnet(&pool.pool)?;
    let gateway = if pool.gateway.is_empty() {
        None
    } else {
        Some(address_in(&pool.gateway, subnet)?)
    };
    let (mtu, members) = match req.options.get(api::GENERIC) {
        Some(Value::Object(o)) => driver_options(o)?,
        _ => (None, Members::Open),
    };
    let internal = req.options.get(api::INTERNAL) == Some(&json!(true));
    Ok(NetworkSpec {
        ipv6,
        subnet: Some(subnet),
        gateway,
        reach: if internal {
            Reach::Internal
        } else {
            Reach::World
        },
        mtu,
        members,
    })
}

/// The `-o` options Weir honours: the MTU, and isolation of the network's members (Weir's own
/// `weir.isolated`, or the bridge driver's `enable_icc`, so a network moved from the bridge
/// keeps its meaning). Anything else is refused: ignoring it would pretend.
fn driver_options(o: &serde_json::Map<String, Value>) -> Result<(Option<u32>, Members)> {
    let mut mtu = None;
    let mut members = Members::Open;
    for (key, v) in o {
        let v = v.as_str().unwrap_or_default();
        let flag = || match v {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(Error::invalid(format!("-o {key}={v}: give true or false"))),
        };
        match key.as_str() {
            api::MTU => {
                mtu = Some(v.parse().map_err(|_| {
                    Error::invalid(format!("-o {key}={v}: give the MTU in bytes, e.g. 1400"))
                })?)
            }
            api::ISOLATED if flag()? => members = Members::Isolated,
            api::ENABLE_ICC if !flag()? => members = Members::Isolated,
            api::ISOLATED | api::ENABLE_ICC => {}
            _ => {
                return Err(Error::invalid(format!(
                    "weir-docker does not know -o {key:?}: it takes {}=BYTES, {}=true and {}=false",
                    api::MTU,
                    api::ISOLATED,
                    api::ENABLE_ICC
                )));
            }
        }
    }
    Ok((mtu, members))
}

/// `10.77.0.5/24` (Docker's CIDR form) or a bare address, inside `subnet`.
fn address_in(cidr: &str, subnet: Ipv4Net) -> Result<Ipv4Addr> {
    let addr = cidr.split('/').next().unwrap_or_default();
    let ip = validate::ipv4("address", addr)?;
    if !subnet.contains(&ip) {
        return Err(Error::invalid(format!(
            "{ip} is outside the network's subnet {subnet}"
        )));
    }
    Ok(ip)
}
