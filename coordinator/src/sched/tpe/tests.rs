use super::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn float(name: &str, low: f64, high: f64, log: bool) -> Dim {
    Dim {
        name: name.into(),
        kind: Kind::Float {
            low,
            high,
            log,
            step: None,
        },
        when: None,
    }
}

fn obs(values: &[f64], outcome: Outcome) -> Observation {
    Observation {
        point: values.iter().map(|v| Some(*v)).collect(),
        outcome,
    }
}

/// Optuna's defaults: gamma(n) = min(ceil(n / 10), 25); weights 1 for the newest 25 and a
/// ramp from 1/n for older ones.
#[test]
fn gamma_and_weights_are_optunas_defaults() {
    assert_eq!(
        [0, 1, 10, 11, 100, 250, 251, 10_000].map(gamma),
        [0, 1, 1, 2, 10, 25, 25, 25]
    );
    assert_eq!(weights(3), vec![1.0; 3]);
    let w = weights(30);
    assert_eq!(w.len(), 30);
    assert!((w[0] - 1.0 / 30.0).abs() < 1e-12 && (w[4] - 1.0).abs() < 1e-12);
    assert!(w[..5].windows(2).all(|p| p[0] < p[1]) && w[5..].iter().all(|&x| x == 1.0));
}

/// The good side holds the gamma(n) lowest finite losses, in trial order; diverged, NaN and
/// pending trials are always bad; failed ones are left out.
#[test]
fn the_split_keeps_the_best_and_sends_the_rest_to_the_bad_side() {
    let mut o: Vec<Observation> = (0..20)
        .map(|i| obs(&[i as f64 / 20.0], Outcome::Loss(((i * 7) % 20) as f64)))
        .collect();
    o.push(obs(&[0.99], Outcome::Diverged));
    o.push(obs(&[0.98], Outcome::Loss(f64::NAN)));
    o.push(obs(&[0.97], Outcome::Pending));
    o.push(obs(&[0.96], Outcome::Failed));
    let (good, bad) = split(&[0], &o);
    let values = |side: &[usize]| -> Vec<Vec<f64>> {
        side.iter().map(|&n| vec![o[n].point[0].unwrap()]).collect()
    };
    let (good, bad) = (values(&good), values(&bad));
    // 22 finished (the NaN counts as diverged): gamma = 3; losses 0, 1, 2 are trials 0, 3, 6.
    assert_eq!(good, vec![vec![0.0], vec![0.15], vec![0.3]]);
    assert_eq!(bad.len(), 20);
    assert!(bad.contains(&vec![0.99]) && bad.contains(&vec![0.98]) && bad.contains(&vec![0.97]));
    assert!(!bad.contains(&vec![0.96]));
}

/// Each kernel is a density over its range: a continuous one integrates to 1, a stepped
/// one's grid masses and a categorical one's probabilities sum to 1.
#[test]
fn densities_integrate_to_one() {
    let kinds = [
        Kind::Float {
            low: 0.0,
            high: 2.0,
            log: false,
            step: None,
        },
        Kind::Float {
            low: 1e-4,
            high: 1.0,
            log: true,
            step: None,
        },
        Kind::Int {
            low: 1,
            high: 9,
            log: false,
        },
        Kind::Categorical { choices: 3 },
    ];
    let data = [vec![0.3, 0.01, 4.0, 1.0], vec![1.9, 0.5, 9.0, 2.0]];
    for (j, kind) in kinds.iter().enumerate() {
        let p = Parzen::new(&[kind], vec![data.iter().map(|o| o[j]).collect()]);
        let total = match kind {
            Kind::Float { .. } => {
                // Midpoint rule in the kernel's own units (log x for a log range: densities
                // of both sides are compared in the same units, so no Jacobian).
                let s = kind.scale();
                let n = 20_000;
                let h = s.width() / n as f64;
                (0..n)
                    .map(|i| {
                        let x = s.external(s.low + (i as f64 + 0.5) * h);
                        p.log_pdf(&[x]).exp() * h
                    })
                    .sum::<f64>()
            }
            Kind::Int { low, high, .. } => {
                (*low..=*high).map(|v| p.log_pdf(&[v as f64]).exp()).sum()
            }
            Kind::Categorical { choices } => {
                (0..*choices).map(|c| p.log_pdf(&[c as f64]).exp()).sum()
            }
        };
        assert!((total - 1.0).abs() < 1e-3, "{kind:?}: {total}");
    }
}

/// The quantile function inverts the CDF.
#[test]
fn the_normal_quantile_inverts_the_cdf() {
    for p in [1e-12, 1e-6, 0.01, 0.2, 0.5, 0.9, 0.999_999] {
        let x = phi_inv(p);
        assert!((phi(x) - p).abs() < 1e-6 * p.max(1e-6), "{p}: {x}");
    }
}

