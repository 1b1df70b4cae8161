//! Starting the inference server and reaping every child until it exits.

use crate::config::Server;
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
/// its cwd, uid and gid, stdin `/dev/null`, stdout and stderr inherited (the
/// console).
pub fn command(server: &Server) -> Command {
    let mut cmd = Command::new(&server.argv[0]);
    cmd.args(&server.argv[1..])
        .env_clear()
        .envs(&server.env)
        .current_dir(&server.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .uid(server.uid)
        .gid(server.gid);
    cmd
}

/// Spawns the server and returns its pid. The `Child` handle is dropped
/// (which neither waits nor kills): PID 1 reaps with [`reap_until`].
pub fn spawn(server: &Server) -> std::io::Result<i32> {
    let child: Child = command(server).spawn()?;
    i32::try_from(child.id()).map_err(|_| std::io::Error::other("pid out of range"))
}

/// Waits for any child (`waitpid(-1, 0)`): its pid and how it ended, or
/// `None` for a status that is not an end.
pub fn wait_any() -> std::io::Result<(i32, Option<Exit>)> {
    match rustix::process::waitpid(None, WaitOptions::empty()) {
        Ok(Some((pid, status))) => Ok((pid.as_raw_nonzero().get(), Exit::from_wait_status(status))),
        // Only returned with WNOHANG, which is not used.
        Ok(None) => Err(std::io::Error::from(std::io::ErrorKind::WouldBlock)),
        Err(e) => Err(e.into()),
    }
}

/// The PID 1 reaping loop: takes whatever `wait` returns (every child that
/// ends, orphans re-parented to PID 1 included) until the server `server_pid`
/// has ended, and returns how it ended. Interrupted waits are retried; any
/// other error (e.g. `ECHILD`: no child left, so the server was lost) is
/// returned.
pub fn reap_until<W>(server_pid: i32, mut wait: W) -> std::io::Result<Exit>
where
    W: FnMut() -> std::io::Result<(i32, Option<Exit>)>,
{
    loop {
        match wait() {
            Ok((pid, Some(exit))) if pid == server_pid => return Ok(exit),
            // An orphan reaped, or a status that is not an end.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io::{Error, ErrorKind};

    fn scripted(
        events: Vec<std::io::Result<(i32, Option<Exit>)>>,
    ) -> impl FnMut() -> std::io::Result<(i32, Option<Exit>)> {
        let mut events: VecDeque<_> = events.into();
        move || {
            events
                .pop_front()
                .unwrap_or_else(|| Err(Error::from_raw_os_error(10))) // ECHILD
        }
    }

    #[test]
    fn orphans_are_reaped_until_the_server_ends() {
        let wait = scripted(vec![
            Ok((77, Some(Exit::Code(0)))),
            Err(Error::from(ErrorKind::Interrupted)),
            Ok((78, Some(Exit::Signal(9)))),
            Ok((42, None)), // the server stopped, not ended
            Ok((42, Some(Exit::Code(3)))),
            Ok((79, Some(Exit::Code(0)))), // never reached
        ]);
        assert_eq!(reap_until(42, wait).unwrap(), Exit::Code(3));
    }

    #[test]
    fn losing_every_child_is_an_error() {
        let wait = scripted(vec![Ok((77, Some(Exit::Code(0))))]);
        assert_eq!(reap_until(42, wait).unwrap_err().raw_os_error(), Some(10));
    }

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
        }
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
    fn real_child_is_reaped_with_its_status() {
        for (program, expected) in [("/bin/true", Exit::Code(0)), ("/bin/false", Exit::Code(1))] {
            if !std::path::Path::new(program).exists() {
                continue;
            }
            let pid = spawn(&server(&[program], &[])).unwrap();
            // Wait for this pid only: the test harness may have other children.
            let wait = || -> std::io::Result<(i32, Option<Exit>)> {
                let pid = rustix::process::Pid::from_raw(pid);
                match rustix::process::waitpid(pid, WaitOptions::empty())? {
                    Some((p, st)) => Ok((p.as_raw_nonzero().get(), Exit::from_wait_status(st))),
                    None => Err(Error::from(ErrorKind::WouldBlock)),
                }
            };
            assert_eq!(reap_until(pid, wait).unwrap(), expected);
        }
    }

    #[test]
    fn spawn_failure_is_an_error() {
        assert!(spawn(&server(&["/nonexistent/zoa-test-server"], &[])).is_err());
    }
}
