//! Population-based training run by the coordinator (`search = "pbt"`): each population's
//! segments so far, and the next generation made when the last segment of one ends
//! ([`crate::sched::pbt`] decides who copies whom).
//!
//! Rules:
//! - A population's members are its segments' trials, in generation-major order: generation
//!   g's member m is the sweep's trial at position `g·population + m`. The first generation is
//!   planned with the sweep; each later one is made once every segment of the last one has
//!   ended, by the handler of the result that ended it (before its reply, so that worker's next
//!   ask finds it) or else by the tick ([`Handle::tick`]), and written as the sweep's next members in one batch
//!   (on disk before any worker can lease them; a batch the disk refuses takes them back and
//!   a later tick makes them again).
//! - A segment's score is the validation accuracy of its last epoch (a failed or diverged
//!   segment has none), from its stored result alone. So opening a database replays the same
//!   decisions from the stored results and checks each stored generation against them; a
//!   generation that does not match (a changed rule cannot, as the sweep then starts over) is
//!   logged and the population stops there.
//! - Before a generation's trials are written, the checkpoint each one starts from (its own
//!   previous segment's, or its parent's) is copied to it on the coordinator's disk, so its
//!   lease announces it. A checkpoint that is missing or fails to copy costs time, not
//!   results: a segment's trial is its lineage's whole schedule, so without a checkpoint it
//!   trains from scratch to the same weights.
//! - The checkpoints of the last generation made are kept until the next one is made.
//! - A cancelled sweep's population makes no more generations until it is submitted again.

use super::settings::SweepSettings;
use super::{Handle, Shared};
use crate::sched::core::{TrialId, TrialState};
pub use crate::sched::pbt::Placed;
use crate::sched::pbt::{outcome, previous, Pbt, Segment};
use crate::store::Write;

/// A population as the coordinator runs it.
#[derive(Debug, Clone)]
pub struct Population {
    pub pbt: Pbt,
    pub sweep: SweepSettings,
    /// Segments so far, generation-major.
    pub segments: Vec<Placed>,
    /// Why it makes no more generations (cancelled, every member failed, a stored history
    /// that does not replay).
    pub ended: Option<String>,
    /// A generation is being made (its checkpoints copied off the lock).
    making: bool,
}

/// A generation to make: its segments, and for each the trial whose checkpoint it starts
/// from.
#[derive(Debug)]
pub(crate) struct NextGeneration {
    sweep: String,
    made_after: usize,
    children: Vec<(Placed, TrialId)>,
}

impl Population {
    fn population(&self) -> usize {
        self.pbt.rule.population
    }

    /// Segments still to make.
    pub fn left(&self) -> usize {
        if self.ended.is_some() {
            return 0;
        }
        self.population() * self.pbt.generations() as usize - self.segments.len()
    }

    /// The last generation made.
    fn last(&self) -> &[Placed] {
        let p = self.population();
        let n = self.segments.len();
        &self.segments[n.saturating_sub(p)..]
    }

    /// Whether `trial` is a segment of the last generation (whose checkpoints are kept).
    pub fn in_last(&self, trial: &str) -> bool {
        self.last().iter().any(|p| p.id == trial)
    }
}

