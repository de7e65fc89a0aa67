//! Markdown exporter (hyperfine's model: a pure function from the table to bytes): GitHub-flavoured markdown with
//! the title as a heading and the caption as a paragraph.

use crate::report::table::{fmt_num, Cell, Table};
use crate::Result;

/// GitHub-flavoured markdown (numbers right-aligned; `|` and `*`, as in weighted-sum labels, escaped; marked
/// numbers bold).
pub fn markdown(t: &Table) -> Result<Vec<u8>> {
    let esc = |s: &str| s.replace('|', "\\|").replace('*', "\\*");
    let cell = |c: &Cell| match c {
        Cell::Mark(v) if !v.is_nan() => format!("**{}**", fmt_num(*v)),
        c => esc(&Table::text(c)),
    };
    let mut s = format!("### {}\n\n{}\n\n", t.title, t.caption);
    s += &format!("| {} |\n", t.columns.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | "));
    let align: Vec<&str> = (0..t.columns.len()).map(|j| if t.numeric(j) { "---:" } else { "---" }).collect();
    s += &format!("|{}|\n", align.join("|"));
    for r in &t.rows {
        s += &format!("| {} |\n", r.iter().map(cell).collect::<Vec<_>>().join(" | "));
    }
    Ok(s.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::table::tests::sample;

    #[test]
    fn markdown_bytes() {
        assert_eq!(
            String::from_utf8(markdown(&sample()).unwrap()).unwrap(),
            "### A | table\n\nCaption.\n\n| method | emd | note |\n|---|---:|---|\n| das | 0.2735 | a\\|b |\n| ddim |  | <x> |\n"
        );
    }

    #[test]
    fn marked_numbers_and_weighted_sum_labels() {
        let mut t = Table::new("x", "T", "C.", &["0.5*a+0.5*b", "a"]);
        t.push(vec![Cell::Mark(1.5), Cell::Num(2.0)]);
        assert_eq!(
            String::from_utf8(markdown(&t).unwrap()).unwrap(),
            "### T\n\nC.\n\n| 0.5\\*a+0.5\\*b | a |\n|---:|---:|\n| **1.500** | 2 |\n"
        );
    }
}
