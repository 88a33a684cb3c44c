//! Histograms: recording, passing them from a child to the controller, and the
//! table / JSON / `.hgrm` outputs.

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::util::{fmt_ns, CliError, EX_SOFTWARE};

/// Highest latency recorded (100 s); above it values saturate.
const HIGHEST_NS: u64 = 100_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 100 s at 3 significant digits is always a valid configuration.
    Histogram::new_with_bounds(1, HIGHEST_NS, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
    })
}

/// Records one latency (clamped to the histogram's range).
pub fn record(histogram: &mut Histogram<u64>, ns: u64) {
    histogram.saturating_record(ns.clamp(1, HIGHEST_NS));
}

/// The histogram as `[[value, count], ...]` of its recorded values, lossless at the
/// histogram's precision: how a child hands its measurements to the controller.
pub fn to_json(histogram: &Histogram<u64>) -> Value {
    Value::Array(
        histogram
            .iter_recorded()
            .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
            .collect(),
    )
}

/// Inverse of [`to_json`].
pub fn from_json(value: &Value) -> Result<Histogram<u64>, CliError> {
    let mut histogram = new_histogram();
    let bad = || CliError::new(EX_SOFTWARE, "a benchmark child sent a malformed histogram");
    for pair in value.as_array().ok_or_else(bad)? {
        let value = pair.get(0).and_then(Value::as_u64).ok_or_else(bad)?;
        let count = pair.get(1).and_then(Value::as_u64).ok_or_else(bad)?;
        histogram
            .record_n(value.clamp(1, HIGHEST_NS), count)
            .map_err(|_| bad())?;
    }
    Ok(histogram)
}

/// The percentiles every table shows.
pub const QUANTILES: [(&str, f64); 6] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
    ("max", 1.0),
];

/// min, p50 .. p99.99, max, mean in nanoseconds.
pub fn summary(histogram: &Histogram<u64>) -> Vec<(&'static str, f64)> {
    let mut row = vec![("min", histogram.min() as f64)];
    for (name, q) in QUANTILES {
        let v = if q >= 1.0 {
            histogram.max()
        } else {
            histogram.value_at_quantile(q)
        };
        row.push((name, v as f64));
    }
    row.push(("mean", histogram.mean()));
    row
}

/// A measured latency distribution with its label.
pub struct Series {
    /// Transport and what was measured ("shmq round trip").
    pub label: String,
    /// Nanoseconds.
    pub histogram: Histogram<u64>,
}

/// Prints the latency table; `floor_ns` adds a "× floor p50" line under each row.
pub fn latency_table(series: &[Series], floor_ns: Option<f64>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let width = series
        .iter()
        .map(|s| s.label.len())
        .max()
        .unwrap_or(10)
        .max(10);
    let _ = write!(out, "{:<width$}", "");
    for name in ["min", "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean"] {
        let _ = write!(out, " {name:>10}");
    }
    let _ = writeln!(out, " {:>10}", "samples");
    for s in series {
        let row = summary(&s.histogram);
        let _ = write!(out, "{:<width$}", s.label);
        for (_, v) in &row {
            let _ = write!(out, " {:>10}", fmt_ns(*v));
        }
        let _ = writeln!(out, " {:>10}", s.histogram.len());
        if let Some(floor) = floor_ns.filter(|f| *f > 0.0) {
            let _ = write!(out, "{:<width$}", "  × floor p50");
            for (_, v) in &row {
                let _ = write!(out, " {:>10}", format!("{:.2}×", v / floor));
            }
            let _ = writeln!(out);
        }
    }
    out
}

/// JSON summary of one series.
pub fn series_json(s: &Series) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("label".into(), json!(s.label));
    map.insert("samples".into(), json!(s.histogram.len()));
    for (name, v) in summary(&s.histogram) {
        map.insert(format!("{name}_ns"), json!(v));
    }
    Value::Object(map)
}

/// Writes the classic HdrHistogram percentile distribution (`.hgrm`) text, values in
/// microseconds, as the usual HdrHistogram plotters read it. Several series go one
/// after another, each headed by a `#` comment naming it.
pub fn hgrm(series: &[Series]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for s in series {
        let h = &s.histogram;
        let _ = writeln!(out, "# {}", s.label);
        let _ = writeln!(
            out,
            "{:>12} {:>14} {:>10} {:>14}\n",
            "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
        );
        let mut total = 0u64;
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value_us = v.value_iterated_to() as f64 / 1000.0;
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value_us:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value_us:12.3} {q:2.12} {total:10}");
            }
        }
        let _ = writeln!(
            out,
            "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
            h.mean() / 1000.0,
            h.stdev() / 1000.0
        );
        let _ = writeln!(
            out,
            "#[Max     = {:12.3}, Total count    = {:12}]",
            h.max() as f64 / 1000.0,
            h.len()
        );
        let _ = writeln!(
            out,
            "#[Buckets = {:12}, SubBuckets     = {:12}]",
            h.buckets(),
            h.distinct_values()
        );
        let _ = writeln!(out);
    }
    out
}
