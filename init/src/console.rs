//! Console lines: the `zoa-init: ...` contract with the host (see `main.rs`),
//! and attaching stdin/stdout/stderr to `/dev/console`.

use rustix::fd::AsFd;
use rustix::fs::{FileType, Mode, OFlags};
use std::io::Write;

/// Every line zoa-init prints starts with this.
pub const PREFIX: &str = "zoa-init: ";

/// Formats one console line: the prefix, the message with every control
/// character (newlines included) replaced by a space, and one `\n`.
/// Whatever the message holds, the result is exactly one line.
pub fn format_line(msg: &str) -> String {
    let mut line = String::with_capacity(PREFIX.len() + msg.len() + 1);
    line.push_str(PREFIX);
    line.extend(msg.chars().map(|c| if c.is_control() { ' ' } else { c }));
    line.push('\n');
    line
}

/// Writes one line with a single `write_all` and flushes it.
pub fn write_line<W: Write>(out: &mut W, msg: &str) -> std::io::Result<()> {
    out.write_all(format_line(msg).as_bytes())?;
    out.flush()
}

/// Prints one line on stdout (the console). Errors are ignored: there is
/// nowhere else to report them.
pub fn say(msg: &str) {
    let _ = write_line(&mut std::io::stdout().lock(), msg);
}

/// Points fds 0, 1 and 2 at `/dev/console` where they are not usable.
///
/// The kernel normally starts PID 1 with all three on `/dev/console`. If it
/// could not open it, the fds are closed, and Rust's runtime has already put
/// `/dev/null` on them before `main` (or aborted if `/dev/null` was missing
/// too, which is why the image should ship `/dev/console` and `/dev/null`
/// nodes, or rely on the kernel's built-in initramfs that has
/// `/dev/console`). So "not usable" means closed or the `/dev/null` device.
/// Call this after devtmpfs is mounted on `/dev`.
pub fn attach() -> Result<(), String> {
    let fds = [
        rustix::stdio::stdin(),
        rustix::stdio::stdout(),
        rustix::stdio::stderr(),
    ];
    let needs: Vec<bool> = fds.iter().map(|fd| !usable(fd.as_fd())).collect();
    if !needs.iter().any(|n| *n) {
        return Ok(());
    }
    let console = rustix::fs::open(
        "/dev/console",
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open /dev/console: {}", std::io::Error::from(e)))?;
    let dup_err = |i: u8, e: rustix::io::Errno| format!("dup2 /dev/console to fd {i}: {e}");
    if needs[0] {
        rustix::stdio::dup2_stdin(&console).map_err(|e| dup_err(0, e))?;
    }
    if needs[1] {
        rustix::stdio::dup2_stdout(&console).map_err(|e| dup_err(1, e))?;
    }
    if needs[2] {
        rustix::stdio::dup2_stderr(&console).map_err(|e| dup_err(2, e))?;
    }
    // `console` is a fresh fd above 2 (0-2 are open, see above); dropping it
    // closes only that one.
    Ok(())
}

/// An fd is usable when it is open and is not the `/dev/null` device (1:3).
fn usable(fd: rustix::fd::BorrowedFd<'_>) -> bool {
    match rustix::fs::fstat(fd) {
        Err(_) => false,
        Ok(st) => {
            let is_char = FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice;
            let dev = st.st_rdev;
            !(is_char && rustix::fs::major(dev) == 1 && rustix::fs::minor(dev) == 3)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_prefixed_and_terminated() {
        assert_eq!(
            format_line("pcr sha256 0 00"),
            "zoa-init: pcr sha256 0 00\n"
        );
        assert_eq!(format_line(""), "zoa-init: \n");
    }

    #[test]
    fn control_characters_cannot_break_a_line() {
        let line = format_line("fatal: panicked at x.rs:1:2:\nboom\r\x1b[2J\tend");
        assert_eq!(
            line,
            "zoa-init: fatal: panicked at x.rs:1:2: boom  [2J end\n"
        );
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn write_line_writes_one_line() {
        let mut out = Vec::new();
        write_line(&mut out, "starting /usr/bin/llama-server").unwrap();
        write_line(&mut out, "power off").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "zoa-init: starting /usr/bin/llama-server\nzoa-init: power off\n"
        );
    }

    #[test]
    fn dev_null_is_not_usable_but_files_are() {
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(!usable(null.as_fd()));
        let file = tempfile::tempfile().unwrap();
        assert!(usable(file.as_fd()));
    }
}
