//! The statistics the report uses, written out so each can be checked against a closed form:
//! mean and sample standard deviation, Student's t distribution (CDF and quantile, through the
//! regularised incomplete beta function), the 95% confidence interval of a mean, Welch's
//! unequal-variance t-test, and the binomial sampling error of an accuracy.

/// Two-sided significance level of every test and interval in the report.
pub const ALPHA: f64 = 0.05;

pub fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Sample standard deviation (n - 1 in the denominator); `None` below two values.
pub fn sd(xs: &[f64]) -> Option<f64> {
    let m = mean(xs)?;
    (xs.len() >= 2).then(|| {
        let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
        (ss / (xs.len() - 1) as f64).sqrt()
    })
}

/// ln Gamma(x) for x > 0: Stirling's series from x + 8 on, shifted down by the recurrence
/// Gamma(x + 1) = x Gamma(x). Absolute error below 1e-13 for the arguments used here.
fn ln_gamma(x: f64) -> f64 {
    let mut shift = 0.0;
    let mut z = x;
    while z < 8.0 {
        shift -= z.ln();
        z += 1.0;
    }
    let inv = 1.0 / z;
    let inv2 = inv * inv;
    let series = inv
        * (1.0 / 12.0
            - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0 - inv2 * (1.0 / 1680.0 - inv2 / 1188.0))));
    shift + (z - 0.5) * z.ln() - z + 0.5 * (2.0 * std::f64::consts::PI).ln() + series
}

/// The regularised incomplete beta function I_x(a, b), by its continued fraction (Abramowitz
/// and Stegun 26.5.8) evaluated with Lentz's method, on the side of x where it converges fast.
pub fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - incomplete_beta(1.0 - x, b, a);
    }
    let ln_front = a * x.ln() + b * (1.0 - x).ln() - (ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b));
    const TINY: f64 = 1e-300;
    let (mut c, mut d) = (1.0, 1.0 - (a + b) * x / (a + 1.0));
    d = 1.0 / if d.abs() < TINY { TINY } else { d };
    let mut f = d;
    for m in 1..500 {
        let m = m as f64;
        // Even term, then odd term, of the fraction.
        for coef in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + coef * d;
            d = 1.0 / if d.abs() < TINY { TINY } else { d };
            c = 1.0 + coef / c;
            c = if c.abs() < TINY { TINY } else { c };
            f *= c * d;
            if (c * d - 1.0).abs() < 1e-15 {
                return (ln_front.exp() * f / a).clamp(0.0, 1.0);
            }
        }
    }
    (ln_front.exp() * f / a).clamp(0.0, 1.0)
}

/// P(T <= t) for Student's t with `df` degrees of freedom (df > 0, not necessarily whole).
pub fn t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * incomplete_beta(df / (df + t * t), df / 2.0, 0.5);
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The t with P(T <= t) = p, for p in (0.5, 1), by bisection on the CDF.
pub fn t_quantile(p: f64, df: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, 1e7);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The 95% confidence interval of the mean of `xs` (t with n - 1 degrees of freedom);
/// `None` below two values.
pub fn mean_ci(xs: &[f64]) -> Option<(f64, f64)> {
    let (m, s) = (mean(xs)?, sd(xs)?);
    let half = t_quantile(1.0 - ALPHA / 2.0, (xs.len() - 1) as f64) * s / (xs.len() as f64).sqrt();
    Some((m - half, m + half))
}

/// Welch's t-test of equal means: (t, degrees of freedom, two-sided p). `None` unless both
/// samples have two or more values; p = 1 when both have no spread and equal means.
pub fn welch(a: &[f64], b: &[f64]) -> Option<(f64, f64, f64)> {
    let (ma, mb, sa, sb) = (mean(a)?, mean(b)?, sd(a)?, sd(b)?);
    let (va, vb) = (sa * sa / a.len() as f64, sb * sb / b.len() as f64);
    let se2 = va + vb;
    if se2 == 0.0 {
        let p = if ma == mb { 1.0 } else { 0.0 };
        return Some((0.0, (a.len() + b.len() - 2) as f64, p));
    }
    let t = (ma - mb) / se2.sqrt();
    let df = se2 * se2 / (va * va / (a.len() - 1) as f64 + vb * vb / (b.len() - 1) as f64);
    let p = 2.0 * (1.0 - t_cdf(t.abs(), df));
    Some((t, df, p.clamp(0.0, 1.0)))
}

