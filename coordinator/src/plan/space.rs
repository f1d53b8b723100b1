//! `search = "tpe"`: the sweep file's `[grid]` read as a search space, and the budget.
//!
//! ```toml
//! search = "tpe"
//! trials = 40                 # the budget: trials suggested in all
//! startup_trials = 10         # uniform suggestions before the model (default 10)
//! search_seed = 1
//!
//! [grid]
//! optimizer = ["sgd", "adamw"]                          # a list: categorical
//! lr = { min = 1e-4, max = 0.3, log = true }            # a real range, on the log scale
//! batch_size = { min = 32, max = 256, step = 32 }       # integer bounds: integers
//! momentum = { min = 0.5, max = 0.99, when = { optimizer = "sgd" } }
//! nesterov = { values = [true, false], when = { optimizer = "sgd" } }
//! ```
//!
//! Rules (each refused with its file:line:column):
//! - A range has `min < max` (numbers of the key's type); `log` needs `min > 0` and takes no
//!   `step`; `step` is positive; `int = true` (or two integer bounds) makes it integer.
//! - `when` names one list axis of `[grid]` and one or more of its values; an axis whose
//!   condition holds is active, otherwise the trial keeps the `[defaults]` value.
//! - The budget is 1 to [`super::HARD_MAX_TRIALS`]; a space of fewer points than the budget
//!   (lists only) is refused: that is a grid.
//! - `[[include]]`, `[[exclude]]`, `repeats` and `samples` belong to grids and random search.

use super::{number, Parser, SweepError, HARD_MAX_TRIALS};
use crate::sched::search::{Axis, SearchRule, Searcher, Values, When};
use crate::sched::tpe::DEFAULT_STARTUP;
use toml::Spanned;

/// How many uniform draws planning tries before calling a space one with no valid trial.
const PLAN_DRAWS: usize = 64;

