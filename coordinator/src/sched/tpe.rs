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

/// The next point to try, given every observation so far (in trial order).
pub fn suggest(
    space: &[Dim],
    observations: &[Observation],
    startup: usize,
    rng: &mut impl Rng,
) -> Result<Point, TpeError> {
    check(space, observations)?;
    let usable = observations
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Loss(_) | Outcome::Diverged))
        .count();
    let mut point: Point = vec![None; space.len()];
    for group in groups(space) {
        let active = group_active(space, &group, &point);
        if !active {
            continue;
        }
        let values = if usable < startup.max(1) {
            group.iter().map(|&i| space[i].kind.uniform(rng)).collect()
        } else {
            sample_group(space, &group, observations, rng)
        };
        for (&i, v) in group.iter().zip(values) {
            point[i] = Some(v);
        }
    }
    Ok(point)
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
/// module doc; each side keeps trial order (for the weights).
fn split(group: &[usize], observations: &[Observation]) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let values =
        |o: &Observation| -> Option<Vec<f64>> { group.iter().map(|&i| o.point[i]).collect() };
    // (rank key, trial order, values): finite losses rank by value, everything bad after.
    let mut ranked: Vec<(f64, usize, Vec<f64>)> = observations
        .iter()
        .enumerate()
        .filter_map(|(n, o)| {
            let key = match o.outcome {
                Outcome::Loss(l) if l.is_finite() => l,
                Outcome::Loss(_) | Outcome::Diverged | Outcome::Pending => f64::INFINITY,
                Outcome::Failed => return None,
            };
            values(o).map(|v| (key, n, v))
        })
        .collect();
    // Only finished trials count towards how many are good; pending ones never are.
    let finished = observations
        .iter()
        .filter(|o| !matches!(o.outcome, Outcome::Failed | Outcome::Pending))
        .filter(|o| group.iter().all(|&i| o.point[i].is_some()))
        .count();
    ranked.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let n_good = gamma(finished).min(ranked.iter().filter(|r| r.0.is_finite()).count());
    let mut good: Vec<(usize, Vec<f64>)> = Vec::new();
    let mut bad: Vec<(usize, Vec<f64>)> = Vec::new();
    for (i, (_, n, v)) in ranked.into_iter().enumerate() {
        if i < n_good {
            good.push((n, v));
        } else {
            bad.push((n, v));
        }
    }
    good.sort_unstable_by_key(|g| g.0);
    bad.sort_unstable_by_key(|b| b.0);
    (
        good.into_iter().map(|g| g.1).collect(),
        bad.into_iter().map(|b| b.1).collect(),
    )
}

