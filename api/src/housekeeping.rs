//! Background storage housekeeping: prunes settled commands older than the retention period,
//! once at start and then hourly, in bounded batches so that it never holds the store long.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use fleetgate_model::Timestamp;
use fleetgate_storage::{Storage, StorageConfig};
use tracing::{info, warn};

const PERIOD: Duration = Duration::from_secs(3600);
const BATCH: usize = 1000;

/// The running housekeeping thread.
#[derive(Debug)]
pub struct Housekeeping {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Housekeeping {
    /// Starts the thread; with a retention of 0 days nothing is pruned and no thread runs.
    pub fn start(storage: Arc<dyn Storage>, config: &StorageConfig) -> Housekeeping {
        let days = config.command_retention_days;
        if days == 0 {
            return Housekeeping {
                stop: None,
                thread: None,
            };
        }
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("housekeeping".into())
            .spawn(move || {
                loop {
                    let cutoff = Timestamp::now().plus_millis(-i64::from(days) * 86_400_000);
                    prune(storage.as_ref(), cutoff);
                    match rx.recv_timeout(PERIOD) {
                        Err(RecvTimeoutError::Timeout) => continue,
                        _ => return,
                    }
                }
            })
            .map_err(|e| warn!(error = %e, "cannot start housekeeping"))
            .ok();
        Housekeeping {
            stop: Some(tx),
            thread,
        }
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Prunes every settled command created before `cutoff`, a batch at a time.
pub fn prune(storage: &dyn Storage, cutoff: Timestamp) -> usize {
    let mut total = 0;
    loop {
        match storage.prune_commands(cutoff, BATCH) {
            Ok(n) => {
                total += n;
                if n < BATCH {
                    break;
                }
            }
            Err(e) => {
                warn!(error = %e, "pruning command history failed");
                break;
            }
        }
    }
    if total > 0 {
        info!(pruned = total, "command history pruned");
    }
    total
}
