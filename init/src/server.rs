//! Starting the inference server and reaping every child until it exits.

use crate::config::{Server, ServerLog};
use rustix::process::{WaitOptions, WaitStatus};
use std::fmt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It called `exit(code)`.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl fmt::Display for Exit {
    /// `code <n>` or `signal <n>`: the `<status>` of `server exited with <status>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "code {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

impl Exit {
    /// The end of a process from a `waitpid` status; `None` if it has not
    /// ended (stopped or continued).
    pub fn from_wait_status(status: WaitStatus) -> Option<Exit> {
        if let Some(code) = status.exit_status() {
            Some(Exit::Code(code))
        } else {
            status.terminating_signal().map(Exit::Signal)
        }
    }
}

/// The command for `server`: exactly its argv, its env and nothing inherited,
/// its cwd, stdin `/dev/null`, stdout and stderr where its `log` says (`/dev/null`, or
/// inherited: the console), and in the child, before `execve`, [`drop_privileges`].
pub fn command(server: &Server) -> Command {
    let mut cmd = Command::new(&server.argv[0]);
    cmd.args(&server.argv[1..])
        .env_clear()
        .envs(&server.env)
        .current_dir(&server.cwd)
        .stdin(Stdio::null())
        .stdout(output(server.log))
        .stderr(output(server.log));
    let (uid, gid) = (server.uid, server.gid);
    // SAFETY: the closure runs in the forked child before exec; it only makes raw
    // system calls (rustix) and allocates nothing, so it is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || drop_privileges(uid, gid).map_err(std::io::Error::from));
    }
    cmd
}

fn output(log: ServerLog) -> Stdio {
    match log {
        ServerLog::Discard => Stdio::null(),
        ServerLog::Console => Stdio::inherit(),
    }
}

/// Turns the calling (single-threaded, freshly forked) process into an
/// unprivileged one for good: its own session, no capability in any set, no
/// supplementary groups, the given gid and uid, and `no_new_privs` so that
/// nothing it executes can gain privileges back (setuid files, file caps).
///
/// Done here rather than with `Command::uid`/`gid`: std switches ids *before*
/// running `pre_exec`, and dropping the bounding set needs CAP_SETPCAP, which
/// the id switch takes away.
pub fn drop_privileges(uid: u32, gid: u32) -> rustix::io::Result<()> {
    use rustix::thread::{self, CapabilitySet, CapabilitySets};
    rustix::process::setsid()?;
    for cap in CapabilitySet::all().iter() {
        match thread::remove_capability_from_bounding_set(cap) {
            // Capabilities this kernel does not know are not in its bounding set.
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(e),
        }
    }
    thread::clear_ambient_capability_set()?;
    // The raw syscalls change only the calling thread: the child has no other.
    thread::set_thread_groups(&[])?;
    thread::set_thread_gid(rustix::process::Gid::from_raw(gid))?;
    thread::set_thread_uid(rustix::process::Uid::from_raw(uid))?;
    // Leaving uid 0 clears permitted and effective; inheritable stays unless cleared.
    thread::set_capabilities(
        None,
        CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        },
    )?;
    thread::set_no_new_privs(true)
}

/// Spawns the server and returns its pid. The `Child` handle is dropped
/// (which neither waits nor kills): PID 1 reaps.
pub fn spawn(server: &Server) -> std::io::Result<i32> {
    let child: Child = command(server).spawn()?;
    i32::try_from(child.id()).map_err(|_| std::io::Error::other("pid out of range"))
}

/// Every child that has ended, without blocking (`wait4(-1, WNOHANG)` until none is
/// left): PID 1 reaps orphans too. Not `waitpid(None)`: rustix maps that to pid 0,
/// "my process group", and the server leads a session of its own.
pub fn reap_ended() -> Vec<(i32, Exit)> {
    let mut ended = Vec::new();
    loop {
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some((pid, status))) => {
                if let Some(exit) = Exit::from_wait_status(status) {
                    ended.push((pid.as_raw_nonzero().get(), exit));
                }
            }
            Err(rustix::io::Errno::INTR) => continue,
            // None: children remain, none has ended; ECHILD: no children at all.
            Ok(None) | Err(_) => return ended,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_formats() {
        assert_eq!(Exit::Code(0).to_string(), "code 0");
        assert_eq!(Exit::Signal(9).to_string(), "signal 9");
    }

    fn server(argv: &[&str], env: &[(&str, &str)]) -> Server {
        Server {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd: "/".into(),
            // Our own ids, so the test also passes when not run as root.
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            max_restarts: 0,
            stop_timeout_secs: 10,
            log: ServerLog::Discard,
        }
    }

    /// Where the child's fds 1 and 2 point, as it sees them, for each `log`.
    fn child_outputs(log: ServerLog) -> String {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("fds");
        // The shell's own fds, read before it redirects anything.
        let script = format!(
            "fds=$(readlink /proc/$$/fd/1 /proc/$$/fd/2); echo \"$fds\" > {}",
            out.display()
        );
        let mut s = server(&["/bin/sh", "-c", &script], &[]);
        s.log = log;
        let status = command(&s).status().unwrap();
        assert!(status.success());
        std::fs::read_to_string(out).unwrap()
    }

    #[test]
    fn server_output_is_discarded_unless_the_console_is_asked_for() {
        assert_eq!(child_outputs(ServerLog::Discard), "/dev/null\n/dev/null\n");
        let ours = std::fs::read_link("/proc/self/fd/2").unwrap();
        let console = child_outputs(ServerLog::Console);
        assert_eq!(console.lines().nth(1), Some(ours.to_str().unwrap()));
    }

    /// `Name:\tvalue` lines of a /proc status file.
    fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    }

    #[test]
    fn server_runs_unprivileged_in_its_own_session() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: dropping privileges can only be observed when run as root");
            return;
        }
        // The child reads its own status and its own session id after the drop.
        let mut s = server(
            &[
                "/bin/sh",
                "-c",
                "cat /proc/self/status; echo Sid: $(cut -d' ' -f6 /proc/$$/stat) $$",
            ],
            &[],
        );
        s.uid = 4321;
        s.gid = 4322;
        let out = command(&s).stdout(Stdio::piped()).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let status = String::from_utf8(out.stdout).unwrap();
        assert_eq!(status_field(&status, "Uid"), "4321\t4321\t4321\t4321");
        assert_eq!(status_field(&status, "Gid"), "4322\t4322\t4322\t4322");
        assert_eq!(status_field(&status, "Groups"), "");
        assert_eq!(status_field(&status, "NoNewPrivs"), "1");
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(status_field(&status, set), "0000000000000000", "{set}");
        }
        let sid: Vec<&str> = status_field(&status, "Sid").split(' ').collect();
        assert_eq!(sid[0], sid[1], "the shell leads its own session");
    }

    #[test]
    fn command_has_exactly_the_configured_environment() {
        let s = server(&["/usr/bin/env"], &[("HOME", "/tmp"), ("A", "1")]);
        let cmd = command(&s);
        assert_eq!(cmd.get_program(), "/usr/bin/env");
        assert_eq!(cmd.get_current_dir(), Some(std::path::Path::new("/")));
        if !std::path::Path::new("/usr/bin/env").exists() {
            return;
        }
        let mut cmd = command(&s);
        let out = cmd.stdout(Stdio::piped()).output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "A=1\nHOME=/tmp\n");
    }

    #[test]
    fn spawn_failure_is_an_error() {
        assert!(spawn(&server(&["/nonexistent/zoa-test-server"], &[])).is_err());
    }
}
