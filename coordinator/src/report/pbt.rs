//! The report's section on a population (`search = "pbt"`): every segment's lineage and
//! values, and the best member's whole schedule as a trial file (`replay.toml`).
//!
//! Rules:
//! - The segments and who each started from are replayed from the stored results
//!   ([`Pbt::replay`]), the same decisions the coordinator made.
//! - A segment's score is what PBT compared ([`outcome`]: its last epoch's validation
//!   accuracy).
//! - The best member is the best-ranked trial of the last generation (by the report's ranking
//!   metric); its trial is its whole schedule: `replay.toml`, which trains it from scratch
//!   (bit for bit the same weights on CPU as the population's segments).

use super::tables::{Table, TableRow};
use super::{axis_value, pct, Row};
use crate::sched::core::TrialLookup;
use crate::sched::pbt::{outcome, Pbt, PbtRule, Placed, Start};
use serde::Serialize;

/// One segment as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentRow {
    pub generation: u32,
    pub member: usize,
    pub id: String,
    pub start_epoch: u32,
    pub end_epoch: u32,
    /// "scratch", "own", or "member K".
    pub from: String,
    /// The mutated fields' values in this segment, in the rule's order.
    pub values: Vec<String>,
    /// Validation accuracy at its last epoch.
    pub score: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PbtSummary {
    pub rule: PbtRule,
    pub generations: u32,
    pub epochs: u32,
    pub segments: Vec<SegmentRow>,
    /// The best member of the last generation: its trial id.
    pub best: Option<String>,
    /// Its trial file: the whole schedule, to train from scratch.
    #[serde(skip)]
    pub replay: Option<String>,
    /// Why the population stopped early, if it did.
    pub stopped: Option<String>,
    /// The last generation's members' whole schedules, for the report's charts.
    pub schedules: Vec<Schedule>,
}

/// One member's values and validation accuracy over its epochs (its lineage's).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    pub member: usize,
    pub id: String,
    /// For each mutated field (the rule's order): (epoch, value) where it is a number.
    pub values: Vec<Vec<(u32, f64)>>,
    pub val_accuracy: Vec<(u32, f64)>,
}

impl PbtSummary {
    /// The section for `rule`'s population, whose stored trials are `order` (generation-major),
    /// as `trials` holds them, and whose rows (ranked best first) are `rows`.
    pub fn of(
        rule: &PbtRule,
        order: &[String],
        rows: &[Row],
        trials: &impl TrialLookup,
    ) -> Option<PbtSummary> {
        let pbt = Pbt::new(rule.clone()).ok()?;
        let row = |id: &str| rows.iter().find(|r| r.id == id);
        let ids: Vec<sweep_proto::ids::TrialId> = order.iter().map(|i| i.as_str().into()).collect();
        let outcome_of = |id: &str| outcome(&trials.trial(id)?.state);
        let (placed, stopped) = pbt.replay(&ids, |id| outcome_of(id.as_str()));
        let segments = placed
            .iter()
            .map(|p| segment_row(&pbt, p, outcome_of(p.id.as_str()).flatten()))
            .collect();
        let last_generation = pbt.generations() - 1;
        let best = rows
            .iter()
            .filter(|r| r.rank.is_some())
            .find(|r| {
                placed
                    .iter()
                    .any(|p| p.id.as_str() == r.id && p.segment.generation == last_generation)
            })
            .map(|r| r.id.clone());
        let replay = best.as_ref().and_then(|id| {
            let p = placed.iter().find(|p| p.id.as_str() == id)?;
            Some(format!(
                "# The whole schedule of PBT member {} (trial {id}), as one trial: train it from\n# scratch with `worker train replay.toml` (or as a sweep's [defaults]). On CPU it\n# reaches the same weights as the population's segments.\n{}",
                p.segment.member,
                p.spec.to_toml()
            ))
        });
        let last = pbt.generations().saturating_sub(1);
        let schedules = placed
            .iter()
            .filter(|p| p.segment.generation == last)
            .map(|p| schedule(&pbt, p, row(p.id.as_str())))
            .collect();
        Some(PbtSummary {
            schedules,
            rule: rule.clone(),
            generations: pbt.generations(),
            epochs: pbt.epochs(),
            segments,
            best,
            replay,
            stopped,
        })
    }

