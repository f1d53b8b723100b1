//! `report.html`: one self-contained page (inline SVG from plotters, inline CSS, no scripts,
//! nothing fetched) with the ranked table, the ranking as bars, learning curves per trial and
//! overlaid for the top trials, the effect of each axis, the best trial's confusion matrix,
//! the binary-cross-entropy comparison, and findings computed from the results.

use crate::report::{AxisEffect, Report, Row};
use plotters::prelude::*;
use std::fmt::Write as _;
use sweep_proto::result::{MAX_EPOCH, MAX_VALUE};

/// Row and column names of the confusion matrix.
const CLASSES: [&str; 10] = sweep_proto::CIFAR10_CLASSES;
/// How many of the best trials the overlaid curves show.
const TOP: usize = 5;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v))
}

/// A trial's label, else its axis values (e.g. "seed-cnn, grayscale"), else its id.
fn name(r: &Row) -> String {
    match (&r.label, r.axis_values.is_empty()) {
        (Some(l), _) => l.clone(),
        (None, false) => r.axis_values.join(", "),
        (None, true) => r.id.clone(),
    }
}

/// Draws into an SVG string; a drawing error yields a note instead of a chart.
fn svg(
    width: u32,
    height: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<(), String>,
) -> String {
    let mut out = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|_| draw(&root))
            .and_then(|_| root.present().map_err(|e| e.to_string()))
    };
    match result {
        Ok(()) => out,
        Err(e) => format!("<p class=\"note\">chart not drawn: {}</p>", esc(&e)),
    }
}

fn e<T: std::fmt::Display>(err: T) -> String {
    err.to_string()
}

/// A bar on a [0, 1] accuracy axis. Accuracies are fractions; anything else an old database
/// may hold is drawn at an edge rather than off the chart.
fn bar_length(v: Option<f64>) -> f64 {
    match v {
        Some(v) if !v.is_nan() => v.clamp(0.0, 1.0),
        _ => 0.0,
    }
}

/// Horizontal bars of the ranking metric, best first.
fn ranking_chart(report: &Report) -> String {
    // Reversed: plotters counts segments from the bottom, and the best belongs on top.
    let rows: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| r.metric(report.rank_by).is_some())
        .rev()
        .collect();
    if rows.is_empty() {
        return "<p class=\"note\">no finished trial yet</p>".into();
    }
    let height = 60 + 22 * rows.len() as u32;
    svg(900, height, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(330)
            .build_cartesian_2d(0f64..1f64, (0..rows.len()).into_segmented())
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(if report.rank_by == crate::sweep::Metric::TestAccuracy {
                "test accuracy"
            } else {
                "best validation accuracy"
            })
            .y_labels(rows.len())
            .label_style(("sans-serif", 13))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => rows.get(*i).map(|r| name(r)).unwrap_or_default(),
                _ => String::new(),
            })
            .draw()
            .map_err(e)?;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| {
                let v = bar_length(r.metric(report.rank_by));
                let mut bar = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(i)),
                        (v, SegmentValue::Exact(i + 1)),
                    ],
                    BLUE.mix(0.6).filled(),
                );
                bar.set_margin(3, 3, 0, 0);
                bar
            }))
            .map_err(e)?;
        Ok(())
    })
}

/// Accuracy (or loss) per epoch for several trials on one chart.
fn curves(
    title: &str,
    series: &[(String, Vec<(u32, f64)>)],
    y_max: Option<f64>,
    y_desc: &str,
) -> String {
    let points: Vec<&(u32, f64)> = series.iter().flat_map(|s| s.1.iter()).collect();
    if points.is_empty() {
        return "<p class=\"note\">no epochs recorded</p>".into();
    }
    let max_epoch = points.iter().map(|p| p.0).max().unwrap_or(1).max(2);
    // Points are finite, at most MAX_VALUE, at epochs up to MAX_EPOCH (epoch_points), so the
    // axes are bounded: an infinite bound (a loss near f64::MAX times 1.05) made plotters loop
    // forever, and an epoch near u32::MAX overflowed its tick computation (fuzz target
    // `report`).
    let top = y_max
        .unwrap_or_else(|| points.iter().map(|p| p.1).fold(0.0, f64::max) * 1.05)
        .clamp(1e-6, MAX_VALUE * 1.05);
    svg(440, 300, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(45)
            .build_cartesian_2d(1u32..max_epoch, 0f64..top)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_desc)
            .draw()
            .map_err(e)?;
        for (i, (label, pts)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                // Inside the axes: plotters adds pixel offsets in i32, and a value far off the
                // chart (an accuracy of 1e12 on the 0-1 axis) overflowed them.
                .draw_series(LineSeries::new(
                    pts.iter().map(|&(x, y)| (x, y.clamp(0.0, top))),
                    color.stroke_width(2),
                ))
                .map_err(e)?
                .label(label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        Ok(())
    })
}

