//! The storage worker pool: blocking storage work for the shards (credential look-ups), so
//! that no reactor thread ever waits on storage (docs/architecture.md, "The engine"). Results go
//! back through the shards' inboxes.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use fleetgate_model::Timestamp;

use crate::auth::AuthRequest;
use crate::engine::Shared;
use crate::shard::{ConnId, ShardMsg};

/// A job for a storage worker.
#[derive(Debug)]
pub enum WorkerJob {
    /// Load and verify a credential for a connection of `shard`.
    Auth {
        /// The shard of the connection.
        shard: u16,
        /// The connection.
        conn: ConnId,
        /// What it presented.
        req: AuthRequest,
    },
    /// Stop this worker.
    Stop,
}

/// Starts `n` workers; each stops at a [`WorkerJob::Stop`] or when every sender is gone.
pub fn start(
    n: usize,
    shared: &Arc<Shared>,
    jobs: Receiver<WorkerJob>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..n.max(1))
        .map(|i| {
            let shared = Arc::clone(shared);
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("storage-{i}"))
                .spawn(move || {
                    for job in jobs {
                        match job {
                            WorkerJob::Auth { shard, conn, req } => {
                                let outcome = shared.auth.verify_loading(
                                    shared.storage.as_ref(),
                                    &req,
                                    Timestamp::now(),
                                );
                                if let Some(h) = shared.shard(shard)
                                    && h.send(ShardMsg::AuthDone { conn, outcome }).is_err()
                                {
                                    tracing::warn!(
                                        shard,
                                        "shard inbox full; an authentication result was lost"
                                    );
                                }
                            }
                            WorkerJob::Stop => return,
                        }
                    }
                })
        })
        .collect()
}
