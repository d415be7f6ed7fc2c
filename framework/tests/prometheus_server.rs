//! A real Prometheus server (Debian package) scrapes the daemon and answers a query.

mod daemon_support;

use std::time::Duration;

use daemon_support::*;

#[test]
fn prometheus_scrapes_and_answers_query() {
    let d = Daemon::start(60, "", |probes| {
        let src = workspace().join("framework/tests/fixtures/golden/probes");
        for f in ["golden.sh", "golden.meta"] {
            std::fs::copy(src.join(f), probes.join(f)).unwrap();
        }
    });
    d.wait_scrape("gala_gopher_golden_threads", Duration::from_secs(10));
    let work = tempfile::tempdir().unwrap();
    let conf = work.path().join("prometheus.yml");
    std::fs::write(
        &conf,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: gala_gopher\n    static_configs: [{{targets: ['127.0.0.1:{}']}}]\n",
            d.port
        ),
    )
    .unwrap();
    let prom = Prometheus::start(&conf, work.path());
    let prom_port = prom.port;
    let query = "/api/v1/query?query=gala_gopher_golden_threads%7Btgid%3D%22100%22%7D";
    let answer = wait_for(Duration::from_secs(60), || {
        let (status, body) = http(prom_port, "GET", query).ok()?;
        (status == 200 && body.contains("\"value\"")).then_some(body)
    })
    .expect("prometheus answered the query with a sample");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let result = &v["data"]["result"][0];
    assert_eq!(result["metric"]["machine_id"], MACHINE_ID);
    assert_eq!(result["metric"]["job"], "gala_gopher");
    assert_eq!(result["value"][1], "12");

    // The target is healthy (the exposition parsed cleanly for Prometheus itself).
    let (_, targets) = http(prom_port, "GET", "/api/v1/targets?state=active").unwrap();
    assert!(targets.contains("\"health\":\"up\""), "{targets}");

    // Prometheus asks for OpenMetrics and gzip (`Accept: application/openmetrics-text;
    // version=1.0.0,…`, `Accept-Encoding: gzip`) and got both: the daemon counted such responses,
    // and Prometheus stored what only the OpenMetrics body says (`le="10.0"`; the classic text
    // has `le="10"`).
    let served = "gala_gopher_self_scrape_responses_total%7Bformat%3D%22openmetrics%22%2C\
                  encoding%3D%22gzip%22%7D";
    let answer = wait_for(Duration::from_secs(30), || {
        let (status, body) =
            http(prom_port, "GET", &format!("/api/v1/query?query={served}")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let n: f64 = v["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
        (status == 200 && n >= 1.0).then_some(n)
    });
    assert!(
        answer.is_some(),
        "no OpenMetrics+gzip responses counted; daemon scrape:\n{}",
        d.scrape()
    );
    let bucket = "/api/v1/query?query=gala_gopher_golden_latency_seconds_bucket%7Bpeer%3D%2210.0.0.1%3A80%22%2C\
                  le%3D%2210.0%22%7D";
    let (status, body) = http(prom_port, "GET", bucket).unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["result"][0]["value"][1], "1", "{body}");
}
