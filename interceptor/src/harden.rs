//! The daemon side of the socket guards: starts the DNS proxy, writes the policy's
//! `sockets:` / `dns:` parts into the kernel maps before attach, and keeps them current
//! (policy reloads, cgroups created below the guarded one) with a once-a-second re-apply.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    dns::{DnsError, DnsProxy},
    ebpf::{Applied, EbpfError, KernelPolicy, PacketGuard, UdpCallers},
    policy::{self, Policy},
    proxy::Shared,
};

/// How often the kernel maps are brought in line with the policy and the cgroup tree.
pub const REAPPLY_PERIOD: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum HardenError {
    #[error(transparent)]
    Dns(#[from] DnsError),
    #[error(transparent)]
    Ebpf(#[from] EbpfError),
}

pub struct Harden {
    kernel: Mutex<KernelPolicy>,
    dns: DnsProxy,
    shared: Arc<Shared>,
    last: Mutex<Applied>,
    packet: PacketGuard,
}

impl Harden {
    /// Starts the DNS proxy and fills the maps (call before attaching).
    pub async fn start(
        kernel: KernelPolicy,
        callers: UdpCallers,
        packet: PacketGuard,
        shared: Arc<Shared>,
    ) -> Result<Arc<Self>, HardenError> {
        let resolvers = policy::dns_resolvers(&shared.policy().dns());
        let dns = DnsProxy::start(&resolvers, shared.clone(), Arc::new(callers)).await?;
        let h = Arc::new(Harden {
            kernel: Mutex::new(kernel),
            dns,
            shared,
            last: Mutex::new(Applied::default()),
            packet,
        });
        let applied = h.apply()?;
        tracing::info!(
            default_socket_bits = applied.default_bits,
            udp_entries = applied.udp_entries,
            dns = ?applied.dns,
            "socket guards: raw/packet sockets, UDP and DNS follow the policy"
        );
        Ok(h)
    }

    /// Writes the current policy into the kernel maps.
    pub fn apply(&self) -> Result<Applied, EbpfError> {
        let policy: Arc<Policy> = self.shared.policy();
        let wanted = policy::dns_resolvers(&policy.dns());
        for r in &wanted {
            if !self.dns.listeners.iter().any(|(x, _)| x == r) {
                tracing::warn!(resolver = %r, "resolver added by a reload has no DNS proxy listener yet: DNS to it stays denied until the daemon restarts");
            }
        }
        let dns: Vec<(IpAddr, std::net::SocketAddr)> = self
            .dns
            .listeners
            .iter()
            .filter(|(r, _)| wanted.contains(r))
            .copied()
            .collect();
        let mut kernel = self.kernel.lock().unwrap_or_else(|e| e.into_inner());
        let applied = kernel.apply(
            &policy,
            &self.shared.cgroup_root,
            &self.shared.cgroup_top,
            &dns,
        )?;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = applied.clone();
        Ok(applied)
    }

    /// What the kernel maps hold now (for status).
    pub fn applied(&self) -> Applied {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// For `status`: the kernel maps' contents and how packet sockets are guarded.
    pub fn status_json(&self) -> serde_json::Value {
        let packet = match self.packet {
            PacketGuard::Lsm { active: true } => "lsm_cgroup socket_create (active)",
            PacketGuard::Lsm { active: false } => {
                "lsm_cgroup socket_create loaded, but the BPF LSM is not active (boot with lsm=...,bpf)"
            }
            PacketGuard::Unavailable => "not guarded by the interceptor (needs CAP_NET_RAW)",
        };
        serde_json::json!({ "applied": self.applied(), "packet_sockets": packet })
    }

    /// Re-applies every `REAPPLY_PERIOD` until the task is aborted.
    pub fn spawn_reapply(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let h = self.clone();
        tokio::spawn(async move {
            let mut previous = h.applied();
            loop {
                tokio::time::sleep(REAPPLY_PERIOD).await;
                // On a blocking thread: `block_in_place` would hand this worker's core to
                // another thread every period, moving the whole runtime between threads.
                let again = h.clone();
                let applied = match tokio::task::spawn_blocking(move || again.apply()).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "socket guard update panicked");
                        continue;
                    }
                };
                match applied {
                    Ok(a) if a != previous => {
                        tracing::info!(cgroups = ?a.cgroups, udp_entries = a.udp_entries, dns = ?a.dns, "socket guards updated");
                        previous = a;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "cannot update the socket guards; the previous kernel policy stays")
                    }
                }
            }
        })
    }
}
