//! Descriptors sent with bytes (`SCM_RIGHTS`), without waiting: what the shared-memory
//! transport hands over in the handshake, and what messages with descriptors carry.
//!
//! The kernel attaches the descriptors to the first byte of the bytes sent with them; a
//! receive that takes that byte takes them too (a Unix stream socket never returns bytes of
//! two sends with descriptors in one receive). Received descriptors are close-on-exec: at once
//! where `MSG_CMSG_CLOEXEC` exists (Linux, FreeBSD), right after the receive on macOS (the
//! same race as for accepted sockets there, see `socket.rs`).

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Mutex;

use rustix::net::{
    self, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The most descriptors one send may carry (Linux's `SCM_MAX_FD`; the smallest limit of the
/// supported systems).
pub(crate) const MAX_FDS: usize = 253;

#[cfg(not(target_os = "macos"))]
const SEND: SendFlags = SendFlags::DONTWAIT.union(SendFlags::NOSIGNAL);
#[cfg(target_os = "macos")]
const SEND: SendFlags = SendFlags::DONTWAIT;

#[cfg(not(target_os = "macos"))]
const RECV: RecvFlags = RecvFlags::DONTWAIT.union(RecvFlags::CMSG_CLOEXEC);
#[cfg(target_os = "macos")]
const RECV: RecvFlags = RecvFlags::DONTWAIT;

/// Sends `bufs` (in order) with `fds` attached, without waiting: `WouldBlock` when the
/// socket has no room. Returns how many bytes went out; the descriptors went with the first
/// of them (none go out when no byte does). At most [`MAX_FDS`] descriptors.
pub(crate) fn send_with_fds(
    socket: BorrowedFd<'_>,
    bufs: &[&[u8]],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} descriptors in one send; at most {MAX_FDS}", fds.len()),
        ));
    }
    let iov: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other(
            "no room for the descriptors' control message",
        ));
    }
    Ok(net::sendmsg(socket, &iov, &mut control, SEND)?)
}

/// Receives into `buf` without waiting (`WouldBlock` when nothing is there; 0 at end of
/// stream), appending the descriptors that came with the bytes to `fds`. Room is made for up
/// to `max_fds` of them: descriptors beyond that, or beyond what this process may open, are
/// closed by the kernel, and then this fails (the bytes are gone with them) so that the loss
/// is never silent.
#[cfg(any(target_os = "linux", test))] // the shared-memory handover, and the tests below
pub(crate) fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    max_fds: usize,
) -> io::Result<usize> {
    let (got, lost) = recv_keeping_bytes(socket, buf, fds, max_fds)?;
    if lost {
        return Err(io::Error::other(format!(
            "descriptors sent with {got} bytes were lost: {LOST}"
        )));
    }
    Ok(got)
}

/// Why descriptors are lost in a receive.
pub(crate) const LOST: &str = "more came at once than there was room for, or this process has reached its limit of open files (RLIMIT_NOFILE: raise it with `ulimit -n`, or close descriptors)";

/// `recv_with_fds` for a stream whose bytes must not be lost: returns how many bytes
/// arrived and whether descriptors sent with them were lost (closed by the kernel).
pub(crate) fn recv_keeping_bytes(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut impl Extend<OwnedFd>,
    max_fds: usize,
) -> io::Result<(usize, bool)> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(max_fds.max(1)))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buf)];
    let got = net::recvmsg(socket, &mut iov, &mut control, RECV)?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            for fd in received {
                #[cfg(target_os = "macos")]
                rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
                fds.extend(Some(fd));
            }
        }
    }
    Ok((got.bytes, got.flags.contains(ReturnFlags::CTRUNC)))
}

/// Where the descriptors that arrive with a connection's bytes wait for the message that
/// claims them, once the connection takes descriptors: the blocking and the async stream
/// each hold one (`None` until `accept_descriptors`: their reads are then plain `recv`s, and
/// the kernel closes any descriptor a peer attaches).
#[derive(Debug, Default)]
pub(crate) struct Inbox(Mutex<Waiting>);

/// Descriptors received and not yet claimed by a message, in arrival order.
#[derive(Debug, Default)]
struct Waiting {
    fds: VecDeque<OwnedFd>,
    /// Some were lost (closed by the kernel: no room, or `RLIMIT_NOFILE`) since the last
    /// claim.
    lost: bool,
}

/// The most descriptors kept waiting for a message to claim them: two messages' worth (a
/// receive stops after the bytes that brought descriptors, so at most the message being
/// decoded and the next one can have delivered theirs). More is a peer sending descriptors
/// no message claims.
const INBOX_MAX: usize = 2 * MAX_FDS;

