//! `search = "pbt"`: the sweep file's `[pbt]` section read as a population-based training
//! rule ([`crate::sched::pbt`] has the algorithm and its rules).
//!
//! ```toml
//! search = "pbt"
//! search_seed = 1
//!
//! [defaults]
//! epochs = 12                       # every member trains this many epochs
//! validation_split = 0.1            # members are compared on validation accuracy
//!
//! [pbt]
//! population = 8
//! interval_epochs = 2               # segments: exploit and explore between them
//! quantile = 0.25                   # default; the bottom quarter copies the top quarter
//! resample_probability = 0.25       # default
//! perturbation_factors = [0.8, 1.2] # default
//!
//! [pbt.mutations]                   # what may change mid-training: ranges or lists
//! lr = { min = 1e-3, max = 0.3, log = true }
//! momentum = { min = 0.8, max = 0.99 }
//! weight_decay = [0.0, 1e-4, 5e-4]
//! augment.shift = { min = 0.0, max = 0.2 }
//! ```
//!
//! Rules (each refused with its file:line:column): `[pbt]` comes with `search = "pbt"` and
//! the reverse; `population` >= 2; `1 <= interval_epochs < epochs`; `quantile` in (0, 0.5];
//! `resample_probability` in [0, 1]; positive factors; a mutation names a field of
//! [`MUTABLE`] (a frozen field is refused with the reason); ranges as for TPE (`min`, `max`,
//! `log`, `int`, `step`; no `when`); `validation_split > 0`. `[grid]`, `[[include]]`,
//! `[[exclude]]`, `repeats`, `samples`, `trials` and `[early_stopping]` belong to other
//! searches.

use super::space::{check_bound, describe_values, range};
use super::{number, Entries, Parser, SweepError, HARD_MAX_TRIALS};
use crate::sched::pbt::{
    factor_ok, frozen_reason, quantile_ok, resample_ok, Pbt, PbtError, PbtRule, DEFAULT_FACTORS,
    DEFAULT_QUANTILE, DEFAULT_RESAMPLE, MIN_POPULATION, MUTABLE,
};
use crate::sched::search::{Axis, Values};
use serde::Deserialize;
use sweep_proto::TrialSpec;
use toml::Spanned;

/// `[pbt]` as written; numbers are read as values so that a wrong one is refused with its
/// key and place, not as a type error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPbt {
    population: Option<Spanned<i64>>,
    interval_epochs: Option<Spanned<i64>>,
    quantile: Option<Spanned<toml::Value>>,
    resample_probability: Option<Spanned<toml::Value>>,
    perturbation_factors: Option<Spanned<toml::Value>>,
    #[serde(default)]
    mutations: Entries,
}

type Span = Option<std::ops::Range<usize>>;

