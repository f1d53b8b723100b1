//! The Tree-structured Parzen Estimator (TPE), multivariate: the sampler a search that learns
//! from its results uses. Pure: observations in, a suggestion out; the caller owns the random
//! generator (seeded) and the clock plays no part.
//!
//! The method (Bergstra et al. 2011, "Algorithms for Hyper-Parameter Optimization"; the
//! multivariate form of Falkner et al. 2018 and Optuna's `multivariate=True`; defaults from
//! Optuna's `TPESampler`, Watanabe 2023 "Tree-Structured Parzen Estimator: Understanding Its
//! Algorithm Components"):
//! - Observations are split by their loss (lower is better; the caller negates a metric to
//!   maximise): the best `gamma(n) = min(ceil(0.1 n), 25)` are "good", the rest "bad".
//! - Each side becomes a mixture of product kernels, one per observation, plus one prior
//!   kernel of weight `PRIOR_WEIGHT`. Observation weights are Optuna's `default_weights`: 1
//!   for the newest 25, a ramp from 1/n up for older ones.
//! - A numeric dimension's kernel is a normal truncated to the range (on the log scale for
//!   log ranges; integer and stepped ranges take the mass of their grid cell). Its width is
//!   the larger gap to its neighbours among the observations in sorted order (the range's
//!   ends are the outermost neighbours), except that the lowest and the highest take the gap
//!   to their inner neighbour; each is clipped to [range / min(100, n + 2), range]. This is
//!   Optuna 5.0's rule, in multivariate mode too (`_calculate_numerical_distributions`, with
//!   `consider_endpoints=False` and `consider_magic_clip=True`); an earlier version of this
//!   module used Scott's rule, `0.2 n^(-1/(d+4))` times the range, and trailed Optuna with
//!   trials pending (bench/search.sh). The prior kernel sits in the middle with the whole
//!   range as its width.
//! - A categorical kernel gives its observed choice weight 1 plus `PRIOR_WEIGHT / (n+1)` to
//!   every choice, normalised; the prior kernel is uniform.
//! - `N_CANDIDATES` (24) points are drawn from the good mixture; the one with the largest
//!   `log l(x) - log g(x)` is the suggestion.
//!
//! Rules for observations that are not plain losses:
//! - Fewer than `startup` usable observations (finished or diverged): uniform random.
//! - A diverged trial (or a loss that is NaN or infinite) is bad: it ranks below every
//!   finite loss and never enters a density as a number.
//! - A failed trial (it never trained: a crash, a lost worker for good) is left out.
//! - A pending trial (leased, not finished), when the caller passes one, is a constant
//!   liar: it counts as bad, as in Optuna's `constant_liar=True`. The coordinator leaves
//!   pending trials out instead (`sched::search::PENDING`, measured).
//! - A parameter value that is not finite, or outside its range, is refused with an error.
//!
//! Conditional dimensions (say momentum only when the optimiser is SGD) are modelled by
//! groups, as Optuna's `group=True`: the dimensions that are always active are one group;
//! each set of dimensions sharing the same condition is another, fitted only on the
//! observations where it was active, and sampled only when the suggestion activates it.

use rand::Rng;

/// Random suggestions before the model: Optuna's `n_startup_trials`.
pub const DEFAULT_STARTUP: usize = 10;
/// Candidates drawn from the good density per suggestion: Optuna's `n_ei_candidates`.
pub const N_CANDIDATES: usize = 24;
/// Weight of the prior kernel in each mixture: Optuna's `prior_weight`.
pub const PRIOR_WEIGHT: f64 = 1.0;

/// One dimension of the search space.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A real in [low, high]; `log`: sampled on the log scale (low > 0); `step`: on the grid
    /// low, low + step, ..., high.
    Float {
        low: f64,
        high: f64,
        log: bool,
        step: Option<f64>,
    },
    /// An integer in [low, high] (on the log scale with `log`).
    Int { low: i64, high: i64, log: bool },
    /// One of `choices` unordered choices, by index.
    Categorical { choices: usize },
}

