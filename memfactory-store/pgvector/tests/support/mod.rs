//! Shared by the integration tests: the server from `MEMFACTORY_PG_URL` (a test without it
//! prints why it is skipped and passes, unless `MEMFACTORY_PG_REQUIRED=1`, as in CI), and
//! scratch tables dropped when the test ends.

#![allow(dead_code)]

use std::io::Write;

use postgres::{Client, NoTls};

/// The connection string of the test server, or `None` (after saying so) to skip `test`.
pub fn server(test: &str) -> Option<String> {
    match std::env::var("MEMFACTORY_PG_URL") {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("MEMFACTORY_PG_REQUIRED").as_deref() != Ok("1"),
                "MEMFACTORY_PG_REQUIRED=1 but MEMFACTORY_PG_URL is not set"
            );
            // Straight to stderr: the test harness does not capture it.
            let _ = writeln!(
                std::io::stderr(),
                "skipping {test}: MEMFACTORY_PG_URL is not set (a PostgreSQL server with \
                 pgvector, e.g. \"host=127.0.0.1 port=5432 user=memfactory dbname=memfactory\")"
            );
            None
        }
    }
}

/// A direct connection to the test server.
pub fn client(url: &str) -> Client {
    Client::connect(url, NoTls).expect("connecting to the test server")
}

/// A table name of this test process, dropped (if created) when the guard goes.
pub struct Scratch {
    url: String,
    pub table: String,
}

impl Scratch {
    pub fn new(url: &str, name: &str) -> Scratch {
        let s = Scratch {
            url: url.to_string(),
            table: format!("mf_test_{name}_{}", std::process::id()),
        };
        s.drop_table();
        s
    }

    fn drop_table(&self) {
        client(&self.url)
            .batch_execute(&format!("DROP TABLE IF EXISTS \"{}\"", self.table))
            .expect("dropping a scratch table");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.drop_table();
        }
    }
}
