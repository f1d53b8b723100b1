//! `search-bench`: the coordinator's TPE (`coordinator::sched::tpe`, drawn through the
//! generator `sched::search` gives each suggestion) on benchmark functions, for
//! bench/search.sh, which runs Optuna on the same functions and puts the two side by side.
//!
//!     search-bench quality --functions branin,hartmann6,mixed --budgets 60:4,100:8 --seeds 0-19
//!     search-bench latency --finished 100,1000,10000 --dims 8 --repeats 20
//!
//! Each prints one JSON object per line, in bench/search/optuna_side.py's schema.
//!
//! The pending protocol (the same in optuna_side.py): with budget B and P pending, ask until
//! P are pending, then finish the oldest, until B are finished. A pending trial is an
//! observation with `Outcome::Pending`, as the coordinator passes a queued or running trial
//! (`app::search::outcome`), and the model sees it by the coordinator's rule
//! (`sched::search::PENDING`, through `model_view`).

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use coordinator::sched::search::{generator, model_view, Pending, PENDING};
use coordinator::sched::tpe::{self, Condition, Dim, Kind, Observation, Outcome, Point};
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Our TPE on benchmark functions (bench/search.sh)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Final regret per (function, budget, seed).
    Quality {
        #[arg(long, default_value = "branin,hartmann6,mixed")]
        functions: String,
        /// BUDGET:PENDING pairs.
        #[arg(long, default_value = "60:4,100:8")]
        budgets: String,
        /// A range `A-B` or a list `1,2,3`.
        #[arg(long, default_value = "0-19")]
        seeds: String,
        /// Uniform suggestions before the model (the coordinator's default).
        #[arg(long, default_value_t = tpe::DEFAULT_STARTUP)]
        startup: usize,
        /// Also run the sampler with the other rule for pending trials ("ours-liar" or
        /// "ours-nolie"), to measure the choice (`sched::search::PENDING`).
        #[arg(long)]
        other_pending: bool,
    },
    /// A TPE sweep file driven through the coordinator's own `Searcher` against a table of
    /// measured results (a full grid's results.json over the same space): the best test
    /// accuracy found within the budget, per seed, beside random search with the same budget.
    Table {
        /// The TPE sweep file (search = "tpe", its [grid] lists the grid's values).
        #[arg(long)]
        sweep: std::path::PathBuf,
        /// results.json of the full grid.
        #[arg(long)]
        results: std::path::PathBuf,
        #[arg(long, default_value_t = 2)]
        pending: usize,
        #[arg(long, default_value = "0-19")]
        seeds: String,
    },
    /// Milliseconds per suggestion with N finished trials.
    Latency {
        #[arg(long, default_value = "100,1000,10000")]
        finished: String,
        #[arg(long, default_value_t = 8)]
        dims: usize,
        #[arg(long, default_value_t = 20)]
        repeats: usize,
    },
}

/// A benchmark function: its space, value at a point (noiseless), and known minimum.
struct Function {
    name: &'static str,
    space: Vec<Dim>,
    f: fn(&Point) -> f64,
    minimum: f64,
    /// Standard deviation of the observation noise.
    noise: f64,
}

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

fn v(p: &Point, i: usize) -> f64 {
    p[i].unwrap_or(0.0)
}

fn branin(p: &Point) -> f64 {
    let (x1, x2) = (v(p, 0), v(p, 1));
    let pi = std::f64::consts::PI;
    let (b, c) = (5.1 / (4.0 * pi * pi), 5.0 / pi);
    (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - 1.0 / (8.0 * pi)) * x1.cos() + 10.0
}

fn hartmann6(p: &Point) -> f64 {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [1312.0, 1696.0, 5569.0, 124.0, 8283.0, 5886.0],
        [2329.0, 4135.0, 8307.0, 3736.0, 1004.0, 9991.0],
        [2348.0, 1451.0, 3522.0, 2883.0, 3047.0, 6650.0],
        [4047.0, 8828.0, 8732.0, 5743.0, 1091.0, 381.0],
    ];
    -(0..4)
        .map(|i| {
            let s: f64 = (0..6)
                .map(|j| A[i][j] * (v(p, j) - P[i][j] * 1e-4).powi(2))
                .sum();
            ALPHA[i] * (-s).exp()
        })
        .sum::<f64>()
}

