//! Exporters of the report (hyperfine's model: one pure function per format, from the result to bytes, and one
//! place that writes files). Each format is its own file: [`markdown`], [`csv`], [`parquet`] and the [`html`]
//! fragment the page embeds; [`FILES`] lists the formats written next to each other as `tables/<name>.<ext>`.

pub mod csv;
pub mod html;
pub mod markdown;
pub mod parquet;

use super::table::Table;
use crate::Result;

/// An exporter: a table to the bytes of one format.
pub type Exporter = fn(&Table) -> Result<Vec<u8>>;

/// The formats every table is written in, as (file extension, exporter), in the order the page links them.
pub const FILES: [(&str, Exporter); 3] = [("csv", csv::csv), ("parquet", parquet::parquet), ("md", markdown::markdown)];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::table::tests::sample;

    #[test]
    fn every_format_exports_the_sample() {
        for (ext, f) in FILES {
            assert!(!f(&sample()).unwrap().is_empty(), "{ext}");
        }
    }
}
