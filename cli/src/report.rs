//! What a benchmark run prints: the latency table (each row also as a multiple of
//! the cache-line floor), the per-round ratios and tails, the throughput table, the
//! fan-out deliveries, and the same as JSON or as HdrHistogram `.hgrm` text. Also the measurements' types,
//! and how rounds of the same measurement are merged.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::histogram::new_histogram;
use crate::protocol::Fill;
use crate::units::{fmt_ns, fmt_rate};

/// A measured latency distribution with its label.
pub struct Series {
    /// Transport and what was measured ("shmq round trip").
    pub label: String,
    /// Nanoseconds.
    pub histogram: Histogram<u64>,
}

impl Series {
    fn p50(&self) -> f64 {
        self.histogram.value_at_quantile(0.5) as f64
    }
}

/// Throughput result of one transport.
pub struct Rate {
    /// Transport.
    pub label: String,
    /// Messages per second over the measuring window.
    pub messages_per_s: f64,
    /// Messages in the measuring window.
    pub messages: u64,
    /// Send→receive latency of the sampled messages.
    pub latency: Series,
    /// The queue's fill as its consumers saw it (no samples for kernel channels).
    pub fill: Fill,
}

/// Messages a fan-out transport delivered, against what it should have.
pub struct Delivery {
    /// Transport and subscriber count.
    pub label: String,
    /// Measured messages sent × subscribers.
    pub expected: u64,
    /// Measured messages the subscribers received, together.
    pub received: u64,
    /// Messages the subscribers were told they missed (overwritten before read).
    pub lagged: u64,
}

/// Adds `new` to the delivery with the same label, or appends it.
fn merge_delivery(all: &mut Vec<Delivery>, new: Delivery) {
    match all.iter_mut().find(|d| d.label == new.label) {
        Some(existing) => {
            existing.expected += new.expected;
            existing.received += new.received;
            existing.lagged += new.lagged;
        }
        None => all.push(new),
    }
}

/// One value per round for each label, in the order labels first appeared.
#[derive(Default)]
pub struct PerRound(Vec<(String, Vec<f64>)>);

impl PerRound {
    /// Adds this round's `value` for `label`.
    pub fn push(&mut self, label: String, value: f64) {
        match self.0.iter_mut().find(|(l, _)| *l == label) {
            Some((_, values)) => values.push(value),
            None => self.0.push((label, vec![value])),
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn json(&self) -> Vec<Value> {
        self.0
            .iter()
            .map(|(label, values)| {
                json!({
                    "label": label,
                    "per_round": values,
                    "median": median(values),
                })
            })
            .collect()
    }
}

/// Everything a run measured.
#[derive(Default)]
pub struct Measurements {
    /// Cache-line floors (one per round, merged by label).
    pub floors: Vec<Series>,
    /// Latency of the transports and the other references.
    pub series: Vec<Series>,
    /// Throughput of the transports.
    pub rates: Vec<Rate>,
    /// Latency: per label, p50 / the same round's floor p50; throughput: shmq's rate
    /// ÷ each baseline's, per round.
    pub round_ratios: PerRound,
    /// Latency: per label, the p99.9 (ns) of every round. A round runs on one vCPU
    /// placement; the merged table mixes the placements a run went through.
    pub round_tails: PerRound,
    /// Fan-out: each round's deliveries (merged by label in the report).
    pub deliveries: Vec<Delivery>,
}

/// Adds `new` to the series with the same label (histograms merged), or appends it.
pub fn merge_series(all: &mut Vec<Series>, new: Series) {
    match all.iter_mut().find(|s| s.label == new.label) {
        Some(existing) => {
            // Same bounds and precision (new_histogram), so adding cannot fail short
            // of a value above the histogram's range, which recording refused.
            let _ = existing.histogram.add(&new.histogram);
        }
        None => all.push(new),
    }
}

/// Adds one round's `rate` to the transport's running total (rounds have equal
/// durations, so the mean of their rates is the overall rate).
pub fn merge_rate(all: &mut Vec<Rate>, rate: Rate, rounds: u32) {
    match all.iter_mut().find(|r| r.label == rate.label) {
        Some(existing) => {
            existing.messages_per_s += rate.messages_per_s / f64::from(rounds);
            existing.messages += rate.messages;
            existing.fill.merge(rate.fill);
            let _ = existing.latency.histogram.add(&rate.latency.histogram);
        }
        None => all.push(Rate {
            messages_per_s: rate.messages_per_s / f64::from(rounds),
            ..rate
        }),
    }
}

/// Median of a list (0 for an empty one).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// What the report says about the run itself.
pub struct Facts<'a> {
    /// Workload name, lower case.
    pub workload: String,
    /// Message size in bytes.
    pub size: u64,
    /// Queue capacity.
    pub capacity: u64,
    /// Wait strategy name, lower case.
    pub wait: String,
    /// Whether the processes were pinned.
    pub pinned: bool,
    /// Notes printed under the header.
    pub notes: &'a [String],
    /// Rounds the transports alternated in.
    pub rounds: u32,
    /// shmq producer processes (throughput).
    pub producers: u64,
    /// shmq consumer processes (throughput).
    pub consumers: u64,
    /// Offered load (throughput), messages per second.
    pub rate: Option<f64>,
    /// Whether to print every p50 relative to shmq's.
    pub relative_p50: bool,
}

/// A run's measurements, arranged for output: every latency series in one list
/// (floors first, then transports, then the throughput latencies).
pub struct Report {
    all: Vec<Series>,
    rates: Vec<Rate>,
    round_ratios: PerRound,
    round_tails: PerRound,
    deliveries: Vec<Delivery>,
    /// The floor for ratios in the table: the lowest floor p50 measured (host
    /// placement of the vCPUs can change it for seconds; the lowest is the physical
    /// limit). For latency, the per-round ratios are the fairer comparison.
    floor_p50: Option<f64>,
}

impl Report {
    /// Arranges `measured` for output.
    pub fn new(measured: Measurements) -> Self {
        let Measurements {
            floors,
            series,
            mut rates,
            round_ratios,
            round_tails,
            deliveries: each_round,
        } = measured;
        let mut deliveries = Vec::new();
        for d in each_round {
            merge_delivery(&mut deliveries, d);
        }
        let floor_p50 = floors
            .iter()
            .map(Series::p50)
            .filter(|v| *v > 0.0)
            .fold(f64::MAX, f64::min);
        let floor_p50 = (floor_p50 < f64::MAX).then_some(floor_p50);
        let mut all = floors;
        all.extend(series);
        for r in &mut rates {
            let histogram = std::mem::replace(&mut r.latency.histogram, new_histogram());
            all.push(Series {
                label: r.latency.label.clone(),
                histogram,
            });
        }
        Self {
            all,
            rates,
            round_ratios,
            round_tails,
            deliveries,
            floor_p50,
        }
    }

