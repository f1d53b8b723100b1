use super::*;

use crate::sched::search::tests::float as range;

fn list(name: &str, values: &[f64]) -> Axis {
    Axis {
        name: name.into(),
        values: Values::List {
            values: values.iter().map(|v| toml::Value::Float(*v)).collect(),
        },
        when: None,
    }
}

/// A rule of `population` members over lr (log range) and weight decay (a list), 6 epochs in
/// segments of 2, nothing resampled.
fn rule(population: usize, quantile: f64) -> PbtRule {
    let mut base = toml::Table::new();
    base.insert("epochs".into(), toml::Value::Integer(6));
    base.insert("validation_split".into(), toml::Value::Float(0.1));
    PbtRule {
        population,
        interval_epochs: 2,
        quantile,
        resample_probability: 0.0,
        perturbation_factors: DEFAULT_FACTORS.to_vec(),
        mutations: vec![
            range("lr", 1e-3, 0.1, true),
            list("weight_decay", &[0.0, 1e-4, 5e-4]),
        ],
        base,
        seed: 7,
    }
}

fn pbt(population: usize, quantile: f64) -> Pbt {
    Pbt::new(rule(population, quantile)).unwrap()
}

/// Who exploits whom, as (member, parent) pairs.
fn exploits(next: &[Segment]) -> Vec<(usize, usize)> {
    next.iter()
        .filter_map(|s| match s.start {
            Start::Exploit { parent, .. } => Some((s.member, parent)),
            _ => None,
        })
        .collect()
}

#[test]
fn quantiles_follow_ray_tunes_rule() {
    assert_eq!(quantile_size(8, 0.25), 2);
    assert_eq!(quantile_size(2, 0.25), 1);
    assert_eq!(quantile_size(5, 0.5), 2);
    assert_eq!(quantile_size(3, 0.1), 1);
    assert_eq!(quantile_size(10, 0.2), 2);
    assert_eq!(quantile_size(10, 0.21), 3);
}

#[test]
fn ranking_puts_missing_scores_last_and_keeps_member_order_in_ties() {
    assert_eq!(
        ranking(&[Some(0.5), None, Some(0.7), Some(0.5)]),
        [2, 0, 3, 1]
    );
    assert_eq!(ranking(&[None, None, Some(0.1)]), [2, 0, 1]);
}

#[test]
fn generations_cover_the_epochs_in_intervals() {
    let p = pbt(4, 0.25);
    assert_eq!((p.epochs(), p.generations()), (6, 3));
    assert_eq!(
        [p.bounds(0), p.bounds(1), p.bounds(2)],
        [(0, 2), (2, 4), (4, 6)]
    );
    let mut r = rule(4, 0.25);
    r.interval_epochs = 4;
    let p = Pbt::new(r).unwrap();
    assert_eq!((p.generations(), p.bounds(1)), (2, (4, 6)));
}

/// Population 4, quantile 0.25 (one member each side): after epoch 2 the worst member takes
/// the best one's weights and perturbed values; the others go on with their own.
#[test]
fn the_worst_member_exploits_the_best_after_each_segment() {
    let p = pbt(4, 0.25);
    let first = p.first_generation().unwrap();
    assert!(first
        .iter()
        .all(|s| s.start == Start::Scratch && s.end_epoch == 2));
    let next = p
        .next_generation(&first, &[Some(0.3), Some(0.9), Some(0.5), Some(0.6)])
        .unwrap()
        .unwrap();
    assert_eq!(exploits(&next), [(0, 1)]);
    assert_eq!(
        next[0].start,
        Start::Exploit {
            parent: 1,
            parent_score: 0.9,
            score: Some(0.3)
        }
    );
    assert!(next
        .iter()
        .all(|s| (s.generation, s.start_epoch, s.end_epoch) == (1, 2, 4)));
    for m in 1..4 {
        assert_eq!(next[m].start, Start::Own);
        assert_eq!(next[m].point, first[m].point, "member {m} keeps its values");
    }
    // Explored from the parent's values: lr times 0.8 or 1.2, weight decay a neighbour.
    let (lr, parent_lr) = (next[0].point[0].unwrap(), first[1].point[0].unwrap());
    let ratio = lr / parent_lr;
    assert!(
        (ratio - 0.8).abs() < 1e-9 || (ratio - 1.2).abs() < 1e-9 || lr == 0.1 || lr == 1e-3,
        "{lr} from {parent_lr}"
    );
    let (wd, parent_wd) = (next[0].point[1].unwrap(), first[1].point[1].unwrap());
    assert!((wd - parent_wd).abs() <= 1.0, "{wd} from {parent_wd}");

    // Then the second worst of the next round, member 2, exploits member 3; the last
    // generation has no successor.
    let third = p
        .next_generation(&next, &[Some(0.8), Some(0.7), Some(0.1), Some(0.95)])
        .unwrap()
        .unwrap();
    assert_eq!(exploits(&third), [(2, 3)]);
    assert_eq!((third[2].start_epoch, third[2].end_epoch), (4, 6));
    assert_eq!(p.next_generation(&third, &[Some(0.5); 4]).unwrap(), None);
}

