//! Execution records: one per run key, a status that only moves forward under a version guard,
//! and a lease so that no two workers run one execution.

use serde::{Deserialize, Serialize};

use super::ids::{ExecutionId, HolderId, PipelineName, RunKey, SourceId, TenantId};
use super::time::Timestamp;

/// An execution's lifecycle. Ranks only rise; the three terminal states are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionStatus {
    /// Recorded at intake, not yet on the stage queue.
    Received,
    /// A stage message is on the queue (possibly delayed).
    Queued,
    /// A worker has started a stage; stays `Running` across stages and retries.
    Running,
    /// Every stage succeeded.
    Succeeded,
    /// Gave up on a failure the pipeline does not retry.
    Failed,
    /// Stopped by loop protection, a non-retryable answer, or policy; see `blocked_reason`.
    Blocked,
}

impl ExecutionStatus {
    /// Every status, in rank order.
    pub const ALL: [ExecutionStatus; 6] = [
        ExecutionStatus::Received,
        ExecutionStatus::Queued,
        ExecutionStatus::Running,
        ExecutionStatus::Succeeded,
        ExecutionStatus::Failed,
        ExecutionStatus::Blocked,
    ];

    /// The stored name (`RECEIVED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Received => "RECEIVED",
            ExecutionStatus::Queued => "QUEUED",
            ExecutionStatus::Running => "RUNNING",
            ExecutionStatus::Succeeded => "SUCCEEDED",
            ExecutionStatus::Failed => "FAILED",
            ExecutionStatus::Blocked => "BLOCKED",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    fn rank(self) -> u8 {
        match self {
            ExecutionStatus::Received => 0,
            ExecutionStatus::Queued => 1,
            ExecutionStatus::Running => 2,
            ExecutionStatus::Succeeded | ExecutionStatus::Failed | ExecutionStatus::Blocked => 3,
        }
    }

    /// Whether no further transition is allowed.
    pub fn is_terminal(self) -> bool {
        self.rank() == 3
    }

    /// Whether an execution in `self` may move to `next`: never out of a terminal state, and
    /// never to a lower rank (staying put is allowed: a new stage keeps `Running`).
    pub fn can_move_to(self, next: ExecutionStatus) -> bool {
        !self.is_terminal() && next.rank() >= self.rank()
    }

    /// The statuses from which `next` may be reached (for a storage condition).
    pub fn predecessors_of(next: ExecutionStatus) -> Vec<ExecutionStatus> {
        Self::ALL
            .into_iter()
            .filter(|s| s.can_move_to(next))
            .collect()
    }
}

/// The lease on an execution: who runs it, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionLease {
    pub owner: HolderId,
    pub expires_at: Timestamp,
}

/// The stored record of one execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    pub id: ExecutionId,
    pub tenant: TenantId,
    pub source: SourceId,
    pub pipeline: PipelineName,
    pub run_key: RunKey,
    /// Index of the stage to run next (or running).
    pub stage: u32,
    pub status: ExecutionStatus,
    /// Attempts made at the current stage.
    pub attempt_count: u32,
    pub blocked_reason: Option<String>,
    pub lease: Option<ExecutionLease>,
    pub replay_of: Option<ExecutionId>,
    /// Earliest time work may start (rate delay, cooldown, backoff).
    pub not_before: Option<Timestamp>,
    /// Bumped by every write; writers name the version they read.
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What a caller asks to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewExecution {
    pub id: ExecutionId,
    pub tenant: TenantId,
    pub source: SourceId,
    pub pipeline: PipelineName,
    pub run_key: RunKey,
    pub replay_of: Option<ExecutionId>,
    pub not_before: Option<Timestamp>,
}

impl NewExecution {
    /// The record a winning create writes at `now`.
    pub fn into_record(self, now: Timestamp) -> ExecutionRecord {
        ExecutionRecord {
            id: self.id,
            tenant: self.tenant,
            source: self.source,
            pipeline: self.pipeline,
            run_key: self.run_key,
            stage: 0,
            status: ExecutionStatus::Received,
            attempt_count: 0,
            blocked_reason: None,
            lease: None,
            replay_of: self.replay_of,
            not_before: self.not_before,
            version: 1,
            created_at: now,
            updated_at: now,
        }
    }
}

