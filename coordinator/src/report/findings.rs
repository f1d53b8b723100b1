//! The report's findings in plain language, each computed from its numbers; none calls one
//! value better than another without Welch's t-test saying so.

use super::{pct, Config, Estimate, Report, Row, RowStatus, Verdict};

/// Plain-language findings, each computed from the report's numbers; none calls one value
/// better than another without Welch's t-test saying so.
pub(super) fn findings(report: &Report) -> Vec<String> {
    let ranked: Vec<&Config> = report
        .configs
        .iter()
        .filter(|c| c.estimate.is_some())
        .collect();
    let mut out = best_and_spread(&ranked);
    out.extend(axes(report));
    out.extend(matched(report));
    out.extend(published(&ranked));
    out.extend(trials(report));
    out.extend(report.early_stopping.as_ref().map(|e| e.describe()));
    out
}

/// The best configuration, its verdict against the runner-up, and the spread.
fn best_and_spread(ranked: &[&Config]) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(best) = ranked.first() {
        let est = best
            .estimate
            .as_ref()
            .map(Estimate::describe)
            .unwrap_or_default();
        let mut line = format!("The best configuration is {}: {est}.", best.name);
        if let Some(second) = ranked.get(1) {
            if let Some(v) = Verdict::of(&best.values, &second.values) {
                let _ = std::fmt::Write::write_fmt(
                    &mut line,
                    format_args!(" Against the runner-up, {}: {}.", second.name, v.describe()),
                );
            }
        }
        out.push(line);
    }
    if ranked.len() > 1 {
        let (first, last) = (ranked[0], ranked[ranked.len() - 1]);
        let mean = |c: &Config| c.estimate.as_ref().map_or(0.0, |e| e.mean);
        out.push(format!(
            "From the best configuration to the worst ({}, {}) is {:.1} points.",
            last.name,
            pct(Some(mean(last))),
            100.0 * (mean(first) - mean(last)).abs()
        ));
    }
    out
}

/// Each axis' verdicts against its best value, and the largest difference a test supports.
fn axes(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let mut decided: Vec<(f64, &str)> = Vec::new();
    let mut compared = 0;
    for fx in &report.effects {
        let Some(best) = fx.values.first().filter(|b| b.estimate.is_some()) else {
            continue;
        };
        if !fx.balanced {
            out.push(format!(
                "{}: {} has the best mean ({}), but its values come with different other settings, so the means mix those in; see the all-else-equal comparisons.",
                fx.axis,
                best.value,
                pct(best.mean())
            ));
            continue;
        }
        let verdicts: Vec<String> = fx
            .values
            .iter()
            .skip(1)
            .filter_map(|other| {
                let v = other.vs_best?;
                compared += 1;
                let gap = 100.0 * (best.mean()? - other.mean()?).abs();
                if matches!(v, Verdict::Better { .. }) {
                    decided.push((gap, &fx.axis));
                }
                Some(format!(
                    "vs {} ({:.1} points): {}",
                    other.value,
                    gap,
                    v.describe()
                ))
            })
            .collect();
        if !verdicts.is_empty() {
            out.push(format!(
                "{}: {} has the best mean ({} over {} results); {}.",
                fx.axis,
                best.value,
                pct(best.mean()),
                best.estimate.as_ref().map_or(0, Estimate::runs),
                verdicts.join("; ")
            ));
        }
    }
    decided.sort_by(|a, b| b.0.total_cmp(&a.0));
    match decided.first() {
        Some((gap, axis)) => out.push(format!(
            "Of the differences a test supports, {axis}'s is the largest: {gap:.1} points between its best value and another."
        )),
        None if compared > 0 => out.push(
            "No axis made a difference that Welch's t-test supports at the 5% level: every other gap is within noise or needs more seeds."
                .into(),
        ),
        None => {}
    }
    out
}

/// Per axis, the verdicts of configurations that differ in it alone: each pair when there are
/// few, else the counts.
fn matched(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let mut axes: Vec<&str> = report.matched.iter().map(|m| m.axis.as_str()).collect();
    axes.dedup();
    for axis in axes {
        let pairs: Vec<&super::Matched> =
            report.matched.iter().filter(|m| m.axis == axis).collect();
        if pairs.len() <= 3 {
            for m in pairs {
                out.push(format!(
                    "{axis}, all else equal: {} ({}) vs {} ({}), {:.1} points: {}.",
                    m.better_value,
                    m.better,
                    m.other_value,
                    m.other,
                    100.0 * m.gap,
                    m.verdict.describe()
                ));
            }
        } else {
            let better = pairs
                .iter()
                .filter(|m| matches!(m.verdict, Verdict::Better { .. }))
                .count();
            let noise = pairs
                .iter()
                .filter(|m| matches!(m.verdict, Verdict::WithinNoise { .. }))
                .count();
            out.push(format!(
                "{axis}, all else equal: {} matched pairs; Welch's t-test separates {better}, {noise} are within noise, {} are not settled.",
                pairs.len(),
                pairs.len() - better - noise
            ));
        }
    }
    out
}

/// Whether each published number lies inside the measured interval.
fn published(ranked: &[&Config]) -> Vec<String> {
    let mut out = Vec::new();
    for c in ranked.iter().filter(|c| c.reported.is_some()) {
        let (Some(est), Some(rep)) = (&c.estimate, c.reported) else {
            continue;
        };
        let place = match c.reported_inside {
            Some(true) => "inside",
            Some(false) if rep > est.mean => "above",
            Some(false) => "below",
            None => continue,
        };
        out.push(format!(
            "{}: the published {} lies {place} the measured {}.",
            c.name,
            pct(Some(rep)),
            est.describe()
        ));
    }
    out
}

/// The BCE trap, and trials that have not finished or did not complete.
fn trials(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for r in report.bce_rows() {
        out.push(format!(
            "{} used binary cross-entropy: Keras' accuracy metric would have shown {}, but the true top-1 accuracy is {}.",
            r.name(), pct(r.test_binary_accuracy), pct(r.test_accuracy)
        ));
    }
    let unfinished = |r: &&Row| r.status.unfinished();
    let waiting = report.rows.iter().filter(unfinished).count();
    if waiting > 0 {
        out.push(format!(
            "{waiting} trials have not finished yet; the numbers above leave them out."
        ));
    }
    let failed: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| {
            !matches!(r.status, RowStatus::Completed | RowStatus::Stopped) && !unfinished(r)
        })
        .collect();
    if !failed.is_empty() {
        out.push(format!(
            "{} trials did not complete: {}.",
            failed.len(),
            failed
                .iter()
                .map(|r| format!("{} ({})", r.name(), r.status))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out
}
