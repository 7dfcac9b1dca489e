//! A fresh PostgreSQL database per test: `CREATE DATABASE voxgate_t_<random>` through the
//! server named by `VOXGATE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped on `Drop`.
//!
//! PostgreSQL being unreachable is a test FAILURE with a clear message, never a skip:
//! a backend that silently goes untested is how the two drift apart.

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};

pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn admin_url() -> String {
    std::env::var("VOXGATE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// Replace the database name of a `postgres://…/db?params` URL.
pub fn with_database(url: &str, db: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let base = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// A database that exists for the lifetime of this value.
pub struct PgDb {
    pub name: String,
    pub url: String,
    admin: String,
}

impl PgDb {
    pub async fn create() -> PgDb {
        let admin = admin_url();
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is unreachable at {admin}: {e}\n\
                 The store and API tests run against BOTH SQLite and PostgreSQL. Start \
                 PostgreSQL (trust auth, database `test`) or point VOXGATE_TEST_POSTGRES_URL \
                 at one."
            )
        });
        let name = format!(
            "voxgate_t_{}",
            voxgate::ids::new_ulid().to_ascii_lowercase()
        );
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin}: {e}"));
        let _ = conn.close().await;
        PgDb {
            url: with_database(&admin, &name),
            name,
            admin,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        // Drop may run inside a runtime: do the async work on a thread of its own.
        let admin = self.admin.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = conn
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
