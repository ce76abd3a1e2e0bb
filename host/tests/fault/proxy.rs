//! Each network fault measured through the proxy against nginx, then removed.
//!
//! Tolerances allow for a shared 2-core machine: timer rounding (Tokio sleeps round up
//! to the millisecond), scheduling delays of tens of milliseconds, and nginx's own time.
//! Each bound still fails if the fault is missing or doubled.

use std::time::{Duration, Instant};

use umbra_host::fault::{Direction, Fault, FaultProxy, FaultRule, FaultSet};

use crate::support::{
    BIG_BYTES, KeepAlive, MEDIUM_BYTES, Nginx, TestResult, assert_between, get, median_request,
    pattern, runtime, timing,
};

const MS: fn(u64) -> Duration = Duration::from_millis;

fn one(direction: Direction, fault: Fault) -> FaultSet {
    FaultSet::new([FaultRule::new(direction, fault)])
}

#[test]
fn plain_forwarding_is_unchanged() -> TestResult {
    let _timing = timing();
    let nginx = Nginx::start();
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(nginx.addr))?;

    let exchange = get(proxy.listen_addr(), "/big.bin", MS(5000));
    assert!(exchange.status_ok());
    assert_eq!(exchange.body(), pattern(BIG_BYTES).as_slice());

    let stats = proxy.stats();
    assert_eq!(stats.connections_total, 1);
    assert!(stats.downstream_bytes_total > BIG_BYTES as u64);
    assert!(stats.upstream_bytes_total > 0);
    Ok(())
}

#[test]
fn latency_delays_open_connection_until_cleared() -> TestResult {
    let _timing = timing();
    let nginx = Nginx::start();
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(nginx.addr))?;
    let mut connection = KeepAlive::connect(proxy.listen_addr());
    let baseline = median_request(&mut connection, 9);

    proxy.set_faults(one(
        Direction::Downstream,
        Fault::Latency {
            latency_ms: 100,
            jitter_ms: 0,
        },
    ))?;
    let delayed = median_request(&mut connection, 9);
    let added = delayed.saturating_sub(baseline);
    // Tolerance: −5 ms for clock granularity, +60 ms for scheduling on a busy machine.
    assert_between("added latency", added, MS(95), MS(160));

    proxy.clear();
    let restored = median_request(&mut connection, 9);
    assert!(
        restored < baseline + MS(20),
        "latency after clear = {restored:?}, baseline {baseline:?}"
    );
    Ok(())
}

#[test]
fn jitter_spreads_latency_both_ways() -> TestResult {
    let _timing = timing();
    let nginx = Nginx::start();
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(nginx.addr))?;
    proxy.set_faults(one(
        Direction::Upstream,
        Fault::Latency {
            latency_ms: 80,
            jitter_ms: 40,
        },
    ))?;

    let mut connection = KeepAlive::connect(proxy.listen_addr());
    let samples: Vec<Duration> = (0..30).map(|_| connection.request()).collect();
    let fastest = samples.iter().min().copied().unwrap_or_default();
    let slowest = samples.iter().max().copied().unwrap_or_default();
    // Delays are drawn from 40..=120 ms; 30 draws almost surely span more than 40 ms.
    assert!(fastest >= MS(39), "fastest {fastest:?}");
    assert!(fastest < MS(70), "fastest {fastest:?}");
    assert!(slowest > MS(90), "slowest {slowest:?}");
    Ok(())
}

#[test]
fn bandwidth_caps_throughput_until_cleared() -> TestResult {
    let _timing = timing();
    let nginx = Nginx::start();
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(nginx.addr))?;
    let rate = 512 * 1024;
    proxy.set_faults(one(
        Direction::Downstream,
        Fault::Bandwidth {
            rate_bytes_per_second: rate,
        },
    ))?;

    let exchange = get(proxy.listen_addr(), "/big.bin", MS(10_000));
    assert_eq!(exchange.body(), pattern(BIG_BYTES).as_slice());
    let measured = exchange.received.len() as f64 / exchange.elapsed.as_secs_f64();
    // 1 MiB at 512 KiB/s takes 2 s. The cap must hold: at most 15 % over it, for the
    // first burst that goes out at once. A busy machine can only slow the transfer, so
    // the lower bound is looser (35 % under).
    assert!(
        measured < rate as f64 * 1.15,
        "throughput {measured:.0} B/s over the limit {rate} B/s"
    );
    assert!(
        measured > rate as f64 * 0.65,
        "throughput {measured:.0} B/s far under the limit {rate} B/s"
    );

    proxy.clear();
    let exchange = get(proxy.listen_addr(), "/big.bin", MS(10_000));
    assert_eq!(exchange.body().len(), BIG_BYTES);
    assert!(
        exchange.elapsed < MS(500),
        "unlimited transfer took {:?}",
        exchange.elapsed
    );
    Ok(())
}

