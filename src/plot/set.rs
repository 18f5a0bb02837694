//! The runs being plotted, grouped ([`super::groups`]), which every figure builder starts
//! from, and the warnings collected while plotting them.

use crate::groups::{Leaves, flatten};
use crate::run::Run;

use super::groups::{Group, group_runs};

/// Warnings collected while plotting, kept in the plot report for the caller to show.
#[derive(Debug, Default)]
pub struct Diagnostics {
    pub warnings: Vec<String>,
}

impl Diagnostics {
    pub fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }
}

/// The runs being plotted, grouped; what every figure builder starts from.
pub struct PlotSet {
    pub runs: Vec<Run>,
    pub groups: Vec<Group>,
}

impl PlotSet {
    pub fn new(runs: Vec<Run>) -> Self {
        let groups = group_runs(&runs);
        Self { runs, groups }
    }

    /// The runs of a group, first seed first.
    pub fn runs_of<'a>(&'a self, group: &'a Group) -> impl Iterator<Item = &'a Run> + 'a {
        group.runs.iter().map(|&i| &self.runs[i])
    }

    /// The value of `key` when every run agrees on it, for subtitles ("mnist, mlp, sigmoid").
    pub fn common_value(&self, key: &str) -> Option<String> {
        let flats: Vec<Leaves> = self.runs.iter().map(|r| flatten(&r.config)).collect();
        let first = flats.first()?.get(key)?;
        if flats.iter().all(|f| f.get(key) == Some(first)) && !first.is_null() {
            Some(crate::labels::value_text(Some(first)))
        } else {
            None
        }
    }

    /// "mnist, mlp, sigmoid": what all runs share, to say in a subtitle.
    pub fn context(&self) -> String {
        ["dataset", "model.arch", "model.activation"]
            .iter()
            .filter_map(|k| self.common_value(k))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
