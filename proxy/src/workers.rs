//! Session threads: a pool of single-threaded runtimes, one per worker.
//!
//! A session is placed on one worker for its whole life, so both of its sockets are served
//! by the same thread and a round trip never wakes a second thread (the benchmark showed
//! those cross-thread wake-ups were the proxy's main extra cost). Accepting stays on the
//! caller's runtime; each accepted socket moves to the next worker, round robin.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Worker threads, each driving its own current-thread runtime until the pool is dropped.
pub struct WorkerPool {
    /// Where to spawn sessions.
    handles: Vec<Handle>,
    /// Round-robin cursor.
    next: AtomicUsize,
    /// Dropping these lets each worker's runtime return and cancel what it still runs.
    _stop: Vec<oneshot::Sender<()>>,
}

impl WorkerPool {
    /// Starts `n` workers (at least one).
    pub fn start(n: usize) -> std::io::Result<Self> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("tandem-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
        }
        Ok(Self {
            handles,
            next: AtomicUsize::new(0),
            _stop: stops,
        })
    }

    /// The runtime for the next session.
    pub fn pick(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether the pool has no workers (never: `start` makes at least one).
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

/// Workers for a `workers` setting: 0 means one per CPU.
pub fn worker_count(setting: usize) -> usize {
    match setting {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    }
}
