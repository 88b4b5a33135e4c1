//! Pool behaviour through its public API, plus property tests that set
//! endpoint states directly.

use std::sync::Mutex;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::breaker::BreakerState;
use crate::p2c;
use crate::rng::WyRand;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16))
}

fn specs(n: usize) -> Vec<EndpointSpec> {
    (0..n).map(|i| EndpointSpec::new(addr(i))).collect()
}

fn recording(config: PoolConfig, n: usize) -> (Pool, Arc<Mutex<Vec<Event>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink_events = Arc::clone(&events);
    let sink: EventSink = Arc::new(move |e: &Event| sink_events.lock().unwrap().push(e.clone()));
    let pool = Pool::with_events(config, &specs(n), Nanos::ZERO, sink);
    events.lock().unwrap().clear();
    (pool, events)
}

fn take(events: &Mutex<Vec<Event>>) -> Vec<Event> {
    std::mem::take(&mut *events.lock().unwrap())
}

fn pick(pool: &Pool, now: Nanos, rng: &mut WyRand) -> EndpointGuard {
    pool.pick(&PickRequest::default(), now, rng)
        .expect("a pick")
}

/// Sends `n` requests finishing with `outcome` right away, all at `now`.
fn run(pool: &Pool, n: usize, outcome: Outcome, now: Nanos, rng: &mut WyRand) -> Vec<SocketAddr> {
    (0..n)
        .map(|_| {
            let g = pick(pool, now, rng);
            let a = g.addr();
            g.finish(outcome, now);
            a
        })
        .collect()
}

fn only_outlier() -> PoolConfig {
    PoolConfig {
        breaker: BreakerConfig {
            failure_threshold: 0,
            ..BreakerConfig::default()
        },
        ..PoolConfig::default()
    }
}

fn only_breaker() -> PoolConfig {
    PoolConfig {
        outlier: OutlierConfig {
            consecutive_failures: 0,
            ..OutlierConfig::default()
        },
        ..PoolConfig::default()
    }
}

#[test]
fn every_balancer_picks_and_counts() {
    for balance in [
        Balance::P2c,
        Balance::Ewma,
        Balance::RoundRobin,
        Balance::Hash { bounded_load: None },
        Balance::hash_bounded(),
    ] {
        let pool = Pool::new(
            PoolConfig {
                balance,
                ..PoolConfig::default()
            },
            &specs(3),
            Nanos::ZERO,
        );
        let mut rng = WyRand::new(1);
        let guards: Vec<_> = (0..30)
            .map(|i| {
                pool.pick(&PickRequest::keyed(i), Nanos::ZERO, &mut rng)
                    .unwrap()
            })
            .collect();
        assert_eq!(pool.status(Nanos::ZERO).in_flight, 30, "{balance:?}");
        for g in guards {
            g.finish(Outcome::Success, Nanos::from_millis(5));
        }
        let status = pool.status(Nanos::from_millis(5));
        assert_eq!(status.in_flight, 0);
        let requests: u64 = status.endpoints.iter().map(|e| e.counters.requests).sum();
        let successes: u64 = status.endpoints.iter().map(|e| e.counters.successes).sum();
        assert_eq!((requests, successes), (30, 30), "{balance:?}");
        assert!(status.endpoints.iter().all(|e| e.in_flight == 0));
    }
}

#[test]
fn empty_pool_and_concurrency_cap() {
    let mut rng = WyRand::new(1);
    let empty = Pool::new(PoolConfig::default(), &[], Nanos::ZERO);
    assert_eq!(
        empty
            .pick(&PickRequest::default(), Nanos::ZERO, &mut rng)
            .unwrap_err(),
        PickError::NoEndpoints
    );
    let capped = Pool::new(
        PoolConfig {
            max_requests: Some(2),
            ..PoolConfig::default()
        },
        &specs(3),
        Nanos::ZERO,
    );
    let a = pick(&capped, Nanos::ZERO, &mut rng);
    let _b = pick(&capped, Nanos::ZERO, &mut rng);
    assert_eq!(
        capped
            .pick(&PickRequest::default(), Nanos::ZERO, &mut rng)
            .unwrap_err(),
        PickError::Saturated { max: 2 }
    );
    drop(a);
    assert!(
        capped
            .pick(&PickRequest::default(), Nanos::ZERO, &mut rng)
            .is_ok()
    );
}

