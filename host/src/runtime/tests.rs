use super::*;

#[test]
fn backoff_is_capped_jittered_and_resets() {
    let mut b = Backoff::new(
        Duration::from_millis(500),
        Duration::from_secs(30),
        Duration::from_secs(30),
    );
    let first: Vec<Duration> = (0..4).map(|_| b.next()).collect();
    for (n, d) in first.iter().enumerate() {
        assert!(*d < Duration::from_millis(500) * (1 << n), "attempt {n}: {d:?}");
    }
    for _ in 0..50 {
        assert!(b.next() <= Duration::from_secs(30));
    }
    let late: Vec<Duration> = (0..20).map(|_| b.next()).collect();
    assert!(
        late.iter().any(|d| *d > Duration::from_secs(1)),
        "reaches the cap region: {late:?}"
    );
    assert!(late.windows(2).any(|w| w[0] != w[1]), "jittered");
    b.reset();
    assert!(b.next() < Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn after_a_server_close_reconnects_come_within_a_second_for_the_window() {
    let mut b = Backoff::new(
        Duration::from_millis(500),
        Duration::from_secs(30),
        Duration::from_secs(30),
    );
    // Deep into the exponential range after a long outage...
    for _ in 0..20 {
        b.next();
    }
    // ...the server says it restarts: every retry within the window is fast.
    b.server_closed();
    let mut waited = Duration::ZERO;
    while waited < Duration::from_secs(29) {
        let d = b.next();
        assert!(d < FAST_RECONNECT, "{d:?} after {waited:?}");
        tokio::time::advance(d.max(Duration::from_millis(100))).await;
        waited += d.max(Duration::from_millis(100));
    }
    tokio::time::advance(Duration::from_secs(2)).await;
    let late: Vec<Duration> = (0..20).map(|_| b.next()).collect();
    assert!(
        late.iter().any(|d| *d > FAST_RECONNECT),
        "back to the exponential backoff: {late:?}"
    );
}

/// A response body fed by the test: send chunks, drop to end it.
fn body() -> (
    tokio::sync::mpsc::UnboundedSender<&'static str>,
    impl Stream<Item = std::result::Result<&'static str, std::convert::Infallible>> + Send + 'static,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok(chunk), rx))
    });
    (tx, stream)
}

#[tokio::test(start_paused = true)]
async fn heartbeat_comments_keep_an_idle_stream_alive() {
    let (tx, body) = body();
    let mut events = EventStream::new(body);
    let heartbeat = Duration::from_secs(10);
    let idle = heartbeat * 3;
    tx.send("event: hello\ndata: {}\n\n").unwrap();
    assert!(matches!(events.next(idle).await, Next::Event(e) if e.event == "hello"));
    // The server sends only `: ping` comments for five heartbeat intervals.
    let pinger = tokio::spawn({
        let tx = tx.clone();
        async move {
            for _ in 0..5 {
                tokio::time::sleep(heartbeat).await;
                tx.send(": ping\n\n").unwrap();
            }
            tokio::time::sleep(heartbeat).await;
            tx.send("event: call\ndata: {}\n\n").unwrap();
        }
    });
    let started = tokio::time::Instant::now();
    let next = events.next(idle).await;
    assert!(
        matches!(&next, Next::Event(e) if e.event == "call"),
        "the stream went idle after {:?}",
        started.elapsed()
    );
    assert_eq!(started.elapsed(), heartbeat * 6);
    pinger.await.unwrap();

    // Silence, though, ends it after the idle time.
    let started = tokio::time::Instant::now();
    assert!(matches!(events.next(idle).await, Next::Idle));
    assert_eq!(started.elapsed(), idle);
    drop(tx);
    assert!(matches!(events.next(idle).await, Next::End));
}

#[test]
fn finished_calls_are_remembered_boundedly() {
    let mut f = Finished::default();
    for i in 0..FINISHED_KEEP + 10 {
        f.insert(failure(&format!("call_{i}"), ErrorBody::new("x", "y"), 0));
    }
    assert_eq!(f.results.len(), FINISHED_KEEP);
    assert!(!f.results.contains_key("call_0"));
    assert!(f.results.contains_key(&format!("call_{}", FINISHED_KEEP + 9)));
}
