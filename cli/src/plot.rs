//! `--plot FILE.svg`: latency by percentile, one line per transport, both axes
//! logarithmic (the x axis is 1/(1-p), so p50 is 2, p99 is 100, p99.99 is 10^4).

use plotters::prelude::*;

use crate::error::{CliError, EX_CANTCREAT};
use crate::report::Series;

/// Draws every series into an SVG file at `path`.
pub fn latency_svg(path: &str, title: &str, series: &[Series]) -> Result<(), CliError> {
    let fail = |e: String| CliError::new(EX_CANTCREAT, format!("drawing {path}: {e}"));
    // Each line: (1/(1-p), latency in µs), stopping short of p = 1.
    let lines: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|s| !s.histogram.is_empty())
        .map(|s| {
            let points = s
                .histogram
                .iter_quantiles(5)
                .map(|v| (v.quantile_iterated_to(), v.value_iterated_to()))
                .filter(|(q, _)| *q < 1.0)
                .map(|(q, v)| (1.0 / (1.0 - q), v as f64 / 1000.0))
                .collect();
            (s.label.clone(), points)
        })
        .collect();
    let x_max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(10.0f64, f64::max)
        .min(1e7);
    let (y_min, y_max) = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold((f64::MAX, 0.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (y_min, y_max) = if y_max > 0.0 {
        ((y_min * 0.8).max(0.01), y_max * 1.3)
    } else {
        (0.01, 1.0)
    };

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        // The run's header without its "shmq bench: " prefix, small enough to fit.
        .caption(
            title.strip_prefix("shmq bench: ").unwrap_or(title),
            ("sans-serif", 13),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((1.0..x_max).log_scale(), (y_min..y_max).log_scale())
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("percentile, as 1/(1-p): 2 = p50, 100 = p99, 1000 = p99.9, 10^4 = p99.99")
        .y_desc("latency (µs)")
        .x_label_formatter(&|x| format_percentile(*x))
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    for (index, (label, points)) in lines.into_iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| fail(e.to_string()))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}

fn format_percentile(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    if x < 1.5 {
        "p0".to_owned()
    } else if p < 99.0 {
        format!("p{p:.0}")
    } else {
        let digits = (x.log10().round() as usize).saturating_sub(2);
        format!("p{p:.digits$}")
    }
}
