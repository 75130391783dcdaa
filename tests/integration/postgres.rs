//! Several deskboot nodes on one PostgreSQL database (a real cluster the
//! tests start, see `TestCluster`): a change made through one node is
//! served by the others, a node that dies leaves the others serving, and
//! the database going away and coming back costs phones nothing they had.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deskboot::store::postgres::test_cluster::TestCluster;
use reqwest::Method;
use serde_json::json;

use crate::common::{TOKEN, TestServer, user_json};

/// Within how long a change made on one node must be served by the others.
const PROPAGATION: Duration = Duration::from_secs(1);

/// How long a node or the database gets to come back, at most.
const RECOVERY: Duration = Duration::from_secs(30);

/// Two nodes on one new database of `cluster`.
async fn two_nodes(cluster: &TestCluster) -> (TestServer, TestServer) {
    let url = cluster.database();
    let a = TestServer::start_on_store(&url).await;
    let b = TestServer::start_on_store(&url).await;
    (a, b)
}

/// `count` T46S phones, each with a user of its own, made through `node`:
/// the files they ask for.
async fn provision(node: &TestServer, count: usize) -> Vec<String> {
    node.put_site_settings().await;
    let mut files = Vec::new();
    for n in 0..count {
        let user = node
            .add_user(user_json(
                &format!("{}", 200 + n),
                &format!("Phone{n}"),
                "Owner",
            ))
            .await;
        let mac = format!("001565aa{n:04x}");
        node.add_device(
            json!({"mac": mac, "model": "yealink-t46s", "lines": [{"user": user["id"]}]}),
        )
        .await;
        files.push(format!("/{mac}.cfg"));
    }
    files
}

