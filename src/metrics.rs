//! Counters for `/metrics` (Prometheus text format, on the admin listener).
//!
//! A dozen atomics written by hand rather than a metrics crate: the set is
//! fixed, and the exposition format for counters and one histogram is a few
//! lines. Nothing here carries a MAC, a name or a secret.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::domain::transport::Transport;
use crate::store::StoreState;

/// What became of a request.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// A rendered file was served.
    Served,
    /// A firmware image was served.
    Firmware,
    /// Not found: unknown file or MAC, or a failure.
    NotFound,
    /// Refused by the policy (network, ban, User-Agent MAC): answered as not found.
    Refused,
    /// Not answerable now (the store is unavailable): answered "busy".
    Busy,
}

const OUTCOMES: [(Outcome, &str); 5] = [
    (Outcome::Served, "served"),
    (Outcome::Firmware, "firmware"),
    (Outcome::NotFound, "not_found"),
    (Outcome::Refused, "refused"),
    (Outcome::Busy, "busy"),
];
const TRANSPORTS: [(Transport, &str); 2] = [(Transport::Http, "http"), (Transport::Tftp, "tftp")];
/// Render-time histogram bucket bounds, in seconds.
const RENDER_BUCKETS: [f64; 6] = [0.0001, 0.0005, 0.001, 0.005, 0.02, 0.1];

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Vendor names, in the order of `served_by_vendor`.
    vendors: Vec<String>,
    vendor_slots: HashMap<String, usize>,
    /// Files served, by vendor, then transport (HTTP, TFTP).
    served_by_vendor: Vec<[AtomicU64; 2]>,
    requests: [[AtomicU64; OUTCOMES.len()]; 2],
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    render_buckets: [AtomicU64; 6],
    render_count: AtomicU64,
    render_micros: AtomicU64,
    unknown_macs: AtomicU64,
    render_failures: AtomicU64,
    tftp_resends: AtomicU64,
    tftp_abandoned: AtomicU64,
    http_throttled: AtomicU64,
    /// Shared with the HTTP listeners' gates, which count into it.
    http_connections_refused: Arc<AtomicU64>,
}

/// Values read at scrape time from elsewhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// TFTP transfers in flight.
    pub tftp_transfers: usize,
    /// Bans in force.
    pub bans: usize,
    /// Devices in the store.
    pub devices: usize,
    /// Users in the store.
    pub users: usize,
    /// The store's size on disk.
    pub store_bytes: u64,
    /// The rendered files the cache holds, in bytes.
    pub render_cache_bytes: usize,
    /// Whether the store takes changes.
    pub store_state: StoreState,
}

fn transport_slot(transport: Transport) -> usize {
    match transport {
        Transport::Http => 0,
        Transport::Tftp => 1,
    }
}