/// A dimension, active always or only when a categorical dimension takes one of some values.
#[derive(Debug, Clone, PartialEq)]
pub struct Dim {
    pub name: String,
    pub kind: Kind,
    pub when: Option<Condition>,
}

/// Active only when dimension `parent` (categorical, earlier in the space) is one of `values`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub parent: usize,
    pub values: Vec<usize>,
}

/// A point: each dimension's value (a categorical's as its index), `None` where inactive.
pub type Point = Vec<Option<f64>>;

/// What became of a trial at a point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Finished with this loss (lower is better).
    Loss(f64),
    /// Its loss became NaN or infinite.
    Diverged,
    /// Never trained (a crash, given up): left out.
    Failed,
    /// Leased and not finished: the constant liar counts it as bad (see the module doc).
    Pending,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub point: Point,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TpeError {
    #[error("observation {index}: `{dim}` = {value} is not a number TPE can use (finite, inside its range)")]
    BadValue {
        index: usize,
        dim: String,
        value: f64,
    },
    #[error("observation {index} has {got} values for a space of {want} dimensions")]
    Shape {
        index: usize,
        got: usize,
        want: usize,
    },
}

/// Optuna's `default_gamma`: how many observations are "good".
pub fn gamma(n: usize) -> usize {
    (n.div_ceil(10)).min(25)
}

/// Optuna's `default_weights`: 1 for the newest 25, older ones ramp up from 1/n.
pub fn weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    let mut w: Vec<f64> = (0..ramp)
        .map(|i| {
            let start = 1.0 / n as f64;
            if ramp == 1 {
                start
            } else {
                start + (1.0 - start) * i as f64 / (ramp - 1) as f64
            }
        })
        .collect();
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

/// Checks every observation against the space: the right length, finite values in range.
pub fn check(space: &[Dim], observations: &[Observation]) -> Result<(), TpeError> {
    for (index, o) in observations.iter().enumerate() {
        if o.point.len() != space.len() {
            return Err(TpeError::Shape {
                index,
                got: o.point.len(),
                want: space.len(),
            });
        }
        for (d, v) in space.iter().zip(&o.point) {
            if let Some(v) = *v {
                if !d.kind.contains(v) {
                    return Err(TpeError::BadValue {
                        index,
                        dim: d.name.clone(),
                        value: v,
                    });
                }
            }
        }
    }
    Ok(())
}

/// The next point to try, given every observation so far (in trial order): [`fit`], then
/// one [`Model::suggest`].
pub fn suggest(
    space: &[Dim],
    observations: &[Observation],
    startup: usize,
    rng: &mut impl Rng,
) -> Result<Point, TpeError> {
    Ok(fit(space, observations, startup)?.suggest(rng))
}

/// The densities fitted to the observations once, from which any number of points are drawn
/// (a search draws again from the same model when a suggestion repeats a trial it has).
#[derive(Debug)]
pub struct Model {
    space: Vec<Dim>,
    /// Each group's dimensions and its good and bad densities (`None`: uniform, before the
    /// model starts).
    groups: Vec<(Vec<usize>, Option<(Parzen, Parzen)>)>,
}

/// Fits the model: uniform until `startup` observations are usable (finished or diverged),
/// then each group's good and bad densities by the rules in the module doc.
pub fn fit(space: &[Dim], observations: &[Observation], startup: usize) -> Result<Model, TpeError> {
    check(space, observations)?;
    let usable = observations
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Loss(_) | Outcome::Diverged))
        .count();
    let modelled = usable >= startup.max(1);
    let groups = groups(space)
        .into_iter()
        .map(|group| {
            let fitted = modelled.then(|| fit_group(space, &group, observations));
            (group, fitted)
        })
        .collect();
    Ok(Model {
        space: space.to_vec(),
        groups,
    })
}

