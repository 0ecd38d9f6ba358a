//! Docker's container names, asked of the Docker Engine API (bollard): Weir names an
//! endpoint's record after the endpoint, and rules, `ports` and `conntrack` select it by the
//! container's name once this has found it.
//!
//! Never asked inside a driver call: dockerd holds the container's lock while it calls the
//! driver, and the container's endpoint id reaches the API's container list only once the
//! start is done. So a name is looked up after Join, until the list shows the endpoint.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use bollard::{
    Docker,
    query_parameters::{EventsOptions, ListContainersOptions},
};
use control::{Error, Result};
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// What the Engine API tells the driver about.
#[derive(Debug)]
pub enum News {
    /// The container with Docker's endpoint `endpoint_id` is called `name` (None: Docker could
    /// not be asked, or never listed it in time).
    Named {
        endpoint_id: String,
        name: Option<String>,
    },
    /// A container was renamed.
    Renamed { from: String, to: String },
    /// A container is gone for good (`docker rm`): the rules naming it go too.
    Destroyed { name: String },
}

/// A client of the Engine API on a socket, connected on first use: dockerd starts after the
/// driver, and the API version is agreed with the dockerd that answers (20.10 speaks 1.41,
/// 29 nothing older than 1.44).
#[derive(Clone)]
pub struct EngineApi {
    socket: PathBuf,
    client: Arc<Mutex<Option<Docker>>>,
}

/// How often, and how long, the container list is asked for a new endpoint.
const POLL: Duration = Duration::from_millis(50);

impl EngineApi {
    /// A client of the Engine API on `socket` (no request is made yet).
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
            client: Arc::new(Mutex::new(None)),
        }
    }

    /// The connected client, agreeing on the API version first if there is none yet.
    async fn docker(&self) -> Result<Docker> {
        if let Some(d) = self.client.lock().expect("not poisoned").clone() {
            return Ok(d);
        }
        let path = self.socket.display().to_string();
        let d = Docker::connect_with_unix(&path, 10, bollard::API_DEFAULT_VERSION)
            .map_err(|e| self.failed(&e))?
            .negotiate_version()
            .await
            .map_err(|e| self.failed(&e))?;
        *self.client.lock().expect("not poisoned") = Some(d.clone());
        Ok(d)
    }

    fn failed(&self, e: &bollard::errors::Error) -> Error {
        // Connect afresh next time: dockerd may have restarted, at another version.
        *self.client.lock().expect("not poisoned") = None;
        Error::invalid(format!(
            "cannot use the Docker Engine API at {}: {e} (is dockerd up? see --docker-socket)",
            self.socket.display()
        ))
    }

    async fn containers(&self) -> Result<Vec<bollard::models::ContainerSummary>> {
        let opts = ListContainersOptions {
            all: true,
            ..Default::default()
        };
        let d = self.docker().await?;
        d.list_containers(Some(opts))
            .await
            .map_err(|e| self.failed(&e))
    }

    /// Every container's name by the ids of its endpoints.
    pub async fn names_by_endpoint(&self) -> Result<HashMap<String, String>> {
        let list = self.containers().await?;
        let mut out = HashMap::new();
        for c in list {
            let Some(name) = c.names.as_ref().and_then(|n| n.first()) else {
                continue;
            };
            let name = name.trim_start_matches('/').to_string();
            let nets = c
                .network_settings
                .and_then(|s| s.networks)
                .unwrap_or_default();
            for ep in nets.into_values().filter_map(|e| e.endpoint_id) {
                if !ep.is_empty() {
                    out.insert(ep, name.clone());
                }
            }
        }
        Ok(out)
    }

    /// Every container's name (stopped ones too).
    pub async fn container_names(&self) -> Result<Vec<String>> {
        Ok(self
            .containers()
            .await?
            .into_iter()
            .filter_map(|c| {
                c.names?
                    .first()
                    .map(|n| n.trim_start_matches('/').to_string())
            })
            .collect())
    }

    /// Looks for the container of the endpoint whose id is or starts with `endpoint_id` until
    /// `patience` runs out, and reports what it found.
    pub async fn find(self, endpoint_id: String, patience: Duration, news: mpsc::Sender<News>) {
        let deadline = tokio::time::Instant::now() + patience;
        let name = loop {
            let found = self.names_by_endpoint().await.map(|m| {
                m.into_iter()
                    .find(|(ep, _)| ep.starts_with(&endpoint_id))
                    .map(|(_, name)| name)
            });
            match found {
                Ok(Some(name)) => break Some(name),
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                Ok(None) => break None,
                Err(e) => {
                    eprintln!("weir-docker: no Docker name for endpoint {endpoint_id}: {e}");
                    break None;
                }
            }
        };
        let _ = news.send(News::Named { endpoint_id, name }).await;
    }

    /// Follows Docker's container events (renames, removals) for as long as the driver runs,
    /// asking again after an error.
    pub async fn follow(self, news: mpsc::Sender<News>) {
        loop {
            let filters = HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                (
                    "event".to_string(),
                    vec!["destroy".to_string(), "rename".to_string()],
                ),
            ]);
            let opts = EventsOptions {
                filters: Some(filters),
                ..Default::default()
            };
            let Ok(d) = self.docker().await else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let mut events = d.events(Some(opts));
            while let Some(ev) = events.next().await {
                let Ok(ev) = ev else { break };
                let attrs = ev.actor.and_then(|a| a.attributes).unwrap_or_default();
                let Some(name) = attrs.get("name").cloned() else {
                    continue;
                };
                let n = match ev.action.as_deref() {
                    Some("destroy") => News::Destroyed { name },
                    Some("rename") => match attrs.get("oldName") {
                        Some(from) => News::Renamed {
                            from: from.trim_start_matches('/').to_string(),
                            to: name,
                        },
                        None => continue,
                    },
                    _ => continue,
                };
                if news.send(n).await.is_err() {
                    return;
                }
            }
            *self.client.lock().expect("not poisoned") = None;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