    /// Every latency series.
    pub fn series(&self) -> &[Series] {
        &self.all
    }

    /// Every latency series as `.hgrm` text (see [`hgrm`]).
    pub fn hgrm(&self) -> String {
        hgrm(&self.all)
    }

    /// Whether no cache-line floor took a sample.
    pub fn floors_missing(&self) -> bool {
        self.all
            .iter()
            .filter(|s| s.label.starts_with("cache-line"))
            .all(|s| s.histogram.is_empty())
    }

    /// The whole report as one JSON object.
    pub fn json(&self, facts: &Facts) -> Value {
        json!({
            "workload": facts.workload,
            "size": facts.size,
            "capacity": facts.capacity,
            "wait": facts.wait,
            "pinned": facts.pinned,
            "notes": facts.notes,
            "floor_p50_ns": self.floor_p50,
            "round_ratios": self.round_ratios.json(),
            "round_p999_ns": self.round_tails.json(),
            "latency": self.all.iter().map(series_json).collect::<Vec<_>>(),
            "throughput": self.rates.iter().map(|r| json!({
                "transport": r.label,
                "messages_per_s": r.messages_per_s,
                "bytes_per_s": r.messages_per_s * facts.size as f64,
                "messages": r.messages,
                "mean_fill": r.fill.mean(),
            })).collect::<Vec<_>>(),
            "deliveries": self.deliveries.iter().map(|d| json!({
                "transport": d.label,
                "expected": d.expected,
                "received": d.received,
                "lagged": d.lagged,
            })).collect::<Vec<_>>(),
        })
    }

    /// The tables, as printed after the header.
    pub fn tables(&self, facts: &Facts) -> String {
        let mut out = String::new();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "latency (× floor p50 = value / the lower cache-line floor p50, {}):",
            self.floor_p50.map_or("n/a".to_owned(), fmt_ns)
        );
        out.push_str(&latency_table(&self.all, self.floor_p50));
        self.round_sections(&mut out, facts);
        if !self.rates.is_empty() {
            self.throughput_table(&mut out, facts);
        }
        if !self.deliveries.is_empty() {
            self.delivery_table(&mut out);
        }
        if facts.relative_p50 {
            self.relative_p50s(&mut out);
        }
        out
    }