impl Model {
    /// A point: each active group's values, uniform before the model starts, otherwise the
    /// best of [`N_CANDIDATES`] draws from the good density by `log l(x) - log g(x)`.
    pub fn suggest(&self, rng: &mut impl Rng) -> Point {
        let mut point: Point = vec![None; self.space.len()];
        for (group, fitted) in &self.groups {
            if !group_active(&self.space, group, &point) {
                continue;
            }
            let values = match fitted {
                None => group
                    .iter()
                    .map(|&i| self.space[i].kind.uniform(rng))
                    .collect(),
                Some((l, g)) => best_candidate(l, g, rng),
            };
            for (&i, v) in group.iter().zip(values) {
                point[i] = Some(v);
            }
        }
        point
    }
}

/// Dimensions grouped by their condition, unconditional ones first, each group after the
/// groups its parents are in.
fn groups(space: &[Dim]) -> Vec<Vec<usize>> {
    let mut groups: Vec<(Option<&Condition>, Vec<usize>)> = Vec::new();
    for (i, d) in space.iter().enumerate() {
        match groups.iter_mut().find(|(c, _)| *c == d.when.as_ref()) {
            Some((_, g)) => g.push(i),
            None => groups.push((d.when.as_ref(), vec![i])),
        }
    }
    // Parents come earlier in the space, so their groups come first in this order.
    groups.sort_by_key(|(c, g)| (c.is_some(), g[0]));
    groups.into_iter().map(|(_, g)| g).collect()
}

fn group_active(space: &[Dim], group: &[usize], point: &Point) -> bool {
    match &space[group[0]].when {
        None => true,
        Some(c) => point
            .get(c.parent)
            .copied()
            .flatten()
            .is_some_and(|v| c.values.contains(&(v as usize))),
    }
}

/// Splits the observations where `group` was active into good and bad, by the rules in the
/// module doc: the indices of each side, in trial order (for the weights).
fn split(group: &[usize], observations: &[Observation]) -> (Vec<usize>, Vec<usize>) {
    let active = |o: &Observation| group.iter().all(|&i| o.point[i].is_some());
    // (rank key, trial order): finite losses rank by value, everything bad after.
    let mut ranked: Vec<(f64, usize)> = observations
        .iter()
        .enumerate()
        .filter(|(_, o)| active(o))
        .filter_map(|(n, o)| match o.outcome {
            Outcome::Loss(l) if l.is_finite() => Some((l, n)),
            Outcome::Loss(_) | Outcome::Diverged | Outcome::Pending => Some((f64::INFINITY, n)),
            Outcome::Failed => None,
        })
        .collect();
    // Only finished trials count towards how many are good; pending ones never are.
    let finished = observations
        .iter()
        .filter(|o| !matches!(o.outcome, Outcome::Failed | Outcome::Pending))
        .filter(|o| active(o))
        .count();
    let n_good = gamma(finished).min(ranked.iter().filter(|r| r.0.is_finite()).count());
    // The n_good smallest by (key, order), a total order: a selection, not a sort (sorting
    // 10,000 trials per suggestion was a fifth of its time, `search-bench latency`).
    let by_rank = |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    if n_good > 0 && n_good < ranked.len() {
        ranked.select_nth_unstable_by(n_good - 1, by_rank);
    }
    let mut good: Vec<usize> = ranked[..n_good].iter().map(|r| r.1).collect();
    good.sort_unstable();
    // The rest in trial order, by a pass over the observations rather than a sort.
    let mut is_good = vec![false; observations.len()];
    for &n in &good {
        is_good[n] = true;
    }
    let bad = observations
        .iter()
        .enumerate()
        .filter(|&(n, o)| !is_good[n] && active(o) && o.outcome != Outcome::Failed)
        .map(|(n, _)| n)
        .collect();
    (good, bad)
}