#[test]
fn dns_update_keeps_state_of_staying_endpoints_and_drains_removed_ones() {
    let (pool, events) = recording(PoolConfig::default(), 2);
    let mut rng = WyRand::new(2);
    // One request running on each endpoint.
    let g0 = pool
        .pick(&PickRequest::default(), Nanos::ZERO, &mut rng)
        .unwrap();
    let g1 = pool
        .pick(
            &PickRequest::default().retry(&[g0.addr()]),
            Nanos::ZERO,
            &mut rng,
        )
        .unwrap();
    assert_ne!(g0.addr(), g1.addr());
    let (stay, leave) = (g0.addr(), g1.addr());

    let changes = pool.update(
        &[EndpointSpec::weighted(stay, 2), EndpointSpec::new(addr(7))],
        Nanos::from_secs(1),
    );
    assert_eq!(
        changes,
        [
            Event::Reweighted {
                addr: stay,
                from: 1,
                to: 2
            },
            Event::Joined {
                addr: addr(7),
                weight: 1
            },
            Event::Removed {
                addr: leave,
                in_flight: 1
            },
        ]
    );
    assert_eq!(take(&events), changes);
    // The staying endpoint kept its in-flight request across the swap.
    let status = pool.status(Nanos::from_secs(1));
    let stay_status = status.endpoints.iter().find(|e| e.addr == stay).unwrap();
    assert_eq!((stay_status.in_flight, stay_status.weight), (1, 2));
    assert!(status.endpoints.iter().all(|e| e.addr != leave));
    // New picks never reach the removed endpoint; its request finishes normally.
    assert!(
        run(&pool, 50, Outcome::Success, Nanos::from_secs(1), &mut rng)
            .iter()
            .all(|a| *a != leave)
    );
    g1.finish(Outcome::Success, Nanos::from_secs(2));
    assert_eq!(take(&events), [Event::Drained { addr: leave }]);
    g0.finish(Outcome::Success, Nanos::from_secs(2));
    assert_eq!(take(&events), []);
    // An idle endpoint is drained at once.
    let changes = pool.update(&[EndpointSpec::new(stay)], Nanos::from_secs(3));
    assert_eq!(
        changes,
        [
            Event::Reweighted {
                addr: stay,
                from: 2,
                to: 1
            },
            Event::Removed {
                addr: addr(7),
                in_flight: 0
            },
            Event::Drained { addr: addr(7) },
        ]
    );
}

#[test]
fn unhealthy_endpoints_get_no_traffic_and_return_after_rise() {
    let config = PoolConfig {
        health: Some(HealthCheckConfig::default()),
        ..PoolConfig::default()
    };
    let (pool, events) = recording(config, 4);
    let mut rng = WyRand::new(3);
    assert_eq!(pool.record_check(addr(0), CheckResult::Fail), Some(false));
    assert_eq!(
        pool.record_check(addr(9), CheckResult::Fail),
        None,
        "unknown address"
    );
    assert_eq!(
        take(&events),
        [Event::HealthChanged {
            addr: addr(0),
            healthy: false
        }]
    );
    assert!(!run(&pool, 200, Outcome::Success, Nanos::ZERO, &mut rng).contains(&addr(0)));
    assert_eq!(pool.record_check(addr(0), CheckResult::Pass), None);
    assert_eq!(pool.record_check(addr(0), CheckResult::Pass), Some(true));
    assert!(run(&pool, 200, Outcome::Success, Nanos::ZERO, &mut rng).contains(&addr(0)));
}

