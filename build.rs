// `sqlx::migrate!` embeds migrations/ at compile time but does not tell cargo to watch
// the directory: without this a new migration file is missing from the binary until
// some source file changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
