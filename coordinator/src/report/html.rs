//! `report.html`: one self-contained page (inline SVG from plotters, inline CSS, no scripts,
//! nothing fetched) with the ranked table, the ranking as bars, learning curves per trial and
//! overlaid for the top trials, the effect of each axis, the best trial's confusion matrix,
//! the binary-cross-entropy comparison, and the findings. It renders [`Report`], the view
//! model the text formats share ([`crate::report::render`]); error bars are the report's 95%
//! intervals.

use crate::report::{AxisEffect, Estimate, Report, Row, Table};
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

/// An error bar from `low` to `high` across the middle of segment `i`, clamped to the axis.
fn error_bar(
    i: usize,
    bounds: Option<(f64, f64)>,
) -> Option<PathElement<(f64, SegmentValue<usize>)>> {
    let (lo, hi) = bounds?;
    let (lo, hi) = (bar_length(Some(lo)), bar_length(Some(hi)));
    Some(PathElement::new(
        vec![
            (lo, SegmentValue::CenterOf(i)),
            (hi, SegmentValue::CenterOf(i)),
        ],
        BLACK.stroke_width(2),
    ))
}

/// Horizontal bars: a label and an estimate each, best on top, with 95% error bars.
fn bars_chart(
    caption: &str,
    x_desc: &str,
    bars: &[(String, Option<&Estimate>)],
    color: RGBColor,
    label_width: u32,
    width: u32,
) -> String {
    // Reversed: plotters counts segments from the bottom, and the best belongs on top.
    let bars: Vec<&(String, Option<&Estimate>)> =
        bars.iter().filter(|b| b.1.is_some()).rev().collect();
    if bars.is_empty() {
        return "<p class=\"note\">no finished trial yet</p>".into();
    }
    let height = 70 + 22 * bars.len() as u32;
    svg(width, height, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(caption, ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(label_width)
            .build_cartesian_2d(0f64..1f64, (0..bars.len()).into_segmented())
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(x_desc)
            .y_labels(bars.len())
            .label_style(("sans-serif", 13))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => bars.get(*i).map(|b| b.0.clone()).unwrap_or_default(),
                _ => String::new(),
            })
            .draw()
            .map_err(e)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                let v = bar_length(b.1.map(|e| e.mean));
                let mut bar = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(i)),
                        (v, SegmentValue::Exact(i + 1)),
                    ],
                    color.mix(0.6).filled(),
                );
                bar.set_margin(3, 3, 0, 0);
                bar
            }))
            .map_err(e)?;
        chart
            .draw_series(
                bars.iter()
                    .enumerate()
                    .filter_map(|(i, b)| error_bar(i, b.1.and_then(Estimate::bounds))),
            )
            .map_err(e)?;
        Ok(())
    })
}

/// Per rung, the trials that reached it (bar) and the part stopped there (red).
fn rungs_chart(early: &crate::report::EarlySummary) -> String {
    let rungs = &early.rungs;
    let most = rungs.iter().map(|r| r.reached).max().unwrap_or(0);
    if rungs.is_empty() || most == 0 {
        return "<p class=\"note\">no trial has reached a rung yet</p>".into();
    }
    svg(640, 320, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "trials at each rung (red: stopped there)",
                ("sans-serif", 15),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d((0..rungs.len()).into_segmented(), 0usize..most + 1)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("after epoch")
            .y_desc("trials")
            .x_labels(rungs.len())
            .label_style(("sans-serif", 13))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => rungs
                    .get(*i)
                    .map(|r| r.epoch.to_string())
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .draw()
            .map_err(e)?;
        let bar = |i: usize, height: usize, color: ShapeStyle| {
            let mut b = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0),
                    (SegmentValue::Exact(i + 1), height),
                ],
                color,
            );
            b.set_margin(0, 0, 8, 8);
            b
        };
        chart
            .draw_series(
                rungs
                    .iter()
                    .enumerate()
                    .map(|(i, r)| bar(i, r.reached, BLUE.mix(0.5).filled())),
            )
            .map_err(e)?;
        chart
            .draw_series(
                rungs
                    .iter()
                    .enumerate()
                    .map(|(i, r)| bar(i, r.stopped, RED.mix(0.7).filled())),
            )
            .map_err(e)?;
        Ok(())
    })
}

/// The configurations' estimates, best first, with their 95% intervals.
fn ranking_chart(report: &Report) -> String {
    let bars: Vec<(String, Option<&Estimate>)> = report
        .configs
        .iter()
        .map(|c| (c.name.clone(), c.estimate.as_ref()))
        .collect();
    let x_desc = if report.rank_by == crate::plan::Metric::TestAccuracy {
        "test accuracy (bars: 95% interval)"
    } else {
        "best validation accuracy (bars: 95% interval)"
    };
    bars_chart("", x_desc, &bars, BLUE, 330, 900)
}