impl Parser<'_> {
    /// The search rule of a `search = "tpe"` sweep, checked.
    pub(super) fn search_rule(&self) -> Result<SearchRule, SweepError> {
        self.tpe_only_keys()?;
        let budget = self.budget()?;
        let startup = match &self.raw.startup_trials {
            None => DEFAULT_STARTUP,
            Some(n) if (0..=HARD_MAX_TRIALS as i64).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                return Err(self.err(
                    Some(n.span()),
                    format!(
                        "`startup_trials` = {} must be between 0 and {HARD_MAX_TRIALS}",
                        n.get_ref()
                    ),
                ))
            }
        };
        if self.axes.is_empty() {
            return Err(self.err(
                None,
                "search = \"tpe\" needs at least one range or list axis in [grid]".into(),
            ));
        }
        let mut axes = Vec::new();
        for key in &self.axes {
            axes.push((key, self.axis(key)?));
        }
        let axes = self.order_by_condition(axes)?;
        let rule = SearchRule {
            budget,
            startup,
            seed: self.raw.search_seed,
            axes,
            base: self.defaults.clone(),
        };
        self.check_space(&rule)?;
        Ok(rule)
    }

    /// Keys of grids and random search, and `trials` without TPE.
    fn tpe_only_keys(&self) -> Result<(), SweepError> {
        let refuse = |what: &str, at: Option<std::ops::Range<usize>>| {
            Err(self.err(
                at,
                format!("{what} is for grids and random search, not search = \"tpe\""),
            ))
        };
        self.grid_only_keys("`trials`", refuse)
    }

    /// `samples`, `repeats`, `[[include]]` and `[[exclude]]`, which only grids and random
    /// search take, refused by `refuse` (`budget` names what to use instead of `samples`).
    pub(super) fn grid_only_keys(
        &self,
        budget: &str,
        refuse: impl Fn(&str, Option<std::ops::Range<usize>>) -> Result<(), SweepError>,
    ) -> Result<(), SweepError> {
        let raw = &self.raw;
        if let Some(n) = &raw.samples {
            return refuse(&format!("`samples` (use {budget})"), Some(n.span()));
        }
        if raw.repeats != 1 {
            return refuse("`repeats`", None);
        }
        if let Some(inc) = raw.include.first() {
            return refuse("`[[include]]`", Some(super::inc_start(inc)..0));
        }
        if let Some(ex) = raw.exclude.first() {
            return refuse("`[[exclude]]`", Some(super::inc_start(ex)..0));
        }
        Ok(())
    }

    /// `trials`: the budget, required.
    fn budget(&self) -> Result<usize, SweepError> {
        match &self.raw.trials {
            None => Err(self.err(
                None,
                "search = \"tpe\" needs `trials`, the number of trials to suggest".into(),
            )),
            Some(n) if (1..=HARD_MAX_TRIALS as i64).contains(n.get_ref()) => {
                Ok(*n.get_ref() as usize)
            }
            Some(n) => Err(self.err(
                Some(n.span()),
                format!(
                    "`trials` = {} must be between 1 and {HARD_MAX_TRIALS}",
                    n.get_ref()
                ),
            )),
        }
    }

    /// One `[grid]` entry as an axis.
    fn axis(&self, key: &Spanned<String>) -> Result<Axis, SweepError> {
        let name = key.get_ref();
        let value = &self.raw.grid[key];
        let at = || Some(value.span());
        let fail = |m: String| self.err(at(), format!("`grid.{name}`: {m}"));
        let table = match value.get_ref() {
            toml::Value::Array(items) => {
                return Ok(Axis {
                    name: name.clone(),
                    values: Values::List {
                        values: items.clone(),
                    },
                    when: None,
                })
            }
            toml::Value::Table(t) => t,
            _ => return Err(fail("must be a list of values or a range".into())),
        };
        let when = match table.get("when") {
            None => None,
            Some(w) => Some(self.when(name, w).map_err(fail)?),
        };
        let values = if let Some(v) = table.get("values") {
            if let Some(k) = table
                .keys()
                .find(|k| !matches!(k.as_str(), "values" | "when"))
            {
                return Err(fail(format!("`{k}` does not go with `values`")));
            }
            match v {
                toml::Value::Array(items) if !items.is_empty() => Values::List {
                    values: items.clone(),
                },
                _ => return Err(fail("`values` must be a non-empty list".into())),
            }
        } else {
            range(name, table).map_err(fail)?
        };
        Ok(Axis {
            name: name.clone(),
            values,
            when,
        })
    }

    /// `when = { AXIS = VALUE }` or `{ AXIS = [VALUES] }`.
    fn when(&self, name: &str, w: &toml::Value) -> Result<When, String> {
        let toml::Value::Table(t) = w else {
            return Err("`when` must be a table: when = { optimizer = \"sgd\" }".into());
        };
        let mut entries = t.iter();
        let (Some((axis, v)), None) = (entries.next(), entries.next()) else {
            return Err("`when` names exactly one axis: when = { optimizer = \"sgd\" }".into());
        };
        let values = match v {
            toml::Value::Array(items) if !items.is_empty() => items.clone(),
            toml::Value::Array(_) => return Err("`when` lists no value".into()),
            v => vec![v.clone()],
        };
        let Some(parent) = self.axes.iter().find(|k| k.get_ref() == axis) else {
            return Err(format!(
                "`when` names `{axis}`, which is not an axis of [grid]"
            ));
        };
        if parent.get_ref() == name {
            return Err("`when` names the axis itself".into());
        }
        let choices = match self.raw.grid[parent].get_ref() {
            toml::Value::Array(items) => items.clone(),
            toml::Value::Table(t) => match t.get("values") {
                Some(toml::Value::Array(items)) => items.clone(),
                _ => {
                    return Err(format!(
                        "`when` names `{axis}`, which is a range; name a list axis"
                    ))
                }
            },
            _ => Vec::new(),
        };
        let same = |a: &toml::Value, b: &toml::Value| {
            crate::sched::search::canonical_value(axis, a).ok()
                == crate::sched::search::canonical_value(axis, b).ok()
        };
        for v in &values {
            if !choices.iter().any(|c| same(c, v)) {
                return Err(format!(
                    "`when`: `{axis}` never takes {v} (its values: {})",
                    choices
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        Ok(When {
            axis: axis.clone(),
            values,
        })
    }

    /// Axes with every parent before the axes its condition governs (file order otherwise);
    /// a cycle of conditions is refused.
    fn order_by_condition(
        &self,
        mut left: Vec<(&Spanned<String>, Axis)>,
    ) -> Result<Vec<Axis>, SweepError> {
        let mut out: Vec<Axis> = Vec::new();
        while !left.is_empty() {
            let ready = left.iter().position(|(_, a)| {
                a.when
                    .as_ref()
                    .is_none_or(|w| out.iter().any(|o| o.name == w.axis))
            });
            match ready {
                Some(i) => out.push(left.remove(i).1),
                None => {
                    let (key, _) = &left[0];
                    return Err(self.err(
                        Some(self.raw.grid[*key].span()),
                        format!(
                            "`grid.{}`: its `when` conditions form a cycle",
                            key.get_ref()
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The space holds together and some of its points are valid trials; a finite space has
    /// at least as many points as the budget.
    fn check_space(&self, rule: &SearchRule) -> Result<(), SweepError> {
        let searcher = Searcher::new(rule.clone()).map_err(|m| self.err(None, m))?;
        if let Some(n) = finite_size(&rule.axes).filter(|n| *n < rule.budget) {
            return Err(self.err(
                self.raw.trials.as_ref().map(|t| t.span()),
                format!(
                    "`trials` = {} is more than the {n} points the space has; use search = \"grid\"",
                    rule.budget
                ),
            ));
        }
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(rule.seed);
        let mut last = String::new();
        for _ in 0..PLAN_DRAWS {
            let point = crate::sched::tpe::suggest(searcher.dims(), &[], usize::MAX, &mut rng)
                .map_err(|e| self.err(None, e.to_string()))?;
            match searcher.spec(&point) {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(self.err(
            None,
            format!("no trial in the space is valid ({PLAN_DRAWS} tried); the last: {last}"),
        ))
    }
}

/// A range `{ min, max, log, int, step }`, each bound a value `name` takes.
pub(super) fn range(name: &str, t: &toml::Table) -> Result<Values, String> {
    if let Some(k) = t
        .keys()
        .find(|k| !matches!(k.as_str(), "min" | "max" | "log" | "int" | "step" | "when"))
    {
        return Err(format!(
            "unknown key `{k}` in a range (min, max, log, int, step, when)"
        ));
    }
    let (Some(min), Some(max)) = (t.get("min"), t.get("max")) else {
        return Err("a range needs `min` and `max` (or give `values = [...]`)".into());
    };
    for (bound, v) in [("min", min), ("max", max)] {
        check_bound(name, v).map_err(|m| format!("`{bound}`: {m}"))?;
    }
    let flag = |k: &str| match t.get(k) {
        None => Ok(false),
        Some(toml::Value::Boolean(b)) => Ok(*b),
        Some(v) => Err(format!("`{k}` must be true or false, not {v}")),
    };
    let (log, int) = (flag("log")?, flag("int")?);
    let int = int
        || matches!(
            (min, max),
            (toml::Value::Integer(_), toml::Value::Integer(_))
        );
    let (Some(lo), Some(hi)) = (number(min), number(max)) else {
        return Err("`min` and `max` must be numbers".into());
    };
    if !(lo < hi) {
        return Err(format!("`min` ({lo}) must be below `max` ({hi})"));
    }
    if log && lo <= 0.0 {
        return Err(format!("a log range needs `min` > 0, not {lo}"));
    }
    let step = match t.get("step") {
        None => None,
        Some(_) if log => return Err("`step` does not go with `log`".into()),
        Some(v) => match number(v) {
            Some(s) if s > 0.0 && s.is_finite() => Some(s),
            _ => return Err(format!("`step` must be a positive number, not {v}")),
        },
    };
    // The grid is min, min + step, ..., max: `max` must be on it.
    if let Some(s) = step {
        let k = ((hi - lo) / s).round();
        if ((lo + k * s) - hi).abs() > 1e-9 * s.max(hi.abs()) {
            let last = lo + ((hi - lo) / s).floor() * s;
            return Err(format!(
                "`max` ({hi}) is not `min` plus a whole number of `step`s ({s}); the last point of that grid is {last}"
            ));
        }
    }
    if int {
        let whole = |x: f64| x.fract() == 0.0 && x.abs() < 9.0e15;
        if !whole(lo) || !whole(hi) || step.is_some_and(|s| !whole(s)) {
            return Err("an integer range needs whole `min`, `max` and `step`".into());
        }
        return Ok(Values::Int {
            min: lo as i64,
            max: hi as i64,
            log,
            step: step.map(|s| s as i64),
        });
    }
    Ok(Values::Float {
        min: lo,
        max: hi,
        log,
        step,
    })
}

/// A bound must be a value the key takes: of its type, and valid on its own (a trial with
/// only this field set refuses nothing about this key).
pub(super) fn check_bound(name: &str, v: &toml::Value) -> Result<(), String> {
    let spec: sweep_proto::TrialSpec = toml::Value::Table(field_table(name, v))
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())?;
    let outer = |k: &str| k.split('.').next().map(str::to_owned);
    match spec.validate() {
        Err(e) if matches!(&e, sweep_proto::SpecError::Invalid { key, .. } if outer(key) == outer(name)) => {
            Err(e.to_string())
        }
        _ => Ok(()),
    }
}

/// A trial table holding only `name = v`; a dotted name (`augment.shift`) is a field of a
/// nested table.
pub(super) fn field_table(name: &str, v: &toml::Value) -> toml::Table {
    let mut t = toml::Table::new();
    match name.split_once('.') {
        None => {
            t.insert(name.to_string(), v.clone());
        }
        Some((outer, inner)) => {
            t.insert(outer.to_string(), toml::Value::Table(field_table(inner, v)));
        }
    }
    t
}

/// How many points a space of lists, integers and stepped reals has at most (`None`: a
/// continuous range makes it large). A conditional axis is counted as if always active,
/// which overcounts: a budget between the true count and this one ends the search early.
fn finite_size(axes: &[Axis]) -> Option<usize> {
    axes.iter().try_fold(1usize, |n, a| match &a.values {
        Values::List { values } => n.checked_mul(values.len()),
        Values::Int {
            min,
            max,
            step,
            log: _,
        } => n.checked_mul(usize::try_from((max - min) / step.unwrap_or(1) + 1).ok()?),
        Values::Float {
            min,
            max,
            step: Some(s),
            ..
        } => n.checked_mul(((max - min) / s).round() as usize + 1),
        Values::Float { step: None, .. } => None,
    })
}

/// Sized for `coordinator plan`: one line per axis, then the budget.
pub fn describe(rule: &SearchRule) -> String {
    let mut out = String::new();
    for a in &rule.axes {
        let values = describe_values(&a.values);
        let when = a
            .when
            .as_ref()
            .map(|w| {
                format!(
                    "  (when {} is {})",
                    w.axis,
                    w.values
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(" or ")
                )
            })
            .unwrap_or_default();
        out.push_str(&format!("  {:<20} {values}{when}\n", a.name));
    }
    out.push_str(&format!(
        "TPE search: {} trials ({} uniform first), search_seed {}\n",
        rule.budget, rule.startup, rule.seed
    ));
    out
}

/// An axis's values in words: "one of ...", "real in [min, max], log scale".
pub(super) fn describe_values(values: &Values) -> String {
    match values {
        Values::List { values } => format!(
            "one of {}",
            values
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Values::Float {
            min,
            max,
            log,
            step,
        } => format!(
            "real in [{min}, {max}]{}{}",
            if *log { ", log scale" } else { "" },
            step.map(|s| format!(", step {s}")).unwrap_or_default()
        ),
        Values::Int {
            min,
            max,
            log,
            step,
        } => format!(
            "integer in [{min}, {max}]{}{}",
            if *log { ", log scale" } else { "" },
            step.map(|s| format!(", step {s}")).unwrap_or_default()
        ),
    }
}

/// Trials that stand for the space when `[early_stopping]` is checked: the base with the
/// longest `epochs` and the smallest `validation_split` the axes allow.
pub(super) fn corners(rule: &SearchRule) -> Vec<super::PlannedTrial> {
    let mut table = rule.base.clone();
    for a in &rule.axes {
        let pick = match (a.name.as_str(), &a.values) {
            ("epochs", Values::Int { max, .. }) => toml::Value::Integer(*max),
            ("validation_split", Values::Float { min, .. }) => toml::Value::Float(*min),
            ("epochs" | "validation_split", Values::List { values }) => {
                let n = number;
                let best = values.iter().filter(|v| n(v).is_some());
                let chosen = if a.name == "epochs" {
                    best.max_by(|x, y| n(x).unwrap_or(0.0).total_cmp(&n(y).unwrap_or(0.0)))
                } else {
                    best.min_by(|x, y| n(x).unwrap_or(0.0).total_cmp(&n(y).unwrap_or(0.0)))
                };
                match chosen {
                    Some(v) => v.clone(),
                    None => continue,
                }
            }
            _ => continue,
        };
        table.insert(a.name.clone(), pick);
    }
    let Ok(spec) = toml::Value::Table(table).try_into::<sweep_proto::TrialSpec>() else {
        return Vec::new();
    };
    vec![super::PlannedTrial {
        id: sweep_proto::ids::TrialId::of(&spec),
        spec,
        label: None,
        reported: None,
    }]
}

/// The most epochs a trial of the space trains (BOHB's full budget).
pub fn longest_epochs(rule: &SearchRule) -> Option<u32> {
    corners(rule).first().map(|t| t.spec.epochs)
}
