//! The mirroring proxy between a client and a live nginx, copying to a shadow nginx.

use std::time::{Duration, Instant};

use umbra_host::fault::{
    Direction, Fault, FaultProxy, FaultRule, FaultSet, MirrorConfig, MirrorProxy, MirrorStats,
};

use crate::support::{KeepAlive, Nginx, TestResult, median, runtime, timing};

/// Waits up to 5 s for `done` to hold on the proxy's counters and returns them.
fn wait_for(proxy: &MirrorProxy, done: impl Fn(&MirrorStats) -> bool) -> MirrorStats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = proxy.stats();
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn body(response: &[u8]) -> &[u8] {
    let start = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |p| p + 4);
    &response[start..]
}

#[test]
fn shadow_sees_live_request_sequence() -> TestResult {
    let _timing = timing();
    let live = Nginx::start();
    let shadow = Nginx::start();
    let rt = runtime();
    let config = MirrorConfig {
        shadow_concurrency: 1,
        ..MirrorConfig::default()
    };
    let proxy = rt.block_on(MirrorProxy::start(live.addr, shadow.addr, config))?;

    let mut direct = KeepAlive::connect(live.addr);
    let (_, expected) = direct.send("GET", "/small.txt", "");
    let live_before = live.requests_when(1).len();

    let mut client = KeepAlive::connect(proxy.listen_addr());
    for i in 0..40 {
        let path = if i % 3 == 0 {
            format!("/small.txt?i={i}")
        } else {
            format!("/missing/{i}")
        };
        let (_, response) = client.send("GET", &path, "");
        if i % 3 == 0 {
            assert!(response.starts_with(b"HTTP/1.1 200 OK"));
            assert_eq!(body(&response), body(&expected));
        } else {
            assert!(response.starts_with(b"HTTP/1.1 404"));
        }
    }

    let stats = wait_for(&proxy, |s| s.shadow_responses_total == 40);
    assert_eq!(stats.shadow_responses_total, 40);
    assert_eq!(stats.copies_dropped_total, 0);
    let live_seen = live.requests_when(live_before + 40)[live_before..].to_vec();
    assert_eq!(live_seen.len(), 40);
    assert_eq!(shadow.requests_when(40), live_seen);
    Ok(())
}

#[test]
fn post_is_copied_only_when_enabled() -> TestResult {
    let _timing = timing();
    let live = Nginx::start();
    let shadow = Nginx::start();
    let rt = runtime();
    let proxy = rt.block_on(MirrorProxy::start(
        live.addr,
        shadow.addr,
        MirrorConfig::default(),
    ))?;
    let mut client = KeepAlive::connect(proxy.listen_addr());
    let (_, response) = client.send("POST", "/post", "order=1");
    assert!(response.starts_with(b"HTTP/1.1 200"));
    client.send("GET", "/small.txt", "");
    let stats = wait_for(&proxy, |s| s.shadow_responses_total == 1);
    assert_eq!(stats.copies_skipped_total, 1);
    assert_eq!(shadow.requests_when(1), ["GET /small.txt"]);

    let config = MirrorConfig {
        mirror_non_idempotent: true,
        ..MirrorConfig::default()
    };
    let copying = rt.block_on(MirrorProxy::start(live.addr, shadow.addr, config))?;
    let mut client = KeepAlive::connect(copying.listen_addr());
    client.send("POST", "/post", "order=2");
    wait_for(&copying, |s| s.shadow_responses_total == 1);
    assert_eq!(shadow.requests_when(2), ["GET /small.txt", "POST /post"]);
    Ok(())
}

#[test]
fn stopped_shadow_leaves_live_responses_intact() -> TestResult {
    let _timing = timing();
    let live = Nginx::start();
    let mut shadow = Nginx::start();
    let shadow_addr = shadow.addr;
    shadow.stop();
    let rt = runtime();
    let proxy = rt.block_on(MirrorProxy::start(
        live.addr,
        shadow_addr,
        MirrorConfig::default(),
    ))?;

    let mut client = KeepAlive::connect(proxy.listen_addr());
    for _ in 0..50 {
        let (_, response) = client.send("GET", "/small.txt", "");
        assert!(response.starts_with(b"HTTP/1.1 200 OK"));
        assert_eq!(body(&response), b"hello from nginx\n");
    }
    let stats = wait_for(&proxy, |s| {
        s.shadow_errors_total + s.copies_dropped_total == 50
    });
    assert_eq!(stats.live_errors_total, 0);
    assert_eq!(stats.shadow_errors_total + stats.copies_dropped_total, 50);
    assert!(stats.shadow_errors_total > 0);
    Ok(())
}

#[test]
fn slow_shadow_drops_copies_not_live_latency() -> TestResult {
    let _timing = timing();
    let live = Nginx::start();
    let shadow = Nginx::start();
    let rt = runtime();
    // The shadow responds after a second, through a fault proxy.
    let slow = rt.block_on(FaultProxy::start(shadow.addr))?;
    slow.set_faults(FaultSet::new([FaultRule::new(
        Direction::Downstream,
        Fault::Latency {
            latency_ms: 1000,
            jitter_ms: 0,
        },
    )]))?;
    let config = MirrorConfig {
        queue_capacity: 4,
        shadow_concurrency: 2,
        ..MirrorConfig::default()
    };
    let proxy = rt.block_on(MirrorProxy::start(live.addr, slow.listen_addr(), config))?;

    let mut direct = KeepAlive::connect(live.addr);
    let mut mirrored = KeepAlive::connect(proxy.listen_addr());
    let mut direct_samples = Vec::new();
    let mut mirrored_samples = Vec::new();
    for _ in 0..100 {
        direct_samples.push(direct.request());
        mirrored_samples.push(mirrored.request());
    }
    let slowest = mirrored_samples.iter().max().copied().unwrap_or_default();
    let direct_p50 = median(direct_samples);
    let mirrored_p50 = median(mirrored_samples);

    // The extra hop costs well under a millisecond; 10 ms allows a busy machine. Waiting
    // for the shadow would cost a second.
    assert!(
        mirrored_p50 < direct_p50 + Duration::from_millis(10),
        "mirrored p50 {mirrored_p50:?}, direct p50 {direct_p50:?}"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "slowest mirrored request {slowest:?}"
    );
    let stats = proxy.stats();
    assert!(stats.copies_dropped_total >= 90, "{stats:?}");
    assert_eq!(stats.copies_queued_total + stats.copies_dropped_total, 100);
    Ok(())
}
