use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Barrier;
use tokio::time::Instant;

use super::*;

/// Long enough that no test below reaches it unless it means to.
const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

type Head = (u16, &'static str);
const HEAD: Head = (200, "text/plain");

fn leader(joined: Joined<&'static str, Head>) -> Leader<&'static str, Head> {
    match joined {
        Joined::Leader(leader) => leader,
        Joined::Follower(_) => panic!("expected a leader, got a follower"),
        Joined::Bypass => panic!("expected a leader, got a bypass"),
    }
}

fn follower(joined: Joined<&'static str, Head>) -> Follower<Head> {
    match joined {
        Joined::Follower(follower) => follower,
        Joined::Leader(_) => panic!("expected a follower, got a leader"),
        Joined::Bypass => panic!("expected a follower, got a bypass"),
    }
}

/// Reads the rest of the body; `Err` if it was truncated.
async fn drain(follower: &mut Follower<Head>) -> Result<Vec<u8>, LeaderFailed> {
    let mut body = Vec::new();
    while let Some(chunk) = follower.next_chunk().await {
        body.extend_from_slice(&chunk?);
    }
    Ok(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_leader_and_500_followers_get_identical_bodies() {
    const REQUESTS: usize = 501;
    let coalescer = Coalescer::<String, Head>::new();
    let all_joined = Arc::new(Barrier::new(REQUESTS));
    let leaders = Arc::new(AtomicUsize::new(0));
    let expected: Vec<u8> = (0..64u32).flat_map(|i| [i as u8; 1000]).collect();

    let tasks: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let coalescer = coalescer.clone();
            let all_joined = Arc::clone(&all_joined);
            let leaders = Arc::clone(&leaders);
            let expected = expected.clone();
            tokio::spawn(async move {
                let joined = coalescer.join("/big".to_owned());
                // Nobody publishes until everyone has joined, so the flight
                // cannot end before the last join.
                all_joined.wait().await;
                match joined {
                    Joined::Leader(mut leader) => {
                        leaders.fetch_add(1, Ordering::SeqCst);
                        leader.publish_head(HEAD);
                        for chunk in expected.chunks(1000) {
                            leader.push_chunk(Bytes::copy_from_slice(chunk));
                            tokio::task::yield_now().await;
                        }
                        leader.finish();
                        expected
                    }
                    Joined::Follower(mut follower) => {
                        assert_eq!(follower.head(LOCK_TIMEOUT).await, Ok(HEAD));
                        drain(&mut follower).await.expect("complete body")
                    }
                    Joined::Bypass => panic!("no buffer limit was set"),
                }
            })
        })
        .collect();

    for task in tasks {
        assert_eq!(task.await.expect("task"), expected);
    }
    assert_eq!(leaders.load(Ordering::SeqCst), 1);
    let stats = coalescer.stats();
    assert_eq!(
        (stats.leaders, stats.coalesced, stats.bypassed),
        (1, 500, 0)
    );
    assert_eq!(coalescer.in_flight(), 0);
}

#[tokio::test]
async fn followers_receive_chunks_before_the_leader_finishes() {
    let coalescer = Coalescer::new();
    let mut leader = leader(coalescer.join("/a"));
    let mut follower = follower(coalescer.join("/a"));

    leader.publish_head(HEAD);
    leader.push_chunk(Bytes::from_static(b"first"));
    assert_eq!(follower.head(LOCK_TIMEOUT).await, Ok(HEAD));
    assert_eq!(
        follower.next_chunk().await,
        Some(Ok(Bytes::from_static(b"first")))
    );

    // A follower parked on the next chunk wakes when it is pushed.
    let reader = tokio::spawn(async move { (follower.next_chunk().await, follower) });
    tokio::task::yield_now().await;
    leader.push_chunk(Bytes::from_static(b"second"));
    let (second, mut follower) = reader.await.expect("reader");
    assert_eq!(second, Some(Ok(Bytes::from_static(b"second"))));

    leader.finish();
    assert_eq!(follower.next_chunk().await, None);
}

#[tokio::test(start_paused = true)]
async fn release_uncacheable_releases_every_waiter_at_once() {
    let coalescer = Coalescer::new();
    let leader = leader(coalescer.join("/private"));
    let started = Instant::now();
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let follower = follower(coalescer.join("/private"));
            tokio::spawn(async move { follower.head(LOCK_TIMEOUT).await })
        })
        .collect();
    tokio::task::yield_now().await;

    leader.release_uncacheable();
    for waiter in waiters {
        assert_eq!(waiter.await.expect("waiter"), Err(Abandoned::Released));
    }
    // The paused clock only moves when every task is idle: nobody waited
    // for a timeout, nobody waited for another waiter.
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(coalescer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn leader_dropped_before_head_fails_followers_promptly() {
    let coalescer = Coalescer::new();
    let leader = leader(coalescer.join("/a"));
    let waiting = follower(coalescer.join("/a"));
    let late = follower(coalescer.join("/a"));
    let started = Instant::now();
    let waiter = tokio::spawn(async move { waiting.head(LOCK_TIMEOUT).await });
    tokio::task::yield_now().await;

    drop(leader);
    assert_eq!(waiter.await.expect("waiter"), Err(Abandoned::LeaderFailed));
    assert_eq!(late.head(LOCK_TIMEOUT).await, Err(Abandoned::LeaderFailed));
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn leader_dropped_after_head_truncates_followers_body() {
    let coalescer = Coalescer::new();
    let mut leader = leader(coalescer.join("/a"));
    let mut streaming = follower(coalescer.join("/a"));
    let not_started = follower(coalescer.join("/a"));
    leader.publish_head(HEAD);
    leader.push_chunk(Bytes::from_static(b"partial"));
    assert_eq!(streaming.head(LOCK_TIMEOUT).await, Ok(HEAD));

    drop(leader);
    assert_eq!(
        streaming.next_chunk().await,
        Some(Ok(Bytes::from_static(b"partial")))
    );
    assert_eq!(streaming.next_chunk().await, Some(Err(LeaderFailed)));
    // One that has sent nothing yet can still fetch on its own cleanly.
    assert_eq!(
        not_started.head(LOCK_TIMEOUT).await,
        Err(Abandoned::LeaderFailed)
    );
}

#[tokio::test]
async fn finish_without_head_counts_as_failure() {
    let coalescer = Coalescer::new();
    let leader = leader(coalescer.join("/a"));
    let follower = follower(coalescer.join("/a"));
    leader.finish();
    assert_eq!(
        follower.head(LOCK_TIMEOUT).await,
        Err(Abandoned::LeaderFailed)
    );
}

#[tokio::test(start_paused = true)]
async fn head_wait_is_bounded_by_the_lock_timeout() {
    let coalescer = Coalescer::new();
    let _slow_leader = leader(coalescer.join("/slow"));
    let follower = follower(coalescer.join("/slow"));
    let started = Instant::now();

    assert_eq!(
        follower.head(Duration::from_secs(5)).await,
        Err(Abandoned::TimedOut)
    );
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[tokio::test]
async fn a_new_flight_starts_after_one_ends() {
    let coalescer = Coalescer::new();

    let mut first = leader(coalescer.join("/a"));
    let mut old_follower = follower(coalescer.join("/a"));
    first.publish_head(HEAD);
    first.push_chunk(Bytes::from_static(b"v1"));
    first.finish();
    assert_eq!(coalescer.in_flight(), 0);

    // Each way of ending frees the key for a new leader.
    let second = leader(coalescer.join("/a"));
    second.release_uncacheable();
    let third = leader(coalescer.join("/a"));
    drop(third);
    let mut fourth = leader(coalescer.join("/a"));
    assert_eq!(coalescer.stats().leaders, 4);

    // The old follower still drains the finished flight, untouched by the
    // new ones.
    fourth.publish_head((200, "new"));
    fourth.push_chunk(Bytes::from_static(b"v2"));
    assert_eq!(old_follower.head(LOCK_TIMEOUT).await, Ok(HEAD));
    assert_eq!(drain(&mut old_follower).await, Ok(b"v1".to_vec()));
}

#[tokio::test]
async fn late_joiner_replays_the_body_from_the_start() {
    let coalescer = Coalescer::new();
    let mut leader = leader(coalescer.join("/a"));
    leader.publish_head(HEAD);
    for chunk in [&b"one "[..], b"two ", b"three "] {
        leader.push_chunk(Bytes::from_static(chunk));
    }

    let mut late = follower(coalescer.join("/a"));
    assert_eq!(late.head(LOCK_TIMEOUT).await, Ok(HEAD));
    assert_eq!(
        late.next_chunk().await,
        Some(Ok(Bytes::from_static(b"one ")))
    );
    leader.push_chunk(Bytes::from_static(b"four"));
    leader.finish();
    assert_eq!(drain(&mut late).await, Ok(b"two three four".to_vec()));
}

#[tokio::test]
async fn a_flight_over_the_buffer_limit_takes_no_new_followers() {
    let coalescer = Coalescer::with_max_buffer(10);
    let mut leader = leader(coalescer.join("/big"));
    let mut early = follower(coalescer.join("/big"));
    leader.publish_head(HEAD);
    leader.push_chunk(Bytes::from_static(b"12345678"));

    // 8 bytes buffered: at or under the limit, replay is still allowed.
    let mut at_limit = follower(coalescer.join("/big"));
    leader.push_chunk(Bytes::from_static(b"12345678"));
    assert!(matches!(coalescer.join("/big"), Joined::Bypass));
    assert_eq!(coalescer.stats().bypassed, 1);

    // Followers already attached stream to the end.
    leader.push_chunk(Bytes::from_static(b"end"));
    leader.finish();
    for follower in [&mut early, &mut at_limit] {
        assert_eq!(follower.head(LOCK_TIMEOUT).await, Ok(HEAD));
        assert_eq!(drain(follower).await, Ok(b"1234567812345678end".to_vec()));
    }
    assert!(matches!(coalescer.join("/big"), Joined::Leader(_)));
}

#[tokio::test]
async fn keys_are_coalesced_independently() {
    let coalescer = Coalescer::<&'static str, Head>::new();
    let _a = leader(coalescer.join("/a"));
    let _b = leader(coalescer.join("/b"));
    let _follower = follower(coalescer.join("/a"));
    assert_eq!(coalescer.in_flight(), 2);
    assert_eq!(coalescer.stats().coalesced, 1);
}

/// Past the buffer limit no reader can join, so chunks every attached
/// reader has read are dropped: a flight larger than the limit holds only
/// what its slowest reader still needs.
#[tokio::test]
async fn past_the_limit_read_chunks_are_dropped() {
    let c: Coalescer<u32, ()> = Coalescer::with_max_buffer(10);
    let Joined::Leader(mut leader) = c.join(1) else {
        panic!("first join leads");
    };
    leader.publish_head(());
    let mut reader = leader.follower();
    let Joined::Follower(mut slow) = c.join(1) else {
        panic!("joins while under the limit");
    };
    for i in 0..5u8 {
        leader.push_chunk(Bytes::from(vec![i; 8]));
    }
    assert!(matches!(c.join(1), Joined::Bypass), "past the limit");
    let held = |leader: &Leader<u32, ()>| leader.flight.lock().chunks.len();
    assert_eq!(held(&leader), 5, "nothing read yet");
    for i in 0..3u8 {
        assert_eq!(reader.next_chunk().await.unwrap().unwrap()[0], i);
    }
    assert_eq!(held(&leader), 5, "the slow reader still needs them");
    assert_eq!(slow.next_chunk().await.unwrap().unwrap()[0], 0);
    assert_eq!(held(&leader), 4);
    drop(slow);
    assert_eq!(
        held(&leader),
        2,
        "only what the remaining reader has not read"
    );
    for i in 3..5u8 {
        assert_eq!(reader.next_chunk().await.unwrap().unwrap()[0], i);
    }
    assert_eq!(held(&leader), 0);
    leader.finish();
    assert!(reader.next_chunk().await.is_none());
}
