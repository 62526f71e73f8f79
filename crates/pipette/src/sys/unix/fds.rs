//! Descriptors sent with bytes (`SCM_RIGHTS`), without waiting: what the shared-memory
//! transport hands over in the handshake, and what messages with descriptors carry.
//!
//! The kernel attaches the descriptors to the first byte of the bytes sent with them; a
//! receive that takes that byte takes them too (a Unix stream socket never returns bytes of
//! two sends with descriptors in one receive). Received descriptors are close-on-exec: at once
//! where `MSG_CMSG_CLOEXEC` exists (Linux, FreeBSD), right after the receive on macOS (the
//! same race as for accepted sockets there, see `socket.rs`).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

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