/// Asks `node` for `file` until `wanted` holds of the answer, at most
/// until `deadline`; the last answer.
async fn poll_phone(
    node: &TestServer,
    file: &str,
    deadline: Instant,
    wanted: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    loop {
        let (status, body) = node.phone_get(file, None).await;
        let body = String::from_utf8_lossy(&body).into_owned();
        if wanted(status, &body) || Instant::now() >= deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_on_one_node_is_served_by_the_other_within_a_second() {
    let (a, b) = two_nodes(TestCluster::shared()).await;
    // With a provisioning URL, a file does not name the node that served it.
    a.put_site_settings().await;
    a.ada_with_a_t46s().await;
    let file = "/001565aabbcc.cfg";
    let (from_a, from_b) = (a.phone_get(file, None).await, b.phone_get(file, None).await);
    assert_eq!(from_a.0, 200);
    assert_eq!(from_a, from_b, "both nodes serve the same bytes");
    assert!(String::from_utf8_lossy(&from_b.1).contains("Lovelace"));

    let (_, users) = a.get("/api/v1/users").await;
    let ada = &users.as_array().expect("a list")[0];
    let (status, _) = a
        .api(
            Method::PATCH,
            &format!("/api/v1/users/{}", ada["id"]),
            Some(json!({"last_name": "Byron"})),
        )
        .await;
    assert_eq!(status, 200);
    let changed = Instant::now();
    let (status, body) = poll_phone(&b, file, changed + PROPAGATION, |status, body| {
        status == 200 && body.contains("Byron")
    })
    .await;
    assert!(
        body.contains("Byron"),
        "node b still serves {status} after {:?}: {body}",
        changed.elapsed()
    );
    assert_eq!(a.phone_get(file, None).await.1, body.into_bytes());

    // A new phone made on b is served by a, and the admin lists agree.
    b.add_device(
        json!({"mac": "001565aabbcd", "model": "yealink-t46s", "lines": [{"user": ada["id"]}]}),
    )
    .await;
    let (status, _) = poll_phone(
        &a,
        "/001565aabbcd.cfg",
        Instant::now() + PROPAGATION,
        |s, _| s == 200,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        a.get("/api/v1/devices").await,
        b.get("/api/v1/devices").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_uploaded_on_one_node_is_served_by_the_other() {
    let (a, b) = two_nodes(TestCluster::shared()).await;
    a.put_site_settings().await;
    a.ada_with_a_t46s().await;
    let file = "/001565aabbcc.cfg";
    assert_eq!(b.phone_get(file, None).await.0, 200);
    let slot = "/api/v1/templates/devices/001565aabbcc/001565aabbcc.cfg";
    let (status, body) = a
        .api_text(Method::PUT, slot, "# uploaded on node a\n")
        .await;
    assert_eq!(status, 201, "{body}");
    // Another node's uploads are loaded at the server's next tick (2 s).
    let (_, served) = poll_phone(
        &b,
        file,
        Instant::now() + Duration::from_secs(5),
        |_, body| body == "# uploaded on node a\n",
    )
    .await;
    assert_eq!(served, "# uploaded on node a\n");
}

/// A node run as its own process, so a test can SIGKILL it.
struct NodeProcess {
    child: tokio::process::Child,
    http: SocketAddr,
    _data: tempfile::TempDir,
}

impl NodeProcess {
    async fn start(store: &str) -> NodeProcess {
        let data = tempfile::tempdir().expect("temp dir");
        let [http, tftp, admin] = [(); 3].map(|_| free_loopback_port());
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_deskboot"))
            .arg("serve")
            .args(["--store", store, "--data"])
            .arg(data.path())
            .args(["--http", &http.to_string(), "--tftp", &tftp.to_string()])
            .args(["--admin", &admin.to_string()])
            .env("DESKBOOT_ADMIN_TOKEN", TOKEN)
            .env("DESKBOOT_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("deskboot serve starts");
        let node = NodeProcess {
            child,
            http,
            _data: data,
        };
        node.wait_until_listening(admin).await;
        node
    }

    async fn wait_until_listening(&self, admin: SocketAddr) {
        let deadline = Instant::now() + RECOVERY;
        let healthz = format!("http://{admin}/healthz");
        while reqwest::get(&healthz).await.is_err() {
            assert!(Instant::now() < deadline, "the node never listened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, file: &str) -> String {
        format!("http://{}{file}", self.http)
    }
}

fn free_loopback_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

/// What a storm of phones saw.
#[derive(Default)]
struct Storm {
    /// Requests answered 200.
    served: AtomicUsize,
    /// Requests a node that should have served them did not.
    failures: AtomicUsize,
    /// Set to end the storm.
    over: AtomicBool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_a_storm_leaves_the_other_serving_every_phone() {
    let url = TestCluster::shared().database();
    let a = NodeProcess::start(&url).await;
    let b = TestServer::start_on_store(&url).await;
    let files = provision(&b, 40).await;
    let storm = Arc::new(Storm::default());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut phones = Vec::new();
    for (n, file) in files.iter().enumerate() {
        let (storm, client) = (storm.clone(), client.clone());
        let (at_a, at_b) = (a.url(file), b.http_url(file));
        phones.push(tokio::spawn(async move {
            // Half the phones ask a first; when a does not answer, they
            // turn to b, as a phone with two provisioning servers does.
            while !storm.over.load(Ordering::SeqCst) {
                let first = if n % 2 == 0 { &at_a } else { &at_b };
                let served =
                    ok(&client, first).await || (first == &at_a && ok(&client, &at_b).await);
                let counter = if served {
                    &storm.served
                } else {
                    &storm.failures
                };
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    wait_for(&storm, files.len() * 3).await;
    let mut a = a;
    a.child.start_kill().expect("SIGKILL node a");
    a.child.wait().await.expect("node a is gone");
    let after_kill = storm.served.load(Ordering::SeqCst);
    wait_for(&storm, after_kill + files.len() * 3).await;
    storm.over.store(true, Ordering::SeqCst);
    for phone in phones {
        phone.await.expect("phone task");
    }
    assert_eq!(storm.failures.load(Ordering::SeqCst), 0);
}

/// Whether `url` answers 200.
async fn ok(client: &reqwest::Client, url: &str) -> bool {
    client
        .get(url)
        .send()
        .await
        .is_ok_and(|answer| answer.status() == 200)
}

/// Waits until the storm has served `served` requests in all.
async fn wait_for(storm: &Storm, served: usize) {
    let deadline = Instant::now() + RECOVERY;
    while storm.served.load(Ordering::SeqCst) < served {
        assert!(Instant::now() < deadline, "the storm stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A cluster for a test that stops it.
async fn cluster_of_its_own() -> Arc<TestCluster> {
    let started = tokio::task::spawn_blocking(TestCluster::start).await;
    Arc::new(started.expect("the cluster starts"))
}

/// Runs a cluster operation (a process that waits for PostgreSQL) off the
/// test's runtime.
async fn on_cluster(cluster: &Arc<TestCluster>, op: fn(&TestCluster)) {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || op(&cluster))
        .await
        .expect("cluster operation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restarted_during_a_storm_costs_phones_nothing_and_nodes_recover() {
    let cluster = cluster_of_its_own().await;
    let (a, b) = two_nodes(&cluster).await;
    let files = provision(&a, 20).await;
    let nodes = [Arc::new(a), Arc::new(b)];
    let mut served_before = Vec::new();
    for file in &files {
        for node in &nodes {
            let (status, body) = node.phone_get(file, None).await;
            assert_eq!(status, 200);
            served_before.push(body);
        }
    }
    let storm = Arc::new(Storm::default());
    let mut phones = Vec::new();
    for file in files.clone() {
        for node in nodes.clone() {
            let storm = storm.clone();
            let file = file.clone();
            phones.push(tokio::spawn(async move {
                while !storm.over.load(Ordering::SeqCst) {
                    match node.phone_get(&file, None).await.0 {
                        200 => storm.served.fetch_add(1, Ordering::SeqCst),
                        _ => storm.failures.fetch_add(1, Ordering::SeqCst),
                    };
                }
            }));
        }
    }
    wait_for(&storm, files.len() * 4).await;
    on_cluster(&cluster, TestCluster::stop).await;
    // Phones keep being served while the database is down.
    let while_down = storm.served.load(Ordering::SeqCst);
    wait_for(&storm, while_down + files.len() * 4).await;
    on_cluster(&cluster, TestCluster::resume).await;
    let [a, b] = &nodes;

    // Both nodes take changes again by themselves, and hear each other.
    let deadline = Instant::now() + RECOVERY;
    let grace = loop {
        let (status, user) = a
            .post("/api/v1/users", user_json("300", "Grace", "Hopper"))
            .await;
        if status == 201 {
            break user;
        }
        assert!(
            Instant::now() < deadline,
            "node a takes no change: {status} {user}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    a.add_device(
        json!({"mac": "001565bb0001", "model": "yealink-t46s", "lines": [{"user": grace["id"]}]}),
    )
    .await;
    let (status, body) = poll_phone(
        b,
        "/001565bb0001.cfg",
        Instant::now() + RECOVERY,
        |s, body| s == 200 && body.contains("Hopper"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    storm.over.store(true, Ordering::SeqCst);
    for phone in phones {
        phone.await.expect("phone task");
    }
    assert_eq!(storm.failures.load(Ordering::SeqCst), 0);

    // Nothing was lost or torn: the same records on both, the same files.
    let (_, users) = b.get("/api/v1/users").await;
    assert_eq!(users.as_array().map(Vec::len), Some(files.len() + 1));
    assert_eq!(
        a.get("/api/v1/devices").await,
        b.get("/api/v1/devices").await
    );
    let mut served_after = Vec::new();
    for file in &files {
        for node in &nodes {
            served_after.push(node.phone_get(file, None).await.1);
        }
    }
    assert_eq!(served_after, served_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_its_database_serves_phones_it_has_seen_and_is_busy_for_the_others() {
    let cluster = cluster_of_its_own().await;
    let (a, b) = two_nodes(&cluster).await;
    // Made through b: a has read nothing of them yet.
    let files = provision(&b, 2).await;
    let (seen, unseen) = (&files[0], &files[1]);
    let (status, served) = a.phone_get(seen, None).await;
    assert_eq!(status, 200);

    on_cluster(&cluster, TestCluster::stop).await;
    let failed = "deskboot_store_state{state=\"failed\"}";
    poll_metric(&a, failed, 1).await;
    assert_eq!(a.phone_get(seen, None).await, (200, served.clone()));
    let (status, _) = a.phone_get(unseen, None).await;
    assert_eq!(status, 503, "a render the node cannot do is busy");
    let busy = "deskboot_requests_total{transport=\"http\",outcome=\"busy\"}";
    assert!(a.metric(busy).await >= 1);

    on_cluster(&cluster, TestCluster::resume).await;
    poll_metric(&a, failed, 0).await;
    let (status, _) = poll_phone(&a, unseen, Instant::now() + RECOVERY, |s, _| s == 200).await;
    assert_eq!(status, 200);
    assert_eq!(a.phone_get(seen, None).await, (200, served));
}

/// Waits until `node`'s `/metrics` sample `name` is `value`.
async fn poll_metric(node: &TestServer, name: &str, value: u64) {
    let deadline = Instant::now() + RECOVERY;
    while node.metric(name).await != value {
        assert!(Instant::now() < deadline, "{name} never became {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
