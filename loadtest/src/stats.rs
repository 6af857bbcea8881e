//! Small statistics for reports: the least-squares slope of memory over connections (the cost
//! of one more connection) and latency percentiles out of an HDR histogram.

use hdrhistogram::Histogram;
use serde::Serialize;

/// A fitted line `y = slope * x + intercept` and how well it fits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fit {
    /// dy/dx.
    pub slope: f64,
    /// y at x = 0.
    pub intercept: f64,
    /// Coefficient of determination (1 = every point on the line).
    pub r2: f64,
    /// Points used.
    pub points: usize,
}

/// The least-squares line through `points`; `None` with fewer than two distinct x values.
pub fn linear_fit(points: &[(f64, f64)]) -> Option<Fit> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = if syy == 0.0 {
        1.0
    } else {
        (sxy * sxy) / (sxx * syy)
    };
    Some(Fit {
        slope,
        intercept: mean_y - slope * mean_x,
        r2,
        points: points.len(),
    })
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

/// The percentiles of a histogram of microseconds.
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        count: h.len(),
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

/// A histogram for latencies from 1 µs to 10 min with 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| unreachable!("constant bounds are valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_an_exact_line() {
        // 40 MB + 1000 bytes per connection.
        let pts: Vec<_> = [5_000.0, 10_000.0, 15_000.0, 19_000.0]
            .iter()
            .map(|&x| (x, 40e6 + 1000.0 * x))
            .collect();
        let f = linear_fit(&pts).unwrap();
        assert!((f.slope - 1000.0).abs() < 1e-6, "{f:?}");
        assert!((f.intercept - 40e6).abs() < 1e-3, "{f:?}");
        assert!((f.r2 - 1.0).abs() < 1e-12);
        assert_eq!(f.points, 4);
    }

    #[test]
    fn slope_of_noisy_points_is_least_squares() {
        // y = 2x + 1 with residuals +1, -1, -1, +1: the fit is exactly y = 2x + 1.
        let f = linear_fit(&[(0.0, 2.0), (1.0, 2.0), (2.0, 4.0), (3.0, 8.0)]).unwrap();
        assert!((f.slope - 2.0).abs() < 1e-12, "{f:?}");
        assert!((f.intercept - 1.0).abs() < 1e-12, "{f:?}");
        assert!(f.r2 < 1.0 && f.r2 > 0.8);
    }

    #[test]
    fn two_points_give_the_secant() {
        let f = linear_fit(&[(5_000.0, 50e6), (19_000.0, 64e6)]).unwrap();
        assert!((f.slope - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn degenerate_inputs_have_no_slope() {
        assert!(linear_fit(&[]).is_none());
        assert!(linear_fit(&[(1.0, 1.0)]).is_none());
        assert!(linear_fit(&[(1.0, 1.0), (1.0, 2.0)]).is_none());
    }

    #[test]
    fn percentiles_of_a_histogram() {
        let mut h = latency_histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let p = percentiles(&h);
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50, 500);
        assert_eq!(p.p99, 990);
        assert_eq!(p.max, 1000);
        assert_eq!(percentiles(&latency_histogram()), Percentiles::default());
    }
}
