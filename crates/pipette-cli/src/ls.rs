//! `pipette ls` and `pipette clean`: this user's endpoints, and the leftovers of dead
//! servers.

use std::io::{self, Write};

use pipette::{EndpointInfo, Error, Liveness};

use crate::fail::{chain, Code, Context, Doing, Failure};
use crate::logging::report;
use crate::output::reader_gone;

fn state(e: &EndpointInfo) -> (&'static str, Option<u32>) {
    match e.liveness {
        Liveness::Live { pid } => ("live", pid),
        Liveness::Stale => ("stale", None),
        _ => ("absent", None),
    }
}

fn endpoints() -> Result<Vec<EndpointInfo>, Failure> {
    pipette::endpoints()
        .map_err(|e| Failure::other(format!("cannot list the endpoints: {}", chain(&e))))
}

/// Writes `text` to standard output; a reader that went away is not an error.
fn print(text: &[u8]) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Err(e) if !reader_gone(&e) => Err(Failure::io("cannot write the output", &e)),
        _ => Ok(()),
    }
}

/// `pipette ls`: one line per endpoint (name, state, path, tab-separated), or JSON.
pub fn ls(json: bool) -> Result<(), Failure> {
    let all = endpoints()?;
    if json {
        let list: Vec<serde_json::Value> = all
            .iter()
            .map(|e| {
                let (state, pid) = state(e);
                serde_json::json!({
                    "name": e.name,
                    "state": state,
                    "pid": pid,
                    "path": e.path.display().to_string(),
                })
            })
            .collect();
        let mut text = serde_json::to_vec_pretty(&list).expect("JSON of strings and numbers");
        text.push(b'\n');
        return print(&text);
    }
    if all.is_empty() {
        report("no endpoints: this user serves no name (live or stale)");
        return Ok(());
    }
    let mut text = String::new();
    for e in &all {
        text.push_str(&format!(
            "{}\t{}\t{}\n",
            e.name,
            state(e).0,
            e.path.display()
        ));
    }
    print(text.as_bytes())
}

/// `pipette clean`: removes the stale endpoints named (default: all of this user's), never a
/// live one.
pub fn clean(names: &[String]) -> Result<(), Failure> {
    let names: Vec<String> = if names.is_empty() {
        let stale: Vec<String> = endpoints()?
            .into_iter()
            .filter(|e| e.liveness == Liveness::Stale)
            .map(|e| e.name)
            .collect();
        if stale.is_empty() {
            report("nothing to clean: no stale endpoints");
            return Ok(());
        }
        stale
    } else {
        names.to_vec()
    };
    let mut first_failure: Option<Failure> = None;
    let mut text = String::new();
    for name in &names {
        match pipette::remove_stale(name.as_str()) {
            Ok(true) => text.push_str(&format!("removed {name}\n")),
            Ok(false) => report(&format!("nothing to remove at {name:?}")),
            Err(e @ Error::AddrInUse { .. }) => {
                report(&format!(
                    "left {name:?} alone: {}",
                    chain(&e).replace("stop that server or pick another name", "it is live")
                ));
                first_failure.get_or_insert(Failure::new(Code::Other, format!("{name:?} is live")));
            }
            Err(e) => {
                let f = Context {
                    name,
                    max_size: 0,
                    doing: Doing::Bind,
                }
                .failure(&e);
                report(&f.message);
                first_failure.get_or_insert(f);
            }
        }
    }
    print(text.as_bytes())?;
    match first_failure {
        // Each failure has been reported already: only the exit status is left to give.
        Some(f) => Err(Failure::new(f.code, String::new())),
        None => Ok(()),
    }
}
