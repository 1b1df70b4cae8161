//! Keeping the server up, and stopping it gracefully when the machine is asked to stop.
//!
//! PID 1 waits on three things at once: its children ending (SIGCHLD), a request to
//! stop (SIGTERM, SIGINT — what the kernel sends PID 1 on Ctrl-Alt-Del once
//! `reboot(CAD_OFF)` is set — or the ACPI power button, which is how EC2 and QEMU's
//! `system_powerdown` ask a guest to shut down), and its own timers (restart backoff,
//! stop deadline). Each source feeds one channel; [`Supervisor`] decides, so the
//! policy is tested without processes and the loop stays small.

use crate::config::Server;
use crate::console::say;
use crate::server::{self, Exit};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// A run at least this long counts as healthy: the next failure starts a fresh series.
pub const STABLE_RUN: Duration = Duration::from_secs(60);
/// Longest delay between restarts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long to wait for the server to end after SIGKILL before powering off anyway.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Something the supervisor must react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// SIGCHLD: one or more children may have ended.
    ChildMayHaveEnded,
    /// The machine is asked to stop; the text says by whom.
    Stop(&'static str),
}

/// What the loop must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start the server (again).
    Spawn,
    /// Nothing until the next event or this deadline.
    WaitUntil(Option<Instant>),
    /// Send this signal to the server.
    Signal(i32, rustix::process::Signal),
    /// Power the machine off.
    PowerOff,
}

/// Where the server is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Running { pid: i32, since: Instant },
    BackingOff { until: Instant },
    Stopping { pid: i32, kill_at: Instant },
    Killed { pid: i32, give_up_at: Instant },
    Done,
}

/// The restart and stop policy, fed with what happened and when.
#[derive(Debug)]
pub struct Supervisor {
    max_restarts: u32,
    stop_timeout: Duration,
    failures_in_a_row: u32,
    state: State,
}

impl Supervisor {
    /// A supervisor for a server that was just spawned as `pid` at `now`.
    pub fn new(max_restarts: u32, stop_timeout: Duration, pid: i32, now: Instant) -> Supervisor {
        Supervisor {
            max_restarts,
            stop_timeout,
            failures_in_a_row: 0,
            state: State::Running { pid, since: now },
        }
    }

    /// The server's pid while it runs (or is being stopped).
    pub fn server_pid(&self) -> Option<i32> {
        match self.state {
            State::Running { pid, .. }
            | State::Stopping { pid, .. }
            | State::Killed { pid, .. } => Some(pid),
            State::BackingOff { .. } | State::Done => None,
        }
    }

    /// The delay before restart number `n` (1-based): 1, 2, 4, … seconds, at most
    /// [`MAX_BACKOFF`].
    pub fn backoff(n: u32) -> Duration {
        let secs = 1u64 << n.saturating_sub(1).min(16);
        Duration::from_secs(secs).min(MAX_BACKOFF)
    }

    /// The server (pid) ended at `now`. Returns the next action and, when a
    /// restart is scheduled, `(restart number, delay)` for the console.
    pub fn on_server_exit(&mut self, now: Instant) -> (Action, Option<(u32, Duration)>) {
        match self.state {
            State::Running { since, .. } => {
                if now.duration_since(since) >= STABLE_RUN {
                    self.failures_in_a_row = 0;
                }
                self.failures_in_a_row += 1;
                if self.failures_in_a_row > self.max_restarts {
                    self.state = State::Done;
                    return (Action::PowerOff, None);
                }
                let delay = Self::backoff(self.failures_in_a_row);
                let until = now + delay;
                self.state = State::BackingOff { until };
                (
                    Action::WaitUntil(Some(until)),
                    Some((self.failures_in_a_row, delay)),
                )
            }
            // Asked to stop, and it did.
            State::Stopping { .. } | State::Killed { .. } => {
                self.state = State::Done;
                (Action::PowerOff, None)
            }
            State::BackingOff { .. } | State::Done => (self.pending(), None),
        }
    }

    /// The server was started again as `pid` at `now`.
    pub fn on_spawned(&mut self, pid: i32, now: Instant) {
        self.state = State::Running { pid, since: now };
    }

