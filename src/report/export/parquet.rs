//! Parquet exporter (hyperfine's model: a pure function from the table to bytes), through a polars frame: numeric
//! columns as f64, the others as strings.

use polars::prelude::*;

use crate::report::table::Table;
use crate::{Error, Result};

/// The table as a polars frame: numeric columns as f64, the others as strings.
pub fn frame(t: &Table) -> Result<DataFrame> {
    let cols: Vec<Column> = (0..t.columns.len())
        .map(|j| {
            let name = t.columns[j].as_str().into();
            if t.numeric(j) {
                let v: Vec<f64> = t.rows.iter().map(|r| r[j].num().unwrap_or(f64::NAN)).collect();
                Column::new(name, v)
            } else {
                let v: Vec<String> = t.rows.iter().map(|r| Table::text(&r[j])).collect();
                Column::new(name, v)
            }
        })
        .collect();
    DataFrame::new(t.rows.len(), cols).map_err(|e| Error::report(format!("table {}: {e}", t.name)))
}

/// Parquet bytes of [`frame`].
pub fn parquet(t: &Table) -> Result<Vec<u8>> {
    let mut df = frame(t)?;
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf)
        .finish(&mut df)
        .map_err(|e| Error::report(format!("table {}: parquet: {e}", t.name)))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::table::tests::sample;
    use crate::report::table::Cell;

    #[test]
    fn parquet_round_trip_keeps_types() {
        let bytes = parquet(&sample()).unwrap();
        let df = ParquetReader::new(std::io::Cursor::new(bytes)).finish().unwrap();
        assert_eq!(df.shape(), (2, 3));
        let emd = df.column("emd").unwrap().f64().unwrap();
        assert_eq!(emd.get(0), Some(0.27345678));
        assert!(emd.get(1).unwrap().is_nan());
        assert_eq!(df.column("method").unwrap().str().unwrap().get(1), Some("ddim"));
        let mut t = Table::new("x", "T", "C.", &["0.5*a+0.5*b", "a"]);
        t.push(vec![Cell::Mark(1.5), Cell::Num(2.0)]);
        assert_eq!(frame(&t).unwrap().column("0.5*a+0.5*b").unwrap().f64().unwrap().get(0), Some(1.5));
    }
}
