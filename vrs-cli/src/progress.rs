//! Progress bars on long work (import, generation, export), drawn only when stderr is
//! a terminal so that pipes and tests see clean output.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar over `len` units (bytes or rows), hidden unless stderr is a terminal.
pub fn bar(len: Option<u64>, what: &str, bytes: bool) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let template = match (len, bytes) {
        (Some(_), true) => "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        (Some(_), false) => "{msg} {wide_bar} {pos}/{len} {per_sec} eta {eta}",
        (None, true) => "{spinner} {msg} {bytes} {bytes_per_sec}",
        (None, false) => "{spinner} {msg} {pos} {per_sec}",
    };
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
    }
    bar.set_message(what.to_owned());
    bar
}
