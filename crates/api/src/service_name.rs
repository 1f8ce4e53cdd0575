//! The names a Service is addressed by — in a Host header at the proxy, or in a pod's own
//! outgoing request: `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`.

use crate::DEFAULT_NAMESPACE;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The Service a Host header names, in any of the forms, or `None` for a name that is not a
/// service address.
pub fn parse_host(host: &str) -> Option<ServiceName> {
    parse(host, false)
}

/// The Service a cluster DNS name names — only `svc.ns.svc` and `svc.ns.svc.cluster.local`,
/// which cannot be public host names (`hello.default` could be one).
pub fn parse_cluster_host(host: &str) -> Option<ServiceName> {
    parse(host, true)
}

fn parse(host: &str, cluster_only: bool) -> Option<ServiceName> {
    let host = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
    let parts: Vec<&str> = host.split('.').collect();
    let (name, namespace) = match parts.as_slice() {
        [name, ns, "svc"] | [name, ns, "svc", "cluster", "local"] => (*name, *ns),
        _ if cluster_only => return None,
        [name] => (*name, DEFAULT_NAMESPACE),
        [name, ns] => (*name, *ns),
        _ => return None,
    };
    if name.is_empty() || namespace.is_empty() {
        return None;
    }
    Some(ServiceName { namespace: namespace.to_string(), name: name.to_string() })
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str) -> Option<ServiceName> {
        Some(ServiceName { namespace: ns.into(), name: name.into() })
    }

    #[test]
    fn every_documented_form_resolves() {
        assert_eq!(parse_host("hello"), svc("default", "hello"));
        assert_eq!(parse_host("hello:8080"), svc("default", "hello"));
        assert_eq!(parse_host("hello.prod"), svc("prod", "hello"));
        assert_eq!(parse_host("hello.prod.svc"), svc("prod", "hello"));
        assert_eq!(parse_host("Hello.prod.svc.cluster.local."), svc("prod", "hello"));
        assert_eq!(parse_host("hello.prod.example.com"), None);
        assert_eq!(parse_host(".prod"), None);
    }

    #[test]
    fn cluster_names_are_only_the_svc_forms() {
        assert_eq!(parse_cluster_host("hello.prod.svc"), svc("prod", "hello"));
        assert_eq!(parse_cluster_host("api.prod.svc.cluster.local:443"), svc("prod", "api"));
        assert_eq!(parse_cluster_host("hello.default"), None);
        assert_eq!(parse_cluster_host("hello"), None);
        assert_eq!(parse_cluster_host("a.b.c.svc"), None);
        assert_eq!(parse_cluster_host("example.com"), None);
    }
}
