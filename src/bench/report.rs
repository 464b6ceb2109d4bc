//! Reports: the summary table, JSON, HdrHistogram percentile files and an
//! SVG percentile plot.

use std::fmt::Write as _;
use std::io::{self, Write};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::Latencies;

/// One latency kind's percentiles, in µs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many were recorded.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// The largest.
    pub max_us: f64,
}

impl Percentiles {
    /// Reads the percentiles off `latencies`.
    pub fn of(latencies: &Latencies) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            count: latencies.count(),
            p50_us: us(latencies.quantile_ns(0.5)),
            p90_us: us(latencies.quantile_ns(0.9)),
            p99_us: us(latencies.quantile_ns(0.99)),
            p999_us: us(latencies.quantile_ns(0.999)),
            max_us: us(latencies.max_ns()),
        }
    }
}

/// What a run measured: printed as a table and written as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The scenario's name.
    pub scenario: String,
    /// How the load was shaped, in words.
    pub shape: String,
    /// Measured seconds.
    pub seconds: f64,
    /// Operations completed per second (deliveries, logins: per scenario).
    pub rate_per_s: f64,
    /// Named latency distributions.
    pub latencies: Vec<(String, Percentiles)>,
    /// Errors the server answered with.
    pub errors: u64,
    /// The server's CPU, in cores, if it runs on this machine.
    pub server_cores: Option<f64>,
    /// The server's CPU per operation, in µs.
    pub server_cpu_us_per_op: Option<f64>,
    /// The kernel's part of the server's CPU (system calls, TCP), 0 to 1.
    pub server_kernel_share: Option<f64>,
    /// The server's resident memory at the end, in bytes.
    pub server_rss_bytes: Option<u64>,
    /// The anonymous part of it (the server's own; the rest is file pages
    /// it maps, such as courier's journal, which the page cache holds
    /// either way), in bytes.
    pub server_anon_bytes: Option<u64>,
    /// Scenario-specific figures (name, value).
    pub extra: Vec<(String, f64)>,
}

impl Summary {
    /// The summary as a table for a terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} ({}), {:.1} s measured",
            self.scenario, self.shape, self.seconds
        );
        let _ = writeln!(
            out,
            "  rate: {:.0}/s, errors: {}",
            self.rate_per_s, self.errors
        );
        let _ = writeln!(
            out,
            "  {:<12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "latency µs", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for (name, p) in &self.latencies {
            let _ = writeln!(
                out,
                "  {:<12} {:>10} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
                name, p.count, p.p50_us, p.p90_us, p.p99_us, p.p999_us, p.max_us
            );
        }
        if let Some(cores) = self.server_cores {
            let _ = write!(out, "  server CPU: {cores:.2} cores");
            if let Some(per_op) = self.server_cpu_us_per_op {
                let _ = write!(out, ", {per_op:.3} µs per operation");
            }
            if let Some(share) = self.server_kernel_share {
                let _ = write!(out, ", {:.0} % of it in the kernel", share * 100.0);
            }
            let _ = writeln!(out);
        }
        if let Some(rss) = self.server_rss_bytes {
            let _ = write!(
                out,
                "  server memory: {:.1} MiB resident",
                rss as f64 / 1048576.0
            );
            if let Some(anon) = self.server_anon_bytes {
                let _ = write!(
                    out,
                    ", {:.1} MiB of it anonymous (the rest is mapped file pages)",
                    anon as f64 / 1048576.0
                );
            }
            let _ = writeln!(out);
        }
        for (name, value) in &self.extra {
            let _ = writeln!(out, "  {name}: {value:.1}");
        }
        out
    }
}

/// Writes a histogram's percentile distribution in the HdrHistogram text
/// format (`.hgrm`: value, percentile, total count, 1/(1-percentile)),
/// values in µs, as HdrHistogram's plotters read it.
pub fn write_percentiles(histogram: &Histogram<u64>, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    for step in histogram.iter_quantiles(5) {
        total += step.count_since_last_iteration();
        let quantile = step.quantile_iterated_to();
        let value_us = step.value_iterated_to() as f64 / 1000.0;
        if quantile < 1.0 {
            writeln!(
                out,
                "{value_us:>12.3} {quantile:>14.12} {total:>10} {:>14.2}",
                1.0 / (1.0 - quantile)
            )?;
        } else {
            writeln!(out, "{value_us:>12.3} {quantile:>14.12} {total:>10}")?;
        }
    }
    writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        histogram.mean() / 1000.0,
        histogram.stdev() / 1000.0
    )?;
    writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        histogram.max() as f64 / 1000.0,
        histogram.len()
    )?;
    Ok(())
}

/// An SVG plot of latency (µs, log scale) against percentile, with the x
/// axis stretched toward the tail as HdrHistogram plots are (1/(1-p), log
/// scale), one line per series.
pub fn percentile_svg(title: &str, series: &[(&str, &Histogram<u64>)]) -> String {
    let points: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, histogram)| percentile_points(histogram))
        .collect();
    let y_top = points
        .iter()
        .flatten()
        .map(|&(_, y)| y)
        .fold(1.0f64, f64::max);
    let plot = Plot {
        decades: y_top.log10().ceil().max(1.0),
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    plot.axes(&mut svg);
    for (index, ((name, _), line)) in series.iter().zip(&points).enumerate() {
        plot.line(&mut svg, index, name, line);
    }
    svg.push_str("</svg>\n");
    svg
}

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 70.0;
// Room for half the widest label under the axis, "99.999%".
const RIGHT: f64 = 40.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
/// x: log10(1/(1-p)) from 0 (p50 is 0.3) to 5 (p99.999).
const X_MAX: f64 = 5.0;
/// The lowest latency drawn: 0.1 µs.
const Y_MIN_LOG: f64 = -1.0;

