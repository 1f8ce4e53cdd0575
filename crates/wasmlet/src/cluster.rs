//! This node's place in the cluster: founding one, joining one with a join token, or coming
//! back as the member it was; and keeping the peer transport pointed at the current members.

use std::collections::BTreeSet;
use std::future::Future;

use anyhow::{Context, bail};
use rand::Rng;
use wasmkube_raft::{ClusterHandle, Member, PeerTransport};

use crate::bootstrap::DataDir;
use wasmkube_apiserver::http::{JoinAnswer, JoinRequest};

/// The members a joining node was told about, kept for its restarts.
const SEED_MEMBERS: &str = "seed-members.json";

/// Who this node is in the raft group, and the cluster-wide secrets it holds.
pub struct Identity {
    pub node_id: u64,
    pub peer_token: String,
    /// The founding membership, when this node founds the cluster (empty otherwise).
    pub initial_voters: Vec<Member>,
    /// Members to talk to before this node has replayed the log (from the join answer).
    pub seed_members: Vec<Member>,
    /// A member coming back (its identity was on disk), not a new one.
    pub restarted: bool,
}

/// Decides this node's identity: as before (its id is on disk), by joining `join`, or by
/// founding a new cluster.
pub async fn establish(
    data: &DataDir,
    name: &str,
    url: &str,
    join: Option<(&str, &str)>,
) -> anyhow::Result<Identity> {
    if let Some(node_id) = data.read("node.id")? {
        if join.is_some() {
            tracing::info!("this data dir already belongs to a cluster; --join is ignored");
        }
        let node_id = node_id.parse().context("node.id in the data dir is not a number")?;
        let peer_token = data.read("peer.token")?.context("peer.token is missing from the data dir")?;
        // The members the join answer named: what a node stopped before it replayed the log
        // has to reach the cluster with.
        let seed_members = match data.read(SEED_MEMBERS)? {
            Some(json) => serde_json::from_str(&json).context("seed-members.json in the data dir")?,
            None => Vec::new(),
        };
        return Ok(Identity { node_id, peer_token, initial_voters: vec![], seed_members, restarted: true });
    }
    match join {
        Some((leader, token)) => {
            let answer = request_join(
                leader,
                &JoinRequest { name: name.into(), url: url.into(), token: token.into() },
            )
            .await?;
            tracing::info!(node_id = answer.node_id, role = %answer.role, "joined the cluster");
            data.write_private(SEED_MEMBERS, &serde_json::to_string(&answer.members)?)?;
            data.write_private("admin.token", &answer.admin_token)?;
            data.write_private("peer.token", &answer.peer_token)?;
            data.write_private("node.id", &answer.node_id.to_string())?;
            Ok(Identity {
                node_id: answer.node_id,
                peer_token: answer.peer_token,
                initial_voters: vec![],
                seed_members: answer.members,
                restarted: false,
            })
        }
        None => {
            // node.id is written only once the founding configuration is on disk (see
            // `remember`): a crash before that simply founds again.
            let peer_token = hex::encode(rand::rng().random::<[u8; 32]>());
            data.write_private("peer.token", &peer_token)?;
            let founder = Member { id: 1, name: name.into(), url: url.into() };
            Ok(Identity {
                node_id: 1,
                peer_token,
                initial_voters: vec![founder],
                seed_members: vec![],
                restarted: false,
            })
        }
    }
}

/// Records this node's id once it is a member on disk.
pub fn remember(data: &DataDir, identity: &Identity) -> anyhow::Result<()> {
    data.write_private("node.id", &identity.node_id.to_string())
}

async fn request_join(leader: &str, request: &JoinRequest) -> anyhow::Result<JoinAnswer> {
    let endpoint = format!("{}/cluster/v1/join", leader.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&endpoint)
        .json(request)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .with_context(|| format!("cannot reach {leader} to join the cluster"))?;
    if !response.status().is_success() {
        let code = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["message"].as_str().unwrap_or("no reason given");
        bail!("the cluster at {leader} refused the join ({code}): {message}");
    }
    response.json().await.context("the join answer could not be read")
}

/// Keeps `transport` sending to every current member but this node, until `shutdown`.
pub async fn sync_peers(
    transport: PeerTransport,
    cluster: ClusterHandle,
    seeds: Vec<Member>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let me = cluster.node_id();
    let mut changes = cluster.membership_changes();
    let mut known: BTreeSet<u64> = BTreeSet::new();
    for m in seeds.iter().filter(|m| m.id != me) {
        transport.set_peer(m.id, &m.url);
        known.insert(m.id);
    }
    loop {
        let members = changes.borrow_and_update().members.clone();
        if !members.is_empty() {
            for m in members.values().filter(|m| m.id != me && !m.url.is_empty()) {
                transport.set_peer(m.id, &m.url);
            }
            for gone in known.iter().filter(|id| !members.contains_key(id)) {
                transport.remove_peer(*gone);
            }
            known = members.keys().copied().filter(|id| *id != me).collect();
        }
        tokio::select! {
            _ = &mut shutdown => return,
            r = changes.changed() => if r.is_err() { return },
        }
    }
}

/// After a restart, makes sure the cluster reaches this node where it listens now: when the
/// membership on disk records another address (the node restarted with another `--listen`) or
/// none (it was stopped before it learned its own entry), it asks the other members in turn,
/// then `seeds` (the `--join` address, the members the join answer named; any of them relays
/// to the leader), until one records the address or `shutdown`.
pub async fn follow_address(
    cluster: ClusterHandle,
    name: String,
    url: String,
    admin_token: String,
    seeds: Vec<String>,
    shutdown: impl Future<Output = ()>,
) {
    let me = cluster.node_id();
    let recorded = cluster.membership().members.get(&me).map(|m| m.url.clone());
    if recorded.as_deref() == Some(url.as_str()) {
        return;
    }
    tracing::info!(from = ?recorded, to = %url, "telling the cluster where this node listens");
    tokio::pin!(shutdown);
    let http = reqwest::Client::new();
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        let mut contacts: Vec<String> = cluster
            .membership()
            .members
            .into_values()
            .filter(|m| m.id != me && !m.url.is_empty())
            .map(|m| m.url)
            .collect();
        contacts.extend(seeds.iter().filter(|s| **s != url).cloned());
        for contact in contacts {
            let sent = http
                .put(format!("{}/cluster/v1/members/{name}", contact.trim_end_matches('/')))
                .bearer_auth(&admin_token)
                .json(&serde_json::json!({"url": url}))
                .timeout(std::time::Duration::from_secs(15))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(url = %url, "the cluster reaches this node at its address");
                    return;
                }
                Ok(r) => tracing::warn!(%contact, status = %r.status(), "the address was refused"),
                Err(e) => tracing::debug!(%contact, "cannot reach a member to record the address: {e}"),
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    }
}
