//! Statistics: round-trip histograms, per-round medians, ratios to the floor, and the
//! result rows the reports print.

use hdrhistogram::Histogram;

use super::transport::LatencyKind;

/// Largest recordable round trip: 60 s in ns (larger values saturate).
const MAX_RECORDABLE_NS: u64 = 60_000_000_000;

/// A histogram of round-trip times in ns with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_RECORDABLE_NS, 3).expect("constant bounds are valid")
}

/// All round trips of one row (transport, touch) for one payload size.
pub struct LatencyRecord {
    /// Every recorded round trip over all rounds.
    pub total: Histogram<u64>,
    /// Median round trip of each round, indexed by round (None: round not run).
    pub round_p50: Vec<Option<u64>>,
}

impl LatencyRecord {
    /// An empty record for `rounds` rounds.
    pub fn new(rounds: usize) -> Self {
        Self {
            total: new_histogram(),
            round_p50: vec![None; rounds],
        }
    }

    /// Adds the round trips of round `round`.
    pub fn add_round(&mut self, round: usize, hist: &Histogram<u64>) {
        if hist.is_empty() {
            return;
        }
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.total.add(hist);
        self.round_p50[round] = Some(hist.value_at_quantile(0.5));
    }

    /// Latency summary, if anything was recorded: one-way (round trip / 2, `pubsub`) or
    /// the full round trip (`rpc`), as `kind` says.
    pub fn summary(&self, kind: LatencyKind) -> Option<LatencySummary> {
        LatencySummary::of(&self.total, |rtt| match kind {
            LatencyKind::OneWay => rtt.div_ceil(2),
            LatencyKind::RoundTrip => rtt,
        })
    }

    /// Median over rounds of (this row's round p50 / the floor's p50 in the same round).
    pub fn ratio_to(&self, floor: &LatencyRecord) -> Option<f64> {
        let ratios = self
            .round_p50
            .iter()
            .zip(&floor.round_p50)
            .filter_map(|(mine, base)| match (mine, base) {
                (Some(m), Some(b)) if *b > 0 => Some(*m as f64 / *b as f64),
                _ => None,
            })
            .collect();
        median(ratios)
    }
}

/// Latency percentiles in ns: one-way for `pubsub`, round trip for `rpc` (see
/// [`LatencyKind`]).
#[derive(Clone, Copy, Debug)]
pub struct LatencySummary {
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest.
    pub max_ns: u64,
    /// Number of round trips (`queue`: messages) behind the numbers.
    pub samples: u64,
    /// The latency at each of [`curve_quantile`]`(0..CURVE_POINTS)`: p50 up to p99.99, evenly
    /// spaced on the HdrHistogram-style `log10(1 / (1 - q))` axis (the `--plot` curves).
    pub curve: [u64; CURVE_POINTS],
}

/// Points of [`LatencySummary::curve`].
pub const CURVE_POINTS: usize = 16;

/// Position of a quantile `q` on the percentile axis of the plots: `log10(1 / (1 - q))`, so
/// p90 is 1, p99 is 2, p99.9 is 3 and p99.99 is 4 (p50 is log10 2, about 0.3).
pub fn nines(q: f64) -> f64 {
    -(1.0 - q).log10()
}

/// Quantile of curve point `i`: p50 first, then 0.5, 0.75, … 4.0 on the [`nines`] axis (p99.99
/// last).
pub fn curve_quantile(i: usize) -> f64 {
    if i == 0 {
        0.5
    } else {
        // Rounded so that p90, p99, … are the same quantiles as the table's.
        let q = 1.0 - 10f64.powf(-0.25 * (i + 1) as f64);
        (q * 1e12).round() / 1e12
    }
}

impl LatencySummary {
    /// Percentiles of `hist`, each passed through `scale` (None if `hist` is empty).
    pub fn of(hist: &Histogram<u64>, scale: impl Fn(u64) -> u64) -> Option<Self> {
        if hist.is_empty() {
            return None;
        }
        Some(Self {
            p50_ns: scale(hist.value_at_quantile(0.5)),
            p99_ns: scale(hist.value_at_quantile(0.99)),
            p999_ns: scale(hist.value_at_quantile(0.999)),
            max_ns: scale(hist.max()),
            samples: hist.len(),
            curve: std::array::from_fn(|i| scale(hist.value_at_quantile(curve_quantile(i)))),
        })
    }
}

