//! The scales of the rewards that ran (criterion's model: tables are built from the analysis): every reward kind
//! that guided a stored cell (the terms of a weighted sum included) or was evaluated on its outputs, with the scale
//! the reward catalogue declares as data ([`crate::rewards::Scale`]), so a reader can tell what a reward number
//! means. Kinds the catalogue does not describe (FMNIST-align's own rewards) are not listed.

use std::collections::BTreeMap;

use crate::report::analysis::Exp;
use crate::report::table::{Cell, Table};
use crate::rewards::spec::RewardSpec;
use crate::rewards::{info, RewardInfo};

/// Every reward kind in a spec (a weighted sum's own kind and its terms').
fn kinds(r: &RewardSpec, out: &mut Vec<&'static str>) {
    out.push(r.kind());
    if let RewardSpec::WeightedSum { terms } = r {
        for t in terms {
            kinds(&t.reward, out);
        }
    }
}

/// Reward kinds with their catalogue entry, each with the experiments that used it (none known: no table).
pub fn table(exps: &[Exp]) -> Option<Table> {
    let mut used: BTreeMap<&'static str, (RewardInfo, Vec<String>)> = BTreeMap::new();
    for e in exps {
        let mut ks: Vec<&'static str> = Vec::new();
        for c in &e.cells {
            if let Some(r) = c.spec.reward.clone().and_then(|v| serde_json::from_value::<RewardSpec>(v).ok()) {
                kinds(&r, &mut ks);
            }
        }
        let evaluated: Vec<RewardInfo> = e.eval_labels().iter().filter_map(|l| info(l)).collect();
        ks.extend(evaluated.iter().map(|i| i.kind));
        for k in ks {
            let Some(i) = info(k) else { continue };
            let entry = used.entry(i.kind).or_insert_with(|| (i, Vec::new()));
            if !entry.1.contains(&e.name) {
                entry.1.push(e.name.clone());
            }
        }
    }
    if used.is_empty() {
        return None;
    }
    let mut t = Table::new(
        "rewards",
        "Reward scales",
        "The scale each reward that guided or evaluated a stored cell declares (the reward catalogue, `alignbench list \
         rewards`): unit, hard bounds (empty = unbounded or set by the model), the values it typically takes on this \
         benchmark's outputs, and a note. Every reward is higher-is-better.",
        &["reward", "unit", "min", "max", "typical_lo", "typical_hi", "note", "experiments"],
    );
    let n = |v: Option<f64>| Cell::Num(v.unwrap_or(f64::NAN));
    for (kind, (i, names)) in used {
        let s = &i.scale;
        t.push(vec![
            kind.into(),
            s.unit.into(),
            n(s.min),
            n(s.max),
            n(s.typical.map(|t| t.0)),
            n(s.typical.map(|t| t.1)),
            s.note.into(),
            names.join(", ").into(),
        ]);
    }
    Some(t)
}
