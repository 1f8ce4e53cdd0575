//! The autoscaler's arithmetic, as Kubernetes' HPA controller does it (pure: no I/O, the
//! clock handed in).
//!
//! Per metric: the ratio of the pods' average use to the target; within 10% of it nothing
//! changes, else `desired = ceil(ratio × pods)`. Pods without metrics yet count as at the
//! target when scaling down and as idle when scaling up; pods not Ready count as idle when
//! scaling up and not at all when scaling down (so a scale-up never rests on pods that are
//! not serving yet). The largest recommendation of the metrics wins. Then `behavior`:
//! stabilization (the lowest recommendation of the scale-up window, the highest of the
//! scale-down window), rate policies over their periods, and the bounds.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use wasmkube_api::metrics::{CONCURRENCY, milli_quantity};
use wasmkube_api::{
    HpaSpec, MetricIdentifier, MetricStatus, MetricValueStatus, PodMetrics, PodsMetricStatus,
    ResourceMetricStatus, ScalingPolicy, ScalingRules, Target,
};

/// Within this share of the target, the replicas stay as they are.
pub const TOLERANCE: f64 = 0.1;
/// Knative's panic threshold: requests in flight at this multiple of what the ready pods are
/// meant to carry scale up to them at once (see `recommend`).
pub const PANIC_THRESHOLD: f64 = 2.0;

/// One pod of the target, as the autoscaler sees it.
pub struct PodView<'a> {
    pub name: &'a str,
    pub ready: bool,
    pub metrics: Option<&'a PodMetrics>,
    /// Its requests in flight when last measured, even if its `metrics` are not counted yet
    /// (an instant needs no whole window).
    pub in_flight: Option<f64>,
    /// Its requests: millicores, bytes.
    pub cpu_request: u64,
    pub memory_request: u64,
}

/// What one metric asks for: the replicas, and the figure it read (for the status).
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub replicas: u32,
    pub status: MetricStatus,
}

/// The replicas `target` asks for with `current` replicas over `pods`, or why it cannot
/// tell (no pod has reported it yet, a pod lacks the request a utilization needs).
pub fn recommend(target: &Target, current: u32, pods: &[PodView]) -> Result<Recommendation, String> {
    let metric = match target {
        Target::Utilization { resource, .. } if resource == "cpu" => "cpu",
        Target::Utilization { .. } => "memory",
        Target::AverageValue { metric, .. } => metric.as_str(),
    };
    let per_pod_target = |pod: &PodView| target_of(target, pod);
    let (mut used, mut wanted, mut counted) = (0.0, 0.0, 0usize);
    let (mut missing, mut unready) = (Vec::new(), Vec::new());
    for pod in pods {
        let value = pod.metrics.and_then(|m| m.usage(metric));
        match (pod.ready, value) {
            (true, Some(v)) => {
                used += v;
                wanted += per_pod_target(pod)?;
                counted += 1;
            }
            (true, None) => missing.push(pod),
            (false, _) => unready.push(pod),
        }
    }
    if counted == 0 {
        return Err(format!("no pod of the target has reported {metric} yet"));
    }
    let ratio = used / wanted;
    let status = metric_status(target, used, wanted, counted);
    let within = |r: f64| (r - 1.0).abs() <= TOLERANCE;
    let panic = panic(target, ratio, pods);
    if missing.is_empty() && unready.is_empty() {
        let replicas = if within(ratio) { current } else { (ratio * counted as f64).ceil() as u32 };
        return Ok(Recommendation { replicas: replicas.max(panic), status });
    }
    // Fill in the pods that did not report: at the target when scaling down, idle when
    // scaling up (and then the unready ones idle too).
    let (mut used2, mut wanted2, mut counted2) = (used, wanted, counted);
    if ratio < 1.0 {
        for pod in &missing {
            let t = per_pod_target(pod)?;
            used2 += t;
            wanted2 += t;
            counted2 += 1;
        }
    } else {
        for pod in missing.iter().chain(&unready) {
            wanted2 += per_pod_target(pod)?;
            counted2 += 1;
        }
    }
    let ratio2 = used2 / wanted2;
    // Filling in may not turn the direction round, nor make the change worth making.
    if within(ratio2) || (ratio2 > 1.0) != (ratio > 1.0) {
        return Ok(Recommendation { replicas: current.max(panic), status });
    }
    Ok(Recommendation { replicas: ((ratio2 * counted2 as f64).ceil() as u32).max(panic), status })
}