#[test]
fn panic_mode_spreads_over_all_and_is_reported_once() {
    let config = PoolConfig {
        health: Some(HealthCheckConfig::default()),
        ..PoolConfig::default()
    };
    let (pool, events) = recording(config, 4);
    let mut rng = WyRand::new(4);
    // 2 of 4 down: 50% available is not below the 50% threshold.
    pool.record_check(addr(0), CheckResult::Fail);
    pool.record_check(addr(1), CheckResult::Fail);
    let picks = run(&pool, 200, Outcome::Success, Nanos::ZERO, &mut rng);
    assert!(!picks.contains(&addr(0)) && !picks.contains(&addr(1)));
    assert!(!pool.status(Nanos::ZERO).panic);
    // 3 of 4 down: 25% < 50%, panic: every endpoint gets traffic again.
    pool.record_check(addr(2), CheckResult::Fail);
    let picks = run(&pool, 400, Outcome::Success, Nanos::ZERO, &mut rng);
    for i in 0..4 {
        assert!(picks.contains(&addr(i)), "panic mode reaches endpoint {i}");
    }
    let g = pick(&pool, Nanos::ZERO, &mut rng);
    assert!(g.in_panic());
    drop(g);
    pool.record_check(addr(2), CheckResult::Pass);
    pool.record_check(addr(2), CheckResult::Pass);
    pool.sweep(Nanos::ZERO);
    let panics: Vec<_> = take(&events)
        .into_iter()
        .filter(|e| matches!(e, Event::PanicEntered { .. } | Event::PanicExited { .. }))
        .collect();
    assert_eq!(
        panics,
        [
            Event::PanicEntered {
                available: 1,
                total: 4
            },
            Event::PanicExited {
                available: 2,
                total: 4
            }
        ]
    );
}

#[test]
fn no_panic_threshold_means_503_when_nothing_is_available() {
    let config = PoolConfig {
        panic_threshold_percent: 0,
        health: Some(HealthCheckConfig::default()),
        ..PoolConfig::default()
    };
    let pool = Pool::new(config, &specs(2), Nanos::ZERO);
    pool.record_check(addr(0), CheckResult::Fail);
    pool.record_check(addr(1), CheckResult::Fail);
    let mut rng = WyRand::new(5);
    assert_eq!(
        pool.pick(&PickRequest::default(), Nanos::ZERO, &mut rng)
            .unwrap_err(),
        PickError::NoneAvailable
    );
}

#[test]
fn consecutive_failures_eject_then_the_endpoint_returns() {
    let (pool, events) = recording(only_outlier(), 10);
    let mut rng = WyRand::new(6);
    let t0 = Nanos::from_secs(1);
    // Five failures in a row on endpoint 3 (the pick avoids everyone else).
    let others: Vec<SocketAddr> = (0..10).filter(|&i| i != 3).map(addr).collect();
    for _ in 0..5 {
        let g = pool
            .pick(&PickRequest::default().retry(&others), t0, &mut rng)
            .unwrap();
        assert_eq!(g.addr(), addr(3));
        g.finish(Outcome::ServerError, t0);
    }
    assert_eq!(
        take(&events),
        [Event::Ejected {
            addr: addr(3),
            last: Outcome::ServerError,
            duration: Duration::from_secs(30),
            until: t0 + Duration::from_secs(30),
            ejections: 1
        }]
    );
    assert!(!run(&pool, 300, Outcome::Success, t0, &mut rng).contains(&addr(3)));
    let status = pool.status(t0);
    assert_eq!(status.available, 9);
    assert_eq!(status.endpoints[3].counters.ejections, 1);
    // Avoiding everyone else while it is ejected: the avoid list is soft, the
    // ejection is not.
    let g = pool
        .pick(&PickRequest::default().retry(&others), t0, &mut rng)
        .unwrap();
    assert_ne!(g.addr(), addr(3));
    drop(g);
    // Back after 30 s, reported once by the sweep.
    let t1 = t0 + Duration::from_secs(30);
    pool.sweep(t1);
    pool.sweep(t1);
    assert_eq!(take(&events), [Event::Returned { addr: addr(3) }]);
    assert!(run(&pool, 300, Outcome::Success, t1, &mut rng).contains(&addr(3)));
}