/// Before `startup` usable observations, suggestions are uniform; after, on a 1-D bowl whose
/// good points lie near 0.2, TPE suggests near them far more often than random would.
#[test]
fn the_model_moves_towards_the_good_region() {
    let space = [float("x", 0.0, 1.0, false)];
    let bowl = |x: f64| (x - 0.2).powi(2);
    let mut near = 0;
    for seed in 0..20 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let o: Vec<Observation> = (0..30)
            .map(|i| {
                let x = (i as f64 * 0.618_034).fract();
                obs(&[x], Outcome::Loss(bowl(x)))
            })
            .collect();
        let x = suggest(&space, &o, DEFAULT_STARTUP, &mut rng).unwrap()[0].unwrap();
        assert!((0.0..=1.0).contains(&x));
        if (x - 0.2).abs() < 0.1 {
            near += 1;
        }
    }
    // Random search lands within 0.1 of 0.2 a fifth of the time.
    assert!(near >= 16, "{near} of 20 near the optimum");
}

/// Pending points are bad (the constant liar): with eight workers already trying the best
/// region, the next suggestion goes elsewhere more often than without them.
#[test]
fn pending_trials_push_suggestions_apart() {
    let space = [float("x", 0.0, 1.0, false)];
    let base: Vec<Observation> = (0..20)
        .map(|i| {
            let x = (i as f64 * 0.618_034).fract();
            obs(&[x], Outcome::Loss((x - 0.2).abs()))
        })
        .collect();
    let mut with_liars = base.clone();
    for _ in 0..8 {
        with_liars.push(obs(&[0.2], Outcome::Pending));
    }
    let distance = |o: &[Observation]| -> f64 {
        (0..20)
            .map(|seed| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                (suggest(&space, o, DEFAULT_STARTUP, &mut rng).unwrap()[0].unwrap() - 0.2).abs()
            })
            .sum::<f64>()
    };
    assert!(distance(&with_liars) > distance(&base) * 1.5);
}

/// A conditional dimension is suggested exactly when its parent activates it.
#[test]
fn conditional_dimensions_follow_their_parent() {
    let space = [
        Dim {
            name: "optimizer".into(),
            kind: Kind::Categorical { choices: 2 },
            when: None,
        },
        Dim {
            when: Some(Condition {
                parent: 0,
                values: vec![0],
            }),
            ..float("momentum", 0.5, 0.99, false)
        },
        float("lr", 1e-4, 1.0, true),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut o = Vec::new();
    for i in 0..40 {
        let p = suggest(&space, &o, DEFAULT_STARTUP, &mut rng).unwrap();
        assert_eq!(p[1].is_some(), p[0] == Some(0.0), "{p:?}");
        assert!(p[2].is_some());
        o.push(Observation {
            point: p,
            outcome: Outcome::Loss(i as f64 % 7.0),
        });
    }
}

/// The same observations and seed give the same suggestion.
#[test]
fn suggestions_are_deterministic() {
    let space = [float("x", 0.0, 1.0, false), float("lr", 1e-5, 1.0, true)];
    let o: Vec<Observation> = (0..15)
        .map(|i| {
            obs(
                &[i as f64 / 15.0, 10f64.powf(-(i % 5) as f64)],
                Outcome::Loss(i as f64),
            )
        })
        .collect();
    let run = || {
        suggest(
            &space,
            &o,
            DEFAULT_STARTUP,
            &mut ChaCha8Rng::seed_from_u64(3),
        )
        .unwrap()
    };
    assert_eq!(run(), run());
}

/// NaN, infinite and out-of-range parameter values are refused naming the dimension; they
/// never reach a density.
#[test]
fn values_that_are_not_numbers_are_refused() {
    let space = [float("x", 0.0, 1.0, false)];
    for v in [f64::NAN, f64::INFINITY, 1.5] {
        let e = suggest(
            &space,
            &[obs(&[v], Outcome::Loss(1.0))],
            0,
            &mut ChaCha8Rng::seed_from_u64(0),
        )
        .unwrap_err();
        assert!(
            matches!(&e, TpeError::BadValue { dim, .. } if dim == "x"),
            "{e}"
        );
    }
}

/// Optuna 5.0's widths: the larger neighbour gap, the outermost two their inner gap, clipped
/// to [range / min(100, n + 2), range]. Hand-computed on [0, 10] with kernels at 1, 2, 6, 9.5.
#[test]
fn kernel_widths_follow_the_neighbour_rule() {
    let w = neighbour_widths(&[6.0, 1.0, 9.5, 2.0], 0.0, 10.0);
    // Sorted 1, 2, 6, 9.5: 1 -> inner gap 1; 2 -> max(1, 4) = 4; 6 -> max(4, 3.5) = 4;
    // 9.5 -> inner gap 3.5. Minimum width 10 / 6.
    let min = 10.0 / 6.0;
    assert_eq!(w, vec![4.0, min, 3.5, 4.0]);
    // One kernel: the larger gap to the range's ends.
    assert_eq!(neighbour_widths(&[2.0], 0.0, 10.0), vec![8.0]);
    // Never wider than the range, never narrower than range / 100.
    let many: Vec<f64> = (0..500).map(|i| i as f64 / 1000.0).collect();
    assert!(neighbour_widths(&many, 0.0, 1.0)
        .iter()
        .all(|&s| (s - 0.01).abs() < 1e-12));
}
