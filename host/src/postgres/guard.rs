//! The check that keeps synthetic load and failure scenarios off live clusters.
//!
//! Every shadow starts with the custom setting `umbra.shadow = on` in its
//! `postgresql.auto.conf`, and live clusters do not have it. Load executors and scenarios
//! call [`ensure_shadow`] on each connection they open before they send anything else.

use tokio_postgres::Client;

use crate::postgres::cluster::ClusterSpec;
use crate::postgres::error::PgError;
use crate::postgres::shadow::SHADOW_MARKER_SETTING;

/// Returns an error unless the server behind `client` is an Umbra shadow.
pub async fn ensure_shadow(client: &Client, spec: &ClusterSpec) -> Result<(), PgError> {
    let row = client
        .query_one(
            "SELECT current_setting($1, true)",
            &[&SHADOW_MARKER_SETTING],
        )
        .await
        .map_err(|source| PgError::query("read the shadow marker setting", source))?;
    let marker: Option<String> = row.get(0);
    if marker.as_deref() == Some("on") {
        Ok(())
    } else {
        Err(PgError::NotAShadow(spec.to_string()))
    }
}
