//! `ward entry` (registrations) and `ward agent token` (join tokens).

use std::time::Duration;

use clap::Subcommand;
use ward_api::{Entry, EntryCreate, EntryUpdate};
use ward_identity::SpiffeId;

use crate::client::{ClientArgs, parse_duration, rfc3339};

/// Entry commands.
#[derive(Subcommand)]
pub enum EntryCommand {
    /// Register a workload: matching processes on the parent node get SPIFFE-ID
    #[command(
        after_help = "Example:\n  ward entry create --spiffe-id spiffe://ward.test/ns/shop/sa/orders \\\n    --parent spiffe://ward.test/ward/agent/node1 --selector unix:uid:1000 --x509-ttl 1h"
    )]
    Create {
        /// The SPIFFE ID to issue
        #[arg(long)]
        spiffe_id: String,
        /// The SPIFFE ID of the agent (node) allowed to serve it
        #[arg(long = "parent")]
        parent: String,
        /// TYPE:VALUE selector, such as unix:uid:1000; repeat for more (all must match)
        #[arg(long = "selector", required = true)]
        selectors: Vec<String>,
        /// X.509-SVID lifetime (default 1h)
        #[arg(long, alias = "ttl", value_parser = parse_duration)]
        x509_ttl: Option<Duration>,
        /// JWT-SVID lifetime (default 5m)
        #[arg(long, value_parser = parse_duration)]
        jwt_ttl: Option<Duration>,
        /// KEY=VALUE label (a tag of the workload in policies); repeat for more
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List entries
    List {
        /// Only entries under this parent (agent) SPIFFE ID
        #[arg(long)]
        parent: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one entry
    Show {
        /// Entry ID
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change an entry (only the flags given change)
    Update {
        /// Entry ID
        id: String,
        /// New SPIFFE ID
        #[arg(long)]
        spiffe_id: Option<String>,
        /// New parent
        #[arg(long = "parent")]
        parent: Option<String>,
        /// New selectors (replace all of the old ones)
        #[arg(long = "selector")]
        selectors: Vec<String>,
        /// New X.509-SVID lifetime
        #[arg(long, alias = "ttl", value_parser = parse_duration)]
        x509_ttl: Option<Duration>,
        /// New JWT-SVID lifetime
        #[arg(long, value_parser = parse_duration)]
        jwt_ttl: Option<Duration>,
        /// New labels, KEY=VALUE (replace all of the old ones)
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Remove every label
        #[arg(long, conflicts_with = "labels")]
        clear_labels: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete an entry
    Delete {
        /// Entry ID
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn check_id(flag: &str, value: &str) -> anyhow::Result<()> {
    SpiffeId::parse(value).map_err(|e| anyhow::anyhow!("{flag} {value:?}: {e}"))?;
    Ok(())
}

fn print_entries(entries: &[Entry]) {
    if entries.is_empty() {
        println!("no entries");
        return;
    }
    println!(
        "{:<36}  {:<44}  {:<36}  {:<6}  SELECTORS",
        "ID", "SPIFFE ID", "PARENT", "TTL"
    );
    for e in entries {
        println!(
            "{:<36}  {:<44}  {:<36}  {:<6}  {}",
            e.id,
            e.spiffe_id,
            e.parent_id,
            humantime::format_duration(Duration::from_secs(e.x509_ttl as u64)).to_string(),
            e.selectors.join(",")
        );
    }
}

fn print_entry(e: &Entry) {
    println!("ID          {}", e.id);
    println!("SPIFFE ID   {}", e.spiffe_id);
    println!("parent      {}", e.parent_id);
    println!("selectors   {}", e.selectors.join(", "));
    if !e.labels.is_empty() {
        let labels: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("labels      {}", labels.join(", "));
    }
    println!(
        "x509 TTL    {}",
        humantime::format_duration(Duration::from_secs(e.x509_ttl as u64))
    );
    println!(
        "JWT TTL     {}",
        humantime::format_duration(Duration::from_secs(e.jwt_ttl as u64))
    );
    println!("revision    {}", e.revision);
    println!("updated     {}", rfc3339(e.updated_at));
}

/// A warning for selectors that name only an executable: any process of
/// any user on the node that runs that file matches them.
fn executable_only_warning(selectors: &[String]) -> Option<String> {
    let executable = |s: &String| s.starts_with("unix:path:") || s.starts_with("unix:sha256:");
    (!selectors.is_empty() && selectors.iter().all(executable)).then(|| {
        "warning: these selectors name only an executable, so any process of any user on the node that runs it gets this identity; add unix:uid: or unix:user: to tie it to a user".to_owned()
    })
}

pub async fn run(cmd: EntryCommand) -> anyhow::Result<()> {
    match cmd {
        EntryCommand::Create {
            spiffe_id,
            parent,
            selectors,
            x509_ttl,
            jwt_ttl,
            labels,
            client,
        } => {
            check_id("--spiffe-id", &spiffe_id)?;
            check_id("--parent", &parent)?;
            if let Some(w) = executable_only_warning(&selectors) {
                eprintln!("{w}");
            }
            let e = client
                .client()?
                .create_entry(&EntryCreate {
                    spiffe_id,
                    parent_id: parent,
                    selectors,
                    x509_ttl: x509_ttl.map(|d| d.as_secs()),
                    jwt_ttl: jwt_ttl.map(|d| d.as_secs()),
                    labels: labels.into_iter().collect(),
                })
                .await?;
            client.print(&e, print_entry);
        }
        EntryCommand::List { parent, client } => {
            let list = client.client()?.list_entries(parent.as_deref(), 0).await?;
            client.print(&list.entries, |e| print_entries(e));
        }
        EntryCommand::Show { id, client } => {
            let e = client.client()?.entry(&id).await?;
            client.print(&e, print_entry);
        }
        EntryCommand::Update {
            id,
            spiffe_id,
            parent,
            selectors,
            x509_ttl,
            jwt_ttl,
            labels,
            clear_labels,
            client,
        } => {
            if let Some(s) = &spiffe_id {
                check_id("--spiffe-id", s)?;
            }
            if let Some(p) = &parent {
                check_id("--parent", p)?;
            }
            let req = EntryUpdate {
                spiffe_id,
                parent_id: parent,
                selectors: (!selectors.is_empty()).then_some(selectors),
                x509_ttl: x509_ttl.map(|d| d.as_secs()),
                jwt_ttl: jwt_ttl.map(|d| d.as_secs()),
                labels: if clear_labels {
                    Some(Default::default())
                } else {
                    (!labels.is_empty()).then(|| labels.into_iter().collect())
                },
            };
            let e = client.client()?.update_entry(&id, &req).await?;
            client.print(&e, print_entry);
        }
        EntryCommand::Delete { id, client } => {
            client.client()?.delete_entry(&id).await?;
            client.print(&serde_json::json!({"deleted": id}), |_| {
                println!("deleted {id}")
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod warning_tests {
    use super::executable_only_warning;

    #[test]
    fn selectors_naming_only_an_executable_are_warned_about() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(executable_only_warning(&v(&["unix:path:/usr/bin/app"])).is_some());
        assert!(executable_only_warning(&v(&["unix:path:/a", "unix:sha256:ab"])).is_some());
        assert!(executable_only_warning(&v(&["unix:path:/a", "unix:uid:1000"])).is_none());
        assert!(executable_only_warning(&v(&["unix:uid:1000"])).is_none());
    }
}
