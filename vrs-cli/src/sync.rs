//! `vrs sync apply`: a tablet's sync batch applied to the store through vrs-core, which
//! decides everything (idempotency, conflicts, the reply); this only reads and prints.

use std::fmt::Write as _;
use std::io::Read as _;

use vrs_core::sync::{EntryStatus, SyncBatch, SyncReply};

use crate::app::App;
use crate::cli::{SyncApplyArgs, SyncCommand};
use crate::error::{CliError, CliResult, read_error, write_error};
use crate::output::Report;

/// `vrs sync ...`.
pub async fn run(app: &App, cmd: &SyncCommand) -> CliResult<Report> {
    match cmd {
        SyncCommand::Apply(a) => apply(app, a).await,
    }
}

fn read_batch(a: &SyncApplyArgs) -> CliResult<SyncBatch> {
    let text = if a.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| read_error(&a.file, e))?;
        s
    } else {
        std::fs::read_to_string(&a.file).map_err(|e| read_error(&a.file, e))?
    };
    Ok(SyncBatch::from_json(&text)?)
}

/// Plain-text account of a reply: counts, then every entry not simply applied.
pub fn reply_text(reply: &SyncReply) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "batch {} of account {}: {} entries", reply.batch_id, reply.account, reply.entries.len());
    for status in [EntryStatus::Applied, EntryStatus::Replayed, EntryStatus::Rejected, EntryStatus::Conflict, EntryStatus::Retry] {
        let n = reply.count(status);
        if n > 0 {
            let _ = writeln!(t, "  {:<9} {n}", status.as_str());
        }
    }
    for e in reply.entries.iter().filter(|e| !matches!(e.status, EntryStatus::Applied | EntryStatus::Replayed)) {
        let _ = writeln!(t, "  {} {}: {}", e.status.as_str(), e.entry_id, e.message.as_deref().unwrap_or(""));
    }
    t
}

async fn apply(app: &App, a: &SyncApplyArgs) -> CliResult<Report> {
    let batch = read_batch(a)?;
    let actor = crate::app::site_actor(app, batch.account.as_str()).await?;
    let reply = app.registry.apply_sync_batch(&actor, &batch).await?;
    if let Some(path) = &a.reply {
        std::fs::write(path, reply.to_json()).map_err(|e| write_error(path, e))?;
    }
    if reply.entries.len() != batch.entries.len() {
        return Err(CliError::Failure("the reply does not answer every entry".into()));
    }
    Ok(Report::new(reply_text(&reply), &reply))
}
