//! The optional HTTP listener (`[http] listen`): `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Liveness and readiness.
    pub health: Arc<Health>,
    /// `/healthz` fails when the main loop was silent this long.
    pub max_loop_silence: Duration,
    /// `/readyz` fails when pending tickets exist and the API was silent this long.
    pub api_window: Duration,
}

/// Binds `listen` (so a busy port fails at start-up) and serves until `shutdown`.
pub async fn serve(
    listen: SocketAddr,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(err) = result {
            tracing::error!(error = %err, "the HTTP listener stopped");
        }
    });
    Ok(local)
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    state
        .metrics
        .set_ready(state.health.readiness(state.api_window).is_ok());
    // The scrape reads /proc and statvfs()s the state and archive folders, which can block
    // on a hung network filesystem: off the async workers.
    let metrics = Arc::clone(&state.metrics);
    let text = tokio::task::spawn_blocking(move || metrics.encode())
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            crate::telemetry::metrics::CONTENT_TYPE,
        )],
        text,
    )
}

async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    match state.health.liveness(state.max_loop_silence) {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    match state.health.readiness(state.api_window) {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// `dmstrack healthcheck`: exit 0 when `http://addr/healthz` answers 200.
pub async fn probe(addr: &str) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(crate::net::transport_error_text)?;
    let response = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .map_err(|e| format!("{addr}: {}", crate::net::transport_error_text(e)))?;
    if response.status() == reqwest::StatusCode::OK {
        Ok(())
    } else {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Err(format!("{addr}/healthz answered {status}: {}", body.trim()))
    }
}

/// The address to probe for a listen address: an unspecified IP (`0.0.0.0`, `::`) is
/// reached through loopback.
pub fn probe_address(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    SocketAddr::new(ip, listen.port()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints_answer() {
        let health = Arc::new(Health::default());
        let state = HttpState {
            metrics: Arc::new(Metrics::new()),
            health: Arc::clone(&health),
            max_loop_silence: Duration::from_secs(60),
            api_window: Duration::from_secs(600),
        };
        let shutdown = CancellationToken::new();
        let addr = serve("127.0.0.1:0".parse().unwrap(), state, shutdown.clone())
            .await
            .unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let get = |path: &str| client.get(format!("http://{addr}{path}")).send();
        assert_eq!(get("/healthz").await.unwrap().status(), 200);
        let ready = get("/readyz").await.unwrap();
        assert_eq!(ready.status(), 503);
        assert_eq!(
            ready.text().await.unwrap(),
            "credentials not resolved yet\n"
        );
        health.api_answered();
        assert_eq!(get("/readyz").await.unwrap().status(), 200);
        let metrics = get("/metrics").await.unwrap();
        assert_eq!(
            metrics.headers()["content-type"],
            crate::telemetry::metrics::CONTENT_TYPE
        );
        assert!(
            metrics
                .text()
                .await
                .unwrap()
                .contains("dmstrack_build_info")
        );
        probe(&addr.to_string()).await.unwrap();
        shutdown.cancel();
    }

    #[test]
    fn unspecified_listen_addresses_are_probed_on_loopback() {
        assert_eq!(
            probe_address("0.0.0.0:9464".parse().unwrap()),
            "127.0.0.1:9464"
        );
        assert_eq!(probe_address("[::]:9464".parse().unwrap()), "[::1]:9464");
        assert_eq!(probe_address("10.0.0.5:1".parse().unwrap()), "10.0.0.5:1");
    }
}