fn epoch_points(r: &Row, f: impl Fn(&sweep_proto::EpochMetrics) -> Option<f64>) -> Vec<(u32, f64)> {
    r.epochs
        .iter()
        .filter(|m| (1..=MAX_EPOCH).contains(&m.epoch))
        .filter_map(|m| {
            f(m).filter(|v| v.is_finite() && v.abs() <= MAX_VALUE)
                .map(|v| (m.epoch, v))
        })
        .collect()
}

fn trial_curves(r: &Row) -> String {
    let acc = vec![
        (
            "train".to_string(),
            epoch_points(r, |m| Some(m.train_accuracy)),
        ),
        (
            "validation".to_string(),
            epoch_points(r, |m| m.val_accuracy),
        ),
    ];
    let loss = vec![
        ("train".to_string(), epoch_points(r, |m| Some(m.train_loss))),
        ("validation".to_string(), epoch_points(r, |m| m.val_loss)),
    ];
    let acc: Vec<_> = acc.into_iter().filter(|s| !s.1.is_empty()).collect();
    let loss: Vec<_> = loss.into_iter().filter(|s| !s.1.is_empty()).collect();
    format!(
        "{}{}",
        curves("accuracy", &acc, Some(1.0), "accuracy"),
        curves("loss", &loss, None, "loss")
    )
}

fn effect_chart(axis: &str, effects: &[AxisEffect]) -> String {
    let effects: Vec<&AxisEffect> = effects.iter().rev().collect();
    let n = effects.len();
    svg(440, 60 + 26 * n as u32, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("mean by {axis}"), ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(160)
            .build_cartesian_2d(0f64..1f64, (0..n).into_segmented())
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .label_style(("sans-serif", 13))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => {
                    effects.get(*i).map(|x| x.value.clone()).unwrap_or_default()
                }
                _ => String::new(),
            })
            .draw()
            .map_err(e)?;
        chart
            .draw_series(effects.iter().enumerate().map(|(i, x)| {
                let mut bar = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(i)),
                        (bar_length(x.mean), SegmentValue::Exact(i + 1)),
                    ],
                    GREEN.mix(0.6).filled(),
                );
                bar.set_margin(3, 3, 0, 0);
                bar
            }))
            .map_err(e)?;
        Ok(())
    })
}

fn confusion_table(r: &Row) -> String {
    let Some(m) = r.confusion.as_ref().filter(|m| m.len() == CLASSES.len()) else {
        return "<p class=\"note\">no confusion matrix recorded</p>".into();
    };
    let mut out = String::from("<table class=\"confusion\"><tr><th>true \\ predicted</th>");
    for c in CLASSES {
        let _ = write!(out, "<th>{c}</th>");
    }
    out += "</tr>";
    for (i, row) in m.iter().enumerate() {
        // Saturating: a corrupt count near u64::MAX overflowed this sum (fuzz target `report`).
        let total = row.iter().fold(0u64, |a, &n| a.saturating_add(n)).max(1);
        let _ = write!(out, "<tr><th>{}</th>", CLASSES[i]);
        for (j, &v) in row.iter().enumerate() {
            let share = v as f64 / total as f64;
            let hue = if i == j { "40,120,200" } else { "200,60,40" };
            let _ = write!(
                out,
                "<td style=\"background: rgba({hue},{:.2})\">{v}</td>",
                share.min(1.0)
            );
        }
        out += "</tr>";
    }
    out + "</table>"
}

