//! Every name Herald reads or writes on objects it does not own: annotations, labels, the load-balancer class,
//! Lease names. One place, so the agent, the docs and the tests agree.

/// The API group of Herald's custom resources.
pub const GROUP: &str = "herald.dev";
/// The version of Herald's custom resources.
pub const VERSION: &str = "v1alpha1";

/// `spec.loadBalancerClass` of the Services Herald handles (and class-less ones with `--default-class`).
pub const LOAD_BALANCER_CLASS: &str = "herald.dev/lb";

// ===== Service annotations a user writes =====

/// Pool to allocate from: `herald.dev/eip: <eip name>`.
pub const ANNOTATION_EIP: &str = "herald.dev/eip";
/// Specific IPs: `herald.dev/ips: ip[,ip]`, at most one per family.
pub const ANNOTATION_IPS: &str = "herald.dev/ips";
/// Services with the same key may share an IP when their ports do not overlap.
pub const ANNOTATION_SHARING_KEY: &str = "herald.dev/sharing-key";

// ===== Service annotations Herald writes =====

/// The Eip an allocated IP came from (together with `status.loadBalancer.ingress`, the source of truth).
pub const ANNOTATION_ALLOCATED_FROM: &str = "herald.dev/allocated-from";
/// The node(s) currently announcing the Service's IPs, e.g. `192.0.2.10=node-a` (L2) — informational.
pub const ANNOTATION_ANNOUNCED_BY: &str = "herald.dev/announced-by";

// ===== Compatibility: Service annotations of the load balancers users migrate from =====

/// OpenELB: pool name.
pub const OPENELB_ANNOTATION_EIP: &str = "eip.openelb.kubesphere.io/v1alpha2";
/// OpenELB: specific IP (it wins over `spec.loadBalancerIP` there; here after Herald's and MetalLB's keys).
pub const OPENELB_ANNOTATION_IP: &str = "eip.openelb.kubesphere.io/v1alpha1";
/// OpenELB: marks a Service as handled by OpenELB (`openelb`).
pub const OPENELB_ANNOTATION_LB: &str = "lb.kubesphere.io/v1alpha1";
/// MetalLB: specific IPs.
pub const METALLB_ANNOTATION_IPS: &str = "metallb.io/loadBalancerIPs";
/// MetalLB: sharing key.
pub const METALLB_ANNOTATION_SHARING: &str = "metallb.io/allow-shared-ip";
/// MetalLB: pool name.
pub const METALLB_ANNOTATION_POOL: &str = "metallb.io/address-pool";
/// MetalLB before v0.14.9 (still read by MetalLB, which prefers the `metallb.io/` keys): specific IPs.
pub const METALLB_LEGACY_ANNOTATION_IPS: &str = "metallb.universe.tf/loadBalancerIPs";
/// MetalLB before v0.14.9: sharing key.
pub const METALLB_LEGACY_ANNOTATION_SHARING: &str = "metallb.universe.tf/allow-shared-ip";
/// MetalLB before v0.14.9: pool name.
pub const METALLB_LEGACY_ANNOTATION_POOL: &str = "metallb.universe.tf/address-pool";

/// Every Service annotation Herald reads: what an agent's cache of Services keeps (the others, often large, go).
pub const SERVICE_ANNOTATIONS: [&str; 13] = [
    ANNOTATION_EIP,
    ANNOTATION_IPS,
    ANNOTATION_SHARING_KEY,
    ANNOTATION_ALLOCATED_FROM,
    ANNOTATION_ANNOUNCED_BY,
    OPENELB_ANNOTATION_EIP,
    OPENELB_ANNOTATION_IP,
    METALLB_ANNOTATION_IPS,
    METALLB_ANNOTATION_SHARING,
    METALLB_ANNOTATION_POOL,
    METALLB_LEGACY_ANNOTATION_IPS,
    METALLB_LEGACY_ANNOTATION_SHARING,
    METALLB_LEGACY_ANNOTATION_POOL,
];

// ===== Node labels =====

/// Nodes with this label never announce (a Kubernetes well-known label).
pub const LABEL_EXCLUDE_FROM_LB: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

// ===== Leases =====

/// Label on every Lease Herald writes: `node` or `ip` (the allocator Lease carries none). Agents watch on it.
pub const LABEL_LEASE_KIND: &str = "herald.dev/lease";
/// Label on an IP Lease naming the IP (with `.`/`:` as `-`, as in the Lease name).
pub const LABEL_LEASE_IP: &str = "herald.dev/ip";
/// Label on an IP Lease naming the Eip the IP belongs to.
pub const LABEL_LEASE_EIP: &str = "herald.dev/eip";
/// Label on a node Lease naming the node.
pub const LABEL_LEASE_NODE: &str = "herald.dev/node";
/// Name of the allocator's leader Lease (in the agent's namespace).
pub const ALLOCATOR_LEASE: &str = "herald-allocator";
/// Prefix of node-liveness Lease names: `herald-node-<node>`.
pub const NODE_LEASE_PREFIX: &str = "herald-node-";
/// Prefix of per-IP ownership Lease names: `herald-ip-<ip>` (built by `herald_election::naming::ip_lease_name`).
pub const IP_LEASE_PREFIX: &str = "herald-ip-";
/// Field manager / event reporter name.
pub const CONTROLLER_NAME: &str = "herald";
