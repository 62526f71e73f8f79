//! `--instructions TRANSPORT N`: N 64-byte round trips between a client and a server that
//! live in this one thread, for instruction counts that do not depend on scheduling.
//!
//! Two processes (`--profile`) are what users run, but under `callgrind` the count of the
//! measured side changes with how the other side's writes happen to be split into reads.
//! Here every round trip is the same sequence of calls: the client sends, the server
//! receives and sends back, the client receives; every socket already holds what is read,
//! so nothing waits. Run it twice under `valgrind --tool=callgrind` with N and 2N and divide
//! the difference by N: the instructions of one round trip, both ends, user space only.
//!
//! Only APIs that every pipette version since 0.1 has are used (`Server::bind`,
//! `Client::connect`, `send`, `recv_into`, and their tokio twins), so that the same file
//! measures an older tree too.

use std::io::{self, IoSlice, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};

const HEADER_LEN: usize = 8;
const LEN: usize = 64;

fn other<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

fn name() -> String {
    format!("icount-{}", std::process::id())
}

/// Runs `n` round trips over `transport` (raw-uds, pipette, tokio-uds, pipette-async).
pub fn run(transport: &str, n: usize) -> io::Result<()> {
    let msg = vec![7u8; LEN];
    match transport {
        "raw-uds" => {
            let dir = std::env::temp_dir().join(name());
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let path = dir.join("s");
            let listener = UnixListener::bind(&path)?;
            let mut c = UnixStream::connect(&path)?;
            let (mut s, _) = listener.accept()?;
            let mut buf = vec![0u8; LEN];
            let framed = |st: &mut UnixStream, m: &[u8]| -> io::Result<()> {
                let h = (m.len() as u32).to_le_bytes();
                let header = [h[0], h[1], h[2], h[3], 0, 0, 0, 0];
                let n = st.write_vectored(&[IoSlice::new(&header), IoSlice::new(m)])?;
                assert_eq!(n, HEADER_LEN + m.len());
                Ok(())
            };
            let read = |st: &mut UnixStream, buf: &mut Vec<u8>| -> io::Result<()> {
                let mut h = [0u8; HEADER_LEN];
                st.read_exact(&mut h)?;
                let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
                buf.resize(len, 0);
                st.read_exact(buf)
            };
            for _ in 0..n {
                framed(&mut c, &msg)?;
                read(&mut s, &mut buf)?;
                framed(&mut s, &buf)?;
                read(&mut c, &mut buf)?;
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        "pipette" => {
            let name = name();
            let server = pipette::Server::bind(name.as_str()).map_err(other)?;
            let mut c = pipette::Client::connect(name.as_str()).map_err(other)?;
            // The first message carries the handshake; measure steady state after it.
            c.send(&msg).map_err(other)?;
            let mut s = server.accept().map_err(other)?;
            let mut buf = Vec::new();
            s.recv_into(&mut buf).map_err(other)?;
            s.send(&buf).map_err(other)?;
            c.recv_into(&mut buf).map_err(other)?;
            for _ in 0..n {
                c.send(&msg).map_err(other)?;
                s.recv_into(&mut buf).map_err(other)?;
                s.send(&buf).map_err(other)?;
                c.recv_into(&mut buf).map_err(other)?;
            }
        }
        "tokio-uds" | "pipette-async" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                if transport == "tokio-uds" {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let dir = std::env::temp_dir().join(name());
                    let _ = std::fs::remove_dir_all(&dir);
                    std::fs::create_dir_all(&dir)?;
                    let path = dir.join("s");
                    let listener = tokio::net::UnixListener::bind(&path)?;
                    let mut c = tokio::net::UnixStream::connect(&path).await?;
                    let (mut s, _) = listener.accept().await?;
                    let mut buf = vec![0u8; LEN];
                    let mut h = [0u8; HEADER_LEN];
                    let header = {
                        let l = (LEN as u32).to_le_bytes();
                        [l[0], l[1], l[2], l[3], 0, 0, 0, 0]
                    };
                    for _ in 0..n {
                        let w = c
                            .write_vectored(&[IoSlice::new(&header), IoSlice::new(&msg)])
                            .await?;
                        short_write(w)?;
                        s.read_exact(&mut h).await?;
                        s.read_exact(&mut buf).await?;
                        let w = s
                            .write_vectored(&[IoSlice::new(&header), IoSlice::new(&buf)])
                            .await?;
                        short_write(w)?;
                        c.read_exact(&mut h).await?;
                        c.read_exact(&mut buf).await?;
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                } else {
                    let name = name();
                    let server = pipette::tokio::Server::bind(name.as_str()).map_err(other)?;
                    let mut c = pipette::tokio::Client::connect(name.as_str())
                        .await
                        .map_err(other)?;
                    c.send(&msg).await.map_err(other)?;
                    let mut s = server.accept().await.map_err(other)?;
                    let m = s.recv().await.map_err(other)?;
                    s.send(&m).await.map_err(other)?;
                    c.recv().await.map_err(other)?;
                    for _ in 0..n {
                        c.send(&msg).await.map_err(other)?;
                        let m = s.recv().await.map_err(other)?;
                        s.send(&m).await.map_err(other)?;
                        c.recv().await.map_err(other)?;
                    }
                }
                Ok::<(), io::Error>(())
            })?;
        }
        other => {
            return Err(io::Error::other(format!(
                "--instructions supports raw-uds, pipette, tokio-uds, pipette-async, not {other}"
            )))
        }
    }
    Ok(())
}

/// The baselines write a small message with one call; a short write would need a loop
/// the pipette paths have and the baseline is meant to leave out.
fn short_write(written: usize) -> io::Result<()> {
    if written == HEADER_LEN + LEN {
        Ok(())
    } else {
        Err(io::Error::other(format!("short write: {written} bytes")))
    }
}
