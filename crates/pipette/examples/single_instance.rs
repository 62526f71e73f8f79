//! One instance per user: the first launch serves, later launches hand it their arguments and
//! exit.
//!
//! ```sh
//! cargo run --example single_instance -- a.txt        # primary: opens a.txt, keeps running
//! cargo run --example single_instance -- b.txt c.txt  # forwards, prints "forwarded", exits
//! ```
//!
//! Copy it: the loop handles the one race a library call cannot, a primary that exits (or
//! crashes) after this launch connected to it but before it acknowledged; this launch then
//! decides again, and may become the primary itself.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use pipette::{single_instance, Error, Instance};

/// The endpoint name: one per app (and per user, which pipette adds).
const NAME: &str = "pipette-example-single-instance";

fn main() -> ExitCode {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let instance = match single_instance(NAME) {
            Ok(instance) => instance,
            Err(e) => {
                eprintln!("single instance: {e}");
                return ExitCode::FAILURE;
            }
        };
        match instance {
            Instance::Primary(primary) => {
                // Our own arguments first, as if forwarded.
                let args: Vec<OsString> = std::env::args_os().collect();
                open(&args[1..], std::env::current_dir().ok().as_deref());
                // Then every later launch, until the process ends (the name is freed on exit,
                // or by primary.shutdown_handle().shutdown() from another thread).
                loop {
                    match primary.recv() {
                        Ok(launch) => {
                            let args = launch.args().get(1..).unwrap_or_default();
                            open(args, launch.cwd())
                        }
                        Err(Error::Shutdown) => return ExitCode::SUCCESS,
                        // A passing condition (out of descriptors, say): the primary keeps
                        // the name and goes on; exiting here would drop later launches.
                        Err(e) => {
                            eprintln!("primary: {e}");
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                    }
                }
            }
            Instance::Secondary(secondary) => match secondary.forward_current() {
                Ok(()) => {
                    println!("forwarded to the running instance");
                    return ExitCode::SUCCESS;
                }
                // Not acknowledged: the primary went away (closed, killed, shutting down, hung)
                // after we connected. Decide again: we may be the primary now.
                Err(e) if attempts < 5 => {
                    eprintln!("forward not acknowledged ({e}), deciding again");
                    continue;
                }
                Err(e) => {
                    eprintln!("could not forward to the running instance: {e}");
                    return ExitCode::FAILURE;
                }
            },
        }
    }
}

/// What the app does with a launch's arguments; relative paths are relative to `cwd`.
fn open(args: &[OsString], cwd: Option<&Path>) {
    for arg in args {
        let path = match cwd {
            Some(cwd) => cwd.join(arg),
            None => arg.into(),
        };
        println!("open {}", path.display());
    }
}
