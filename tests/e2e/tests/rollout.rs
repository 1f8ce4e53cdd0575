//! Rollouts with the real binaries: a Deployment's revisions as ReplicaSets, a rolling update
//! under load with no failed request, `rollout status`, `history` and `undo`.

use std::time::Duration;

use wasmkube_api::{Deployment, ReplicaSet};
use wasmkube_e2e::{Wasmlet, deploy_example, eventually, example, steady_load};

/// The first `n` pods a pods watch (`resp`) reports ADDED, as they were created.
async fn added_pods(resp: reqwest::Response, n: usize) -> anyhow::Result<Vec<wasmkube_api::Pod>> {
    let added =
        wasmkube_e2e::watch_events(resp, n, Duration::from_secs(20), |e| e["type"] == "ADDED").await?;
    Ok(added.into_iter().filter_map(|e| serde_json::from_value(e["object"].clone()).ok()).collect())
}

async fn revisions(node: &Wasmlet) -> Vec<(u64, String)> {
    let mut sets: Vec<ReplicaSet> = node.client().list(Some("default")).await.unwrap_or_default();
    sets.sort_by_key(ReplicaSet::revision);
    sets.iter()
        .map(|rs| {
            (
                rs.revision(),
                rs.spec.template.spec.containers.first().map(|c| c.image.clone()).unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_under_load_fails_nothing_and_undo_brings_the_old_module_back() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let client = node.client();
    deploy_example(&node, "hello_http", "web", 3).await?;
    let other = client.upload_module(std::fs::read(example("misbehave"))?).await?.metadata.name;
    node.wasmctl_ok(&["rollout", "status", "deployment/web", "--timeout", "60s"]);
    let first = eventually(Duration::from_secs(10), "revision 1", || async {
        let r = revisions(&node).await;
        (r.len() == 1).then_some(r)
    })
    .await?;
    assert_eq!(first[0].0, 1);
    let hello = first[0].1.clone();

    // Pods as they are created, from here on.
    let listed = client.get_path("/api/v1/namespaces/default/pods").await?;
    let rv = listed["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let watch = reqwest::Client::new()
        .get(format!("{}/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}", node.api))
        .bearer_auth(&node.token)
        .send()
        .await?;
    // A new module under load: no request fails on the way.
    let load = {
        let proxy = node.proxy.clone();
        tokio::spawn(async move { steady_load(&proxy, "web", 4, Duration::from_secs(6)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut d: Deployment = client.get(Some("default"), "web").await?;
    d.spec.template.spec.containers[0].image = format!("sha256:{other}");
    client.update(&d).await?;
    let status = node.wasmctl_ok(&["rollout", "status", "deployment/web", "--timeout", "60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let load = load.await?;
    assert!(load.failed.is_empty(), "failed during the rollout: {:?}", load.failed.first());
    assert!(load.ok > 100, "{} requests", load.ok);
    assert_eq!(revisions(&node).await, [(1, hello.clone()), (2, format!("sha256:{other}"))]);
    let history = node.wasmctl_ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains("REVISION") && history.lines().count() == 4, "{history}");
    // Each new pod was created controlled by the new revision's ReplicaSet (not adopted
    // later), though that ReplicaSet was made in the same pass.
    let rs2: Vec<ReplicaSet> = client.list(Some("default")).await?;
    let rs2 = rs2.iter().find(|rs| rs.revision() == 2).and_then(|rs| rs.metadata.uid.clone());
    for pod in added_pods(watch, 3).await? {
        let controller = pod.metadata.owner_references.iter().find(|o| o.controller == Some(true));
        assert_eq!(
            controller.map(|c| (c.kind.as_str(), Some(c.uid.clone()))),
            Some(("ReplicaSet", rs2.clone())),
            "{}",
            pod.metadata.name
        );
    }
    let d: Deployment = client.get(Some("default"), "web").await?;
    let progressing = d.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Progressing"));
    assert_eq!(progressing.and_then(|c| c.reason.as_deref()), Some("NewReplicaSetAvailable"));

    // Undo to a revision that does not exist: a clear error, nothing changed.
    let out = node.wasmctl(&["rollout", "undo", "deployment/web", "--to-revision", "9"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unable to find specified revision 9"));
    // Undo: hello again, its revision renumbered 3, served by hello pods.
    node.wasmctl_ok(&["rollout", "undo", "deployment/web"]);
    node.wasmctl_ok(&["rollout", "status", "deployment/web", "--timeout", "60s"]);
    eventually(Duration::from_secs(20), "revision 3 is hello's", || async {
        let r = revisions(&node).await;
        (r == [(2, format!("sha256:{other}")), (3, hello.clone())]).then_some(())
    })
    .await?;
    let answer = wasmkube_e2e::proxy_get(&node.proxy, "web", "/", &[]).await;
    assert!(answer.body.contains("Hello from wasmkube"), "{}", answer.body);
    // Each pod is controlled by its revision's ReplicaSet, as Kubernetes' are.
    let sets: Vec<ReplicaSet> = client.list(Some("default")).await?;
    let pods: Vec<wasmkube_api::Pod> = client.list(Some("default")).await?;
    assert_eq!(pods.len(), 3);
    for pod in &pods {
        let controller = pod.metadata.owner_references.iter().find(|o| o.controller == Some(true));
        let rs = controller
            .and_then(|c| sets.iter().find(|rs| rs.metadata.uid.as_deref() == Some(c.uid.as_str())));
        let rs = rs.ok_or_else(|| anyhow::anyhow!("{} has no ReplicaSet controller", pod.metadata.name))?;
        assert_eq!(
            (rs.revision(), rs.template_hash()),
            (3, pod.metadata.labels.get("pod-template-hash").map(String::as_str))
        );
    }
    // A pod whose controller is not its ReplicaSet (as a pod made before pods had one) is
    // adopted by it again.
    let d: Deployment = client.get(Some("default"), "web").await?;
    let legacy = eventually(Duration::from_secs(10), "a pod with its Deployment as controller", || async {
        // Read afresh: its node may have written its status since.
        let mut pod: wasmkube_api::Pod = client.get(Some("default"), &pods[0].metadata.name).await.ok()?;
        pod.metadata.owner_references = vec![wasmkube_api::OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            uid: d.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
        }];
        client.update(&pod).await.ok()
    })
    .await?;
    eventually(Duration::from_secs(10), "adopted by its ReplicaSet", || async {
        let pod: wasmkube_api::Pod = client.get(Some("default"), &legacy.metadata.name).await.ok()?;
        let controller = pod.metadata.owner_references.iter().find(|o| o.controller == Some(true))?;
        (controller.kind == "ReplicaSet" && pod.metadata.uid == legacy.metadata.uid).then_some(())
    })
    .await?;

    // ReplicaSets are the controller's; and they go with their Deployment.
    let refused =
        client.post_path("/apis/apps/v1/namespaces/default/replicasets", &serde_json::json!({})).await;
    assert_eq!(refused.err().and_then(|e| e.code()), Some(405));
    node.wasmctl_ok(&["delete", "deployment", "web"]);
    eventually(Duration::from_secs(20), "its ReplicaSets deleted", || async {
        revisions(&node).await.is_empty().then_some(())
    })
    .await?;

    // Made again at once (an old ReplicaSet of the same name may still be there when the
    // new one is made): one revision, owned by the new Deployment, controlling its pods.
    let web = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": hello}]}}}});
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    client.post_path(deployments, &web).await?;
    node.wasmctl_ok(&["delete", "deployment", "web"]);
    client.post_path(deployments, &web).await?;
    let d: Deployment = client.get(Some("default"), "web").await?;
    eventually(Duration::from_secs(20), "the new Deployment's revision controls its pods", || async {
        let sets: Vec<ReplicaSet> = client.list(Some("default")).await.ok()?;
        let pods: Vec<wasmkube_api::Pod> = client.list(Some("default")).await.ok()?;
        let [rs] = sets.as_slice() else { return None };
        let owned = rs.metadata.owner_references.iter().any(|o| Some(&o.uid) == d.metadata.uid.as_ref());
        let controlled = pods.iter().filter(|p| {
            p.metadata
                .owner_references
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == rs.metadata.uid.as_ref())
        });
        (owned && rs.revision() == 1 && pods.len() == 3 && controlled.count() == 3).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_that_never_becomes_ready_is_rolled_back_while_the_old_pods_serve() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let client = node.client();
    let digest = client.upload_module(std::fs::read(example("misbehave"))?).await?.metadata.name;
    let deployment = |ready_path: &str| {
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "guarded"},
            "spec": {"replicas": 2, "progressDeadlineSeconds": 3,
                     "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "selector": {"matchLabels": {"app": "guarded"}},
                     "template": {"metadata": {"labels": {"app": "guarded"}},
                                  "spec": {"containers": [{"name": "app", "image": format!("sha256:{digest}"),
                                           "readinessProbe": {"httpGet": {"path": ready_path}, "periodSeconds": 1}}]}}}})
    };
    client.post_path("/apis/apps/v1/namespaces/default/deployments", &deployment("/status/200")).await?;
    let service = serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "guarded"},
                                     "spec": {"selector": {"app": "guarded"}}});
    client.post_path("/api/v1/namespaces/default/services", &service).await?;
    node.wasmctl_ok(&["rollout", "status", "deployment/guarded", "--timeout", "60s"]);

    // A revision whose pods never pass readiness, under load: rolled back after its 3 s.
    let load = {
        let proxy = node.proxy.clone();
        tokio::spawn(async move { steady_load(&proxy, "guarded", 4, Duration::from_secs(10)).await })
    };
    let mut d: Deployment = client.get(Some("default"), "guarded").await?;
    let bad: Deployment = serde_json::from_value(deployment("/status/500"))?;
    d.spec.template = bad.spec.template;
    client.update(&d).await?;
    let rolled_back = eventually(Duration::from_secs(20), "the DeploymentRollback event", || async {
        let events: Vec<wasmkube_api::Event> = node.client().list(Some("default")).await.ok()?;
        events.into_iter().find(|e| e.reason == "DeploymentRollback")
    })
    .await?;
    assert!(rolled_back.message.contains("to revision 1"), "{}", rolled_back.message);
    let d: Deployment = client.get(Some("default"), "guarded").await?;
    let probe = d.spec.template.spec.containers[0].readiness_probe.as_ref().and_then(|p| p.http_get.as_ref());
    assert_eq!(
        probe.and_then(|g| g.path.as_deref()),
        Some("/status/200"),
        "the template is the good one again"
    );
    node.wasmctl_ok(&["rollout", "status", "deployment/guarded", "--timeout", "60s"]);
    let load = load.await?;
    assert!(load.failed.is_empty(), "the old pods served throughout: {:?}", load.failed.first());
    // The good revision is the newest now; the bad one stays in the history.
    let numbers: Vec<u64> = revisions(&node).await.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [2, 3]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_deployment_scales_but_rolls_out_nothing_until_resumed() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let client = node.client();
    deploy_example(&node, "hello_http", "held", 2).await?;
    node.wasmctl_ok(&["rollout", "status", "deployment/held", "--timeout", "60s"]);
    node.wasmctl_ok(&["rollout", "pause", "deployment/held"]);
    let other = client.upload_module(std::fs::read(example("misbehave"))?).await?.metadata.name;
    let mut d: Deployment = client.get(Some("default"), "held").await?;
    d.spec.template.spec.containers[0].image = format!("sha256:{other}");
    d.spec.replicas = 3;
    client.update(&d).await?;
    // Scaled, on the revision it was at.
    eventually(Duration::from_secs(20), "3 pods of revision 1", || async {
        let pods: Vec<wasmkube_api::Pod> = node.client().list(Some("default")).await.ok()?;
        let images: Vec<&str> = pods.iter().map(|p| p.spec.containers[0].image.as_str()).collect();
        (images.len() == 3 && !images.iter().any(|i| i.ends_with(&other))).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(revisions(&node).await.len(), 1, "no new revision while paused");
    node.wasmctl_ok(&["rollout", "resume", "deployment/held"]);
    node.wasmctl_ok(&["rollout", "status", "deployment/held", "--timeout", "60s"]);
    let pods: Vec<wasmkube_api::Pod> = client.list(Some("default")).await?;
    assert!(pods.iter().all(|p| p.spec.containers[0].image.ends_with(&other)), "rolled out once resumed");
    assert_eq!(revisions(&node).await.len(), 2);
    Ok(())
}
