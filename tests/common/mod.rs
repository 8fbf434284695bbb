//! Test helpers: a fresh database per test (SQLite file or PostgreSQL
//! database), inventory files in a temp folder, and a real server on port 0.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::Connection;

/// Where the PostgreSQL tests connect to create their databases.
pub fn pg_admin_url() -> String {
    std::env::var("INFRAGRAPH_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    /// A new SQLite file in a temp folder.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        TestDb {
            url,
            _dir: Some(dir),
            pg_name: None,
        }
    }

    /// A new PostgreSQL database, or `None` (with the reason printed) when
    /// no server is reachable. With INFRAGRAPH_REQUIRE_POSTGRES=1 (as in CI)
    /// an unreachable server fails the test instead.
    pub async fn postgres(test: &str) -> Option<TestDb> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let admin = pg_admin_url();
        let mut conn = match sqlx::PgConnection::connect(&admin).await {
            Ok(c) => c,
            Err(e) => {
                if std::env::var("INFRAGRAPH_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                    panic!(
                        "PostgreSQL is required (INFRAGRAPH_REQUIRE_POSTGRES=1) but {admin} is not reachable: {e}"
                    );
                }
                eprintln!("SKIPPED {test}: PostgreSQL not reachable at {admin}: {e}");
                return None;
            }
        };
        let name = format!(
            "infragraph_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            test.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(20)
                .collect::<String>()
                .to_lowercase()
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap();
        Some(TestDb {
            url: format!("{base}/{name}"),
            _dir: None,
            pg_name: Some(name),
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Drop runs outside any runtime guarantee: use a thread with its own.
            let admin = pg_admin_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut c)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// A temp folder to write inventory files into.
pub struct Files {
    pub dir: tempfile::TempDir,
}

impl Files {
    pub fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The demo inventory shipped in examples/.
pub fn demo_inventory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.yaml")
}

/// Generates one async test per backend from `async fn NAME(url: String)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::common::TestDb::sqlite();
                    super::$name(db.url.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::common::TestDb::postgres(stringify!($name)).await else { return };
                    super::$name(db.url.clone()).await;
                }
            )*
        }
    };
}

/// A real server on a free loopback port, serving `app` until dropped.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Running {
    pub async fn start(app: std::sync::Arc<infragraph::app::App>) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(infragraph::cli::serve_on(listener, app, async move {
            let _ = rx.await;
        }));
        Running {
            addr,
            client: reqwest::Client::new(),
            _stop: tx,
        }
    }

    /// A GraphQL request (with `token` as bearer, if any); the whole answer.
    pub async fn graphql(
        &self,
        query: &str,
        variables: serde_json::Value,
        token: Option<&str>,
    ) -> serde_json::Value {
        let mut req = self
            .client
            .post(format!("http://{}/graphql", self.addr))
            .json(&serde_json::json!({"query": query, "variables": variables}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap().json().await.unwrap()
    }

    /// A GraphQL query's answer as the server wrote it (key order kept).
    pub async fn raw(&self, query: &str) -> String {
        self.client
            .post(format!("http://{}/graphql", self.addr))
            .json(&serde_json::json!({ "query": query }))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `data` of a GraphQL request that must not fail.
    pub async fn data(
        &self,
        query: &str,
        variables: serde_json::Value,
        token: Option<&str>,
    ) -> serde_json::Value {
        let v = self.graphql(query, variables, token).await;
        assert!(v.get("errors").is_none(), "{query}: {v}");
        v["data"].clone()
    }
}

/// The binary, without the environment that would point it elsewhere.
pub fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_infragraph"));
    c.env_remove("INFRAGRAPH_DATABASE_URL")
        .env_remove("INFRAGRAPH_TOKEN");
    c
}

/// The binary run to the end on the store at `url`.
pub fn run_cli(url: &str, args: &[&str]) -> std::process::Output {
    bin()
        .arg("--database-url")
        .arg(url)
        .args(args)
        .output()
        .unwrap()
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
