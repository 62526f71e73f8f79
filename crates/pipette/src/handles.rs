//! Messages with handles on Windows (docs/PROTOCOL.md §11, "Windows"), for both drivers:
//! how the sender lays out the payload (its copies' values, then the message) and how the
//! receiver takes the handles of a whole message out of the sender's process. The drivers
//! (`connection/handles.rs`, `tokio/connection/handles.rs`) only keep the state of the
//! message in flight; the Win32 calls are in `sys/windows/handles.rs`.

use std::os::windows::io::{BorrowedHandle, OwnedHandle};

use crate::error::Error;
use crate::sys::handles;

/// Bytes of one handle value at the start of the payload (u64, little-endian).
pub(crate) const VALUE_LEN: usize = 8;

/// The payload of a message with handles: the values of the sender's `copies`, then `msg`.
pub(crate) fn payload(copies: &[OwnedHandle], msg: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(msg.len().saturating_add(VALUE_LEN * copies.len()));
    for c in copies {
        payload.extend_from_slice(&handles::value(c).to_le_bytes());
    }
    payload.extend_from_slice(msg);
    payload
}

/// Takes the `n` handles whose values begin `payload` (a whole message) out of the sender's
/// `process`, in order: the handles (the caller removes the `VALUE_LEN * n` bytes of values
/// from the message), or the protocol error that ends the connection (a payload too short
/// for its values, a value that is no handle of the sender's; the sender's copies are closed
/// all the same).
pub(crate) fn take(
    process: Option<BorrowedHandle<'_>>,
    payload: &[u8],
    n: usize,
) -> Result<Vec<OwnedHandle>, Error> {
    let need = VALUE_LEN * n;
    if payload.len() < need {
        return Err(Error::protocol(format!(
            "a message says it carries {n} handles, but its payload of {} bytes is shorter than their {need} bytes of handle values: the peer does not follow the protocol",
            payload.len()
        )));
    }
    let values: Vec<u64> = payload[..need]
        .chunks_exact(VALUE_LEN)
        .map(|v| u64::from_le_bytes(v.try_into().expect("8 bytes")))
        .collect();
    let Some(process) = process else {
        // `accept_descriptors` opened it before the feature was offered or agreed to.
        return Err(Error::protocol(
            "a message carries handles, but the sender's process was never opened to take them",
        ));
    };
    handles::take(process, &values).map_err(|f| {
        Error::protocol(format!(
            "handle {} of {n} of a message (value {:#x}) could not be taken from the sender's process ({}): the peer does not follow the protocol",
            f.index + 1,
            values[f.index],
            f.error
        ))
    })
}
