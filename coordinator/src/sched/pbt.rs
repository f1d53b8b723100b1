//! Population-based training (`search = "pbt"`; Jaderberg et al. 2017): a population of
//! members trains in segments of `interval_epochs`; after each segment the worst members take
//! a better member's weights and perturb its hyperparameters, so the population finds a
//! schedule rather than one value. Pure: the caller passes each segment's score in and stores
//! and trains the segments that come out.
//!
//! Rules:
//! - **Synchronous generations.** Generation g trains every member from epoch `g·interval` to
//!   `min((g+1)·interval, epochs)`. The next generation is decided once every segment of this
//!   one has ended, from their scores alone: the history is a function of the seed and the
//!   scores, whatever the order results arrive in, the number of workers, or restarts in
//!   between. (Asynchronous PBT, Ray Tune's default, decides at each arrival against what the
//!   others have reported so far, so its history depends on timing.) The cost: slots idle at
//!   the end of a generation while its last segments finish.
//! - **Score**: the validation accuracy at the segment's last epoch; higher is better. A
//!   segment that failed or diverged has none and ranks below every scored one.
//! - **Ranking**: by score, ties in member order (the lower-numbered member ranks higher). The
//!   top and the bottom quantile hold `n = min(ceil(population·quantile), floor(population/2))`
//!   members each (Ray Tune's rule; at least 1, as `population >= 2` and `quantile > 0`).
//! - **Exploit**: a member in the bottom quantile, and any member without a score, starts its
//!   next segment from the checkpoint of a top-quantile member *strictly better* than it,
//!   chosen uniformly; when none is (a tie across the quantiles) it continues its own. When no
//!   member has a score, the population cannot go on ([`PbtError::NoScores`]).
//! - **Explore** (exploiting members only, applied to the parent's values), per mutated field
//!   in file order: with `resample_probability`, a uniform draw from its range or list;
//!   otherwise a range's value times one of `perturbation_factors` (chosen uniformly), then
//!   clamped into the range and onto its grid, and a list's value moved to a neighbour
//!   (either side with probability 1/2, staying put at an end).
//! - **Randomness**: member m's initial values draw from stream m of `search_seed`; the choices
//!   made for member m after generation g (parent, then exploration) from stream
//!   `(g+1)·population + m` ([`super::search::generator`]).
//! - **Initial values** are uniform draws, redrawn (up to [`INITIAL_DRAWS`] times) while they
//!   make no valid trial.
//! - **Budget**: every member trains the trial's `epochs`, in `ceil(epochs / interval_epochs)`
//!   segments (the last may be shorter).

use super::core::TrialState;
use super::search::{dim_kind, generator, Axis, Values};
use super::tpe::{Kind, Point};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;
use sweep_proto::{TrialSpec, TrialStatus};

/// Default `quantile`: the top and bottom quarter (Ray Tune's and the paper's).
pub const DEFAULT_QUANTILE: f64 = 0.25;
/// Default `resample_probability` (Ray Tune's).
pub const DEFAULT_RESAMPLE: f64 = 0.25;
/// Default `perturbation_factors` (the paper's and Ray Tune's).
pub const DEFAULT_FACTORS: [f64; 2] = [0.8, 1.2];
/// Draws for a member's initial values before the space is called one with no valid trial.
pub const INITIAL_DRAWS: usize = 64;

/// The trial fields a member may change between segments: those a trial's `changes` can set
/// ([`sweep_proto::Change`]). Each takes effect at the next segment's first step; the
/// optimiser's state (momentum buffers, Adam's moments, its step count) is kept, since none of
/// them changes its shape.
pub const MUTABLE: &[&str] = sweep_proto::CHANGEABLE;

/// Why a field outside [`MUTABLE`] cannot change mid-training.
pub fn frozen_reason(field: &str) -> &'static str {
    match field {
        "model" | "image_size" | "color" | "dataset" => {
            "it fixes the shapes of the weights a member copies"
        }
        "precision" | "semantics" | "channels_last" | "device" => {
            "it changes how the weights are trained or stored, so a copied checkpoint would not resume as it was trained"
        }
        "optimizer" | "nesterov" => "the optimiser's state a member copies belongs to its optimiser",
        "epochs" | "schedule" | "step_epochs" | "step_gamma" | "warmup_epochs" => {
            "the schedule runs over the member's whole training"
        }
        "seed" | "validation_split" | "train_images" | "train_batches" | "test_images"
        | "batch_size" | "layout" | "normalization" | "loss" => {
            "members must train on the same data in the same way to be compared"
        }
        _ => "it is not a trial field PBT may change",
    }
}

