//! The `app` binary as an operator runs it: the CLI's forms and messages,
//! `app migrate` and `app audit` on a real database, and `app serve`'s
//! start-up (refusals, the banner only once the port is bound, the access
//! log, log formats). Each test starts its own process with its own
//! environment; nothing here needs Redis (the strategies are lock-free).

use std::net::TcpListener;
use std::process::{Output, Stdio};
use std::time::Duration;

use concert_domain::UserId;
use concert_http::{Auth, AuthOptions};
use concert_mysql::DatabaseUrl;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_app");

/// `app` with a clean environment: only what the test passes (and PATH),
/// run in a temporary directory so no `.env` is read.
fn app(vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_SEAT_STRATEGY", "pessimistic")
        .env("RUST_LOG", "info")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in vars {
        command.env(k, v);
    }
    command
}

async fn run(vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = app(vars);
    command.args(args);
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("app {args:?} did not finish"))
        .expect("app runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A database URL on the test server naming a fresh database (created by
/// the test, dropped by [`Fresh`]'s drop).
struct Fresh(DatabaseUrl);

impl Fresh {
    fn new() -> Fresh {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        Fresh(DatabaseUrl::on_server(&concert_testkit::server_url(), &name).unwrap())
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let url = self.0.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(concert_mysql::drop_database(&url)))
        })
        .join();
    }
}

#[tokio::test]
async fn token_takes_the_user_in_either_form_and_says_what_is_missing() {
    let secret = "a-test-secret-of-at-least-32-bytes!!";
    let auth = Auth::new(secret.as_bytes(), AuthOptions::default());
    for args in [&["token", "--user=5"][..], &["token", "--user", "5"]] {
        let out = run(&[("APP_JWT_SECRET", secret)], args).await;
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let token = text(&out.stdout).trim().to_owned();
        let user = auth.verify(&token).expect("a valid token");
        assert_eq!((user.id, user.admin), (UserId::from(5), false));
    }
    let out = run(
        &[("APP_JWT_SECRET", secret)],
        &["token", "--user", "1", "--admin"],
    )
    .await;
    let admin = auth
        .verify(text(&out.stdout).trim())
        .expect("a valid token");
    assert!(admin.admin);

    let missing = run(&[], &["token"]).await;
    assert_eq!(missing.status.code(), Some(1));
    let message = text(&missing.stderr);
    assert!(message.contains("--user N"), "{message}");
    let bad = run(&[], &["token", "--user", "zero"]).await;
    assert!(
        text(&bad.stderr).contains("positive integer"),
        "{}",
        text(&bad.stderr)
    );
    let unknown = run(&[], &["launch"]).await;
    assert!(
        text(&unknown.stderr).contains("usage: app"),
        "{}",
        text(&unknown.stderr)
    );
    let help = run(&[], &["--help"]).await;
    assert!(
        text(&help.stdout).contains("audit"),
        "{}",
        text(&help.stdout)
    );
}

#[tokio::test]
async fn migrate_says_how_many_and_audit_judges_the_data() {
    let db = Fresh::new();
    let url = db.0.as_str().to_owned();
    let vars = [("DATABASE_URL", url.as_str())];
    let first = run(&vars, &["migrate"]).await;
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).contains("applied 4 migration(s)"),
        "{}",
        text(&first.stdout)
    );
    let again = run(&vars, &["migrate"]).await;
    assert!(
        text(&again.stdout).contains("is up to date"),
        "{}",
        text(&again.stdout)
    );

    let seeded = run(&vars, &["seed"]).await;
    assert!(seeded.status.success(), "{}", text(&seeded.stderr));
    let clean = run(&vars, &["audit"]).await;
    assert!(
        clean.status.success(),
        "{}{}",
        text(&clean.stdout),
        text(&clean.stderr)
    );
    assert!(
        text(&clean.stdout).contains("all 7 invariants hold"),
        "{}",
        text(&clean.stdout)
    );

    // a wallet whose balance is not its history
    let sql = concert_testkit::Sql::connect(&url).await.unwrap();
    sql.set_balance(UserId::from(42), 1000).await.unwrap();
    sql.execute("UPDATE wallets SET balance = 990 WHERE user_id = 42")
        .await
        .unwrap();
    sql.close();
    let broken = run(&vars, &["audit"]).await;
    assert_eq!(broken.status.code(), Some(1));
    let report = text(&broken.stdout);
    assert!(
        report.contains(
            "VIOLATION balance-is-history-sum: wallet of user 42: balance 990, history sums to 1000"
        ),
        "{report}"
    );
    assert!(
        report.contains("BROKEN  balance-is-history-sum"),
        "{report}"
    );
    assert!(text(&broken.stderr).contains("the audit found 1 violation(s)"));
}

#[tokio::test]
async fn serve_refuses_a_public_address_without_a_real_secret() {
    for (secret, why) in [
        (None, "the development JWT secret"),
        (Some("k".repeat(31)), "a 31-byte JWT secret"),
    ] {
        let mut vars = vec![
            ("APP_HOST", "0.0.0.0".to_owned()),
            ("APP_PORT", "0".to_owned()),
        ];
        if let Some(secret) = secret {
            vars.push(("APP_JWT_SECRET", secret));
        }
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = run(&vars, &["serve", "--banner"]).await;
        assert_eq!(out.status.code(), Some(1));
        let message = text(&out.stderr);
        assert!(
            message.contains("refusing to listen on 0.0.0.0"),
            "{message}"
        );
        assert!(message.contains(why), "{message}");
        assert!(message.contains("APP_JWT_SECRET"), "{message}");
        assert!(
            text(&out.stdout).is_empty(),
            "no banner: {}",
            text(&out.stdout)
        );
    }
}

