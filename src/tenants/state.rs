//! The tenant state machine, in one place: which event moves which state where.
//!
//! `None` is a tenant the service has never seen. `Ignore` means the event is
//! stale or repeated and changes nothing (the event still succeeds, with a
//! note); `Reject` is a permanent error.

use crate::store::TenantState;

/// Something that happens to a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Provision,
    ProvisionSucceeded,
    ProvisionFailed,
    Deploy,
    DeploySucceeded,
    DeployFailed,
    Deprovision,
    DeprovisionSucceeded,
    DeprovisionFailed,
    /// A change of tier or plan (`TENANT_UPDATE`).
    Update,
    UpdateSucceeded,
    UpdateFailed,
    Suspend,
    SuspendSucceeded,
    SuspendFailed,
    Resume,
    ResumeSucceeded,
    ResumeFailed,
    /// The archive taken before deprovisioning (`backupJobIdentifier`).
    BackupSucceeded,
    BackupFailed,
}

/// What an event does to a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Move to (or stay in, doing the event's work) this state.
    To(TenantState),
    /// Repeated or out of order: change nothing.
    Ignore(String),
    /// Cannot apply: a permanent error.
    Reject(String),
}

/// The transition `event` causes from `current`.
pub fn next(current: Option<TenantState>, event: Lifecycle) -> Transition {
    use Lifecycle as L;
    use TenantState as S;
    let Some(state) = current else {
        return match event {
            L::Provision => Transition::To(S::Provisioning),
            _ => Transition::Reject("unknown tenant: it was never provisioned here".into()),
        };
    };
    let ignore = |why: &str| Transition::Ignore(format!("{why} (tenant is {state})"));
    let busy = |what: &str| {
        Transition::Reject(format!("tenant is {state}: wait for its {what} to finish"))
    };
    match (event, state) {
        (L::Provision, S::ProvisionFailed | S::Inactive) => Transition::To(S::Provisioning),
        (L::Provision, S::Provisioning | S::Deploying) => {
            ignore("provisioning already in progress")
        }
        (L::Provision, S::Active | S::Updating | S::Suspending | S::Suspended | S::Resuming) => {
            ignore("already provisioned")
        }
        (L::Provision, S::Deprovisioning | S::Archiving) => Transition::Reject(
            "tenant is being deprovisioned; provision it again once it is INACTIVE".into(),
        ),

        (L::ProvisionSucceeded, S::Provisioning) => Transition::To(S::Deploying),
        (L::ProvisionFailed, S::Provisioning) => Transition::To(S::ProvisionFailed),
        (L::ProvisionSucceeded | L::ProvisionFailed, _) => ignore("stale provisioning result"),

        (L::Deploy, S::Deploying | S::Active) => Transition::To(state),
        (L::Deploy, _) => ignore("nothing to deploy"),
        (L::DeploySucceeded, S::Deploying) => Transition::To(S::Active),
        (L::DeployFailed, S::Deploying) => Transition::To(S::ProvisionFailed),
        (L::DeploySucceeded | L::DeployFailed, _) => ignore("stale deployment result"),

        (
            L::Deprovision,
            S::Provisioning | S::Deploying | S::Active | S::ProvisionFailed | S::Suspended,
        ) => Transition::To(S::Deprovisioning),
        (L::Deprovision, S::Updating) => busy("update"),
        (L::Deprovision, S::Suspending) => busy("suspension"),
        (L::Deprovision, S::Resuming) => busy("resumption"),
        (L::Deprovision, S::Deprovisioning) => ignore("deprovisioning already in progress"),
        // After its backup: the deprovisioning itself (the handler checks the
        // backup is the one that finished).
        (L::Deprovision, S::Archiving) => Transition::To(S::Deprovisioning),
        (L::Deprovision, S::Inactive) => ignore("already deprovisioned"),
        (L::DeprovisionSucceeded, S::Deprovisioning) => Transition::To(S::Inactive),
        // The tenant stays DEPROVISIONING with the error recorded; a new
        // TENANT_DEPROVISIONING retries.
        (L::DeprovisionFailed, S::Deprovisioning) => Transition::To(S::Deprovisioning),
        (L::DeprovisionSucceeded | L::DeprovisionFailed, _) => {
            ignore("stale deprovisioning result")
        }

        // A tier change runs on an ACTIVE tenant, which stays ACTIVE.
        (L::Update, S::Active) => Transition::To(S::Updating),
        (L::Update, S::Updating) => ignore("an update is already in progress"),
        (L::Update, _) => Transition::Reject(format!(
            "only an ACTIVE tenant can be updated; it is {state}"
        )),
        (L::UpdateSucceeded | L::UpdateFailed, S::Updating) => Transition::To(S::Active),
        (L::UpdateSucceeded | L::UpdateFailed, _) => ignore("stale update result"),

        (L::Suspend, S::Active) => Transition::To(S::Suspending),
        (L::Suspend, S::Suspending | S::Suspended) => ignore("already suspended"),
        (L::Suspend, _) => Transition::Reject(format!(
            "only an ACTIVE tenant can be suspended; it is {state}"
        )),
        (L::SuspendSucceeded, S::Suspending) => Transition::To(S::Suspended),
        (L::SuspendFailed, S::Suspending) => Transition::To(S::Active),
        (L::SuspendSucceeded | L::SuspendFailed, _) => ignore("stale suspension result"),

        (L::Resume, S::Suspended) => Transition::To(S::Resuming),
        (L::Resume, S::Resuming | S::Active) => ignore("not suspended"),
        (L::Resume, _) => Transition::Reject(format!(
            "only a SUSPENDED tenant can be resumed; it is {state}"
        )),
        (L::ResumeSucceeded, S::Resuming) => Transition::To(S::Active),
        (L::ResumeFailed, S::Resuming) => Transition::To(S::Suspended),
        (L::ResumeSucceeded | L::ResumeFailed, _) => ignore("stale resumption result"),

        // A backup's success leaves the tenant archiving until the
        // deprovisioning it raises starts; its failure stops the
        // deprovisioning (the handler puts back the state the tenant left).
        (L::BackupSucceeded, S::Archiving) => Transition::To(S::Archiving),
        (L::BackupFailed, S::Archiving) => Transition::To(S::Active),
        (L::BackupSucceeded | L::BackupFailed, _) => ignore("stale backup result"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Lifecycle as L;
    use TenantState as S;

    const STATES: [S; 11] = [
        S::Provisioning,
        S::Deploying,
        S::Active,
        S::ProvisionFailed,
        S::Deprovisioning,
        S::Inactive,
        S::Updating,
        S::Suspending,
        S::Suspended,
        S::Resuming,
        S::Archiving,
    ];
    const EVENTS: [L; 20] = [
        L::Provision,
        L::ProvisionSucceeded,
        L::ProvisionFailed,
        L::Deploy,
        L::DeploySucceeded,
        L::DeployFailed,
        L::Deprovision,
        L::DeprovisionSucceeded,
        L::DeprovisionFailed,
        L::Update,
        L::UpdateSucceeded,
        L::UpdateFailed,
        L::Suspend,
        L::SuspendSucceeded,
        L::SuspendFailed,
        L::Resume,
        L::ResumeSucceeded,
        L::ResumeFailed,
        L::BackupSucceeded,
        L::BackupFailed,
    ];

    fn to(from: Option<S>, event: L) -> Option<S> {
        match next(from, event) {
            Transition::To(s) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn happy_path_provision_deploy_deprovision() {
        let mut s = to(None, L::Provision);
        assert_eq!(s, Some(S::Provisioning));
        s = to(s, L::ProvisionSucceeded);
        assert_eq!(s, Some(S::Deploying));
        s = to(s, L::Deploy);
        assert_eq!(s, Some(S::Deploying));
        s = to(s, L::DeploySucceeded);
        assert_eq!(s, Some(S::Active));
        s = to(s, L::Deprovision);
        assert_eq!(s, Some(S::Deprovisioning));
        s = to(s, L::DeprovisionSucceeded);
        assert_eq!(s, Some(S::Inactive));
        assert_eq!(
            to(s, L::Provision),
            Some(S::Provisioning),
            "an INACTIVE tenant can come back"
        );
    }

    #[test]
    fn failures() {
        assert_eq!(
            to(Some(S::Provisioning), L::ProvisionFailed),
            Some(S::ProvisionFailed)
        );
        assert_eq!(
            to(Some(S::Deploying), L::DeployFailed),
            Some(S::ProvisionFailed)
        );
        assert_eq!(
            to(Some(S::ProvisionFailed), L::Provision),
            Some(S::Provisioning),
            "retry after failure"
        );
        assert_eq!(
            to(Some(S::Deprovisioning), L::DeprovisionFailed),
            Some(S::Deprovisioning)
        );
        assert_eq!(
            to(Some(S::ProvisionFailed), L::Deprovision),
            Some(S::Deprovisioning)
        );
    }

    #[test]
    fn repeated_events_change_nothing() {
        assert!(matches!(
            next(Some(S::Provisioning), L::Provision),
            Transition::Ignore(_)
        ));
        assert!(matches!(
            next(Some(S::Deploying), L::Provision),
            Transition::Ignore(_)
        ));
        assert!(matches!(
            next(Some(S::Active), L::Provision),
            Transition::Ignore(_)
        ));
        assert!(matches!(
            next(Some(S::Deploying), L::ProvisionSucceeded),
            Transition::Ignore(_)
        ));
        assert!(matches!(
            next(Some(S::Active), L::DeploySucceeded),
            Transition::Ignore(_)
        ));
        assert!(matches!(
            next(Some(S::Deprovisioning), L::Deprovision),
            Transition::Ignore(_)
        ));
        assert!(matches!(
            next(Some(S::Inactive), L::Deprovision),
            Transition::Ignore(_)
        ));
        assert!(matches!(
            next(Some(S::Inactive), L::DeprovisionSucceeded),
            Transition::Ignore(_)
        ));
    }

    #[test]
    fn out_of_order_results_are_ignored() {
        // A provisioning result arriving after deprovisioning began.
        assert!(matches!(
            next(Some(S::Deprovisioning), L::ProvisionSucceeded),
            Transition::Ignore(_)
        ));
        assert!(matches!(
            next(Some(S::Inactive), L::ProvisionFailed),
            Transition::Ignore(_)
        ));
        // A deployment result before provisioning finished.
        assert!(matches!(
            next(Some(S::Provisioning), L::DeploySucceeded),
            Transition::Ignore(_)
        ));
        assert!(matches!(
            next(Some(S::Provisioning), L::Deploy),
            Transition::Ignore(_)
        ));
        // A deprovisioning result for a tenant provisioned again since.
        assert!(matches!(
            next(Some(S::Provisioning), L::DeprovisionSucceeded),
            Transition::Ignore(_)
        ));
        // A redeploy of an active tenant keeps it ACTIVE; its failure does not demote it.
        assert_eq!(to(Some(S::Active), L::Deploy), Some(S::Active));
        assert!(matches!(
            next(Some(S::Active), L::DeployFailed),
            Transition::Ignore(_)
        ));
    }

    #[test]
    fn unknown_tenants_can_only_be_provisioned() {
        for event in EVENTS {
            let t = next(None, event);
            if event == L::Provision {
                assert_eq!(t, Transition::To(S::Provisioning));
            } else {
                assert!(
                    matches!(t, Transition::Reject(_)),
                    "{event:?} on an unknown tenant: {t:?}"
                );
            }
        }
    }

    #[test]
    fn provisioning_while_deprovisioning_is_rejected() {
        assert!(matches!(
            next(Some(S::Deprovisioning), L::Provision),
            Transition::Reject(_)
        ));
    }

    /// The whole table, a row per event and a column per state (in the
    /// order of `STATES`): the state it moves to (`p` provisioning, `d`
    /// deploying, `a` active, `f` provision failed, `x` deprovisioning, `i`
    /// inactive, `u` updating, `s` suspending, `S` suspended, `r` resuming,
    /// `A` archiving),
    /// `.` ignored, `!` rejected.
    const TABLE: [(L, &str); 20] = [
        (L::Provision, "...p!p....!"),
        (L::ProvisionSucceeded, "d.........."),
        (L::ProvisionFailed, "f.........."),
        (L::Deploy, ".da........"),
        (L::DeploySucceeded, ".a........."),
        (L::DeployFailed, ".f........."),
        (L::Deprovision, "xxxx..!!x!x"),
        (L::DeprovisionSucceeded, "....i......"),
        (L::DeprovisionFailed, "....x......"),
        (L::Update, "!!u!!!.!!!!"),
        (L::UpdateSucceeded, "......a...."),
        (L::UpdateFailed, "......a...."),
        (L::Suspend, "!!s!!!!..!!"),
        (L::SuspendSucceeded, ".......S..."),
        (L::SuspendFailed, ".......a..."),
        (L::Resume, "!!.!!!!!r.!"),
        (L::ResumeSucceeded, ".........a."),
        (L::ResumeFailed, ".........S."),
        (L::BackupSucceeded, "..........A"),
        (L::BackupFailed, "..........a"),
    ];

    fn letter(state: S) -> char {
        match state {
            S::Provisioning => 'p',
            S::Deploying => 'd',
            S::Active => 'a',
            S::ProvisionFailed => 'f',
            S::Deprovisioning => 'x',
            S::Inactive => 'i',
            S::Updating => 'u',
            S::Suspending => 's',
            S::Suspended => 'S',
            S::Resuming => 'r',
            S::Archiving => 'A',
        }
    }

    #[test]
    fn every_pair_is_decided_as_the_table_says() {
        assert_eq!(TABLE.len(), EVENTS.len());
        for (event, row) in TABLE {
            let expected: Vec<char> = row.chars().collect();
            assert_eq!(expected.len(), STATES.len(), "{event:?}");
            for (state, want) in STATES.into_iter().zip(expected) {
                let got = match next(Some(state), event) {
                    Transition::To(to) => letter(to),
                    Transition::Ignore(_) => '.',
                    Transition::Reject(_) => '!',
                };
                assert_eq!(got, want, "{event:?} from {state:?}");
            }
        }
    }

    #[test]
    fn update_suspend_and_resume_come_back_to_active() {
        let mut s = to(Some(S::Active), L::Update);
        assert_eq!(s, Some(S::Updating));
        s = to(s, L::UpdateFailed);
        assert_eq!(
            s,
            Some(S::Active),
            "a failed update keeps the tenant ACTIVE"
        );
        s = to(s, L::Suspend);
        s = to(s, L::SuspendSucceeded);
        assert_eq!(s, Some(S::Suspended));
        s = to(s, L::Resume);
        s = to(s, L::ResumeFailed);
        assert_eq!(
            s,
            Some(S::Suspended),
            "a failed resumption keeps it SUSPENDED"
        );
        s = to(s, L::Resume);
        s = to(s, L::ResumeSucceeded);
        assert_eq!(s, Some(S::Active));
        assert_eq!(
            to(Some(S::Suspended), L::Deprovision),
            Some(S::Deprovisioning)
        );
    }
}
