//! Prometheus metrics for the node's gateway and the hub: request counts and latency histograms per route, and
//! gauges read at scrape time. A few dozen lines of text format, not a framework.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Latency buckets, in seconds.
const BUCKETS_SECONDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS_SECONDS.len()],
    count: u64,
    sum: f64,
}

/// Request metrics by `(method, route)` and status.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
    counters: Mutex<BTreeMap<String, u64>>,
    gauges: Mutex<BTreeMap<String, u64>>,
    histograms: Mutex<BTreeMap<String, Histogram>>,
}

impl Histogram {
    fn add(&mut self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (index, bound) in BUCKETS_SECONDS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[index] += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

impl Metrics {
    /// Records one finished request.
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests
                .entry((method.to_owned(), route.to_owned(), status))
                .or_default() += 1;
        }
        if let Ok(mut latency) = self.latency.lock() {
            latency
                .entry((method.to_owned(), route.to_owned()))
                .or_default()
                .add(elapsed);
        }
    }

    /// Records a duration in a histogram series, e.g.
    /// `meridian_hub_upstream_seconds{kind="hub"}`.
    pub fn observe(&self, series: &str, elapsed: Duration) {
        if let Ok(mut histograms) = self.histograms.lock() {
            histograms
                .entry(series.to_owned())
                .or_default()
                .add(elapsed);
        }
    }

    /// Adds to a counter series, e.g. `meridian_imports_total{outcome="accepted"}`.
    pub fn count(&self, name: &str, by: u64) {
        if let Ok(mut counters) = self.counters.lock() {
            *counters.entry(name.to_owned()).or_default() += by;
        }
    }

    /// A counter series' value so far (0 if never counted).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .map(|c| c.get(name).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Sets a gauge series, e.g. `meridian_sync_peers`.
    pub fn set_gauge(&self, name: &str, value: u64) {
        if let Ok(mut gauges) = self.gauges.lock() {
            gauges.insert(name.to_owned(), value);
        }
    }

    /// Replaces every series of the gauge `name` (whatever their labels) with `series`, given
    /// as `(labels, value)`, e.g. `("publisher=\"did:key:z6Mk...\"", 3)`: a series not given
    /// any more is dropped, so a labelled gauge shows only what is true now.
    pub fn set_gauge_family(&self, name: &str, series: &[(String, u64)]) {
        if let Ok(mut gauges) = self.gauges.lock() {
            let prefix = format!("{name}{{");
            gauges.retain(|key, _| !key.starts_with(&prefix));
            for (labels, value) in series {
                gauges.insert(format!("{name}{{{labels}}}"), *value);
            }
        }
    }

    /// The text exposition, with `gauges` appended as `(name, help, value)`.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP meridian_http_requests_total HTTP requests by method, route and status.\n",
        );
        out.push_str("# TYPE meridian_http_requests_total counter\n");
        if let Ok(requests) = self.requests.lock() {
            for ((method, route, status), count) in requests.iter() {
                let _ = writeln!(
                    out,
                    "meridian_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}"
                );
            }
        }
        out.push_str("# HELP meridian_http_request_duration_seconds HTTP request latency by method and route.\n");
        out.push_str("# TYPE meridian_http_request_duration_seconds histogram\n");
        if let Ok(latency) = self.latency.lock() {
            for ((method, route), histogram) in latency.iter() {
                let labels = format!("method=\"{method}\",route=\"{route}\"");
                for (index, bound) in BUCKETS_SECONDS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "meridian_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                        histogram.counts[index]
                    );
                }
                let _ = writeln!(
                    out,
                    "meridian_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    histogram.count
                );
                let _ = writeln!(
                    out,
                    "meridian_http_request_duration_seconds_sum{{{labels}}} {}",
                    histogram.sum
                );
                let _ = writeln!(
                    out,
                    "meridian_http_request_duration_seconds_count{{{labels}}} {}",
                    histogram.count
                );
            }
        }
        if let Ok(histograms) = self.histograms.lock() {
            let mut typed = std::collections::BTreeSet::new();
            for (series, histogram) in histograms.iter() {
                let (base, labels) = match series.split_once('{') {
                    Some((base, rest)) => (base, format!("{},", rest.trim_end_matches('}'))),
                    None => (series.as_str(), String::new()),
                };
                if typed.insert(base.to_owned()) {
                    let _ = writeln!(out, "# TYPE {base} histogram");
                }
                for (index, bound) in BUCKETS_SECONDS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{base}_bucket{{{labels}le=\"{bound}\"}} {}",
                        histogram.counts[index]
                    );
                }
                let _ = writeln!(
                    out,
                    "{base}_bucket{{{labels}le=\"+Inf\"}} {}",
                    histogram.count
                );
                let plain = labels.trim_end_matches(',');
                let _ = writeln!(out, "{base}_sum{{{plain}}} {}", histogram.sum);
                let _ = writeln!(out, "{base}_count{{{plain}}} {}", histogram.count);
            }
        }
        if let Ok(counters) = self.counters.lock() {
            let mut typed = std::collections::BTreeSet::new();
            for (series, value) in counters.iter() {
                let base = series.split('{').next().unwrap_or(series);
                if typed.insert(base.to_owned()) {
                    let _ = writeln!(out, "# TYPE {base} counter");
                }
                let _ = writeln!(out, "{series} {value}");
            }
        }
        if let Ok(set) = self.gauges.lock() {
            let mut typed = std::collections::BTreeSet::new();
            for (series, value) in set.iter() {
                let base = series.split('{').next().unwrap_or(series);
                if typed.insert(base.to_owned()) {
                    let _ = writeln!(out, "# TYPE {base} gauge");
                }
                let _ = writeln!(out, "{series} {value}");
            }
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_family_is_replaced_whole_and_typed_once() {
        let metrics = Metrics::default();
        let series = |pairs: &[(&str, u64)]| -> Vec<(String, u64)> {
            pairs
                .iter()
                .map(|(p, v)| (format!("publisher=\"{p}\""), *v))
                .collect()
        };
        metrics.set_gauge_family("lag", &series(&[("a", 3), ("b", 1)]));
        let text = metrics.render(&[]);
        assert_eq!(text.matches("# TYPE lag gauge").count(), 1, "{text}");
        assert!(text.contains("lag{publisher=\"a\"} 3"));
        assert!(text.contains("lag{publisher=\"b\"} 1"));
        // b caught up: its series goes.
        metrics.set_gauge_family("lag", &series(&[("a", 2)]));
        let text = metrics.render(&[]);
        assert!(text.contains("lag{publisher=\"a\"} 2"));
        assert!(!text.contains("publisher=\"b\""), "{text}");
        metrics.set_gauge_family("lag", &[]);
        assert!(!metrics.render(&[]).contains("lag{"));
    }
}