/// The smallest population: PBT copies between members.
pub const MIN_POPULATION: usize = 2;

/// A `quantile` that works: in (0, 0.5], so the top and bottom quantiles never overlap.
pub fn quantile_ok(q: f64) -> bool {
    q > 0.0 && q <= 0.5
}

/// A `resample_probability` in [0, 1].
pub fn resample_ok(p: f64) -> bool {
    (0.0..=1.0).contains(&p)
}

/// A perturbation factor: finite and positive.
pub fn factor_ok(f: f64) -> bool {
    f.is_finite() && f > 0.0
}

/// A PBT sweep's settings (`[pbt]`), checked by the sweep file's parser and by [`Pbt::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PbtRule {
    pub population: usize,
    pub interval_epochs: u32,
    pub quantile: f64,
    pub resample_probability: f64,
    pub perturbation_factors: Vec<f64>,
    /// `[pbt.mutations]` in file order (names as written: `lr`, `augment.shift`).
    pub mutations: Vec<Axis>,
    /// The fields every member shares (`[defaults]`).
    pub base: toml::Table,
    /// `search_seed`.
    pub seed: u64,
}

/// Where a segment's weights come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Start {
    /// Generation 0: initialised from the trial's seed.
    Scratch,
    /// The member's own previous segment, with its values unchanged.
    Own,
    /// The checkpoint of `parent`'s previous segment (its weights and optimiser state), with
    /// the parent's values explored; `score` and `parent_score` are what decided it.
    Exploit {
        parent: usize,
        parent_score: f64,
        score: Option<f64>,
    },
}

impl Segment {
    /// The member of the previous generation whose checkpoint it starts from: its own, or
    /// its parent's when it exploits (none in generation 0).
    pub fn source(&self) -> Option<usize> {
        match &self.start {
            Start::Scratch => None,
            Start::Own => Some(self.member),
            Start::Exploit { parent, .. } => Some(*parent),
        }
    }
}

/// A segment with its trial (its id and its lineage's schedule so far).
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub segment: Segment,
    pub id: sweep_proto::ids::TrialId,
    pub spec: TrialSpec,
}

/// One member's training between two epochs, with its values of the mutated fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub member: usize,
    pub generation: u32,
    /// Epochs trained before it: the epoch of the checkpoint it starts from.
    pub start_epoch: u32,
    /// The epoch it trains to, and is scored at.
    pub end_epoch: u32,
    /// Values of [`PbtRule::mutations`], in order (a list's by index).
    pub point: Point,
    pub start: Start,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PbtError {
    /// The rule does not hold together: the `[pbt]` key at fault (`defaults` for the trial) and
    /// why (the sweep file's parser reports the same with places).
    Rule { key: &'static str, message: String },
    /// No valid initial value in [`INITIAL_DRAWS`] draws for a member.
    NoValidStart { member: usize, last: String },
    /// Every member of a generation failed: nothing to copy.
    NoScores { generation: u32 },
    /// The caller's segments or scores do not make one whole generation.
    Mismatch(String),
}

impl fmt::Display for PbtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PbtError::Rule { message: m, .. } | PbtError::Mismatch(m) => f.write_str(m),
            PbtError::NoValidStart { member, last } => write!(
                f,
                "member {member}: no valid trial in {INITIAL_DRAWS} draws of its values; the last: {last}"
            ),
            PbtError::NoScores { generation } => write!(
                f,
                "every member failed in generation {generation}: no weights to copy, the population ends"
            ),
        }
    }
}

impl std::error::Error for PbtError {}

/// The population's rule with its sampler dimensions and each member's budget.
#[derive(Debug, Clone)]
pub struct Pbt {
    pub rule: PbtRule,
    kinds: Vec<Kind>,
    epochs: u32,
}

/// Members in each of the top and bottom quantiles (see the rules).
pub fn quantile_size(population: usize, quantile: f64) -> usize {
    ((population as f64 * quantile).ceil() as usize).min(population / 2)
}

