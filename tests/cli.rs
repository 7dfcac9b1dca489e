//! The command line: `check-config` names the offending key, `migrate` creates the schema.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn voxgate(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxgate"));
    cmd.args(args).current_dir(dir);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("VOXGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run voxgate")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_config_accepts_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let o = voxgate(dir.path(), &["check-config"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("config OK"));
}

#[test]
fn check_config_names_the_offending_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[sip]\nlisten_upd = \"0.0.0.0:5060\"\n").unwrap();
    let tls = dir.path().join("tls.toml");
    std::fs::write(&tls, "[sip]\nlisten_tls = \"0.0.0.0:5061\"\n").unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["check-config"],
            vec![("VOXGATE_SIP_MIN_EXPIRES", "soon")],
            "sip.min_expires",
        ),
        (
            vec!["check-config"],
            vec![("VOXGATE_RTP_PORTS", "20001-20999")],
            "rtp.ports",
        ),
        (
            vec!["check-config"],
            vec![("VOXGATE_API_LISTEN", "localhost")],
            "api.listen",
        ),
        (
            vec!["check-config"],
            vec![("VOXGATE_LOG_FORMAT", "xml")],
            "log.format",
        ),
        (
            vec!["check-config"],
            vec![("VOXGATE_BOGUS_SETTING", "1")],
            "VOXGATE_BOGUS_SETTING",
        ),
        (
            vec!["check-config", "--config", file.to_str().unwrap()],
            vec![],
            "sip.listen_upd",
        ),
        (
            vec!["check-config"],
            vec![("VOXGATE_CONFIG", file.to_str().unwrap())],
            "sip.listen_upd",
        ),
        (
            vec!["check-config", "--config", tls.to_str().unwrap()],
            vec![],
            "sip.listen_tls",
        ),
        (
            vec!["check-config", "--api-listen", "nope"],
            vec![],
            "api.listen",
        ),
        (
            vec!["serve"],
            vec![("VOXGATE_DATABASE_URL", "mysql://x/y")],
            "database.url",
        ),
    ];
    for (args, env, key) in cases {
        let o = voxgate(dir.path(), &args, &env);
        assert!(!o.status.success(), "{args:?} {env:?} succeeded");
        assert_eq!(o.status.code(), Some(2), "{args:?} {env:?}");
        assert!(stderr(&o).contains(key), "{args:?} {env:?}: {}", stderr(&o));
    }
    let o = voxgate(
        dir.path(),
        &["check-config", "--config", "missing.toml"],
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("missing.toml"), "{}", stderr(&o));
}

#[test]
fn default_config_file_is_read_from_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("voxgate.toml"),
        "[api]\nmetrics_publik = true\n",
    )
    .unwrap();
    let o = voxgate(dir.path(), &["check-config"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("api.metrics_publik"), "{}", stderr(&o));
}

#[test]
fn migrate_creates_the_database_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("VOXGATE_DATA_DIR", data.to_str().unwrap())];
    for _ in 0..2 {
        let o = voxgate(dir.path(), &["migrate"], &env);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert!(data.join("voxgate.db").exists());
}

#[tokio::test]
async fn migrate_on_postgres() {
    let db = common::PgDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let o = voxgate(
        dir.path(),
        &["migrate"],
        &[("VOXGATE_DATABASE_URL", &db.url)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let store = voxgate::store::Store::connect(&db.url, 1).await.unwrap();
    assert_eq!(store.count_api_keys().await.unwrap(), 0);
    store.close().await;
}
