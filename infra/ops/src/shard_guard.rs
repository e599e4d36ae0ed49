//! `cluster check-shards`: refuses when the router lists a shard that a given shard list does
//! not have. The chart runs it as a `pre-rollback` hook with the shards of the revision being
//! rolled back to: `helm rollback` re-applies that revision's stored manifest without rendering
//! the templates, so the chart's render-time guard against fewer shards cannot run, and a
//! rollback past the revision that added a shard would delete that shard's StatefulSet while
//! MongoDB still routes chunks to it. A failed pre-rollback hook stops the rollback before
//! anything is changed.

use mongodb::bson::doc;

use crate::cluster::{Cluster, Target};
use crate::error::OpsError;
use crate::retry::{Deadline, StepError};
use crate::steps::Steps;
use auditlog_common::error::codes;

/// The shards MongoDB has that `keep` lacks, or why the router could not say.
pub async fn check<C: Cluster>(
    c: &C,
    keep: &[String],
    deadline: Deadline,
    steps: &Steps,
) -> Result<(), OpsError> {
    let listed = deadline.retry("check shards", || listed_shards(c)).await?;
    let Some(listed) = listed else {
        steps.push("not a sharded cluster (no listShards): no shard to lose");
        return Ok(());
    };
    let extra: Vec<&String> = listed.iter().filter(|s| !keep.contains(s)).collect();
    if extra.is_empty() {
        steps.push(format!(
            "every shard MongoDB has ({}) is in the target's {} shard(s)",
            listed.join(", "),
            keep.len()
        ));
        return Ok(());
    }
    let names = extra
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    Err(OpsError::Unsafe(format!(
        "MongoDB has shard(s) {names} that the target lacks (it has {}): going there would \
         delete their StatefulSets while MongoDB still routes data to them. Drain and remove \
         the shard first (removeShard, see docs/deployment.md), or stay on a revision with \
         these shards; `helm rollback --no-hooks` skips this check",
        keep.join(", ")
    )))
}

/// The shard names mongos lists; `None` when the server is not a router at all.
async fn listed_shards<C: Cluster>(c: &C) -> Result<Option<Vec<String>>, StepError> {
    let reply = match c
        .run(&Target::Router, "admin", doc! { "listShards": 1 })
        .await
    {
        Ok(r) => r,
        Err(e) if e.code() == Some(codes::COMMAND_NOT_FOUND) => return Ok(None),
        Err(e) => return Err(StepError::from_cmd("check shards", "listShards", e)),
    };
    let names = reply
        .get_array("shards")
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_document()?.get_str("_id").ok().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(names))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fake::FakeCluster;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn three_shards() -> FakeCluster {
        FakeCluster::new()
            .with_shard("r-shard0", "r-shard0/a0:27018")
            .with_shard("r-shard1", "r-shard1/b0:27018")
            .with_shard("r-shard2", "r-shard2/c0:27018")
    }

    #[tokio::test(start_paused = true)]
    async fn target_with_every_shard_passes_and_changes_nothing() {
        let c = three_shards();
        let steps = Steps::default();
        let keep = names(&["r-shard0", "r-shard1", "r-shard2"]);
        check(&c, &keep, Deadline::after(Duration::from_secs(60)), &steps)
            .await
            .unwrap();
        assert!(c.writes().is_empty());
        assert!(steps.lines()[0].contains("every shard MongoDB has"));
    }

    #[tokio::test(start_paused = true)]
    async fn target_lacking_a_shard_mongodb_has_is_refused_naming_it() {
        let c = three_shards();
        let keep = names(&["r-shard0", "r-shard1"]);
        let e = check(
            &c,
            &keep,
            Deadline::after(Duration::from_secs(60)),
            &Steps::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.exit_code(), 7);
        let msg = e.to_string();
        assert!(
            msg.contains("shard(s) r-shard2 that the target lacks"),
            "{msg}"
        );
        assert!(msg.contains("--no-hooks"), "{msg}");
        assert!(c.writes().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_router_that_fails_once_is_asked_again() {
        let c = three_shards().fail_once("listShards");
        let keep = names(&["r-shard0", "r-shard1"]);
        let e = check(
            &c,
            &keep,
            Deadline::after(Duration::from_secs(60)),
            &Steps::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.exit_code(), 7, "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_router_that_never_answers_fails_closed_at_the_deadline() {
        let c = three_shards().router_down();
        let keep = names(&["r-shard0", "r-shard1", "r-shard2"]);
        let e = check(
            &c,
            &keep,
            Deadline::after(Duration::from_secs(30)),
            &Steps::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.exit_code(), 4, "{e}");
        assert!(e.to_string().contains("listShards"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_is_not_a_router_has_no_shard_to_lose() {
        let c = FakeCluster::new().not_mongos();
        let steps = Steps::default();
        check(
            &c,
            &names(&["r-shard0"]),
            Deadline::after(Duration::from_secs(30)),
            &steps,
        )
        .await
        .unwrap();
        assert!(steps.lines()[0].contains("not a sharded cluster"));
    }
}
