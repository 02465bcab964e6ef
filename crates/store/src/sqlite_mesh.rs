//! The mesh half of [`SqliteStore`]: per-round aggregates of mesh pairs (table `mesh_rounds`,
//! migration 0003).

use crate::record::{Json, MeshRoundRecord};
use crate::sqlite::insert_rows;
use crate::{SqliteStore, StoreError};

const INSERT_MESH_ROUNDS_PREFIX: &str = "INSERT INTO mesh_rounds \
    (source_node, target_node, target_ip, protocol, started_ms, stats) ";
const SELECT_MESH_ROUNDS: &str = "SELECT id, source_node, target_node, target_ip, protocol, \
    started_ms, stats FROM mesh_rounds WHERE target_node = ? ORDER BY started_ms DESC, id DESC \
    LIMIT ?";
pub(crate) const PRUNE_MESH_ROUNDS: &str = "DELETE FROM mesh_rounds WHERE id IN \
    (SELECT id FROM mesh_rounds WHERE started_ms < ? LIMIT ?)";

#[derive(sqlx::FromRow)]
struct MeshRoundRow {
    id: i64,
    source_node: String,
    target_node: String,
    target_ip: String,
    protocol: String,
    started_ms: i64,
    stats: String,
}

impl SqliteStore {
    pub(crate) async fn insert_mesh_rounds(
        &self,
        batch: &[MeshRoundRecord],
    ) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let err = |e| self.query_err("append mesh rounds", e);
        let mut tx = self.writer_pool().begin().await.map_err(err)?;
        // Multi-row INSERTs, as for results: an agent with 1,000 peers writes 1,000 rounds a second,
        // and one statement per row cost two thread hand-offs through sqlx's SQLite worker per row
        // (a third of the mesh's CPU before this). 6 parameters per row stays far below SQLite's
        // variable limit.
        let mut rest = batch;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(insert_rows(rest.len()));
            rest = tail;
            let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(INSERT_MESH_ROUNDS_PREFIX);
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(r.source_node.as_str())
                    .push_bind(r.target_node.as_str())
                    .push_bind(r.target_ip.as_str())
                    .push_bind(r.protocol.as_str())
                    .push_bind(r.started_ms)
                    .push_bind(r.stats.as_str());
            });
            qb.build().execute(&mut *tx).await.map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }

    pub(crate) async fn select_mesh_rounds(
        &self,
        target_node: &str,
        limit: u32,
    ) -> Result<Vec<MeshRoundRecord>, StoreError> {
        let rows = sqlx::query_as::<_, MeshRoundRow>(SELECT_MESH_ROUNDS)
            .bind(target_node)
            .bind(i64::from(limit))
            .fetch_all(self.reader_pool())
            .await
            .map_err(|e| self.query_err("read mesh rounds", e))?;
        rows.into_iter()
            .map(|r| {
                let stats = Json::from_text(r.stats).map_err(|e| StoreError::InvalidRecord {
                    check: r.target_node.clone(),
                    detail: format!("stored mesh round {} is not JSON: {e}", r.id),
                })?;
                Ok(MeshRoundRecord {
                    id: Some(r.id),
                    source_node: r.source_node,
                    target_node: r.target_node,
                    target_ip: r.target_ip,
                    protocol: r.protocol,
                    started_ms: r.started_ms,
                    stats,
                })
            })
            .collect()
    }
}