fn fit_group(space: &[Dim], group: &[usize], observations: &[Observation]) -> (Parzen, Parzen) {
    let kinds: Vec<&Kind> = group.iter().map(|&i| &space[i].kind).collect();
    let (good, bad) = split(group, observations);
    // Column-major values of one side: per dimension of the group, per observation.
    let columns = |side: &[usize]| -> Vec<Vec<f64>> {
        group
            .iter()
            .map(|&d| {
                // Room for the prior kernel, which numeric dimensions add in place.
                let mut column = Vec::with_capacity(side.len() + 1);
                column.extend(
                    side.iter()
                        .map(|&n| observations[n].point[d].unwrap_or(f64::NAN)),
                );
                column
            })
            .collect()
    };
    (
        Parzen::new(&kinds, columns(&good)),
        Parzen::new(&kinds, columns(&bad)),
    )
}

fn best_candidate(l: &Parzen, g: &Parzen, rng: &mut impl Rng) -> Vec<f64> {
    let candidates: Vec<Vec<f64>> = (0..N_CANDIDATES).map(|_| l.sample(rng)).collect();
    let (good, bad) = (l.log_pdf_many(&candidates), g.log_pdf_many(&candidates));
    let mut best: Option<(f64, usize)> = None;
    for (i, (lx, gx)) in good.iter().zip(&bad).enumerate() {
        let score = lx - gx;
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, i));
        }
    }
    match best {
        Some((_, i)) => candidates[i].clone(),
        None => l.sample(rng),
    }
}

impl Kind {
    fn contains(&self, v: f64) -> bool {
        v.is_finite()
            && match *self {
                Kind::Float { low, high, .. } => (low..=high).contains(&v),
                Kind::Int { low, high, .. } => {
                    v.fract() == 0.0 && (low as f64..=high as f64).contains(&v)
                }
                Kind::Categorical { choices } => {
                    v.fract() == 0.0 && v >= 0.0 && (v as usize) < choices
                }
            }
    }

    /// The value in range nearest `v`: clamped to the bounds, and on the grid for integer and
    /// stepped ranges (PBT's perturbations land here).
    pub fn nearest(&self, v: f64) -> f64 {
        match self {
            Kind::Categorical { choices } => v.round().clamp(0.0, (*choices - 1) as f64),
            _ => self.scale().snap(v),
        }
    }

    /// A uniform draw (on the log scale for log ranges; on the grid for integer and stepped).
    pub fn uniform(&self, rng: &mut impl Rng) -> f64 {
        match self {
            Kind::Categorical { choices } => rng.random_range(0..*choices) as f64,
            _ => {
                let s = self.scale();
                s.snap(s.at_unit(rng.random::<f64>()))
            }
        }
    }

    fn scale(&self) -> Scale {
        match *self {
            Kind::Float {
                low,
                high,
                log,
                step,
            } => Scale::new(low, high, log, step),
            Kind::Int { low, high, log } => Scale::new(low as f64, high as f64, log, Some(1.0)),
            Kind::Categorical { .. } => Scale::new(0.0, 1.0, false, None),
        }
    }
}

/// A numeric dimension in the space kernels live in: log-transformed for log ranges, and
/// widened by half a step each side for integer and stepped ranges.
#[derive(Debug, Clone, Copy)]
struct Scale {
    low: f64,
    high: f64,
    log: bool,
    step: Option<f64>,
    /// The original bounds (for snapping to the grid).
    orig: (f64, f64),
}

impl Scale {
    fn new(low: f64, high: f64, log: bool, step: Option<f64>) -> Scale {
        let (mut lo, mut hi) = (low, high);
        if let Some(s) = step {
            lo -= s / 2.0;
            hi += s / 2.0;
        }
        if log {
            // An integer log range widened below 1 stays positive: at least half the low end.
            lo = lo.max(low / 2.0).max(f64::MIN_POSITIVE).ln();
            hi = hi.ln();
        }
        Scale {
            low: lo,
            high: hi,
            log,
            step,
            orig: (low, high),
        }
    }

    fn width(&self) -> f64 {
        self.high - self.low
    }

    fn internal(self, v: f64) -> f64 {
        if self.log {
            v.ln()
        } else {
            v
        }
    }

    fn external(self, x: f64) -> f64 {
        if self.log {
            x.exp()
        } else {
            x
        }
    }

    fn at_unit(self, u: f64) -> f64 {
        self.external(self.low + u * self.width())
    }

