//! kuutamod's Prometheus metrics, in a registry of their own (no global state).

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use tokio::time::Instant;

use crate::machine::State;

/// The `reason` labels of `kuutamod_hot_swap_fallbacks_total`.
pub const HOT_SWAP_FALLBACKS: [&str; 3] = ["unconfirmed", "neard_too_old", "demotion_unconfirmed"];

/// The `op` labels of `kuutamod_consul_requests_total` and `kuutamod_consul_errors_total`.
pub const CONSUL_OPS: [&str; 9] = [
    "create",
    "renew",
    "heartbeat",
    "acquire",
    "release",
    "destroy",
    "read",
    "watch",
    "publish",
];

/// The metrics, handed to whoever updates them.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    started: Instant,
    /// `kuutamod_neard_restarts`: how often neard was restarted (the first start not counted).
    pub neard_restarts: IntCounter,
    /// `kuutamod_state{type}`: 1 for the current state, 0 for the others.
    pub state: IntGaugeVec,
    /// `kuutamod_uptime`: milliseconds since start (set when scraped).
    pub uptime: IntGauge,
    /// `kuutamod_failover_duration_seconds`: from lock acquired to the key confirmed live.
    pub failover_duration: Histogram,
    /// `kuutamod_hot_swap_fallbacks_total{reason}`: hot swaps that fell back to a restart.
    pub hot_swap_fallbacks: IntCounterVec,
    /// `kuutamod_step_downs_total{reason}`: times this node gave up validating.
    pub step_downs: IntCounterVec,
    /// `kuutamod_consul_requests_total{op}`: Consul requests sent.
    pub consul_requests: IntCounterVec,
    /// `kuutamod_paused`: 1 while the cluster is paused (`kuutamoctl pause`).
    pub paused: IntGauge,
    /// `kuutamod_priority`: this node's priority (0: never takes the lock).
    pub priority: IntGauge,
    /// `kuutamod_may_take_over`: 1 while this node is a standby that would take over now.
    pub may_take_over: IntGauge,
    /// `kuutamod_doppelganger`: 1 while our account produces what this cluster did not sign.
    pub doppelganger: IntGauge,
    /// `kuutamod_guard_up`: 1 while the guard process runs and acknowledges.
    pub guard_up: IntGauge,
    /// `kuutamod_lock_held`: 1 while this node holds the leader lock (promoting, validating,
    /// or fencing and releasing).
    pub lock_held: IntGauge,
    /// `kuutamod_consul_up`: 1 when the last Consul request succeeded, 0 when it failed.
    pub consul_up: IntGauge,
    /// `kuutamod_not_signing_seconds`: how long this node has held the lock without signing
    /// (promoting with its key not live yet, or validating with its neard's head unchanged or
    /// syncing); 0 otherwise.
    pub not_signing: prometheus::Gauge,
    /// `kuutamod_node_id_conflict`: 1 once another kuutamod process wrote this node's status
    /// record (two hosts with one `KUUTAMO_NODE_ID`).
    pub node_id_conflict: IntGauge,
    /// `kuutamod_wall_clock_trusted`: 0 while our wall clock is behind the chain's block
    /// timestamps (the height fence then does not read them).
    pub wall_clock_trusted: IntGauge,
    /// `kuutamod_consul_rewinds_total`: times the leader key showed an older record at a lower
    /// index than this node had seen (Consul's state rewound, a snapshot restore).
    pub consul_rewinds: IntCounter,
    /// `kuutamod_consul_errors_total{op}`: Consul requests that failed (no answer, an error
    /// status, garbage; a refused transaction or a lost session is an answer, not an error).
    pub consul_errors: IntCounterVec,
    /// `kuutamod_consul_request_duration_seconds{op}`: Consul request latency (blocking
    /// queries excluded).
    pub consul_latency: prometheus::HistogramVec,
    /// `kuutamod_validator_{blocks,chunks}_{produced,expected}{account_id}`: our account's
    /// production this epoch, from the local neard. Index: blocks produced, blocks expected,
    /// chunks produced, chunks expected.
    pub production: [IntGaugeVec; 4],
    /// `kuutamod_validator_production_ratio{account_id,kind}`: produced / expected this epoch
    /// (1 when nothing was expected).
    pub production_ratio: GaugeVec,
    /// `kuutamod_validator_kickout_margin{account_id,kind}`: the ratio minus the kickout
    /// threshold; below 0 the validator is kicked out at the end of the epoch.
    pub kickout_margin: GaugeVec,
}

