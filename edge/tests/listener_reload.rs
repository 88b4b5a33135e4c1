//! Config reload of the listening side: listeners added and removed while
//! open connections carry on, and `[limits]` and HTTPS rules that apply to
//! connections accepted after the reload.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use edge_test_support::{EdgeProcess, Origin};
use http::Request;

const DEADLINE: Duration = Duration::from_secs(10);

/// The data listeners `/status` reports, as URLs.
async fn status_listeners(edge: &EdgeProcess) -> Vec<String> {
    let status = get(edge.admin(), "/status").await;
    let document: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    document["listeners"]
        .as_array()
        .expect("listeners in /status")
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect()
}

/// `GET path` on an open connection.
async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<TestBody>,
    path: &str,
) -> Result<u16, hyper::Error> {
    sender.ready().await?;
    let response = sender
        .send_request(request("GET", path).body(empty()).unwrap())
        .await?;
    Ok(collect(response).await.status())
}

/// Whether a new connection to `addr` gets an HTTP answer.
async fn answers(addr: SocketAddr) -> bool {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
    else {
        return false;
    };
    tokio::spawn(conn);
    get_on(&mut sender, "/hello").await.is_ok()
}

/// Polls `probe` until it returns `want` or the deadline passes.
async fn eventually(want: bool, mut probe: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if probe().await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_come_and_go_by_reload_while_open_connections_carry_on() {
    let origin = Origin::start();
    let one = config(&[origin.addr()], "");
    // A second listener on another loopback address, port picked at bind.
    let two = config_with(
        &[origin.addr()],
        "[[listeners]]\naddr = \"127.0.0.2:0\"\n",
        "",
    );
    let edge = EdgeProcess::start(edge_bin(), &one);
    let first = edge.addr();

    // Steady load on the first listener, new connections each time, for
    // the whole test: none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if get(first, "/hello").await.status() != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut kept_on_first = http1(first).await;
    assert_eq!(get_on(&mut kept_on_first, "/hello").await.unwrap(), 200);

    // Added: the new listener serves, /status lists it.
    let answer = reload(&edge, &two).await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    let listeners = status_listeners(&edge).await;
    assert_eq!(listeners.len(), 2, "{listeners:?}");
    assert_eq!(
        listeners[0],
        format!("http://{first}"),
        "the first one kept its port"
    );
    let second: SocketAddr = listeners[1]
        .strip_prefix("http://")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(second.ip().to_string(), "127.0.0.2");
    let mut kept_on_second = http1(second).await;
    assert_eq!(get_on(&mut kept_on_second, "/hello").await.unwrap(), 200);

    // Removed: new connections are refused, the open one carries on.
    let answer = reload(&edge, &one).await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    assert_eq!(
        status_listeners(&edge).await,
        vec![format!("http://{first}")]
    );
    assert!(
        eventually(false, async || answers(second).await).await,
        "the removed listener stops accepting"
    );
    for _ in 0..3 {
        assert_eq!(
            get_on(&mut kept_on_second, "/hello").await.unwrap(),
            200,
            "a connection accepted by a removed listener is served to its end"
        );
    }
    assert_eq!(get_on(&mut kept_on_first, "/hello").await.unwrap(), 200);

    // Added back: a listener can come and go repeatedly.
    let answer = reload(&edge, &two).await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    assert_eq!(status_listeners(&edge).await.len(), 2);

    // An address that cannot be bound refuses the whole reload.
    let taken = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
    let blocked = format!(
        "{two}\n[[listeners]]\naddr = \"{}\"\n",
        taken.local_addr().unwrap()
    );
    let answer = reload(&edge, &blocked).await;
    assert_eq!(answer.status(), 422, "{}", answer.text());
    assert!(answer.text().contains("listeners[2]"), "{}", answer.text());
    assert_eq!(status_listeners(&edge).await.len(), 2, "nothing changed");

    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(sent.load(Ordering::Relaxed) > 10, "the load ran");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_https_rules_apply_to_connections_accepted_after_reload() {
    let origin = Origin::start();
    let plain = config_with(
        &[origin.addr()],
        "[limits]\nmax_connections_per_ip = 0\n",
        "",
    );
    let capped = config_with(
        &[origin.addr()],
        "[limits]\nmax_connections_per_ip = 1\n\
         [[sites]]\nhosts = [\"secure.test\"]\npool = \"origin\"\nredirect_https = 308\n",
        "",
    );
    let edge = EdgeProcess::start(edge_bin(), &plain);
    let addr = edge.addr();
    let mut before = http1(addr).await;
    assert_eq!(get_on(&mut before, "/hello").await.unwrap(), 200);

    let answer = reload(&edge, &capped).await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    // Counted from the reload on: the connection opened while the cap was
    // off is not.
    let mut counted = http1(addr).await;
    assert_eq!(get_on(&mut counted, "/hello").await.unwrap(), 200);
    assert!(
        !answers(addr).await,
        "a second connection from 127.0.0.1 is refused"
    );
    assert_eq!(get_on(&mut before, "/hello").await.unwrap(), 200);
    // The site added with the reload redirects plain HTTP.
    let req = Request::get("/x?y=1")
        .header("host", "secure.test")
        .body(empty())
        .unwrap();
    let redirect = collect(counted.send_request(req).await.unwrap()).await;
    assert_eq!(redirect.status(), 308);
    assert_eq!(
        redirect.header("location"),
        Some("https://secure.test/x?y=1")
    );
    drop(counted);
    assert!(
        eventually(true, async || answers(addr).await).await,
        "the slot comes back when the counted connection closes"
    );

    // Lifted again by the next reload.
    let answer = reload(&edge, &plain).await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    let _held = http1(addr).await;
    assert!(answers(addr).await, "no cap after the reload");
}
