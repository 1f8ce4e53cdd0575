//! `/cluster/v1`: join tokens, joining, and the member list.
//!
//! Membership changes are decided on the leader; a node that is not the leader forwards the
//! request there as it came (same body, same credentials) and relays the answer.

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wasmkube_raft::{Member, Membership, MembershipChange};
use wasmkube_store::ObjectKey;

use super::{ApiError, ApiState};

/// What a node asks when it joins.
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub name: String,
    pub url: String,
    pub token: String,
}

/// What the leader answers: the new member's id and role, and the cluster's secrets.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinAnswer {
    pub node_id: u64,
    pub role: String,
    pub peer_token: String,
    pub admin_token: String,
    pub members: Vec<Member>,
}

const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRequest {
    ttl_seconds: Option<u64>,
}

/// `POST /cluster/v1/join-tokens`: a new join token, valid for `ttlSeconds` (default 24 h).
/// Only a digest of the secret is stored.
pub async fn create_join_token(State(state): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let request: TokenRequest = if body.is_empty() {
        TokenRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("not a token request: {e}")))?
    };
    let ttl = request.ttl_seconds.map_or(DEFAULT_TOKEN_TTL, Duration::from_secs);
    let id = hex::encode(rand::rng().random::<[u8; 4]>());
    let secret = hex::encode(rand::rng().random::<[u8; 24]>());
    let expires = humantime::format_rfc3339_seconds(SystemTime::now() + ttl).to_string();
    let digest = hex::encode(Sha256::digest(secret.as_bytes()));
    state.parts().objects.write(crate::Write::join_token(&id, &digest, &expires)).await?;
    Ok((StatusCode::CREATED, Json(json!({"token": format!("{id}.{secret}"), "expiresAt": expires})))
        .into_response())
}

/// `GET /cluster/v1/members`: every member with its role, and the leader.
pub async fn members(State(state): State<ApiState>) -> Json<Value> {
    let cluster = &state.parts().cluster;
    let leader = cluster.leader_id();
    let membership = cluster.membership();
    let members: Vec<Value> = membership
        .voters
        .iter()
        .chain(&membership.learners)
        .map(|id| {
            let m = membership.members.get(id).cloned().unwrap_or(Member { id: *id, ..Member::default() });
            let role = if *id == leader {
                "leader"
            } else if membership.voters.contains(id) {
                "voter"
            } else {
                "learner"
            };
            json!({"id": m.id, "name": m.name, "url": m.url, "role": role})
        })
        .collect();
    // This node's own raft progress: where its log starts (it moves up with compaction, or
    // jumps when a snapshot is installed) and what it has applied.
    let this = json!({
        "id": cluster.node_id(),
        "appliedIndex": cluster.store().applied_index(),
        "logFirstIndex": cluster.log_first_index(),
    });
    Json(json!({"leader": leader, "members": members, "self": this}))
}

/// `POST /cluster/v1/join`: adds the caller as a voter (while the cluster has fewer than
/// `--voters`) or a learner, if its join token is valid and its name and URL are free.
pub async fn join(State(state): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let cluster = &state.parts().cluster;
    let request: JoinRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("not a join request: {e}")))?;
    if request.name.is_empty() || request.url.is_empty() {
        return Err(ApiError::bad_request("a join request names the node and the URL its peers reach it at"));
    }
    let _one_at_a_time = state.inner.join_lock.lock().await;
    check_join_token(&state, &request.token)?;
    let membership = cluster.membership();
    if membership.members.values().any(|m| m.name == request.name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("a node named {:?} is already a member", request.name),
        ));
    }
    if membership.members.values().any(|m| m.url == request.url) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("a member already listens at {}", request.url),
        ));
    }
    let id = membership
        .voters
        .iter()
        .chain(&membership.learners)
        .chain(membership.members.keys())
        .max()
        .copied()
        .unwrap_or(0)
        + 1;
    let member = Member { id, name: request.name.clone(), url: request.url.clone() };
    let (change, role) = if membership.voters.len() < state.parts().voters {
        (MembershipChange::AddVoter(member.clone()), "voter")
    } else {
        (MembershipChange::AddLearner(member.clone()), "learner")
    };
    cluster.change_membership(change).await?;
    tracing::info!(node = %request.name, id, role, "node joined");
    let mut members: Vec<Member> = membership.members.into_values().collect();
    members.push(member);
    Ok(Json(JoinAnswer {
        node_id: id,
        role: role.into(),
        peer_token: state.parts().peer_token.clone(),
        admin_token: state.parts().admin_token.clone(),
        members,
    })
    .into_response())
}