#[test]
fn ejections_are_capped_by_max_ejection_percent() {
    let (pool, events) = recording(only_outlier(), 10);
    let mut rng = WyRand::new(7);
    let now = Nanos::from_secs(1);
    // Every endpoint fails: with the 10% cap only one of ten is ejected.
    for _ in 0..200 {
        run(&pool, 1, Outcome::ConnectFailure, now, &mut rng);
    }
    let events = take(&events);
    let ejected = events
        .iter()
        .filter(|e| matches!(e, Event::Ejected { .. }))
        .count();
    let capped = events
        .iter()
        .filter(|e| matches!(e, Event::EjectionCapped { max: 1, .. }))
        .count();
    assert_eq!(ejected, 1);
    assert_eq!(
        capped, 9,
        "each other endpoint reports the cap once: {events:?}"
    );
    assert_eq!(pool.status(now).available, 9);
}

#[test]
fn breaker_opens_half_opens_with_one_probe_and_closes() {
    let (pool, events) = recording(only_breaker(), 1);
    let mut rng = WyRand::new(8);
    // Panic needs >= 50% available; one endpoint of one would panic when
    // open, so turn panic off for this single-endpoint pool.
    pool.reconfigure(PoolConfig {
        panic_threshold_percent: 0,
        ..only_breaker()
    });
    let t = Nanos::from_secs(10);
    run(&pool, 7, Outcome::Timeout, t, &mut rng);
    assert_eq!(
        take(&events),
        [Event::BreakerOpened {
            addr: addr(0),
            open_for: Duration::from_secs(1),
            until: t + Duration::from_secs(1)
        }]
    );
    assert_eq!(pool.status(t).endpoints[0].counters.breaker_opens, 1);
    assert_eq!(
        pool.pick(&PickRequest::default(), t, &mut rng).unwrap_err(),
        PickError::NoneAvailable
    );
    let t1 = t + Duration::from_secs(1);
    let probe = pick(&pool, t1, &mut rng);
    assert!(probe.is_probe());
    assert_eq!(
        pool.pick(&PickRequest::default(), t1, &mut rng)
            .unwrap_err(),
        PickError::NoneAvailable,
        "one probe at a time"
    );
    assert_eq!(
        pool.status(t1).endpoints[0].breaker,
        BreakerState::HalfOpen { probes: 1 }
    );
    probe.finish(Outcome::Success, t1);
    assert_eq!(
        take(&events),
        [
            Event::BreakerHalfOpen { addr: addr(0) },
            Event::BreakerClosed { addr: addr(0) }
        ]
    );
    assert!(!pick(&pool, t1, &mut rng).is_probe());
}

#[test]
fn cancelled_probe_frees_its_slot() {
    let pool = Pool::new(
        PoolConfig {
            panic_threshold_percent: 0,
            ..only_breaker()
        },
        &specs(1),
        Nanos::ZERO,
    );
    let mut rng = WyRand::new(9);
    run(&pool, 7, Outcome::Reset, Nanos::ZERO, &mut rng);
    let t = Nanos::from_secs(1);
    let probe = pick(&pool, t, &mut rng);
    drop(probe); // client went away
    let again = pick(&pool, t, &mut rng);
    assert!(again.is_probe());
    assert_eq!(pool.status(t).endpoints[0].counters.cancelled, 1);
}

