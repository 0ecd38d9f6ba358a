//! The plugin socket: every POST goes, one at a time, to the [`Driver`] (Docker may call
//! concurrently; one change at a time is what Weir's instance lock would impose anyway, and
//! the driver's pending endpoints need no locking this way).

use std::{future::IntoFuture, path::Path};

use axum::{
    Router,
    body::Bytes,
    http::{StatusCode, Uri, header},
    response::IntoResponse,
};
use control::{Error, Result, error::Context};
use serde_json::Value;
use tokio::{
    net::UnixListener,
    sync::{mpsc, oneshot},
};

use crate::{driver::Driver, names::News};

type Call = (String, Bytes, oneshot::Sender<Value>);

/// Docker's plugin media type: it accepts plain JSON too, but this is what it sends.
const PLUGIN_JSON: &str = "application/vnd.docker.plugins.v1.2+json";

/// Listens on `socket` (replacing a stale one) and serves until SIGINT/SIGTERM; between calls
/// the driver hears what the Engine API told (`news`).
pub async fn serve(
    mut driver: Driver,
    socket: &Path,
    mut news: mpsc::Receiver<News>,
) -> Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(|e| {
        Error::invalid(format!(
            "cannot listen on {}: {e} (pick another --socket)",
            socket.display()
        ))
    })?;
    eprintln!("weir-docker: serving {}", socket.display());
    if let Err(e) = driver.resync().await {
        eprintln!("weir-docker: {e}");
    }
    let (tx, mut rx) = mpsc::channel::<Call>(64);
    let app = Router::new().fallback(move |uri: Uri, body: Bytes| forward(tx.clone(), uri, body));
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(stopped())
        .into_future();
    tokio::pin!(server);
    let r = loop {
        tokio::select! {
            r = &mut server => break r.ctx(|| format!("serving {}", socket.display())),
            Some((method, body, reply)) = rx.recv() => {
                let _ = reply.send(driver.call(&method, &body).await);
            }
            Some(n) = news.recv() => driver.hear(n).await,
        }
    };
    let _ = std::fs::remove_file(socket);
    r
}

async fn forward(tx: mpsc::Sender<Call>, uri: Uri, body: Bytes) -> impl IntoResponse {
    let method = uri.path().trim_start_matches('/').to_string();
    let (reply, answer) = oneshot::channel();
    let v = match tx.send((method, body, reply)).await {
        Ok(()) => answer
            .await
            .unwrap_or_else(|_| crate::api::err("weir-docker is shutting down")),
        Err(_) => crate::api::err("weir-docker is shutting down"),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, PLUGIN_JSON)],
        v.to_string(),
    )
}

async fn stopped() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
