//! A proposal as a card: what will change (the exact diff, or the first rows
//! of its effects), who asked, and Approve / Reject. Rendered here only: the
//! `/devices` page lists these cards, and the tool runner fetches one from
//! `/proposals/{id}/card` for the change it just proposed.

use fusion_host_server::{ProposalRecord, ProposalStatus};
use maud::{Markup, html};

/// The card of `proposal`, on the device named `device` (when known).
/// Buttons carry `data-decide`; the page's script posts the decision and
/// puts its outcome in the card's `.outcome`.
pub(crate) fn proposal_card(proposal: &ProposalRecord, device: Option<&str>) -> Markup {
    let pending = proposal.status == ProposalStatus::Pending;
    html! {
        div.proposal id={ "proposal-" (proposal.id) } data-proposal=(proposal.id) {
            div.row {
                div { strong { (proposal.tool) } " on " (device.unwrap_or("?")) span.muted { " — asked by " (proposal.requested_by) } }
                div.outcome {
                    @if pending {
                        button.primary.small data-decide="approve" data-id=(proposal.id) type="button" { "Approve" }
                        " "
                        button.small data-decide="reject" data-id=(proposal.id) type="button" { "Reject" }
                    } @else {
                        span.muted { (proposal.status.as_str()) }
                    }
                }
            }
            p { (proposal.plan.summary) }
            @if let Some(diff) = &proposal.plan.diff { (diff_view(diff)) } @else if !proposal.plan.effects.is_empty() { (effects_view(&proposal.plan)) }
        }
    }
}

/// A unified diff, each line coloured by what it does.
fn diff_view(diff: &str) -> Markup {
    html! {
        pre.diff {
            @for line in diff.lines() {
                @let class = if line.starts_with("+++") || line.starts_with("---") { "meta" }
                    else if line.starts_with('+') { "add" }
                    else if line.starts_with('-') { "del" }
                    else if line.starts_with("@@") { "hunk" } else { "ctx" };
                span class=(class) { (line) } "\n"
            }
        }
    }
}

/// Rows of a plan shown on the page; the rest are counted.
const PLAN_ROWS: usize = 20;

/// A plan's effects as a table (a rename batch, a move, a delete): the first
/// rows and how many there are in all.
fn effects_view(plan: &fusion_tools::Plan) -> Markup {
    let total = plan.effects_total as usize;
    let shown = &plan.effects[..plan.effects.len().min(PLAN_ROWS)];
    let has_to = shown.iter().any(|e| e.to.is_some());
    let folder = common_folder(
        shown
            .iter()
            .flat_map(|e| std::iter::once(e.path.as_str()).chain(e.to.as_deref())),
    );
    let short = |p: &str| p.get(folder.len()..).unwrap_or(p).to_string();
    html! {
        @if !folder.is_empty() { p.muted.folder { "In " code { (folder.trim_end_matches(['/', '\\'])) } ":" } }
        table.effects {
            thead { tr { th { "What" } th { "Path" } @if has_to { th { "New path" } } th { "Size" } } }
            tbody {
                @for e in shown {
                    tr {
                        td.muted { (serde_json::to_value(e.op).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()) }
                        td { code { (short(&e.path)) } }
                        @if has_to { td { code { (short(e.to.as_deref().unwrap_or(""))) } } }
                        td.muted { (e.bytes.map(|b| format!("{b} B")).unwrap_or_default()) }
                    }
                }
            }
        }
        @if total > shown.len() {
            p.muted.more { "… and " (total - shown.len()) " more (" (total) " in all)" }
        }
    }
}

/// The folder every path shares, with its trailing separator ("" if none):
/// a batch of 480 renames in one folder reads as names, not as 960 full paths.
fn common_folder<'a>(mut paths: impl Iterator<Item = &'a str>) -> String {
    let Some(first) = paths.next() else {
        return String::new();
    };
    let mut prefix = first;
    for path in paths {
        let common = prefix
            .bytes()
            .zip(path.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        prefix = &prefix[..common];
    }
    match prefix.rfind(['/', '\\']) {
        Some(end) => prefix[..=end].to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn common_folder_stops_at_a_separator() {
        let f = |v: &[&str]| super::common_folder(v.iter().copied());
        assert_eq!(f(&["/s/scans/Scan_1.e57", "/s/scans/Scan_2.e57"]), "/s/scans/");
        assert_eq!(f(&["/s/scans/a", "/s/scans2/a"]), "/s/");
        assert_eq!(f(&[r"C:\s\a.e57", r"C:\s\b.e57"]), r"C:\s\");
        assert_eq!(f(&["a", "b"]), "");
        assert_eq!(f(&[]), "");
    }
}
