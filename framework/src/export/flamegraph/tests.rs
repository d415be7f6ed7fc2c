//! The handlers over a fixed source and a temp `flame_dir`, through the router.

use std::os::unix::fs::symlink;
use std::path::Path;

use axum::body::to_bytes;
use axum::http::{Method, Request};
use tower::Service as _;

use super::*;
use probe_decl::standard;

const SVG_REL: &str = "oncpu/20261205/20261205170000-123.svg";
const SVG: &[u8] = b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>zoom()</script></svg>";

struct Fixed(Mutex<Option<FlameSource>>);

impl FlameDirSource for Fixed {
    fn locate(&self) -> Option<FlameSource> {
        self.0.lock().unwrap().clone()
    }
}

fn source(dir: &Path) -> FlameSource {
    FlameSource {
        probe: "stackprobe".into(),
        flame_dir: Some(dir.display().to_string()),
        svg_period_secs: Some(30),
        state: "running".into(),
    }
}

/// A flame_dir with one profile (svg + folded + pprof) of pid 123 and a hostile entry.
fn flame_dir() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::create_dir_all(d.join("oncpu/20261205")).unwrap();
    std::fs::write(d.join(SVG_REL), SVG).unwrap();
    std::fs::write(
        d.join("oncpu/20261205/20261205170000-123.folded"),
        "main;hot 950\n",
    )
    .unwrap();
    std::fs::write(
        d.join("oncpu/20261205/20261205170000-123.pb.gz"),
        b"\x1f\x8b\x08\x00",
    )
    .unwrap();
    std::fs::write(d.join("index.json"), index_json()).unwrap();
    t
}

fn index_json() -> String {
    r#"{"version":1,"updated_ms":1764950000000,"profiles":[
      {"pid":123,"comm":"<b>hot</b>","kind":"oncpu","start_ms":1764950000000,"end_ms":1764950180000,
       "samples":950,"value":9500000000,"svg":"oncpu/20261205/20261205170000-123.svg",
       "folded":"oncpu/20261205/20261205170000-123.folded","pprof":"oncpu/20261205/20261205170000-123.pb.gz"},
      {"pid":666,"comm":"evil","kind":"oncpu","svg":"../../../etc/passwd","folded":"/etc/passwd"}]}"#
        .to_string()
}

struct App {
    router: Router,
    telemetry: Arc<Telemetry>,
    source: Arc<Fixed>,
}

