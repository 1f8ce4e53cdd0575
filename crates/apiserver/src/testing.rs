//! A one-voter cluster over a real RocksDB for this crate's tests.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use wasmkube_raft::{ClusterHandle, DriverConfig, NoPeers};
use wasmkube_store::{ObjectStore, RaftLog, StoreError};

/// A one-voter cluster in `dir`, led by this node. Dropping it stops the driver and waits
/// (at most 5 s) until its storage is closed: a raft thread still writing while the test
/// process exits would abort it in RocksDB's teardown.
pub(crate) struct OneVoter {
    pub cluster: ClusterHandle,
    pub store: Arc<ObjectStore>,
    done: Option<oneshot::Receiver<Result<(), StoreError>>>,
}

impl OneVoter {
    pub async fn start(dir: &Path) -> OneVoter {
        let db = wasmkube_store::open_db(dir).expect("db");
        let log = RaftLog::open(db.clone()).expect("log");
        let store = Arc::new(ObjectStore::open(db).expect("store"));
        let (cluster, done) =
            wasmkube_raft::start(DriverConfig::default(), log, store.clone(), Box::new(NoPeers))
                .expect("start");
        let mut leader = cluster.leader();
        tokio::time::timeout(Duration::from_secs(5), leader.wait_for(|s| s.is_leader))
            .await
            .expect("leader within 5 s")
            .expect("driver alive");
        OneVoter { cluster, store, done: Some(done) }
    }
}

impl Drop for OneVoter {
    fn drop(&mut self) {
        self.cluster.stop();
        let Some(mut done) = self.done.take() else { return };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(done.try_recv(), Err(oneshot::error::TryRecvError::Empty)) && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