    /// The grid value nearest `v`, within the original bounds.
    fn snap(&self, v: f64) -> f64 {
        let (low, high) = self.orig;
        match self.step {
            Some(s) => (low + ((v - low) / s).round() * s).clamp(low, high),
            None => v.clamp(low, high),
        }
    }

    /// The internal interval a grid value's mass covers (a point for continuous ranges).
    fn cell(&self, v: f64) -> Option<(f64, f64)> {
        self.step.map(|s| {
            let lo = (v - s / 2.0).max(self.external(self.low));
            (self.internal(lo), self.internal(v + s / 2.0))
        })
    }
}

/// One side's density: a mixture of product kernels.
#[derive(Debug)]
struct Parzen {
    /// Log weight of each kernel (the prior's last).
    log_w: Vec<f64>,
    /// Each kernel's log weight less its normalisers over every numeric dimension (a
    /// continuous one's `ln(sigma sqrt(2 pi))` and mass in range, a stepped one's mass in
    /// range): what a density evaluation starts from.
    base: Vec<f64>,
    /// Per dimension, per kernel: (mu, sigma) for numeric dims, the observed choice for
    /// categorical ones.
    dims: Vec<DimKernels>,
}

#[derive(Debug)]
enum DimKernels {
    Numeric {
        scale: Scale,
        mu: Vec<f64>,
        sigma: Vec<f64>,
        /// `1 / sigma`: a multiplication per kernel in the density, not a division.
        inv_sigma: Vec<f64>,
    },
    /// An observation's kernel gives its choice `(1 + fill) / total` and every other choice
    /// `fill / total`; the prior kernel (last) is uniform. Kept as the observed choices, not
    /// a row of probabilities per kernel (10,000 small allocations per suggestion).
    Categorical {
        choices: usize,
        observed: Vec<usize>,
        fill: f64,
        total: f64,
        log_hit: f64,
        log_miss: f64,
    },
}

impl DimKernels {
    /// Adds to `terms` the log density (or cell mass, or choice probability) of value `v`
    /// under each kernel of `kernels`, less what [`Parzen::base`] already holds.
    fn add_log_kernels(&self, v: f64, kernels: std::ops::Range<usize>, terms: &mut [f64]) {
        match self {
            DimKernels::Categorical {
                choices,
                observed,
                log_hit,
                log_miss,
                ..
            } => {
                let c = v as usize;
                for (k, t) in kernels.zip(terms.iter_mut()) {
                    *t += match observed.get(k) {
                        Some(&o) if o == c => *log_hit,
                        Some(_) => *log_miss,
                        None => -(*choices as f64).ln(),
                    };
                }
            }
            DimKernels::Numeric {
                scale,
                mu,
                inv_sigma,
                ..
            } => {
                let (mu, inv_sigma) = (&mu[kernels.clone()], &inv_sigma[kernels]);
                match scale.cell(v) {
                    None => {
                        let v = scale.internal(v);
                        for (t, (m, is)) in terms.iter_mut().zip(mu.iter().zip(inv_sigma)) {
                            let z = (v - m) * is;
                            *t -= 0.5 * z * z;
                        }
                    }
                    Some((a, b)) => {
                        for (t, (m, is)) in terms.iter_mut().zip(mu.iter().zip(inv_sigma)) {
                            let mass =
                                (phi((b - m) * is) - phi((a - m) * is)).max(f64::MIN_POSITIVE);
                            *t += mass.ln();
                        }
                    }
                }
            }
        }
    }

    /// Kernel `k`'s probability of choice `c` (categorical only).
    fn choice_p(&self, k: usize, c: usize) -> f64 {
        match self {
            DimKernels::Categorical {
                choices,
                observed,
                fill,
                total,
                ..
            } => match observed.get(k) {
                Some(&o) => (fill + if o == c { 1.0 } else { 0.0 }) / total,
                None => 1.0 / *choices as f64,
            },
            DimKernels::Numeric { .. } => 0.0,
        }
    }
}

