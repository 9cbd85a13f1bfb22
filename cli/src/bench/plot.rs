//! `ringbus bench --plot DIR`: the figures of a run as charts, each as SVG and PNG.
//!
//! One chart pair per payload size (and, for `queue`, per shape 1→1 / 2→2), so that the lines
//! of one chart are comparable:
//!
//! * `{pattern}-latency-{size}B[-{p}to{c}].{svg,png}`: latency against percentile, p50 to
//!   p99.99, HdrHistogram-style (the x axis is `log10(1 / (1 - q))`: p90, p99, p99.9 and
//!   p99.99 are equally spaced), latency on a log scale; one line per transport (touch rows are
//!   transports of their own, `ringbus+touch`).
//! * `{pattern}-throughput-{size}B[-{p}to{c}].{svg,png}`: horizontal bars of msgs/s (`rpc`:
//!   pipelined calls/s), one per transport, the value written at the end of the bar.
//!
//! Titles name the machine (host name, CPU count, kernel from uname) and the run settings.
//!
//! Text is laid out and rasterised with DejaVu Sans embedded in the binary (the `dejavu`
//! crate, through plotters' pure-Rust `ab_glyph` feature): no fontconfig, FreeType or
//! installed font is needed, so the PNGs come out the same on a bare machine. The SVGs name
//! the family `sans-serif` and leave the glyphs to the viewer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::stats::{curve_quantile, nines, Row, CURVE_POINTS};
use super::transport::{LatencyKind, Pattern, RPC_WINDOW};
use super::util::{err, Result};
use super::Options;

/// The font family every text of the charts uses (registered by [`font_ready`]).
const FONT: &str = "sans-serif";
/// Chart size in pixels (SVG user units).
const SIZE: (u32, u32) = (1100, 680);
/// Height of the three title lines above each chart.
const TITLE_H: u32 = 84;

/// Line and bar colours, one per transport in order of first appearance in the rows (the
/// same transport has the same colour in every chart of a run; its `+touch` row shares it,
/// drawn dashed or lighter).
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(100, 100, 100),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Registers the embedded font once; plotters looks text up by family name.
fn font_ready() -> Result<()> {
    static READY: OnceLock<bool> = OnceLock::new();
    let ok = *READY.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(err("the embedded DejaVu Sans font did not load"))
    }
}

/// What the charts' second title line says about the machine and the run.
pub struct Settings {
    /// `host NAME · N CPUs · Linux RELEASE ARCH`.
    pub machine: String,
    /// `pubsub · sizes 8, 64 B · 80 rounds × 500 msgs · pinned`.
    pub run: String,
}

impl Settings {
    /// The settings of this run on this machine; `pinned` says whether ping and pong (queue:
    /// the workers) really were pinned.
    pub fn of(opts: &Options, pinned: bool) -> Self {
        let u = rustix::system::uname();
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let machine = format!(
            "host {} · {cpus} CPU{} · {} {} {}",
            u.nodename().to_string_lossy(),
            if cpus == 1 { "" } else { "s" },
            u.sysname().to_string_lossy(),
            u.release().to_string_lossy(),
            u.machine().to_string_lossy(),
        );
        let sizes: Vec<String> = opts.sizes.iter().map(|&s| size_text(s)).collect();
        let run = format!(
            "{} · sizes {} · {} round{} × {} msgs{} · {}",
            opts.pattern.as_str(),
            sizes.join(", "),
            opts.rounds,
            if opts.rounds == 1 { "" } else { "s" },
            opts.msgs,
            if opts.touch { " · --touch" } else { "" },
            if pinned { "pinned" } else { "not pinned" },
        );
        Settings { machine, run }
    }
}