/// Why a message's descriptors could not be claimed.
#[derive(Debug)]
pub(crate) enum Unclaimed {
    /// This process could not take them ([`LOST`]).
    Lost,
    /// Fewer arrived than the message says: (said, arrived).
    Missing(usize, usize),
}

impl Inbox {
    /// A receive without waiting (`WouldBlock` when nothing is there) that keeps the
    /// descriptors arriving with the bytes. A peer that piles up descriptors no message
    /// claims fails the read (`InvalidData`).
    #[cold]
    pub(crate) fn recv(&self, fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
        let mut waiting = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (n, lost) = recv_keeping_bytes(fd, buf, &mut waiting.fds, MAX_FDS)?;
        waiting.lost |= lost;
        if waiting.fds.len() > INBOX_MAX {
            waiting.fds.clear();
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the peer sent more than {INBOX_MAX} descriptors that no message claims"),
            ));
        }
        Ok(n)
    }

    /// [`recv`](Inbox::recv) into uninitialised memory (zeroed first: `recvmsg` takes
    /// initialised buffers); returns how many bytes it initialised from the start.
    #[cold]
    pub(crate) fn recv_uninit(
        &self,
        fd: BorrowedFd<'_>,
        spare: &mut [MaybeUninit<u8>],
    ) -> io::Result<usize> {
        spare.fill(MaybeUninit::new(0));
        // SAFETY: every byte was just initialised, and `MaybeUninit<u8>` has the layout of
        // `u8`.
        let buf = unsafe { &mut *(spare as *mut [MaybeUninit<u8>] as *mut [u8]) };
        self.recv(fd, buf)
    }

    /// Every descriptor waiting, in arrival order (the inbox is done with).
    #[cfg(target_os = "linux")] // a hello's shared memory
    pub(crate) fn into_fds(self) -> Vec<OwnedFd> {
        let waiting = self.0.into_inner().unwrap_or_else(|e| e.into_inner());
        waiting.fds.into()
    }

    /// Takes the `n` descriptors that the message just decoded carries from `inbox` (the
    /// oldest unclaimed ones: they came with its header's first byte, or before it). A
    /// stream without an inbox has received none.
    pub(crate) fn claim(inbox: Option<&Inbox>, n: usize) -> Result<Vec<OwnedFd>, Unclaimed> {
        let Some(inbox) = inbox else {
            return Err(Unclaimed::Missing(n, 0));
        };
        let mut waiting = inbox.0.lock().unwrap_or_else(|e| e.into_inner());
        if waiting.fds.len() < n {
            let lost = std::mem::take(&mut waiting.lost);
            return Err(if lost {
                Unclaimed::Lost
            } else {
                Unclaimed::Missing(n, waiting.fds.len())
            });
        }
        Ok(waiting.fds.drain(..n).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn descriptors_travel_with_the_first_byte_and_arrive_close_on_exec() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = rustix::pipe::pipe().unwrap();
        let sent = send_with_fds(a.as_fd(), &[b"he", b"llo"], &[r.as_fd(), w.as_fd()]).unwrap();
        assert_eq!(sent, 5);
        let mut buf = [0u8; 16];
        let mut fds = Vec::new();
        let n = recv_with_fds(b.as_fd(), &mut buf, &mut fds, 4).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 2);
        for fd in &fds {
            let flags = rustix::io::fcntl_getfd(fd).unwrap();
            assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        }
        // The received write end feeds the original read end.
        rustix::io::write(&fds[1], b"x").unwrap();
        let mut one = [0u8; 1];
        assert_eq!(rustix::io::read(&r, &mut one).unwrap(), 1);
        // Nothing more: WouldBlock, not a wait.
        let e = recv_with_fds(b.as_fd(), &mut buf, &mut fds, 4).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn descriptors_beyond_the_room_are_reported_lost() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = rustix::pipe::pipe().unwrap();
        // The buffer for one descriptor has some slack for alignment: send well over it.
        let many: Vec<BorrowedFd<'_>> = (0..16).map(|_| r.as_fd()).collect();
        send_with_fds(a.as_fd(), &[b"x"], &many).unwrap();
        let mut buf = [0u8; 4];
        let mut fds = Vec::new();
        let e = recv_with_fds(b.as_fd(), &mut buf, &mut fds, 1).unwrap_err();
        assert!(e.to_string().contains("were lost"), "{e}");
        assert!(
            fds.len() < 16,
            "some were dropped, and those that came are owned"
        );
        drop(w);
        let too_many: Vec<BorrowedFd<'_>> = (0..=MAX_FDS).map(|_| r.as_fd()).collect();
        let e = send_with_fds(a.as_fd(), &[b"x"], &too_many).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
