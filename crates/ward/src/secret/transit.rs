//! `ward secret transit`: encryption as a service.

#[allow(unused_imports)]
use super::*;

/// `ward secret transit`.
#[derive(Subcommand)]
#[command(
    after_help = "Example:\n  ward secret transit create orders\n  ct=$(ward secret transit encrypt orders --file card.txt)\n  ward secret transit decrypt orders \"$ct\""
)]
pub enum TransitCommand {
    /// Create a named key (POST /v1/transit/keys/NAME); an existing key is left as it is
    #[command(
        after_help = "Example:\n  ward secret transit create orders\n  ward secret transit create signer --type ed25519"
    )]
    Create {
        /// The key's name
        name: String,
        /// The key type
        #[arg(long = "type", default_value = "aes256-gcm96", value_parser = ["aes256-gcm96", "ecdsa-p256", "ed25519"])]
        key_type: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Encrypt with a key and print the ciphertext (POST /v1/transit/encrypt/NAME)
    #[command(
        after_help = "--plaintext puts the text on the command line (and in shell history): prefer --file.\n\nExample:\n  ward secret transit encrypt orders --file card.txt\n  echo -n 4111111111111111 | ward secret transit encrypt orders --file -"
    )]
    #[command(group(clap::ArgGroup::new("input").required(true).args(["plaintext", "file"])))]
    Encrypt {
        /// The key's name
        name: String,
        /// The text to encrypt
        #[arg(long)]
        plaintext: Option<String>,
        /// A file to encrypt, as bytes (`-`: standard input)
        #[arg(long, value_name = "FILE")]
        file: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Decrypt a ciphertext and print the plaintext exactly, with nothing added (POST /v1/transit/decrypt/NAME)
    #[command(
        after_help = "Example:\n  ward secret transit decrypt orders vault:v1:AbCd… > card.txt"
    )]
    Decrypt {
        /// The key's name
        name: String,
        /// The ciphertext, vault:vN:… (`-`: standard input)
        ciphertext: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add a new version of a key; new encryptions use it, old ciphertexts still decrypt (POST /v1/transit/keys/NAME/rotate)
    #[command(after_help = "Example:\n  ward secret transit rotate orders")]
    Rotate {
        /// The key's name
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a key: type, versions, and which versions may encrypt and decrypt (GET /v1/transit/keys/NAME)
    #[command(after_help = "Example:\n  ward secret transit show orders")]
    Show {
        /// The key's name
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub(super) async fn transit(cmd: TransitCommand) -> anyhow::Result<()> {
    match cmd {
        TransitCommand::Create {
            name,
            key_type,
            client,
        } => {
            let name = check_name("key", &name)?;
            let vault = Vault::connect(&client)?;
            vault
                .call(
                    "POST",
                    &format!("/v1/transit/keys/{name}"),
                    Some(json!({ "type": key_type })),
                )
                .await
                .with_context(|| format!("cannot create key {name}"))?;
            // Creating an existing key changes nothing, as in Vault: say
            // so when it is not the key asked for.
            let key = read_key(&vault, name).await?;
            if key["type"].as_str() != Some(key_type.as_str()) {
                bail!(
                    "a key named {name} already exists with type {}: choose another name",
                    plain(&key["type"])
                );
            }
            client.print(&key, print_key);
        }
        TransitCommand::Encrypt {
            name,
            plaintext,
            file,
            client,
        } => {
            let name = check_name("key", &name)?;
            let bytes = match (plaintext, file) {
                (Some(p), _) => p.into_bytes(),
                (None, Some(f)) => read_bytes(&f)?,
                (None, None) => bail!("give --plaintext TEXT or --file FILE"),
            };
            let v = Vault::connect(&client)?
                .call(
                    "POST",
                    &format!("/v1/transit/encrypt/{name}"),
                    Some(json!({ "plaintext": base64_encode(&bytes) })),
                )
                .await
                .with_context(|| format!("cannot encrypt with key {name}"))?;
            client.print(&v["data"], |d| println!("{}", plain(&d["ciphertext"])));
        }
        TransitCommand::Decrypt {
            name,
            ciphertext,
            client,
        } => {
            let name = check_name("key", &name)?;
            let ciphertext = if ciphertext == "-" {
                read_text("-")?.trim().to_owned()
            } else {
                ciphertext
            };
            let v = Vault::connect(&client)?
                .call(
                    "POST",
                    &format!("/v1/transit/decrypt/{name}"),
                    Some(json!({ "ciphertext": ciphertext })),
                )
                .await
                .with_context(|| format!("cannot decrypt with key {name}"))?;
            let b64 = v["data"]["plaintext"].as_str().unwrap_or_default();
            match client.output {
                crate::client::Output::Json => client.print(&v["data"], |_| {}),
                crate::client::Output::Text => {
                    let bytes = base64_decode(b64)
                        .ok_or_else(|| anyhow!("the server's plaintext is not base64"))?;
                    let mut out = std::io::stdout().lock();
                    out.write_all(&bytes)?;
                    out.flush()?;
                }
            }
        }
        TransitCommand::Rotate { name, client } => {
            let name = check_name("key", &name)?;
            let v = Vault::connect(&client)?
                .call("POST", &format!("/v1/transit/keys/{name}/rotate"), None)
                .await
                .with_context(|| format!("cannot rotate key {name}"))?;
            client.print(&v["data"], |d| {
                println!(
                    "key {name} rotated: new encryptions use version {}",
                    d["latest_version"]
                )
            });
        }
        TransitCommand::Show { name, client } => {
            let name = check_name("key", &name)?;
            let key = read_key(&Vault::connect(&client)?, name).await?;
            client.print(&key, print_key);
        }
    }
    Ok(())
}

async fn read_key(vault: &Vault, name: &str) -> anyhow::Result<Value> {
    let v = vault
        .call("GET", &format!("/v1/transit/keys/{name}"), None)
        .await
        .map_err(not_found(|| {
            format!("no transit key named {name} (`ward secret transit create {name}` makes one)")
        }))?;
    Ok(v["data"].clone())
}

fn print_key(k: &Value) {
    let mut versions: Vec<(u64, String)> = k["keys"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(n, v)| {
            let created = match v {
                Value::Number(t) => rfc3339(t.as_i64().unwrap_or(0)),
                other => plain(&other["creation_time"]),
            };
            n.parse().ok().map(|n| (n, created))
        })
        .collect();
    versions.sort();
    let min_enc = match k["min_encryption_version"].as_u64() {
        Some(0) | None => "the latest".to_owned(),
        Some(n) => n.to_string(),
    };
    let mut rows = vec![
        ("name".to_owned(), plain(&k["name"])),
        ("type".to_owned(), plain(&k["type"])),
        ("latest version".to_owned(), k["latest_version"].to_string()),
        ("encrypts with".to_owned(), min_enc),
        (
            "decrypts from version".to_owned(),
            k["min_decryption_version"].to_string(),
        ),
    ];
    rows.extend(
        versions
            .into_iter()
            .map(|(n, created)| (format!("version {n}"), format!("created {created}"))),
    );
    print_table(&rows);
}

/// Standard base64 with padding, as Vault's transit takes and gives plaintext.
pub(super) fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The inverse of [`base64_encode`]; `None` for anything that is not
/// padded standard base64.
pub(super) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}
