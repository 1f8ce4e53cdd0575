//! The HorizontalPodAutoscaler controller, on the leader. Every second it reads every
//! autoscaler, gathers the pods' metrics from every member (once per pass, and only while
//! some autoscaler exists), and sets each target Deployment's replicas as `autoscale`
//! decides, recording a `SuccessfulRescale` event and the autoscaler's status (current and
//! desired replicas, the metrics read, and the AbleToScale, ScalingActive and
//! ScalingLimited conditions kubectl shows).
//!
//! Scale to zero: with `minReplicas: 0`, a Deployment none of whose pods has had a request
//! for the idle window (`autoscaling.wasmkube.dev/scale-to-zero-after`, default 60 s, as
//! Knative's) goes to 0 replicas. At zero there is nothing to measure; the next request
//! brings it back (a proxy that holds it scales the Deployment to 1), and from there the
//! metrics take over again, the idle clock started afresh.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use wasmkube_api::metrics::{CONCURRENCY, IN_FLIGHT, REQUESTS_PER_SECOND};
use wasmkube_api::{
    Condition, DEFAULT_NAMESPACE, Deployment, Event, HorizontalPodAutoscaler, HpaStatus, ObjectReference,
    Pod, PodMetrics, Resource, labels_match,
};
use wasmkube_apiserver::metrics::MetricsSource;
use wasmkube_apiserver::{Objects, Write};
use wasmkube_cache::{Reflector, SharedCache};
use wasmkube_store::{ObjectKey, ObjectStore};

use crate::autoscale::{History, PodView, decide, recommend};

/// How often every autoscaler is evaluated.
pub const PERIOD: Duration = Duration::from_secs(1);
/// An autoscaler's status is written when its replicas or conditions change, and its
/// figures at most this often otherwise (not one Raft write per autoscaler per second).
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// How long a Deployment with `minReplicas: 0` must have had no request to go to zero,
/// unless its autoscaler says (`SCALE_TO_ZERO_AFTER`).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);
const SOURCE: &str = "horizontal-pod-autoscaler";

/// What the leader remembers of one autoscaler between passes.
struct Tracked {
    history: History,
    /// When one of its pods last had a request.
    active_at: Instant,
    /// The replicas at the last pass (a rise from zero restarts the idle clock).
    replicas: u32,
    /// The last status written, and when.
    written: Option<(HpaStatus, Instant)>,
}

/// Runs the autoscalers while this node leads, until `shutdown` resolves. Pods are read
/// from the node's shared cache (`cache`), followed only while some autoscaler exists: a
/// pass looks at its targets' pods without parsing every pod of the cluster again.
pub async fn run(
    objects: Objects,
    cache: SharedCache,
    metrics: MetricsSource,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let leader = objects.cluster().leader();
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let mut pods: Option<Reflector<Pod>> = None;
    let mut every = tokio::time::interval(PERIOD);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = every.tick() => {}
        }
        if !leader.borrow().is_leader {
            // A new leader starts from what it reads (as Kubernetes' controller does).
            tracked.clear();
            pods = None;
            continue;
        }
        for (write, scaling) in pass(objects.store(), &cache, &mut pods, &metrics, &mut tracked).await {
            match objects.write(write).await {
                Ok(_) => {
                    if let Some((uid, change, replicas)) = scaling
                        && let Some(state) = tracked.get_mut(&uid)
                    {
                        state.history.scaled(Instant::now(), change);
                        state.replicas = replicas;
                    }
                }
                // A conflict (the Deployment changed meanwhile) is retried next pass.
                Err(e) => tracing::debug!("autoscaler write: {e}"),
            }
        }
    }
}

/// A write, and when it scales a Deployment: the autoscaler's uid, the change, the new count.
type Planned = (Write, Option<(String, i64, u32)>);

