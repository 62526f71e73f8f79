//! `pipette`: talk to local processes by name from the command line, "socat with names".
//!
//! `serve`, `listen`, `send`, `call`, `connect`, `ls`, `clean`, plus shell completions and a
//! man page generated from the same clap definitions. Exit statuses are documented in
//! `pipette --help` ([`fail::Code`]).

#![deny(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

mod cli;
mod client;
mod demo;
mod fail;
mod input;
mod logging;
mod ls;
mod output;
mod server;
mod signals;
mod text;

use cli::{Cli, Command};
use fail::Failure;
use input::Source;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    logging::init();
    match run(cli.command, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                logging::report(&f.message);
            }
            ExitCode::from(f.code as u8)
        }
    }
}

fn run(command: Command, matches: &clap::ArgMatches) -> Result<(), Failure> {
    match command {
        Command::Serve(a) => {
            let mode = match a.exec {
                Some(cmd) => server::Mode::Exec(cmd, a.split.into()),
                None => server::Mode::Echo,
            };
            server::run(&a.name, &a.server, mode, a.exit_on_stdin_close)
        }
        Command::Listen(a) => {
            let format = client::output_format(a.server.raw_mode(), a.output.output)?;
            server::run(
                &a.name,
                &a.server,
                server::Mode::Print(format, a.text.encoding()),
                a.exit_on_stdin_close,
            )
        }
        Command::Send(a) => {
            let sub = matches
                .subcommand_matches("send")
                .expect("the send command");
            let indices = |id: &str| -> Vec<usize> {
                sub.indices_of(id).map(|i| i.collect()).unwrap_or_default()
            };
            let sources =
                input::in_order(a.messages, indices("messages"), a.files, indices("files"));
            client::send(&a.name, &a.client, sources, a.split, a.text.encoding())
        }
        Command::Call(a) => {
            let source = match (a.message, a.file) {
                (Some(m), _) => Source::from_arg(&m),
                (None, Some(f)) => Source::File(f),
                (None, None) => {
                    return Err(Failure::usage(
                        "give the message: text, @FILE, --file FILE, or - for standard input",
                    ))
                }
            };
            client::call(
                &a.name,
                &a.client,
                source,
                a.output.output,
                a.text.encoding(),
                a.json,
            )
        }
        Command::Connect(a) => client::connect(
            &a.name,
            &a.client,
            a.split,
            a.output.output,
            a.text.encoding(),
        ),
        Command::Ls(a) => ls::ls(a.json),
        Command::Clean(a) => ls::clean(&a.names),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "pipette", &mut out);
            write_out(&out)
        }
        Command::Man { command } => {
            let top = Cli::command();
            let page = match command {
                None => top,
                Some(name) => {
                    let sub = top
                        .find_subcommand(&name)
                        .ok_or_else(|| Failure::usage(format!("no command {name:?}")))?
                        .clone();
                    let full = format!("pipette-{}", sub.get_name());
                    sub.name(full)
                }
            };
            let mut out = Vec::new();
            clap_mangen::Man::new(page)
                .render(&mut out)
                .map_err(|e| Failure::io("cannot render the man page", &e))?;
            write_out(&out)
        }
        Command::Demo(args) => demo::run(args).map_err(|e| Failure::other(e.to_string())),
        Command::DemoClient(args) => demo::client(args).map_err(|e| Failure::other(e.to_string())),
    }
}

/// Writes generated text to standard output; a reader that went away is not an error.
fn write_out(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if !output::reader_gone(&e) => Err(Failure::io("cannot write the output", &e)),
        _ => Ok(()),
    }
}