/// Accuracy (or loss) per epoch for several trials on one chart.
fn curves(
    title: &str,
    series: &[(String, Vec<(u32, f64)>)],
    y_max: Option<f64>,
    y_desc: &str,
) -> String {
    curves_over(title, series, y_max, y_desc, "epoch")
}

/// [`curves`] with another x axis (a search's trial number).
fn curves_over(
    title: &str,
    series: &[(String, Vec<(u32, f64)>)],
    y_max: Option<f64>,
    y_desc: &str,
    x_desc: &str,
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
            .x_desc(x_desc)
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
    let bars: Vec<(String, Option<&Estimate>)> = effects
        .iter()
        .map(|x| (x.value.clone(), x.estimate.as_ref()))
        .collect();
    bars_chart(
        &format!("mean by {axis}"),
        "mean (bars: 95% interval)",
        &bars,
        GREEN,
        160,
        440,
    )
}

fn confusion_table(r: &Row) -> String {
    // Results from before class names travelled are CIFAR-10's.
    let names: Vec<String> = if r.class_names.is_empty() {
        CLASSES.map(String::from).to_vec()
    } else {
        r.class_names.clone()
    };
    let Some(m) = r.confusion.as_ref().filter(|m| m.len() == names.len()) else {
        return "<p class=\"note\">no confusion matrix recorded</p>".into();
    };
    let mut out = String::from("<table class=\"confusion\"><tr><th>true \\ predicted</th>");
    for c in &names {
        let _ = write!(out, "<th>{}</th>", esc(c));
    }
    out += "</tr>";
    for (i, row) in m.iter().enumerate() {
        // Saturating: a corrupt count near u64::MAX overflowed this sum (fuzz target `report`).
        let total = row.iter().fold(0u64, |a, &n| a.saturating_add(n)).max(1);
        let _ = write!(out, "<tr><th>{}</th>", esc(&names[i]));
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

/// A [`Table`]: its first two columns left-aligned; rows standing for a trial carry the
/// anchor `{prefix}-{id}`.
fn html_table(t: &Table, prefix: &str) -> String {
    let mut out = String::from("<table><tr>");
    for (i, head) in t.head.iter().enumerate() {
        let class = if i < 2 { " class=\"l\"" } else { "" };
        let _ = write!(out, "<th{class}>{}</th>", esc(head));
    }
    out += "</tr>";
    for row in &t.rows {
        match &row.id {
            Some(id) => {
                let _ = write!(out, "<tr id=\"{prefix}-{}\">", esc(id));
            }
            None => out += "<tr>",
        }
        for (i, cell) in row.cells.iter().enumerate() {
            let class = if i < 2 { " class=\"l\"" } else { "" };
            let _ = write!(out, "<td{class}>{}</td>", esc(cell));
        }
        out += "</tr>";
    }
    out + "</table>"
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
    for f in &report.findings {
        let _ = write!(h, "<li>{}</li>", esc(f));
    }
    let _ = write!(
        h,
        "</ul><p class=\"note\">{}</p>",
        esc(crate::report::METHOD)
    );

    h += "<h2 id=\"ranking\">Configurations</h2>";
    h += &html_table(&report.configs_grid(), "config");
    h += &ranking_chart(report);
    h += "<h2 id=\"every-trial\">Every trial, ranked</h2>";
    h += &html_table(&report.trials_grid(), "row");

    h += &top_curves(report);
    h += &sections(report);
    h += "<h2 id=\"trials\">Learning curves of every trial</h2>";
    for r in &report.rows {
        let _ = write!(h, "<div class=\"trial\" id=\"trial-{}\"><h3>{} <small>{}</small></h3><div class=\"grid\">", esc(&r.id), esc(&r.name()), esc(r.status.as_str()));
        h += &trial_curves(r);
        h += "</div></div>";
    }
    h + "</body></html>\n"
}

/// The learning curves of the best-ranked trials, side by side.
fn top_curves(report: &Report) -> String {
    let mut h = String::from(
        "<h2 id=\"top-curves\">Learning curves of the top trials</h2><div class=\"grid\">",
    );
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
                r.name(),
                epoch_points(r, |m| m.val_accuracy.or(Some(m.train_accuracy))),
            )
        })
        .collect();
    h += &curves(
        "validation accuracy (train if none held out)",
        &val,
        Some(1.0),
        "accuracy",
    );
    // One chart per loss function: a binary cross-entropy is not on a cross-entropy's scale.
    let mut kinds: Vec<&str> = top.iter().map(|r| loss_name(r)).collect();
    kinds.sort_unstable();
    kinds.dedup();
    for kind in kinds {
        let loss: Vec<(String, Vec<(u32, f64)>)> = top
            .iter()
            .filter(|r| loss_name(r) == kind)
            .map(|r| (r.name(), epoch_points(r, |m| Some(m.train_loss))))
            .collect();
        h += &curves(&format!("training loss ({kind})"), &loss, None, "loss");
    }
    h += "</div>";
    h
}

