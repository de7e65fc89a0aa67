//! `alignbench report`: tables, figures and one HTML page built only from what runs stored under `results/`
//! (`<experiment>/metrics.parquet`, `prompts.parquet` where an image problem wrote one, `cells/*.json`,
//! `config.yaml`), so figures are rebuilt without sampling again. Image experiments get the cross-reward matrix per
//! configuration and per prompt (`cross`; FMNIST-align's own tables and figures in `mini`).
//!
//! Summaries are over seeds (mean, std, n, 95% Student-t interval, [`stats`]); paired differences against DAS
//! use the seeds two configurations share (common random numbers). Tables are written as markdown, CSV and
//! parquet ([`table`]); figures as PNG and SVG ([`figures`]). The report is assembled in a temporary folder and
//! moved into place at the end, so an interrupted build leaves the previous report intact.

pub mod figures;
pub mod stats;
pub mod table;

mod build;
mod cross;
mod html;
mod mini;

pub use build::{build, ReportOptions, ReportSummary};