    /// Whether the last restart series is exhausted (for the console line).
    pub fn gave_up(&self) -> bool {
        self.state == State::Done && self.failures_in_a_row > self.max_restarts
    }

    /// The machine is asked to stop.
    pub fn on_stop(&mut self, now: Instant) -> Action {
        match self.state {
            State::Running { pid, .. } => {
                self.state = State::Stopping {
                    pid,
                    kill_at: now + self.stop_timeout,
                };
                Action::Signal(pid, rustix::process::Signal::TERM)
            }
            State::BackingOff { .. } => {
                self.state = State::Done;
                Action::PowerOff
            }
            // Already stopping: a second request changes nothing.
            State::Stopping { .. } | State::Killed { .. } | State::Done => self.pending(),
        }
    }

    /// No event arrived before the deadline the last action named.
    pub fn on_timeout(&mut self, now: Instant) -> Action {
        match self.state {
            State::BackingOff { until } if now >= until => Action::Spawn,
            State::Stopping { pid, kill_at } if now >= kill_at => {
                self.state = State::Killed {
                    pid,
                    give_up_at: now + KILL_GRACE,
                };
                Action::Signal(pid, rustix::process::Signal::KILL)
            }
            State::Killed { give_up_at, .. } if now >= give_up_at => {
                self.state = State::Done;
                Action::PowerOff
            }
            _ => self.pending(),
        }
    }

    /// What to wait for in the current state.
    pub fn pending(&self) -> Action {
        match self.state {
            State::Running { .. } => Action::WaitUntil(None),
            State::BackingOff { until } => Action::WaitUntil(Some(until)),
            State::Stopping { kill_at, .. } => Action::WaitUntil(Some(kill_at)),
            State::Killed { give_up_at, .. } => Action::WaitUntil(Some(give_up_at)),
            State::Done => Action::PowerOff,
        }
    }
}

/// Runs `server` under the [`Supervisor`] policy until it is time to power off.
/// `reap(server_pid)` returns the children that have ended, without blocking (PID 1
/// reaps every child; tests reap only the server). Errors are fatal.
pub fn run<R>(server: &Server, events: &Receiver<Event>, mut reap: R) -> Result<(), String>
where
    R: FnMut(Option<i32>) -> Vec<(i32, Exit)>,
{
    let program = &server.argv[0];
    let spawn = || {
        say(&format!("starting {program}"));
        server::spawn(server).map_err(|e| format!("start {program}: {e}"))
    };
    let mut sup = Supervisor::new(
        server.max_restarts,
        Duration::from_secs(server.stop_timeout_secs.into()),
        spawn()?,
        Instant::now(),
    );
    let mut deadline = None;
    loop {
        let action = match next_event(events, deadline)? {
            Some(Event::ChildMayHaveEnded) => {
                let mut action = sup.pending();
                for (pid, exit) in reap(sup.server_pid()) {
                    if Some(pid) != sup.server_pid() {
                        continue; // an orphan re-parented to PID 1
                    }
                    say(&format!("server exited with {exit}"));
                    let (next, restart) = sup.on_server_exit(Instant::now());
                    if let Some((n, delay)) = restart {
                        say(&format!(
                            "restarting {program} in {}s (restart {n} of {})",
                            delay.as_secs(),
                            server.max_restarts
                        ));
                    }
                    action = next;
                }
                action
            }
            Some(Event::Stop(by)) => {
                say(&format!("stopping: {by}"));
                sup.on_stop(Instant::now())
            }
            None => sup.on_timeout(Instant::now()),
        };
        deadline = match action {
            Action::Spawn => {
                sup.on_spawned(spawn()?, Instant::now());
                None
            }
            Action::WaitUntil(until) => until,
            Action::Signal(pid, signal) => {
                if signal == rustix::process::Signal::KILL {
                    say(&format!(
                        "server did not stop within {}s: SIGKILL",
                        server.stop_timeout_secs
                    ));
                }
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    // ESRCH: it ended meanwhile; its SIGCHLD is on the way.
                    let _ = rustix::process::kill_process(pid, signal);
                }
                match sup.pending() {
                    Action::WaitUntil(until) => until,
                    _ => None,
                }
            }
            Action::PowerOff => {
                if sup.gave_up() {
                    say(&format!(
                        "giving up: {program} ended {} times in a row",
                        server.max_restarts + 1
                    ));
                }
                return Ok(());
            }
        };
    }
}