async fn pass(
    store: &ObjectStore,
    cache: &SharedCache,
    pods: &mut Option<Reflector<Pod>>,
    metrics: &MetricsSource,
    tracked: &mut HashMap<String, Tracked>,
) -> Vec<Planned> {
    let autoscalers: Vec<HorizontalPodAutoscaler> = match store.list("HorizontalPodAutoscaler", None) {
        Ok((items, _)) => items.into_iter().filter_map(|v| serde_json::from_value(v).ok()).collect(),
        Err(e) => {
            tracing::warn!("autoscaler: reading autoscalers: {e}");
            return Vec::new();
        }
    };
    tracked.retain(|uid, _| autoscalers.iter().any(|h| h.metadata.uid.as_deref() == Some(uid)));
    if autoscalers.is_empty() {
        *pods = None;
        return Vec::new();
    }
    // Only the pods of the Deployments autoscaled (not every pod of the cluster, every second).
    let owners: std::collections::HashSet<String> = autoscalers
        .iter()
        .filter_map(|h| {
            let ns = h.metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
            let key = ObjectKey::new("Deployment", Some(ns), &h.spec.scale_target_ref.name);
            store.get(&key).ok().flatten()?.pointer("/metadata/uid")?.as_str().map(str::to_string)
        })
        .collect();
    let (reports, missing) = metrics.scrape(Some(&owners)).await;
    if !missing.is_empty() {
        tracing::debug!(?missing, "autoscaler: members without metrics this pass");
    }
    let by_pod: HashMap<(String, String), PodMetrics> = reports
        .into_iter()
        .flat_map(|r| r.pods)
        .map(|p| ((p.metadata.namespace.clone().unwrap_or_default(), p.metadata.name.clone()), p))
        .collect();
    // The pods as they are after the scrape (which may take a while), by owner: one look
    // at each pod per pass however many autoscalers there are.
    let pods = match pods {
        Some(pods) => {
            pods.drain();
            pods
        }
        None => pods.insert(Reflector::new(cache, Reflector::all()).0),
    };
    let mut by_owner: HashMap<&str, Vec<&Pod>> = HashMap::new();
    for (_, pod) in pods.iter() {
        if let Some(owner) = pod.owner_uid().filter(|uid| owners.contains(*uid)) {
            by_owner.entry(owner).or_default().push(pod);
        }
    }
    let now = Instant::now();
    let mut writes = Vec::new();
    for hpa in &autoscalers {
        let uid = hpa.metadata.uid.clone().unwrap_or_default();
        let state = tracked.entry(uid).or_insert_with(|| Tracked {
            history: History::default(),
            active_at: now,
            replicas: u32::MAX,
            written: None,
        });
        writes.extend(evaluate(hpa, store, &by_owner, &by_pod, !missing.is_empty(), state, now));
    }
    writes
}

/// The idle window of an autoscaler (its annotation, else the default).
pub fn idle_window(hpa: &HorizontalPodAutoscaler) -> Duration {
    hpa.metadata
        .annotations
        .get(wasmkube_api::SCALE_TO_ZERO_AFTER)
        .and_then(|v| humantime::parse_duration(v).ok())
        .unwrap_or(DEFAULT_IDLE)
}