/// Knative's panic mode, for a concurrency target: when the window says the load rose
/// (`ratio` above the tolerance) and the requests in flight right now are at least
/// `PANIC_THRESHOLD` times what the ready pods are meant to carry, the replicas those
/// requests need (0 otherwise). A window average needs a whole window to see a step in load
/// in full; the instant sees it at once, so a step is met in one scaling, not two or three.
/// The window must agree, so one burst in an instant moves nothing; scale-down never
/// follows an instant.
fn panic(target: &Target, ratio: f64, pods: &[PodView]) -> u32 {
    let Target::AverageValue { metric, value } = target else { return 0 };
    if metric != CONCURRENCY || *value <= 0.0 || ratio <= 1.0 + TOLERANCE {
        return 0;
    }
    let in_flight: f64 = pods.iter().filter_map(|p| p.in_flight).sum();
    let ready = pods.iter().filter(|p| p.ready).count().max(1) as f64;
    if in_flight < PANIC_THRESHOLD * ready * value {
        return 0;
    }
    (in_flight / value).ceil() as u32
}

/// What counts as the target for one pod: the target value, or the target share of its
/// request.
fn target_of(target: &Target, pod: &PodView) -> Result<f64, String> {
    match target {
        Target::Utilization { resource, percent } => {
            let request = match resource.as_str() {
                "cpu" => pod.cpu_request as f64 / 1000.0,
                _ => pod.memory_request as f64,
            };
            if request <= 0.0 {
                return Err(format!("missing request for {resource} on pod {}", pod.name));
            }
            Ok(request * f64::from(*percent) / 100.0)
        }
        Target::AverageValue { value, .. } => Ok(*value),
    }
}

fn metric_status(target: &Target, used: f64, wanted: f64, pods: usize) -> MetricStatus {
    let average = used / pods as f64;
    match target {
        Target::Utilization { resource, percent } => {
            // The share of the requests in use: what was used over what was wanted, scaled
            // back from the target's percentage.
            let utilization = (used / wanted * f64::from(*percent)).round() as u32;
            let value = if resource == "cpu" {
                milli_quantity(average)
            } else {
                format!("{}", average.round() as u64)
            };
            MetricStatus {
                type_: "Resource".into(),
                resource: Some(ResourceMetricStatus {
                    name: resource.clone(),
                    current: MetricValueStatus {
                        average_utilization: Some(utilization),
                        average_value: Some(value),
                    },
                }),
                pods: None,
            }
        }
        Target::AverageValue { metric, .. } if metric == "cpu" || metric == "memory" => MetricStatus {
            type_: "Resource".into(),
            resource: Some(ResourceMetricStatus {
                name: metric.clone(),
                current: MetricValueStatus {
                    average_utilization: None,
                    average_value: Some(milli_quantity(average)),
                },
            }),
            pods: None,
        },
        Target::AverageValue { metric, .. } => MetricStatus {
            type_: "Pods".into(),
            resource: None,
            pods: Some(PodsMetricStatus {
                metric: MetricIdentifier { name: metric.trim_start_matches("wasmkube.dev/").to_string() },
                current: MetricValueStatus {
                    average_utilization: None,
                    average_value: Some(milli_quantity(average)),
                },
            }),
        },
    }
}

/// Why the replicas were held back from what the metrics asked for (ScalingLimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    TooFewReplicas,
    TooManyReplicas,
    ScaleUpLimit,
    ScaleDownLimit,
}

impl Held {
    pub fn reason(self) -> &'static str {
        match self {
            Held::TooFewReplicas => "TooFewReplicas",
            Held::TooManyReplicas => "TooManyReplicas",
            Held::ScaleUpLimit => "ScaleUpLimit",
            Held::ScaleDownLimit => "ScaleDownLimit",
        }
    }
}