/// The binomial standard error of an accuracy `p` measured on `n` images: sqrt(p(1-p)/n).
pub fn sampling_se(p: f64, n: u64) -> Option<f64> {
    (n > 0 && (0.0..=1.0).contains(&p)).then(|| (p * (1.0 - p) / n as f64).sqrt())
}

/// The normal 97.5% quantile, for sampling-error intervals.
pub const Z975: f64 = 1.959_963_984_540_054;

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn ln_gamma_matches_factorials_and_half_integers() {
        for n in 1..20u32 {
            let fact: f64 = (1..n).map(f64::from).product();
            assert!(close(ln_gamma(n as f64), fact.ln(), 1e-10), "Gamma({n})");
        }
        // Gamma(1/2) = sqrt(pi).
        assert!(close(
            ln_gamma(0.5),
            std::f64::consts::PI.sqrt().ln(),
            1e-12
        ));
    }

    /// Closed forms: df = 1 is the Cauchy distribution, df = 2 has
    /// F(t) = 1/2 + t / (2 sqrt(2 + t^2)).
    #[test]
    fn t_cdf_matches_closed_forms() {
        for t in [-7.0, -1.0, -0.3, 0.0, 0.5, 1.0, 2.5, 40.0] {
            let cauchy = 0.5 + f64::atan(t) / std::f64::consts::PI;
            assert!(close(t_cdf(t, 1.0), cauchy, 1e-12), "df 1, t {t}");
            let two = 0.5 + t / (2.0 * (2.0 + t * t).sqrt());
            assert!(close(t_cdf(t, 2.0), two, 1e-12), "df 2, t {t}");
        }
    }

    /// Table values of the 97.5% quantile, and the normal's for large df.
    #[test]
    fn t_quantiles_match_tables() {
        for (df, q) in [
            (1.0, 12.706_204_736),
            (2.0, 4.302_652_730),
            (4.0, 2.776_445_105),
            (9.0, 2.262_157_163),
            (30.0, 2.042_272_456),
        ] {
            assert!(close(t_quantile(0.975, df), q, 1e-6), "df {df}");
        }
        assert!(close(t_quantile(0.975, 1e7), Z975, 1e-5));
    }

    #[test]
    fn mean_sd_and_interval() {
        let xs = [0.30, 0.32, 0.34];
        assert!(close(mean(&xs).unwrap(), 0.32, 1e-15));
        assert!(close(sd(&xs).unwrap(), 0.02, 1e-15));
        let (lo, hi) = mean_ci(&xs).unwrap();
        let half = 4.302_652_730 * 0.02 / 3f64.sqrt();
        assert!(close(lo, 0.32 - half, 1e-8) && close(hi, 0.32 + half, 1e-8));
        assert_eq!((sd(&[0.5]), mean_ci(&[0.5]), mean(&[])), (None, None, None));
    }

    /// [1..5] against [3..7]: t = -2 on 8 degrees of freedom, two-sided p = 0.0805; and unequal
    /// variances use the Welch-Satterthwaite degrees of freedom.
    #[test]
    fn welch_test() {
        let (t, df, p) = welch(&[1.0, 2.0, 3.0, 4.0, 5.0], &[3.0, 4.0, 5.0, 6.0, 7.0]).unwrap();
        assert!(close(t, -2.0, 1e-12) && close(df, 8.0, 1e-12));
        assert!(close(p, 0.080_516_65, 1e-6), "p {p}");
        // Variances 1 (n 3) and 4 (n 3): df = (1/3 + 4/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = 2.9412.
        let (_, df, _) = welch(&[0.0, 1.0, 2.0], &[0.0, 2.0, 4.0]).unwrap();
        assert!(close(df, 2.941_176_470_6, 1e-9), "df {df}");
        assert_eq!(welch(&[0.5, 0.5], &[0.5, 0.5]).unwrap().2, 1.0);
        assert!(welch(&[0.5], &[0.4, 0.6]).is_none());
    }

    #[test]
    fn sampling_error_of_an_accuracy() {
        // 50% on 10,000 images: 0.5 points.
        assert!(close(sampling_se(0.5, 10_000).unwrap(), 0.005, 1e-15));
        assert_eq!(sampling_se(0.5, 0), None);
        assert_eq!(sampling_se(1.5, 10), None);
    }
}
