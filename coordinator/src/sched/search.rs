//! A search that learns from its results (`search = "tpe"`): the sweep's space, its budget,
//! and the rule that turns the observations so far into the next trial. Pure: the caller
//! passes each trial's outcome in and stores what comes out; [`super::tpe`] does the
//! modelling.
//!
//! Rules:
//! - A search's trials are its *members*, in the order they were suggested; the budget counts
//!   members, so a trial once suggested is spent whether it trains, fails or is cancelled.
//! - The `n`-th suggestion draws from a generator seeded with `(search_seed, n)` alone, so
//!   with the same observations in the same order it is the same trial on every run and
//!   after every restart.
//! - The model sees earlier sweeps' trials in the same space first (the *prior* trials, in
//!   the order the caller adds them), then the members in order. A trial fits the space when every field that is not
//!   an axis has the sweep's default value and every active axis holds one of its values.
//! - A suggestion that is already a member or a prior trial (a small or discrete space) is drawn again: up to
//!   [`MODEL_DRAWS`] times from the model, then up to [`RANDOM_DRAWS`] times uniformly. A
//!   suggestion that makes an invalid trial (say `step_epochs` beyond `epochs`) is drawn
//!   again the same way. When every draw fails the search is exhausted: it ends short of its
//!   budget and says why.
//! - Trials suggested but not finished are left out of the model ([`PENDING`], measured
//!   against a constant liar).
//! - A conditional axis is active only when its parent (a list axis) holds one of the
//!   condition's values; an inactive axis keeps the sweep's default.

use super::tpe::{self, Condition, Dim, Kind, Observation, Outcome, Point, TpeError};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use sweep_proto::ids::TrialId;
use sweep_proto::TrialSpec;

/// What the model makes of trials suggested but not finished (queued or running).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// Left out of the densities; a repeat of one is drawn again (see the rules).
    LeftOut,
    /// A constant liar: counted as bad, so that suggestions made together spread out.
    Liar,
}

/// Pending trials are left out. Measured against the constant liar, median regret over 100
/// seeds (`search-bench quality --without-liar`, bench/search.sh; docs/PERFORMANCE.md,
/// "Search"): Branin 60 trials 4 pending 0.144 left out, 0.164 liar; Hartmann-6 0.406 and
/// 0.432; with 32 pending (50 seeds) Branin 0.063 and 0.153, Hartmann-6 0.741 and 0.758,
/// the mixed function 0.132 and 0.127. The liar pushes suggestions away from the good region
/// the pending ones sit in; copies are prevented anyway, since a trial the search already has
/// is drawn again.
pub const PENDING: Pending = Pending::LeftOut;

/// The observations as the model takes them under `rule`.
pub fn model_view(observations: Vec<Observation>, rule: Pending) -> Vec<Observation> {
    match rule {
        Pending::Liar => observations,
        Pending::LeftOut => observations
            .into_iter()
            .filter(|o| o.outcome != Outcome::Pending)
            .collect(),
    }
}

/// Draws from the model before falling back to uniform ones, when suggestions repeat.
pub const MODEL_DRAWS: usize = 16;
/// Uniform draws after the model's, before the search is called exhausted.
pub const RANDOM_DRAWS: usize = 48;

/// The values an axis takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Values {
    /// Unordered choices, as written in the sweep file.
    List { values: Vec<toml::Value> },
    /// A real in [min, max]; on the log scale with `log`; on the grid min + k step with `step`.
    Float {
        min: f64,
        max: f64,
        log: bool,
        step: Option<f64>,
    },
    /// An integer in [min, max]; on the log scale with `log`; every `step` with `step`.
    Int {
        min: i64,
        max: i64,
        log: bool,
        step: Option<i64>,
    },
}

/// Active only when list axis `axis` holds one of `values`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct When {
    pub axis: String,
    pub values: Vec<toml::Value>,
}

/// One axis of the space: a trial field and its values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    pub name: String,
    pub values: Values,
    pub when: Option<When>,
}

