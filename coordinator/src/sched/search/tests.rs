use super::*;

fn list(name: &str, values: &[&str]) -> Axis {
    Axis {
        name: name.into(),
        values: Values::List {
            values: values
                .iter()
                .map(|v| toml::Value::String(v.to_string()))
                .collect(),
        },
        when: None,
    }
}

pub(crate) fn float(name: &str, min: f64, max: f64, log: bool) -> Axis {
    Axis {
        name: name.into(),
        values: Values::Float {
            min,
            max,
            log,
            step: None,
        },
        when: None,
    }
}

fn when(mut a: Axis, parent: &str, values: &[&str]) -> Axis {
    a.when = Some(When {
        axis: parent.into(),
        values: values
            .iter()
            .map(|v| toml::Value::String(v.to_string()))
            .collect(),
    });
    a
}

/// The space of the example: optimiser, log-scale learning rate, an integer batch
/// size, and momentum only for SGD.
fn rule(budget: usize) -> SearchRule {
    let mut base = toml::Table::new();
    base.insert("epochs".into(), toml::Value::Integer(2));
    base.insert("momentum".into(), toml::Value::Float(0.0));
    SearchRule {
        budget,
        startup: 3,
        seed: 7,
        axes: vec![
            list("optimizer", &["sgd", "adam"]),
            float("lr", 1e-4, 1.0, true),
            Axis {
                name: "batch_size".into(),
                values: Values::Int {
                    min: 16,
                    max: 256,
                    log: true,
                    step: None,
                },
                when: None,
            },
            when(float("momentum", 0.5, 0.99, false), "optimizer", &["sgd"]),
        ],
        base,
    }
}

fn loss(spec: &TrialSpec) -> f64 {
    (spec.lr.log10() + 1.0).powi(2)
        + if spec.momentum > 0.0 {
            (spec.momentum - 0.9).powi(2)
        } else {
            0.5
        }
}

/// A point becomes a trial and the trial maps back to the same point; an inactive axis keeps
/// the base's value and has no coordinate.
#[test]
fn points_and_trials_map_both_ways() {
    let s = Searcher::new(rule(10)).unwrap();
    let sgd: Point = vec![Some(0.0), Some(0.01), Some(64.0), Some(0.9)];
    let spec = s.spec(&sgd).unwrap();
    assert_eq!(
        (spec.lr, spec.batch_size, spec.momentum, spec.epochs),
        (0.01, 64, 0.9, 2)
    );
    assert_eq!(s.point(&spec), Some(sgd));
    let adam: Point = vec![Some(1.0), Some(0.001), Some(32.0), None];
    let spec = s.spec(&adam).unwrap();
    assert_eq!(spec.momentum, 0.0);
    assert_eq!(s.point(&spec), Some(adam));
    // Another base (epochs), a value outside a range, an inactive axis off its default: none
    // of these is in the space.
    let mut other = spec.clone();
    other.epochs = 3;
    assert_eq!(s.point(&other), None);
    let mut outside = spec.clone();
    outside.lr = 2.0;
    assert_eq!(s.point(&outside), None);
    let mut stray = spec;
    stray.momentum = 0.7;
    assert_eq!(s.point(&stray), None);
}

