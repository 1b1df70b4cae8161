//! The emulator between QEMU and swtpm. QEMU's `tpm-emulator` backend talks to swtpm's
//! control channel (a Unix socket) and hands over the data channel, one end of a
//! socketpair, with `CMD_SET_DATAFD` (0x10) and the descriptor as SCM_RIGHTS on that same
//! message (swtpm's `tpm_ioctl.h`, QEMU's `backends/tpm/tpm_emulator.c`). The relay listens
//! where QEMU expects swtpm, passes the control channel through byte for byte, and on
//! `CMD_SET_DATAFD` gives swtpm a socketpair of its own instead, so every TPM command the
//! guest sends goes through [`Emulator::handle`].

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::nsm::Nsm;
use super::swtpm::Stream;
use super::Emulator;
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Largest TPM command taken from the guest: QEMU's buffer is 4 KiB unless it negotiates
/// more, and swtpm takes at most this much.
const MAX_COMMAND: usize = 64 * 1024;

/// A running relay; stops (and joins its threads) when dropped.
pub struct Relay {
    nsm: Nsm,
    listen: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Listens at `listen` for QEMU; each connection is relayed to swtpm's control socket at
/// `swtpm_ctrl`, its data channel through an emulator with `nsm`.
pub fn start(listen: &Path, swtpm_ctrl: &Path, nsm: Nsm) -> io::Result<Relay> {
    let _ = std::fs::remove_file(listen);
    let listener = UnixListener::bind(listen)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (ctrl, flag, ours) = (swtpm_ctrl.to_owned(), stop.clone(), nsm.clone());
    let thread = std::thread::Builder::new()
        .name("nitrotpm".into())
        .spawn(move || {
            for qemu in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                match qemu.and_then(|q| UnixStream::connect(&ctrl).map(|s| (q, s))) {
                    Ok((qemu, swtpm)) => relay_control(qemu, swtpm, nsm.clone()),
                    Err(e) => log::error!("emulated NitroTPM: {e}"),
                }
            }
        })?;
    Ok(Relay {
        nsm: ours,
        listen: listen.to_owned(),
        stop,
        thread: Some(thread),
    })
}

impl Relay {
    /// The documents issued so far, in order.
    pub fn issued(&self) -> Vec<Vec<u8>> {
        self.nsm.issued()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept; the thread sees the flag and ends.
        let _ = UnixStream::connect(&self.listen);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.listen);
    }
}

/// One QEMU connection: swtpm's answers go back as they are; QEMU's commands go to swtpm,
/// the data-channel descriptor replaced by one of the emulator's.
fn relay_control(qemu: UnixStream, swtpm: UnixStream, nsm: Nsm) {
    let (Ok(mut swtpm_out), Ok(mut qemu_in)) = (swtpm.try_clone(), qemu.try_clone()) else {
        return;
    };
    let down = std::thread::spawn(move || {
        let _ = io::copy(&mut swtpm_out, &mut qemu_in);
        let _ = qemu_in.shutdown(Shutdown::Write);
    });
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = recvmsg(
            &qemu,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        );
        let n = match got {
            Ok(m) if m.bytes > 0 => m.bytes,
            Ok(_) => break,
            Err(e) => {
                log::error!("emulated NitroTPM: control channel: {e}");
                break;
            }
        };
        let fd: Option<OwnedFd> = control.drain().find_map(|m| match m {
            RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        });
        let sent = match fd {
            None => (&swtpm).write_all(&buf[..n]),
            Some(qemu_data) => {
                hand_over_data_channel(&swtpm, &buf[..n], qemu_data, &nsm).map(|t| data.push(t))
            }
        };
        if let Err(e) = sent {
            log::error!("emulated NitroTPM: control channel to swtpm: {e}");
            break;
        }
    }
    let _ = swtpm.shutdown(Shutdown::Write);
    let _ = down.join();
    for t in data {
        let _ = t.join();
    }
}

/// Sends `message` (QEMU's `CMD_SET_DATAFD`) to swtpm with one end of a new socketpair,
/// and relays QEMU's data channel through an emulator over the other end.
fn hand_over_data_channel(
    swtpm: &UnixStream,
    message: &[u8],
    qemu_data: OwnedFd,
    nsm: &Nsm,
) -> io::Result<JoinHandle<()>> {
    let (ours, theirs) = UnixStream::pair()?;
    let fds = [theirs.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for the descriptor"));
    }
    let sent = sendmsg(
        swtpm,
        &[IoSlice::new(message)],
        &mut control,
        SendFlags::empty(),
    )?;
    if sent != message.len() {
        return Err(io::Error::other("short write of CMD_SET_DATAFD"));
    }
    drop(theirs);
    let emulator = Emulator::new(Stream(ours), nsm.clone());
    std::thread::Builder::new()
        .name("nitrotpm-data".into())
        .spawn(move || serve_data(UnixStream::from(qemu_data), emulator))
}

/// One command at a time from QEMU, one response back, until QEMU closes the channel.
fn serve_data(mut qemu: UnixStream, mut emulator: Emulator<Stream>) {
    loop {
        let mut command = vec![0u8; 10];
        if qemu.read_exact(&mut command).is_err() {
            return;
        }
        let size = u32::from_be_bytes([command[2], command[3], command[4], command[5]]) as usize;
        if !(10..=MAX_COMMAND).contains(&size) {
            log::error!("emulated NitroTPM: a command of {size} bytes from the guest; closing");
            return;
        }
        command.resize(size, 0);
        if qemu.read_exact(&mut command[10..]).is_err() {
            return;
        }
        let response = emulator.handle(&command);
        if qemu.write_all(&response).is_err() {
            return;
        }
    }
}
