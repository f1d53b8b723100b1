//! Learning-rate schedules as plain functions of the (fractional) epoch.
//!
//! `epoch` counts from 0; the training loop calls [`lr_at`] before every step with
//! `epoch + step / steps_per_epoch`. Step and exponential schedules change only at epoch
//! boundaries, like Keras' `LearningRateScheduler`; cosine and one-cycle are smooth.

use std::f64::consts::PI;
use sweep_proto::{Schedule, TrialSpec};

/// One-cycle starts at lr / 25 and ends at lr / 1e4 (PyTorch `OneCycleLR`'s defaults).
const ONE_CYCLE_START_DIV: f64 = 25.0;
const ONE_CYCLE_END_DIV: f64 = 1e4;

/// The study's schedule, exactly: `lr0` for the first 10 epochs, then `lr0 * exp(0.1 * (10 - e))`.
pub fn study_exp_decay(lr0: f64, epoch: u32) -> f64 {
    if epoch < 10 {
        lr0
    } else {
        lr0 * (0.1 * (10.0 - epoch as f64)).exp()
    }
}

fn cosine(from: f64, to: f64, progress: f64) -> f64 {
    to + (from - to) * 0.5 * (1.0 + (PI * progress.clamp(0.0, 1.0)).cos())
}

pub fn lr_at(spec: &TrialSpec, epoch: f64) -> f64 {
    let lr = spec.lr;
    let total = spec.epochs as f64;
    let warm = spec.warmup_epochs;
    match spec.schedule {
        Schedule::Constant => lr,
        Schedule::Step => {
            let passed = spec
                .step_epochs
                .iter()
                .filter(|&&m| epoch.floor() >= m as f64)
                .count();
            lr * spec.step_gamma.powi(passed as i32)
        }
        Schedule::ExpDecay => study_exp_decay(lr, epoch.floor() as u32),
        Schedule::Cosine => {
            if epoch < warm {
                lr * epoch / warm
            } else {
                cosine(
                    lr,
                    0.0,
                    (epoch - warm) / (total - warm).max(f64::MIN_POSITIVE),
                )
            }
        }
        Schedule::OneCycle => {
            let start = lr / ONE_CYCLE_START_DIV;
            if epoch < warm {
                start + (lr - start) * epoch / warm
            } else {
                cosine(
                    lr,
                    lr / ONE_CYCLE_END_DIV,
                    (epoch - warm) / (total - warm).max(f64::MIN_POSITIVE),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(schedule: Schedule) -> TrialSpec {
        TrialSpec {
            schedule,
            lr: 0.1,
            epochs: 100,
            ..TrialSpec::default()
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1e-30)
    }

    #[test]
    fn study_formula_at_several_epochs() {
        // Values of 0.0005 * exp(0.1 * (10 - e)) computed independently.
        let table = [
            (0, 0.0005),
            (9, 0.0005),
            (10, 0.0005),
            (11, 0.000452418709),
            (20, 0.000183939721),
            (50, 0.00000915781944),
            (79, 0.000000503892715),
        ];
        for (e, want) in table {
            let got = study_exp_decay(0.0005, e);
            assert!((got - want).abs() < 1e-12, "epoch {e}: {got} vs {want}");
            let s = TrialSpec {
                schedule: Schedule::ExpDecay,
                lr: 0.0005,
                epochs: 100,
                ..TrialSpec::default()
            };
            assert!(
                close(lr_at(&s, e as f64 + 0.5), got),
                "mid-epoch {e} keeps the epoch's rate"
            );
        }
    }

    #[test]
    fn step_schedule() {
        let s = TrialSpec {
            step_epochs: vec![50, 75],
            ..spec(Schedule::Step)
        };
        assert!(close(lr_at(&s, 0.0), 0.1));
        assert!(close(lr_at(&s, 49.99), 0.1));
        assert!(close(lr_at(&s, 50.0), 0.01));
        assert!(close(lr_at(&s, 80.0), 0.001));
    }

    #[test]
    fn cosine_and_one_cycle_shapes() {
        let c = spec(Schedule::Cosine);
        assert!(close(lr_at(&c, 0.0), 0.1));
        assert!(close(lr_at(&c, 50.0), 0.05));
        assert!(lr_at(&c, 100.0).abs() < 1e-15);
        let w = TrialSpec {
            warmup_epochs: 5.0,
            ..c
        };
        assert!(close(lr_at(&w, 2.5), 0.05));
        assert!(close(lr_at(&w, 5.0), 0.1));

        let o = TrialSpec {
            warmup_epochs: 30.0,
            ..spec(Schedule::OneCycle)
        };
        assert!(close(lr_at(&o, 0.0), 0.004));
        assert!(close(lr_at(&o, 30.0), 0.1));
        assert!(close(lr_at(&o, 100.0), 1e-5));
        let peak = (0..1000)
            .map(|i| lr_at(&o, i as f64 / 10.0))
            .fold(0.0, f64::max);
        assert!(close(peak, 0.1));
        assert!(close(lr_at(&spec(Schedule::Constant), 77.7), 0.1));
    }
}