    fn round_sections(&self, out: &mut String, facts: &Facts) {
        if !self.round_ratios.is_empty() {
            let what = if facts.workload == "fanout" {
                "shmq ÷ iceoryx2 latency ratio"
            } else if self.rates.is_empty() {
                "p50 / cache-line floor p50"
            } else {
                "messages/s ratio"
            };
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{what} of the same round ({} rounds; transports alternate):",
                facts.rounds
            );
            for (label, ratios) in &self.round_ratios.0 {
                let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}×")).collect();
                let median = median(ratios);
                let _ = writeln!(
                    out,
                    "  {label:<36} median {median:>6.2}×   rounds: {}",
                    each.join(" ")
                );
            }
        }
        if !self.round_tails.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "p99.9 within each round (a round runs on one vCPU placement; the table merges them):");
            for (label, tails) in &self.round_tails.0 {
                let each: Vec<String> = tails.iter().map(|&t| fmt_ns(t)).collect();
                let _ = writeln!(
                    out,
                    "  {label:<36} median {:>9}   rounds: {}",
                    fmt_ns(median(tails)),
                    each.join(" ")
                );
            }
        }
    }

    fn throughput_table(&self, out: &mut String, facts: &Facts) {
        let shmq_rate = self.rates.first().map_or(0.0, |r| r.messages_per_s);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "throughput ({} producer(s), {} consumer(s) for shmq; baselines 1P1C):",
            facts.producers, facts.consumers
        );
        let _ = writeln!(
            out,
            "{:<24} {:>14} {:>14} {:>12} {:>10} {:>11}",
            "transport", "messages", "bytes", "measured", "shmq ×", "queue fill"
        );
        for r in &self.rates {
            let _ = writeln!(
                out,
                "{:<24} {:>14} {:>14} {:>12} {:>10} {:>11}",
                r.label,
                fmt_rate(r.messages_per_s, "msg"),
                fmt_rate(r.messages_per_s * facts.size as f64, "B"),
                r.messages,
                if r.messages_per_s > 0.0 {
                    format!("{:.2}", shmq_rate / r.messages_per_s)
                } else {
                    "-".to_owned()
                },
                r.fill
                    .mean()
                    .map_or("-".to_owned(), |f| format!("{:.0}%", f * 100.0)),
            );
        }
        let _ = writeln!(
            out,
            "queue fill: mean messages waiting ÷ capacity, sampled by consumers (near 0%: consumers keep up; near 100%: producers wait for room)"
        );
        if let Some(rate) = facts.rate {
            let _ = writeln!(
                out,
                "offered load {} (latency measured from intended send times: coordinated omission accounted for)",
                fmt_rate(rate, "msg")
            );
        }
    }

    fn delivery_table(&self, out: &mut String) {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "deliveries (expected: measured messages sent × subscribers, over all rounds):"
        );
        let _ = writeln!(
            out,
            "{:<24} {:>12} {:>12} {:>12} {:>12}",
            "transport", "expected", "received", "lagged", "not received"
        );
        for d in &self.deliveries {
            let _ = writeln!(
                out,
                "{:<24} {:>12} {:>12} {:>12} {:>12}",
                d.label,
                d.expected,
                d.received,
                d.lagged,
                d.expected.saturating_sub(d.received),
            );
        }
    }

    fn relative_p50s(&self, out: &mut String) {
        let shmq_p50 = self.all.iter().find(|s| s.label.starts_with("shmq"));
        let Some(base) = shmq_p50.map(Series::p50).filter(|b| *b > 0.0) else {
            return;
        };
        let _ = writeln!(out);
        let _ = writeln!(out, "p50 relative to shmq's first row:");
        for s in self
            .all
            .iter()
            .filter(|s| !s.label.starts_with("cache-line"))
        {
            let _ = writeln!(out, "  {:<44} {:>8.2}×", s.label, s.p50() / base);
        }
    }
}

/// The percentiles every table shows.
const QUANTILES: [(&str, f64); 6] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
    ("max", 1.0),
];

/// min, p50 .. p99.99, max, mean in nanoseconds.
fn summary(histogram: &Histogram<u64>) -> Vec<(&'static str, f64)> {
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

/// Prints the latency table; `floor_ns` adds a "× floor p50" line under each row.
fn latency_table(series: &[Series], floor_ns: Option<f64>) -> String {
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
fn series_json(s: &Series) -> Value {
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
fn hgrm(series: &[Series]) -> String {
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