/// A search's section: its line, the best so far against the trial number, the importance
/// of each axis, and the trials in parallel coordinates.
fn search_section(search: &crate::report::search::SearchSummary, report: &Report) -> String {
    let mut h = format!(
        "<h2 id=\"search\">Search</h2><p>{}</p>",
        esc(&search.describe())
    );
    let point = |f: fn(&crate::report::search::Step) -> Option<f64>| -> Vec<(u32, f64)> {
        search
            .steps
            .iter()
            .filter_map(|s| f(s).map(|v| (s.n.min(MAX_EPOCH as usize) as u32, v)))
            .collect()
    };
    let series = vec![
        ("best so far".to_string(), point(|s| s.best)),
        ("trial".to_string(), point(|s| s.value)),
    ];
    h += "<div class=\"charts\">";
    h += &curves_over(
        "best so far against trial number",
        &series,
        Some(1.0),
        report.metric_name(),
        "trial",
    );
    h += &parallel_coordinates(search, report);
    h += "</div>";
    let _ = write!(
        h,
        "<p class=\"note\">{}</p>",
        esc(crate::report::search::METHOD)
    );
    h += &html_table(&search.importance_table(), "importance");
    h
}

/// A population's schedules: for each mutated field its value by epoch, one line per member of
/// the last generation (its whole lineage), then their validation accuracy.
fn pbt_charts(pbt: &crate::report::pbt::PbtSummary) -> String {
    let mut h = String::new();
    let name = |s: &crate::report::pbt::Schedule| format!("member {}", s.member);
    for (i, m) in pbt.rule.mutations.iter().enumerate() {
        let series: Vec<(String, Vec<(u32, f64)>)> = pbt
            .schedules
            .iter()
            .map(|s| (name(s), s.values.get(i).cloned().unwrap_or_default()))
            .filter(|(_, points)| !points.is_empty())
            .collect();
        if !series.is_empty() {
            h += &curves(&format!("{} by epoch", m.name), &series, None, &m.name);
        }
    }
    let acc: Vec<(String, Vec<(u32, f64)>)> = pbt
        .schedules
        .iter()
        .map(|s| (name(s), s.val_accuracy.clone()))
        .collect();
    h += &curves(
        "validation accuracy by epoch",
        &acc,
        Some(1.0),
        "val accuracy",
    );
    h
}

/// One vertical axis per search axis and one for the value; each trial with a value is a
/// line across them, darker the better. Ranges are drawn on their own scale (log for log
/// ranges), lists with their values evenly spaced.
fn parallel_coordinates(search: &crate::report::search::SearchSummary, report: &Report) -> String {
    use crate::sched::search::Values;
    let axes = &search.rule.axes;
    let by_id: std::collections::HashMap<&str, &Row> =
        report.rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let rows: Vec<(&Row, f64)> = search
        .steps
        .iter()
        .filter_map(|s| Some((*by_id.get(s.id.as_str())?, s.value?)))
        .collect();
    if rows.is_empty() || axes.is_empty() {
        return "<p class=\"note\">no finished trials to draw</p>".into();
    }
    let (w, hgt, pad) = (440.0, 300.0, 30.0);
    let step = (w - 2.0 * pad) / axes.len() as f64;
    let (lo, hi) = rows
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), r| {
            (a.min(r.1), b.max(r.1))
        });
    // 0 at the bottom, 1 at the top of an axis.
    let place = |axis: &crate::sched::search::Axis, r: &Row| -> Option<f64> {
        let raw = crate::report::axis_value(&r.params, &axis.name);
        match &axis.values {
            Values::List { values } => {
                let i = values
                    .iter()
                    .position(|v| v.to_string().trim_matches('"') == raw)?;
                Some(if values.len() < 2 {
                    0.5
                } else {
                    i as f64 / (values.len() - 1) as f64
                })
            }
            Values::Float { min, max, log, .. } => unit(raw.parse().ok()?, *min, *max, *log),
            Values::Int { min, max, log, .. } => {
                unit(raw.parse().ok()?, *min as f64, *max as f64, *log)
            }
        }
    };
    let y = |u: f64| pad + (1.0 - u.clamp(0.0, 1.0)) * (hgt - 2.0 * pad);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{hgt}\" viewBox=\"0 0 {w} {hgt}\">\
         <text x=\"{}\" y=\"16\" text-anchor=\"middle\" font-size=\"15\" font-family=\"sans-serif\">parallel coordinates (darker: better)</text>",
        w / 2.0
    );
    let better_high = report.direction == crate::plan::Direction::Max;
    for (r, v) in &rows {
        let mut pts = Vec::new();
        for (i, axis) in axes.iter().enumerate() {
            if let Some(u) = place(axis, r) {
                pts.push(format!("{:.1},{:.1}", pad + step * i as f64, y(u)));
            }
        }
        let u = if hi > lo { (v - lo) / (hi - lo) } else { 1.0 };
        pts.push(format!("{:.1},{:.1}", pad + step * axes.len() as f64, y(u)));
        let good = if better_high { u } else { 1.0 - u };
        let shade = (220.0 - 190.0 * good) as u8;
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"rgb({shade},{shade},255)\" stroke-width=\"1.5\" points=\"{}\"/>",
            pts.join(" ")
        );
    }
    let names = axes
        .iter()
        .map(|a| a.name.as_str())
        .chain([report.metric_name()]);
    for (i, name) in names.enumerate() {
        let x = pad + step * i as f64;
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{pad}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\" font-family=\"sans-serif\">{}</text>",
            hgt - pad,
            hgt - pad + 16.0,
            esc(name)
        );
    }
    svg += "</svg>";
    svg
}

