//! The mesh half of [`SqliteStore`]: chunks of per-round aggregates of mesh pairs (table
//! `mesh_chunks`, migration 0005).

use crate::record::MeshChunkRecord;
use crate::sqlite::insert_rows;
use crate::{SqliteStore, StoreError};

const INSERT_MESH_CHUNKS_PREFIX: &str = "INSERT INTO mesh_chunks \
    (source_node, target_node, target_ip, first_ms, last_ms, rounds, data) ";
const SELECT_MESH_ADDRESSES: &str =
    "SELECT DISTINCT target_ip FROM mesh_chunks WHERE target_node = ? ORDER BY target_ip";
/// One page of an address's chunks, newest first, strictly before the cursor `(last_ms, id)`.
const SELECT_MESH_CHUNKS: &str = "SELECT id, source_node, target_node, target_ip, first_ms, \
    last_ms, rounds, data FROM mesh_chunks WHERE target_node = ?1 AND target_ip = ?2 \
    AND last_ms <= ?3 AND (last_ms < ?3 OR id < ?4) ORDER BY last_ms DESC, id DESC LIMIT ?5";
pub(crate) const PRUNE_MESH_CHUNKS: &str = "DELETE FROM mesh_chunks WHERE id IN \
    (SELECT id FROM mesh_chunks WHERE last_ms < ? LIMIT ?)";
/// Rows of schema 4's `mesh_rounds` (no longer written or read; migration 0005 copied the newest
/// million into chunks) age out with the retention like everything else.
pub(crate) const PRUNE_LEGACY_MESH_ROUNDS: &str = "DELETE FROM mesh_rounds WHERE id IN \
    (SELECT id FROM mesh_rounds WHERE started_ms < ? LIMIT ?)";

/// The most chunks one page of [`SELECT_MESH_CHUNKS`] reads.
const MAX_PAGE: u64 = 1_000;

#[derive(sqlx::FromRow)]
struct MeshChunkRow {
    id: i64,
    source_node: String,
    target_node: String,
    target_ip: String,
    first_ms: i64,
    last_ms: i64,
    rounds: i64,
    data: Vec<u8>,
}

impl SqliteStore {
    pub(crate) async fn insert_mesh_chunks(
        &self,
        batch: &[MeshChunkRecord],
    ) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let err = |e| self.query_err("append mesh chunks", e);
        let mut tx = self.writer_pool().begin().await.map_err(err)?;
        // Multi-row INSERTs, as for results (one statement per row costs two thread hand-offs
        // through sqlx's SQLite worker); 7 parameters per row stays far below SQLite's limit.
        let mut rest = batch;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(insert_rows(rest.len()));
            rest = tail;
            let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(INSERT_MESH_CHUNKS_PREFIX);
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(r.source_node.as_str())
                    .push_bind(r.target_node.as_str())
                    .push_bind(r.target_ip.as_str())
                    .push_bind(r.first_ms)
                    .push_bind(r.last_ms)
                    .push_bind(i64::from(r.rounds))
                    .push_bind(r.data.as_slice());
            });
            qb.build().execute(&mut *tx).await.map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }

    /// Per address, pages of chunks newest first until they hold `rounds` rounds; no chunk past
    /// the one that completes them is returned. The first page reads at most 8 chunks, later ones
    /// as many as the chunks read so far suggest are still needed (a chunk holds 1 round at long
    /// intervals, 30 at a 1 s interval).
    pub(crate) async fn select_mesh_chunks(
        &self,
        target_node: &str,
        rounds: u32,
    ) -> Result<Vec<MeshChunkRecord>, StoreError> {
        let err = |e| self.query_err("read mesh chunks", e);
        let mut out = Vec::new();
        if rounds == 0 {
            return Ok(out);
        }
        let wanted = u64::from(rounds);
        let addresses: Vec<String> = sqlx::query_scalar(SELECT_MESH_ADDRESSES)
            .bind(target_node)
            .fetch_all(self.reader_pool())
            .await
            .map_err(err)?;
        for ip in addresses {
            let (mut have, mut chunks) = (0u64, 0u64);
            let mut cursor = (i64::MAX, i64::MAX);
            loop {
                let need = wanted - have;
                let page = if chunks == 0 {
                    need.min(8)
                } else {
                    (need * chunks).div_ceil(have.max(1))
                }
                .clamp(1, MAX_PAGE);
                let rows = sqlx::query_as::<_, MeshChunkRow>(SELECT_MESH_CHUNKS)
                    .bind(target_node)
                    .bind(ip.as_str())
                    .bind(cursor.0)
                    .bind(cursor.1)
                    .bind(i64::try_from(page).unwrap_or(i64::MAX))
                    .fetch_all(self.reader_pool())
                    .await
                    .map_err(err)?;
                let fetched = rows.len() as u64;
                for r in rows {
                    if have >= wanted {
                        break;
                    }
                    cursor = (r.last_ms, r.id);
                    let record = chunk_record(r)?;
                    have += u64::from(record.rounds);
                    out.push(record);
                }
                chunks += fetched;
                if fetched < page || have >= wanted {
                    break;
                }
            }
        }
        Ok(out)
    }
}

fn chunk_record(r: MeshChunkRow) -> Result<MeshChunkRecord, StoreError> {
    let rounds = u32::try_from(r.rounds).map_err(|_| StoreError::InvalidRecord {
        check: r.target_node.clone(),
        detail: format!("stored mesh chunk {} holds {} rounds", r.id, r.rounds),
    })?;
    Ok(MeshChunkRecord {
        id: Some(r.id),
        source_node: r.source_node,
        target_node: r.target_node,
        target_ip: r.target_ip,
        first_ms: r.first_ms,
        last_ms: r.last_ms,
        rounds,
        data: r.data,
    })
}
