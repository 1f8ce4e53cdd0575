//! Supervision of the node's long-running parts (agent, controllers, proxy table, module
//! copies, peer sync): a part that panics is started again, with an error in the log and a
//! `TaskRestarted` warning event on this Node, so it never goes unnoticed while the process
//! keeps serving. A part that keeps panicking (`MAX_RESTARTS` within `RESTART_WINDOW`), or
//! a server that fails, is fatal: the node stops and exits non-zero, and its service
//! manager starts it afresh.

use std::collections::VecDeque;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use wasmkube_api::ObjectReference;
use wasmkube_apiserver::{Objects, Write};

const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// What supervised parts need to report through.
#[derive(Clone)]
pub struct Supervisor {
    pub objects: Objects,
    pub node_name: String,
    /// A part that cannot go on: the node stops with this message.
    pub fatal: mpsc::UnboundedSender<String>,
    /// True once the node is stopping: a part that returns then is done; before, it failed.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

impl Supervisor {
    /// Runs the part `start` makes until the node stops, starting it again each time it
    /// panics or returns before then.
    pub async fn run<F, Fut>(self, name: &'static str, mut start: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut restarts: VecDeque<Instant> = VecDeque::new();
        loop {
            let panic = match tokio::spawn(start()).await {
                Ok(()) if *self.stopping.borrow() => return,
                Ok(()) => "it stopped on its own".to_string(),
                Err(e) if e.is_panic() => panic_message(e.into_panic()),
                Err(_) => return,
            };
            let now = Instant::now();
            restarts.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
            restarts.push_back(now);
            if restarts.len() > MAX_RESTARTS {
                let msg =
                    format!("{name} panicked {} times within {RESTART_WINDOW:?}: {panic}", restarts.len());
                tracing::error!("{msg}; stopping the node");
                let _ = self.fatal.send(msg);
                return;
            }
            tracing::error!(task = name, "failed: {panic}; restarting it in {RESTART_DELAY:?}");
            self.record(name, &panic).await;
            tokio::time::sleep(RESTART_DELAY).await;
        }
    }

    /// Runs a part that must never end before shutdown (a server): when it ends with an
    /// error, the node stops.
    pub async fn essential<E: std::fmt::Display>(
        self,
        name: &'static str,
        part: impl Future<Output = Result<(), E>>,
    ) {
        if let Err(e) = part.await {
            let _ = self.fatal.send(format!("{name} failed: {e}"));
        }
    }

    async fn record(&self, name: &str, panic: &str) {
        let involved =
            ObjectReference { kind: "Node".into(), namespace: None, name: self.node_name.clone(), uid: None };
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let message = format!("{name} panicked and was restarted: {panic}");
        let source = format!("wasmlet/{}", self.node_name);
        let uid = uuid::Uuid::new_v4().to_string();
        let event =
            wasmkube_api::Event::about(involved, "Warning", "TaskRestarted", message, &source, &now, uid);
        let write = match Write::record_event(&event) {
            Ok(write) => self.objects.write(write),
            Err(e) => return tracing::warn!("TaskRestarted event not recorded: {e}"),
        };
        match tokio::time::timeout(Duration::from_secs(2), write).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("TaskRestarted event not recorded: {e}"),
            Err(_) => tracing::warn!("TaskRestarted event not recorded in time"),
        }
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(s) => *s,
        Err(panic) => {
            panic.downcast_ref::<&str>().map_or_else(|| "(no message)".to_string(), |s| s.to_string())
        }
    }
}
