//! `control metrics`: the Prometheus text format, printed once (for node-exporter's textfile
//! collector) or served at `/metrics`.

use std::{future::IntoFuture, net::SocketAddr};

use axum::{Router, http::StatusCode, http::header, routing::get};
use clap::Args;
use control::{
    Error, Result,
    error::Context,
    ops::{Ctx, metrics},
    prometheus,
};
use tokio::sync::{mpsc, oneshot};

pub const EXAMPLES: &str = "\
Examples:
  control metrics > /var/lib/node_exporter/textfile/weir.prom.$$ && \\
      mv /var/lib/node_exporter/textfile/weir.prom.$$ /var/lib/node_exporter/textfile/weir.prom
  control metrics --listen 127.0.0.1:9787       # then scrape http://127.0.0.1:9787/metrics
  control metrics --listen '[::]:9787'

Series: weir_path_{packets,bytes}_total{path}, weir_nat_events_total{event},
weir_drops_total{reason,hook}, weir_conntrack_{entries,capacity},
weir_snat_ports_{capacity,in_use{destination,proto}}, weir_snat_destinations,
weir_container_{sent,received,dropped}_{packets,bytes}_total{container,network}.
The listener serves until SIGINT/SIGTERM; every scrape reads the maps afresh.";

#[derive(Args)]
pub struct MetricsArgs {
    /// Serve /metrics over HTTP on ADDR:PORT instead of printing once.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
}

pub async fn run(ctx: &Ctx, a: MetricsArgs) -> Result<()> {
    let Some(addr) = a.listen else {
        print!("{}", prometheus::encode(metrics::snapshot(ctx).await?));
        return Ok(());
    };
    // Read once before listening: an instance that cannot be read fails here, not per scrape.
    metrics::snapshot(ctx).await?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::invalid(format!(
            "cannot listen on {addr}: {e} (pick another address or port)"
        ))
    })?;
    eprintln!("serving http://{addr}/metrics (Ctrl-C to stop)");
    serve(ctx, listener).await
}

/// Scrapes are answered here, one at a time, with the caller's context (the HTTP handlers
/// only pass requests through a channel: they cannot borrow it).
async fn serve(ctx: &Ctx, listener: tokio::net::TcpListener) -> Result<()> {
    let (tx, mut rx) = mpsc::channel::<oneshot::Sender<Result<String, String>>>(16);
    let app = Router::new().route("/metrics", get(move || scrape(tx.clone())));
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(stopped())
        .into_future();
    tokio::pin!(server);
    loop {
        tokio::select! {
            r = &mut server => return r.ctx(|| "serving /metrics".into()),
            Some(reply) = rx.recv() => {
                let body = metrics::snapshot(ctx)
                    .await
                    .map(prometheus::encode)
                    .map_err(|e| e.to_string());
                let _ = reply.send(body);
            }
        }
    }
}

async fn scrape(
    tx: mpsc::Sender<oneshot::Sender<Result<String, String>>>,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
    let (reply, answer) = oneshot::channel();
    let body = match tx.send(reply).await {
        Ok(()) => answer.await.unwrap_or_else(|_| Err("shutting down".into())),
        Err(_) => Err("shutting down".into()),
    };
    match body {
        Ok(b) => (StatusCode::OK, [(header::CONTENT_TYPE, TEXT)], b),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, TEXT)],
            format!("# weir: {e}\n"),
        ),
    }
}

async fn stopped() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
