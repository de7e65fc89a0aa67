//! `alignbench report`: tables, figures and one HTML page built only from what runs stored under `results/`
//! (`<experiment>/metrics.parquet`, `prompts.parquet` where an image problem wrote one, `cells/*.json`,
//! `config.yaml`, `targets/*.json` where a toy run stored its exact target), so the report is rebuilt without
//! sampling again and never rebuilds a problem.
//!
//! The report is built in layers, after criterion's model (measurements are stored; a report is an analysis of
//! the store), each layer reading only the one before it:
//!
//! 1. [`load`] reads the store (polars for the parquet tables, serde for the cell files and target views);
//! 2. [`analysis`] summarises over seeds ([`stats`]: mean, std, n, 95% Student-t interval; paired differences
//!    against DAS over shared seeds, common random numbers) and answers the questions tables and figures ask;
//! 3. [`tables`] builds every [`table::Table`], leaving out those with nothing to show;
//! 4. [`figures`] draws one function per figure into PNG and SVG bytes, or says why a figure is not drawn;
//! 5. [`export`] turns a table into the bytes of one format (markdown, CSV, parquet, HTML fragment), hyperfine's
//!    model of pure exporters, and `build` is the one place that writes files;
//! 6. `html` assembles the page.
//!
//! Which side of a metric is better comes from the metric registry ([`crate::metrics::metric`]); the order
//! methods are shown in from [`analysis::method_order`].

pub mod analysis;
pub mod export;
pub mod figures;
pub mod load;
pub mod stats;
pub mod table;
pub mod tables;

mod build;
mod html;

pub use build::{build, ReportOptions, ReportSummary};

#[cfg(test)]
mod tests;
