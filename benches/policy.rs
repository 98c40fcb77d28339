//! Cedar decision latency (issue 24): p50/p99/max of one `delegate` decision with 10, 1,000 and
//! 10,000 policies, on one thread (`cargo bench --bench policy`). Each decision builds the
//! request from typed values (principal with owner and tags, context with scopes, chain and
//! authorization_details), as the token exchange does.

use std::time::{Duration, Instant};
use tessera::testing::PolicyBench;

fn main() {
    for n in [10usize, 1_000, 10_000] {
        let t0 = Instant::now();
        let b = PolicyBench::new(n);
        let load = t0.elapsed();
        // Warm up, then time decisions one by one.
        for i in 0..2_000 {
            assert!(b.decide(i));
        }
        let rounds = 50_000;
        let mut samples: Vec<Duration> = Vec::with_capacity(rounds);
        for i in 0..rounds {
            let t = Instant::now();
            let ok = b.decide(i.wrapping_mul(7919));
            samples.push(t.elapsed());
            assert!(ok);
        }
        samples.sort();
        let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
        println!(
            "policies={:>6}  load={:>8.1?}  p50={:>7.1?}  p99={:>7.1?}  max={:>8.1?}  ({} decisions, 1 thread)",
            b.policies(),
            load,
            pct(0.50),
            pct(0.99),
            samples[samples.len() - 1],
            rounds
        );
    }
}