impl Metrics {
    /// Creates and registers every metric; all `kuutamod_state` series exist from the start.
    pub fn new() -> Self {
        let registry = Registry::new();
        let neard_restarts =
            IntCounter::new("kuutamod_neard_restarts", "How often neard was restarted")
                .expect("valid metric");
        let state = IntGaugeVec::new(
            Opts::new(
                "kuutamod_state",
                "1 for kuutamod's current state, 0 for the others",
            ),
            &["type"],
        )
        .expect("valid metric");
        let uptime = IntGauge::new("kuutamod_uptime", "Milliseconds since kuutamod started")
            .expect("valid metric");
        let failover_duration = Histogram::with_opts(
            HistogramOpts::new(
                "kuutamod_failover_duration_seconds",
                "Time from acquiring the leader lock to neard confirming the validator key is live",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
        )
        .expect("valid metric");
        let hot_swap_fallbacks = IntCounterVec::new(
            Opts::new(
                "kuutamod_hot_swap_fallbacks_total",
                "Hot swaps of the validator key that fell back to restarting neard",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let step_downs = IntCounterVec::new(
            Opts::new(
                "kuutamod_step_downs_total",
                "Times this node stopped validating",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let consul_requests = IntCounterVec::new(
            Opts::new(
                "kuutamod_consul_requests_total",
                "Consul HTTP requests sent",
            ),
            &["op"],
        )
        .expect("valid metric");
        let paused = IntGauge::new(
            "kuutamod_paused",
            "1 while the cluster is paused: no automatic failover, no neard restarts",
        )
        .expect("valid metric");
        let priority = IntGauge::new(
            "kuutamod_priority",
            "This node's priority among the standbys (0: never takes the lock)",
        )
        .expect("valid metric");
        let may_take_over = IntGauge::new(
            "kuutamod_may_take_over",
            "1 while this node is a synced standby that would take over now",
        )
        .expect("valid metric");
        let doppelganger = IntGauge::new(
            "kuutamod_doppelganger",
            "1 while our validator account produces blocks or chunks this cluster did not sign",
        )
        .expect("valid metric");
        let guard_up = IntGauge::new(
            "kuutamod_guard_up",
            "1 while the guard process (which kills neard if kuutamod is paused) runs and acknowledges",
        )
        .expect("valid metric");
        let lock_held = IntGauge::new(
            "kuutamod_lock_held",
            "1 while this node holds the leader lock",
        )
        .expect("valid metric");
        let consul_up = IntGauge::new(
            "kuutamod_consul_up",
            "1 when the last Consul request succeeded, 0 when it failed",
        )
        .expect("valid metric");
        let not_signing = prometheus::Gauge::new(
            "kuutamod_not_signing_seconds",
            "How long this node has held the leader lock without signing (key not live yet, or neard's head unchanged or syncing); 0 otherwise",
        )
        .expect("valid metric");
        let node_id_conflict = IntGauge::new(
            "kuutamod_node_id_conflict",
            "1 once another kuutamod process wrote this node's status record: two hosts share one KUUTAMO_NODE_ID",
        )
        .expect("valid metric");
        let wall_clock_trusted = IntGauge::new(
            "kuutamod_wall_clock_trusted",
            "0 while this host's wall clock is behind the chain's block timestamps (the height fence then ignores them)",
        )
        .expect("valid metric");
        let consul_rewinds = IntCounter::new(
            "kuutamod_consul_rewinds_total",
            "Times the leader key showed an older record at a lower index than this node had seen (Consul's state rewound)",
        )
        .expect("valid metric");
        let consul_errors = IntCounterVec::new(
            Opts::new(
                "kuutamod_consul_errors_total",
                "Consul requests that got no usable answer",
            ),
            &["op"],
        )
        .expect("valid metric");
        let consul_latency = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "kuutamod_consul_request_duration_seconds",
                "Latency of Consul requests (blocking queries excluded)",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["op"],
        )
        .expect("valid metric");
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["account_id"]).expect("valid metric")
        };
        let production = [
            gauge(
                "kuutamod_validator_blocks_produced",
                "Blocks our validator account produced this epoch (from the local neard)",
            ),
            gauge(
                "kuutamod_validator_blocks_expected",
                "Blocks our validator account was assigned this epoch so far",
            ),
            gauge(
                "kuutamod_validator_chunks_produced",
                "Chunks our validator account produced this epoch (from the local neard)",
            ),
            gauge(
                "kuutamod_validator_chunks_expected",
                "Chunks our validator account was assigned this epoch so far",
            ),
        ];
        let production_ratio = GaugeVec::new(
            Opts::new(
                "kuutamod_validator_production_ratio",
                "Produced / expected this epoch (1 when nothing was expected)",
            ),
            &["account_id", "kind"],
        )
        .expect("valid metric");
        let kickout_margin = GaugeVec::new(
            Opts::new(
                "kuutamod_validator_kickout_margin",
                "Production ratio minus the kickout threshold; below 0 means kickout at the epoch's end",
            ),
            &["account_id", "kind"],
        )
        .expect("valid metric");
        for c in [
            Box::new(neard_restarts.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(doppelganger.clone()),
            Box::new(guard_up.clone()),
            Box::new(lock_held.clone()),
            Box::new(consul_up.clone()),
            Box::new(not_signing.clone()),
            Box::new(node_id_conflict.clone()),
            Box::new(wall_clock_trusted.clone()),
            Box::new(consul_rewinds.clone()),
            Box::new(consul_errors.clone()),
            Box::new(consul_latency.clone()),
            Box::new(production[0].clone()),
            Box::new(production[1].clone()),
            Box::new(production[2].clone()),
            Box::new(production[3].clone()),
            Box::new(production_ratio.clone()),
            Box::new(kickout_margin.clone()),
            Box::new(paused.clone()),
            Box::new(priority.clone()),
            Box::new(may_take_over.clone()),
            Box::new(state.clone()),
            Box::new(uptime.clone()),
            Box::new(failover_duration.clone()),
            Box::new(hot_swap_fallbacks.clone()),
            Box::new(step_downs.clone()),
            Box::new(consul_requests.clone()),
        ] {
            registry.register(c).expect("metric names are distinct");
        }
        let metrics = Metrics {
            registry,
            started: Instant::now(),
            neard_restarts,
            state,
            uptime,
            failover_duration,
            hot_swap_fallbacks,
            step_downs,
            consul_requests,
            paused,
            priority,
            may_take_over,
            doppelganger,
            guard_up,
            lock_held,
            consul_up,
            not_signing,
            node_id_conflict,
            wall_clock_trusted,
            consul_rewinds,
            consul_errors,
            consul_latency,
            production,
            production_ratio,
            kickout_margin,
        };
        metrics.set_state(State::Startup);
        metrics.wall_clock_trusted.set(1);
        // Every labelled series exists from the start, so that rate() and increase() see the
        // first event.
        for reason in crate::machine::StepDown::LABELS {
            metrics.step_downs.with_label_values(&[reason]).reset();
        }
        for reason in HOT_SWAP_FALLBACKS {
            metrics
                .hot_swap_fallbacks
                .with_label_values(&[reason])
                .reset();
        }
        for op in CONSUL_OPS {
            metrics.consul_requests.with_label_values(&[op]).reset();
            metrics.consul_errors.with_label_values(&[op]).reset();
        }
        metrics
    }

    /// Sets `kuutamod_state` to `current`.
    pub fn set_state(&self, current: State) {
        for s in State::ALL {
            self.state
                .with_label_values(&[s.name()])
                .set(i64::from(s == current));
        }
    }

    /// Re-exports our account's production from neard, with the ratios and the margins to the
    /// kickout thresholds (percent).
    pub fn set_production(
        &self,
        account: &str,
        p: &crate::doppelganger::Production,
        thresholds: (u8, u8),
    ) {
        let values = [
            p.blocks_produced,
            p.blocks_expected,
            p.chunks_produced,
            p.chunks_expected,
        ];
        for (g, v) in self.production.iter().zip(values) {
            g.with_label_values(&[account])
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        let ratio = |produced: u64, expected: u64| {
            if expected == 0 {
                1.0
            } else {
                produced as f64 / expected as f64
            }
        };
        for (kind, r, threshold) in [
            (
                "blocks",
                ratio(p.blocks_produced, p.blocks_expected),
                thresholds.0,
            ),
            (
                "chunks",
                ratio(p.chunks_produced, p.chunks_expected),
                thresholds.1,
            ),
        ] {
            self.production_ratio
                .with_label_values(&[account, kind])
                .set(r);
            self.kickout_margin
                .with_label_values(&[account, kind])
                .set(r - f64::from(threshold) / 100.0);
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        self.uptime
            .set(i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_is_present_from_the_start() {
        let m = Metrics::new();
        let text = m.render();
        for s in State::ALL {
            let want = format!(
                "kuutamod_state{{type=\"{}\"}} {}",
                s.name(),
                i32::from(s == State::Startup)
            );
            assert!(text.contains(&want), "{want} missing in\n{text}");
        }
        assert!(text.contains("kuutamod_neard_restarts 0"));
        assert!(text.contains("kuutamod_uptime "));
        m.set_state(State::Validating);
        assert!(m.render().contains("kuutamod_state{type=\"Validating\"} 1"));
        assert!(m.render().contains("kuutamod_state{type=\"Startup\"} 0"));
    }
}