/// `partial`: some member's metrics are missing this pass.
fn evaluate(
    hpa: &HorizontalPodAutoscaler,
    store: &ObjectStore,
    pods: &HashMap<&str, Vec<&Pod>>,
    metrics: &HashMap<(String, String), PodMetrics>,
    partial: bool,
    state: &mut Tracked,
    now: Instant,
) -> Vec<Planned> {
    let ns = hpa.metadata.namespace.clone().unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let target = &hpa.spec.scale_target_ref.name;
    let previous = hpa.status.clone().unwrap_or_default();
    let mut conditions = Conditions { previous: &previous.conditions, now: timestamp(), list: Vec::new() };
    let deployment: Option<Deployment> = store
        .get(&ObjectKey::new("Deployment", Some(&ns), target))
        .ok()
        .flatten()
        .and_then(|v| serde_json::from_value(v).ok());
    let Some(deployment) = deployment else {
        conditions.set("AbleToScale", false, "FailedGetScale", format!("deployment {ns}/{target} not found"));
        let status = HpaStatus { conditions: conditions.list, ..previous.clone() };
        return status_write(hpa, state, status, now).into_iter().map(|w| (w, None)).collect();
    };
    let current = deployment.spec.replicas;
    conditions.set("AbleToScale", true, "ReadyForNewScale", "recommended size matches current size".into());

    let owned = deployment.metadata.uid.as_deref().and_then(|uid| pods.get(uid));
    let pods: Vec<&Pod> = owned
        .into_iter()
        .flatten()
        .copied()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()) && !p.is_terminal())
        .filter(|p| labels_match(&deployment.spec.selector.match_labels, &p.metadata.labels))
        .collect();
    let views: Vec<PodView> = pods
        .iter()
        .map(|p| {
            let measured = metrics
                .get(&(ns.clone(), p.metadata.name.clone()))
                .filter(|m| m.metadata.uid == p.metadata.uid);
            PodView {
                name: &p.metadata.name,
                ready: p.is_ready(),
                // Measured over a whole window, else not yet: a pod younger than the window
                // would count the load it took over from the others a second time.
                metrics: measured.filter(|m| window_of(m) >= FULL_WINDOW),
                in_flight: measured.and_then(|m| m.usage(IN_FLIGHT)),
                cpu_request: p.cpu_request_millis(),
                memory_request: p.memory_request(),
            }
        })
        .collect();

    // Idle: no request in flight or answered on any pod — known, not assumed: a pod whose
    // node did not answer this time, or one not measured yet, may be busy.
    let busy = views.iter().any(|v| match v.metrics {
        Some(m) => {
            m.usage(REQUESTS_PER_SECOND).is_some_and(|r| r > 0.0)
                || m.usage(CONCURRENCY).is_some_and(|c| c > 0.0)
        }
        None => v.ready,
    });
    if state.replicas == u32::MAX {
        state.history.seed(now, current);
    }
    if busy || partial || (state.replicas == 0 && current > 0) || state.replicas == u32::MAX {
        state.active_at = now;
    }
    state.replicas = current;
    let idle_for = now.saturating_duration_since(state.active_at);
    let min = hpa.spec.min();

    let targets = hpa.spec.targets().unwrap_or_default();
    let mut current_metrics = Vec::new();
    let (mut recommended, mut failures): (Option<u32>, Vec<String>) = (None, Vec::new());
    for target in &targets {
        match recommend(target, current, &views) {
            Ok(r) => {
                recommended = Some(recommended.map_or(r.replicas, |m| m.max(r.replicas)));
                current_metrics.push(r.status);
            }
            Err(e) => failures.push(e),
        }
    }

    let (desired, why, limit) = if current == 0 {
        let reason = if min == 0 { "ScaledToZero" } else { "ScalingDisabled" };
        let message = if min == 0 {
            "scaled to zero while idle; the next request scales it up".to_string()
        } else {
            "scaling is disabled since the replica count of the target is zero".to_string()
        };
        conditions.set("ScalingActive", false, reason, message);
        (0, String::new(), None)
    } else if min == 0 && idle_for >= idle_window(hpa) && !scale_down_disabled(hpa) {
        let message = "no request for the idle window: scaled to zero; the next request scales it up";
        conditions.set("ScalingActive", false, "ScaledToZero", message.into());
        state.history = History::default();
        (0, format!("no request for {}", humantime::format_duration(idle_window(hpa))), None)
    } else {
        let floor = min.max(1);
        let recommended = match (recommended, failures.is_empty()) {
            (Some(r), true) => {
                conditions.set(
                    "ScalingActive",
                    true,
                    "ValidMetricFound",
                    "the HPA was able to successfully calculate a replica count".into(),
                );
                r
            }
            // Some metrics failed: scale up on the others, never down on them.
            (Some(r), false) => {
                conditions.set("ScalingActive", true, "ValidMetricFound", failures.join("; "));
                r.max(current)
            }
            (None, _) => {
                let message =
                    if failures.is_empty() { "no metrics".to_string() } else { failures.join("; ") };
                conditions.set("ScalingActive", false, "FailedGetPodsMetric", message);
                current
            }
        };
        let (desired, limit) = decide(&hpa.spec, current, recommended, floor, &mut state.history, now);
        let why = if desired > current { "above target" } else { "below target" };
        (desired, format!("{} {why}", metric_names(&targets)), limit)
    };
    match limit {
        Some(limit) => conditions.set(
            "ScalingLimited",
            true,
            limit.reason(),
            "the desired replica count is held back by the bounds or the scaling policies".into(),
        ),
        None => conditions.set(
            "ScalingLimited",
            false,
            "DesiredWithinRange",
            "the desired count is within the acceptable range".into(),
        ),
    }

    let mut writes: Vec<Planned> = Vec::new();
    let mut last_scale_time = previous.last_scale_time.clone();
    if desired != current {
        let mut scaled = deployment.clone();
        scaled.spec.replicas = desired;
        if desired == 0 {
            // Where a request last woke it is no guide to where the next one will.
            scaled.metadata.annotations.remove(wasmkube_api::WOKEN_ON);
        }
        match Write::update(&scaled) {
            Ok(write) => {
                let uid = hpa.metadata.uid.clone().unwrap_or_default();
                writes.push((write, Some((uid, i64::from(desired) - i64::from(current), desired))));
            }
            Err(e) => tracing::warn!("autoscaler: scaling {ns}/{target}: {e}"),
        }
        tracing::info!(hpa = %hpa.metadata.name, from = current, to = desired, "{why}");
        writes.extend(rescaled_event(hpa, desired, &why).map(|w| (w, None)));
        last_scale_time = Some(timestamp());
    }
    let status = HpaStatus {
        observed_generation: hpa.metadata.generation,
        last_scale_time,
        current_replicas: pods.len() as u32,
        desired_replicas: desired,
        current_metrics,
        conditions: conditions.list,
    };
    writes.extend(status_write(hpa, state, status, now).map(|w| (w, None)));
    writes
}