impl Parzen {
    /// The mixture over `columns`: per dimension of `kinds`, the observations' values.
    fn new(kinds: &[&Kind], columns: Vec<Vec<f64>>) -> Parzen {
        let n = columns.first().map_or(0, Vec::len);
        let mut w = weights(n);
        w.push(PRIOR_WEIGHT);
        let total: f64 = w.iter().sum();
        let ln_total = total.ln();
        // Most weights are 1: no `ln` for them.
        let log_w: Vec<f64> = w
            .iter()
            .map(|&w| {
                if w == 1.0 {
                    -ln_total
                } else {
                    w.ln() - ln_total
                }
            })
            .collect();
        let mut base = log_w.clone();
        let dims = kinds
            .iter()
            .zip(columns)
            .map(|(kind, column)| match kind {
                Kind::Categorical { choices } => {
                    let fill = PRIOR_WEIGHT / (n + 1) as f64;
                    let total = 1.0 + fill * *choices as f64;
                    DimKernels::Categorical {
                        choices: *choices,
                        observed: column.iter().map(|&v| v as usize).collect(),
                        fill,
                        total,
                        log_hit: ((1.0 + fill) / total).max(f64::MIN_POSITIVE).ln(),
                        log_miss: (fill / total).max(f64::MIN_POSITIVE).ln(),
                    }
                }
                _ => numeric_kernels(kind.scale(), column, &mut base),
            })
            .collect::<Vec<DimKernels>>();
        Parzen { log_w, base, dims }
    }

    fn sample(&self, rng: &mut impl Rng) -> Vec<f64> {
        let u: f64 = rng.random();
        let mut acc = 0.0;
        let mut k = self.log_w.len() - 1;
        for (i, lw) in self.log_w.iter().enumerate() {
            acc += lw.exp();
            if u < acc {
                k = i;
                break;
            }
        }
        self.dims
            .iter()
            .map(|d| match d {
                DimKernels::Categorical { choices, .. } => {
                    let u: f64 = rng.random();
                    let mut acc = 0.0;
                    (0..*choices)
                        .position(|c| {
                            acc += d.choice_p(k, c);
                            u < acc
                        })
                        .unwrap_or(choices - 1) as f64
                }
                DimKernels::Numeric {
                    scale, mu, sigma, ..
                } => {
                    let x = truncnorm_sample(mu[k], sigma[k], scale.low, scale.high, rng.random());
                    scale.snap(scale.external(x))
                }
            })
            .collect()
    }

    /// [`Parzen::log_pdf`] of each of `xs`, kernels in blocks: each block's parameters are
    /// read once for every point while they sit in the L1 cache, not once per point (with
    /// 10,000 observations, 24 candidates read 31 MB per suggestion the other way).
    fn log_pdf_many(&self, xs: &[Vec<f64>]) -> Vec<f64> {
        const BLOCK: usize = 256;
        let kernels = self.base.len();
        // Per point, a running log-sum-exp: (largest term so far, sum of exp(term - it)).
        let mut acc = vec![(f64::NEG_INFINITY, 0.0f64); xs.len()];
        let mut terms = [0.0f64; BLOCK];
        for start in (0..kernels).step_by(BLOCK) {
            let end = (start + BLOCK).min(kernels);
            let terms = &mut terms[..end - start];
            for (x, (m, sum)) in xs.iter().zip(acc.iter_mut()) {
                terms.copy_from_slice(&self.base[start..end]);
                for (d, &v) in self.dims.iter().zip(x) {
                    d.add_log_kernels(v, start..end, terms);
                }
                let block_max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if block_max > *m {
                    *sum *= (*m - block_max).exp();
                    *m = block_max;
                }
                if m.is_finite() {
                    // Terms more than 40 below the largest add under 1e-17 of it: skipped,
                    // because `exp` of a number that underflows takes glibc's slow path (a
                    // third of a suggestion's time with 10,000 trials, `perf record`).
                    *sum += terms
                        .iter()
                        .filter(|&&t| t - *m > -40.0)
                        .map(|t| (t - *m).exp())
                        .sum::<f64>();
                }
            }
        }
        acc.iter()
            .map(|&(m, sum)| if m.is_finite() { m + sum.ln() } else { m })
            .collect()
    }

