//! Proposals: a person's decision, and applying the stored input.

use fusion_protocol::Mode;

use super::Dispatcher;
use super::calls::ok_output;
use crate::error::{Error, Result};
use crate::events::HostEvent;
use crate::store::{ProposalRecord, ProposalStatus, ProposalUpdate};

impl Dispatcher {
    /// Approves the owner's pending proposal and applies the *stored* input
    /// with the stored precondition. Returns the proposal as it ends up
    /// (`applied`, with the output); a failed apply (a `conflict`, the device
    /// offline) marks it `failed` and returns the error.
    ///
    /// Once approved, the apply runs to its end in a task of its own: a
    /// caller that goes away (the person closed the page, a client timed
    /// out) neither stops the device mid-apply nor leaves the proposal
    /// `approved` with no outcome.
    pub async fn approve(&self, owner: &str, proposal_id: &str) -> Result<ProposalRecord> {
        let proposal = self.decide(owner, proposal_id, ProposalStatus::Approved).await?;
        let this = self.clone();
        let owner = owner.to_string();
        tokio::spawn(async move { this.carry_out(&owner, proposal).await })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "applying an approved proposal panicked");
                Err(Error::Store(crate::StoreError::new(e)))
            })
    }

    /// Applies an approved proposal's stored input and records how it went.
    async fn carry_out(&self, owner: &str, proposal: ProposalRecord) -> Result<ProposalRecord> {
        let proposal_id = proposal.id.as_str();
        let timeout = self.inner.config.call_timeout;
        let applied = async {
            let device = self.owned_device(owner, &proposal.device_id).await?;
            if device.revoked_at.is_some() {
                return Err(Error::DeviceRevoked { device_id: device.id });
            }
            let result = self
                .dispatch(
                    &device,
                    &proposal.tool,
                    Mode::Apply,
                    proposal.input.clone(),
                    Some(proposal.plan.precondition.clone()),
                    Some(proposal.id.clone()),
                    &proposal.requested_by,
                    timeout,
                    // Whoever follows the proposal hears the apply's
                    // progress as events that name it.
                    None,
                )
                .await?;
            ok_output(result)
        }
        .await;
        let (status, output, error) = match &applied {
            Ok(out) => (ProposalStatus::Applied, Some(out.output.clone()), None),
            Err(e) => (ProposalStatus::Failed, None, Some(e.to_body())),
        };
        let update = ProposalUpdate {
            status,
            decided_by: None,
            decided_at: None,
            output,
            error,
        };
        let ended = self
            .inner
            .store
            .transition_proposal(proposal_id, ProposalStatus::Approved, update)
            .await?;
        self.emit(HostEvent::ProposalResolved {
            owner: owner.to_string(),
            proposal_id: proposal_id.to_string(),
            status,
        });
        applied?;
        // Only this approval moves it on from `approved`.
        ended.ok_or_else(|| Error::ProposalNotFound {
            proposal_id: proposal_id.to_string(),
        })
    }

    /// Rejects the owner's pending proposal.
    pub async fn reject(&self, owner: &str, proposal_id: &str) -> Result<ProposalRecord> {
        let proposal = self.decide(owner, proposal_id, ProposalStatus::Rejected).await?;
        self.emit(HostEvent::ProposalResolved {
            owner: owner.to_string(),
            proposal_id: proposal.id.clone(),
            status: ProposalStatus::Rejected,
        });
        Ok(proposal)
    }

    /// Moves a pending proposal to `to` exactly once (compare-and-set in the
    /// store, so two approvers racing cannot both win).
    pub(super) async fn decide(
        &self,
        owner: &str,
        proposal_id: &str,
        to: ProposalStatus,
    ) -> Result<ProposalRecord> {
        let proposal = self.proposal(owner, proposal_id).await?;
        if proposal.status != ProposalStatus::Pending {
            return Err(Error::ProposalResolved {
                proposal_id: proposal.id,
                status: proposal.status,
            });
        }
        let now = self.now();
        let store = &self.inner.store;
        if now >= proposal.expires_at {
            let update = ProposalUpdate {
                status: ProposalStatus::Expired,
                decided_by: None,
                decided_at: None,
                output: None,
                error: None,
            };
            store
                .transition_proposal(proposal_id, ProposalStatus::Pending, update)
                .await?;
            return Err(Error::ProposalExpired {
                proposal_id: proposal.id,
            });
        }
        let update = ProposalUpdate {
            status: to,
            decided_by: Some(owner.to_string()),
            decided_at: Some(now),
            output: None,
            error: None,
        };
        match store
            .transition_proposal(proposal_id, ProposalStatus::Pending, update)
            .await?
        {
            Some(decided) => Ok(decided),
            None => {
                // Another approver won the race: say how it ended.
                let status = store
                    .proposal(proposal_id)
                    .await?
                    .map_or(ProposalStatus::Pending, |p| p.status);
                Err(Error::ProposalResolved {
                    proposal_id: proposal.id,
                    status,
                })
            }
        }
    }

    /// The owner's proposal `proposal_id`, in any status. Another owner's
    /// proposal is `proposal_not_found`, as one that does not exist.
    pub async fn proposal(&self, owner: &str, proposal_id: &str) -> Result<ProposalRecord> {
        match self.inner.store.proposal(proposal_id).await? {
            Some(p) if p.owner == owner => Ok(p),
            _ => Err(Error::ProposalNotFound {
                proposal_id: proposal_id.to_string(),
            }),
        }
    }

    /// The owner's proposals, newest first, optionally only those in `status`.
    pub async fn proposals(
        &self,
        owner: &str,
        status: Option<ProposalStatus>,
    ) -> Result<Vec<ProposalRecord>> {
        Ok(self.inner.store.proposals(owner, status).await?)
    }
}