/// An autoscaler's recent past: its recommendations (for stabilization) and its scalings
/// (for the rate policies), kept on the leader as Kubernetes' controller keeps them.
#[derive(Debug, Default)]
pub struct History {
    recommendations: VecDeque<(Instant, u32)>,
    scalings: VecDeque<(Instant, i64)>,
}

impl History {
    /// A scaling that took effect (recorded once its write succeeded, so a write that lost
    /// a race does not count against the rate policies).
    pub fn scaled(&mut self, now: Instant, change: i64) {
        self.scalings.push_back((now, change));
    }

    /// Starts the history of an autoscaler first seen at `replicas`: as Kubernetes' does,
    /// so a new leader does not scale down at once past the stabilization window.
    pub fn seed(&mut self, now: Instant, replicas: u32) {
        self.recommendations.push_back((now, replicas));
    }
}

/// Kubernetes' default scale-up rules: double, or add 4 pods, per 15 s (whichever is more),
/// at once.
pub fn default_scale_up() -> ScalingRules {
    ScalingRules {
        stabilization_window_seconds: Some(0),
        select_policy: Some("Max".into()),
        policies: vec![
            ScalingPolicy { type_: "Percent".into(), value: 100, period_seconds: 15 },
            ScalingPolicy { type_: "Pods".into(), value: 4, period_seconds: 15 },
        ],
    }
}

/// The default scale-down rules: any number of pods at once, after the highest
/// recommendation of the last 30 s (Kubernetes waits 300 s: its pods take seconds to
/// start, wasm pods microseconds, so flapping costs little here).
pub fn default_scale_down() -> ScalingRules {
    ScalingRules {
        stabilization_window_seconds: Some(30),
        select_policy: Some("Max".into()),
        policies: vec![ScalingPolicy { type_: "Percent".into(), value: 100, period_seconds: 15 }],
    }
}

/// The rules of one direction: the spec's, its omitted parts defaulted.
fn rules(given: Option<&ScalingRules>, default: ScalingRules) -> ScalingRules {
    match given {
        None => default,
        Some(r) => ScalingRules {
            stabilization_window_seconds: r
                .stabilization_window_seconds
                .or(default.stabilization_window_seconds),
            select_policy: r.select_policy.clone().or(default.select_policy),
            policies: if r.policies.is_empty() { default.policies } else { r.policies.clone() },
        },
    }
}

/// The replicas to set, from `current` and the metrics' `recommended`, within
/// `[floor, spec.maxReplicas]`; records the recommendation in `history` (the scaling is
/// recorded by `History::scaled` once it took effect).
pub fn decide(
    spec: &HpaSpec,
    current: u32,
    recommended: u32,
    floor: u32,
    history: &mut History,
    now: Instant,
) -> (u32, Option<Held>) {
    let behavior = spec.behavior.as_ref();
    let up = rules(behavior.and_then(|b| b.scale_up.as_ref()), default_scale_up());
    let down = rules(behavior.and_then(|b| b.scale_down.as_ref()), default_scale_down());
    let window =
        |r: &ScalingRules| Duration::from_secs(u64::from(r.stabilization_window_seconds.unwrap_or(0)));
    let (up_window, down_window) = (window(&up), window(&down));

    // Stabilization.
    history.recommendations.push_back((now, recommended));
    let keep = up_window.max(down_window);
    while history.recommendations.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > keep) {
        history.recommendations.pop_front();
    }
    let within = |w: Duration| {
        history.recommendations.iter().filter(move |(at, _)| now.saturating_duration_since(*at) <= w)
    };
    let up_to = within(up_window).map(|(_, r)| *r).min().unwrap_or(recommended);
    let down_to = within(down_window).map(|(_, r)| *r).max().unwrap_or(recommended);
    let mut replicas = current;
    if current < up_to {
        replicas = up_to;
    } else if current > down_to {
        replicas = down_to;
    }

    // Rate policies.
    let mut limit = None;
    if replicas > current {
        let allowed = rate_limit(&up, current, &history.scalings, now, true);
        if replicas > allowed {
            replicas = allowed;
            limit = Some(Held::ScaleUpLimit);
        }
    } else if replicas < current {
        let allowed = rate_limit(&down, current, &history.scalings, now, false);
        if replicas < allowed {
            replicas = allowed;
            limit = Some(Held::ScaleDownLimit);
        }
    }

    // Bounds.
    if replicas > spec.max_replicas {
        (replicas, limit) = (spec.max_replicas, Some(Held::TooManyReplicas));
    }
    if replicas < floor {
        (replicas, limit) = (floor, Some(Held::TooFewReplicas));
    }
    // Scalings older than the longest period matter no more.
    let longest = up.policies.iter().chain(&down.policies).map(|p| p.period_seconds).max().unwrap_or(0);
    while history
        .scalings
        .front()
        .is_some_and(|(at, _)| now.saturating_duration_since(*at) > Duration::from_secs(u64::from(longest)))
    {
        history.scalings.pop_front();
    }
    (replicas, limit)
}

