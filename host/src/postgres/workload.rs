//! Workloads of the SQL executors: weighted transactions of parameterised statements.
//!
//! Two sources exist. [`SqlWorkload::pgbench_like`] is a configured mix over tables that
//! [`prepare_pgbench_tables`] creates in the shadow (`umbra_bench_*`, shaped like
//! pgbench's). [`SqlWorkload::from_stat_statements`] replays the most called read-only
//! statements recorded by `pg_stat_statements`, each in a `READ ONLY` transaction so
//! that a statement with hidden side effects fails instead of writing.

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::postgres::cluster::{ClusterSpec, connect};
use crate::postgres::error::PgError;
use crate::postgres::guard::ensure_shadow;

/// Accounts per unit of scale, as in pgbench.
const ACCOUNTS_PER_SCALE: i32 = 100_000;

/// Tellers per unit of scale, as in pgbench.
const TELLERS_PER_SCALE: i32 = 10;

/// A statement parameter, drawn anew for each execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SqlParam {
    /// A uniformly random `int4` in `min..=max`.
    UniformInt { min: i32, max: i32 },
    /// A fixed `int4`.
    Int { value: i32 },
    /// A fixed `text`.
    Text { value: String },
}

/// One statement with its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlStatement {
    pub sql: String,
    #[serde(default)]
    pub params: Vec<SqlParam>,
}

/// Statements that run together, in one transaction when there are several or when
/// `read_only` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlTransaction {
    /// Statement class that latency is reported under, such as `tpcb` or `select`.
    pub class: String,
    /// Relative frequency in the mix.
    pub weight: u32,
    /// Run inside `BEGIN READ ONLY`.
    #[serde(default)]
    pub read_only: bool,
    pub statements: Vec<SqlStatement>,
}

/// A weighted mix of transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlWorkload {
    pub transactions: Vec<SqlTransaction>,
}

impl SqlWorkload {
    /// pgbench's TPC-B-like transaction and its select-only transaction over the
    /// `umbra_bench_*` tables at `scale`, weighted `tpcb_weight` to `select_weight`.
    pub fn pgbench_like(scale: u32, tpcb_weight: u32, select_weight: u32) -> SqlWorkload {
        let scale = i32::try_from(scale.max(1)).unwrap_or(i32::MAX / ACCOUNTS_PER_SCALE);
        let account = SqlParam::UniformInt {
            min: 1,
            max: scale.saturating_mul(ACCOUNTS_PER_SCALE),
        };
        let teller = SqlParam::UniformInt {
            min: 1,
            max: scale.saturating_mul(TELLERS_PER_SCALE),
        };
        let branch = SqlParam::UniformInt { min: 1, max: scale };
        let delta = SqlParam::UniformInt {
            min: -5000,
            max: 5000,
        };
        let statement = |sql: &str, params: Vec<SqlParam>| SqlStatement {
            sql: sql.to_owned(),
            params,
        };

        let mut transactions = Vec::new();
        if tpcb_weight > 0 {
            transactions.push(SqlTransaction {
                class: "tpcb".to_owned(),
                weight: tpcb_weight,
                read_only: false,
                statements: vec![
                    statement(
                        "UPDATE umbra_bench_accounts SET abalance = abalance + $1 WHERE aid = $2",
                        vec![delta.clone(), account.clone()],
                    ),
                    statement(
                        "SELECT abalance FROM umbra_bench_accounts WHERE aid = $1",
                        vec![account.clone()],
                    ),
                    statement(
                        "UPDATE umbra_bench_tellers SET tbalance = tbalance + $1 WHERE tid = $2",
                        vec![delta.clone(), teller.clone()],
                    ),
                    statement(
                        "UPDATE umbra_bench_branches SET bbalance = bbalance + $1 WHERE bid = $2",
                        vec![delta.clone(), branch.clone()],
                    ),
                    statement(
                        "INSERT INTO umbra_bench_history (tid, bid, aid, delta, mtime) \
                         VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
                        vec![teller, branch, account.clone(), delta],
                    ),
                ],
            });
        }
        if select_weight > 0 {
            transactions.push(SqlTransaction {
                class: "select".to_owned(),
                weight: select_weight,
                read_only: false,
                statements: vec![statement(
                    "SELECT abalance FROM umbra_bench_accounts WHERE aid = $1",
                    vec![account],
                )],
            });
        }
        SqlWorkload { transactions }
    }

    /// Builds a workload from the `limit` most called read-only statements that
    /// `pg_stat_statements` recorded for the current database of `client`, weighted by
    /// their calls. Returns an empty workload when the extension is not installed.
    ///
    // NOTE: `pg_stat_statements` keeps statements with their constants replaced by `$n`
    // and no sample of the values, so statements with parameters are left out. Replaying
    // them needs parameter samples from the live workload, such as from the server log.
    pub async fn from_stat_statements(client: &Client, limit: i64) -> Result<SqlWorkload, PgError> {
        let installed: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')",
                &[],
            )
            .await
            .map_err(|source| PgError::query("check for pg_stat_statements", source))?
            .get(0);
        if !installed {
            return Ok(SqlWorkload {
                transactions: Vec::new(),
            });
        }