fn app(src: Option<FlameSource>) -> App {
    let telemetry = Arc::new(Telemetry::default());
    let source = Arc::new(Fixed(Mutex::new(src)));
    let state = FlamegraphState::new(
        Arc::clone(&source) as Arc<dyn FlameDirSource>,
        Arc::clone(&telemetry),
    );
    App {
        router: router(state),
        telemetry,
        source,
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl App {
    async fn call(&mut self, method: Method, path: &str) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let resp = self.router.call(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = to_bytes(resp.into_body(), 128 << 20)
            .await
            .unwrap()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Reply {
        self.call(Method::GET, path).await
    }

    fn counted(&self, r: FlamegraphResult) -> u64 {
        self.telemetry.flamegraph.get(r)
    }
}

#[tokio::test]
async fn lists_and_serves_the_latest_files() {
    let dir = flame_dir();
    let mut app = app(Some(source(dir.path())));

    let page = app.get("/flamegraph/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.header(header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert_eq!(page.header(header::CONTENT_SECURITY_POLICY), LISTING_CSP);
    assert_eq!(page.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    let text = page.text();
    assert!(text.contains("<a href=\"123/oncpu.svg\">svg</a>"), "{text}");
    assert!(text.contains("123/oncpu.folded"));
    assert!(text.contains("123/oncpu.pb.gz"));
    assert!(text.contains("&lt;b&gt;hot&lt;/b&gt;"));
    assert!(!text.contains("<b>hot"));
    assert!(text.contains("2025-12-05 15:53:20 UTC"));
    // The hostile entry is listed without links, its paths named as refused.
    assert!(text.contains("<td class=\"n\">666</td>"));
    assert!(!text.contains("666/oncpu"));
    assert!(text.contains("svg path refused"));

    let svg = app.get("/flamegraph/123/oncpu.svg").await;
    assert_eq!(svg.status, StatusCode::OK);
    assert_eq!(svg.body, SVG);
    assert_eq!(svg.header(header::CONTENT_TYPE), "image/svg+xml");
    assert_eq!(svg.header(header::CONTENT_SECURITY_POLICY), SVG_CSP);
    assert_eq!(svg.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert!(SVG_CSP.ends_with("sandbox allow-scripts allow-modals"));

    let folded = app.get("/flamegraph/123/oncpu.folded").await;
    assert_eq!(folded.text(), "main;hot 950\n");
    assert_eq!(
        folded.header(header::CONTENT_TYPE),
        "text/plain; charset=utf-8"
    );
    let pprof = app.get("/flamegraph/123/oncpu.pb.gz").await;
    assert_eq!(pprof.body, b"\x1f\x8b\x08\x00");
    assert_eq!(
        pprof.header(header::CONTENT_TYPE),
        "application/octet-stream"
    );
    assert_eq!(
        pprof.header(header::CONTENT_DISPOSITION),
        "attachment; filename=\"123-oncpu.pb.gz\""
    );
    assert_eq!(app.counted(FlamegraphResult::Served), 4);

    // HEAD is a GET without body.
    let head = app.call(Method::HEAD, "/flamegraph/123/oncpu.svg").await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn refuses_what_is_not_the_probe_s_file() {
    let dir = flame_dir();
    let d = dir.path();
    let mut app = app(Some(source(d)));
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();

    // The index's hostile entry: never a lookup result.
    for path in ["/flamegraph/666/oncpu.svg", "/flamegraph/666/oncpu.folded"] {
        let r = app.get(path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert!(passwd.is_empty() || !r.text().contains(passwd.lines().next().unwrap()));
    }
    // Unknown pid, kind without file.
    assert_eq!(
        app.get("/flamegraph/999/oncpu.svg").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/flamegraph/123/offcpu.svg").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.counted(FlamegraphResult::NotFound), 4);

    // Malformed requests.
    for bad in [
        "/flamegraph/123/oncpu.txt",
        "/flamegraph/123/../../etc/passwd",
        "/flamegraph/..%2F..%2Fetc/passwd",
        "/flamegraph/0123/oncpu.svg",
        "/flamegraph/0/oncpu.svg",
        "/flamegraph/99999999999/oncpu.svg",
        "/flamegraph/abc/oncpu.svg",
        "/flamegraph/123/oncpu.svg/x",
        "/flamegraph/123/ONCPU.svg",
        "/flamegraph/123",
        "/flamegraph/123/",
        "/flamegraph/123/etc.svg",
    ] {
        let r = app.get(bad).await;
        assert!(
            r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::NOT_FOUND,
            "{bad}: {}",
            r.status
        );
        assert_ne!(r.status, StatusCode::OK);
    }
    assert!(app.counted(FlamegraphResult::BadRequest) >= 10);

    // The SVG replaced by a symbolic link to /etc/passwd.
    std::fs::remove_file(d.join(SVG_REL)).unwrap();
    symlink("/etc/passwd", d.join(SVG_REL)).unwrap();
    let r = app.get("/flamegraph/123/oncpu.svg").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text().contains("symbolic link"), "{}", r.text());
    assert!(passwd.is_empty() || !r.text().contains(passwd.lines().next().unwrap()));
    // A directory on the way replaced by a link to a copy elsewhere.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(elsewhere.path().join("20261205")).unwrap();
    std::fs::write(
        elsewhere.path().join("20261205/20261205170000-123.folded"),
        "secret",
    )
    .unwrap();
    std::fs::rename(d.join("oncpu"), d.join("moved")).unwrap();
    symlink(elsewhere.path(), d.join("oncpu")).unwrap();
    let r = app.get("/flamegraph/123/oncpu.folded").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.text().contains("secret"));
    assert_eq!(app.counted(FlamegraphResult::Refused), 2);

    // Other methods.
    for m in [Method::POST, Method::PUT, Method::DELETE] {
        let r = app.call(m.clone(), "/flamegraph/").await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{m}");
        assert_eq!(r.header(header::ALLOW), "GET, HEAD");
        let r = app.call(m, "/flamegraph/123/oncpu.svg").await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    }
    assert_eq!(app.counted(FlamegraphResult::MethodNotAllowed), 6);
}

#[tokio::test]
async fn explains_why_there_is_nothing_yet() {
    let mut app = app(None);
    let r = app.get("/flamegraph/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("No flame graph probe"), "{}", r.text());
    assert_eq!(
        app.get("/flamegraph/1/oncpu.svg").await.status,
        StatusCode::NOT_FOUND
    );

    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("not-yet");
    *app.source.0.lock().unwrap() = Some(source(&missing));
    let r = app.get("/flamegraph/").await;
    assert_eq!(r.status, StatusCode::OK);
    let text = r.text();
    assert!(text.contains("does not exist (yet)"), "{text}");
    assert!(text.contains("after svg_period (30 s)"), "{text}");

    std::fs::create_dir(&missing).unwrap();
    let text = app.get("/flamegraph/").await.text();
    assert!(text.contains("index.json does not exist (yet)"), "{text}");

    let mut undeclared = source(&missing);
    undeclared.flame_dir = None;
    *app.source.0.lock().unwrap() = Some(undeclared);
    let text = app.get("/flamegraph/").await.text();
    assert!(
        text.contains("does not declare the param flame_dir"),
        "{text}"
    );
    assert_eq!(app.counted(FlamegraphResult::Empty), 4);
    // The redirect of web_server.
    let r = app.get("/flamegraph").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.header(header::LOCATION), "flamegraph/");
}

#[tokio::test]
async fn bad_indexes_and_big_files_are_refused_with_a_message() {
    let dir = flame_dir();
    let d = dir.path();
    let mut app = app(Some(source(d)));
    for bad in [
        &b"{not json"[..],
        b"\xff\xfe\x00garbage",
        b"{\"version\":7,\"profiles\":[]}",
    ] {
        std::fs::write(d.join("index.json.tmp"), bad).unwrap();
        // Replaced as the probe does (a new inode: the cache sees the change).
        std::fs::rename(d.join("index.json.tmp"), d.join("index.json")).unwrap();
        let r = app.get("/flamegraph/").await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(r.text().contains("index.json"), "{}", r.text());
        assert_eq!(
            app.get("/flamegraph/123/oncpu.svg").await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    assert_eq!(app.counted(FlamegraphResult::BadIndex), 6);

    // Over 4 MiB (sparse).
    let f = std::fs::File::create(d.join("index.json.tmp")).unwrap();
    f.set_len(MAX_INDEX_BYTES + 1).unwrap();
    std::fs::rename(d.join("index.json.tmp"), d.join("index.json")).unwrap();
    let r = app.get("/flamegraph/").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.text().contains("more than 4194304"), "{}", r.text());

    // The index a symbolic link.
    std::fs::remove_file(d.join("index.json")).unwrap();
    std::fs::write(d.join("real.json"), index_json()).unwrap();
    symlink(d.join("real.json"), d.join("index.json")).unwrap();
    let r = app.get("/flamegraph/").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(app.counted(FlamegraphResult::Refused), 1);

    // A served file over 64 MiB (sparse).
    std::fs::remove_file(d.join("index.json")).unwrap();
    std::fs::write(d.join("index.json"), index_json()).unwrap();
    let f = std::fs::File::create(d.join(SVG_REL)).unwrap();
    f.set_len(MAX_FILE_BYTES + 1).unwrap();
    let r = app.get("/flamegraph/123/oncpu.svg").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.text().contains("more than 67108864"), "{}", r.text());
    assert_eq!(app.counted(FlamegraphResult::TooLarge), 1);
    // Exactly at the bound is served, streamed with its length.
    f.set_len(MAX_FILE_BYTES).unwrap();
    let r = app.get("/flamegraph/123/oncpu.svg").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len() as u64, MAX_FILE_BYTES);
}

#[tokio::test]
async fn a_changed_flame_dir_applies_to_the_next_request() {
    let a = flame_dir();
    let b = tempfile::tempdir().unwrap();
    let mut app = app(Some(source(a.path())));
    assert_eq!(
        app.get("/flamegraph/123/oncpu.svg").await.status,
        StatusCode::OK
    );
    *app.source.0.lock().unwrap() = Some(source(b.path()));
    assert_eq!(
        app.get("/flamegraph/123/oncpu.svg").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn merges_beside_the_rest_api_s_probe_route() {
    let dir = flame_dir();
    let telemetry = Arc::new(Telemetry::default());
    let state = FlamegraphState::new(
        Arc::new(Fixed(Mutex::new(Some(source(dir.path()))))),
        telemetry,
    );
    // As the command socket does: `/{probe}` is the REST API's, `/flamegraph/…` ours.
    let mut app = Router::new()
        .route("/{probe}", get(|| async { "probe settings" }))
        .merge(routes(state));
    let call = |path: &str| Request::builder().uri(path).body(Body::empty()).unwrap();
    let r = app.call(call("/flamegraph")).await.unwrap();
    let body = to_bytes(r.into_body(), 1 << 20).await.unwrap();
    assert_eq!(&body[..], b"probe settings");
    let r = app.call(call("/flamegraph/")).await.unwrap();
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    let r = app.call(call("/flamegraph/123/oncpu.svg")).await.unwrap();
    assert_eq!(r.headers()[header::CONTENT_TYPE], "image/svg+xml");
}

#[test]
fn flame_dir_is_the_effective_param() {
    let decl = Declaration {
        rest_name: Some("flamegraph".into()),
        reload: true,
        snoopers: Vec::new(),
        sub_probes: Vec::new(),
        params: vec![
            standard("flame_dir").unwrap(),
            standard("svg_period").unwrap(),
        ],
    };
    let argv = vec!["/p/stackprobe".to_string()];
    let src = source_of("stackprobe", &decl, None, &argv);
    assert_eq!(
        src.flame_dir.as_deref(),
        Some("/var/log/gala-gopher/flamegraph")
    );
    assert_eq!(src.svg_period_secs, Some(180));
    let mut rt = Runtime::default();
    rt.params
        .insert("flame_dir".into(), ParamValue::Str("/srv/flame".into()));
    rt.params.insert("svg_period".into(), ParamValue::Int(60));
    let src = source_of("stackprobe", &decl, Some(&rt), &argv);
    assert_eq!(src.flame_dir.as_deref(), Some("/srv/flame"));
    assert_eq!(src.svg_period_secs, Some(60));
    // A probe that does not declare it.
    let bare = Declaration {
        params: Vec::new(),
        ..decl
    };
    assert_eq!(source_of("x", &bare, Some(&rt), &argv).flame_dir, None);
}

#[test]
fn request_paths() {
    assert_eq!(
        parse_request("123/oncpu.svg"),
        Some((123, Kind::OnCpu, Artifact::Svg))
    );
    assert_eq!(
        parse_request("4194304/offcpu.pb.gz"),
        Some((4_194_304, Kind::OffCpu, Artifact::Pprof))
    );
    assert_eq!(
        parse_request("1/offcpu.folded"),
        Some((1, Kind::OffCpu, Artifact::Folded))
    );
    for bad in [
        "",
        "123",
        "123/",
        "/123/oncpu.svg",
        "0/oncpu.svg",
        "01/oncpu.svg",
        "+1/oncpu.svg",
        "4294967296/oncpu.svg",
        "1/oncpu.svg.svg",
        "1/oncpu",
        "1/x/oncpu.svg",
        "1/oncpu.gz",
        "1/.svg",
        "1/oncpu.SVG",
    ] {
        assert_eq!(parse_request(bad), None, "{bad:?}");
    }
}