/// The most (scaling up) or fewest (down) replicas the policies allow now: each policy from
/// the replicas at the start of its period (now less every change made within it, up or
/// down, as Kubernetes counts); `Max` takes the policy that allows the biggest
/// change, `Min` the smallest, `Disabled` none.
fn rate_limit(
    rules: &ScalingRules,
    current: u32,
    scalings: &VecDeque<(Instant, i64)>,
    now: Instant,
    up: bool,
) -> u32 {
    let select = rules.select_policy.as_deref().unwrap_or("Max");
    if select == "Disabled" {
        return current;
    }
    let limits = rules.policies.iter().map(|p| {
        let period = Duration::from_secs(u64::from(p.period_seconds));
        let moved: i64 = scalings
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= period)
            .map(|(_, change)| *change)
            .sum();
        let start = (i64::from(current) - moved).max(0) as f64;
        let value = f64::from(p.value);
        let limit = match (p.type_.as_str(), up) {
            ("Pods", true) => start + value,
            ("Pods", false) => start - value,
            (_, true) => (start * (1.0 + value / 100.0)).ceil(),
            (_, false) => (start * (1.0 - value / 100.0)).floor(),
        };
        limit.clamp(0.0, f64::from(u32::MAX)) as u32
    });
    let limits: Vec<u32> = limits.collect();
    // The biggest change up is the highest limit; down, the lowest.
    let pick = match (select, up) {
        ("Min", true) | ("Max", false) => limits.iter().min(),
        _ => limits.iter().max(),
    };
    pick.copied().unwrap_or(current)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use wasmkube_api::metrics::CONCURRENCY;
    use wasmkube_api::{Behavior, ContainerMetrics};

    use super::*;

    fn metrics(usage: &[(&str, &str)]) -> PodMetrics {
        let usage: BTreeMap<String, String> =
            usage.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        PodMetrics { containers: vec![ContainerMetrics { name: "c".into(), usage }], ..PodMetrics::default() }
    }

    fn view<'a>(m: Option<&'a PodMetrics>, ready: bool) -> PodView<'a> {
        let in_flight = m.and_then(|m| m.usage(wasmkube_api::metrics::IN_FLIGHT));
        PodView { name: "p", ready, metrics: m, in_flight, cpu_request: 500, memory_request: 64 << 20 }
    }

    fn concurrency(v: f64) -> Target {
        Target::AverageValue { metric: CONCURRENCY.into(), value: v }
    }

    #[test]
    fn desired_is_the_ratio_times_the_pods_rounded_up_outside_the_tolerance() {
        let busy = metrics(&[(CONCURRENCY, "25")]);
        let pods = [view(Some(&busy), true), view(Some(&busy), true)];
        // 25 in flight per pod against a target of 10: ceil(2.5 × 2) = 5.
        let r = recommend(&concurrency(10.0), 2, &pods).expect("recommends");
        assert_eq!(r.replicas, 5);
        assert_eq!(
            r.status.pods.as_ref().map(|p| p.current.average_value.clone()),
            Some(Some("25000m".into()))
        );
        // 10.5 against 10: within 10%, stays.
        let near = metrics(&[(CONCURRENCY, "10500m")]);
        assert_eq!(
            recommend(&concurrency(10.0), 2, &[view(Some(&near), true), view(Some(&near), true)])
                .map(|r| r.replicas),
            Ok(2)
        );
        // Idle: down to nothing (the bounds and the idle window decide how far).
        let idle = metrics(&[(CONCURRENCY, "0")]);
        assert_eq!(recommend(&concurrency(10.0), 3, &[view(Some(&idle), true)]).map(|r| r.replicas), Ok(0));
    }

    #[test]
    fn cpu_utilization_is_of_the_requests_and_needs_them() {
        // 400m used of 500m requested is 80%, against a 40% target: twice the pods.
        let hot = metrics(&[("cpu", "400m")]);
        let target = Target::Utilization { resource: "cpu".into(), percent: 40 };
        let r = recommend(&target, 2, &[view(Some(&hot), true), view(Some(&hot), true)]).expect("recommends");
        assert_eq!(r.replicas, 4);
        assert_eq!(r.status.resource.as_ref().and_then(|s| s.current.average_utilization), Some(80));
        let mut no_request = view(Some(&hot), true);
        no_request.cpu_request = 0;
        assert!(recommend(&target, 1, &[no_request]).is_err_and(|e| e.contains("missing request for cpu")));
    }

    #[test]
    fn pods_without_metrics_or_not_ready_are_filled_in_conservatively() {
        let busy = metrics(&[(CONCURRENCY, "30")]);
        // Scaling up: a pod that has not reported and one not Ready count as idle:
        // (30 + 0 + 0) / 3 = 10 per pod against 10: within the target, no change.
        let pods = [view(Some(&busy), true), view(None, true), view(Some(&busy), false)];
        assert_eq!(recommend(&concurrency(10.0), 3, &pods).map(|r| r.replicas), Ok(3));
        // Scaling down: the silent pod counts at the target, the unready one not at all:
        // (0 + 10) / 2 = 5 per pod against 10: one pod.
        let idle = metrics(&[(CONCURRENCY, "0")]);
        let pods = [view(Some(&idle), true), view(None, true), view(None, false)];
        assert_eq!(recommend(&concurrency(10.0), 3, &pods).map(|r| r.replicas), Ok(1));
        // Nobody has reported: no recommendation.
        assert!(recommend(&concurrency(10.0), 1, &[view(None, true)]).is_err());
    }

    #[test]
    fn a_step_in_load_seen_in_flight_is_met_at_once_and_a_burst_alone_is_not() {
        use wasmkube_api::metrics::IN_FLIGHT;
        // One pod, target 1: the window caught a quarter of a step from 1 to 4 requests in
        // flight (1.75 on average), the instant sees all 4: 4 pods now, not 2 now and 4 later.
        let stepped = metrics(&[(CONCURRENCY, "1750m"), (IN_FLIGHT, "4")]);
        assert_eq!(recommend(&concurrency(1.0), 1, &[view(Some(&stepped), true)]).map(|r| r.replicas), Ok(4));
        // Pods too young to count still count in flight: 1 ready pod and 2 starting carry 6.
        let (old, young) = (metrics(&[(CONCURRENCY, "2"), (IN_FLIGHT, "2")]), metrics(&[(IN_FLIGHT, "2")]));
        let mut starting = view(None, false);
        starting.in_flight = young.usage(IN_FLIGHT);
        let pods = [view(Some(&old), true), starting, view(Some(&young), false)];
        assert_eq!(recommend(&concurrency(1.0), 3, &pods).map(|r| r.replicas), Ok(6));
        // A burst in the instant with a steady window moves nothing.
        let burst = metrics(&[(CONCURRENCY, "1"), (IN_FLIGHT, "5")]);
        assert_eq!(recommend(&concurrency(1.0), 1, &[view(Some(&burst), true)]).map(|r| r.replicas), Ok(1));
        // Below the panic threshold (twice what the ready pods carry), the window decides.
        let risen = metrics(&[(CONCURRENCY, "15"), (IN_FLIGHT, "19")]);
        assert_eq!(recommend(&concurrency(10.0), 1, &[view(Some(&risen), true)]).map(|r| r.replicas), Ok(2));
        // Nor is a fall ever followed on an instant: the window asks 1 pod, the instant none.
        let fallen = metrics(&[(CONCURRENCY, "500m"), (IN_FLIGHT, "0")]);
        let pods = [view(Some(&fallen), true), view(Some(&fallen), true)];
        assert_eq!(recommend(&concurrency(1.0), 2, &pods).map(|r| r.replicas), Ok(1));
    }

    fn spec(min: u32, max: u32, behavior: Option<Behavior>) -> HpaSpec {
        HpaSpec { min_replicas: Some(min), max_replicas: max, behavior, ..HpaSpec::default() }
    }

    #[test]
    fn scale_up_is_rate_limited_and_bounded() {
        let (mut h, t0) = (History::default(), Instant::now());
        // From 1, Kubernetes' defaults allow max(2 × 1, 1 + 4) = 5 per 15 s.
        assert_eq!(decide(&spec(1, 50, None), 1, 40, 1, &mut h, t0), (5, Some(Held::ScaleUpLimit)));
        h.scaled(t0, 4);
        // Within the same 15 s the period started at 1: still 5.
        assert_eq!(
            decide(&spec(1, 50, None), 5, 40, 1, &mut h, t0 + Duration::from_secs(5)),
            (5, Some(Held::ScaleUpLimit))
        );
        // A period later: from 5, max(10, 9) = 10.
        assert_eq!(
            decide(&spec(1, 50, None), 5, 40, 1, &mut h, t0 + Duration::from_secs(21)),
            (10, Some(Held::ScaleUpLimit))
        );
        // The maximum caps it.
        let mut h = History::default();
        assert_eq!(decide(&spec(1, 3, None), 2, 4, 1, &mut h, t0), (3, Some(Held::TooManyReplicas)));
        // Changes either way count: after 10 -> 5 in this period it started at 10, so 20.
        let mut h = History::default();
        h.scaled(t0, -5);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(decide(&spec(1, 50, None), 5, 40, 1, &mut h, later), (20, Some(Held::ScaleUpLimit)));
        // A history seeded with the replicas found (a new leader) holds them for the window.
        let mut h = History::default();
        h.seed(t0, 5);
        assert_eq!(decide(&spec(1, 10, None), 5, 1, 1, &mut h, later).0, 5);
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window_and_the_floor_holds() {
        let (mut h, t0) = (History::default(), Instant::now());
        let s = spec(1, 10, None);
        assert_eq!(decide(&s, 5, 5, 1, &mut h, t0), (5, None));
        // Load gone: the highest recommendation of the last 30 s (5) holds.
        assert_eq!(decide(&s, 5, 1, 1, &mut h, t0 + Duration::from_secs(10)).0, 5);
        assert_eq!(decide(&s, 5, 1, 1, &mut h, t0 + Duration::from_secs(29)).0, 5);
        // 31 s after the last 5: down to 1 at once (100% per 15 s).
        assert_eq!(decide(&s, 5, 1, 1, &mut h, t0 + Duration::from_secs(31)), (1, None));
        // Below the floor, never.
        let mut h = History::default();
        assert_eq!(decide(&s, 1, 0, 1, &mut h, t0), (1, Some(Held::TooFewReplicas)));
        // A spec's own window: none.
        let quick = Behavior {
            scale_down: Some(ScalingRules {
                stabilization_window_seconds: Some(0),
                ..ScalingRules::default()
            }),
            scale_up: None,
        };
        let mut h = History::default();
        assert_eq!(decide(&spec(0, 10, Some(quick)), 4, 2, 0, &mut h, t0), (2, None));
    }
}