/// A search as the sweep file sets it: the space (axes, parents before the axes they
/// condition), the fields every trial shares (`base`), the budget and the seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRule {
    /// Trials to suggest in all (`trials`).
    pub budget: usize,
    /// Uniform suggestions before the model (`startup_trials`).
    pub startup: usize,
    pub seed: u64,
    pub axes: Vec<Axis>,
    pub base: toml::Table,
}

/// What comes next in a search.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// A new trial: store it as a member, then lease it.
    Suggest {
        id: TrialId,
        spec: TrialSpec,
        point: Point,
    },
    /// Every trial of the budget has been suggested.
    Done,
    /// No new valid trial was found (see the rules): the search ends short of its budget.
    Exhausted(String),
    /// Draws were new and valid but the caller's `accept` refused them: nothing this time.
    Refused,
}

/// A search's state: the rule, its members and the prior trials, with their points.
#[derive(Debug, Clone)]
pub struct Searcher {
    pub rule: SearchRule,
    dims: Vec<Dim>,
    /// For each list axis, its values as a trial holds them (`1` and `1.0` alike; `None`: the
    /// field's default, which a trial's TOML leaves out).
    canonical: Vec<Vec<Option<toml::Value>>>,
    /// For each range axis, the bound (if either) that is the field's default, which a
    /// trial's TOML leaves out.
    omitted_at: Vec<Option<f64>>,
    /// The base as a trial holds it.
    base: toml::Table,
    /// Members in suggestion order, with their points (`None`: outside the space, after an
    /// edit of the sweep file).
    members: Vec<(TrialId, Option<Point>)>,
    prior: Vec<(TrialId, Point)>,
    /// Members' and prior trials' ids.
    known: HashSet<TrialId>,
    /// Why the search ended short of its budget, once it has.
    exhausted: Option<String>,
}

impl Searcher {
    /// A search with no members yet; an error when the rule's space does not hold together
    /// (the sweep file's parser checks the same first, with places).
    pub fn new(rule: SearchRule) -> Result<Searcher, String> {
        let base = canonical_table(&rule.base)?;
        let mut dims = Vec::new();
        let mut canonical = Vec::new();
        let mut omitted_at = Vec::new();
        for (i, axis) in rule.axes.iter().enumerate() {
            let when = match &axis.when {
                None => None,
                Some(w) => Some(condition(&rule.axes[..i], &canonical, w, &axis.name)?),
            };
            let omitted = |v: f64, int: bool| -> Result<Option<f64>, String> {
                let value = if int {
                    toml::Value::Integer(v as i64)
                } else {
                    toml::Value::Float(v)
                };
                Ok(canonical_value(&axis.name, &value)?.is_none().then_some(v))
            };
            let kind = dim_kind(&axis.values);
            let (values, default) = match &axis.values {
                Values::List { values } => {
                    let c = values
                        .iter()
                        .map(|v| canonical_value(&axis.name, v))
                        .collect::<Result<Vec<_>, _>>()?;
                    (c, None)
                }
                Values::Float { min, max, .. } => {
                    (Vec::new(), omitted(*min, false)?.or(omitted(*max, false)?))
                }
                Values::Int { min, max, .. } => (
                    Vec::new(),
                    omitted(*min as f64, true)?.or(omitted(*max as f64, true)?),
                ),
            };
            dims.push(Dim {
                name: axis.name.clone(),
                kind,
                when,
            });
            canonical.push(values);
            omitted_at.push(default);
        }
        Ok(Searcher {
            rule,
            dims,
            canonical,
            omitted_at,
            base,
            members: Vec::new(),
            prior: Vec::new(),
            known: HashSet::new(),
            exhausted: None,
        })
    }

    /// The search without its trials: the space, the rule and the base, knowing no trial.
    /// What a suggestion made off the coordinator's lock draws with: a repeat of a trial
    /// the search has is then found when it is placed, and drawn again there with
    /// [`Searcher::next_at`] at the same position, which replays the same draws (cloning
    /// the members and ids instead took a tenth of the coordinator's time under load).
    pub fn detached(&self) -> Searcher {
        Searcher {
            rule: self.rule.clone(),
            dims: self.dims.clone(),
            canonical: self.canonical.clone(),
            omitted_at: self.omitted_at.clone(),
            base: self.base.clone(),
            members: Vec::new(),
            prior: Vec::new(),
            known: HashSet::new(),
            exhausted: None,
        }
    }

