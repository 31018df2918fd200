//! `dmstrack query`: one signed `QueryDataTrackResultDownloadStatus`, response JSON on stdout.

use super::{Exit, one_shot_client};
use crate::config::Config;

pub(super) async fn run(
    config: &Config,
    order_id: i64,
    download_key_id: &str,
    tid: Option<i64>,
) -> Exit {
    let client = match one_shot_client(config).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    match client
        .query_status(order_id, download_key_id, tid.or(config.dms.tid))
        .await
    {
        Ok(status) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&status.body).expect("JSON value serializes")
            );
            Exit::Success
        }
        Err(err) => {
            eprintln!("dmstrack: {err}");
            Exit::from_code(err.exit_code())
        }
    }
}