fn sample_group(
    space: &[Dim],
    group: &[usize],
    observations: &[Observation],
    rng: &mut impl Rng,
) -> Vec<f64> {
    let kinds: Vec<&Kind> = group.iter().map(|&i| &space[i].kind).collect();
    let (good, bad) = split(group, observations);
    let l = Parzen::new(&kinds, &good);
    let g = Parzen::new(&kinds, &bad);
    let mut best: Option<(f64, Vec<f64>)> = None;
    for _ in 0..N_CANDIDATES {
        let x = l.sample(rng);
        let score = l.log_pdf(&x) - g.log_pdf(&x);
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, x));
        }
    }
    best.map(|(_, x)| x).unwrap_or_else(|| l.sample(rng))
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

    /// A uniform draw (on the log scale for log ranges; on the grid for integer and stepped).
    fn uniform(&self, rng: &mut impl Rng) -> f64 {
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
struct Parzen {
    /// Log weight of each kernel (the prior's last).
    log_w: Vec<f64>,
    /// Per dimension, per kernel: (mu, sigma) for numeric dims, choice probabilities for
    /// categorical ones.
    dims: Vec<DimKernels>,
}

enum DimKernels {
    Numeric {
        scale: Scale,
        mu: Vec<f64>,
        sigma: Vec<f64>,
        /// Each kernel's log of its mass inside the range, precomputed: evaluating a density
        /// is then a subtraction per kernel, not two `erfc`s (with 10,000 trials a suggestion
        /// took 235 ms, Optuna's 157 ms; `search-bench latency`).
        log_in_range: Vec<f64>,
        /// `ln(sigma sqrt(2 pi))` plus `log_in_range`: a continuous density's normaliser.
        log_norm: Vec<f64>,
    },
    Categorical {
        /// Log probabilities, per kernel and choice.
        log_p: Vec<Vec<f64>>,
        p: Vec<Vec<f64>>,
    },
}

impl Parzen {
    fn new(kinds: &[&Kind], obs: &[Vec<f64>]) -> Parzen {
        let n = obs.len();
        let mut w = weights(n);
        w.push(PRIOR_WEIGHT);
        let total: f64 = w.iter().sum();
        let log_w = w.iter().map(|w| (w / total).ln()).collect();
        let dims = kinds
            .iter()
            .enumerate()
            .map(|(j, kind)| match kind {
                Kind::Categorical { choices } => {
                    let fill = PRIOR_WEIGHT / (n + 1) as f64;
                    let mut p: Vec<Vec<f64>> = obs
                        .iter()
                        .map(|o| {
                            let mut row = vec![fill; *choices];
                            row[o[j] as usize] += 1.0;
                            let s: f64 = row.iter().sum();
                            row.into_iter().map(|x| x / s).collect()
                        })
                        .collect();
                    p.push(vec![1.0 / *choices as f64; *choices]);
                    let log_p = p
                        .iter()
                        .map(|row| row.iter().map(|q| q.max(f64::MIN_POSITIVE).ln()).collect())
                        .collect();
                    DimKernels::Categorical { log_p, p }
                }
                _ => {
                    let scale = kind.scale();
                    let mut mu: Vec<f64> = obs.iter().map(|o| scale.internal(o[j])).collect();
                    let mut sigma = neighbour_widths(&mu, scale.low, scale.high);
                    mu.push((scale.low + scale.high) / 2.0);
                    sigma.push(scale.width());
                    let log_in_range = mu
                        .iter()
                        .zip(&sigma)
                        .map(|(m, s)| {
                            let (lo, hi) = ((scale.low - m) / s, (scale.high - m) / s);
                            // Eight widths inside both ends: all its mass (to 1e-15).
                            if lo < -8.0 && hi > 8.0 {
                                return 0.0;
                            }
                            (phi(hi) - phi(lo)).max(f64::MIN_POSITIVE).ln()
                        })
                        .collect::<Vec<f64>>();
                    let log_norm = sigma
                        .iter()
                        .zip(&log_in_range)
                        .map(|(s, r)| s.ln() + LOG_SQRT_2PI + r)
                        .collect();
                    DimKernels::Numeric {
                        scale,
                        mu,
                        sigma,
                        log_in_range,
                        log_norm,
                    }
                }
            })
            .collect();
        Parzen { log_w, dims }
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
                DimKernels::Categorical { p, .. } => {
                    let u: f64 = rng.random();
                    let mut acc = 0.0;
                    let row = &p[k];
                    row.iter()
                        .position(|q| {
                            acc += q;
                            u < acc
                        })
                        .unwrap_or(row.len() - 1) as f64
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

    /// Log density (continuous) or log mass of the grid cell (integer, stepped) of `x` under
    /// the mixture of normals truncated to each range, in internal units.
    fn log_pdf(&self, x: &[f64]) -> f64 {
        let mut terms = self.log_w.clone();
        for (j, d) in self.dims.iter().enumerate() {
            match d {
                DimKernels::Categorical { log_p, .. } => {
                    let c = x[j] as usize;
                    for (t, row) in terms.iter_mut().zip(log_p) {
                        *t += row[c];
                    }
                }
                DimKernels::Numeric {
                    scale,
                    mu,
                    sigma,
                    log_in_range,
                    log_norm,
                } => match scale.cell(x[j]) {
                    None => {
                        let v = scale.internal(x[j]);
                        for (k, t) in terms.iter_mut().enumerate() {
                            let z = (v - mu[k]) / sigma[k];
                            *t += -0.5 * z * z - log_norm[k];
                        }
                    }
                    Some((a, b)) => {
                        for (k, t) in terms.iter_mut().enumerate() {
                            let z = |x: f64| (x - mu[k]) / sigma[k];
                            let mass = (phi(z(b)) - phi(z(a))).max(f64::MIN_POSITIVE);
                            *t += mass.ln() - log_in_range[k];
                        }
                    }
                },
            }
        }
        log_sum_exp(&terms)
    }
}

/// Each kernel's width by the rule in the module doc: the larger gap to its sorted
/// neighbours (the range's ends outermost), the outermost two their inner gap, clipped.
fn neighbour_widths(mu: &[f64], low: f64, high: f64) -> Vec<f64> {
    let n = mu.len();
    // (value, index) pairs sort in place: sorting indices by an indirect key was a third of
    // a suggestion's time with 10,000 trials (`perf record --call-graph dwarf`).
    let mut order: Vec<(f64, usize)> = mu.iter().copied().zip(0..).collect();
    order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut at = Vec::with_capacity(n + 2);
    at.push(low);
    at.extend(order.iter().map(|&(m, _)| m));
    at.push(high);
    let mut sorted: Vec<f64> = (1..=n)
        .map(|k| (at[k] - at[k - 1]).max(at[k + 1] - at[k]))
        .collect();
    if n >= 2 {
        sorted[0] = at[2] - at[1];
        sorted[n - 1] = at[n] - at[n - 1];
    }
    let range = high - low;
    let min = range / (100f64).min(n as f64 + 2.0);
    let mut out = vec![0.0; n];
    for (k, &(_, i)) in order.iter().enumerate() {
        out[i] = sorted[k].clamp(min, range);
    }
    out
}

/// `ln(sqrt(2 pi))`.
const LOG_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

fn log_sum_exp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    // Terms more than 40 below the largest add under 1e-17 of it: skipped, because `exp`
    // of a number that underflows takes glibc's slow path (a third of a suggestion's time
    // with 10,000 trials, `perf record` on `search-bench latency`).
    m + xs
        .iter()
        .filter(|&&x| x - m > -40.0)
        .map(|x| (x - m).exp())
        .sum::<f64>()
        .ln()
}

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