    /// The TPE space the rule describes.
    pub fn dims(&self) -> &[Dim] {
        &self.dims
    }

    pub fn members(&self) -> impl Iterator<Item = &TrialId> {
        self.members.iter().map(|(id, _)| id)
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Whether `id` is a member or a prior trial.
    pub fn knows(&self, id: &str) -> bool {
        self.known.contains(id)
    }

    /// Trials still to suggest: 0 once the budget is met or the search is exhausted.
    pub fn left(&self) -> usize {
        if self.exhausted.is_some() {
            return 0;
        }
        self.rule.budget.saturating_sub(self.members.len())
    }

    pub fn exhausted(&self) -> Option<&str> {
        self.exhausted.as_deref()
    }

    /// Marks the search as ended short of its budget.
    pub fn exhaust(&mut self, why: String) {
        self.exhausted = Some(why);
    }

    /// Adds a member (a suggestion, or a stored member on restart).
    pub fn add_member(&mut self, id: TrialId, spec: &TrialSpec) {
        let point = self.point(spec);
        self.known.insert(id.clone());
        self.members.push((id, point));
    }

    /// Takes back the last member (its suggestion never reached the disk).
    pub fn remove_member(&mut self, id: &str) {
        if let Some(i) = self.members.iter().rposition(|(m, _)| m == id) {
            self.members.remove(i);
            self.known.remove(id);
        }
    }

    /// Adds an earlier sweep's trial as a prior observation, if it fits the space.
    pub fn add_prior(&mut self, id: TrialId, spec: &TrialSpec) -> bool {
        if self.knows(&id) {
            return false;
        }
        match self.point(spec) {
            Some(point) => {
                self.known.insert(id.clone());
                self.prior.push((id, point));
                true
            }
            None => false,
        }
    }

    pub fn prior_count(&self) -> usize {
        self.prior.len()
    }

    /// The observations TPE sees: prior trials, then members in order, each with the
    /// outcome `outcome_of` gives (members outside the space are left out, and pending ones
    /// by [`PENDING`]).
    pub fn observations(&self, outcome_of: impl Fn(&TrialId) -> Outcome) -> Vec<Observation> {
        let prior = self.prior.iter().map(|(id, p)| (id, Some(p)));
        let members = self.members.iter().map(|(id, p)| (id, p.as_ref()));
        let all = prior
            .chain(members)
            .filter_map(|(id, p)| {
                p.map(|p| Observation {
                    point: p.clone(),
                    outcome: outcome_of(id),
                })
            })
            .collect();
        model_view(all, PENDING)
    }

    /// How many of the trials the model would see (prior and members in the space) `pred`
    /// holds for, without building their observations.
    pub fn count(&self, pred: impl Fn(&TrialId) -> bool) -> usize {
        let prior = self.prior.iter().map(|(id, _)| id);
        let members = self
            .members
            .iter()
            .filter(|(_, p)| p.is_some())
            .map(|(id, _)| id);
        prior.chain(members).filter(|id| pred(id)).count()
    }

    /// The next trial, by the rules in the module doc, given [`Searcher::observations`].
    pub fn next(&self, observations: &[Observation]) -> Result<Next, TpeError> {
        self.next_where(observations, |_, _| true)
    }

    /// [`Searcher::next`], drawing again also when `accept` refuses a trial (the coordinator
    /// refuses one another sweep already has, and one the asking worker's device cannot run).
    pub fn next_where(
        &self,
        observations: &[Observation],
        accept: impl Fn(&TrialId, &TrialSpec) -> bool,
    ) -> Result<Next, TpeError> {
        self.next_at(self.members.len(), observations, accept)
    }

    /// [`Searcher::next_where`] for the suggestion at `position` (the coordinator makes
    /// suggestions off its lock, and reserves positions for those being made).
    pub fn next_at(
        &self,
        position: usize,
        observations: &[Observation],
        accept: impl Fn(&TrialId, &TrialSpec) -> bool,
    ) -> Result<Next, TpeError> {
        if let Some(why) = &self.exhausted {
            return Ok(Next::Exhausted(why.clone()));
        }
        if position >= self.rule.budget {
            return Ok(Next::Done);
        }
        let mut rng = generator(self.rule.seed, position);
        let mut why = String::from("every draw was already tried");
        let mut refused = false;
        // Fitted once: a draw again samples the same model (each fit of 10,000 trials took
        // most of a suggestion's time, `search-bench latency`).
        let model = tpe::fit(&self.dims, observations, self.rule.startup)?;
        let uniform = tpe::fit(&self.dims, &[], usize::MAX)?;
        for draw in 0..MODEL_DRAWS + RANDOM_DRAWS {
            let point = if draw < MODEL_DRAWS {
                model.suggest(&mut rng)
            } else {
                uniform.suggest(&mut rng)
            };
            let spec = match self.spec(&point) {
                Ok(spec) => spec,
                Err(e) => {
                    why = e;
                    continue;
                }
            };
            let id = TrialId::of(&spec);
            if self.knows(&id) {
                continue;
            }
            if !accept(&id, &spec) {
                refused = true;
                continue;
            }
            return Ok(Next::Suggest { id, spec, point });
        }
        if refused {
            return Ok(Next::Refused);
        }
        Ok(Next::Exhausted(format!(
            "no new trial in {} draws ({why}); the search ends after {position} of {} trials",
            MODEL_DRAWS + RANDOM_DRAWS,
            self.rule.budget
        )))
    }

    /// The trial at `point`: the base with each active axis's value.
    pub fn spec(&self, point: &Point) -> Result<TrialSpec, String> {
        let mut table = self.rule.base.clone();
        for (axis, v) in self.rule.axes.iter().zip(point) {
            let Some(v) = *v else { continue };
            let value = match &axis.values {
                Values::List { values } => values
                    .get(v as usize)
                    .cloned()
                    .ok_or_else(|| format!("`{}`: no choice {v}", axis.name))?,
                Values::Float { .. } => toml::Value::Float(v),
                Values::Int { .. } => toml::Value::Integer(v.round() as i64),
            };
            table.insert(axis.name.clone(), value);
        }
        let spec: TrialSpec = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_string())?;
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }

