//! How long and how often to measure: the full run (about 28 minutes on 2 cores) and the
//! quick smoke run CI executes (every topology and workload once, about two minutes).

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Plan {
    pub quick: bool,
    /// Interleaved rounds: each round measures every topology once (A/B/C/D, rotated).
    pub samples: usize,
    /// iperf3 run length (whole seconds: iperf3's -t).
    pub iperf_secs: u32,
    /// sockperf run length (it adds 400 ms of warm-up).
    pub sockperf_secs: u32,
    /// wrk run length.
    pub wrk_secs: u32,
    /// UDP flood length.
    pub blast: Duration,
    /// "Other published ports" / "isolation rules" counts for the rate-vs-count workloads.
    pub counts: Vec<usize>,
    /// Samples of one control-plane update (and of one `docker run`).
    pub update_samples: usize,
    /// "Other published containers" counts of the docker workload (each one a container).
    pub docker_counts: Vec<usize>,
}

impl Plan {
    pub fn full() -> Self {
        Self {
            quick: false,
            samples: 3,
            iperf_secs: 3,
            sockperf_secs: 2,
            wrk_secs: 3,
            blast: Duration::from_secs(3),
            counts: vec![0, 1_000, 10_000],
            update_samples: 5,
            // Not 1,000: at 1,000 on both Docker topologies at once their shims and
            // docker-proxies need ~36,000 threads, past this machine's pid_max (32,768).
            docker_counts: vec![0, 100, 500],
        }
    }

    pub fn quick() -> Self {
        Self {
            quick: true,
            samples: 1,
            iperf_secs: 1,
            sockperf_secs: 1,
            wrk_secs: 1,
            blast: Duration::from_millis(700),
            counts: vec![0, 100],
            update_samples: 1,
            docker_counts: vec![0, 10],
        }
    }

    pub fn with_samples(mut self, n: Option<usize>) -> Self {
        if let Some(n) = n {
            self.samples = n.max(1);
        }
        self
    }
}
