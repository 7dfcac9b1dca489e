//! A PostgreSQL server of the test's own: `initdb` in a temp dir, `pg_ctl start` on a free
//! port with its socket in that dir, so a test can stop and start it (a database outage)
//! without disturbing the shared server other tests use. Stopped in `Drop`.
//!
//! The binaries are found under `/usr/lib/postgresql/<version>/bin` (Debian's
//! `postgresql` package; `scripts/install-test-deps.sh` installs it). Missing binaries
//! FAIL the test with that hint, never skip it. As root (initdb refuses to run as root),
//! every command runs as the `postgres` user through `runuser`, and the temp dir is handed
//! to that user.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The database the server is created with.
pub const DATABASE: &str = "voxgate";

pub struct PgServer {
    bin: PathBuf,
    /// Holds the data dir, the socket and the server log.
    dir: tempfile::TempDir,
    pub port: u16,
    /// Run every command as `postgres` (we are root).
    as_postgres: bool,
    running: bool,
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb` and `pg_ctl`.
fn find_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin. \
             This test runs a PostgreSQL server of its own; install the Debian package \
             `postgresql` (scripts/install-test-deps.sh does)."
        )
    })
}

/// A loopback TCP port free now (the server binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral TCP port")
}

fn id(args: &[&str]) -> u32 {
    let out = Command::new("id").args(args).output().expect("run `id`");
    assert!(
        out.status.success(),
        "`id {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("`id {}`: not a number ({e})", args.join(" ")))
}

impl PgServer {
    /// initdb, start, and `createdb voxgate`.
    pub fn start() -> PgServer {
        let bin = find_bin();
        let dir = tempfile::Builder::new()
            .prefix("voxgate-pg-")
            .tempdir()
            .expect("temp dir for PostgreSQL");
        let as_postgres = id(&["-u"]) == 0;
        if as_postgres {
            let uid = id(&["-u", "postgres"]);
            let gid = id(&["-g", "postgres"]);
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("hand the PostgreSQL temp dir to the postgres user");
        }
        let mut server = PgServer {
            bin,
            port: free_port(),
            dir,
            as_postgres,
            running: false,
        };
        let data = server.data_dir();
        server.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        server.start_again();
        server.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &server.port.to_string(),
                "-U",
                "postgres",
                DATABASE,
            ],
        );
        server
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `postgres://postgres@127.0.0.1:<port>/voxgate`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{DATABASE}", self.port)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn try_run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .current_dir(Path::new("/"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.try_run(program, args);
        assert!(
            out.status.success(),
            "{program} {} failed ({}):\n{}\n{}\n--- server log ---\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// `pg_ctl start -w` (again, after [`stop`](Self::stop)), same port and data.
    pub fn start_again(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir().display().to_string(),
                "-o",
                &options,
                "-l",
                &self.log_path().display().to_string(),
                "-t",
                "30",
                "start",
                "-w",
            ],
        );
        self.running = true;
    }

    /// `pg_ctl stop -m fast`: connections are terminated, the port closes.
    pub fn stop(&mut self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir().display().to_string(),
                "-m",
                "fast",
                "-t",
                "30",
                "stop",
                "-w",
            ],
        );
        self.running = false;
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let data = self.data_dir().display().to_string();
            let _ = self.try_run("pg_ctl", &["-D", &data, "-m", "immediate", "stop", "-w"]);
        }
    }
}
