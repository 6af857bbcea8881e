//! Prometheus metrics served on `/metrics`: the process (memory, CPU, file descriptors,
//! threads), the storage engine (keys and bytes per column family, block cache), and the HTTP
//! API (requests by route and status, latency). Storage figures are read on each scrape.
//! Labels are bounded: route patterns and column-family names, never ids.

use std::sync::Arc;

use fleetgate_storage::Storage;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The metrics of one fleetgate process.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route pattern, method and status.
    pub http_requests: IntCounterVec,
    /// HTTP request latency by route pattern.
    pub http_duration: HistogramVec,
    /// Calls refused by the per-application token buckets, by kind (`calls`, `downlinks`).
    pub rate_limited: IntCounterVec,
}

/// The storage figures, refreshed from [`Storage::engine_stats`] at scrape time.
struct StorageCollector {
    storage: Arc<dyn Storage>,
    per_cf: GaugeVec,
    block_cache: GaugeVec,
}

const PER_CF_NAMES: [&str; 4] = [
    "keys",
    "live_data_bytes",
    "sst_files_bytes",
    "memtable_bytes",
];

impl StorageCollector {
    fn new(storage: Arc<dyn Storage>) -> prometheus::Result<Self> {
        let per_cf = GaugeVec::new(
            Opts::new(
                "fleetgate_storage_cf",
                "Storage engine figures per column family (see the stat label).",
            ),
            &["cf", "stat"],
        )?;
        let block_cache = GaugeVec::new(
            Opts::new(
                "fleetgate_storage_block_cache_bytes",
                "Memory used by the storage block cache.",
            ),
            &[],
        )?;
        Ok(Self {
            storage,
            per_cf,
            block_cache,
        })
    }
}

impl Collector for StorageCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.per_cf
            .desc()
            .into_iter()
            .chain(self.block_cache.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.per_cf.reset();
        for stat in self.storage.engine_stats() {
            match stat.cf {
                Some(cf) if PER_CF_NAMES.contains(&stat.name) => {
                    self.per_cf
                        .with_label_values(&[cf.name(), stat.name])
                        .set(stat.value);
                }
                None if stat.name == "block_cache_bytes" => {
                    self.block_cache
                        .with_label_values(&[] as &[&str])
                        .set(stat.value);
                }
                _ => {}
            }
        }
        let mut out = self.per_cf.collect();
        out.extend(self.block_cache.collect());
        out
    }
}

impl Metrics {
    /// Builds the registry with every collector.
    pub fn new(storage: Arc<dyn Storage>) -> prometheus::Result<Self> {
        let registry = Registry::new();
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        registry.register(Box::new(StorageCollector::new(storage)?))?;
        let build = IntGauge::with_opts(
            Opts::new(
                "fleetgate_build_info",
                "Build information; the value is always 1.",
            )
            .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        build.set(1);
        registry.register(Box::new(build))?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "fleetgate_http_requests_total",
                "HTTP API requests by route, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "fleetgate_http_request_duration_seconds",
                "HTTP API request latency by route.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                20.0,
            ]),
            &["route"],
        )?;
        registry.register(Box::new(http_duration.clone()))?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "fleetgate_api_rate_limited_total",
                "API calls refused with 429 by the per-application token buckets, by kind.",
            ),
            &["kind"],
        )?;
        for kind in ["calls", "downlinks"] {
            rate_limited.with_label_values(&[kind]);
        }
        registry.register(Box::new(rate_limited.clone()))?;
        Ok(Metrics {
            registry,
            http_requests,
            http_duration,
            rate_limited,
        })
    }

    /// Adds another collector (the engine's per-shard counters, for example).
    pub fn register(&self, collector: Box<dyn Collector>) -> prometheus::Result<()> {
        self.registry.register(collector)
    }

    /// Renders the text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}
