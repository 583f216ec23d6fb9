//! `tandem demo`: a throwaway Postgres, a sample schema, and the proxy in front of it.

pub async fn run(_listen: String) -> anyhow::Result<()> {
    anyhow::bail!("demo: not yet wired")
}