/// The answer to a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// A new execution.
    Created(ExecutionRecord),
    /// An execution with this id (this run key) already exists; nothing was written.
    Existing(ExecutionRecord),
}

impl CreateOutcome {
    /// The record, new or existing.
    pub fn record(&self) -> &ExecutionRecord {
        match self {
            CreateOutcome::Created(r) | CreateOutcome::Existing(r) => r,
        }
    }
}

/// The answer to a lease request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The caller holds the lease; the record is as written (version bumped).
    Acquired(ExecutionRecord),
    /// Another owner holds an unexpired lease.
    Held {
        owner: HolderId,
        expires_at: Timestamp,
    },
    /// The execution already reached a terminal status: nothing to run.
    Finished(ExecutionRecord),
    /// No such execution.
    NotFound,
}

/// Fields a versioned update may set; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionChange {
    pub status: Option<ExecutionStatus>,
    pub stage: Option<u32>,
    pub attempt_count: Option<u32>,
    pub blocked_reason: Option<String>,
    /// `Some(None)` clears it.
    pub not_before: Option<Option<Timestamp>>,
    /// Drop the lease held by this owner in the same write.
    pub release_lease: bool,
}

/// The answer to a versioned update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Written; the new record.
    Updated(ExecutionRecord),
    /// The stored version is not the one named; the current record.
    VersionConflict(ExecutionRecord),
    /// The status change would move backward or out of a terminal state; nothing written.
    IllegalTransition {
        from: ExecutionStatus,
        to: ExecutionStatus,
    },
    /// No such execution.
    NotFound,
}

impl ExecutionChange {
    /// The sweep position a store writes with this change at `now`: the change's own
    /// `not_before` if it sets a later one, else `now`. A store cannot know a stored
    /// `not_before` the change leaves alone (DynamoDB has no `max` in an update), so it assumes
    /// none: never later than the true [`ExecutionRecord::sweep_position`], so the sweeper may
    /// see a waiting run early (and skip it) but never misses one. Both adapters use this.
    pub fn sweep_position(&self, now: Timestamp) -> Timestamp {
        match self.not_before {
            Some(Some(nb)) => nb.max(now),
            _ => now,
        }
    }
}

impl ExecutionRecord {
    /// Applies `change` as a store would, after the version and transition checks passed.
    pub fn apply(&mut self, change: &ExecutionChange, now: Timestamp) {
        if let Some(status) = change.status {
            self.status = status;
        }
        if let Some(stage) = change.stage {
            self.stage = stage;
        }
        if let Some(attempts) = change.attempt_count {
            self.attempt_count = attempts;
        }
        if let Some(reason) = &change.blocked_reason {
            self.blocked_reason = Some(reason.clone());
        }
        if let Some(not_before) = change.not_before {
            self.not_before = not_before;
        }
        if change.release_lease {
            self.lease = None;
        }
        self.version += 1;
        self.updated_at = now;
    }

    /// Whether a versioned update naming `expected_version` may apply `change` to this record:
    /// `None` if it may, otherwise what the store answers instead. An illegal status transition
    /// is reported before a version conflict (a writer with an old version learns the status is
    /// final rather than re-reading and trying again). Both adapters decide with this.
    pub fn check_update(
        &self,
        expected_version: u64,
        change: &ExecutionChange,
    ) -> Option<UpdateOutcome> {
        if let Some(to) = change.status {
            if !self.status.can_move_to(to) {
                return Some(UpdateOutcome::IllegalTransition {
                    from: self.status,
                    to,
                });
            }
        }
        (self.version != expected_version).then(|| UpdateOutcome::VersionConflict(self.clone()))
    }