    /// Where `spec` sits in the space, or `None` when it does not fit it: a field that is not
    /// an axis differs from the base, an axis holds a value outside it, or the point does not
    /// make `spec` again (the check that settles a field its TOML leaves out at its default).
    pub fn point(&self, spec: &TrialSpec) -> Option<Point> {
        let table = toml::Table::try_from(spec).ok()?;
        let is_axis = |k: &str| self.rule.axes.iter().any(|a| a.name == k);
        let same_base = self
            .base
            .keys()
            .chain(table.keys())
            .filter(|k| !is_axis(k))
            .all(|k| table.get(k) == self.base.get(k));
        if !same_base {
            return None;
        }
        let mut point: Point = vec![None; self.dims.len()];
        for (i, dim) in self.dims.iter().enumerate() {
            let name = &self.rule.axes[i].name;
            let held = table.get(name);
            let active = dim
                .when
                .as_ref()
                .is_none_or(|c| point[c.parent].is_some_and(|p| c.values.contains(&(p as usize))));
            if !active {
                if held != self.base.get(name) {
                    return None;
                }
                continue;
            }
            point[i] = Some(self.coordinate(i, held)?);
        }
        let again = self.spec(&point).ok()?;
        (TrialId::of(&again) == TrialId::of(spec)).then_some(point)
    }

