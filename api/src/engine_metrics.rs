//! Exposes the engine's per-shard counters (summed on scrape) as Prometheus metric families.

use std::sync::Arc;

use fleetgate_engine::Engine;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// A collector over a running engine.
pub struct EngineCollector {
    engine: Arc<Engine>,
    descs: Vec<Desc>,
}

impl std::fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineCollector")
    }
}

impl EngineCollector {
    /// Describes every family the engine reports.
    pub fn new(engine: Arc<Engine>) -> prometheus::Result<Self> {
        let descs = engine
            .metrics()
            .iter()
            .map(|f| {
                let labels: Vec<String> = f
                    .samples
                    .first()
                    .map(|(l, _)| l.iter().map(|(k, _)| (*k).to_owned()).collect())
                    .unwrap_or_default();
                Desc::new(
                    f.name.to_owned(),
                    f.help.to_owned(),
                    labels,
                    Default::default(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(EngineCollector { engine, descs })
    }
}

impl Collector for EngineCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.engine
            .metrics()
            .into_iter()
            .map(|f| {
                let mut mf = MetricFamily::default();
                mf.set_name(f.name.to_owned());
                mf.set_help(f.help.to_owned());
                mf.set_field_type(if f.counter {
                    MetricType::COUNTER
                } else {
                    MetricType::GAUGE
                });
                for (labels, value) in f.samples {
                    let mut m = Metric::default();
                    m.set_label(
                        labels
                            .into_iter()
                            .map(|(k, v)| {
                                let mut p = LabelPair::default();
                                p.set_name(k.to_owned());
                                p.set_value(v.to_owned());
                                p
                            })
                            .collect(),
                    );
                    if f.counter {
                        let mut c = Counter::default();
                        c.set_value(value);
                        m.set_counter(c);
                    } else {
                        let mut g = Gauge::default();
                        g.set_value(value);
                        m.set_gauge(g);
                    }
                    mf.mut_metric().push(m);
                }
                mf
            })
            .collect()
    }
}
