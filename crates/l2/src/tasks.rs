//! The async shell: one task per interface owns its [`Responder`] and [`InterfaceSocket`]; handles talk to it over
//! a bounded channel. Every task is tracked and cancellable; on shutdown each withdraws everything (stops
//! answering, leaves its multicast groups) before it ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::counters::{Counters, CountersSnapshot};
use crate::error::{Error, Result};
use crate::events::{CheckOutcome, Event};
use crate::interface::Interface;
use crate::network::InterfaceSocket;
use crate::responder::{AnnounceConfig, AnnounceMode, CheckConfig, Output, ProbeConfig, Responder};

/// Frames read per wake-up before timers and commands get a turn.
const READ_BATCH: usize = 256;
/// Largest frame read (jumbo frames are truncated; NS/NA/ARP are far smaller).
const FRAME_BUFFER: usize = 9216;
const COMMAND_CAPACITY: usize = 64;

/// Settings shared by every interface of an engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    pub probe: ProbeConfig,
    pub announce: AnnounceConfig,
    /// Capacity of the event channel; events that do not fit are dropped and counted.
    pub event_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            probe: ProbeConfig::default(),
            announce: AnnounceConfig::default(),
            event_capacity: 1024,
        }
    }
}

/// An [`Event`] and the interface it happened on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineEvent {
    pub interface: String,
    pub event: Event,
}

/// The Layer 2 engine: answers ARP/NDP for announced addresses on the interfaces attached to it.
///
/// ```no_run
/// # async fn demo() -> herald_l2::Result<()> {
/// use herald_l2::{AnnounceMode, EngineConfig, L2Engine};
/// let (engine, mut events) = L2Engine::new(EngineConfig::default());
/// let eth0 = engine.attach("eth0")?;
/// eth0.announce("198.51.100.10".parse().unwrap(), AnnounceMode::Probe).await?;
/// while let Some(event) = events.recv().await { /* Announced / Conflict */ }
/// engine.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct L2Engine {
    config: EngineConfig,
    cancel: CancellationToken,
    tracker: TaskTracker,
    events: mpsc::Sender<EngineEvent>,
}

impl L2Engine {
    /// A new engine without interfaces, and the receiving end of its events.
    pub fn new(config: EngineConfig) -> (L2Engine, mpsc::Receiver<EngineEvent>) {
        let (events, rx) = mpsc::channel(config.event_capacity.max(1));
        let engine = L2Engine {
            config,
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            events,
        };
        (engine, rx)
    }

    /// Starts answering on interface `name` (nothing is announced yet). Refuses what [`crate::interface::usable`]
    /// refuses (missing, not Ethernet, `NOARP`, bond slaves, down, no carrier), the rule the agent's announcer
    /// applies before declaring this node eligible. Must be called inside a tokio runtime.
    pub fn attach(&self, name: &str) -> Result<InterfaceHandle> {
        let interface = Interface::lookup(name)?;
        let socket = InterfaceSocket::open(interface.clone())?;
        let counters = Arc::new(Counters::default());
        let responder = Responder::new(
            interface.mac,
            self.config.probe,
            self.config.announce,
            Arc::clone(&counters),
        );
        let (commands, rx) = mpsc::channel(COMMAND_CAPACITY);
        let task = InterfaceTask {
            socket,
            responder,
            commands: rx,
            events: self.events.clone(),
            counters: Arc::clone(&counters),
            cancel: self.cancel.child_token(),
            checks: HashMap::new(),
        };
        info!(interface = %interface.name, ifindex = interface.index, mac = %interface.mac, "answering ARP/NDP");
        self.tracker.spawn(task.run());
        Ok(InterfaceHandle {
            interface: Arc::new(interface),
            commands,
            counters,
        })
    }

    /// Withdraws every address on every interface, leaves all groups, and waits for the tasks to end. Handles
    /// return [`Error::Stopped`] afterwards. Takes `&self` so an engine shared in an `Arc` can be stopped too.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for L2Engine {
    /// An engine dropped without [`L2Engine::shutdown`] still stops its tasks (they withdraw everything as they end).
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Announces and withdraws addresses on one interface. Cheap to clone. When the last handle drops, the interface's
/// task withdraws everything and ends.
#[derive(Clone, Debug)]
pub struct InterfaceHandle {
    interface: Arc<Interface>,
    commands: mpsc::Sender<Command>,
    counters: Arc<Counters>,
}

impl InterfaceHandle {
    /// The interface (name, index, MAC).
    pub fn interface(&self) -> &Interface {
        &self.interface
    }