#[test]
fn reset_after_bytes_cuts_exactly_there() -> TestResult {
    let _timing = timing();
    let nginx = Nginx::start();
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(nginx.addr))?;
    proxy.set_faults(one(
        Direction::Downstream,
        Fault::Reset {
            after_bytes: 10_000,
            jitter_bytes: 0,
        },
    ))?;

    let exchange = get(proxy.listen_addr(), "/big.bin", MS(5000));
    assert_eq!(exchange.received.len(), 10_000);
    assert_eq!(exchange.error, Some(std::io::ErrorKind::ConnectionReset));
    assert_eq!(proxy.stats().resets_total, 1);

    proxy.clear();
    let exchange = get(proxy.listen_addr(), "/big.bin", MS(5000));
    assert_eq!(exchange.error, None);
    assert_eq!(exchange.body().len(), BIG_BYTES);
    Ok(())
}

#[test]
fn toxicity_resets_a_share_of_connections() -> TestResult {
    let _timing = timing();
    let nginx = Nginx::start();
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(nginx.addr))?;
    proxy.set_faults(FaultSet::new([FaultRule::new(
        Direction::Upstream,
        Fault::Reset {
            after_bytes: 0,
            jitter_bytes: 0,
        },
    )
    .with_toxicity(0.5)]))?;

    let connections = 60;
    let failed = (0..connections)
        .filter(|_| !get(proxy.listen_addr(), "/small.txt", MS(2000)).status_ok())
        .count();
    // Binomial(60, 0.5): mean 30, standard deviation 3.9; 14..=46 is ±4 deviations.
    assert!(
        (14..=46).contains(&failed),
        "{failed} of {connections} reset"
    );
    assert_eq!(proxy.stats().resets_total, failed as u64);
    Ok(())
}

#[test]
fn slow_close_delays_the_close() -> TestResult {
    let _timing = timing();
    let nginx = Nginx::start();
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(nginx.addr))?;
    let baseline = get(proxy.listen_addr(), "/small.txt", MS(2000)).elapsed;

    proxy.set_faults(one(
        Direction::Downstream,
        Fault::SlowClose { delay_ms: 300 },
    ))?;
    let exchange = get(proxy.listen_addr(), "/small.txt", MS(2000));
    assert!(exchange.status_ok());
    assert_between("close delay", exchange.elapsed, MS(300), baseline + MS(400));

    proxy.clear();
    let exchange = get(proxy.listen_addr(), "/small.txt", MS(2000));
    assert!(
        exchange.elapsed < MS(100),
        "close after clear took {:?}",
        exchange.elapsed
    );
    Ok(())
}

#[test]
fn stall_holds_bytes_for_its_duration() -> TestResult {
    let _timing = timing();
    let nginx = Nginx::start();
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(nginx.addr))?;
    let mut connection = KeepAlive::connect(proxy.listen_addr());
    connection.request();

    let applied = Instant::now();
    proxy.set_faults(one(Direction::Upstream, Fault::Stall { duration_ms: 500 }))?;
    connection.request();
    assert_between("stalled request", applied.elapsed(), MS(495), MS(800));

    // The rule stays in the set but its window has passed: forwarding is normal again.
    let after = connection.request();
    assert!(after < MS(50), "request after the stall took {after:?}");
    Ok(())
}

#[test]
fn timeout_holds_request_until_cleared() -> TestResult {
    let _timing = timing();
    let nginx = Nginx::start();
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(nginx.addr))?;
    proxy.set_faults(one(
        Direction::Upstream,
        Fault::Timeout {
            close_after_ms: None,
        },
    ))?;

    let addr = proxy.listen_addr();
    let client = std::thread::spawn(move || get(addr, "/small.txt", MS(5000)));
    std::thread::sleep(MS(700));
    assert!(!client.is_finished(), "request answered during the timeout");
    assert!(
        nginx.requests().is_empty(),
        "nginx saw {:?}",
        nginx.requests()
    );

    let cleared = Instant::now();
    proxy.clear();
    let exchange = client.join().map_err(|_| "client thread panicked")?;
    assert!(exchange.status_ok());
    assert!(
        cleared.elapsed() < MS(300),
        "answer came {:?} after clear",
        cleared.elapsed()
    );
    Ok(())
}

