//! `gala-gopher` daemon entry point.

fn main() -> anyhow::Result<()> {
    Ok(())
}