/// A member exploits only a strictly better one: equal scores across the quantiles copy
/// nothing, and a tie at the top leaves the choice among the better ones.
#[test]
fn ties_copy_only_from_strictly_better_members() {
    let p = pbt(4, 0.25);
    let first = p.first_generation().unwrap();
    let next = p.next_generation(&first, &[Some(0.5); 4]).unwrap().unwrap();
    assert_eq!(exploits(&next), []);
    // Quantile 0.5: top {0, 1}, bottom {3, 2}; member 3 ties them and stays, member 2 copies.
    let p = pbt(4, 0.5);
    let first = p.first_generation().unwrap();
    let next = p
        .next_generation(&first, &[Some(0.5), Some(0.5), Some(0.4), Some(0.5)])
        .unwrap()
        .unwrap();
    let e = exploits(&next);
    assert!(e == [(2, 0)] || e == [(2, 1)], "{e:?}");
}

/// A member without a score (failed, diverged) copies a scored top member even outside the
/// bottom quantile; with no score at all the population ends.
#[test]
fn members_without_a_score_always_exploit() {
    let p = pbt(8, 0.25);
    let first = p.first_generation().unwrap();
    let mut scores: Vec<Option<f64>> = (0..8).map(|m| Some(0.1 * m as f64)).collect();
    scores[1] = None;
    scores[5] = None;
    let next = p.next_generation(&first, &scores).unwrap().unwrap();
    let e = exploits(&next);
    let members: Vec<usize> = e.iter().map(|(m, _)| *m).collect();
    // Bottom two are 1 and 5 (no score); member 0 (score 0) is third from the end.
    assert_eq!(members, [1, 5], "{e:?}");
    assert!(e.iter().all(|(_, parent)| [7, 6].contains(parent)), "{e:?}");
    assert_eq!(
        p.next_generation(&first, &[None; 8]),
        Err(PbtError::NoScores { generation: 0 })
    );
}

/// Perturbations stay in range and on the grid; with resampling they are uniform draws.
#[test]
fn explored_values_stay_within_bounds() {
    let mut r = rule(2, 0.5);
    r.mutations.push(Axis {
        name: "augment.pad_crop".into(),
        values: Values::Int {
            min: 0,
            max: 4,
            log: false,
            step: None,
        },
        when: None,
    });
    for resample in [0.0, 0.5, 1.0] {
        r.resample_probability = resample;
        r.perturbation_factors = vec![0.5, 3.0];
        let p = Pbt::new(r.clone()).unwrap();
        let mut rng = generator(1, 0);
        let mut point: Point = vec![Some(0.1), Some(2.0), Some(4.0)];
        for _ in 0..2000 {
            let next = p.explore(&point, &mut rng);
            let (lr, wd, pad) = (next[0].unwrap(), next[1].unwrap(), next[2].unwrap());
            assert!((1e-3..=0.1).contains(&lr), "{lr}");
            assert!([0.0, 1.0, 2.0].contains(&wd), "{wd}");
            assert!((0.0..=4.0).contains(&pad) && pad.fract() == 0.0, "{pad}");
            if resample == 0.0 {
                assert!((wd - point[1].unwrap()).abs() <= 1.0);
            }
            p.spec(&next).unwrap();
            point = next;
        }
    }
}