/// A payload size for titles and file names: `64 B`, `64 KiB`, `1 MiB`.
fn size_text(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// The rows of one chart: one payload size and (queue) one shape.
type GroupKey = (usize, Option<(usize, usize)>);

/// Writes the charts of `rows` into `dir` (created if missing); returns the files written.
pub fn write(
    dir: &Path,
    pattern: Pattern,
    settings: &Settings,
    rows: &[Row],
) -> Result<Vec<PathBuf>> {
    font_ready()?;
    std::fs::create_dir_all(dir)
        .map_err(|e| err(format!("--plot: cannot create {}: {e}", dir.display())))?;
    let base = |name: &str| name.trim_end_matches("+touch").to_string();
    let mut colour_of: Vec<String> = Vec::new();
    for r in rows {
        if !colour_of.contains(&base(&r.transport)) {
            colour_of.push(base(&r.transport));
        }
    }
    let colour = |name: &str| {
        let i = colour_of.iter().position(|n| *n == base(name)).unwrap_or(0);
        COLOURS[i % COLOURS.len()]
    };
    let mut groups: BTreeMap<GroupKey, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        groups
            .entry((r.payload_bytes, r.shape))
            .or_default()
            .push(r);
    }
    let mut written = Vec::new();
    for ((size, shape), rows) in &groups {
        let suffix = match shape {
            Some((p, c)) => format!("{size}B-{p}to{c}"),
            None => format!("{size}B"),
        };
        let what = match shape {
            Some((p, c)) => format!("{} payloads, {p}→{c}", size_text(*size)),
            None => format!("{} payloads", size_text(*size)),
        };
        let latency: Vec<&Row> = rows
            .iter()
            .copied()
            .filter(|r| r.latency.is_some())
            .collect();
        if !latency.is_empty() {
            let chart = LatencyChart {
                pattern,
                what: &what,
                settings,
                rows: &latency,
                colour: &colour,
            };
            let base = dir.join(format!("{}-latency-{suffix}", pattern.as_str()));
            written.extend(both(&base, &chart)?);
        }
        let rates: Vec<&Row> = rows
            .iter()
            .copied()
            .filter(|r| r.msgs_per_s.is_some())
            .collect();
        if !rates.is_empty() {
            let chart = RateChart {
                pattern,
                what: &what,
                settings,
                rows: &rates,
                colour: &colour,
            };
            let base = dir.join(format!("{}-throughput-{suffix}", pattern.as_str()));
            written.extend(both(&base, &chart)?);
        }
    }
    Ok(written)
}

/// What drawing into a plotters area returns.
type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A chart that can be drawn on any backend (SVG and bitmap).
trait Chart {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// Draws `chart` into `base.svg` and `base.png`.
fn both(base: &Path, chart: &impl Chart) -> Result<[PathBuf; 2]> {
    let svg = base.with_extension("svg");
    let png = base.with_extension("png");
    let fail = |path: &Path, e: &dyn std::fmt::Display| {
        err(format!("--plot: cannot draw {}: {e}", path.display()))
    };
    {
        let area = SVGBackend::new(&svg, SIZE).into_drawing_area();
        chart.draw(&area).map_err(|e| fail(&svg, &e))?;
        area.present().map_err(|e| fail(&svg, &e))?;
    }
    {
        let area = BitMapBackend::new(&png, SIZE).into_drawing_area();
        chart.draw(&area).map_err(|e| fail(&png, &e))?;
        area.present().map_err(|e| fail(&png, &e))?;
    }
    Ok([svg, png])
}

/// Draws the white background and the title: `title` in bold, then the machine, then the run
/// settings and `extra`; returns the area below. (Even font sizes only: plotters' glyph
/// placement rounds half-pixel baselines unevenly, which lifts dots at odd sizes.)
fn titled<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    settings: &Settings,
    extra: &str,
) -> std::result::Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    area.fill(&WHITE)?;
    let (top, body) = area.split_vertically(TITLE_H);
    top.draw(&Text::new(
        title.to_string(),
        (16, 10),
        (FONT, 22, FontStyle::Bold).into_font().color(&BLACK),
    ))?;
    let grey = RGBColor(60, 60, 60);
    top.draw(&Text::new(
        settings.machine.clone(),
        (16, 40),
        (FONT, 16).into_font().color(&grey),
    ))?;
    top.draw(&Text::new(
        format!("{}{extra}", settings.run),
        (16, 62),
        (FONT, 16).into_font().color(&grey),
    ))?;
    Ok(body)
}