    /// Starts answering for `ip`. Returns once the responder holds it (and, for IPv6, its solicited-node group is
    /// joined); with [`AnnounceMode::Probe`] the outcome comes later as [`Event::Announced`] or a refused
    /// [`Event::Conflict`].
    pub async fn announce(&self, ip: IpAddr, mode: AnnounceMode) -> Result<()> {
        check_address(ip)?;
        let (done, wait) = oneshot::channel();
        self.send(Command::Announce { ip, mode, done }).await?;
        wait.await.map_err(|_| self.stopped())?
    }

    /// Probes `ip` without answering for it ([`Responder::check`](crate::Responder::check)) and returns how that
    /// ended, after the check's probes and wait (about 4 s at the RFC 5227 timing). Two checks of one address at once
    /// share one probe.
    pub async fn check(&self, ip: IpAddr, config: CheckConfig) -> Result<CheckOutcome> {
        check_address(ip)?;
        let (done, wait) = oneshot::channel();
        self.send(Command::Check { ip, config, done }).await?;
        wait.await.map_err(|_| self.stopped())?
    }

    /// Stops answering for `ip` (and leaves its group). Withdrawing an address that is not announced does nothing.
    pub async fn withdraw(&self, ip: IpAddr) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.send(Command::Withdraw { ip, done }).await?;
        wait.await.map_err(|_| self.stopped())
    }

    /// The addresses handled now (probing or answering), and the solicited-node groups joined.
    pub async fn status(&self) -> Result<InterfaceStatus> {
        let (done, wait) = oneshot::channel();
        self.send(Command::Status { done }).await?;
        wait.await.map_err(|_| self.stopped())
    }

    /// The interface's counters.
    pub fn counters(&self) -> CountersSnapshot {
        self.counters.snapshot()
    }

    async fn send(&self, command: Command) -> Result<()> {
        self.commands.send(command).await.map_err(|_| self.stopped())
    }

    fn stopped(&self) -> Error {
        Error::Stopped(self.interface.name.clone())
    }
}

/// What an interface's responder handles at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceStatus {
    /// Addresses past their probe, answered.
    pub answering: Vec<IpAddr>,
    /// Addresses still being probed.
    pub probing: Vec<IpAddr>,
    /// Solicited-node groups joined.
    pub groups: usize,
}

