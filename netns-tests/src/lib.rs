//! Fixtures for Herald's root-only tests in network namespaces.
//!
//! A [`Lab`] owns everything a test creates: named network namespaces (unique per test), the links inside them, and
//! the child processes started in them. Dropping it (also while unwinding from a failed assertion) kills the
//! processes and deletes the namespaces, which removes every link in them. Links are created *inside* the test's
//! namespaces only (a "switch" namespace holds the bridge), so the host's network is never touched.
//!
//! Addresses used by tests must come from the documentation ranges only (192.0.2.0/24, 198.51.100.0/24,
//! 203.0.113.0/24, 2001:db8::/32).

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Prefix of every namespace a Herald test creates; `scripts/test.sh` removes leftovers with it.
pub const NETNS_PREFIX: &str = "hrdt-";

/// Returns `true` when the test may run. Without root or a needed tool it prints why and returns `false`, unless
/// `CI` is set: CI installs everything, so there a missing prerequisite is a failure, not a skip.
pub fn require(tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root (uid 0)".to_string());
    }
    for tool in tools {
        if which(tool).is_none() {
            missing.push(format!("`{tool}` on PATH"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!("needs {}", missing.join(", "));
    if std::env::var_os("CI").is_some() {
        panic!("netns test cannot run in CI: {why}");
    }
    eprintln!("SKIPPED: {why}");
    false
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Finds an executable on PATH (also the sbin directories, which a non-login root shell may lack).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/lib/frr"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn built_binary(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    for profile in ["debug", "release"] {
        let p = target_dir().join(profile).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} binary not found: build it (`cargo build --bins`) or set {env}")
}

/// The `herald` binary under test (`HERALD_BIN`, else the workspace target directory).
pub fn herald_bin() -> PathBuf {
    built_binary("HERALD_BIN", "herald")
}

/// The `lab-apiserver` binary (`LAB_APISERVER_BIN`, else the workspace target directory).
pub fn lab_apiserver_bin() -> PathBuf {
    built_binary("LAB_APISERVER_BIN", "lab-apiserver")
}

/// Polls `check` every 10 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A network namespace owned by a [`Lab`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// The name `ip netns` knows it by.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A process started inside a namespace. Its stdout and stderr go to files in the lab's log directory.
pub struct Proc {
    label: String,
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    /// The process id (the command itself: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`, `INT`).
    pub fn signal(&self, sig: &str) -> Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{sig} {} ({}) failed", self.pid(), self.label);
        }
        Ok(())
    }

    /// Has the process exited? Returns its exit code (or -1 when killed by a signal).
    pub fn exited(&mut self) -> Option<i32> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.code().unwrap_or(-1)),
            _ => None,
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        wait_for(timeout, || self.exited())
    }

    /// Everything the process printed on stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Everything the process printed on stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Everything one test created. Drop removes it all.
pub struct Lab {
    id: String,
    namespaces: Vec<Netns>,
    procs: Vec<Proc>,
    log_dir: PathBuf,
    failed: bool,
}

impl Lab {
    /// A new, empty lab. `test` names it in logs; the namespaces get a random suffix so tests never collide.
    pub fn new(test: &str) -> Lab {
        let id = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let log_dir = std::env::temp_dir().join(format!("{NETNS_PREFIX}{id}-{test}"));
        fs::create_dir_all(&log_dir).expect("create the lab's log directory");
        Lab {
            id,
            namespaces: Vec::new(),
            failed: false,
            procs: Vec::new(),
            log_dir,
        }
    }

    /// Short unique id of this lab (6 hex digits), handy for names that must be unique machine-wide.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the lab's process logs and scratch files live (removed on drop unless the test failed).
    pub fn dir(&self) -> &Path {
        &self.log_dir
    }

    /// Creates namespace `hrdt-<id>-<role>` with `lo` up.
    pub fn netns(&mut self, role: &str) -> Netns {
        let ns = Netns {
            name: format!("{NETNS_PREFIX}{}-{role}", self.id),
        };
        run(Command::new("ip").args(["netns", "add", &ns.name])).expect("ip netns add");
        self.namespaces.push(ns.clone());
        self.ip(&ns, &["link", "set", "lo", "up"]).expect("set lo up");
        ns
    }

    /// A bridge named `name` inside `ns`, up, with IPv6 multicast snooping off so NDP is flooded like a dumb switch.
    pub fn bridge(&mut self, ns: &Netns, name: &str) -> Result<()> {
        self.ip(ns, &["link", "add", name, "type", "bridge", "mcast_snooping", "0"])?;
        self.ip(ns, &["link", "set", name, "up"])?;
        Ok(())
    }

    /// A veth pair: `a_if` in `a`, `b_if` in `b`, both up.
    pub fn veth(&mut self, a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
        self.ip(
            a,
            &[
                "link",
                "add",
                a_if,
                "type",
                "veth",
                "peer",
                "name",
                b_if,
                "netns",
                b.name(),
            ],
        )?;
        self.ip(a, &["link", "set", a_if, "up"])?;
        self.ip(b, &["link", "set", b_if, "up"])?;
        Ok(())
    }