fn is_touch(name: &str) -> bool {
    name.ends_with("+touch")
}

/// Width of the legend column for these series names.
fn legend_width(names: &[&str]) -> u32 {
    let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(4) as u32;
    60 + 9 * longest
}

/// The legend, in its own column right of the plot (so it never hides a line): a framed list
/// of a line sample (dashed for `+touch`) and the series name, one per series.
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    names: &[&str],
    colour: &dyn Fn(&str) -> RGBColor,
) -> DrawResult<DB> {
    const TOP: i32 = 16;
    const ROW: i32 = 24;
    let (w, _) = area.dim_in_pixel();
    let bottom = TOP + 8 + ROW * names.len() as i32;
    area.draw(&Rectangle::new(
        [(4, TOP), (w as i32 - 12, bottom)],
        RGBColor(160, 160, 160).stroke_width(1),
    ))?;
    for (i, name) in names.iter().enumerate() {
        let y = TOP + 4 + ROW / 2 + ROW * i as i32;
        let c = colour(name);
        if is_touch(name) {
            area.draw(&PathElement::new(vec![(14, y), (22, y)], c.stroke_width(3)))?;
            area.draw(&PathElement::new(vec![(28, y), (36, y)], c.stroke_width(3)))?;
        } else {
            area.draw(&PathElement::new(vec![(14, y), (36, y)], c.stroke_width(3)))?;
        }
        area.draw(&Text::new(
            name.to_string(),
            (44, y),
            TextStyle::from((FONT, 16).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(())
}

/// A latency in ns for an axis label: `800`, `1.5k`, `20k`, `3M`.
fn ns_text(ns: f64) -> String {
    let (v, unit) = match ns {
        n if n >= 1e9 => (n / 1e9, "G"),
        n if n >= 1e6 => (n / 1e6, "M"),
        n if n >= 1e3 => (n / 1e3, "k"),
        n => (n, ""),
    };
    let digits = if v < 10.0 && v.fract().abs() > 1e-9 {
        1
    } else {
        0
    };
    format!("{v:.digits$}{unit}")
}

/// A rate for labels: `950k`, `12.3M`.
fn rate_text(r: f64) -> String {
    match r {
        r if r >= 1e6 => format!("{:.2}M", r / 1e6),
        r if r >= 1e3 => format!("{:.1}k", r / 1e3),
        r => format!("{r:.0}"),
    }
}

/// The percentile axis label at `x` (a [`nines`] position).
fn percentile_text(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let text = format!("{p:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("p{text}")
}

/// The percentile axis: positions are [`nines`] values from a little before p50 to a little
/// after p99.99; grid lines and labels at p50, p90, p99, p99.9 and p99.99.
struct NinesAxis;

impl NinesAxis {
    const FROM: f64 = 0.2;
    const TO: f64 = 4.12;
}

impl Ranged for NinesAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let f = (value - Self::FROM) / (Self::TO - Self::FROM);
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        let mut points = vec![nines(0.5), 1.0, 2.0, 3.0, 4.0];
        if hint.weight().allow_light_points() {
            points.extend([nines(0.75), 1.5, 2.5, 3.5]);
        }
        points.truncate(hint.max_num_points());
        points
    }

    fn range(&self) -> std::ops::Range<f64> {
        Self::FROM..Self::TO
    }
}

/// The transport axis of the bar charts: one unit per bar, at least [`RowAxis::MIN_ROWS`]
/// units (so a lone bar is not a slab), bars from the top down, each labelled at its centre.
struct RowAxis {
    bars: usize,
}

impl RowAxis {
    const MIN_ROWS: usize = 4;

    fn rows(&self) -> usize {
        self.bars.max(Self::MIN_ROWS)
    }

    /// Bottom of bar `k` (counted from the top).
    fn bottom_of(&self, k: usize) -> f64 {
        (self.rows() - 1 - k) as f64
    }

    /// Bar (counted from the top) at `y`.
    fn bar_at(&self, y: f64) -> usize {
        let row = y.floor().max(0.0) as usize;
        self.rows().saturating_sub(1 + row)
    }
}

impl Ranged for RowAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let f = value / self.rows() as f64;
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        (0..self.bars)
            .take(hint.max_num_points())
            .map(|k| self.bottom_of(k) + 0.5)
            .collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        0.0..self.rows() as f64
    }
}

struct LatencyChart<'a> {
    pattern: Pattern,
    what: &'a str,
    settings: &'a Settings,
    rows: &'a [&'a Row],
    colour: &'a dyn Fn(&str) -> RGBColor,
}