/// `DELETE /cluster/v1/members/{name}`: removes a member; a learner takes the place of a
/// removed voter.
pub async fn remove_member(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cluster = &state.parts().cluster;
    let _one_at_a_time = state.inner.join_lock.lock().await;
    let membership = cluster.membership();
    let member = member_named(&membership, &name)?;
    if member.id == cluster.node_id() {
        // The leader leaves by first handing leadership to another voter, which then
        // removes it.
        let Some(successor) = membership.voters.iter().copied().find(|id| *id != member.id) else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                "the only voter cannot leave its own cluster",
            ));
        };
        cluster.transfer_leadership(successor).await?;
        let path = format!("/cluster/v1/members/{name}");
        drop(_one_at_a_time);
        return forward_to_leader(&state, Method::DELETE, &path, &headers, Bytes::new()).await;
    }
    let was_voter = membership.voters.contains(&member.id);
    cluster.change_membership(MembershipChange::Remove(member.id)).await?;
    let after = cluster.membership();
    if was_voter
        && after.voters.len() < state.parts().voters
        && let Some(learner) = after.learners.first().and_then(|id| after.members.get(id)).cloned()
    {
        tracing::info!(node = %learner.name, "promoting a learner to voter");
        cluster.change_membership(MembershipChange::AddVoter(learner)).await?;
    }
    Ok(Json(json!({"removed": member.name})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressUpdate {
    url: String,
}

/// `PUT /cluster/v1/members/{name}` with `{"url": …}`: a member now listens elsewhere (it
/// restarted with another `--listen`). The member is added again with its new address — a
/// configuration change that leaves the voters and learners as they are — so every replica
/// sends to the new address from the moment it applies it.
pub async fn update_member(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let cluster = &state.parts().cluster;
    let update: AddressUpdate = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("not an address update: {e}")))?;
    if !(update.url.starts_with("http://") || update.url.starts_with("https://")) {
        return Err(ApiError::bad_request(format!("{:?} is not an http(s) URL", update.url)));
    }
    let _one_at_a_time = state.inner.join_lock.lock().await;
    let membership = cluster.membership();
    let member = member_named(&membership, &name)?;
    if let Some(other) = membership.members.values().find(|m| m.url == update.url && m.id != member.id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("member {} already listens at {}", other.name, update.url),
        ));
    }
    if member.url != update.url {
        let moved = Member { url: update.url.clone(), ..member.clone() };
        let change = if membership.voters.contains(&member.id) {
            MembershipChange::AddVoter(moved)
        } else {
            MembershipChange::AddLearner(moved)
        };
        cluster.change_membership(change).await?;
        tracing::info!(node = %name, from = %member.url, to = %update.url, "member moved");
    }
    Ok(Json(json!({"name": name, "url": update.url})).into_response())
}

fn member_named(membership: &Membership, name: &str) -> Result<Member, ApiError> {
    membership
        .members
        .values()
        .find(|m| m.name == name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no member is named {name:?}")))
}

fn check_join_token(state: &ApiState, token: &str) -> Result<(), ApiError> {
    let refused =
        || ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "the join token is invalid or expired");
    let (id, secret) = token.split_once('.').ok_or_else(refused)?;
    let stored = state.parts().store.get(&ObjectKey::new("JoinToken", None, id))?.ok_or_else(refused)?;
    let want = stored["spec"]["secretSha256"].as_str().unwrap_or("");
    let got = hex::encode(Sha256::digest(secret.as_bytes()));
    if !bool::from(subtle::ConstantTimeEq::ct_eq(got.as_bytes(), want.as_bytes())) {
        return Err(refused());
    }
    let expires = stored["spec"]["expiresAt"].as_str().and_then(|t| humantime::parse_rfc3339(t).ok());
    if expires.is_none_or(|t| t <= SystemTime::now()) {
        return Err(refused());
    }
    Ok(())
}

/// Membership changes are decided on the leader: on any other node, the request is relayed
/// there as it came (same body, same credentials) and the answer relayed back.
pub async fn on_leader(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.parts().cluster.is_leader() {
        return Ok(next.run(req).await);
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_MEMBERSHIP_BODY)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request: {e}")))?;
    let path = parts.uri.path_and_query().map_or(parts.uri.path(), |p| p.as_str());
    forward_to_leader(&state, parts.method, path, &parts.headers, body).await
}

/// Membership requests are small JSON documents.
const MAX_MEMBERSHIP_BODY: usize = 64 << 10;

/// Relays a membership request to the leader and its answer back.
async fn forward_to_leader(
    state: &ApiState,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let cluster = &state.parts().cluster;
    let Some(url) = cluster.leader_member().await.map(|m| m.url) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "no leader is known yet; retry shortly",
        ));
    };
    let mut request = state
        .parts()
        .peer_http
        .request(method, format!("{}{path}", url.trim_end_matches('/')))
        .timeout(Duration::from_secs(30))
        .body(body);
    for name in [http::header::AUTHORIZATION, http::header::CONTENT_TYPE] {
        if let Some(v) = headers.get(&name) {
            request = request.header(name, v);
        }
    }
    let answer = request.send().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("the leader at {url} is unreachable: {e}"),
        )
    })?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes =
        answer.bytes().await.map_err(|e| ApiError::internal(format!("reading the leader's answer: {e}")))?;
    Ok((status, [(http::header::CONTENT_TYPE, "application/json")], bytes).into_response())
}