/// Waits for the next event, until `deadline` at the latest (`None`: forever).
/// `Ok(None)` means the deadline passed.
pub fn next_event(
    events: &Receiver<Event>,
    deadline: Option<Instant>,
) -> Result<Option<Event>, &'static str> {
    let result = match deadline {
        None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
        Some(t) => events.recv_timeout(t.saturating_duration_since(Instant::now())),
    };
    match result {
        Ok(e) => Ok(Some(e)),
        Err(RecvTimeoutError::Timeout) => Ok(None),
        Err(RecvTimeoutError::Disconnected) => Err("every event source stopped"),
    }
}

/// Forwards SIGCHLD, SIGTERM and SIGINT to `events` from a thread of its own. Call
/// before the first child is spawned, so no SIGCHLD is missed.
pub fn forward_signals(events: Sender<Event>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGCHLD, SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let event = match signal {
                    SIGCHLD => Event::ChildMayHaveEnded,
                    SIGTERM => Event::Stop("SIGTERM"),
                    _ => Event::Stop("SIGINT (Ctrl-Alt-Del)"),
                };
                if events.send(event).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

/// The Linux input event codes a power button sends (linux/input-event-codes.h).
const EV_KEY: u16 = 0x01;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit Linux: a 16-byte timeval, type u16, code u16, value i32.
const INPUT_EVENT_LEN: usize = 24;

/// Whether one `struct input_event` is a power-button press. Parsed by hand: three
/// fields of a fixed kernel ABI do not justify an evdev crate in PID 1.
pub fn is_power_press(record: &[u8; INPUT_EVENT_LEN]) -> bool {
    let kind = u16::from_ne_bytes([record[16], record[17]]);
    let code = u16::from_ne_bytes([record[18], record[19]]);
    let value = i32::from_ne_bytes([record[20], record[21], record[22], record[23]]);
    kind == EV_KEY && code == KEY_POWER && value == 1
}

/// The event devices (`/dev/input/eventN`) whose name says "Power Button", found
/// through `sys_class_input` (normally `/sys/class/input`).
pub fn power_buttons(
    sys_class_input: &std::path::Path,
    dev: &std::path::Path,
) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(sys_class_input) else {
        return Vec::new();
    };
    let mut found: Vec<_> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            if !name.starts_with("event") {
                return None;
            }
            let label = std::fs::read_to_string(e.path().join("device/name")).ok()?;
            label.contains("Power Button").then(|| dev.join(name))
        })
        .collect();
    found.sort();
    found
}