    /// Axis `i`'s coordinate for a value a trial holds (`None`: left out, at its default), if
    /// the axis has it.
    fn coordinate(&self, i: usize, held: Option<&toml::Value>) -> Option<f64> {
        let number = match held {
            None => self.omitted_at[i],
            Some(toml::Value::Integer(n)) => Some(*n as f64),
            Some(toml::Value::Float(f)) => Some(*f),
            Some(_) => None,
        };
        let inside = |v: f64, lo: f64, hi: f64| (lo..=hi).contains(&v).then_some(v);
        match &self.rule.axes[i].values {
            Values::List { .. } => self.canonical[i]
                .iter()
                .position(|c| c.as_ref() == held)
                .map(|p| p as f64),
            Values::Float { min, max, .. } => inside(number?, *min, *max),
            Values::Int { min, max, .. } => {
                let v = number?;
                (v.fract() == 0.0).then_some(())?;
                inside(v, *min as f64, *max as f64)
            }
        }
    }
}

/// BOHB's choice of the budget to model at (Falkner et al. 2018): of `budgets` (epochs, in
/// any order), the largest at which at least `enough` trials have a value, by `observed_at`.
pub fn model_budget(
    budgets: &[u32],
    observed_at: impl Fn(u32) -> usize,
    enough: usize,
) -> Option<u32> {
    let mut b: Vec<u32> = budgets.to_vec();
    b.sort_unstable();
    b.into_iter()
        .rev()
        .find(|&e| observed_at(e) >= enough.max(1))
}

/// The sampler's dimension for an axis's values: a list is categorical (by index), a stepped
/// integer range a stepped real one.
pub fn dim_kind(values: &Values) -> Kind {
    match *values {
        Values::List { ref values } => Kind::Categorical {
            choices: values.len(),
        },
        Values::Float {
            min,
            max,
            log,
            step,
        } => Kind::Float {
            low: min,
            high: max,
            log,
            step,
        },
        Values::Int {
            min,
            max,
            log,
            step: None,
        } => Kind::Int {
            low: min,
            high: max,
            log,
        },
        Values::Int {
            min,
            max,
            step: Some(s),
            ..
        } => Kind::Float {
            low: min as f64,
            high: max as f64,
            log: false,
            step: Some(s as f64),
        },
    }
}

/// The random generator of a search's `position`-th suggestion: `(seed, position)` alone
/// decide it (bench/search drives the sampler through this too).
pub fn generator(seed: u64, position: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(position as u64);
    rng
}

/// `when`'s parent and values as indices (the parent must come earlier and be a list axis).
fn condition(
    earlier: &[Axis],
    canonical: &[Vec<Option<toml::Value>>],
    w: &When,
    axis: &str,
) -> Result<Condition, String> {
    let parent = earlier
        .iter()
        .position(|a| a.name == w.axis)
        .ok_or_else(|| {
            format!(
                "`{axis}`: its condition names `{}`, which is not an earlier axis",
                w.axis
            )
        })?;
    if !matches!(earlier[parent].values, Values::List { .. }) {
        return Err(format!(
            "`{axis}`: its condition's axis `{}` must be a list of values",
            w.axis
        ));
    }
    let mut values = Vec::new();
    for v in &w.values {
        let c = canonical_value(&w.axis, v)?;
        let i = canonical[parent]
            .iter()
            .position(|x| *x == c)
            .ok_or_else(|| {
                format!(
                    "`{axis}`: its condition's value {v} is not one of `{}`'s values",
                    w.axis
                )
            })?;
        values.push(i);
    }
    Ok(Condition { parent, values })
}

/// A value as a trial holds it: `key = value` read as a trial and written back (`None`: the
/// field's default, which a trial's TOML leaves out). An error names a field that is not one.
pub fn canonical_value(key: &str, value: &toml::Value) -> Result<Option<toml::Value>, String> {
    let mut t = toml::Table::new();
    t.insert(key.to_string(), value.clone());
    Ok(canonical_table(&t)?.remove(key))
}

fn canonical_table(t: &toml::Table) -> Result<toml::Table, String> {
    let spec: TrialSpec = toml::Value::Table(t.clone())
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())?;
    toml::Table::try_from(&spec).map_err(|e| e.to_string())
}

#[cfg(test)]
pub(crate) mod tests;