impl Chart for LatencyChart<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let kind = match (self.pattern, self.pattern.latency_kind()) {
            (Pattern::Queue, _) => "one-way latency (send → receive)",
            (_, LatencyKind::OneWay) => "one-way latency (round trip / 2)",
            (_, LatencyKind::RoundTrip) => "round-trip latency (request + 8-byte response)",
        };
        let samples: Vec<u64> = self
            .rows
            .iter()
            .filter_map(|r| r.latency.map(|l| l.samples))
            .collect();
        let (lo, hi) = (
            samples.iter().min().copied().unwrap_or(0),
            samples.iter().max().copied().unwrap_or(0),
        );
        let samples = if lo == hi {
            format!("{lo} samples per line")
        } else {
            format!("{lo}..{hi} samples per line")
        };
        let title = format!(
            "ringbus bench {}: {kind} by percentile, {}",
            self.pattern.as_str(),
            self.what
        );
        let body = titled(area, &title, self.settings, &format!(" · {samples}"))?;
        let curves: Vec<(&str, Vec<(f64, f64)>)> = self
            .rows
            .iter()
            .filter_map(|r| {
                let l = r.latency?;
                let pts = (0..CURVE_POINTS)
                    .map(|i| (nines(curve_quantile(i)), l.curve[i].max(1) as f64))
                    .collect();
                Some((r.transport.as_str(), pts))
            })
            .collect();
        let ys = curves.iter().flat_map(|(_, p)| p.iter().map(|p| p.1));
        let (y_min, y_max) = ys.fold((f64::MAX, 1.0f64), |(a, b), y| (a.min(y), b.max(y)));
        // Whole decades, so the log axis is labelled at both ends.
        let y_lo = 10f64.powf((y_min / 1.2).max(1.0).log10().floor());
        let y_hi = 10f64.powf((y_max * 1.2).log10().ceil()).max(y_lo * 10.0);
        let names: Vec<&str> = curves.iter().map(|c| c.0).collect();
        let (body, legend_area) = body.split_horizontally(SIZE.0 - legend_width(&names));
        let mut chart = ChartBuilder::on(&body)
            .margin(16)
            .margin_right(24)
            .x_label_area_size(56)
            .y_label_area_size(84)
            .build_cartesian_2d(NinesAxis, (y_lo..y_hi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("percentile (HdrHistogram-style axis: log of 1 / (1 - percentile))")
            .y_desc(format!("{kind}, ns (log scale)"))
            .x_label_formatter(&|x| percentile_text(*x))
            .y_label_formatter(&|y| ns_text(*y))
            .axis_desc_style((FONT, 16))
            .label_style((FONT, 14))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        for (name, pts) in curves {
            let c = (self.colour)(name);
            if is_touch(name) {
                chart.draw_series(DashedLineSeries::new(pts.clone(), 8, 5, c.stroke_width(2)))?;
            } else {
                chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?;
            }
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
        }
        legend(&legend_area, &names, self.colour)
    }
}

struct RateChart<'a> {
    pattern: Pattern,
    what: &'a str,
    settings: &'a Settings,
    rows: &'a [&'a Row],
    colour: &'a dyn Fn(&str) -> RGBColor,
}

