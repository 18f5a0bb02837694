//! How long-running library work tells the person watching what it is doing, without printing
//! anything itself: training, a study's runs, downloads and the bench report through a
//! [`Progress`], which the binary implements with terminal bars (`src/cli.rs`). Library callers
//! and tests that want silence pass [`Silent`].

/// Where progress goes. One bar at a time: [`Progress::begin`] replaces any bar still up.
pub trait Progress: Send + Sync {
    /// A line worth keeping in a log: "downloading URL", "finished run X (test accuracy …)".
    fn note(&self, line: &str);
    /// A line of the command's own result, shown as soon as it is known (a bench row).
    fn result(&self, line: &str);
    /// Put up a bar titled `label` over `total` units (`None`: length unknown), `position`
    /// of them already done.
    fn begin(&self, label: &str, total: Option<u64>, position: u64);
    /// Move the bar to `position`, with a short status.
    fn advance(&self, position: u64, status: &str);
    /// Take the bar down.
    fn end(&self);
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn note(&self, _line: &str) {}
    fn result(&self, _line: &str) {}
    fn begin(&self, _label: &str, _total: Option<u64>, _position: u64) {}
    fn advance(&self, _position: u64, _status: &str) {}
    fn end(&self) {}
}