#[test]
fn ewma_prefers_the_fast_endpoint() {
    let pool = Pool::new(
        PoolConfig {
            balance: Balance::Ewma,
            ..PoolConfig::default()
        },
        &specs(2),
        Nanos::ZERO,
    );
    let mut rng = WyRand::new(10);
    let mut now = Nanos::ZERO;
    let mut counts = [0u32; 2];
    for _ in 0..2000 {
        let g = pick(&pool, now, &mut rng);
        let i = usize::from(g.addr() == addr(1));
        counts[i] += 1;
        let latency = if i == 0 { 5 } else { 50 };
        g.finish(Outcome::Success, now + Duration::from_millis(latency));
        now = now + Duration::from_millis(1);
    }
    assert!(counts[0] > 10 * counts[1], "{counts:?}");
}

#[test]
fn hash_is_sticky_and_retries_move_to_another_endpoint() {
    let pool = Pool::new(
        PoolConfig {
            balance: Balance::Hash { bounded_load: None },
            ..PoolConfig::default()
        },
        &specs(5),
        Nanos::ZERO,
    );
    let mut rng = WyRand::new(11);
    for key in 0..100u64 {
        let first = pool
            .pick(&PickRequest::keyed(key), Nanos::ZERO, &mut rng)
            .unwrap();
        let again = pool
            .pick(&PickRequest::keyed(key), Nanos::ZERO, &mut rng)
            .unwrap();
        assert_eq!(first.addr(), again.addr());
        let tried = [first.addr()];
        let retry = pool
            .pick(
                &PickRequest::keyed(key).retry(&tried),
                Nanos::ZERO,
                &mut rng,
            )
            .unwrap();
        assert_ne!(retry.addr(), first.addr());
    }
}

#[test]
fn bounded_load_spills_a_hot_key() {
    let pool = Pool::new(
        PoolConfig {
            balance: Balance::hash_bounded(),
            ..PoolConfig::default()
        },
        &specs(4),
        Nanos::ZERO,
    );
    let mut rng = WyRand::new(12);
    // 100 concurrent requests for one key: plain hashing would put all on one.
    let guards: Vec<_> = (0..100)
        .map(|_| {
            pool.pick(&PickRequest::keyed(42), Nanos::ZERO, &mut rng)
                .unwrap()
        })
        .collect();
    let status = pool.status(Nanos::ZERO);
    let max = status.endpoints.iter().map(|e| e.in_flight).max().unwrap();
    // cap = ceil(1.25 × 100 / 4) = 32.
    assert!(
        max <= 32,
        "{:?}",
        status
            .endpoints
            .iter()
            .map(|e| e.in_flight)
            .collect::<Vec<_>>()
    );
    drop(guards);
}

#[test]
fn balance_names_round_trip() {
    for name in ["p2c", "ewma", "round-robin", "hash"] {
        assert_eq!(name.parse::<Balance>().unwrap().as_str(), name);
    }
    let err = "least-conn".parse::<Balance>().unwrap_err();
    assert!(err.to_string().contains("p2c, ewma, round-robin, hash"));
}

// ---- properties -----------------------------------------------------------

/// One endpoint's state for the property tests.
#[derive(Debug, Clone, Copy)]
enum State {
    Up,
    Unhealthy,
    Ejected,
    BreakerOpen,
    ProbesTaken,
}

fn state() -> impl Strategy<Value = State> {
    prop_oneof![
        4 => Just(State::Up),
        1 => Just(State::Unhealthy),
        1 => Just(State::Ejected),
        1 => Just(State::BreakerOpen),
        1 => Just(State::ProbesTaken),
    ]
}

fn balance() -> impl Strategy<Value = Balance> {
    prop_oneof![
        Just(Balance::P2c),
        Just(Balance::Ewma),
        Just(Balance::RoundRobin),
        Just(Balance::Hash { bounded_load: None }),
        Just(Balance::hash_bounded()),
    ]
}