/// Addresses that can never be a LoadBalancer address on a link.
fn check_address(ip: IpAddr) -> Result<()> {
    let why = match ip {
        _ if ip.is_unspecified() => Some("it is the unspecified address"),
        _ if ip.is_loopback() => Some("it is a loopback address"),
        _ if ip.is_multicast() => Some("it is a multicast address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("it is the broadcast address"),
        _ => None,
    };
    match why {
        Some(why) => Err(Error::InvalidAddress { ip, why }),
        None => Ok(()),
    }
}

#[derive(Debug)]
enum Command {
    Announce {
        ip: IpAddr,
        mode: AnnounceMode,
        done: oneshot::Sender<Result<()>>,
    },
    Withdraw {
        ip: IpAddr,
        done: oneshot::Sender<()>,
    },
    Check {
        ip: IpAddr,
        config: CheckConfig,
        done: oneshot::Sender<Result<CheckOutcome>>,
    },
    Status {
        done: oneshot::Sender<InterfaceStatus>,
    },
}

struct InterfaceTask {
    socket: InterfaceSocket,
    responder: Responder,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<EngineEvent>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    /// Who waits for the check of each address.
    checks: HashMap<IpAddr, Vec<oneshot::Sender<Result<CheckOutcome>>>>,
}

impl InterfaceTask {
    async fn run(mut self) {
        let mut buf = vec![0u8; FRAME_BUFFER];
        loop {
            let deadline = self.responder.next_deadline();
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => break,
                },
                received = self.socket.recv(&mut buf) => match received {
                    Ok(len) => self.frames(&mut buf, len).await,
                    Err(e) => {
                        // Transient (ENOBUFS, ENETDOWN while the link flaps): log and keep the socket.
                        warn!(interface = %self.socket.interface().name, error = %e, "packet socket read failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = sleep_until(deadline) => {
                    let out = self.responder.poll(Instant::now());
                    self.output(out).await;
                }
            }
        }
        self.withdraw_all();
    }

    /// Handles the frame in `buf[..len]` and whatever else is queued, up to a batch.
    async fn frames(&mut self, buf: &mut [u8], mut len: usize) {
        for _ in 0..READ_BATCH {
            let out = self.responder.handle_frame(&buf[..len], Instant::now());
            self.output(out).await;
            match self.socket.try_recv(buf) {
                Ok(next) => len = next,
                Err(_) => return,
            }
        }
    }

    async fn command(&mut self, command: Command) {
        let name = self.socket.interface().name.clone();
        match command {
            Command::Announce { ip, mode, done } => {
                let joined = match ip {
                    IpAddr::V6(v6) if !self.responder.contains(ip) => self.socket.join(v6),
                    _ => Ok(()),
                };
                if joined.is_ok() {
                    info!(interface = %name, %ip, ?mode, "announcing");
                    let out = self.responder.announce(ip, mode, Instant::now());
                    self.output(out).await;
                }
                let _ = done.send(joined);
            }
            Command::Withdraw { ip, done } => {
                let checking = self.responder.is_checking(ip);
                if self.responder.withdraw(ip) {
                    if checking {
                        self.checked(ip, CheckOutcome::Abandoned);
                    }
                    info!(interface = %name, %ip, "withdrawn");
                    if let IpAddr::V6(v6) = ip {
                        self.socket.leave(v6);
                    }
                }
                let _ = done.send(());
            }
            Command::Check { ip, config, done } => {
                let joined = match ip {
                    IpAddr::V6(v6) if !self.responder.contains(ip) => self.socket.join(v6),
                    _ => Ok(()),
                };
                match joined {
                    Ok(()) => {
                        self.checks.entry(ip).or_default().push(done);
                        let out = self.responder.check(ip, config, Instant::now());
                        self.output(out).await;
                    }
                    Err(e) => {
                        let _ = done.send(Err(e));
                    }
                }
            }
            Command::Status { done } => {
                let (mut answering, mut probing): (Vec<_>, Vec<_>) = self
                    .responder
                    .addresses()
                    .partition(|ip| self.responder.is_answering(*ip));
                answering.sort();
                probing.sort();
                let _ = done.send(InterfaceStatus {
                    answering,
                    probing,
                    groups: self.socket.groups(),
                });
            }
        }
    }

    async fn output(&mut self, out: Output) {
        for frame in &out.frames {
            if let Err(e) = self.socket.send(frame).await {
                self.counters.send_error();
                debug!(interface = %self.socket.interface().name, error = %e, "send failed");
            }
        }
        for event in out.events {
            let interface = self.socket.interface().name.clone();
            match &event {
                Event::Announced { ip, probed: true } => info!(%interface, %ip, "probe found no other owner"),
                Event::Announced { ip, probed: false } => debug!(%interface, %ip, "answered from now on"),
                Event::Conflict(c) if c.refused => {
                    error!(%interface, ip = %c.ip, mac = %c.mac, signal = %c.signal,
                        "address conflict: another host already uses this address; it is NOT announced");
                    if let IpAddr::V6(v6) = c.ip {
                        self.socket.leave(v6);
                    }
                }
                Event::Conflict(c) => {
                    warn!(%interface, ip = %c.ip, mac = %c.mac, signal = %c.signal,
                        "address conflict: another host claims an announced address");
                }
                Event::ProbeRestarted { ip, mac, signal } => {
                    info!(%interface, %ip, %mac, %signal,
                        "another host probes this address too (it claims nothing yet); probing again");
                    continue;
                }
                // For whoever asked, not for the engine's events.
                Event::Checked { ip, outcome } => {
                    debug!(%interface, %ip, ?outcome, "check ended");
                    self.checked(*ip, *outcome);
                    continue;
                }
            }
            if self.events.try_send(EngineEvent { interface, event }).is_err() {
                self.counters.event_dropped();
            }
        }
    }

    /// Tells who waits for the check of `ip` how it ended, and leaves the group the check joined.
    fn checked(&mut self, ip: IpAddr, outcome: CheckOutcome) {
        for done in self.checks.remove(&ip).unwrap_or_default() {
            let _ = done.send(Ok(outcome));
        }
        if let IpAddr::V6(v6) = ip
            && !self.responder.contains(ip)
        {
            self.socket.leave(v6);
        }
    }

    fn withdraw_all(&mut self) {
        let ips: Vec<IpAddr> = self.responder.addresses().collect();
        for ip in &ips {
            self.responder.withdraw(*ip);
            if let IpAddr::V6(v6) = ip {
                self.socket.leave(*v6);
            }
        }
        info!(interface = %self.socket.interface().name, withdrawn = ips.len(), counters = ?self.counters.snapshot(),
            "stopped answering");
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_refused() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "::1",
            "ff02::1",
        ] {
            let err = check_address(ip.parse().unwrap()).unwrap_err();
            assert!(err.to_string().contains("cannot be announced"), "{ip}: {err}");
        }
        check_address("198.51.100.10".parse().unwrap()).unwrap();
        check_address("2001:db8::10".parse().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn attach_refuses_loopback() {
        let (engine, _events) = L2Engine::new(EngineConfig::default());
        let err = engine.attach("lo").unwrap_err();
        assert!(matches!(err, Error::Unusable(crate::Unusable::NotEthernet { .. })));
        engine.shutdown().await;
    }
}
