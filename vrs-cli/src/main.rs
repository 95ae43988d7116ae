//! `vrs`: the vaccination record system on the command line.
//!
//! An adapter: it parses arguments, opens the store, names the actor and prints what
//! vrs-core decided. No business rule lives here. Exit codes: 0 on success, 2 on bad
//! input (with a report), 1 on any other failure.
//!
//! The clock is the system clock unless `VRS_NOW` is set (e.g.
//! `VRS_NOW=2021-07-01T09:00:00+09:00`), which stops it at that instant for reproducible
//! dates in tests and demonstrations.

mod app;
mod cli;
mod commands;
mod demo;
mod error;
mod generate;
mod import;
mod interchange;
mod output;
mod progress;
mod sync;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::CliError;
use crate::output::Report;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return output::fail(&CliError::Failure(format!("cannot start the async runtime: {e}")), json),
    };
    match runtime.block_on(run(cli)) {
        Ok(report) => output::succeed(&report, json),
        Err(e) => output::fail(&e, json),
    }
}

async fn run(cli: Cli) -> Result<Report, CliError> {
    match cli.command {
        Command::Demo(args) => demo::run(&args, &cli.store).await,
        Command::Gen(cmd) => generate::run(&cmd).await,
        Command::Check => app::check(&cli.store).await,
        Command::Migrate(args) => app::migrate(&cli.store, args.partitioned).await,
        command => {
            let app = app::App::open(&cli.store).await?;
            match command {
                Command::Import(cmd) => import::run(&app, &cmd).await,
                Command::Register(args) => commands::register(&app, &args).await,
                Command::Reconcile(args) => commands::reconcile(&app, &args).await,
                Command::Findings(args) => commands::findings(&app, &args).await,
                Command::Correct(args) => commands::correct(&app, &args).await,
                Command::Void(args) => commands::void(&app, &args).await,
                Command::Doses(args) => commands::doses(&app, &args).await,
                Command::Accounts(cmd) => commands::accounts(&app, &cmd).await,
                Command::Export(cmd) => commands::export(&app, &cmd).await,
                Command::Sync(cmd) => sync::run(&app, &cmd).await,
                Command::Demo(_) | Command::Gen(_) | Command::Check | Command::Migrate(_) => {
                    Err(CliError::Failure("unreachable command".into()))
                }
            }
        }
    }
}