        let rows = client
            .query(
                "SELECT queryid, query, calls FROM pg_stat_statements \
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND query ~* '^\\s*select\\s' AND query !~ '\\$[0-9]' \
                   AND query !~* '(for\\s+(update|share)|pg_stat_statements|pg_sleep|nextval|setval|into\\s)' \
                 ORDER BY calls DESC LIMIT $1",
                &[&limit],
            )
            .await
            .map_err(|source| PgError::query("read pg_stat_statements", source))?;

        let transactions = rows
            .iter()
            .map(|row| {
                let queryid: i64 = row.get(0);
                let calls: i64 = row.get(2);
                SqlTransaction {
                    class: format!("replay_{queryid:x}"),
                    weight: u32::try_from(calls.max(1)).unwrap_or(u32::MAX),
                    read_only: true,
                    statements: vec![SqlStatement {
                        sql: row.get(1),
                        params: Vec::new(),
                    }],
                }
            })
            .collect();
        Ok(SqlWorkload { transactions })
    }

    /// Sum of the weights.
    pub fn total_weight(&self) -> u64 {
        self.transactions
            .iter()
            .map(|transaction| u64::from(transaction.weight))
            .sum()
    }

    /// Picks a transaction by weight. `None` when the workload is empty or all weights
    /// are 0.
    pub(crate) fn pick(&self, random: &mut fastrand::Rng) -> Option<usize> {
        let total = self.total_weight();
        if total == 0 {
            return None;
        }
        let mut point = random.u64(0..total);
        for (index, transaction) in self.transactions.iter().enumerate() {
            let weight = u64::from(transaction.weight);
            if point < weight {
                return Some(index);
            }
            point -= weight;
        }
        None
    }
}

/// Creates and fills the `umbra_bench_*` tables in the shadow `shadow` at `scale`
/// (100 000 accounts per unit), replacing earlier ones.
pub async fn prepare_pgbench_tables(shadow: &ClusterSpec, scale: u32) -> Result<(), PgError> {
    let client = connect(shadow).await?;
    ensure_shadow(&client, shadow).await?;
    let scale = i32::try_from(scale.max(1)).unwrap_or(1);
    let statements = format!(
        "DROP TABLE IF EXISTS umbra_bench_accounts, umbra_bench_tellers, umbra_bench_branches, umbra_bench_history;
         CREATE TABLE umbra_bench_branches (bid int PRIMARY KEY, bbalance int NOT NULL, filler char(88));
         CREATE TABLE umbra_bench_tellers (tid int PRIMARY KEY, bid int NOT NULL, tbalance int NOT NULL, filler char(84));
         CREATE TABLE umbra_bench_accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84));
         CREATE TABLE umbra_bench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
         INSERT INTO umbra_bench_branches SELECT b, 0 FROM generate_series(1, {scale}) b;
         INSERT INTO umbra_bench_tellers SELECT t, (t - 1) / {TELLERS_PER_SCALE} + 1, 0 FROM generate_series(1, {tellers}) t;
         INSERT INTO umbra_bench_accounts SELECT a, (a - 1) / {ACCOUNTS_PER_SCALE} + 1, 0 FROM generate_series(1, {accounts}) a;
         ANALYZE umbra_bench_branches, umbra_bench_tellers, umbra_bench_accounts;",
        tellers = scale * TELLERS_PER_SCALE,
        accounts = scale * ACCOUNTS_PER_SCALE,
    );
    client
        .batch_execute(&statements)
        .await
        .map_err(|source| PgError::query("create the umbra_bench tables in the shadow", source))
}

/// Drops the `umbra_bench_*` tables from the shadow `shadow`.
pub async fn drop_pgbench_tables(shadow: &ClusterSpec) -> Result<(), PgError> {
    let client = connect(shadow).await?;
    ensure_shadow(&client, shadow).await?;
    client
        .batch_execute(
            "DROP TABLE IF EXISTS umbra_bench_accounts, umbra_bench_tellers, umbra_bench_branches, umbra_bench_history",
        )
        .await
        .map_err(|source| PgError::query("drop the umbra_bench tables from the shadow", source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_follows_weights() {
        let workload = SqlWorkload::pgbench_like(1, 1, 3);
        let mut random = fastrand::Rng::with_seed(7);

        let selects = (0..4000)
            .filter(|_| workload.pick(&mut random) == Some(1))
            .count();

        assert!((2800..3200).contains(&selects), "{selects}");
    }

    #[test]
    fn empty_workload_picks_nothing() {
        let workload = SqlWorkload {
            transactions: Vec::new(),
        };
        let mut random = fastrand::Rng::with_seed(7);

        assert_eq!(workload.pick(&mut random), None);
    }
}
