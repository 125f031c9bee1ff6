//! `ward secret policy`: the vault's Cedar policies.

#[allow(unused_imports)]
use super::*;

/// `ward secret policy`.
#[derive(Subcommand)]
#[command(
    after_help = "Vault policies are Cedar, validated against `ward secret policy schema`. The principal is\nthe workload (Ward::Service, by SPIFFE ID), the action one of Vault's capabilities (create,\nread, update, patch, delete, list), the resource the Vault API path after /v1/.\n\nExample:\n  ward secret policy write orders orders.cedar"
)]
pub enum PolicyCommand {
    /// Validate and store a named policy (PUT /v1/sys/policies/cedar/NAME); all named policies are in force together
    #[command(
        after_help = "Example (orders may read its own secrets):\n  permit(principal == Ward::Service::\"spiffe://ward.local/ns/shop/sa/orders\",\n         action == Vault::Action::\"read\",\n         resource)\n  when { resource.path like \"secret/data/orders/*\" };\n\n  ward secret policy write orders orders.cedar\n\nPaths are Vault API paths after /v1/: secret/data/… to read and write values,\nsecret/metadata/… to list, transit/encrypt/KEY, database/creds/ROLE.\nEverything not permitted is denied. `forbid` is Vault's `deny`: it wins over every permit.\nThe policy is checked with every other stored one; a set that does not validate is refused\nwith the policy's name and the line."
    )]
    Write {
        /// The policy's name: letters, digits, `-`, `_`, `.`
        name: String,
        /// A Cedar file (`-`: standard input)
        file: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a stored policy (GET /v1/sys/policies/cedar/NAME)
    #[command(after_help = "Example:\n  ward secret policy read orders > orders.cedar")]
    Read {
        /// The policy's name
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the stored policies' names (GET /v1/sys/policies/cedar)
    #[command(after_help = "Example:\n  ward secret policy list")]
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a policy (DELETE /v1/sys/policies/cedar/NAME); what it permitted is denied at once
    #[command(after_help = "Example:\n  ward secret policy delete orders")]
    Delete {
        /// The policy's name
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the Cedar schema vault policies are validated against (no server needed)
    #[command(after_help = "Example:\n  ward secret policy schema > vault.cedarschema")]
    Schema,
}

pub(super) async fn policy(cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Write { name, file, client } => {
            let name = check_name("policy", &name)?;
            let text = read_text(&file)?;
            Vault::connect(&client)?
                .call(
                    "PUT",
                    &format!("/v1/sys/policies/cedar/{name}"),
                    Some(json!({ "policy": text })),
                )
                .await
                .with_context(|| format!("policy {name} ({file}) was not stored"))?;
            client.print(&json!({"name": name, "stored": true}), |_| {
                println!("policy {name} stored; it applies within seconds")
            });
        }
        PolicyCommand::Read { name, client } => {
            let name = check_name("policy", &name)?;
            let v = Vault::connect(&client)?
                .call("GET", &format!("/v1/sys/policies/cedar/{name}"), None)
                .await
                .map_err(not_found(|| {
                    format!("no vault policy named {name} (`ward secret policy list` shows them)")
                }))?;
            client.print(&v["data"], |d| {
                let text = d["policy"].as_str().unwrap_or_default();
                print!("{text}");
                if !text.ends_with('\n') {
                    println!();
                }
            });
        }
        PolicyCommand::List { client } => {
            let names: Vec<String> = match Vault::connect(&client)?
                .call("GET", "/v1/sys/policies/cedar", None)
                .await
            {
                Ok(v) => v["data"]["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect(),
                Err(ClientError::Api { status: 404, .. }) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            client.print(&names, |names| {
                if names.is_empty() {
                    println!("no vault policies: workloads may do nothing");
                }
                for n in names {
                    println!("{n}");
                }
            });
        }
        PolicyCommand::Delete { name, client } => {
            let name = check_name("policy", &name)?;
            Vault::connect(&client)?
                .call("DELETE", &format!("/v1/sys/policies/cedar/{name}"), None)
                .await
                .with_context(|| format!("cannot delete policy {name}"))?;
            client.print(&json!({"name": name, "deleted": true}), |_| {
                println!("policy {name} deleted")
            });
        }
        PolicyCommand::Schema => print!("{}", ward_policy::vault::SCHEMA_TEXT),
    }
    Ok(())
}
