//! The mesh half of [`SqliteStore`]: per-round aggregates of mesh pairs (table `mesh_rounds`,
//! migration 0003).

use crate::record::{Json, MeshRoundRecord};
use crate::{SqliteStore, StoreError};

const INSERT_MESH_ROUND: &str = "INSERT INTO mesh_rounds \
    (source_node, target_node, target_ip, protocol, started_ms, stats) VALUES (?, ?, ?, ?, ?, ?)";
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
        let mut tx = self
            .writer_pool()
            .begin()
            .await
            .map_err(|e| self.query_err("append mesh rounds", e))?;
        for r in batch {
            sqlx::query(INSERT_MESH_ROUND)
                .bind(r.source_node.as_str())
                .bind(r.target_node.as_str())
                .bind(r.target_ip.as_str())
                .bind(r.protocol.as_str())
                .bind(r.started_ms)
                .bind(r.stats.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| self.query_err("append mesh rounds", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| self.query_err("append mesh rounds", e))
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