/// A histogram's percentile curve: (log10(1/(1-p)), latency in µs).
fn percentile_points(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    histogram
        .iter_quantiles(5)
        .filter(|step| step.quantile_iterated_to() < 1.0)
        .map(|step| {
            let x = (1.0 / (1.0 - step.quantile_iterated_to()))
                .log10()
                .min(X_MAX);
            let y = (step.value_iterated_to().max(1) as f64 / 1000.0).max(0.1);
            (x, y)
        })
        .collect()
}

/// The plot's scale: latencies from 0.1 µs up to `10^decades` µs.
struct Plot {
    decades: f64,
}

impl Plot {
    fn x_pixel(&self, x: f64) -> f64 {
        LEFT + x / X_MAX * (WIDTH - LEFT - RIGHT)
    }

    fn y_pixel(&self, y: f64) -> f64 {
        let fraction = (y.log10() - Y_MIN_LOG) / (self.decades - Y_MIN_LOG);
        HEIGHT - BOTTOM - fraction * (HEIGHT - TOP - BOTTOM)
    }

    /// The grid, its labels and the axes' names.
    fn axes(&self, svg: &mut String) {
        for (label, x) in [
            ("50%", 0.301),
            ("90%", 1.0),
            ("99%", 2.0),
            ("99.9%", 3.0),
            ("99.99%", 4.0),
            ("99.999%", 5.0),
        ] {
            let px = self.x_pixel(x);
            let _ = write!(
                svg,
                r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#ddd"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
                HEIGHT - BOTTOM,
                HEIGHT - BOTTOM + 18.0
            );
        }
        let mut decade = Y_MIN_LOG;
        while decade <= self.decades {
            let value = 10f64.powf(decade);
            let py = self.y_pixel(value);
            let label = if value < 1.0 {
                format!("{value}")
            } else {
                format!("{value:.0}")
            };
            let _ = write!(
                svg,
                r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                py + 4.0
            );
            decade += 1.0;
        }
        let _ = write!(
            svg,
            r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">latency (µs)</text>"#,
            HEIGHT / 2.0,
            HEIGHT / 2.0
        );
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
            WIDTH / 2.0,
            HEIGHT - 10.0
        );
    }

    /// Series number `index`, named `name`: its curve and its label.
    fn line(&self, svg: &mut String, index: usize, name: &str, points: &[(f64, f64)]) {
        let color = COLORS[index % COLORS.len()];
        // Lines that coincide (a 1:1 run's delivery and acknowledgement)
        // stay apart: each later one narrower and dashed over the wider.
        let width = (4.0 - 1.5 * index as f64).max(1.0);
        let dashes = if index == 0 { "none" } else { "8 5" };
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", self.x_pixel(x), self.y_pixel(y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="{width}" stroke-dasharray="{dashes}" points="{}"/>"#,
            path.join(" ")
        );
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" fill="{color}">{}</text>"#,
            LEFT + 10.0,
            TOP + 16.0 + 16.0 * index as f64,
            escape(name)
        );
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Latencies {
        let mut latencies = Latencies::default();
        for value in 1..=10_000u64 {
            latencies.record(0, value * 1000);
        }
        latencies
    }

    #[test]
    fn percentile_files_end_at_the_total_count_and_the_maximum() {
        let latencies = sample();
        let mut out = Vec::new();
        write_percentiles(latencies.histogram(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.contains("Percentile"))
            .collect();
        let last: Vec<&str> = rows.last().unwrap().split_whitespace().collect();
        assert_eq!(last[2], "10000", "the last row counts everything");
        let max: f64 = last[0].parse().unwrap();
        assert!((max - 10_000.0).abs() / 10_000.0 < 0.001, "{max}");
        assert!(text.contains("Total count    =        10000"));
    }

    #[test]
    fn the_plot_has_a_line_per_series_and_escapes_its_labels() {
        let latencies = sample();
        let svg = percentile_svg(
            "a <title>",
            &[
                ("deliver", latencies.histogram()),
                ("ack & more", latencies.histogram()),
            ],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a &lt;title&gt;"));
        assert!(svg.contains("ack &amp; more"));
        assert!(svg.ends_with("</svg>\n"));
    }

    #[test]
    fn summaries_serialize_to_json() {
        let summary = Summary {
            scenario: "one-to-one".into(),
            shape: "test".into(),
            seconds: 1.0,
            rate_per_s: 5.0,
            latencies: vec![("deliver".into(), Percentiles::of(&sample()))],
            errors: 0,
            server_cores: Some(0.5),
            server_cpu_us_per_op: Some(2.0),
            server_kernel_share: Some(0.25),
            server_rss_bytes: None,
            server_anon_bytes: None,
            extra: vec![],
        };
        let json = serde_json::to_string(&summary).unwrap();
        assert!(json.contains("\"scenario\":\"one-to-one\""));
        // 3 significant digits: the median of 1..=10,000 µs reads as 5,001.215.
        assert!(json.contains("\"p50_us\":5001.215"), "{json}");
        assert!(summary.table().contains("server CPU: 0.50 cores"));
        assert!(json.contains("\"server_kernel_share\":0.25"), "{json}");
        assert!(summary
            .table()
            .contains("2.000 µs per operation, 25 % of it in the kernel"));
    }
}