    /// Since when the record has been waiting: its last write, or its `not_before` if later.
    /// The sweeper's index orders unfinished executions by it (not by the last write alone),
    /// so runs legitimately waiting on a future `not_before` never fill a sweep's places.
    pub fn idle_since(&self) -> Timestamp {
        self.not_before
            .map_or(self.updated_at, |nb| nb.max(self.updated_at))
    }

    /// The instant the sweeper's index orders this record by: [`Self::idle_since`], except
    /// RECEIVED, by its last write (a run intake recorded but never queued is queued after a
    /// short grace whatever its `not_before`, so that its delayed message is in the queue).
    pub fn sweep_position(&self) -> Timestamp {
        if self.status == ExecutionStatus::Received {
            self.updated_at
        } else {
            self.idle_since()
        }
    }

    /// Whether `owner` may take the lease at `now`: none held, expired, or already theirs.
    pub fn lease_available_to(&self, owner: &HolderId, now: Timestamp) -> bool {
        match &self.lease {
            None => true,
            Some(l) => l.owner == *owner || l.expires_at <= now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ExecutionStatus::*;
    use super::*;

    #[test]
    fn status_moves_only_forward() {
        assert!(Received.can_move_to(Queued));
        assert!(Queued.can_move_to(Running));
        assert!(Running.can_move_to(Running));
        assert!(Running.can_move_to(Blocked));
        assert!(!Running.can_move_to(Queued));
        assert!(!Succeeded.can_move_to(Succeeded));
        assert!(!Blocked.can_move_to(Running));
        assert_eq!(
            ExecutionStatus::predecessors_of(Queued),
            vec![Received, Queued]
        );
        assert_eq!(
            ExecutionStatus::predecessors_of(Failed),
            vec![Received, Queued, Running]
        );
    }

    fn record(status: ExecutionStatus, version: u64) -> ExecutionRecord {
        let new = NewExecution {
            id: ExecutionId::parse("exe_1").unwrap(),
            tenant: TenantId::parse("acme").unwrap(),
            source: SourceId::parse("github").unwrap(),
            pipeline: PipelineName::parse("review").unwrap(),
            run_key: RunKey::parse("a@1").unwrap(),
            replay_of: None,
            not_before: None,
        };
        ExecutionRecord {
            status,
            version,
            ..new.into_record(Timestamp::from_secs(100))
        }
    }

    fn to(status: ExecutionStatus) -> ExecutionChange {
        ExecutionChange {
            status: Some(status),
            ..ExecutionChange::default()
        }
    }

    #[test]
    fn check_update_reports_an_illegal_transition_before_a_version_conflict() {
        let running = record(Running, 3);
        assert_eq!(running.check_update(3, &to(Succeeded)), None);
        assert_eq!(running.check_update(3, &to(Running)), None);
        assert_eq!(running.check_update(3, &ExecutionChange::default()), None);
        assert_eq!(
            running.check_update(2, &to(Succeeded)),
            Some(UpdateOutcome::VersionConflict(running.clone()))
        );
        assert_eq!(
            running.check_update(2, &ExecutionChange::default()),
            Some(UpdateOutcome::VersionConflict(running.clone()))
        );
        let illegal = Some(UpdateOutcome::IllegalTransition {
            from: Running,
            to: Queued,
        });
        assert_eq!(running.check_update(3, &to(Queued)), illegal);
        assert_eq!(running.check_update(9, &to(Queued)), illegal);
        let done = record(Succeeded, 5);
        assert_eq!(
            done.check_update(1, &to(Succeeded)),
            Some(UpdateOutcome::IllegalTransition {
                from: Succeeded,
                to: Succeeded
            })
        );
        // A change without a status is judged by the version alone, even when finished.
        assert_eq!(done.check_update(5, &ExecutionChange::default()), None);
    }

    #[test]
    fn status_names_round_trip() {
        for s in ExecutionStatus::ALL {
            assert_eq!(ExecutionStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(ExecutionStatus::parse("PAUSED"), None);
    }
}
