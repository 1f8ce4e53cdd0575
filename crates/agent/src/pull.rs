//! Module bytes between nodes. Raft carries the Module object, not its bytes: a node that
//! lacks a module's blob fetches it by digest from a member that has it and verifies it on
//! arrival, as a kubelet pulls an image. `replicate` keeps a copy of every module on every
//! node, so a module survives the loss of the node it was uploaded to.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use wasmkube_raft::{ClusterHandle, Member, PEER_BLOBS_PATH, peer_get};
use wasmkube_store::BlobStore;

/// A module copy that takes longer than this has failed (the next member is asked).
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How often every module's blob is checked without a change (a failed copy is retried).
const RESYNC: Duration = Duration::from_secs(30);

pub struct BlobPuller {
    blobs: Arc<BlobStore>,
    cluster: ClusterHandle,
    http: reqwest::Client,
    peer_token: String,
    max_bytes: usize,
}

impl BlobPuller {
    /// Fetches with the cluster's `peer_token` through `http` (the node's peer client);
    /// refuses blobs larger than `max_bytes`.
    pub fn new(
        blobs: Arc<BlobStore>,
        cluster: ClusterHandle,
        peer_token: String,
        max_bytes: usize,
        http: reqwest::Client,
    ) -> Self {
        BlobPuller { blobs, cluster, http, peer_token, max_bytes }
    }

    /// This node's blobs.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Makes blob `digest` (hex sha256) present on this node, fetching it from the other
    /// members in turn when it is not.
    pub async fn ensure(&self, digest: &str) -> Result<(), String> {
        if self.blobs.contains(digest) {
            return Ok(());
        }
        let me = self.cluster.node_id();
        let members: Vec<Member> = self
            .cluster
            .membership()
            .members
            .into_values()
            .filter(|m| m.id != me && !m.url.is_empty())
            .collect();
        let mut failures = Vec::new();
        for member in members {
            match self.fetch(&member, digest).await {
                Ok(bytes) if BlobStore::digest(&bytes) == digest => {
                    self.blobs.put(&bytes).map_err(|e| format!("storing module sha256:{digest}: {e}"))?;
                    tracing::info!(digest, from = %member.name, bytes = bytes.len(), "copied a module from a peer");
                    return Ok(());
                }
                Ok(_) => failures.push(format!("{}: the bytes did not match the digest", member.name)),
                Err(e) => failures.push(format!("{}: {e}", member.name)),
            }
        }
        let tried =
            if failures.is_empty() { "no other member to ask".to_string() } else { failures.join("; ") };
        Err(format!("module sha256:{digest} is not on this node and no member could send it ({tried})"))
    }

    async fn fetch(&self, member: &Member, digest: &str) -> Result<Vec<u8>, String> {
        let url = format!("{}{PEER_BLOBS_PATH}/{digest}", member.url.trim_end_matches('/'));
        let me = self.cluster.node_id();
        peer_get(&self.http, &url, &self.peer_token, me, FETCH_TIMEOUT, self.max_bytes).await
    }
}

/// Copies every Module's bytes to this node, at once when a module is created and every
/// `RESYNC`, until `shutdown` resolves.
pub async fn replicate(puller: Arc<BlobPuller>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut changes = puller.cluster.store().subscribe_all();
    loop {
        let digests: Vec<String> = match puller.cluster.store().list("Module", None) {
            Ok((items, _)) => {
                items.iter().filter_map(|m| m["metadata"]["name"].as_str().map(str::to_string)).collect()
            }
            Err(e) => {
                tracing::error!("cannot list modules: {e}");
                Vec::new()
            }
        };
        for digest in digests.iter().filter(|d| !puller.blobs.contains(d)) {
            if let Err(e) = puller.ensure(digest).await {
                tracing::warn!("{e}; retrying in {RESYNC:?}");
            }
        }
        let resync = tokio::time::Instant::now() + RESYNC;
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep_until(resync) => break,
                r = changes.recv() => match r {
                    Ok(e) if e.concerns(&["Module"]) => break,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }
}