/// The n-th suggestion depends on the seed, n and the observations only.
#[test]
fn suggestions_are_deterministic_by_seed_and_position() {
    let run = |seed: u64| {
        let mut r = rule(12);
        r.seed = seed;
        let mut s = Searcher::new(r).unwrap();
        let mut specs: Vec<(TrialId, TrialSpec)> = Vec::new();
        for _ in 0..12 {
            let o = s.observations(|id| {
                let spec = &specs.iter().find(|(i, _)| i == id).unwrap().1;
                Outcome::Loss(loss(spec))
            });
            match s.next(&o).unwrap() {
                Next::Suggest { id, spec, .. } => {
                    s.add_member(id.clone(), &spec);
                    specs.push((id, spec));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(s.next(&[]).unwrap(), Next::Done);
        assert_eq!(s.left(), 0);
        specs.into_iter().map(|(id, _)| id).collect::<Vec<_>>()
    };
    let a = run(7);
    assert_eq!(a, run(7));
    assert_ne!(a, run(8));
    let distinct: HashSet<&TrialId> = a.iter().collect();
    assert_eq!(distinct.len(), a.len());
}

/// A discrete space with fewer points than the budget: repeats are drawn again, and once
/// every point is a member the search says it is exhausted rather than repeat one.
#[test]
fn a_small_space_is_exhausted_not_repeated() {
    let mut r = rule(5);
    r.axes = vec![list("optimizer", &["sgd", "adam"])];
    let mut s = Searcher::new(r).unwrap();
    for _ in 0..2 {
        let o = s.observations(|_| Outcome::Pending);
        let Next::Suggest { id, spec, .. } = s.next(&o).unwrap() else {
            panic!("expected a suggestion")
        };
        s.add_member(id, &spec);
    }
    let o = s.observations(|_| Outcome::Loss(1.0));
    match s.next(&o).unwrap() {
        Next::Exhausted(why) => assert!(why.contains("after 2 of 5"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// Prior trials (an earlier sweep's, in the same space) come first and are never suggested
/// again; trials from another space are not taken.
#[test]
fn prior_trials_come_first_and_are_not_suggested_again() {
    let mut r = rule(2);
    r.axes = vec![list("optimizer", &["sgd", "adam", "adamw"])];
    let mut s = Searcher::new(r).unwrap();
    let sgd = s.spec(&vec![Some(0.0)]).unwrap();
    assert!(s.add_prior(TrialId::of(&sgd), &sgd));
    assert!(!s.add_prior(TrialId::of(&sgd), &sgd));
    let mut elsewhere = sgd.clone();
    elsewhere.epochs = 9;
    assert!(!s.add_prior(TrialId::of(&elsewhere), &elsewhere));
    let o = s.observations(|_| Outcome::Loss(0.5));
    assert_eq!(o.len(), 1);
    for _ in 0..2 {
        let o = s.observations(|_| Outcome::Loss(0.5));
        let Next::Suggest { id, spec, .. } = s.next(&o).unwrap() else {
            panic!("expected a suggestion")
        };
        assert_ne!(spec.optimizer, sgd.optimizer);
        s.add_member(id, &spec);
    }
    assert_eq!(s.next(&[]).unwrap(), Next::Done);
}

/// A condition must name an earlier list axis and one of its values.
#[test]
fn conditions_name_an_earlier_list_axis_and_its_values() {
    let mut r = rule(3);
    r.axes[3] = when(float("momentum", 0.5, 0.99, false), "schedule", &["sgd"]);
    assert!(Searcher::new(r)
        .unwrap_err()
        .contains("not an earlier axis"));
    let mut r = rule(3);
    r.axes[3] = when(float("momentum", 0.5, 0.99, false), "optimizer", &["adamw"]);
    assert!(Searcher::new(r)
        .unwrap_err()
        .contains("not one of `optimizer`'s values"));
    let mut r = rule(3);
    r.axes[3] = when(float("momentum", 0.5, 0.99, false), "lr", &["sgd"]);
    assert!(Searcher::new(r).unwrap_err().contains("must be a list"));
}

/// A member taken back (its write failed) frees its place: the same suggestion comes again.
#[test]
fn a_removed_member_is_suggested_again() {
    let mut s = Searcher::new(rule(4)).unwrap();
    let Next::Suggest { id, spec, .. } = s.next(&[]).unwrap() else {
        panic!()
    };
    s.add_member(id.clone(), &spec);
    s.remove_member(&id);
    assert_eq!(s.member_count(), 0);
    let Next::Suggest { id: again, .. } = s.next(&[]).unwrap() else {
        panic!()
    };
    assert_eq!(again, id);
}

/// BOHB models at the largest budget with enough values: the full length once enough trials
/// finished, a rung before that, none at first.
#[test]
fn bohb_models_at_the_largest_budget_with_enough_values() {
    let counts = |full: usize, rung3: usize, rung1: usize| {
        move |e: u32| match e {
            9 => full,
            3 => rung3,
            1 => rung1,
            _ => 0,
        }
    };
    assert_eq!(model_budget(&[1, 3, 9], counts(10, 12, 30), 10), Some(9));
    assert_eq!(model_budget(&[9, 1, 3], counts(4, 12, 30), 10), Some(3));
    assert_eq!(model_budget(&[1, 3, 9], counts(4, 6, 10), 10), Some(1));
    assert_eq!(model_budget(&[1, 3, 9], counts(4, 6, 9), 10), None);
}

/// Pending members are left out of the model (`PENDING`), finished ones are in it, in order.
#[test]
fn pending_members_are_left_out_of_the_model() {
    let mut s = Searcher::new(rule(10)).unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let Next::Suggest { id, spec, .. } = s.next(&[]).unwrap() else {
            panic!()
        };
        s.add_member(id.clone(), &spec);
        ids.push(id);
    }
    let o = s.observations(|id| {
        if *id == ids[1] {
            Outcome::Pending
        } else {
            Outcome::Loss(1.0)
        }
    });
    assert_eq!(PENDING, Pending::LeftOut);
    assert_eq!(o.len(), 2);
    let liar = model_view(
        vec![Observation {
            point: vec![Some(0.0)],
            outcome: Outcome::Pending,
        }],
        Pending::Liar,
    );
    assert_eq!(liar.len(), 1);
}

/// Fields a trial's TOML leaves out at their default (`channels_last`, `label_smoothing`,
/// `train_images`) are axes like any other, and a trial that differs from the base only in
/// one of them is not in the space.
#[test]
fn fields_left_out_at_their_default_still_map_both_ways() {
    let mut r = rule(10);
    r.axes = vec![
        Axis {
            name: "channels_last".into(),
            values: Values::List {
                values: vec![toml::Value::Boolean(true), toml::Value::Boolean(false)],
            },
            when: None,
        },
        Axis {
            name: "label_smoothing".into(),
            values: Values::Float {
                min: 0.0,
                max: 0.2,
                log: false,
                step: Some(0.05),
            },
            when: None,
        },
    ];
    let s = Searcher::new(r).unwrap();
    for point in [vec![Some(1.0), Some(0.0)], vec![Some(0.0), Some(0.2)]] {
        let spec = s.spec(&point).unwrap();
        assert_eq!(s.point(&spec), Some(point));
    }
    let mut other = s.spec(&vec![Some(1.0), Some(0.0)]).unwrap();
    other.train_images = Some(400);
    assert_eq!(s.point(&other), None, "train_images is not in the base");
}
