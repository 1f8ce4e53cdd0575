//! Content-addressed files for module bytes: `<dir>/<sha256 hex>.wasm`.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::StoreError;

pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        Ok(BlobStore { dir: dir.to_path_buf() })
    }

    /// The hex sha256 of `bytes`.
    pub fn digest(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    /// Stores `bytes` and returns their digest. Writing is atomic (temp file, fsync, rename).
    pub fn put(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let digest = Self::digest(bytes);
        let path = self.path(&digest);
        if path.exists() {
            return Ok(digest);
        }
        // A name of its own for every write: the same blob may be written by two tasks at
        // once (an upload and a copy from a peer), and neither may write into the other's file.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.dir.join(format!(".{digest}.{}.{n}.tmp", std::process::id()));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(digest)
    }

    /// Reads a blob back, verifying it still matches its digest.
    pub fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let bytes = match std::fs::read(self.path(digest)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if Self::digest(&bytes) != digest {
            return Err(StoreError::corrupt(format!("blob {digest}"), "content does not match its digest"));
        }
        Ok(Some(bytes))
    }

    /// Whether the blob is here (not verified: `get` verifies).
    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).exists()
    }

    pub fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.wasm"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writes_of_one_blob_never_mix() {
        let bytes: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let blobs = std::sync::Arc::new(BlobStore::open(dir.path()).expect("open"));
            let writers: Vec<_> = (0..6)
                .map(|_| {
                    let (blobs, bytes) = (blobs.clone(), bytes.clone());
                    std::thread::spawn(move || blobs.put(&bytes).expect("put"))
                })
                .collect();
            let digests: Vec<String> = writers.into_iter().map(|w| w.join().expect("writer")).collect();
            assert_eq!(blobs.get(&digests[0]).expect("intact").as_deref(), Some(&bytes[..]));
        }
    }

    #[test]
    fn put_get_and_detect_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = BlobStore::open(dir.path()).expect("open");
        let d = blobs.put(b"hello").expect("put");
        assert_eq!(d, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(blobs.get(&d).expect("get").as_deref(), Some(&b"hello"[..]));
        assert_eq!(blobs.get(&"0".repeat(64)).expect("get"), None);
        std::fs::write(blobs.path(&d), b"tampered").expect("write");
        assert!(blobs.get(&d).is_err());
    }
}
