//! PID 1's reaper finds the server although it leads a session (and so a process group)
//! of its own. Alone in its own test binary: reaping "any child" would otherwise take
//! the children of other tests running in parallel.

use std::time::{Duration, Instant};
use zoa_init::config::Server;
use zoa_init::server::{reap_ended, spawn, Exit};

#[test]
fn a_server_in_its_own_session_is_reaped() {
    let server = Server {
        argv: vec!["/bin/sh".into(), "-c".into(), "exit 7".into()],
        env: Default::default(),
        cwd: "/".into(),
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        max_restarts: 0,
        stop_timeout_secs: 10,
        log: Default::default(),
    };
    let pid = spawn(&server).expect("spawn /bin/sh");
    let start = Instant::now();
    loop {
        let ended = reap_ended();
        if !ended.is_empty() {
            assert_eq!(ended, [(pid, Exit::Code(7))]);
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never reaped");
        std::thread::sleep(Duration::from_millis(20));
    }
}