    /// Connects `host_if` in `host` to the bridge `bridge` in `switch` through a veth pair; the switch side is named
    /// `port`. Returns nothing; the host side is up but has no address yet.
    pub fn attach(&mut self, switch: &Netns, bridge: &str, port: &str, host: &Netns, host_if: &str) -> Result<()> {
        self.veth(switch, port, host, host_if)?;
        self.ip(switch, &["link", "set", port, "master", bridge])?;
        Ok(())
    }

    /// Adds an address (`192.0.2.1/24`, `2001:db8::1/64`) to `dev` in `ns`. IPv6 addresses skip DAD so they are
    /// usable at once.
    pub fn addr(&self, ns: &Netns, dev: &str, cidr: &str) -> Result<()> {
        if cidr.contains(':') {
            self.ip(ns, &["addr", "add", cidr, "dev", dev, "nodad"])?;
        } else {
            self.ip(ns, &["addr", "add", cidr, "dev", dev])?;
        }
        Ok(())
    }

    /// Runs `ip ARGS` in `ns` and returns its stdout; fails with stderr on a non-zero exit.
    pub fn ip(&self, ns: &Netns, args: &[&str]) -> Result<String> {
        run(Command::new("ip").arg("-n").arg(ns.name()).args(args))
    }

    /// The MAC address of `dev` in `ns`, lower case.
    pub fn mac(&self, ns: &Netns, dev: &str) -> Result<String> {
        let out = self.ip(ns, &["-br", "link", "show", "dev", dev])?;
        out.split_whitespace()
            .nth(2)
            .map(str::to_lowercase)
            .with_context(|| format!("no MAC in `ip link show {dev}` output: {out}"))
    }

    /// Runs a command to completion inside `ns` and returns its output, whatever its exit status.
    pub fn exec<S: AsRef<OsStr>>(&self, ns: &Netns, cmd: &[S]) -> Result<Output> {
        let out = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .args(cmd)
            .output()?;
        Ok(out)
    }

    /// Runs a command inside `ns`; fails with its stderr on a non-zero exit, else returns stdout.
    pub fn sh(&self, ns: &Netns, script: &str) -> Result<String> {
        run(Command::new("ip").args(["netns", "exec", ns.name(), "sh", "-c", script]))
    }

    /// Starts a long-running process inside `ns`. It is killed when the lab drops (or use [`Proc::signal`]).
    /// Returns an index for [`Lab::proc`].
    pub fn spawn<S: AsRef<OsStr>>(&mut self, ns: &Netns, label: &str, cmd: &[S]) -> Result<usize> {
        self.spawn_env(ns, label, cmd, &[])
    }

    /// Like [`Lab::spawn`] with extra environment variables.
    pub fn spawn_env<S: AsRef<OsStr>>(
        &mut self,
        ns: &Netns,
        label: &str,
        cmd: &[S],
        env: &[(&str, &str)],
    ) -> Result<usize> {
        let n = self.procs.len();
        let stdout = self.log_dir.join(format!("{n:02}-{label}.out"));
        let stderr = self.log_dir.join(format!("{n:02}-{label}.err"));
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns.name()])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout)?)
            .stderr(fs::File::create(&stderr)?);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().with_context(|| format!("spawn {label} in {ns}"))?;
        self.procs.push(Proc {
            label: label.to_string(),
            child: Some(child),
            stdout,
            stderr,
        });
        Ok(n)
    }

    /// A process started with [`Lab::spawn`].
    pub fn proc(&mut self, index: usize) -> &mut Proc {
        &mut self.procs[index]
    }

    /// Marks the lab as failed without a panic (a set-up step returned an error): on drop it prints its processes'
    /// logs and keeps them, as after a panic.
    pub fn mark_failed(&mut self) {
        self.failed = true;
    }

    fn dump_logs(&self) {
        for p in &self.procs {
            for (what, text) in [("stdout", p.stdout()), ("stderr", p.stderr())] {
                if text.is_empty() {
                    continue;
                }
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                // Never panic here (this runs in Drop, maybe while unwinding, maybe with a closed stderr): a panic
                // would abort before the namespaces are removed.
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "----- {} {what} (last {} lines) -----", p.label, tail.len());
                for l in tail {
                    let _ = writeln!(err, "{l}");
                }
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let failed = self.failed || std::thread::panicking();
        if failed {
            self.dump_logs();
            let _ = writeln!(std::io::stderr(), "lab logs kept in {}", self.log_dir.display());
        }
        for p in &mut self.procs {
            p.kill();
        }
        for ns in self.namespaces.iter().rev() {
            // Anything else still running in the namespace (daemons that forked) goes too.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns.name()]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns.name()]).status();
        }
        if !failed {
            let _ = fs::remove_dir_all(&self.log_dir);
        }
    }
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub mod l2;

pub mod bgp;

pub mod cluster;

pub mod rbac;
