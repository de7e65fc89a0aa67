//! CSV exporter (hyperfine's model: a pure function from the table to bytes): a header row, numbers at full
//! precision so the CSV round-trips what the table holds.

use crate::report::table::{Cell, Table};
use crate::{Error, Result};

/// CSV bytes with a header; numbers at full precision (`NaN`, `inf` spelled out).
pub fn csv(t: &Table) -> Result<Vec<u8>> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let err = |e: ::csv::Error| Error::report(format!("table {}: csv: {e}", t.name));
    w.write_record(&t.columns).map_err(err)?;
    for r in &t.rows {
        let rec: Vec<String> = r
            .iter()
            .map(|c| match c {
                Cell::Text(s) => s.clone(),
                Cell::Num(v) | Cell::Mark(v) => format!("{v}"),
            })
            .collect();
        w.write_record(&rec).map_err(err)?;
    }
    w.into_inner().map_err(|e| Error::report(format!("table {}: csv: {e}", t.name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::table::tests::sample;

    #[test]
    fn csv_bytes() {
        let b = csv(&sample()).unwrap();
        assert_eq!(String::from_utf8(b).unwrap(), "method,emd,note\ndas,0.27345678,a|b\nddim,NaN,<x>\n");
        let mut t = Table::new("x", "T", "C.", &["0.5*a+0.5*b", "a"]);
        t.push(vec![Cell::Mark(1.5), Cell::Num(2.0)]);
        assert_eq!(String::from_utf8(csv(&t).unwrap()).unwrap(), "0.5*a+0.5*b,a\n1.5,2\n");
    }
}