/// Median of `values` (mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// One line of the report.
#[derive(Clone, Debug)]
pub struct Row {
    /// Transport name, with "+touch" appended for touch rows.
    pub transport: String,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// Whether sender and receiver touched every byte.
    pub touch: bool,
    /// Latency: one-way for `pubsub` and `queue`, round trip for `rpc` (None for
    /// streaming-only transports).
    pub latency: Option<LatencySummary>,
    /// Median over streaming rounds of messages per second (`pubsub`) or pipelined calls
    /// per second (`rpc`).
    pub msgs_per_s: Option<f64>,
    /// Median over rounds of round p50 / floor round p50.
    pub ratio_p50_to_floor: Option<f64>,
    /// `rpc` only: pipelined calls/s x round-trip p50 in seconds, i.e. how many calls
    /// pipelining keeps in flight on average (1 = no gain over call-after-call).
    pub pipelined_x_rtt: Option<f64>,
    /// `queue` only: producers and consumers (processes; threads for `crossbeam`).
    pub shape: Option<(usize, usize)>,
    /// `queue` only: median over rounds of this row's msgs/s divided by the msgs/s of its
    /// reference row (same size and shape) in the same round, and the reference's name.
    pub rate_ratio: Option<(f64, &'static str)>,
}

/// Pipelined calls/s times the round-trip p50 (ns) in seconds.
pub fn pipelined_x_rtt(calls_per_s: Option<f64>, rtt_p50_ns: Option<u64>) -> Option<f64> {
    match (calls_per_s, rtt_p50_ns) {
        (Some(rate), Some(rtt)) if rtt > 0 => Some(rate * rtt as f64 * 1e-9),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }

    #[test]
    fn ratio_uses_same_round_and_skips_missing() {
        let mut floor = LatencyRecord::new(3);
        let mut other = LatencyRecord::new(3);
        for (round, (f, o)) in [(100, 400), (500, 1000), (100, 300)]
            .into_iter()
            .enumerate()
        {
            let mut hf = new_histogram();
            hf.record(f).unwrap();
            floor.add_round(round, &hf);
            if round != 2 {
                let mut ho = new_histogram();
                ho.record(o).unwrap();
                other.add_round(round, &ho);
            }
        }
        // Rounds 0 and 1 only: ratios 4.0 and 2.0.
        let ratio = other.ratio_to(&floor).unwrap();
        assert!((ratio - 3.0).abs() < 0.01, "{ratio}");
        let s = other.summary(LatencyKind::OneWay).unwrap();
        assert_eq!(s.samples, 2);
        assert!(
            s.p50_ns >= 200 && s.p50_ns <= 201,
            "one-way is half the round trip"
        );
        let rt = other.summary(LatencyKind::RoundTrip).unwrap();
        assert!(
            rt.p50_ns >= 400 && rt.p50_ns <= 401,
            "round trip is not halved"
        );
        assert_eq!(rt.samples, 2);
    }

    #[test]
    fn the_curve_runs_from_p50_to_p99_99() {
        assert_eq!(curve_quantile(0), 0.5);
        assert!((nines(curve_quantile(3)) - 1.0).abs() < 1e-9, "p90");
        assert!((curve_quantile(CURVE_POINTS - 1) - 0.9999).abs() < 1e-12);
        let mut h = new_histogram();
        for v in 1..=100_000u64 {
            h.record(v).unwrap();
        }
        let s = LatencySummary::of(&h, |v| v).unwrap();
        assert!(s.curve.windows(2).all(|w| w[0] <= w[1]), "{:?}", s.curve);
        assert_eq!(s.curve[0], s.p50_ns);
        assert_eq!(s.curve[7], s.p99_ns);
        assert_eq!(s.curve[11], s.p999_ns);
        assert!(s.curve[CURVE_POINTS - 1] >= 99_900, "{:?}", s.curve);
    }

    #[test]
    fn pipelined_x_rtt_multiplies_rate_by_round_trip() {
        let x = pipelined_x_rtt(Some(2_000_000.0), Some(1500)).unwrap();
        assert!((x - 3.0).abs() < 1e-9, "{x}");
        assert_eq!(pipelined_x_rtt(None, Some(1500)), None);
        assert_eq!(pipelined_x_rtt(Some(1.0), None), None);
        assert_eq!(pipelined_x_rtt(Some(1.0), Some(0)), None);
    }
}