/// Members best first: by score (none last), ties in member order.
pub fn ranking(scores: &[Option<f64>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // A stable sort keeps member order among equal scores.
    order.sort_by(|&a, &b| match (scores[a], scores[b]) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    order
}

impl Pbt {
    /// The rule checked: `population >= 2`, `quantile` in (0, 0.5], `resample_probability` in
    /// [0, 1], positive factors, `1 <= interval_epochs < epochs`, and mutations of
    /// [`MUTABLE`] fields only.
    pub fn new(rule: PbtRule) -> Result<Pbt, PbtError> {
        let bad = |key: &'static str, message: String| Err(PbtError::Rule { key, message });
        if rule.population < MIN_POPULATION {
            return bad(
                "population",
                format!(
                    "`population` = {} must be at least 2: PBT copies between members",
                    rule.population
                ),
            );
        }
        if !quantile_ok(rule.quantile) {
            return bad(
                "quantile",
                format!(
                "`quantile` = {} must be in (0, 0.5]: the top and bottom quantiles may not overlap",
                rule.quantile
            ),
            );
        }
        if !resample_ok(rule.resample_probability) {
            return bad(
                "resample_probability",
                format!(
                    "`resample_probability` = {} must be in [0, 1]",
                    rule.resample_probability
                ),
            );
        }
        if rule.perturbation_factors.is_empty()
            || !rule.perturbation_factors.iter().all(|f| factor_ok(*f))
        {
            return bad(
                "perturbation_factors",
                format!(
                    "`perturbation_factors` = {:?} must be one or more positive numbers",
                    rule.perturbation_factors
                ),
            );
        }
        if rule.mutations.is_empty() {
            return bad(
                "mutations",
                "[pbt.mutations] names no field: PBT needs at least one".into(),
            );
        }
        for m in &rule.mutations {
            if !MUTABLE.contains(&m.name.as_str()) {
                return bad(
                    "mutations",
                    format!(
                        "`{}` cannot change mid-training: {}; PBT may change {}",
                        m.name,
                        frozen_reason(&m.name),
                        MUTABLE.join(", ")
                    ),
                );
            }
        }
        let base: TrialSpec =
            toml::Value::Table(rule.base.clone())
                .try_into()
                .map_err(|e: toml::de::Error| PbtError::Rule {
                    key: "defaults",
                    message: e.message().to_string(),
                })?;
        let epochs = base.epochs;
        if rule.interval_epochs == 0 || rule.interval_epochs >= epochs {
            return bad("interval_epochs", format!(
                "`interval_epochs` = {} must be at least 1 and below `epochs` ({epochs}): a member exploits between segments",
                rule.interval_epochs
            ));
        }
        let kinds = rule.mutations.iter().map(|m| dim_kind(&m.values)).collect();
        Ok(Pbt {
            rule,
            kinds,
            epochs,
        })
    }

    /// Each member's epochs.
    pub fn epochs(&self) -> u32 {
        self.epochs
    }

    /// Segments per member.
    pub fn generations(&self) -> u32 {
        self.epochs.div_ceil(self.rule.interval_epochs)
    }

    /// Generation `g`'s epochs: (trained before, trained after).
    pub fn bounds(&self, g: u32) -> (u32, u32) {
        let i = self.rule.interval_epochs;
        (g * i, ((g + 1) * i).min(self.epochs))
    }

    /// Generation 0: each member's values drawn uniformly (see the rules).
    pub fn first_generation(&self) -> Result<Vec<Segment>, PbtError> {
        let (start_epoch, end_epoch) = self.bounds(0);
        (0..self.rule.population)
            .map(|member| {
                let mut rng = generator(self.rule.seed, member);
                let mut last = String::new();
                for _ in 0..INITIAL_DRAWS {
                    let point: Point = self
                        .kinds
                        .iter()
                        .map(|k| Some(k.uniform(&mut rng)))
                        .collect();
                    match self.spec(&point) {
                        Ok(_) => {
                            return Ok(Segment {
                                member,
                                generation: 0,
                                start_epoch,
                                end_epoch,
                                point,
                                start: Start::Scratch,
                            })
                        }
                        Err(e) => last = e,
                    }
                }
                Err(PbtError::NoValidStart { member, last })
            })
            .collect()
    }

    /// The generation after `last` (one segment per member, in member order) given their
    /// scores, or `None` when `last` was the final one.
    pub fn next_generation(
        &self,
        last: &[Segment],
        scores: &[Option<f64>],
    ) -> Result<Option<Vec<Segment>>, PbtError> {
        let p = self.rule.population;
        let g = match last.first() {
            Some(s) => s.generation,
            None => return Err(PbtError::Mismatch("no segments".into())),
        };
        if last.len() != p
            || scores.len() != p
            || last
                .iter()
                .enumerate()
                .any(|(m, s)| s.member != m || s.generation != g)
        {
            return Err(PbtError::Mismatch(format!(
                "generation {g}: {} segments and {} scores for a population of {p}",
                last.len(),
                scores.len()
            )));
        }
        if g + 1 >= self.generations() {
            return Ok(None);
        }
        let order = ranking(scores);
        if scores[order[0]].is_none() {
            return Err(PbtError::NoScores { generation: g });
        }
        let n = quantile_size(p, self.rule.quantile);
        let (top, bottom) = (&order[..n], &order[p - n..]);
        let (start_epoch, end_epoch) = self.bounds(g + 1);
        let next = (0..p)
            .map(|member| {
                let mut rng = generator(self.rule.seed, (g as usize + 1) * p + member);
                let score = scores[member];
                let exploits = score.is_none() || bottom.contains(&member);
                let better: Vec<usize> = top
                    .iter()
                    .copied()
                    .filter(|&t| match (scores[t], score) {
                        (Some(x), Some(y)) => x > y,
                        (Some(_), None) => true,
                        _ => false,
                    })
                    .collect();
                let (point, start) = if exploits && !better.is_empty() {
                    let parent = better[rng.random_range(0..better.len())];
                    (
                        self.explore(&last[parent].point, &mut rng),
                        Start::Exploit {
                            parent,
                            parent_score: scores[parent].unwrap_or(f64::NAN),
                            score,
                        },
                    )
                } else {
                    (last[member].point.clone(), Start::Own)
                };
                Segment {
                    member,
                    generation: g + 1,
                    start_epoch,
                    end_epoch,
                    point,
                    start,
                }
            })
            .collect();
        Ok(Some(next))
    }

    /// Rebuilds a population's segments from its stored trials `ids` (generation-major), given
    /// each trial's outcome (`None` while it has not ended; `Some(score)` once it has),
    /// checking each stored generation against the decisions those outcomes give. Returns the
    /// segments that check, and why the rest do not (the population cannot go on then).
    pub fn replay(
        &self,
        ids: &[sweep_proto::ids::TrialId],
        outcome: impl Fn(&sweep_proto::ids::TrialId) -> Option<Option<f64>>,
    ) -> (Vec<Placed>, Option<String>) {
        let p = self.rule.population;
        let mut out: Vec<Placed> = Vec::new();
        let mut generation = match self.first_generation() {
            Ok(g) => g,
            Err(e) => return (out, Some(e.to_string())),
        };
        let mut at = 0;
        while ids.len() >= at + p {
            for seg in generation {
                let placed = match self.place(seg, &out) {
                    Ok(placed) => placed,
                    Err(e) => return (out, Some(e)),
                };
                let (member, stored) = (placed.segment.member, &ids[at + placed.segment.member]);
                if *stored != placed.id {
                    let why = format!(
                        "stored trial {stored} at generation {} member {member} is not the segment the results decide ({})",
                        placed.segment.generation, placed.id
                    );
                    return (out, Some(why));
                }
                out.push(placed);
            }
            let last = &out[at..];
            let outcomes: Vec<Option<Option<f64>>> = last.iter().map(|s| outcome(&s.id)).collect();
            at += p;
            if outcomes.iter().any(Option::is_none) {
                break;
            }
            let scores: Vec<Option<f64>> = outcomes.into_iter().flatten().collect();
            let segments: Vec<Segment> = last.iter().map(|s| s.segment.clone()).collect();
            match self.next_generation(&segments, &scores) {
                Ok(Some(next)) => generation = next,
                Ok(None) => break,
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        (out, None)
    }

    /// The parent's values perturbed or resampled, field by field (see the rules).
    pub fn explore(&self, parent: &Point, rng: &mut impl Rng) -> Point {
        self.kinds
            .iter()
            .zip(parent)
            .map(|(kind, v)| {
                let resample = rng.random::<f64>() < self.rule.resample_probability;
                Some(match (kind, v) {
                    (_, None) => kind.uniform(rng),
                    _ if resample => kind.uniform(rng),
                    (Kind::Categorical { .. }, Some(i)) => {
                        let step = if rng.random::<bool>() { 1.0 } else { -1.0 };
                        kind.nearest(i + step)
                    }
                    (_, Some(x)) => {
                        let factors = &self.rule.perturbation_factors;
                        let f = factors[rng.random_range(0..factors.len())];
                        kind.nearest(x * f)
                    }
                })
            })
            .collect()
    }

    /// The value of mutated field `i` at `point`, as a trial holds it.
    pub fn value(&self, point: &Point, i: usize) -> Option<toml::Value> {
        let v = (*point.get(i)?)?;
        Some(match &self.rule.mutations[i].values {
            Values::List { values } => values.get(v as usize)?.clone(),
            Values::Float { .. } => toml::Value::Float(v),
            Values::Int { .. } => toml::Value::Integer(v.round() as i64),
        })
    }

    /// The change that sets the values at `point` from `epoch` (1-based) on.
    pub fn change_at(&self, epoch: u32, point: &Point) -> Result<sweep_proto::Change, String> {
        let mut table = toml::Table::new();
        table.insert("epoch".into(), toml::Value::Integer(epoch.into()));
        self.set_values(&mut table, point)?;
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_string())
    }

    /// The trial that trains `seg`: generation 0's is the member's trial at its values; a
    /// later one is the trial of the segment it continues (`previous`: the member's own, or
    /// its parent's when it exploits), with a change to the explored values from its first
    /// epoch when it exploits. `stop_after` ends it at its last epoch, except the last
    /// generation's. So a segment's trial is its lineage's whole schedule so far: trained from
    /// scratch it gives the same weights (the replay), and it resumes from the checkpoint
    /// `previous` ended with.
    pub fn segment_trial(
        &self,
        seg: &Segment,
        previous: Option<&TrialSpec>,
    ) -> Result<TrialSpec, String> {
        let mut spec = match (&seg.start, previous) {
            (Start::Scratch, _) => self.spec(&seg.point)?,
            (Start::Own, Some(p)) => p.clone(),
            (Start::Exploit { .. }, Some(p)) => {
                let mut spec = p.clone();
                spec.changes
                    .push(self.change_at(seg.start_epoch + 1, &seg.point)?);
                spec
            }
            (_, None) => {
                return Err(format!(
                    "member {} generation {}: no previous segment to continue",
                    seg.member, seg.generation
                ))
            }
        };
        spec.stop_after = (seg.end_epoch < self.epochs).then_some(seg.end_epoch);
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }

    /// `seg` with its trial ([`Pbt::segment_trial`] of the segment it continues among
    /// `so_far`).
    pub fn place(&self, seg: Segment, so_far: &[Placed]) -> Result<Placed, String> {
        let previous = previous(so_far, &seg, self.rule.population).map(|p| &p.spec);
        let spec = self.segment_trial(&seg, previous)?;
        Ok(Placed {
            id: sweep_proto::ids::TrialId::of(&spec),
            segment: seg,
            spec,
        })
    }

    /// Sets each mutated field's value at `point` in `table` (`augment.shift` sets `shift` in
    /// the `augment` table).
    fn set_values(&self, table: &mut toml::Table, point: &Point) -> Result<(), String> {
        for (i, m) in self.rule.mutations.iter().enumerate() {
            let value = self
                .value(point, i)
                .ok_or_else(|| format!("`{}` has no value", m.name))?;
            match m.name.split_once('.') {
                None => {
                    table.insert(m.name.clone(), value);
                }
                Some((outer, inner)) => {
                    let entry = table
                        .entry(outer.to_string())
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    match entry {
                        toml::Value::Table(t) => {
                            t.insert(inner.to_string(), value);
                        }
                        other => return Err(format!("`{outer}` = {other} is not a table")),
                    }
                }
            }
        }
        Ok(())
    }

    /// A member's trial with the values at `point`: the base with each mutated field set
    /// (`augment.shift` sets `shift` in the `augment` table), checked.
    pub fn spec(&self, point: &Point) -> Result<TrialSpec, String> {
        let mut table = self.rule.base.clone();
        self.set_values(&mut table, point)?;
        let spec: TrialSpec = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_string())?;
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }
}

/// The segment `seg` continues, among the segments so far (generation-major): the previous
/// generation's segment of its parent (exploit) or its own; none for generation 0.
pub fn previous<'a>(so_far: &'a [Placed], seg: &Segment, population: usize) -> Option<&'a Placed> {
    let g = seg.generation.checked_sub(1)? as usize;
    so_far.get(g * population + seg.source()?)
}

/// What a segment's trial state tells the population: `None` while it has not ended; once
/// it has, its score, the last epoch's validation accuracy of a completed or stopped segment
/// (none for a failed, diverged or cancelled one). The coordinator and the report both read
/// a population's history through this.
pub fn outcome(state: &TrialState) -> Option<Option<f64>> {
    if !state.is_terminal() {
        return None;
    }
    Some(match state {
        TrialState::Finished { result, .. }
            if matches!(result.status, TrialStatus::Completed | TrialStatus::Stopped) =>
        {
            result.epochs.last().and_then(|e| e.val_accuracy)
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests;