/// A pod's metrics cover a whole window (the nodes measure over 1 s) from this long.
const FULL_WINDOW: Duration = Duration::from_millis(900);

/// The window a pod's figures cover (`"1.004s"`).
fn window_of(m: &PodMetrics) -> Duration {
    let seconds = m.window.strip_suffix('s').and_then(|s| s.parse::<f64>().ok());
    seconds.and_then(|s| Duration::try_from_secs_f64(s).ok()).unwrap_or(Duration::ZERO)
}

fn scale_down_disabled(hpa: &HorizontalPodAutoscaler) -> bool {
    let down = hpa.spec.behavior.as_ref().and_then(|b| b.scale_down.as_ref());
    down.and_then(|r| r.select_policy.as_deref()) == Some("Disabled")
}

fn metric_names(targets: &[wasmkube_api::Target]) -> String {
    let names: Vec<String> = targets
        .iter()
        .map(|t| match t {
            wasmkube_api::Target::Utilization { resource, .. } => format!("{resource} resource utilization"),
            wasmkube_api::Target::AverageValue { metric, .. } => {
                format!("{} metric", metric.trim_start_matches("wasmkube.dev/"))
            }
        })
        .collect();
    names.join(", ")
}

/// The status, when it differs from the last one written in more than its figures, or its
/// figures are older than `STATUS_EVERY`.
fn status_write(
    hpa: &HorizontalPodAutoscaler,
    state: &mut Tracked,
    status: HpaStatus,
    now: Instant,
) -> Option<Write> {
    let same_but_figures = |a: &HpaStatus, b: &HpaStatus| {
        let strip = |s: &HpaStatus| HpaStatus { current_metrics: Vec::new(), ..s.clone() };
        strip(a) == strip(b)
    };
    if let Some((written, at)) = &state.written
        && (written == &status
            || (same_but_figures(written, &status) && now.saturating_duration_since(*at) < STATUS_EVERY))
    {
        return None;
    }
    state.written = Some((status.clone(), now));
    let ns = hpa.metadata.namespace.as_deref();
    Some(Write::update_status::<HorizontalPodAutoscaler, _>(ns, &hpa.metadata.name, &status, None))
}

fn rescaled_event(hpa: &HorizontalPodAutoscaler, replicas: u32, why: &str) -> Option<Write> {
    let involved = ObjectReference {
        kind: HorizontalPodAutoscaler::KIND.kind.into(),
        namespace: hpa.metadata.namespace.clone(),
        name: hpa.metadata.name.clone(),
        uid: hpa.metadata.uid.clone(),
    };
    let message = format!("New size: {replicas}; reason: {why}");
    let uid = uuid::Uuid::new_v4().to_string();
    let event = Event::about(involved, "Normal", "SuccessfulRescale", message, SOURCE, &timestamp(), uid);
    Write::record_event(&event).ok()
}

/// Conditions as kubectl reads them, each keeping its transition time while its status holds.
struct Conditions<'a> {
    previous: &'a [Condition],
    now: String,
    list: Vec<Condition>,
}

impl Conditions<'_> {
    fn set(&mut self, type_: &str, ok: bool, reason: &str, message: String) {
        let mut c = Condition::new(type_, ok);
        c.reason = Some(reason.into());
        c.message = Some(message);
        let held = self.previous.iter().find(|p| p.type_ == type_ && p.status == c.status);
        c.last_transition_time =
            held.and_then(|p| p.last_transition_time.clone()).or_else(|| Some(self.now.clone()));
        self.list.retain(|p| p.type_ != type_);
        self.list.push(c);
    }
}

fn timestamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