#[tokio::test]
async fn a_taken_port_names_the_variable_and_prints_no_banner() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = run(&[("APP_PORT", port.as_str())], &["serve", "--banner"]).await;
    assert_eq!(out.status.code(), Some(1));
    let message = text(&out.stderr);
    assert!(message.contains("already in use"), "{message}");
    assert!(message.contains("APP_PORT=<port>"), "{message}");
    assert!(
        text(&out.stdout).is_empty(),
        "no banner: {}",
        text(&out.stdout)
    );
}

/// A served instance: the child and its stderr lines as they come.
struct Served {
    child: Child,
    base: String,
    stderr: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// Starts `app serve --banner` on a free port and reads its banner: the
/// banner's URLs must answer as soon as it is printed.
async fn serve(vars: &[(&str, &str)]) -> (Served, String) {
    // MySQL need not answer for the process to listen (it reports not
    // ready): a port where nothing listens keeps the test hermetic.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let mysql = format!(
        "mysql://root@127.0.0.1:{}/nothing",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let mut command = app(&[("DATABASE_URL", mysql.as_str())]);
    for (k, v) in vars {
        command.env(k, v);
    }
    command
        .args(["serve", "--banner"])
        .env("APP_PORT", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("app serve starts");
    let (tx, stderr) = tokio::sync::mpsc::unbounded_channel();
    let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = err_lines.next_line().await {
            let _ = tx.send(line);
        }
    });
    let mut out_lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    let read = async {
        while let Ok(Some(line)) = out_lines.next_line().await {
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("Ctrl-C stops the server") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("a banner");
    let base = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("API"))
        .map(|rest| rest.trim().trim_end_matches("/api/v1/concerts").to_owned())
        .unwrap_or_else(|| panic!("no API line in the banner:\n{banner}"));
    (
        Served {
            child,
            base,
            stderr,
        },
        banner,
    )
}

impl Served {
    /// Stderr lines until one contains `needle` (or 10 s pass).
    async fn until(&mut self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(line) = self.stderr.recv().await {
                let hit = line.contains(needle);
                seen.push(line);
                if hit {
                    return;
                }
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "no log line with {needle:?} in:\n{}",
            seen.join("\n")
        );
        seen
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

#[tokio::test]
async fn the_banner_comes_once_listening_with_an_admin_token_and_a_curl_line() {
    let (mut served, banner) = serve(&[("RUST_BACKTRACE", "1")]).await;
    let client = reqwest::Client::new();
    let live = client
        .get(format!("{}/health/live", served.base))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200, "the banner's address answers");
    for needle in [
        "/swagger-ui/",
        "/metrics",
        "Admin token",
        "app token --user 1 --admin",
        "/api/v1/admin/concerts",
        "\"title\":\"My concert\"",
    ] {
        assert!(banner.contains(needle), "{needle} missing from:\n{banner}");
    }
    // the admin token of the banner creates a concert (403 would mean no
    // admin role; 503 because MySQL is down here)
    let admin = banner
        .lines()
        .skip_while(|l| !l.contains("Admin token"))
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    let created = client
        .post(format!("{}/api/v1/admin/concerts", served.base))
        .bearer_auth(admin)
        .json(&serde_json::json!({"title": "My concert"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 503);

    // a failed readiness probe is one log line, never a backtrace
    let ready = client
        .get(format!("{}/health/ready", served.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let lines = served.until("not ready").await;
    let last = lines.last().unwrap();
    assert!(last.contains("mysql"), "{last}");
    assert!(
        !last.contains('\u{1b}'),
        "no colours when not on a terminal: {last:?}"
    );
    let more = tokio::time::timeout(Duration::from_millis(300), served.stderr.recv()).await;
    if let Ok(Some(next)) = more {
        assert!(
            !next.to_lowercase().contains("backtrace") && !next.trim_start().starts_with("0:"),
            "{next}"
        );
    }
    served.stop().await;
}

#[tokio::test]
async fn json_access_lines_carry_the_callers_request_id() {
    let (mut served, _) = serve(&[("APP_LOG_FORMAT", "json")]).await;
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/reservations/77", served.base))
        .header("x-request-id", "caller-id-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["x-request-id"], "caller-id-123");
    let lines = served.until("caller-id-123").await;
    let access: serde_json::Value =
        serde_json::from_str(lines.last().unwrap()).expect("a JSON log line");
    let fields = &access["fields"];
    assert_eq!(access["target"], "http_access", "{access}");
    assert_eq!(access["level"], "INFO", "{access}");
    assert_eq!(fields["request_id"], "caller-id-123", "{access}");
    assert_eq!(fields["method"], "GET", "{access}");
    assert_eq!(
        fields["route"], "/api/v1/reservations/{reservationId}",
        "{access}"
    );
    assert_eq!(fields["status"], 401, "{access}");
    assert!(
        fields["latency_ms"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .is_ok(),
        "{access}"
    );
    // every earlier line was JSON too
    for line in &lines {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    served.stop().await;
}