/// Where `v` sits in [min, max], 0 to 1 (on the log scale for log ranges).
fn unit(v: f64, min: f64, max: f64, log: bool) -> Option<f64> {
    let (v, min, max) = if log {
        (v.max(f64::MIN_POSITIVE).ln(), min.ln(), max.ln())
    } else {
        (v, min, max)
    };
    (max > min && v.is_finite()).then(|| ((v - min) / (max - min)).clamp(0.0, 1.0))
}

/// A row's loss function as its trial names it (`loss` in docs/TRIAL.md).
fn loss_name(r: &Row) -> &str {
    r.params
        .get("loss")
        .and_then(|l| l.as_str())
        .unwrap_or("cross-entropy")
}

/// The sections a report has only sometimes: effects, matched pairs, early stopping, the
/// confusion matrix, the binary cross-entropy trap.
fn sections(report: &Report) -> String {
    let mut h = String::new();

    if !report.effects.is_empty() {
        h += "<h2 id=\"effects\">Effect of each axis</h2><div class=\"grid\">";
        for fx in &report.effects {
            h += "<div>";
            h += &html_table(&fx.grid(), "effect");
            h += &effect_chart(&fx.axis, &fx.values);
            h += "</div>";
        }
        h += "</div>";
    }

    if !report.matched.is_empty() {
        h += "<h2 id=\"matched\">All else equal</h2><p>Configurations that differ in one axis only.</p>";
        h += &html_table(&crate::report::matched_grid(&report.matched), "matched");
    }

    if let Some(early) = &report.early_stopping {
        let _ = write!(
            h,
            "<h2 id=\"early-stopping\">Early stopping</h2><p>{}</p>",
            esc(&early.describe())
        );
        h += &html_table(&early.grid(), "rung");
        h += &rungs_chart(early);
    }

    if let Some(search) = &report.search {
        h += &search_section(search, report);
    }

    if let Some(pbt) = &report.pbt {
        let _ = write!(
            h,
            "<h2 id=\"pbt\">Population-based training</h2><p>{}</p>",
            esc(&pbt.describe())
        );
        h += &pbt_charts(pbt);
        h += &html_table(&pbt.lineage(), "segment");
    }

    if let Some(best) = report.rows.iter().find(|r| r.confusion.is_some()) {
        let _ = write!(
            h,
            "<h2 id=\"confusion\">Confusion matrix of the best trial ({})</h2>",
            esc(&best.name())
        );
        h += &confusion_table(best);
    }

    let bce = report.bce_rows();
    if !bce.is_empty() {
        h += "<h2 id=\"bce\">Binary cross-entropy: what Keras showed vs true accuracy</h2>\
              <p>With binary cross-entropy Keras' accuracy metric counts each of the 10 outputs separately. On a softmax \
              output (what the study ran) a model that puts every image in one class scores 82% at 10% true accuracy; \
              with a sigmoid per class, answering \"no\" to every class scores 90%.</p>\
              ";
        h += &html_table(&report.bce_grid(bce), "bce");
    }
    h
}