/// Puts endpoint `i` of `pool` into `state` at `now` through its own state machines.
fn force(pool: &Pool, i: usize, state: State, now: Nanos) {
    let snap = pool.shared().set.load();
    let ep = &snap.endpoints[i];
    let cfg = &snap.config;
    match state {
        State::Up => {}
        State::Unhealthy => {
            ep.health.record(CheckResult::Fail, 1, 1);
        }
        State::Ejected => {
            ep.outlier.eject(now, &cfg.outlier).unwrap();
        }
        State::BreakerOpen | State::ProbesTaken => {
            for _ in 0..cfg.breaker.failure_threshold {
                ep.breaker
                    .record(true, Admission::Normal, now, &cfg.breaker);
            }
            if let State::ProbesTaken = state {
                // Open long enough ago that probing started and took every slot.
                let later = now + cfg.breaker.open_for;
                let (a, _) = ep.breaker.try_acquire(later, &cfg.breaker);
                assert!(matches!(a, Admission::Probe { .. }));
            }
        }
    }
    pool.shared().changed();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A pick never returns an unhealthy, ejected or open-breaker endpoint
    /// (or a half-open one with no probe slot) unless the pool is in panic
    /// mode; in panic mode it always succeeds; outside it fails only when
    /// nothing is eligible.
    #[test]
    fn never_picks_unavailable_unless_panic(
        states in prop::collection::vec(state(), 1..24),
        weights in prop::collection::vec(1u32..5, 24),
        balance in balance(),
        threshold in prop_oneof![Just(0u8), Just(50u8), 0u8..=100],
        seed in any::<u64>(),
        keys in prop::collection::vec(any::<u64>(), 1..20),
    ) {
        let n = states.len();
        let endpoint_specs: Vec<_> = (0..n).map(|i| EndpointSpec::weighted(addr(i), weights[i])).collect();
        let config = PoolConfig {
            balance,
            panic_threshold_percent: threshold,
            ..PoolConfig::default()
        };
        let now = Nanos::from_secs(100);
        let pool = Pool::new(config, &endpoint_specs, Nanos::ZERO);
        for (i, s) in states.iter().enumerate() {
            force(&pool, i, *s, Nanos::from_secs(99) + Duration::from_millis(500));
        }
        let snap = pool.shared().set.load();
        let breaker_cfg = snap.config.breaker;
        let available = snap.endpoints.iter().filter(|e| e.is_available(now)).count();
        let panic = available * 100 < usize::from(threshold) * n;
        let eligible: Vec<bool> = snap.endpoints.iter().map(|e| e.is_eligible(now, &breaker_cfg)).collect();
        let mut rng = WyRand::new(seed);
        let mut guards = Vec::new();
        for key in keys {
            match pool.pick(&PickRequest::keyed(key), now, &mut rng) {
                Ok(g) => {
                    let i = snap.index[&g.addr()];
                    prop_assert_eq!(g.in_panic(), panic);
                    prop_assert!(panic || eligible[i], "picked {:?} in state {:?}", i, states[i]);
                    // Probe slots change as we pick: keep the guard so the
                    // pool's state stays what later picks see.
                    guards.push(g);
                }
                Err(e) => {
                    prop_assert!(!panic, "panic-mode pick failed: {e}");
                    prop_assert_eq!(e, PickError::NoneAvailable);
                    let any_eligible = snap.endpoints.iter().any(|ep| ep.is_eligible(now, &breaker_cfg));
                    prop_assert!(!any_eligible);
                }
            }
        }
    }

    /// P2C's two candidates are distinct whenever two endpoints are eligible.
    #[test]
    fn p2c_candidates_are_distinct(
        weights in prop::collection::vec(1u32..=256, 2..64),
        eligible_mask in prop::collection::vec(any::<bool>(), 64),
        seed in any::<u64>(),
    ) {
        let table = p2c::WeightTable::new(weights.clone());
        let eligible = |i: usize| eligible_mask[i];
        let count = (0..weights.len()).filter(|&i| eligible_mask[i]).count();
        let mut rng = WyRand::new(seed);
        for _ in 0..50 {
            match p2c::candidates(&table, &mut rng, &eligible) {
                None => prop_assert_eq!(count, 0),
                Some((a, None)) => {
                    prop_assert_eq!(count, 1);
                    prop_assert!(eligible(a));
                }
                Some((a, Some(b))) => {
                    prop_assert!(count >= 2);
                    prop_assert_ne!(a, b);
                    prop_assert!(eligible(a) && eligible(b));
                }
            }
        }
    }
}

