//! No shared-memory transport on this platform (it needs Linux's memfd and eventfd): the
//! same interface as `sys/unix/shm.rs`, with a region type that cannot exist, so that the
//! drivers compile unchanged and a connection here always stays on its socket.

#![allow(dead_code)]

use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

use crate::proto::ring::{Direction, Layout, Word};

/// Whether this platform has the shared-memory transport.
pub(crate) const SUPPORTED: bool = false;

/// Bytes that follow an agreeing reply (it never agrees here).
pub(crate) const AFTER_REPLY: usize = 0;

/// Never called here (nothing offers the feature).
pub(crate) fn take_handles(_bytes: &[u8], _fds: &mut Vec<Descriptor>) -> io::Result<()> {
    Ok(())
}

/// A descriptor received with the server's reply (none ever is).
#[derive(Debug)]
pub(crate) enum Descriptor {}

/// Which eventfd (see the Linux module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// Bytes were written into a ring.
    Data(Direction),
    /// Room was made in a ring.
    Room(Direction),
}

/// What woke a wait (see the Linux module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// The event.
    Event,
    /// The socket.
    Socket,
    /// The timeout.
    TimedOut,
}

/// A side's own memory, which cannot exist here.
#[derive(Debug)]
pub(crate) enum Memory {}

impl Memory {
    pub(crate) fn create(_layout: Layout) -> io::Result<Memory> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// A region that cannot exist here.
#[derive(Debug)]
pub(crate) enum Region {}

/// A ring writer that cannot exist here.
#[derive(Debug)]
pub(crate) enum RingWriter {}

impl RingWriter {
    pub(crate) fn copy_in(&mut self, _pos: u64, _src: &[u8]) {
        match *self {}
    }
    pub(crate) fn lend(&mut self, _pos: u64, _len: usize) -> &mut [u8] {
        match *self {}
    }
    pub(crate) fn finish_lend(&mut self) {
        match *self {}
    }
}

impl Region {
    pub(crate) fn create(
        _layout: Layout,
        _client: Vec<Descriptor>,
        _pid: Option<u32>,
    ) -> io::Result<Region> {
        Err(io::ErrorKind::Unsupported.into())
    }
    pub(crate) fn open(own: Memory, _fds: Vec<Descriptor>) -> io::Result<Region> {
        match own {}
    }
    pub(crate) fn ring_size(&self, _d: Direction) -> usize {
        match *self {}
    }
    pub(crate) fn index(&self, _d: Direction, _w: Word) -> &AtomicU64 {
        match *self {}
    }
    pub(crate) fn flag(&self, _d: Direction, _w: Word) -> &AtomicU32 {
        match *self {}
    }
    pub(crate) fn copy_out(&self, _pos: u64, _dst: &mut [MaybeUninit<u8>]) {
        match *self {}
    }
    pub(crate) fn copy_out_append(&self, _pos: u64, _dst: &mut Vec<u8>, _n: usize) {
        match *self {}
    }
    pub(crate) fn writer(self: &std::sync::Arc<Self>) -> Option<RingWriter> {
        match **self {}
    }
    pub(crate) fn signal(&self, _e: Event) {
        match *self {}
    }
    pub(crate) fn wait_on(
        &self,
        _e: Event,
        _stream: &super::Stream,
        _timeout: Option<Duration>,
    ) -> io::Result<Woken> {
        match *self {}
    }
}

/// Never called here (nothing offers the feature).
pub(crate) fn read_handover(
    _stream: &super::Stream,
    _buf: &mut [u8],
    _fds: &mut Vec<Descriptor>,
    _timeout: Option<Duration>,
) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Never called here (nothing offers the feature).
#[cfg(feature = "tokio")]
pub(crate) fn try_read_handover(
    _stream: &crate::sys::aio::Stream,
    _buf: &mut [u8],
    _fds: &mut Vec<Descriptor>,
) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

/// An async wait that cannot exist here (see the Linux module).
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub(crate) enum AsyncWait {}

#[cfg(feature = "tokio")]
impl AsyncWait {
    pub(crate) fn new(region: &Region, _which: Event) -> io::Result<AsyncWait> {
        match *region {}
    }
    pub(crate) fn poll_wait(
        &self,
        _cx: &mut std::task::Context<'_>,
        _stream: &crate::sys::aio::Stream,
    ) -> std::task::Poll<io::Result<Woken>> {
        match *self {}
    }
}