/// opt (sgd, adam, rmsprop), lr (log), width (integer, log), act (relu, tanh), momentum
/// (only with sgd): minimum 0 at sgd, lr 0.1, width 128, relu, momentum 0.9.
fn mixed(p: &Point) -> f64 {
    let opt = v(p, 0) as usize;
    let base = [0.0, 0.1, 0.3][opt];
    let c = [-1.0, -3.0, -2.5][opt];
    let mut f =
        base + 0.5 * (v(p, 1).log10() - c).powi(2) + 0.3 * ((v(p, 2).log2() - 7.0) / 2.0).powi(2);
    if v(p, 3) as usize == 1 {
        f += 0.2;
    }
    if opt == 0 {
        f += 2.0 * (v(p, 4) - 0.9).powi(2);
    }
    f
}

fn functions() -> Vec<Function> {
    let mut momentum = float("momentum", 0.0, 0.99, false);
    momentum.when = Some(Condition {
        parent: 0,
        values: vec![0],
    });
    vec![
        Function {
            name: "branin",
            space: vec![
                float("x1", -5.0, 10.0, false),
                float("x2", 0.0, 15.0, false),
            ],
            f: branin,
            minimum: 0.397887357729739,
            noise: 0.0,
        },
        Function {
            name: "hartmann6",
            space: (1..=6)
                .map(|i| float(&format!("x{i}"), 0.0, 1.0, false))
                .collect(),
            f: hartmann6,
            minimum: -3.32236801141551,
            noise: 0.0,
        },
        Function {
            name: "mixed",
            space: vec![
                Dim {
                    name: "opt".into(),
                    kind: Kind::Categorical { choices: 3 },
                    when: None,
                },
                float("lr", 1e-5, 1.0, true),
                Dim {
                    name: "width".into(),
                    kind: Kind::Int {
                        low: 16,
                        high: 512,
                        log: true,
                    },
                    when: None,
                },
                Dim {
                    name: "act".into(),
                    kind: Kind::Categorical { choices: 2 },
                    when: None,
                },
                momentum,
            ],
            f: mixed,
            minimum: 0.0,
            noise: 0.1,
        },
    ]
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// One run: the regret of the trial with the best observed value.
fn run(
    f: &Function,
    budget: usize,
    pending: usize,
    seed: u64,
    startup: usize,
    rule: Pending,
) -> Result<f64> {
    let mut noise = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(100_003));
    let mut observations: Vec<Observation> = Vec::new();
    let mut waiting: VecDeque<usize> = VecDeque::new();
    let mut told = 0;
    let mut best: Option<(f64, f64)> = None; // (observed, true)
    while told < budget {
        while waiting.len() < pending && observations.len() < budget {
            let position = observations.len();
            let seen = model_view(observations.clone(), rule);
            let point = tpe::suggest(&f.space, &seen, startup, &mut generator(seed, position))?;
            observations.push(Observation {
                point,
                outcome: Outcome::Pending,
            });
            waiting.push_back(position);
        }
        let i = waiting.pop_front().context("nothing pending")?;
        let truth = (f.f)(&observations[i].point);
        let seen = truth + f.noise * normal(&mut noise);
        observations[i].outcome = Outcome::Loss(seen);
        if best.is_none_or(|(b, _)| seen < b) {
            best = Some((seen, truth));
        }
        told += 1;
    }
    Ok(best.map_or(f64::NAN, |(_, t)| t - f.minimum))
}

fn seeds(text: &str) -> Result<Vec<u64>> {
    if let Some((a, b)) = text.split_once('-') {
        return Ok((a.trim().parse()?..=b.trim().parse()?).collect());
    }
    text.split(',').map(|s| Ok(s.trim().parse()?)).collect()
}

fn quality(
    functions_arg: &str,
    budgets: &str,
    seed_arg: &str,
    startup: usize,
    other_pending: bool,
) -> Result<()> {
    let other = match PENDING {
        Pending::LeftOut => ("ours-liar", Pending::Liar),
        Pending::Liar => ("ours-nolie", Pending::LeftOut),
    };
    let mut variants = vec![("ours", PENDING)];
    if other_pending {
        variants.push(other);
    }
    let all = functions();
    for name in functions_arg.split(',') {
        let Some(f) = all.iter().find(|f| f.name == name.trim()) else {
            bail!("unknown function `{name}` (branin, hartmann6, mixed)");
        };
        for pair in budgets.split(',') {
            let (b, p) = pair
                .split_once(':')
                .with_context(|| format!("budget `{pair}`: give BUDGET:PENDING"))?;
            let (budget, pending): (usize, usize) = (b.trim().parse()?, p.trim().parse()?);
            for seed in seeds(seed_arg)? {
                for (sampler, rule) in &variants {
                    let regret = run(f, budget, pending.max(1), seed, startup, *rule)?;
                    println!(
                        "{}",
                        serde_json::json!({"kind": "quality", "sampler": sampler, "function": f.name,
                            "budget": budget, "pending": pending, "seed": seed, "regret": regret})
                    );
                }
            }
        }
    }
    Ok(())
}