#[test]
fn pool_and_guard_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Pool>();
    send_sync::<EndpointGuard>();
}

#[test]
fn unchanged_dns_answers_keep_the_snapshot() {
    let pool = Pool::new(PoolConfig::default(), &specs(3), Nanos::ZERO);
    let before = Arc::as_ptr(&pool.shared().set.load_full_for_tests());
    let mut reordered = specs(3);
    reordered.reverse();
    assert_eq!(pool.update(&reordered, Nanos::from_secs(1)), []);
    assert_eq!(
        Arc::as_ptr(&pool.shared().set.load_full_for_tests()),
        before
    );
}

/// Four threads pick and finish with random outcomes while a fifth keeps
/// replacing the endpoint set: afterwards nothing is left in flight, every
/// removed endpoint reported its drain once, and the pool's counter is back to 0.
#[test]
fn concurrent_picks_updates_and_outcomes_leave_counts_consistent() {
    let config = PoolConfig {
        balance: Balance::Ewma,
        ..PoolConfig::default()
    };
    let (pool, events) = recording(config, 8);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let pool = pool.clone();
            let stop = &stop;
            s.spawn(move || {
                let mut rng = WyRand::new(t);
                let mut held = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) || !held.is_empty() {
                    n += 1;
                    let now = Nanos::from_micros_for_tests(n);
                    if !stop.load(Ordering::Relaxed) && held.len() < 16 {
                        held.extend(pool.pick(&PickRequest::keyed(n), now, &mut rng).ok());
                    }
                    if held.len() >= 8 || stop.load(Ordering::Relaxed) {
                        let g: EndpointGuard = held.swap_remove(rng.below(held.len()));
                        match rng.below(4) {
                            0 => drop(g),
                            1 => g.finish(Outcome::ServerError, now),
                            _ => g.finish(Outcome::Success, now),
                        }
                    }
                }
            });
        }
        let mut rng = WyRand::new(99);
        for round in 0..200u64 {
            let n = 2 + rng.below(8);
            let start = rng.below(4);
            let set: Vec<_> = (start..start + n)
                .map(|i| EndpointSpec::new(addr(i)))
                .collect();
            pool.update(&set, Nanos::from_micros_for_tests(round * 50));
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let status = pool.status(Nanos::from_secs(1));
    assert_eq!(status.in_flight, 0);
    assert!(status.endpoints.iter().all(|e| e.in_flight == 0));
    // Every removal of an address is matched by exactly one drain. (An
    // address removed, re-added and removed again has two incarnations
    // draining side by side, so only the counts must match.)
    let mut balance = std::collections::HashMap::<SocketAddr, i32>::new();
    for e in take(&events) {
        match e {
            Event::Removed { addr, .. } => *balance.entry(addr).or_default() += 1,
            Event::Drained { addr } => *balance.entry(addr).or_default() -= 1,
            _ => {}
        }
    }
    assert!(balance.values().all(|&b| b == 0), "{balance:?}");
}

#[test]
fn dropping_the_last_handle_frees_the_pool_after_running_requests() {
    let pool = Pool::new(PoolConfig::default(), &specs(3), Nanos::ZERO);
    let clone = pool.clone();
    let weak = Arc::downgrade(pool.shared());
    let mut rng = WyRand::new(1);
    let guard = pick(&pool, Nanos::ZERO, &mut rng);
    drop(pool);
    assert_eq!(clone.len(), 3, "a clone keeps the pool");
    drop(clone);
    assert!(
        weak.upgrade().is_some(),
        "the running request keeps what it needs"
    );
    guard.finish(Outcome::Success, Nanos::from_millis(1));
    assert!(
        weak.upgrade().is_none(),
        "endpoints and pool freed: no cycle left"
    );
}
