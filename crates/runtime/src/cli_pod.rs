//! cli-world pods: one long-running instance, restarted with exponential back-off
//! (`RuntimeConfig::crash_backoff`, Kubernetes' CrashLoopBackOff).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use wasmtime::Store;
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::host::HostState;
use crate::modules::{ModuleError, PreparedModule};
use crate::{LogBuffer, Runtime, SandboxSpec};

/// What the node agent reports for a cli pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CliPodState {
    pub running: bool,
    pub restarts: u32,
    /// How the last run ended (`exit code 1`, a trap message).
    pub last_exit: Option<String>,
    /// Waiting before the next start: CrashLoopBackOff.
    pub backing_off: bool,
    /// Will not run again (restart policy Never, or OnFailure after success).
    pub finished: bool,
}

pub struct CliPod {
    state: watch::Receiver<CliPodState>,
    task: JoinHandle<()>,
    logs: LogBuffer,
    meter: crate::metrics::Meter,
}

impl CliPod {
    /// Starts the instance. `restart_policy` is Always, OnFailure or Never.
    pub fn start(
        runtime: Arc<Runtime>,
        module: &PreparedModule,
        spec: SandboxSpec,
        logs: LogBuffer,
        restart_policy: &str,
    ) -> Result<Self, ModuleError> {
        let command = module.command.clone().ok_or_else(|| {
            ModuleError::UnsupportedWorld(format!(
                "module {} is an http component, not a cli one",
                module.digest
            ))
        })?;
        let (tx, state) = watch::channel(CliPodState::default());
        let policy = restart_policy.to_string();
        let task_logs = logs.clone();
        let cpu =
            crate::CpuBudget::new(spec.cpu_limit_millis.unwrap_or(runtime.config().default_cpu_limit_millis));
        let meter = crate::metrics::Meter { cpu, memory: Arc::default(), since: std::time::Instant::now() };
        let task_meter = meter.clone();
        let task = tokio::spawn(async move {
            supervise(runtime, command, spec, task_logs, &policy, tx, task_meter).await
        });
        Ok(CliPod { state, task, logs, meter })
    }

    /// What its instance uses, for the node's metrics.
    pub fn meter(&self) -> &crate::metrics::Meter {
        &self.meter
    }

    pub fn state(&self) -> watch::Receiver<CliPodState> {
        self.state.clone()
    }

    pub fn logs(&self) -> &LogBuffer {
        &self.logs
    }
}

impl Drop for CliPod {
    fn drop(&mut self) {
        // The instance yields at every epoch tick, so aborting stops even a busy loop promptly.
        self.task.abort();
    }
}

async fn supervise(
    runtime: Arc<Runtime>,
    command: CommandPre<HostState>,
    spec: SandboxSpec,
    logs: LogBuffer,
    policy: &str,
    state: watch::Sender<CliPodState>,
    meter: crate::metrics::Meter,
) {
    let (start, max, stable) = {
        let c = runtime.config();
        (c.crash_backoff, c.crash_backoff_max.max(c.crash_backoff), c.crash_backoff_reset)
    };
    let mut backoff = start;
    loop {
        state.send_modify(|s| {
            s.running = true;
            s.backing_off = false;
        });
        let started = Instant::now();
        let outcome = run_once(&runtime, &command, &spec, &logs, &meter).await;
        let succeeded = outcome.is_ok();
        let message = match outcome {
            Ok(()) => "exit code 0".to_string(),
            Err(e) => e,
        };
        logs.append(format!("[wasmkube] {} exited: {message}\n", spec.pod).as_bytes());
        let restart = match policy {
            "Never" => false,
            "OnFailure" => !succeeded,
            _ => true,
        };
        state.send_modify(|s| {
            s.running = false;
            s.last_exit = Some(message);
            s.finished = !restart;
        });
        if !restart {
            return;
        }
        // A run this long starts the doubling over, as for a container that stayed up.
        if started.elapsed() >= stable {
            backoff = start;
        }
        state.send_modify(|s| {
            s.restarts += 1;
            s.backing_off = true;
        });
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max);
    }
}

async fn run_once(
    runtime: &Runtime,
    command: &CommandPre<HostState>,
    spec: &SandboxSpec,
    logs: &LogBuffer,
    meter: &crate::metrics::Meter,
) -> Result<(), String> {
    let cpu = &meter.cpu;
    let host = HostState::new(spec, logs, 16, runtime.config().service_proxy, meter.memory.clone());
    let mut store = Store::new(&runtime.engine, host);
    store.limiter(|s| &mut s.limits);
    // Long-running: time slices within the pod's CPU limit, and no deadline.
    let usage = crate::cpu::slice(&mut store, runtime, cpu.clone(), None);
    let run = async {
        let instance = command.instantiate_async(&mut store).await?;
        instance.wasi_cli_run().call_run(&mut store).await
    };
    match crate::cpu::on_core(cpu.clone(), usage, run).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(())) => Err("exit code 1".into()),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(0)) => Ok(()),
            Some(I32Exit(code)) => Err(format!("exit code {code}")),
            None => Err(format!("trap: {e:#}")),
        },
    }
}