#[test]
fn timeout_with_close_closes_without_answer() -> TestResult {
    let _timing = timing();
    let nginx = Nginx::start();
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(nginx.addr))?;
    proxy.set_faults(one(
        Direction::Downstream,
        Fault::Timeout {
            close_after_ms: Some(300),
        },
    ))?;

    let exchange = get(proxy.listen_addr(), "/small.txt", MS(5000));
    assert!(exchange.received.is_empty());
    assert_between("close after", exchange.elapsed, MS(295), MS(700));
    assert_eq!(proxy.stats().timeouts_total, 1);
    Ok(())
}

#[test]
fn slice_splits_into_delayed_segments() -> TestResult {
    let _timing = timing();
    let nginx = Nginx::start();
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(nginx.addr))?;
    proxy.set_faults(one(
        Direction::Downstream,
        Fault::Slice {
            segment_bytes: 200,
            variation_bytes: 50,
            delay_us: 2000,
        },
    ))?;

    let exchange = get(proxy.listen_addr(), "/medium.bin", MS(5000));
    assert_eq!(exchange.body(), pattern(MEDIUM_BYTES).as_slice());
    // About 103 segments with 2 ms pauses: at least 150 ms, and Tokio's millisecond timer
    // may stretch each pause to 3 ms or a little more.
    assert_between("sliced transfer", exchange.elapsed, MS(150), MS(1500));
    assert!(exchange.reads >= 50, "only {} reads", exchange.reads);

    proxy.clear();
    let exchange = get(proxy.listen_addr(), "/medium.bin", MS(5000));
    assert!(
        exchange.elapsed < MS(50),
        "transfer after clear took {:?}",
        exchange.elapsed
    );
    Ok(())
}

#[test]
fn combined_faults_add_up() -> TestResult {
    let _timing = timing();
    let nginx = Nginx::start();
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(nginx.addr))?;
    proxy.set_faults(FaultSet::new([
        FaultRule::new(
            Direction::Upstream,
            Fault::Latency {
                latency_ms: 50,
                jitter_ms: 0,
            },
        ),
        FaultRule::new(
            Direction::Downstream,
            Fault::Latency {
                latency_ms: 50,
                jitter_ms: 0,
            },
        ),
    ]))?;
    let mut connection = KeepAlive::connect(proxy.listen_addr());
    let delayed = median_request(&mut connection, 7);
    assert_between("round trip", delayed, MS(100), MS(170));
    Ok(())
}

#[test]
fn invalid_faults_are_rejected_and_change_nothing() -> TestResult {
    let _timing = timing();
    let nginx = Nginx::start();
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(nginx.addr))?;
    let valid = one(Direction::Upstream, Fault::SlowClose { delay_ms: 10 });
    proxy.set_faults(valid.clone())?;

    let invalid = one(
        Direction::Upstream,
        Fault::Bandwidth {
            rate_bytes_per_second: 0,
        },
    );
    let error = proxy.set_faults(invalid).expect_err("zero bandwidth");
    let message = format!("{}", std::error::Error::source(&error).ok_or("no source")?);
    assert!(
        message.contains("rules[0].rate_bytes_per_second"),
        "{message}"
    );
    assert_eq!(proxy.faults(), valid);
    Ok(())
}

#[test]
fn faults_expire_after_their_window() -> TestResult {
    let _timing = timing();
    let nginx = Nginx::start();
    let rt = runtime();
    let _entered = rt.enter();
    let proxy = rt.block_on(FaultProxy::start(nginx.addr))?;
    proxy.set_faults_for(
        one(
            Direction::Downstream,
            Fault::Latency {
                latency_ms: 200,
                jitter_ms: 0,
            },
        ),
        MS(400),
    )?;
    assert_eq!(proxy.faults().rules.len(), 1);
    std::thread::sleep(MS(600));
    assert!(proxy.faults().rules.is_empty());
    let exchange = get(proxy.listen_addr(), "/small.txt", MS(2000));
    assert!(
        exchange.elapsed < MS(100),
        "request took {:?}",
        exchange.elapsed
    );
    Ok(())
}
