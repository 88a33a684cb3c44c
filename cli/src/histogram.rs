//! Latency histograms: the one configuration every measurement records into, and the
//! JSON form in which a child process hands its histograms to the controller.

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::error::{CliError, EX_SOFTWARE};

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

/// The histogram a child's results carry under `key` (empty if it sent none).
pub fn from_results(results: &Value, key: &str) -> Result<Histogram<u64>, CliError> {
    match results.get(key) {
        Some(v) => from_json(v),
        None => Ok(new_histogram()),
    }
}