impl Parser<'_> {
    /// The rule of a `search = "pbt"` sweep, checked, and its first generation's trials (in
    /// member order; the later ones are made as it trains).
    pub(super) fn pbt_rule(&self) -> Result<(PbtRule, Vec<TrialSpec>), SweepError> {
        self.pbt_only_keys()?;
        let Some(raw) = &self.raw.pbt else {
            return Err(self.err(
                None,
                "search = \"pbt\" needs a [pbt] section with `population` and `interval_epochs`"
                    .into(),
            ));
        };
        let pbt = raw.get_ref();
        let whole = Some(raw.span());
        let population = self.count(
            "population",
            &pbt.population,
            whole.clone(),
            MIN_POPULATION as i64,
        )?;
        let interval = self.count("interval_epochs", &pbt.interval_epochs, whole.clone(), 1)?;
        let fraction = |key: &str,
                        v: &Option<Spanned<toml::Value>>,
                        default: f64,
                        ok: fn(f64) -> bool,
                        range: &str| {
            match v {
                None => Ok(default),
                Some(v) => match number(v.get_ref()) {
                    Some(x) if ok(x) => Ok(x),
                    _ => Err(self.err(
                        Some(v.span()),
                        format!("`pbt.{key}` = {} must be a number in {range}", v.get_ref()),
                    )),
                },
            }
        };
        let quantile = fraction(
            "quantile",
            &pbt.quantile,
            DEFAULT_QUANTILE,
            quantile_ok,
            "(0, 0.5]: the top and bottom quantiles may not overlap",
        )?;
        let resample = fraction(
            "resample_probability",
            &pbt.resample_probability,
            DEFAULT_RESAMPLE,
            resample_ok,
            "[0, 1]",
        )?;
        let factors = self.factors(&pbt.perturbation_factors)?;
        let mutations = self.mutations(&pbt.mutations, whole.clone())?;
        let rule = PbtRule {
            population,
            interval_epochs: interval as u32,
            quantile,
            resample_probability: resample,
            perturbation_factors: factors,
            mutations,
            base: self.defaults.clone(),
            seed: self.raw.search_seed,
        };
        let first = self.check_rule(&rule, pbt)?;
        Ok((rule, first))
    }

    /// Keys of other searches.
    fn pbt_only_keys(&self) -> Result<(), SweepError> {
        let raw = &self.raw;
        let refuse = |what: &str, at: Span| {
            Err(self.err(
                at,
                format!(
                    "{what} is not for search = \"pbt\": members differ only in [pbt.mutations]"
                ),
            ))
        };
        if let Some(k) = self.axes.first() {
            return refuse("[grid]", Some(k.span()));
        }
        if let Some(n) = &raw.trials {
            return refuse("`trials` (use pbt.population)", Some(n.span()));
        }
        self.grid_only_keys("pbt.population", refuse)?;
        if let Some(e) = &raw.early_stopping {
            return Err(self.err(
                Some(e.span()),
                "[early_stopping] is not for search = \"pbt\": PBT replaces its worst members itself".into(),
            ));
        }
        Ok(())
    }

    /// A required whole number of `[pbt]`, at least `min`.
    fn count(
        &self,
        key: &str,
        v: &Option<Spanned<i64>>,
        section: Span,
        min: i64,
    ) -> Result<usize, SweepError> {
        match v {
            None => Err(self.err(section, format!("[pbt] needs `{key}`"))),
            Some(n) if (min..=HARD_MAX_TRIALS as i64).contains(n.get_ref()) => {
                Ok(*n.get_ref() as usize)
            }
            Some(n) => Err(self.err(
                Some(n.span()),
                format!(
                    "`pbt.{key}` = {} must be between {min} and {HARD_MAX_TRIALS}",
                    n.get_ref()
                ),
            )),
        }
    }

    fn factors(&self, v: &Option<Spanned<toml::Value>>) -> Result<Vec<f64>, SweepError> {
        let Some(v) = v else {
            return Ok(DEFAULT_FACTORS.to_vec());
        };
        let list: Option<Vec<f64>> = match v.get_ref() {
            toml::Value::Array(items) if !items.is_empty() => items
                .iter()
                .map(|i| number(i).filter(|x| factor_ok(*x)))
                .collect(),
            _ => None,
        };
        list.ok_or_else(|| {
            self.err(
                Some(v.span()),
                format!(
                    "`pbt.perturbation_factors` = {} must be a list of positive numbers, e.g. [0.8, 1.2]",
                    v.get_ref()
                ),
            )
        })
    }

    /// `[pbt.mutations]` in file order; `augment = { shift = ... }` (what `augment.shift =`
    /// writes) is one mutation per entry.
    fn mutations(&self, entries: &Entries, section: Span) -> Result<Vec<Axis>, SweepError> {
        let mut flat: Vec<(
            String,
            &Spanned<String>,
            toml::Value,
            std::ops::Range<usize>,
        )> = Vec::new();
        for (key, value) in entries {
            match (key.get_ref().as_str(), value.get_ref()) {
                ("augment", toml::Value::Table(t)) => {
                    for (inner, v) in t {
                        flat.push((format!("augment.{inner}"), key, v.clone(), value.span()));
                    }
                }
                (name, v) => flat.push((name.to_string(), key, v.clone(), value.span())),
            }
        }
        flat.sort_by_key(|(_, key, _, _)| key.span().start);
        if flat.is_empty() {
            return Err(self.err(
                section,
                "[pbt.mutations] names no field: give at least one range or list, e.g. lr = { min = 1e-3, max = 0.3, log = true }".into(),
            ));
        }
        flat.into_iter()
            .map(|(name, key, value, span)| {
                if !MUTABLE.contains(&name.as_str()) {
                    return Err(self.err(
                        Some(key.span()),
                        format!(
                            "`pbt.mutations.{name}`: `{name}` cannot change mid-training ({}); PBT may change {}",
                            frozen_reason(&name),
                            MUTABLE.join(", ")
                        ),
                    ));
                }
                let fail = |m: String| self.err(Some(span.clone()), format!("`pbt.mutations.{name}`: {m}"));
                let values = match &value {
                    toml::Value::Array(items) if items.is_empty() => {
                        return Err(fail("an empty list; give at least one value".into()))
                    }
                    toml::Value::Array(items) => {
                        for v in items {
                            check_bound(&name, v).map_err(&fail)?;
                        }
                        Values::List {
                            values: items.clone(),
                        }
                    }
                    toml::Value::Table(t) if t.contains_key("when") => {
                        return Err(fail("`when` is for search = \"tpe\"".into()))
                    }
                    toml::Value::Table(t) => range(&name, t).map_err(&fail)?,
                    v => return Err(fail(format!("{v} must be a list of values or a range"))),
                };
                Ok(Axis {
                    name,
                    values,
                    when: None,
                })
            })
            .collect()
    }

    /// What [`Pbt::new`] and the first generation find, placed where the file says it; the
    /// first generation's trials.
    fn check_rule(&self, rule: &PbtRule, raw: &RawPbt) -> Result<Vec<TrialSpec>, SweepError> {
        let pbt = Pbt::new(rule.clone()).map_err(|e| {
            // The checks this parser has not placed already: `interval_epochs` against the
            // trials' `epochs`.
            let at = match &e {
                PbtError::Rule {
                    key: "interval_epochs",
                    ..
                } => raw.interval_epochs.as_ref().map(|v| v.span()),
                _ => None,
            };
            self.err(at, e.to_string())
        })?;
        let first: Vec<TrialSpec> = pbt
            .first_generation()
            .map_err(|e| self.err(None, e.to_string()))?
            .iter()
            .map(|seg| pbt.segment_trial(seg, None))
            .collect::<Result<_, _>>()
            .map_err(|m| self.err(None, m))?;
        if first.iter().any(|t| t.validation_split <= 0.0) {
            return Err(self.err(
                None,
                "search = \"pbt\" compares members on validation accuracy: set `validation_split` (e.g. 0.1) in [defaults]".into(),
            ));
        }
        Ok(first)
    }
}