    /// Log density (continuous) or log mass of the grid cell (integer, stepped) of `x` under
    /// the mixture of normals truncated to each range, in internal units.
    #[cfg(test)]
    fn log_pdf(&self, x: &[f64]) -> f64 {
        self.log_pdf_many(&[x.to_vec()])[0]
    }
}

/// A numeric dimension's kernels: one per observed value, widths by [`neighbour_widths`],
/// and the prior in the middle with the whole range as its width. Each kernel's normaliser
/// is subtracted from its entry of `base` ([`Parzen::base`]), once: evaluating a density
/// is then a multiply-add per kernel, not two `erfc`s (with 10,000 trials a suggestion took
/// 235 ms, Optuna's 157 ms; `search-bench latency`).
fn numeric_kernels(scale: Scale, column: Vec<f64>, base: &mut [f64]) -> DimKernels {
    // Fewer buffers of one number per observation: with 10,000 observations a fit made
    // over a hundred of 80 kB, and refaulting their pages took half its time (a fit took
    // 3-4 ms with glibc told not to trim its heap, 6-7 ms without; `perf stat`).
    let mut mu = column;
    for v in mu.iter_mut() {
        *v = scale.internal(*v);
    }
    let mut sigma = neighbour_widths(&mu, scale.low, scale.high);
    mu.push((scale.low + scale.high) / 2.0);
    sigma.push(scale.width());
    // A continuous density's normaliser, ln(sigma sqrt(2 pi)) plus the log of its mass in
    // range; a grid cell's mass is divided by the mass in range only. With many
    // observations most widths are the clipped minimum, so the `ln` of the last width is
    // reused.
    let mut last = (f64::NAN, 0.0);
    let mut inv_sigma = Vec::with_capacity(mu.len());
    for ((&m, &s), b) in mu.iter().zip(&sigma).zip(base.iter_mut()) {
        let log_in_range = log_mass_in_range(m, s, scale.low, scale.high);
        *b -= match scale.step {
            Some(_) => log_in_range,
            None => {
                if s != last.0 {
                    last = (s, s.ln());
                }
                last.1 + LOG_SQRT_2PI + log_in_range
            }
        };
        inv_sigma.push(1.0 / s);
    }
    DimKernels::Numeric {
        scale,
        inv_sigma,
        mu,
        sigma,
    }
}

/// The log of the mass of normal(m, s) inside [low, high], for a centre inside it.
fn log_mass_in_range(m: f64, s: f64, low: f64, high: f64) -> f64 {
    // The mass outside each end; eight widths away, none (to 1e-15), so no `erfc` for
    // most kernels.
    let tail = |z: f64| {
        if z > 8.0 {
            0.0
        } else {
            0.5 * erfc(z / std::f64::consts::SQRT_2)
        }
    };
    let out = tail((m - low) / s) + tail((high - m) / s);
    // ln(1 - out) by its series while `out` is below 0.1 (to 1e-12), without glibc's `ln`
    // (7,000 calls per fit of 10,000 observations took a seventh of it, `perf record`).
    if out < 1e-8 {
        -out
    } else if out < 0.1 {
        // Horner's form of -(x + x^2/2 + ... + x^11/11).
        const INV: [f64; 11] = [
            1.0,
            1.0 / 2.0,
            1.0 / 3.0,
            1.0 / 4.0,
            1.0 / 5.0,
            1.0 / 6.0,
            1.0 / 7.0,
            1.0 / 8.0,
            1.0 / 9.0,
            1.0 / 10.0,
            1.0 / 11.0,
        ];
        -out * INV.iter().rev().fold(0.0, |acc, c| acc * out + c)
    } else {
        (1.0 - out).max(f64::MIN_POSITIVE).ln()
    }
}

