//! The figure model of the figures layer: a [`Figure`] is its file stem, caption and either its two encodings
//! ([`Rendered`], bytes in memory; the build writes them, hyperfine's model) or the reason it is not drawn, so the
//! page says why instead of leaving it out silently.

use crate::metrics::metric::{self, Direction};
use crate::Result;

/// A figure's two encodings.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// PNG bytes.
    pub png: Vec<u8>,
    /// SVG text.
    pub svg: String,
}

/// Whether a figure was drawn.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Drawn.
    Drawn(Rendered),
    /// Not drawn, and why (one line for the page).
    NotDrawn(String),
}

/// One figure of the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// File stem (`figures/<stem>.{png,svg}`).
    pub stem: String,
    /// What the figure shows.
    pub caption: String,
    /// What is missing from a drawn figure, and why (e.g. no stored target density).
    pub note: Option<String>,
    /// The drawing, or why there is none.
    pub outcome: Outcome,
}

impl Figure {
    /// A figure from a drawing attempt: a drawing error becomes the reason it is not drawn.
    pub fn from_result(stem: String, caption: String, drawn: Result<Rendered>) -> Self {
        let outcome = match drawn {
            Ok(r) => Outcome::Drawn(r),
            Err(e) => Outcome::NotDrawn(format!("drawing failed: {e}")),
        };
        Figure { stem, caption, note: None, outcome }
    }

    /// A figure that applies but cannot be drawn.
    pub fn not_drawn(stem: String, caption: String, why: String) -> Self {
        Figure { stem, caption, note: None, outcome: Outcome::NotDrawn(why) }
    }

    /// Whether it was drawn.
    pub fn drawn(&self) -> bool {
        matches!(self.outcome, Outcome::Drawn(_))
    }
}

/// An axis label naming which side is better (from the metric registry): "`label` (lower is better)".
pub fn axis_label(label: &str, metric_name: &str) -> String {
    match metric::direction(metric_name) {
        Direction::Neither => label.to_string(),
        d => format!("{label} ({})", d.phrase()),
    }
}
