//! Reading the admin listener from tests: its pages, and the Prometheus text format parsed into
//! series.
#![allow(dead_code)]

use super::http_client::{HttpResponse, Upload, request};
use fcgi_uring::{Addr, ServerHandle};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The admin listener's TCP address of a server started with `admin.listen` on TCP.
pub fn admin_addr(server: &ServerHandle) -> SocketAddr {
    match server.admin_addr() {
        Some(Addr::Tcp(sa)) => *sa,
        other => panic!("no TCP admin listener: {other:?}"),
    }
}

pub fn get(admin: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    request(admin, "GET", path, headers, Upload::None)
}

/// A scraped page: each series (`name{labels}` as printed) with its value.
#[derive(Debug, Default)]
pub struct Page {
    pub text: String,
    pub series: BTreeMap<String, f64>,
}

impl Page {
    pub fn parse(text: &str) -> Page {
        let mut series = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (name, value) = line.rsplit_once(' ').expect("series value");
            let v: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
            assert!(series.insert(name.to_owned(), v).is_none(), "{name} twice");
        }
        Page {
            text: text.to_owned(),
            series,
        }
    }

    /// The value of `series`, which must exist.
    pub fn get(&self, series: &str) -> f64 {
        *self
            .series
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in:\n{}", self.text))
    }

    /// Like [`Page::get`], as an integer.
    pub fn n(&self, series: &str) -> u64 {
        self.get(series) as u64
    }

    /// Checks that every `fcgi_uring_worker_*` series, summed over its `worker` label, is the
    /// total series of the same name without `worker_` (histogram sums within rounding).
    pub fn check_worker_sums(&self) {
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        for (name, v) in &self.series {
            let Some(rest) = name.strip_prefix("fcgi_uring_worker_") else {
                continue;
            };
            let (family, labels) = rest.split_once('{').expect("a worker label");
            let labels = labels.trim_end_matches('}');
            let others: Vec<&str> = labels
                .split(',')
                .filter(|l| !l.starts_with("worker="))
                .collect();
            let key = if others.is_empty() {
                format!("fcgi_uring_{family}")
            } else {
                format!("fcgi_uring_{family}{{{}}}", others.join(","))
            };
            *sums.entry(key).or_default() += v;
        }
        assert!(!sums.is_empty(), "no per-worker series");
        for (key, sum) in &sums {
            let total = self.get(key);
            assert!(
                (total - sum).abs() <= 1e-6 * total.abs().max(1.0),
                "{key}: total {total}, workers sum to {sum}"
            );
        }
    }
}

/// GET /metrics in the Prometheus text format, parsed.
pub fn scrape(admin: SocketAddr) -> Page {
    let r = get(admin, "/metrics", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Page::parse(&String::from_utf8(r.body).expect("utf-8 page"))
}