/// Each kernel's width by the rule in the module doc: the larger gap to its sorted
/// neighbours (the range's ends outermost), the outermost two their inner gap, clipped.
fn neighbour_widths(mu: &[f64], low: f64, high: f64) -> Vec<f64> {
    let n = mu.len();
    // Sorted as one u64 each: the value's position in the range to 2^-32 of it (high bits)
    // and the index (low bits). A gap below that resolution is clipped to a hundredth of
    // the range anyway; sorting (f64, index) pairs with a comparator was a fifth of a
    // suggestion's time with 10,000 trials (`perf record`, `search-bench latency`).
    let span = high - low;
    let mut order: Vec<u64> = mu
        .iter()
        .zip(0u64..)
        .map(|(&m, i)| {
            let unit = if span > 0.0 {
                ((m - low) / span).clamp(0.0, 1.0)
            } else {
                0.0
            };
            (((unit * u32::MAX as f64) as u64) << 32) | i
        })
        .collect();
    sort_by_high_half(&mut order);
    let index = |key: u64| (key & u64::from(u32::MAX)) as usize;
    // The k-th value in sorted order, the range's ends at 0 and n + 1.
    let at = |k: usize| match k {
        0 => low,
        k if k > n => high,
        k => mu[index(order[k - 1])],
    };
    let range = high - low;
    let min = range / (100f64).min(n as f64 + 2.0);
    let mut out = vec![0.0; n];
    // Room for the prior kernel's width, which the caller adds.
    out.reserve(1);
    for k in 1..=n {
        let gap = match k {
            1 if n >= 2 => at(2) - at(1),
            k if k == n && n >= 2 => at(n) - at(n - 1),
            k => (at(k) - at(k - 1)).max(at(k + 1) - at(k)),
        };
        out[index(order[k - 1])] = gap.clamp(min, range);
    }
    out
}

/// Sorts `keys` by their high 32 bits, stably: equal values keep their index order. A radix
/// sort (three passes of 11 bits) from 256 keys up; with 10,000 observations it took the
/// widths from 1.5 ms to under 0.3 ms per suggestion (`search-bench latency`, 8 dimensions).
fn sort_by_high_half(keys: &mut Vec<u64>) {
    if keys.len() < 256 {
        keys.sort_unstable();
        return;
    }
    let mut out = vec![0u64; keys.len()];
    for shift in [32, 43, 54] {
        let digit = |k: u64| ((k >> shift) & 0x7ff) as usize;
        let mut start = [0usize; 2048];
        for &k in keys.iter() {
            start[digit(k)] += 1;
        }
        let mut sum = 0;
        for c in start.iter_mut() {
            (*c, sum) = (sum, sum + *c);
        }
        for &k in keys.iter() {
            let d = digit(k);
            out[start[d]] = k;
            start[d] += 1;
        }
        std::mem::swap(keys, &mut out);
    }
}

/// `ln(sqrt(2 pi))`.
const LOG_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// A draw from normal(mu, sigma) truncated to [low, high], by inverting the CDF at `u`.
fn truncnorm_sample(mu: f64, sigma: f64, low: f64, high: f64, u: f64) -> f64 {
    let (a, b) = (phi((low - mu) / sigma), phi((high - mu) / sigma));
    if b - a < 1e-12 {
        // The kernel's mass in range is below what doubles resolve: stay at its nearer edge.
        return mu.clamp(low, high);
    }
    (mu + sigma * phi_inv(a + u * (b - a))).clamp(low, high)
}

/// The standard normal CDF.
fn phi(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' Chebyshev fit, relative error below
/// 1.2e-7 everywhere, which is ample for ranking candidates).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    // Beyond 27 the tail is below the smallest double (and `exp` would underflow slowly).
    if z > 27.0 {
        return if x >= 0.0 { 0.0 } else { 2.0 };
    }
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The standard normal quantile (Acklam's rational approximation, refined by one Halley
/// step against [`phi`]).
fn phi_inv(p: f64) -> f64 {
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    let x = if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    let e = phi(x) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

#[cfg(test)]
mod tests;