impl Metrics {
    /// Counters for a catalog's vendors (a name given twice is counted once).
    pub fn new<'a>(vendors: impl IntoIterator<Item = &'a str>) -> Self {
        let mut metrics = Metrics::default();
        for name in vendors {
            if !metrics.vendor_slots.contains_key(name) {
                metrics
                    .vendor_slots
                    .insert(name.to_string(), metrics.vendors.len());
                metrics.vendors.push(name.to_string());
                metrics.served_by_vendor.push(Default::default());
            }
        }
        metrics
    }

    /// Counts a file served for a vendor's phone.
    pub fn served(&self, transport: Transport, vendor: &str) {
        if let Some(&slot) = self.vendor_slots.get(vendor) {
            self.served_by_vendor[slot][transport_slot(transport)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one request.
    pub fn request(&self, transport: Transport, outcome: Outcome) {
        self.requests[transport_slot(transport)][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a render-cache lookup.
    pub fn cache(&self, hit: bool) {
        let counter = if hit {
            &self.cache_hits
        } else {
            &self.cache_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request for a MAC that is not provisioned.
    pub fn unknown_mac(&self) {
        self.unknown_macs.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a render that failed for one device.
    pub fn render_failure(&self) {
        self.render_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a TFTP packet sent again after the client's silence.
    pub fn tftp_resend(&self) {
        self.tftp_resends.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a TFTP transfer given up after every resend went unanswered.
    pub fn tftp_abandoned(&self) {
        self.tftp_abandoned.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an HTTP answer held back from a client suspected of scanning.
    pub fn http_throttled(&self) {
        self.http_throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// The counter the HTTP listeners add each connection to that they
    /// closed at once because its address held its share.
    pub fn http_connections_refused(&self) -> Arc<AtomicU64> {
        self.http_connections_refused.clone()
    }

    /// Records how long one render took.
    pub fn render(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bound, bucket) in RENDER_BUCKETS.iter().zip(&self.render_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.render_count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.render_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of everything.
    pub fn exposition(&self, gauges: Gauges) -> String {
        let mut out = String::new();
        self.write_requests(&mut out);
        self.write_counters(&mut out);
        self.write_render_seconds(&mut out);
        write_gauges(&mut out, &gauges);
        out
    }

    /// Requests by transport and outcome, files served by vendor and transport.
    fn write_requests(&self, out: &mut String) {
        out.push_str("# HELP deskboot_requests_total Phone requests by transport and outcome.\n");
        out.push_str("# TYPE deskboot_requests_total counter\n");
        for (t, (_, transport)) in TRANSPORTS.iter().enumerate() {
            for (o, (_, outcome)) in OUTCOMES.iter().enumerate() {
                let n = load(&self.requests[t][o]);
                let _ = writeln!(
                    out,
                    "deskboot_requests_total{{transport=\"{transport}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP deskboot_served_total Files served by phone vendor and transport.\n");
        out.push_str("# TYPE deskboot_served_total counter\n");
        for (vendor, counts) in self.vendors.iter().zip(&self.served_by_vendor) {
            for (t, (_, transport)) in TRANSPORTS.iter().enumerate() {
                let n = load(&counts[t]);
                let _ = writeln!(
                    out,
                    "deskboot_served_total{{transport=\"{transport}\",vendor=\"{vendor}\"}} {n}"
                );
            }
        }
    }

    /// The plain counters: name, help, value.
    fn write_counters(&self, out: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 8] = [
            (
                "deskboot_render_cache_hits_total",
                "Answers served from the render cache.",
                &self.cache_hits,
            ),
            (
                "deskboot_render_cache_misses_total",
                "Answers that had to be rendered.",
                &self.cache_misses,
            ),
            (
                "deskboot_unknown_mac_requests_total",
                "Requests for MACs that are not provisioned.",
                &self.unknown_macs,
            ),
            (
                "deskboot_render_failures_total",
                "Renders that failed for a device (its last good file is served).",
                &self.render_failures,
            ),
            (
                "deskboot_tftp_retransmits_total",
                "TFTP packets (OACK or a window of DATA) resent after a timeout.",
                &self.tftp_resends,
            ),
            (
                "deskboot_tftp_abandoned_total",
                "TFTP transfers given up: the client stopped answering.",
                &self.tftp_abandoned,
            ),
            (
                "deskboot_http_throttled_total",
                "HTTP answers held back half a second: the client is suspected of scanning.",
                &self.http_throttled,
            ),
            (
                "deskboot_http_connections_refused_total",
                "HTTP connections closed at once: their address held its share (http_max_connections_per_source).",
                self.http_connections_refused.as_ref(),
            ),
        ];
        for (name, help, value) in counters {
            counter(out, name, help, load(value));
        }
    }

    /// The render time histogram.
    fn write_render_seconds(&self, out: &mut String) {
        out.push_str("# HELP deskboot_render_seconds Time to render one file.\n");
        out.push_str("# TYPE deskboot_render_seconds histogram\n");
        for (bound, bucket) in RENDER_BUCKETS.iter().zip(&self.render_buckets) {
            let _ = writeln!(
                out,
                "deskboot_render_seconds_bucket{{le=\"{bound}\"}} {}",
                load(bucket)
            );
        }
        let count = load(&self.render_count);
        let _ = writeln!(out, "deskboot_render_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum = load(&self.render_micros) as f64 / 1e6;
        let _ = writeln!(out, "deskboot_render_seconds_sum {sum}");
        let _ = writeln!(out, "deskboot_render_seconds_count {count}");
    }
}

/// The gauges read at scrape time, and the store's state.
fn write_gauges(out: &mut String, gauges: &Gauges) {
    let values: [(&str, &str, u64); 6] = [
        (
            "deskboot_tftp_transfers",
            "TFTP transfers in flight.",
            gauges.tftp_transfers as u64,
        ),
        (
            "deskboot_bans",
            "Clients banned for scanning.",
            gauges.bans as u64,
        ),
        (
            "deskboot_devices",
            "Devices in the store.",
            gauges.devices as u64,
        ),
        ("deskboot_users", "Users in the store.", gauges.users as u64),
        (
            "deskboot_store_bytes",
            "The store's size on disk.",
            gauges.store_bytes,
        ),
        (
            "deskboot_render_cache_bytes",
            "Rendered files held by the render cache, in bytes.",
            gauges.render_cache_bytes as u64,
        ),
    ];
    for (name, help, value) in values {
        gauge(out, name, help, value);
    }
    out.push_str(
        "# HELP deskboot_store_state The store's state (1 for the one it is in): ok, read_only (disk full), failed.\n",
    );
    out.push_str("# TYPE deskboot_store_state gauge\n");
    for state in StoreState::ALL {
        let current = u8::from(state == gauges.store_state);
        let _ = writeln!(
            out,
            "deskboot_store_state{{state=\"{}\"}} {current}",
            state.name()
        );
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}
