//! A small typed table and its exporters: markdown, CSV, parquet (through polars) and HTML. Every report table
//! is built as a [`Table`] so the four formats always agree.

use std::fmt::Write as _;
use std::path::Path;

use polars::prelude::*;

use crate::numerics::write_atomic;
use crate::{Error, Result};

/// One table cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// Text.
    Text(String),
    /// A number (NaN = missing).
    Num(f64),
    /// A number that stands out (the guiding reward of a cross-reward row): bold in markdown and HTML, a plain
    /// number in CSV and parquet.
    Mark(f64),
}

impl Cell {
    /// The number of a numeric cell.
    fn num(&self) -> Option<f64> {
        match self {
            Cell::Num(v) | Cell::Mark(v) => Some(*v),
            Cell::Text(_) => None,
        }
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::Text(s.to_string())
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::Text(s)
    }
}

impl From<f64> for Cell {
    fn from(v: f64) -> Self {
        Cell::Num(v)
    }
}

/// A named table with a one-sentence caption.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    /// File stem (`tables/<name>.{md,csv,parquet}`).
    pub name: String,
    /// Heading.
    pub title: String,
    /// What the table shows, in a sentence or two.
    pub caption: String,
    /// Column names.
    pub columns: Vec<String>,
    /// Rows (each as long as `columns`).
    pub rows: Vec<Vec<Cell>>,
}

/// Numbers as a reader wants them: four significant digits, plain notation for ordinary magnitudes.
pub fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        return String::new();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e6).contains(&a) {
        return format!("{v:.3e}");
    }
    if v.fract() == 0.0 && a < 1e6 {
        return format!("{v:.0}");
    }
    let digits = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    format!("{v:.digits$}")
}

impl Table {
    /// A table with the given columns and no rows.
    pub fn new(name: &str, title: &str, caption: &str, columns: &[&str]) -> Self {
        Table {
            name: name.into(),
            title: title.into(),
            caption: caption.into(),
            columns: columns.iter().map(|s| s.to_string()).collect(),
            rows: vec![],
        }
    }

    /// Append a row; panics in debug builds if its width is wrong.
    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len(), "row width of table {}", self.name);
        self.rows.push(row);
    }

    /// Whether column `j` holds only numbers.
    fn numeric(&self, j: usize) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(|r| r[j].num().is_some())
    }

    fn text(c: &Cell) -> String {
        match c {
            Cell::Text(s) => s.clone(),
            Cell::Num(v) | Cell::Mark(v) => fmt_num(*v),
        }
    }

    /// GitHub-flavoured markdown (numbers right-aligned; `|` and `*`, as in weighted-sum labels, escaped; marked
    /// numbers bold).
    pub fn to_markdown(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|").replace('*', "\\*");
        let cell = |c: &Cell| match c {
            Cell::Mark(v) if !v.is_nan() => format!("**{}**", fmt_num(*v)),
            c => esc(&Self::text(c)),
        };
        let mut s = format!("### {}\n\n{}\n\n", self.title, self.caption);
        s += &format!("| {} |\n", self.columns.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | "));
        let align: Vec<&str> = (0..self.columns.len()).map(|j| if self.numeric(j) { "---:" } else { "---" }).collect();
        s += &format!("|{}|\n", align.join("|"));
        for r in &self.rows {
            s += &format!("| {} |\n", r.iter().map(cell).collect::<Vec<_>>().join(" | "));
        }
        s
    }

    /// CSV bytes with a header; numbers at full precision (`NaN`, `inf` spelled out).
    pub fn to_csv(&self) -> Result<Vec<u8>> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let err = |e: csv::Error| Error::report(format!("table {}: csv: {e}", self.name));
        w.write_record(&self.columns).map_err(err)?;
        for r in &self.rows {
            let rec: Vec<String> = r
                .iter()
                .map(|c| match c {
                    Cell::Text(s) => s.clone(),
                    Cell::Num(v) | Cell::Mark(v) => format!("{v}"),
                })
                .collect();
            w.write_record(&rec).map_err(err)?;
        }
        w.into_inner().map_err(|e| Error::report(format!("table {}: csv: {e}", self.name)))
    }

    /// A polars frame: numeric columns as f64, the others as strings.
    pub fn to_frame(&self) -> Result<DataFrame> {
        let cols: Vec<Column> = (0..self.columns.len())
            .map(|j| {
                let name = self.columns[j].as_str().into();
                if self.numeric(j) {
                    let v: Vec<f64> = self.rows.iter().map(|r| r[j].num().unwrap_or(f64::NAN)).collect();
                    Column::new(name, v)
                } else {
                    let v: Vec<String> = self.rows.iter().map(|r| Self::text(&r[j])).collect();
                    Column::new(name, v)
                }
            })
            .collect();
        DataFrame::new(self.rows.len(), cols).map_err(|e| Error::report(format!("table {}: {e}", self.name)))
    }

    /// An HTML `<table>` (escaped), numbers right-aligned.
    pub fn to_html(&self) -> String {
        let mut s = String::from("<table>\n<thead><tr>");
        for c in &self.columns {
            let _ = write!(s, "<th>{}</th>", html_escape(c));
        }
        s += "</tr></thead>\n<tbody>\n";
        for r in &self.rows {
            s += "<tr>";
            for c in r {
                match c {
                    Cell::Num(v) => {
                        let _ = write!(s, "<td class=\"num\">{}</td>", html_escape(&fmt_num(*v)));
                    }
                    Cell::Mark(v) => {
                        let _ = write!(s, "<td class=\"num mark\"><b>{}</b></td>", html_escape(&fmt_num(*v)));
                    }
                    Cell::Text(t) => {
                        let _ = write!(s, "<td>{}</td>", html_escape(t));
                    }
                }
            }
            s += "</tr>\n";
        }
        s += "</tbody>\n</table>\n";
        s
    }

    /// Write `dir/<name>.md`, `.csv` and `.parquet` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
        write_atomic(&dir.join(format!("{}.md", self.name)), self.to_markdown().as_bytes())?;
        write_atomic(&dir.join(format!("{}.csv", self.name)), &self.to_csv()?)?;
        let mut df = self.to_frame()?;
        let mut buf = Vec::new();
        ParquetWriter::new(&mut buf)
            .finish(&mut df)
            .map_err(|e| Error::report(format!("table {}: parquet: {e}", self.name)))?;
        write_atomic(&dir.join(format!("{}.parquet", self.name)), &buf)
    }
}

