//! How the binary shows long-running work: notes on stderr, result lines on stdout, and one
//! progress bar, drawn only when stderr is a terminal. The library reports through
//! [`Progress`] and never prints.

use std::io::IsTerminal;

use bn_exp::progress::{Progress, Silent};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The terminal's view of long-running work: notes on stderr, result lines on stdout, and one
/// progress bar drawn only when stderr is a terminal (notes then print above it).
pub struct Terminal {
    bar: std::sync::Mutex<Option<ProgressBar>>,
    draw: bool,
}

impl Terminal {
    pub fn new() -> Self {
        Terminal {
            bar: std::sync::Mutex::new(None),
            draw: std::io::stderr().is_terminal(),
        }
    }

    /// Run `f` with the bar (if any) out of the way.
    fn around_bar(&self, f: impl FnOnce()) {
        match self.bar.lock().ok().as_deref().and_then(Option::as_ref) {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }
}

/// Where a command's progress goes: nowhere with `--quiet`.
pub fn terminal(quiet: bool) -> Box<dyn Progress> {
    if quiet {
        Box::new(Silent)
    } else {
        Box::new(Terminal::new())
    }
}

impl Progress for Terminal {
    fn note(&self, line: &str) {
        self.around_bar(|| eprintln!("{line}"));
    }

    fn result(&self, line: &str) {
        self.around_bar(|| println!("{line}"));
    }

    fn begin(&self, label: &str, total: Option<u64>, position: u64) {
        if !self.draw {
            return;
        }
        let bar = match total {
            Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
            None => ProgressBar::new_spinner(),
        };
        let template = match total {
            Some(_) => "{prefix} [{bar:30}] {percent:>3}%  {msg}  ETA {eta}",
            None => "{prefix} {spinner} {msg}",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        bar.set_position(position);
        if let Ok(mut slot) = self.bar.lock()
            && let Some(old) = slot.replace(bar)
        {
            old.finish_and_clear();
        }
    }

    fn advance(&self, position: u64, status: &str) {
        if let Some(bar) = self.bar.lock().ok().as_deref().and_then(Option::as_ref) {
            bar.set_position(position);
            bar.set_message(status.to_string());
        }
    }

    fn end(&self) {
        if let Some(bar) = self.bar.lock().ok().and_then(|mut slot| slot.take()) {
            bar.finish_and_clear();
        }
    }
}
