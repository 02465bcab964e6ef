//! `sqlx::migrate!` embeds the migration files at compile time, but cargo does not know that a
//! new file in the directory should trigger a rebuild; this tells it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
