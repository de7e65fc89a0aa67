//! HTML exporter (hyperfine's model: a pure function from the table to bytes): the `<table>` fragment the page
//! embeds, escaped, numbers right-aligned and marked numbers bold.

use std::fmt::Write as _;

use crate::report::table::{fmt_num, Cell, Table};
use crate::Result;

/// Escape text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An HTML `<table>` fragment (escaped), numbers right-aligned.
pub fn html(t: &Table) -> Result<Vec<u8>> {
    let mut s = String::from("<table>\n<thead><tr>");
    for c in &t.columns {
        let _ = write!(s, "<th>{}</th>", escape(c));
    }
    s += "</tr></thead>\n<tbody>\n";
    for r in &t.rows {
        s += "<tr>";
        for c in r {
            match c {
                Cell::Num(v) => {
                    let _ = write!(s, "<td class=\"num\">{}</td>", escape(&fmt_num(*v)));
                }
                Cell::Mark(v) => {
                    let _ = write!(s, "<td class=\"num mark\"><b>{}</b></td>", escape(&fmt_num(*v)));
                }
                Cell::Text(t) => {
                    let _ = write!(s, "<td>{}</td>", escape(t));
                }
            }
        }
        s += "</tr>\n";
    }
    s += "</tbody>\n</table>\n";
    Ok(s.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::table::tests::sample;

    #[test]
    fn html_escapes_and_marks() {
        let h = String::from_utf8(html(&sample()).unwrap()).unwrap();
        assert!(h.contains("<td>&lt;x&gt;</td>") && h.contains("<td class=\"num\">0.2735</td>"), "{h}");
        let mut t = Table::new("x", "T", "C.", &["a"]);
        t.push(vec![Cell::Mark(1.5)]);
        assert!(String::from_utf8(html(&t).unwrap()).unwrap().contains("<td class=\"num mark\"><b>1.500</b></td>"));
    }
}