    /// One line: the population's shape and settings.
    pub fn describe(&self) -> String {
        let r = &self.rule;
        let mut line = format!(
            "{} members, {} epochs each in {} segments of {}; after each segment the bottom {} copy a better member of the top {} (quantile {}) and explore its values (resample probability {}, factors {:?}). Members start where the table says (`from`); values are those each segment trained with.",
            r.population,
            self.epochs,
            self.generations,
            r.interval_epochs,
            crate::sched::pbt::quantile_size(r.population, r.quantile),
            crate::sched::pbt::quantile_size(r.population, r.quantile),
            r.quantile,
            r.resample_probability,
            r.perturbation_factors
        );
        if let Some(best) = &self.best {
            line += &format!(" The best member's whole schedule is trial {best}: replay.toml.");
        }
        if let Some(why) = &self.stopped {
            line += &format!(" The population stopped early: {why}.");
        }
        line
    }

    /// Every segment: generation, member, epochs, where it started, its values and score.
    pub fn lineage(&self) -> Table {
        let mut head: Vec<String> = ["generation", "member", "epochs", "from", "trial"]
            .map(String::from)
            .to_vec();
        head.extend(self.rule.mutations.iter().map(|m| m.name.clone()));
        head.push("val acc".into());
        let rows = self
            .segments
            .iter()
            .map(|s| {
                let mut cells = vec![
                    s.generation.to_string(),
                    s.member.to_string(),
                    format!("{}-{}", s.start_epoch + 1, s.end_epoch),
                    s.from.clone(),
                    s.id.clone(),
                ];
                cells.extend(s.values.iter().cloned());
                cells.push(pct(s.score));
                TableRow {
                    id: Some(s.id.clone()),
                    cells,
                }
            })
            .collect();
        Table { head, rows }
    }
}

/// A last-generation member's schedule: each field's value at every epoch of its trial, and
/// the validation accuracy its result reports for each (its lineage's, inherited epochs
/// included).
fn schedule(pbt: &Pbt, p: &Placed, row: Option<&Row>) -> Schedule {
    let epochs = 1..=p.spec.last_epoch();
    let at: Vec<(u32, serde_json::Value)> = epochs
        .map(|e| {
            (
                e,
                serde_json::to_value(&*p.spec.at_epoch(e)).unwrap_or_default(),
            )
        })
        .collect();
    let values = pbt
        .rule
        .mutations
        .iter()
        .map(|m| {
            at.iter()
                .filter_map(|(e, v)| Some((*e, axis_value(v, &m.name).parse::<f64>().ok()?)))
                .collect()
        })
        .collect();
    let val_accuracy = row
        .map(|r| {
            r.epochs
                .iter()
                .filter_map(|m| Some((m.epoch, m.val_accuracy?)))
                .collect()
        })
        .unwrap_or_default();
    Schedule {
        member: p.segment.member,
        id: p.id.to_string(),
        values,
        val_accuracy,
    }
}

fn segment_row(pbt: &Pbt, p: &Placed, score: Option<f64>) -> SegmentRow {
    let at = serde_json::to_value(&*p.spec.at_epoch(p.segment.end_epoch)).unwrap_or_default();
    SegmentRow {
        generation: p.segment.generation,
        member: p.segment.member,
        id: p.id.to_string(),
        start_epoch: p.segment.start_epoch,
        end_epoch: p.segment.end_epoch,
        from: match &p.segment.start {
            Start::Scratch => "scratch".into(),
            Start::Own => "own".into(),
            Start::Exploit { parent, .. } => format!("member {parent}"),
        },
        values: pbt
            .rule
            .mutations
            .iter()
            .map(|m| axis_value(&at, &m.name))
            .collect(),
        score,
    }
}