/// Plain-language findings, each computed from the results.
pub fn findings(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let ranked: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| r.metric(report.rank_by).is_some())
        .collect();
    if let Some(best) = ranked.first() {
        out.push(format!(
            "The best trial is {} with {} test accuracy.",
            name(best),
            pct(best.test_accuracy)
        ));
    }
    if ranked.len() > 1 {
        let worst = ranked[ranked.len() - 1];
        out.push(format!(
            "The spread from best to worst is {:.1} points ({} scored {}).",
            100.0
                * (ranked[0].metric(report.rank_by).unwrap_or(0.0)
                    - worst.metric(report.rank_by).unwrap_or(0.0)),
            name(worst),
            pct(worst.metric(report.rank_by))
        ));
    }
    let mut spreads: Vec<(f64, String)> = Vec::new();
    for (axis, effects) in report.effects() {
        let means: Vec<&AxisEffect> = effects.iter().filter(|x| x.mean.is_some()).collect();
        if let (Some(first), Some(last)) = (means.first(), means.last()) {
            let gap = first.mean.unwrap_or(0.0) - last.mean.unwrap_or(0.0);
            out.push(format!(
                "{axis}: {} is best on average ({} mean over {} trials) and {} worst ({}), a {:.1}-point difference.",
                first.value, pct(first.mean), first.trials, last.value, pct(last.mean), 100.0 * gap.abs()
            ));
            spreads.push((gap.abs(), axis));
        }
    }
    spreads.sort_by(|a, b| b.0.total_cmp(&a.0));
    if let Some((gap, axis)) = spreads.first().filter(|_| spreads.len() > 1) {
        out.push(format!("Of the choices varied, {axis} mattered most: {:.1} points between its best and worst value on average.", 100.0 * gap));
    }
    let beats: Vec<(f64, &Row)> = report
        .rows
        .iter()
        .filter_map(|r| Some((r.test_accuracy? - r.reported?, r)))
        .collect();
    if let Some((d, r)) = beats.iter().max_by(|a, b| a.0.total_cmp(&b.0)) {
        out.push(format!("Against the published numbers, the largest gain is {} ({:+.1} points: {} measured vs {} reported).",
            name(r), 100.0 * d, pct(r.test_accuracy), pct(r.reported)));
        let below = beats.iter().filter(|(d, _)| *d < 0.0).count();
        out.push(format!(
            "{} of {} rows with a reported number measured below it.",
            below,
            beats.len()
        ));
    }
    for r in report.bce_rows() {
        out.push(format!(
            "{} used binary cross-entropy: Keras' accuracy metric would have shown {}, but the true top-1 accuracy is {}.",
            name(r), pct(r.test_binary_accuracy), pct(r.test_accuracy)
        ));
    }
    let failed: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| r.status != "completed")
        .collect();
    if !failed.is_empty() {
        out.push(format!(
            "{} trials did not complete: {}.",
            failed.len(),
            failed
                .iter()
                .map(|r| format!("{} ({})", name(r), r.status))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}\
td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;text-align:right}th{background:#f3f3f3}\
td.l,th.l{text-align:left}.note{color:#777}.grid{display:flex;flex-wrap:wrap;gap:12px}\
.trial{border:1px solid #ddd;padding:6px;margin:6px 0}.confusion td{min-width:3em}h2{margin-top:1.6em}";

/// The whole page.
pub fn render(report: &Report) -> String {
    let mut h = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Sweep {0}</title><style>{STYLE}</style></head><body>\
         <h1>Sweep <code>{0}</code></h1>",
        esc(&report.sweep)
    );
    h += "<h2 id=\"findings\">Findings</h2><ul>";
    for f in findings(report) {
        let _ = write!(h, "<li>{}</li>", esc(&f));
    }
    h += "</ul>";

    h += "<h2 id=\"ranking\">Ranking</h2><table><tr><th>rank</th><th class=\"l\">trial</th>";
    for a in &report.axes {
        let _ = write!(h, "<th>{}</th>", esc(a));
    }
    let reported = report.rows.iter().any(|r| r.reported.is_some());
    h += "<th>status</th><th>test acc</th><th>best val acc</th>";
    if reported {
        h += "<th>reported</th><th>measured - reported</th>";
    }
    h += "<th>seconds</th></tr>";
    for (i, r) in report.rows.iter().enumerate() {
        let rank = if r.metric(report.rank_by).is_some() {
            (i + 1).to_string()
        } else {
            "-".into()
        };
        let _ = write!(
            h,
            "<tr id=\"row-{}\"><td>{rank}</td><td class=\"l\">{}</td>",
            esc(&r.id),
            esc(&name(r))
        );
        for v in &r.axis_values {
            let _ = write!(h, "<td>{}</td>", esc(v));
        }
        let diff = match (r.test_accuracy, r.reported) {
            (Some(t), Some(p)) => format!("{:+.2} pts", 100.0 * (t - p)),
            _ => "-".into(),
        };
        let status = match &r.reason {
            Some(why) if r.status != "completed" => format!("{} ({})", r.status, why),
            _ => r.status.clone(),
        };
        let _ = write!(
            h,
            "<td class=\"l\">{}</td><td>{}</td><td>{}</td>",
            esc(&status),
            pct(r.test_accuracy),
            pct(r.best_val_accuracy)
        );
        if reported {
            let _ = write!(h, "<td>{}</td><td>{diff}</td>", pct(r.reported));
        }
        let _ = write!(
            h,
            "<td>{}</td></tr>",
            r.seconds.map_or("-".into(), |s| format!("{s:.0}"))
        );
    }
    h += "</table>";
    h += &ranking_chart(report);

    h += "<h2 id=\"top-curves\">Learning curves of the top trials</h2><div class=\"grid\">";
    let top: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| !r.epochs.is_empty())
        .take(TOP)
        .collect();
    let val: Vec<(String, Vec<(u32, f64)>)> = top
        .iter()
        .map(|r| {
            (
                name(r),
                epoch_points(r, |m| m.val_accuracy.or(Some(m.train_accuracy))),
            )
        })
        .collect();
    let loss: Vec<(String, Vec<(u32, f64)>)> = top
        .iter()
        .map(|r| (name(r), epoch_points(r, |m| Some(m.train_loss))))
        .collect();
    h += &curves(
        "validation accuracy (train if none held out)",
        &val,
        Some(1.0),
        "accuracy",
    );
    h += &curves("training loss", &loss, None, "loss");
    h += "</div>";

    let effects = report.effects();
    if !effects.is_empty() {
        h += "<h2 id=\"effects\">Effect of each axis</h2><div class=\"grid\">";
        for (axis, stats) in &effects {
            let _ = write!(h, "<div><table><tr><th class=\"l\">{}</th><th>trials</th><th>mean</th><th>best</th></tr>", esc(axis));
            for x in stats {
                let _ = write!(
                    h,
                    "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&x.value),
                    x.trials,
                    pct(x.mean),
                    pct(x.best)
                );
            }
            h += "</table>";
            h += &effect_chart(axis, stats);
            h += "</div>";
        }
        h += "</div>";
    }

    if let Some(best) = report.rows.iter().find(|r| r.confusion.is_some()) {
        let _ = write!(
            h,
            "<h2 id=\"confusion\">Confusion matrix of the best trial ({})</h2>",
            esc(&name(best))
        );
        h += &confusion_table(best);
    }

    let bce = report.bce_rows();
    if !bce.is_empty() {
        h += "<h2 id=\"bce\">Binary cross-entropy: what Keras showed vs true accuracy</h2>\
              <p>With binary cross-entropy Keras' accuracy metric counts each of the 10 outputs separately. On a softmax \
              output (what the study ran) a model that puts every image in one class scores 82% at 10% true accuracy; \
              with a sigmoid per class, answering \"no\" to every class scores 90%.</p>\
              <table><tr><th class=\"l\">trial</th><th>Keras binary accuracy</th><th>true top-1 accuracy</th></tr>";
        for r in bce {
            let _ = write!(
                h,
                "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&name(r)),
                pct(r.test_binary_accuracy),
                pct(r.test_accuracy)
            );
        }
        h += "</table>";
    }

    h += "<h2 id=\"trials\">Every trial</h2>";
    for r in &report.rows {
        let _ = write!(h, "<div class=\"trial\" id=\"trial-{}\"><h3>{} <small>{}</small></h3><div class=\"grid\">", esc(&r.id), esc(&name(r)), esc(&r.status));
        h += &trial_curves(r);
        h += "</div></div>";
    }
    h + "</body></html>\n"
}
