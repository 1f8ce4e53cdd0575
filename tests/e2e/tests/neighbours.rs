//! Neighbours with the real binaries: a pod's CPU is bounded by `resources.limits.cpu` (a
//! looping request of a pod limited to a fifth of a core costs the node a fifth of what one
//! limited to a whole core costs, measured side by side), and a request is cut off at its
//! pod's own `timeoutSeconds`. (How fast the others stay is `wasmkube-bench neighbours`.)

use std::time::{Duration, Instant};

use serde_json::json;
use wasmkube_api::Pod;
use wasmkube_e2e::{Wasmlet, eventually, example, proxy_get};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

/// CPU time the process has used (user + system), from /proc.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Past the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are the 12th and 13th fields after the state; clock ticks of 1/100 s.
    Ok(Duration::from_millis((ticks(11) + ticks(12)) * 10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_cpu_limit_bounds_its_loops_and_its_deadline_cuts_them_off() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let client = node.client();
    let digest = client.upload_module(std::fs::read(example("misbehave"))?).await?.metadata.name;
    for (name, cpu) in [("fifth", "200m"), ("whole", "1")] {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"timeoutSeconds": 2,
                                           "containers": [{"name": "app", "image": format!("sha256:{digest}"),
                                                           "resources": {"limits": {"cpu": cpu}}}]}}}
        });
        client.post_path(DEPLOYMENTS, &deployment).await?;
        client
            .post_path(
                "/api/v1/namespaces/default/services",
                &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                        "spec": {"selector": {"app": name}}}),
            )
            .await?;
    }
    eventually(Duration::from_secs(30), "both pods Ready", || async {
        let pods: Vec<Pod> = node.client().list(Some("default")).await.ok()?;
        (pods.iter().filter(|p| p.is_ready()).count() == 2).then_some(())
    })
    .await?;
    let pid = node.pid().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let mut costs = Vec::new();
    for name in ["fifth", "whole"] {
        let (before, sent) = (cpu_time(pid)?, Instant::now());
        // Two loops at once: a limit of a whole core still holds them to one core.
        let (a, b) = tokio::join!(
            proxy_get(&node.proxy, name, "/spin", &[]),
            proxy_get(&node.proxy, name, "/spin", &[])
        );
        let (took, cost) = (sent.elapsed(), cpu_time(pid)? - before);
        eprintln!(
            "{name}: two loops cut off after {took:?} ({} {}), the node used {cost:?} of CPU",
            a.status, b.status
        );
        assert_eq!((a.status, b.status), (504, 504), "cut off at the deadline: {} / {}", a.body, b.body);
        assert!(a.body.contains("2s deadline"), "{}", a.body);
        assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(4), "the pod's 2 s: {took:?}");
        costs.push(cost);
    }
    let (fifth, whole) = (costs[0], costs[1]);
    // 200m for 2 s is 0.4 s of CPU; a whole core for 2 s is 2 s (not 4: one core at a time,
    // however many loops). Loose bounds: other tests may share the machine.
    assert!(
        whole >= Duration::from_millis(600) && whole <= Duration::from_millis(2800),
        "a whole core: {whole:?}"
    );
    assert!(fifth * 2 <= whole, "a fifth of a core costs far less: {fifth:?} against {whole:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cpu_limits_and_deadlines_are_refused_and_nothing_is_stored() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let client = node.client();
    let digest = "a".repeat(64);
    let cases = [
        (json!({"resources": {"limits": {"cpu": "lots"}}}), json!({}), "resources.limits.cpu"),
        (json!({"resources": {"limits": {"cpu": "0"}}}), json!({}), "resources.limits.cpu"),
        (json!({"resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "2"}}}), json!({}), "requests.cpu"),
        (json!({"resources": {"limits": {"gpu": "1"}}}), json!({}), "resources.limits.gpu"),
        (json!({}), json!({"timeoutSeconds": 0}), "timeoutSeconds"),
        (json!({}), json!({"timeoutSeconds": 3601}), "timeoutSeconds"),
    ];
    for (i, (container, spec, field)) in cases.into_iter().enumerate() {
        let mut c = json!({"name": "app", "image": format!("sha256:{digest}")});
        c.as_object_mut()
            .into_iter()
            .for_each(|o| o.extend(container.as_object().cloned().unwrap_or_default()));
        let mut pod_spec = json!({"containers": [c]});
        pod_spec
            .as_object_mut()
            .into_iter()
            .for_each(|o| o.extend(spec.as_object().cloned().unwrap_or_default()));
        let name = format!("bad-{i}");
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
                     "template": {"metadata": {"labels": {"app": "x"}}, "spec": pod_spec}}
        });
        let err = client.post_path(DEPLOYMENTS, &deployment).await.unwrap_err();
        assert_eq!(err.code(), Some(422), "{name}: {err}");
        assert!(err.to_string().contains(field), "{name}: {err}");
        let missing = client.get_path(&format!("{DEPLOYMENTS}/{name}")).await.unwrap_err();
        assert_eq!(missing.code(), Some(404), "{name}: nothing stored");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_requests_are_scheduled_within_the_nodes_cores() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let client = node.client();
    let digest = client.upload_module(std::fs::read(example("hello_http"))?).await?.metadata.name;
    // Three quarters of the machine each: one fits, the second waits with Kubernetes' reason.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let request = format!("{}m", cores * 750);
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "big"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "big"}},
                 "template": {"metadata": {"labels": {"app": "big"}},
                              "spec": {"containers": [{"name": "app", "image": format!("sha256:{digest}"),
                                                       "resources": {"requests": {"cpu": request}}}]}}}
    });
    client.post_path(DEPLOYMENTS, &deployment).await?;
    let nodes: Vec<wasmkube_api::Node> = client.list(None).await?;
    assert_eq!(nodes[0].allocatable_cpu_millis(), cores * 1000, "the node offers its cores");
    let event = eventually(Duration::from_secs(30), "a FailedScheduling event", || async {
        let events: Vec<wasmkube_api::Event> = node.client().list(Some("default")).await.ok()?;
        events.into_iter().find(|e| e.reason == "FailedScheduling")
    })
    .await?;
    assert!(event.message.contains("1 Insufficient cpu"), "{}", event.message);
    let pods: Vec<Pod> = client.list(Some("default")).await?;
    let bound = pods.iter().filter(|p| p.spec.node_name.is_some()).count();
    assert_eq!((pods.len(), bound), (2, 1), "one placed, one pending");
    Ok(())
}