/// The same seed and scores give the same history; another seed another one.
#[test]
fn the_history_is_a_function_of_the_seed_and_the_scores() {
    let history = |seed: u64| {
        let mut r = rule(6, 0.25);
        r.seed = seed;
        r.resample_probability = 0.25;
        let p = Pbt::new(r).unwrap();
        let mut g = p.first_generation().unwrap();
        let mut all = g.clone();
        while let Some(next) = p
            .next_generation(&g, &g.iter().map(|s| s.point[0]).collect::<Vec<_>>())
            .unwrap()
        {
            all.extend(next.iter().cloned());
            g = next;
        }
        all
    };
    assert_eq!(history(3), history(3));
    assert_eq!(history(3).len(), 18);
    assert_ne!(history(3), history(4));
}

#[test]
fn a_members_trial_sets_nested_fields() {
    let mut r = rule(2, 0.5);
    r.mutations = vec![range("augment.shift", 0.0, 0.2, false)];
    let p = Pbt::new(r).unwrap();
    let spec = p.spec(&vec![Some(0.15)]).unwrap();
    assert_eq!((spec.augment.shift, spec.epochs), (0.15, 6));
    assert_eq!(
        p.value(&vec![Some(0.15)], 0),
        Some(toml::Value::Float(0.15))
    );
}

#[test]
fn rules_that_cannot_work_are_refused() {
    let refused = |edit: &dyn Fn(&mut PbtRule), needle: &str| {
        let mut r = rule(4, 0.25);
        edit(&mut r);
        match Pbt::new(r) {
            Err(PbtError::Rule { message: m, .. }) => assert!(m.contains(needle), "{needle}: {m}"),
            other => panic!("{needle}: {other:?}"),
        }
    };
    refused(&|r| r.population = 1, "`population` = 1");
    refused(&|r| r.quantile = 0.0, "`quantile` = 0");
    refused(&|r| r.quantile = 0.6, "(0, 0.5]");
    refused(&|r| r.interval_epochs = 6, "below `epochs` (6)");
    refused(&|r| r.interval_epochs = 0, "at least 1");
    refused(&|r| r.resample_probability = 1.5, "[0, 1]");
    refused(&|r| r.perturbation_factors = vec![], "positive");
    refused(&|r| r.mutations.clear(), "names no field");
    refused(
        &|r| r.mutations.push(list("model", &[1.0])),
        "`model` cannot change mid-training: it fixes the shapes",
    );
}

/// Segment trials: generation 0 stops after its interval; a continuation keeps its lineage's
/// trial with the next stop; an exploit adds a change to the explored values at its first
/// epoch on top of its parent's trial; the last generation has no stop.
#[test]
fn segment_trials_carry_their_lineage() {
    let p = pbt(4, 0.25);
    let first = p.first_generation().unwrap();
    let trials: Vec<TrialSpec> = first
        .iter()
        .map(|s| p.segment_trial(s, None).unwrap())
        .collect();
    assert!(trials
        .iter()
        .all(|t| t.stop_after == Some(2) && t.changes.is_empty()));
    let next = p
        .next_generation(&first, &[Some(0.3), Some(0.9), Some(0.5), Some(0.6)])
        .unwrap()
        .unwrap();
    let own = p.segment_trial(&next[2], Some(&trials[2])).unwrap();
    assert_eq!(
        own,
        TrialSpec {
            stop_after: Some(4),
            ..trials[2].clone()
        }
    );
    let exploit = p.segment_trial(&next[0], Some(&trials[1])).unwrap();
    assert_eq!(exploit.changes.len(), 1);
    let change = &exploit.changes[0];
    assert_eq!(change.epoch, 3);
    assert_eq!(change.lr, next[0].point[0]);
    assert_eq!(
        exploit.at_epoch(2).lr,
        trials[1].lr,
        "the parent's epochs 1-2"
    );
    assert_eq!(exploit.resume_key(2), trials[1].resume_key(2));
    let last = p.next_generation(&next, &[Some(0.5); 4]).unwrap().unwrap();
    let end = p.segment_trial(&last[0], Some(&exploit)).unwrap();
    assert_eq!((end.stop_after, end.last_epoch()), (None, 6));
    assert!(p.segment_trial(&next[0], None).is_err());
}
