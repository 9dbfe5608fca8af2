//! What `GET /readyz` asks of the database: does it answer, and is its
//! schema the one this binary was built for.

use std::collections::HashSet;

use super::{Db, Result, with_pool};

impl Db {
    /// True when the database answers and every migration this binary
    /// carries has been applied successfully.
    pub async fn schema_is_current(&self) -> Result<bool> {
        let migrator = match self {
            Db::Sqlite(_) => sqlx::migrate!("migrations/sqlite"),
            Db::Postgres(_) => sqlx::migrate!("migrations/postgres"),
        };
        let applied: Vec<i64> = with_pool!(self, |p| {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(p)
                .await?
        });
        let applied: HashSet<i64> = applied.into_iter().collect();
        Ok(migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .all(|m| applied.contains(&m.version)))
    }
}
