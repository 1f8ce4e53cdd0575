//! Outlier ejection, as Envoy's: a node whose proxy could not be reached (connection refused
//! or reset, no answer) is tried last for a few seconds, so the requests behind the one that
//! failed go to pods that answer. The node controller takes a lost node's pods out of every
//! table within about a second; this covers the moments before, and a node that merely
//! hiccuped is tried again soon.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an unreachable node is tried last.
pub const EJECT_FOR: Duration = Duration::from_secs(3);

#[derive(Default)]
pub struct Ejections {
    until: Mutex<HashMap<String, Instant>>,
}

impl Ejections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node at `proxy_url` failed a request: try it last for `EJECT_FOR`.
    pub fn eject(&self, proxy_url: &str) {
        let mut until = self.lock();
        let now = Instant::now();
        until.retain(|_, t| *t > now);
        until.insert(proxy_url.to_string(), now + EJECT_FOR);
    }

    /// The node at `proxy_url` answered: it is back.
    pub fn restore(&self, proxy_url: &str) {
        let mut until = self.lock();
        if !until.is_empty() {
            until.remove(proxy_url);
        }
    }

    /// Whether the node at `proxy_url` is to be tried last now.
    #[cfg(test)]
    pub fn is_ejected(&self, proxy_url: &str) -> bool {
        let until = self.lock();
        !until.is_empty() && until.get(proxy_url).is_some_and(|t| *t > Instant::now())
    }

    /// The nodes (proxy URLs) ejected now; none in the common case, for one lock.
    pub fn current(&self) -> Vec<String> {
        let mut until = self.lock();
        if until.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        until.retain(|_, t| *t > now);
        until.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_node_is_tried_last_until_it_answers() {
        let e = Ejections::default();
        assert!(e.current().is_empty() && !e.is_ejected("http://a"));
        e.eject("http://a");
        assert_eq!(e.current(), ["http://a"]);
        assert!(e.is_ejected("http://a") && !e.is_ejected("http://b"));
        e.restore("http://a");
        assert!(!e.is_ejected("http://a"));
    }
}