/// Forwards power-button presses on `device` to `events` from a thread of its own.
pub fn forward_power_button(
    device: &std::path::Path,
    events: Sender<Event>,
) -> std::io::Result<()> {
    use std::io::Read;
    let mut file = std::fs::File::open(device)?;
    std::thread::Builder::new()
        .name("power-button".into())
        .spawn(move || {
            let mut record = [0u8; INPUT_EVENT_LEN];
            while file.read_exact(&mut record).is_ok() {
                if is_power_press(&record) && events.send(Event::Stop("power button")).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::Signal;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let secs: Vec<u64> = (1..=8).map(|n| Supervisor::backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(Supervisor::backoff(1000), MAX_BACKOFF);
    }

    #[test]
    fn failing_server_is_restarted_with_backoff_then_given_up() {
        let now = t0();
        let mut s = Supervisor::new(2, Duration::from_secs(10), 10, now);
        let (a, r) = s.on_server_exit(now + Duration::from_secs(1));
        assert_eq!(r, Some((1, Duration::from_secs(1))));
        assert_eq!(a, Action::WaitUntil(Some(now + Duration::from_secs(2))));
        assert_eq!(s.server_pid(), None);
        // Too early: keep waiting.
        assert_eq!(
            s.on_timeout(now + Duration::from_millis(1500)),
            Action::WaitUntil(Some(now + Duration::from_secs(2)))
        );
        assert_eq!(s.on_timeout(now + Duration::from_secs(2)), Action::Spawn);
        s.on_spawned(11, now + Duration::from_secs(2));
        assert_eq!(s.server_pid(), Some(11));
        let (_, r) = s.on_server_exit(now + Duration::from_secs(3));
        assert_eq!(r, Some((2, Duration::from_secs(2))));
        assert_eq!(s.on_timeout(now + Duration::from_secs(5)), Action::Spawn);
        s.on_spawned(12, now + Duration::from_secs(5));
        assert_eq!(
            s.on_server_exit(now + Duration::from_secs(6)),
            (Action::PowerOff, None)
        );
        assert!(s.gave_up());
    }

    #[test]
    fn a_long_healthy_run_resets_the_count() {
        let now = t0();
        let mut s = Supervisor::new(1, Duration::from_secs(10), 10, now);
        let (_, r) = s.on_server_exit(now + Duration::from_secs(1));
        assert_eq!(r, Some((1, Duration::from_secs(1))));
        s.on_spawned(11, now + Duration::from_secs(2));
        // Ran for a long time before failing: a fresh series, not "give up".
        let (_, r) = s.on_server_exit(now + Duration::from_secs(2) + STABLE_RUN);
        assert_eq!(r, Some((1, Duration::from_secs(1))));
    }

    #[test]
    fn zero_restarts_powers_off_at_the_first_exit() {
        let now = t0();
        let mut s = Supervisor::new(0, Duration::from_secs(10), 10, now);
        assert_eq!(s.on_server_exit(now), (Action::PowerOff, None));
    }

    #[test]
    fn stop_sends_term_then_kill_then_gives_up() {
        let now = t0();
        let mut s = Supervisor::new(3, Duration::from_secs(10), 42, now);
        assert_eq!(s.on_stop(now), Action::Signal(42, Signal::TERM));
        // A second request while stopping changes nothing.
        assert_eq!(
            s.on_stop(now + Duration::from_secs(1)),
            Action::WaitUntil(Some(now + Duration::from_secs(10)))
        );
        assert_eq!(
            s.on_timeout(now + Duration::from_secs(10)),
            Action::Signal(42, Signal::KILL)
        );
        assert_eq!(s.server_pid(), Some(42));
        assert_eq!(
            s.on_timeout(now + Duration::from_secs(10) + KILL_GRACE),
            Action::PowerOff
        );
        assert!(!s.gave_up());
    }

    #[test]
    fn server_ending_after_term_powers_off_without_restart() {
        let now = t0();
        let mut s = Supervisor::new(3, Duration::from_secs(10), 42, now);
        s.on_stop(now);
        assert_eq!(
            s.on_server_exit(now + Duration::from_secs(2)),
            (Action::PowerOff, None)
        );
    }

    #[test]
    fn stop_during_backoff_powers_off_at_once() {
        let now = t0();
        let mut s = Supervisor::new(3, Duration::from_secs(10), 42, now);
        s.on_server_exit(now);
        assert_eq!(s.on_stop(now), Action::PowerOff);
    }

    fn record(kind: u16, code: u16, value: i32) -> [u8; INPUT_EVENT_LEN] {
        let mut r = [0u8; INPUT_EVENT_LEN];
        r[0..8].copy_from_slice(&7u64.to_ne_bytes());
        r[16..18].copy_from_slice(&kind.to_ne_bytes());
        r[18..20].copy_from_slice(&code.to_ne_bytes());
        r[20..24].copy_from_slice(&value.to_ne_bytes());
        r
    }

    #[test]
    fn only_a_power_key_press_counts() {
        assert!(is_power_press(&record(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_press(&record(EV_KEY, KEY_POWER, 0)), "release");
        assert!(!is_power_press(&record(EV_KEY, 28, 1)), "Enter");
        assert!(!is_power_press(&record(0, 0, 0)), "EV_SYN");
    }

    #[test]
    fn power_buttons_are_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for (event, name) in [
            ("event0", "Power Button\n"),
            ("event1", "AT Translated Set 2 keyboard\n"),
            ("event2", "Power Button\n"),
        ] {
            let d = dir.path().join(event).join("device");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), name).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("input0")).unwrap();
        let found = power_buttons(dir.path(), std::path::Path::new("/dev/input"));
        assert_eq!(
            found,
            [
                std::path::PathBuf::from("/dev/input/event0"),
                std::path::PathBuf::from("/dev/input/event2")
            ]
        );
        assert!(power_buttons(&dir.path().join("none"), std::path::Path::new("/d")).is_empty());
    }

    #[test]
    fn presses_from_a_device_reach_the_channel() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("event0");
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&record(EV_KEY, KEY_POWER, 0));
        bytes.extend_from_slice(&record(EV_KEY, KEY_POWER, 1));
        std::fs::write(&dev, bytes).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        forward_power_button(&dev, tx).unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok(Event::Stop("power button"))
        );
        // End of file ends the thread, which drops the sender.
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_err());
    }

    fn shell_server(script: &str, max_restarts: u32, stop_timeout_secs: u32) -> Server {
        Server {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: Default::default(),
            cwd: "/".into(),
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            max_restarts,
            stop_timeout_secs,
            log: crate::config::ServerLog::Discard,
        }
    }

    /// Reaps only the server (other tests of this binary have children too).
    fn reap_server(pid: Option<i32>) -> Vec<(i32, Exit)> {
        use rustix::process::{waitpid, Pid, WaitOptions};
        let Some(pid) = pid.and_then(Pid::from_raw) else {
            return Vec::new();
        };
        match waitpid(Some(pid), WaitOptions::NOHANG) {
            Ok(Some((p, st))) => Exit::from_wait_status(st)
                .map(|e| vec![(p.as_raw_nonzero().get(), e)])
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// SIGCHLD stands in as a steady tick, so the test needs no signal handler.
    fn ticking() -> (Sender<Event>, Receiver<Event>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let ticker = tx.clone();
        std::thread::spawn(move || {
            while ticker.send(Event::ChildMayHaveEnded).is_ok() {
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        (tx, rx)
    }

    #[test]
    fn a_real_failing_server_is_restarted_then_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        let script = format!("echo run >> {}; exit 3", runs.display());
        let (_tx, rx) = ticking();
        let start = Instant::now();
        run(&shell_server(&script, 2, 10), &rx, reap_server).unwrap();
        let count = std::fs::read_to_string(&runs).unwrap().lines().count();
        assert_eq!(count, 3, "first run and two restarts");
        // Backoff 1 s + 2 s between them.
        assert!(
            start.elapsed() >= Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_stop_request_terminates_a_real_server_gracefully() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("terminated");
        // The shell records SIGTERM and ends; without a stop it would run 60 s.
        let script = format!(
            "trap 'echo term > {}; exit 0' TERM; sleep 60 & wait",
            marker.display()
        );
        let (tx, rx) = ticking();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            let _ = tx.send(Event::Stop("test"));
        });
        let start = Instant::now();
        run(&shell_server(&script, 3, 10), &rx, reap_server).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "term\n");
    }

    #[test]
    fn a_server_ignoring_term_is_killed_after_the_timeout() {
        let (tx, rx) = ticking();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let _ = tx.send(Event::Stop("test"));
        });
        let start = Instant::now();
        run(
            &shell_server("trap '' TERM; while :; do sleep 0.1; done", 3, 1),
            &rx,
            reap_server,
        )
        .unwrap();
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(6),
            "{took:?}"
        );
    }

    #[test]
    fn next_event_times_out_at_the_deadline() {
        let (tx, rx) = std::sync::mpsc::channel();
        let start = Instant::now();
        assert_eq!(
            next_event(&rx, Some(start + Duration::from_millis(50))),
            Ok(None)
        );
        assert!(start.elapsed() >= Duration::from_millis(50));
        tx.send(Event::ChildMayHaveEnded).unwrap();
        assert_eq!(next_event(&rx, None), Ok(Some(Event::ChildMayHaveEnded)));
        drop(tx);
        assert!(next_event(&rx, None).is_err());
    }
}
