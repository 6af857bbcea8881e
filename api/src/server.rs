//! The running server: opens storage, serves the HTTP API, and stops in order on SIGINT or
//! SIGTERM — stop accepting, let in-flight requests finish (within the grace period), stop
//! housekeeping, then flush storage.

use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context;
use fleetgate_storage::Storage;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::config::Config;
use crate::engine_metrics::EngineCollector;
use crate::error::ApiError;
use crate::housekeeping::Housekeeping;
use crate::metrics::Metrics;
use fleetgate_engine::{Engine, StartOptions};

/// What every handler can reach.
#[derive(Debug)]
pub struct AppState {
    /// The stores.
    pub storage: Arc<dyn Storage>,
    /// The metrics registry.
    pub metrics: Metrics,
    /// The connection tier.
    pub engine: Arc<Engine>,
    /// When the process started serving.
    pub started: Instant,
    /// How long a synchronous device call waits for the answer.
    pub sync_timeout_secs: u64,
    /// The per-application token buckets.
    pub limits: crate::http::Limits,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    status: &'static str,
    version: &'static str,
    uptime_secs: u64,
}

/// Health: storage answers a read.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "Serving", body = Health),
        (status = 503, description = "Storage is not available", body = crate::http::ErrorBody),
        (status = 500, description = "Internal error", body = crate::http::ErrorBody),
    )
)]
pub(crate) async fn get_healthz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let storage = Arc::clone(&state.storage);
    match web::block(move || storage.ping()).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(Health {
            status: "ok",
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: state.started.elapsed().as_secs(),
        })),
        Ok(Err(e)) => {
            warn!(error = %e, "health check: storage read failed");
            Err(ApiError::unavailable("storage"))
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

async fn get_metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    // Storage figures are read on scrape; keep that off the async workers.
    let text = web::block(move || state.metrics.render())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

async fn no_route(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::no_route(req.method().as_str(), req.path()))
}

fn method_label(m: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Opens the RocksDB stores of the configuration.
pub fn open_storage(config: &Config) -> anyhow::Result<Arc<dyn Storage>> {
    let path = &config.storage.path;
    let store = fleetgate_storage_rocks::open_store(path, &config.rocksdb, config.storage.limits())
        .with_context(|| format!("cannot open storage at {}", path.display()))?;
    Ok(Arc::new(store))
}

/// Runs fleetgate until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let storage = open_storage(&config)?;
    info!(path = %config.storage.path.display(), "storage open");
    if let Some(path) = crate::http::bootstrap_admin_key(storage.as_ref(), &config.storage.path)
        .context("cannot create the administrator API key")?
    {
        info!(path = %path.display(), "first start: the administrator API key is in this file");
    }
    let metrics = Metrics::new(Arc::clone(&storage)).context("cannot set up metrics")?;
    let housekeeping = Housekeeping::start(Arc::clone(&storage), &config.storage);
    // The engine's file descriptors are what storage (its SST files, plus a few for the WAL,
    // manifest and logs) and the API's connections leave.
    let reserved_fds = config.rocksdb.max_open_files as usize + config.api.max_connections + 64;
    let engine = Engine::start(
        config.engine.clone(),
        Arc::clone(&storage),
        Vec::new(),
        StartOptions { reserved_fds },
    )
    .context("cannot start the connection tier")?;
    let engine = Arc::new(engine);
    metrics
        .register(Box::new(
            EngineCollector::new(Arc::clone(&engine)).context("cannot set up engine metrics")?,
        ))
        .context("cannot register engine metrics")?;
    let limits =
        crate::http::Limits::new(&config.api.rate_limit, Some(metrics.rate_limited.clone()));
    let state = web::Data::new(AppState {
        storage: Arc::clone(&storage),
        metrics,
        engine: Arc::clone(&engine),
        started: Instant::now(),
        sync_timeout_secs: config.api.sync_timeout_secs,
        limits,
    });
    let max_body = config.api.max_body_bytes;
    let app_state = state.clone();
    let mut server = HttpServer::new(move || {
        let state = app_state.clone();
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .app_data(crate::http::json_config(max_body))
            .wrap_fn(move |req, srv| {
                let started = Instant::now();
                let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
                let method = method_label(req.method());
                let metrics = state.metrics.clone();
                let fut = srv.call(req);
                async move {
                    let res: ServiceResponse = fut.await?;
                    let status = res.status().as_u16().to_string();
                    metrics
                        .http_requests
                        .with_label_values(&[&route, method, &status])
                        .inc();
                    metrics
                        .http_duration
                        .with_label_values(&[&route])
                        .observe(started.elapsed().as_secs_f64());
                    Ok(res)
                }
            })
            .route("/healthz", web::get().to(get_healthz))
            .route("/metrics", web::get().to(get_metrics))
            .configure(crate::http::configure)
            .default_service(web::to(no_route))
    })
    .disable_signals()
    .shutdown_timeout(config.api.shutdown_grace_secs);
    let workers = match config.api.workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    // actix counts connections per worker.
    server = server
        .workers(workers)
        .max_connections(config.api.max_connections.div_ceil(workers));
    let server = server
        .bind(config.api.listen)
        .with_context(|| format!("cannot listen on {}", config.api.listen))?;
    for addr in server.addrs() {
        info!(%addr, "api listening");
    }
    let server = server.run();
    let handle = server.handle();
    let stopper = tokio::spawn(async move {
        let reason = wait_for_signal().await;
        info!(
            signal = reason,
            "stopping: no new connections, finishing in-flight requests"
        );
        handle.stop(true).await;
    });
    server.await.context("the HTTP server failed")?;
    stopper.abort();
    // Device connections close next (MQTT 5 clients hear "server shutting down"), then the
    // upstream queue drains.
    let stopping = Arc::clone(&engine);
    tokio::task::spawn_blocking(move || stopping.shutdown())
        .await
        .context("stopping the engine failed")?;
    info!("device connections closed");
    housekeeping.stop();
    let flushed = tokio::task::spawn_blocking(move || storage.flush()).await;
    match flushed {
        Ok(Ok(())) => info!("storage flushed; stopped"),
        Ok(Err(e)) => return Err(e).context("flushing storage at shutdown failed"),
        Err(e) => return Err(e).context("flushing storage at shutdown failed"),
    }
    Ok(())
}

async fn wait_for_signal() -> &'static str {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