/// Escape text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new("t", "A | table", "Caption.", &["method", "emd", "note"]);
        t.push(vec!["das".into(), 0.27345678.into(), "a|b".into()]);
        t.push(vec!["ddim".into(), f64::NAN.into(), "<x>".into()]);
        t
    }

    #[test]
    fn markdown_bytes() {
        assert_eq!(
            sample().to_markdown(),
            "### A | table\n\nCaption.\n\n| method | emd | note |\n|---|---:|---|\n| das | 0.2735 | a\\|b |\n| ddim |  | <x> |\n"
        );
    }

    #[test]
    fn csv_bytes() {
        let b = sample().to_csv().unwrap();
        assert_eq!(String::from_utf8(b).unwrap(), "method,emd,note\ndas,0.27345678,a|b\nddim,NaN,<x>\n");
    }

    #[test]
    fn parquet_round_trip_keeps_types() {
        let dir = tempfile::tempdir().unwrap();
        sample().write(dir.path()).unwrap();
        let f = std::fs::File::open(dir.path().join("t.parquet")).unwrap();
        let df = ParquetReader::new(f).finish().unwrap();
        assert_eq!(df.shape(), (2, 3));
        let emd = df.column("emd").unwrap().f64().unwrap();
        assert_eq!(emd.get(0), Some(0.27345678));
        assert!(emd.get(1).unwrap().is_nan());
        assert_eq!(df.column("method").unwrap().str().unwrap().get(1), Some("ddim"));
    }

    #[test]
    fn marked_numbers_and_weighted_sum_labels() {
        let mut t = Table::new("x", "T", "C.", &["0.5*a+0.5*b", "a"]);
        t.push(vec![Cell::Mark(1.5), Cell::Num(2.0)]);
        assert_eq!(t.to_markdown(), "### T\n\nC.\n\n| 0.5\\*a+0.5\\*b | a |\n|---:|---:|\n| **1.500** | 2 |\n");
        assert!(t.to_html().contains("<td class=\"num mark\"><b>1.500</b></td>"));
        assert_eq!(String::from_utf8(t.to_csv().unwrap()).unwrap(), "0.5*a+0.5*b,a\n1.5,2\n");
        let df = t.to_frame().unwrap();
        assert_eq!(df.column("0.5*a+0.5*b").unwrap().f64().unwrap().get(0), Some(1.5));
    }

    #[test]
    fn html_escapes() {
        let h = sample().to_html();
        assert!(h.contains("<td>&lt;x&gt;</td>") && h.contains("<td class=\"num\">0.2735</td>"), "{h}");
    }

    #[test]
    fn number_format() {
        assert_eq!(fmt_num(1234.5678), "1235");
        assert_eq!(fmt_num(12.345678), "12.35");
        assert_eq!(fmt_num(0.0123456), "0.01235");
        assert_eq!(fmt_num(100.0), "100");
        assert_eq!(fmt_num(2.5e7), "2.500e7");
        assert_eq!(fmt_num(f64::NEG_INFINITY), "-inf");
    }
}