impl Chart for RateChart<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let what = match self.pattern {
            Pattern::PubSub => {
                "messages per second (streaming, counted by the receiver)".to_string()
            }
            Pattern::Rpc => format!("calls per second (pipelined, {RPC_WINDOW} in flight)"),
            Pattern::Queue => "messages per second (sent and acked)".to_string(),
        };
        let title = format!(
            "ringbus bench {}: throughput, {}, median over rounds",
            self.pattern.as_str(),
            self.what
        );
        let body = titled(area, &title, self.settings, "")?;
        let bars: Vec<(&str, f64)> = self
            .rows
            .iter()
            .filter_map(|r| Some((r.transport.as_str(), r.msgs_per_s?)))
            .collect();
        let n = bars.len();
        let x_max = bars.iter().map(|b| b.1).fold(1.0f64, f64::max) * 1.18;
        let longest = bars.iter().map(|b| b.0.chars().count()).max().unwrap_or(4);
        let names: Vec<String> = bars.iter().map(|b| b.0.to_string()).collect();
        let mut chart = ChartBuilder::on(&body)
            .margin(16)
            .margin_right(32)
            .x_label_area_size(56)
            .y_label_area_size(24 + 9 * longest as u32)
            .build_cartesian_2d(0.0..x_max, RowAxis { bars: n })?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(what)
            .y_desc("transport")
            .x_label_formatter(&|x| rate_text(*x))
            .y_labels(n.max(1))
            .y_label_formatter(&|y| {
                let k = RowAxis { bars: n }.bar_at(*y);
                names.get(k).cloned().unwrap_or_default()
            })
            .axis_desc_style((FONT, 16))
            .label_style((FONT, 14))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        // The first row's bar on top.
        let axis = RowAxis { bars: n };
        for (k, (name, rate)) in bars.iter().enumerate() {
            let c = (self.colour)(name);
            let y = axis.bottom_of(k);
            let fill = if is_touch(name) {
                c.mix(0.45).filled()
            } else {
                c.filled()
            };
            let bar = Rectangle::new([(0.0, y + 0.15), (*rate, y + 0.85)], fill);
            chart.draw_series(std::iter::once(bar))?;
            chart.draw_series(std::iter::once(Text::new(
                format!(" {}/s", rate_text(*rate)),
                (*rate, y + 0.5),
                TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
            )))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_percentile_axis_is_labelled_in_nines() {
        let labels: Vec<String> = [nines(0.5), 1.0, 2.0, 3.0, 4.0]
            .iter()
            .map(|&x| percentile_text(x))
            .collect();
        assert_eq!(labels, ["p50", "p90", "p99", "p99.9", "p99.99"]);
        let axis = NinesAxis;
        assert_eq!(axis.key_points(5usize).len(), 5);
        assert!(axis.map(&nines(0.5), (0, 1000)) < axis.map(&1.0, (0, 1000)));
        assert!(axis.map(&4.0, (0, 1000)) <= 1000);
    }

    #[test]
    fn bars_run_from_the_top_and_a_lone_bar_is_not_a_slab() {
        let axis = RowAxis { bars: 2 };
        assert_eq!(axis.range(), 0.0..4.0);
        assert_eq!(axis.bottom_of(0), 3.0);
        assert_eq!(axis.bar_at(3.5), 0);
        assert_eq!(axis.bar_at(2.5), 1);
        assert_eq!(axis.key_points(10usize), [3.5, 2.5]);
        let axis = RowAxis { bars: 6 };
        assert_eq!(axis.range(), 0.0..6.0);
        assert_eq!(axis.bar_at(0.5), 5);
    }

    #[test]
    fn numbers_read_short() {
        assert_eq!(ns_text(100.0), "100");
        assert_eq!(ns_text(1000.0), "1k");
        assert_eq!(ns_text(10_000_000.0), "10M");
        assert_eq!(rate_text(1_234_567.0), "1.23M");
        assert_eq!(rate_text(950.0), "950");
        assert_eq!(size_text(64), "64 B");
        assert_eq!(size_text(65536), "64 KiB");
        assert_eq!(size_text(1_048_576), "1 MiB");
    }
}