fn latency(finished: &str, dims: usize, repeats: usize) -> Result<()> {
    let space: Vec<Dim> = (0..dims)
        .map(|i| float(&format!("x{i}"), 0.0, 1.0, false))
        .collect();
    for n in finished.split(',') {
        let n: usize = n.trim().parse()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(n as u64);
        let mut observations: Vec<Observation> = (0..n)
            .map(|_| {
                let point: Point = (0..dims).map(|_| Some(rng.random::<f64>())).collect();
                let loss = point.iter().map(|x| x.unwrap_or(0.0).powi(2)).sum();
                Observation {
                    point,
                    outcome: Outcome::Loss(loss),
                }
            })
            .collect();
        let mut ms = Vec::new();
        for r in 0..repeats {
            let t = Instant::now();
            let point = tpe::suggest(
                &space,
                &observations,
                tpe::DEFAULT_STARTUP,
                &mut generator(1, n + r),
            )?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            let loss = point.iter().map(|x| x.unwrap_or(0.0).powi(2)).sum();
            observations.push(Observation {
                point,
                outcome: Outcome::Loss(loss),
            });
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        println!(
            "{}",
            serde_json::json!({"kind": "latency", "sampler": "ours", "finished": n, "dims": dims,
                "ms_per_suggest": at(0.5), "ms_p90": at(0.9)})
        );
    }
    Ok(())
}

/// The best accuracy TPE finds in the sweep's budget with `pending` trials out at a time,
/// each trial's accuracy read from `table` by id.
fn tpe_on_table(
    rule: &coordinator::sched::search::SearchRule,
    table: &std::collections::HashMap<String, f64>,
    pending: usize,
) -> Result<f64> {
    use coordinator::sched::search::{Next, Searcher};
    let mut s = Searcher::new(rule.clone()).map_err(anyhow::Error::msg)?;
    let mut told: std::collections::HashMap<String, f64> = Default::default();
    let mut waiting: VecDeque<String> = VecDeque::new();
    let mut best = f64::NEG_INFINITY;
    loop {
        while waiting.len() < pending.max(1) {
            let o = s.observations(|id| match told.get(id.as_str()) {
                Some(acc) => Outcome::Loss(-acc),
                None => Outcome::Pending,
            });
            match s.next(&o)? {
                Next::Suggest { id, spec, .. } => {
                    s.add_member(id.clone(), &spec);
                    waiting.push_back(id.to_string());
                }
                Next::Done | Next::Exhausted(_) | Next::Refused => break,
            }
        }
        let Some(id) = waiting.pop_front() else { break };
        let acc = *table
            .get(&id)
            .with_context(|| format!("trial {id} is not in the table: not the grid's space?"))?;
        told.insert(id, acc);
        best = best.max(acc);
    }
    Ok(best)
}

fn table(
    sweep: &std::path::Path,
    results: &std::path::Path,
    pending: usize,
    seed_arg: &str,
) -> Result<()> {
    let plan = coordinator::plan::load(sweep)?;
    let rule = plan.search.context("the sweep is not search = \"tpe\"")?;
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(results).context("reading results")?)?;
    let table: std::collections::HashMap<String, f64> = rows
        .iter()
        .filter_map(|r| Some((r["id"].as_str()?.to_string(), r["test_accuracy"].as_f64()?)))
        .collect();
    let grid_best = table.values().copied().fold(f64::NEG_INFINITY, f64::max);
    let ids: Vec<&String> = {
        let mut v: Vec<&String> = table.keys().collect();
        v.sort();
        v
    };
    for seed in seeds(seed_arg)? {
        let mut r = rule.clone();
        r.seed = seed;
        let tpe = tpe_on_table(&r, &table, pending)?;
        // Random search with the same budget: distinct trials drawn uniformly.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut pool = ids.clone();
        let mut random = f64::NEG_INFINITY;
        for _ in 0..rule.budget.min(pool.len()) {
            let i = rng.random_range(0..pool.len());
            random = random.max(table[pool.swap_remove(i)]);
        }
        println!(
            "{}",
            serde_json::json!({"kind": "table", "seed": seed, "budget": rule.budget,
                "grid_trials": table.len(), "grid_best": grid_best, "tpe_best": tpe,
                "random_best": random})
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Table {
            sweep,
            results,
            pending,
            seeds,
        } => table(&sweep, &results, pending, &seeds),
        Command::Quality {
            functions,
            budgets,
            seeds,
            startup,
            other_pending,
        } => quality(&functions, &budgets, &seeds, startup, other_pending),
        Command::Latency {
            finished,
            dims,
            repeats,
        } => latency(&finished, dims, repeats),
    }
}
