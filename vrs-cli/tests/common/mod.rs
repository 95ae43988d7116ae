//! Helpers shared by the CLI test crates: the `vrs` binary on a redb store in a test's
//! directory, with the clock stopped, and a tablet account's secret kept where later
//! commands find it.

// Each test crate uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The stopped clock every CLI test runs at (`VRS_NOW`).
pub const NOW: &str = "2021-07-01T09:00:00+09:00";

/// The `vrs` binary with the clock stopped at [`NOW`], no standard input, and no account
/// secret inherited from the caller's environment.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vrs"));
    c.env("VRS_NOW", NOW).env_remove("VRS_ACCOUNT_SECRET").stdin(Stdio::null());
    c
}

/// `vrs --store DIR/vrs.redb`, signed in with the tablet account's secret once
/// [`issue_account`] has kept it in `DIR/account.secret`.
pub fn vrs(dir: &Path) -> Command {
    let mut c = bin();
    c.arg("--store").arg(dir.join("vrs.redb"));
    if let Ok(secret) = std::fs::read_to_string(dir.join("account.secret")) {
        c.env("VRS_ACCOUNT_SECRET", secret.trim());
    }
    c
}

/// `vrs accounts issue` for `args`, keeping the secret it shows once where [`vrs`] finds
/// it; the exit code and everything printed.
pub fn issue_account(dir: &Path, args: &[&str]) -> (i32, String) {
    let mut c = bin();
    let out = c.arg("--store").arg(dir.join("vrs.redb")).args(["--json", "accounts", "issue"]).args(args).output().expect("run vrs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        let v: Value = serde_json::from_str(&stdout).expect("JSON");
        std::fs::write(dir.join("account.secret"), v["secret"].as_str().expect("secret")).expect("write the secret");
    }
    (out.status.code().unwrap_or(-1), format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
}

/// Runs a command: its exit code, standard output and standard error.
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run vrs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs a command that must succeed: its standard output.
pub fn ok(cmd: &mut Command) -> String {
    let (code, out, err) = run(cmd);
    assert_eq!(code, 0, "{cmd:?} failed\nstdout:\n{out}\nstderr:\n{err}");
    out
}

/// Runs a command that must succeed with `--json` added: its output as JSON.
pub fn json(cmd: &mut Command) -> Value {
    let out = ok(cmd.arg("--json"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}
