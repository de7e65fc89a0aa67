//! The table model of the report: a named [`Table`] of typed [`Cell`]s with a caption. The tables layer
//! ([`super::tables`]) builds them, the exporters ([`super::export`], one pure function per format, hyperfine's
//! model) turn them into bytes, so every format shows the same rows.

use super::stats::Stat;
use crate::metrics::metric::Direction;

/// One table cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// Text.
    Text(String),
    /// A number (NaN = missing).
    Num(f64),
    /// A number that stands out (the guiding reward of a cross-reward row, or the best of its group by the
    /// metric's direction, [`Table::mark_best`]): bold in markdown and HTML, a plain number in CSV and parquet.
    Mark(f64),
}

impl Cell {
    /// The mean of a summary (NaN when absent).
    pub fn mean(s: Option<&Stat>) -> Self {
        Cell::Num(s.map_or(f64::NAN, |s| s.mean))
    }

    /// The 95% half-width of a summary (NaN when absent).
    pub fn ci(s: Option<&Stat>) -> Self {
        Cell::Num(s.map_or(f64::NAN, |s| s.ci()))
    }

    /// The number of a numeric cell.
    pub fn num(&self) -> Option<f64> {
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
    pub fn numeric(&self, j: usize) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(|r| r[j].num().is_some())
    }

    /// A cell as text (numbers formatted by [`fmt_num`]).
    pub fn text(c: &Cell) -> String {
        match c {
            Cell::Text(s) => s.clone(),
            Cell::Num(v) | Cell::Mark(v) => fmt_num(*v),
        }
    }

    /// The index of a column.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// Mark (bold in markdown and HTML) the best value of column `col` by `direction` within each group of rows
    /// with equal `group` key, among the rows `eligible` keeps; ties are all marked. Nothing is marked for
    /// [`Direction::Neither`] or a group of one row.
    pub fn mark_best<K: Ord>(
        &mut self,
        col: &str,
        direction: Direction,
        group: impl Fn(&[Cell]) -> K,
        eligible: impl Fn(&[Cell]) -> bool,
    ) {
        let Some(j) = self.column(col) else { return };
        if direction == Direction::Neither {
            return;
        }
        let mut groups: std::collections::BTreeMap<K, Vec<usize>> = std::collections::BTreeMap::new();
        for (i, r) in self.rows.iter().enumerate() {
            if eligible(r) && r[j].num().is_some_and(f64::is_finite) {
                groups.entry(group(r)).or_default().push(i);
            }
        }
        for rows in groups.into_values().filter(|g| g.len() > 1) {
            let vals: Vec<f64> = rows.iter().map(|&i| self.rows[i][j].num().unwrap_or(f64::NAN)).collect();
            let best =
                vals.iter().copied().fold(f64::NAN, |b, v| if b.is_nan() || direction.better(v, b) { v } else { b });
            for (&i, &v) in rows.iter().zip(&vals) {
                if v == best {
                    self.rows[i][j] = Cell::Mark(v);
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small table with a number, a missing number and text that needs escaping (the exporters' tests).
    pub(crate) fn sample() -> Table {
        let mut t = Table::new("t", "A | table", "Caption.", &["method", "emd", "note"]);
        t.push(vec!["das".into(), 0.27345678.into(), "a|b".into()]);
        t.push(vec!["ddim".into(), f64::NAN.into(), "<x>".into()]);
        t
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

    #[test]
    fn best_is_marked_per_group_by_direction() {
        let mut t = Table::new("t", "T", "C.", &["group", "emd", "note"]);
        for (g, v) in [("a", 0.3), ("a", 0.1), ("a", f64::NAN), ("b", 0.5), ("c", 2.0), ("c", 2.0), ("a", 0.05)] {
            t.push(vec![g.into(), v.into(), "".into()]);
        }
        // The last row is not eligible (e.g. the noise floor).
        let n = t.rows.len();
        let last = t.rows[n - 1].clone();
        t.mark_best("emd", Direction::LowerIsBetter, |r| Table::text(&r[0]), |r| r != &last[..]);
        let marked: Vec<bool> = t.rows.iter().map(|r| matches!(r[1], Cell::Mark(_))).collect();
        assert_eq!(marked, vec![false, true, false, false, true, true, false]);
        let mut plain = Table::new("t", "T", "C.", &["group", "emd"]);
        plain.push(vec!["a".into(), 1.0.into()]);
        plain.push(vec!["a".into(), 2.0.into()]);
        plain.mark_best("emd", Direction::Neither, |r| Table::text(&r[0]), |_| true);
        assert!(plain.rows.iter().all(|r| matches!(r[1], Cell::Num(_))));
    }
}
