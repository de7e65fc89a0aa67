//! Figures layer of the report (criterion's model: load → analysis → tables and figures → exporters → page). One
//! function per figure ([`toy`]: sample panels, sweeps, Pareto fronts, ESS/λ traces; [`mini`]: the Figure-2
//! analogue and the T3 front), each turning an analysed experiment into [`Figure`]s whose PNG and SVG are bytes in
//! memory ([`draw`] holds the plotters primitives); the build writes them. A figure that applies to an experiment
//! but cannot be drawn — no data, a missing stored target, a drawing error — is still a [`Figure`], with the
//! reason in [`Outcome::NotDrawn`], so the page says why instead of leaving it out silently.

pub mod draw;
pub mod figure;
pub mod mini;
pub mod toy;

pub use draw::{method_color, pareto_front, variant_color, Density, LinePanel, ParetoPoint, ScatterPanel, Series};
pub use figure::{axis_label, Figure, Outcome, Rendered};

use super::analysis::Exp;

/// Every figure of every experiment, in page order (per experiment: samples, sweeps, Pareto fronts, traces, then
/// FMNIST-align's own).
pub fn all(exps: &[Exp]) -> Vec<Figure> {
    let mut out = Vec::new();
    for e in exps {
        out.extend(toy::samples(e));
        out.extend(toy::sweeps(e));
        out.extend(toy::anytime(e));
        out.extend(toy::pareto(e));
        out.extend(toy::traces(e));
        if e.is_mini() {
            out.push(mini::heldout(e));
            out.push(mini::diversity(e));
            out.extend(mini::front(e));
        }
    }
    out
}
