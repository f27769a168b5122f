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
pub fn wait_for<T>(timeout: Duration, check: impl FnMut() -> Option<T>) -> Option<T> {
    wait_for_every(timeout, Duration::from_millis(10), check)
}

/// Polls `check` every `interval` (a check that lists thousands of objects must not be a load of its own) until it
/// returns `Some` or `timeout` passes.
pub fn wait_for_every<T>(timeout: Duration, interval: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(interval);
    }
}

/// Memory and CPU time of a running process, from `/proc/<pid>/status` and `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcUsage {
    /// Resident set now (VmRSS), MiB.
    pub rss_mib: f64,
    /// Its anonymous part (RssAnon: heap and stacks, without the binary's pages the page cache shares), MiB.
    pub rss_anon_mib: f64,
    /// The largest resident set so far (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// User plus system CPU time so far.
    pub cpu: Duration,
}

impl ProcUsage {
    /// Reads process `pid`'s usage.
    pub fn read(pid: u32) -> Result<ProcUsage> {
        let status =
            fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("process {pid} is gone"))?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("process {pid} is gone"))?;
        Self::parse(&status, &stat, clock_ticks()).with_context(|| format!("/proc/{pid}: unexpected format"))
    }

    /// From the text of `/proc/<pid>/status` and `/proc/<pid>/stat` (pure, for the tests).
    pub fn parse(status: &str, stat: &str, ticks_per_second: u64) -> Option<ProcUsage> {
        let mib = |name: &str| -> Option<f64> {
            let kib: f64 = status
                .lines()
                .find_map(|l| l.strip_prefix(name))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(kib / 1024.0)
        };
        // proc(5): the command (field 2) is in parentheses and may hold spaces; utime and stime are fields 14 and 15,
        // i.e. the 12th and 13th after the closing parenthesis.
        let mut after_comm = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
        let utime: u64 = after_comm.next()?.parse().ok()?;
        let stime: u64 = after_comm.next()?.parse().ok()?;
        Some(ProcUsage {
            rss_mib: mib("VmRSS:")?,
            rss_anon_mib: mib("RssAnon:")?,
            peak_rss_mib: mib("VmHWM:")?,
            cpu: Duration::from_secs_f64((utime + stime) as f64 / ticks_per_second.max(1) as f64),
        })
    }
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
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

    /// Kills the process with SIGKILL unless it has exited, and waits up to 5 s for it (before starting its
    /// successor).
    pub fn kill_and_wait(&mut self) {
        if self.exited().is_none() {
            let _ = self.signal("KILL");
            self.wait_exit(Duration::from_secs(5));
        }
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

    /// The process id of a process started with [`Lab::spawn`].
    pub fn pid(&self, index: usize) -> u32 {
        self.procs[index].pid()
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

/// The chaos soak: random events on a 4-node cluster with the invariants checked all along (issue #16).
pub mod chaos;
pub mod cluster;

pub mod fabric;

pub mod rbac;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_usage_from_status_and_stat() {
        let status = "Name:\therald\nVmHWM:\t   65536 kB\nVmRSS:\t   40960 kB\nRssAnon:\t   30720 kB\n";
        // A command with a space and a parenthesis; utime 150 and stime 50 ticks.
        let stat = "4242 (herald (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 150 50 0 0 20 0 9 0 12345 0 0";
        let usage = ProcUsage::parse(status, stat, 100).unwrap();
        assert_eq!(
            usage,
            ProcUsage {
                rss_mib: 40.0,
                rss_anon_mib: 30.0,
                peak_rss_mib: 64.0,
                cpu: Duration::from_secs(2),
            }
        );
        assert_eq!(ProcUsage::parse("VmRSS:\t1 kB\n", stat, 100), None);
    }
}