/// What `coordinator plan` prints for a PBT sweep: the mutations, the settings, and the first
/// generation's values.
pub fn describe(rule: &PbtRule) -> Result<String, crate::sched::pbt::PbtError> {
    let pbt = Pbt::new(rule.clone())?;
    let mut out = String::new();
    for m in &rule.mutations {
        out.push_str(&format!(
            "  {:<20} {}\n",
            m.name,
            describe_values(&m.values)
        ));
    }
    let factors: Vec<String> = rule
        .perturbation_factors
        .iter()
        .map(|f| f.to_string())
        .collect();
    out.push_str(&format!(
        "PBT: population {}, {} epochs each in {} segments of {}; quantile {}, resample_probability {}, perturbation factors {}; search_seed {}\n",
        rule.population,
        pbt.epochs(),
        pbt.generations(),
        rule.interval_epochs,
        rule.quantile,
        rule.resample_probability,
        factors.join(", "),
        rule.seed
    ));
    let (start, end) = pbt.bounds(0);
    out.push_str(&format!("generation 0 (epochs {start}-{end}):\n"));
    for s in pbt.first_generation()? {
        let values: Vec<String> = rule
            .mutations
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let v = pbt.value(&s.point, i).map_or("-".into(), |v| match v {
                    toml::Value::Float(f) => format!("{f:.4e}"),
                    v => v.to_string(),
                });
                format!("{} = {v}", m.name)
            })
            .collect();
        out.push_str(&format!("  member {}: {}\n", s.member, values.join(", ")));
    }
    Ok(out)
}