impl Shared {
    /// Installs (or, with no rule, removes) sweep `s`'s population, replaying its stored
    /// segments (see the rules); segments made here whose write is still in the open batch
    /// are kept.
    pub(crate) fn apply_population(&mut self, s: &SweepSettings) {
        let old = self.populations.remove(&s.name);
        let Some(rule) = &s.pbt else { return };
        let pbt = match Pbt::new(rule.clone()) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(sweep = %s.name, "its stored population does not hold together: {e}");
                return;
            }
        };
        let stored: std::collections::HashSet<&TrialId> = s.trials.iter().collect();
        let mut ids: Vec<TrialId> = s.trials.clone();
        ids.extend(
            old.iter()
                .flat_map(|o| o.segments.iter().map(|p| p.id.clone()))
                .filter(|id| !stored.contains(id)),
        );
        let mut population = Population {
            pbt,
            sweep: s.clone(),
            segments: Vec::new(),
            ended: s.cancelled.then(|| "the sweep was cancelled".to_string()),
            making: false,
        };
        if let Err(why) = self.replay(&mut population, &ids) {
            tracing::error!(sweep = %s.name, "the population stops: {why}");
            population.ended = Some(why);
        }
        for p in &population.segments {
            self.settle_segment(s, p);
        }
        self.populations.insert(s.name.clone(), population);
    }

    /// Rebuilds `pop`'s segments from the stored member `ids` (see the rules).
    fn replay(&self, pop: &mut Population, ids: &[TrialId]) -> Result<(), String> {
        let (placed, why) = pop
            .pbt
            .replay(ids, |id| outcome(&self.core.trial(id)?.state));
        pop.segments = placed;
        why.map_or(Ok(()), Err)
    }

    /// The settings of a segment's trial: its sweep's, except that only the last generation
    /// keeps trained models.
    fn settle_segment(&mut self, s: &SweepSettings, p: &Placed) {
        self.settle(s, &p.id);
        if p.spec.stop_after.is_some() {
            if let Some(t) = self.settings.get_mut(&p.id) {
                t.keep_model = false;
            }
        }
    }

    /// The generations ready to be made: every segment of the last one ended. Marks them
    /// being made.
    pub(crate) fn ready_generations(&mut self) -> Vec<NextGeneration> {
        let mut out = Vec::new();
        let names: Vec<String> = self.populations.keys().cloned().collect();
        for name in names {
            match self.next_for(&name) {
                Ok(Some(next)) => {
                    if let Some(pop) = self.populations.get_mut(&name) {
                        pop.making = true;
                    }
                    out.push(next);
                }
                Ok(None) => {}
                Err(why) => {
                    tracing::error!(sweep = %name, "the population stops: {why}");
                    if let Some(pop) = self.populations.get_mut(&name) {
                        pop.ended = Some(why);
                    }
                }
            }
        }
        out
    }

    /// Sweep `name`'s next generation, if its last one has ended.
    fn next_for(&self, name: &str) -> Result<Option<NextGeneration>, String> {
        let Some(pop) = self.populations.get(name) else {
            return Ok(None);
        };
        if pop.making || pop.left() == 0 || pop.segments.is_empty() {
            return Ok(None);
        }
        let last = pop.last();
        let states: Vec<Option<&TrialState>> = last
            .iter()
            .map(|p| self.core.trial(&p.id).map(|t| &t.state))
            .collect();
        // A cancelled segment waits for its sweep to be submitted again.
        if states
            .iter()
            .any(|s| matches!(s, Some(TrialState::Cancelled)))
        {
            return Ok(None);
        }
        let Some(scores) = states
            .iter()
            .map(|s| s.and_then(outcome))
            .collect::<Option<Vec<Option<f64>>>>()
        else {
            return Ok(None);
        };
        let Some(next) = pop
            .pbt
            .next_generation(&pop.last_segments(), &scores)
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let mut children = Vec::with_capacity(next.len());
        for seg in next {
            let placed = pop.pbt.place(seg, &pop.segments)?;
            let p = pop.population();
            let from = previous(&pop.segments, &placed.segment, p).map(|f| f.id.clone());
            children.push((
                placed,
                from.ok_or("a later generation's segment continues none")?,
            ));
        }
        Ok(Some(NextGeneration {
            sweep: name.to_string(),
            made_after: pop.segments.len(),
            children,
        }))
    }

    /// Queues a generation whose checkpoints are in place, and adds its writes to the open
    /// batch (the sweep's next members, in member order).
    fn add_generation(&mut self, g: NextGeneration) {
        let Some(pop) = self.populations.get_mut(&g.sweep) else {
            return;
        };
        pop.making = false;
        // Submitted again meanwhile: the population was rebuilt from the store.
        if pop.segments.len() != g.made_after {
            return;
        }
        let sweep = pop.sweep.clone();
        let generation = g.children.first().map_or(0, |c| c.0.segment.generation);
        for (placed, from) in g.children {
            tracing::info!(sweep = %g.sweep, generation, member = placed.segment.member, trial = %placed.id, from = %from, start = ?placed.segment.start, "PBT segment");
            self.core.add_trial(
                placed.id.clone(),
                placed.spec.clone(),
                TrialState::Queued { attempt: 1 },
                false,
            );
            self.settle_segment(&sweep, &placed);
            self.enqueue(Write::Suggest {
                sweep: g.sweep.clone(),
                trial: placed.id.clone(),
                spec: Box::new(placed.spec.clone()),
            });
            if let Some(pop) = self.populations.get_mut(&g.sweep) {
                pop.segments.push(placed);
            }
        }
    }

    /// Takes back a segment whose write the disk refused: the next tick makes it again.
    pub(crate) fn unplace(&mut self, sweep: &str, trial: &TrialId) {
        if let Some(pop) = self.populations.get_mut(sweep) {
            pop.segments.retain(|p| &p.id != trial);
            // A generation is written whole or not at all.
            let p = pop.population();
            let whole = pop.segments.len() - pop.segments.len() % p;
            pop.segments.truncate(whole);
        }
    }

    /// Segments of sweep `name` still to make.
    pub fn segments_left(&self, name: &str) -> usize {
        self.populations.get(name).map_or(0, Population::left)
    }

    /// Whether `trial`'s checkpoint is kept for the next generation.
    pub(crate) fn keeps_for_population(&self, trial: &str) -> bool {
        self.populations.values().any(|p| p.in_last(trial))
    }

    /// Sweep `name`'s population, if it has one.
    pub fn population(&self, name: &str) -> Option<&Population> {
        self.populations.get(name)
    }
}

impl Population {
    fn last_segments(&self) -> Vec<Segment> {
        self.last().iter().map(|p| p.segment.clone()).collect()
    }
}

impl Handle {
    /// Makes every generation that is ready: copies each segment's starting checkpoint (off
    /// the core's lock), then queues the segments. Blocking (file copies).
    pub(crate) fn advance_populations(&self) {
        let copies = self
            .checkpoint_copies
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let ready = self.lock().ready_generations();
        if ready.is_empty() {
            return;
        }
        for g in &ready {
            for (placed, from) in &g.children {
                let start = placed.segment.start_epoch;
                match self.checkpoints.latest(from) {
                    Some(m) if m.epoch == start => {
                        if let Err(e) = self.checkpoints.copy(from, &placed.id) {
                            tracing::warn!(sweep = %g.sweep, trial = %placed.id, "its checkpoint was not copied (it trains from scratch): {e}");
                        }
                    }
                    _ => {
                        tracing::warn!(sweep = %g.sweep, trial = %placed.id, from = %from, "no checkpoint after epoch {start} to start from: it trains from scratch")
                    }
                }
            }
        }
        let mut s = self.lock();
        for g in ready {
            s.add_generation(g);
        }
        drop(s);
        // The copies' trials are in the core now: the tick may remove checkpoints again.
        drop(copies);
        self.wake_committer();
        self.forget_views();
    }
}
