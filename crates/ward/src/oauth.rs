//! `ward client` (OAuth clients of the token service) and `ward token`
//! (admin minting for tests and drills, and offline verification of a
//! token against the issuer's JWKS).

use std::io::Read;

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{ClientArgs, parse_duration, rfc3339};

/// `ward client`.
#[derive(Subcommand)]
#[command(
    after_help = "Clients get tokens from the token service's /oauth/token with grant_type=client_credentials.\n\nExample:\n  ward client create reports --scope orders:read --audience https://api.example.org\n  curl --cacert ca.pem -u reports:SECRET -d grant_type=client_credentials $WARD_ADDR/oauth/token"
)]
pub enum ClientCommand {
    /// Register a client (POST /v1/oauth/clients); a secret client's secret is printed once
    #[command(
        after_help = "Without --spiffe-id or --jwk the client authenticates with a 256-bit secret that Ward generates,\nprints once and stores only as SHA-256 (no user-chosen secrets).\n--spiffe-id: the client authenticates with that SVID over mutual TLS (RFC 8705); its tokens are certificate-bound.\n--jwk FILE: the client signs private_key_jwt assertions (RFC 7523) with the key whose public JWK is in FILE.\n\nExample:\n  ward client create reports --scope orders:read --scope orders:write --audience https://api.example.org\n  ward client create billing --spiffe-id spiffe://example.org/ns/shop/sa/billing --audience orders"
    )]
    Create {
        /// The client ID (letters, digits, '-', '_', '.')
        name: String,
        /// A scope the client may ask for (repeatable)
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// An audience the client may ask for; the first is the default (repeatable, at least one)
        #[arg(long = "audience", value_name = "AUD", required = true)]
        audiences: Vec<String>,
        /// Authenticate with this SVID over mutual TLS instead of a secret
        #[arg(long, value_name = "SPIFFE_ID", conflicts_with = "jwk")]
        spiffe_id: Option<String>,
        /// Authenticate with private_key_jwt; FILE holds the public JWK (EC P-256 or Ed25519)
        #[arg(long, value_name = "FILE")]
        jwk: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the clients (GET /v1/oauth/clients)
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one client (GET /v1/oauth/clients/ID)
    Show {
        /// The client ID
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Replace a client's secret; the old one stops working at once (POST /v1/oauth/clients/ID/rotate-secret)
    RotateSecret {
        /// The client ID
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a client; its tokens stay valid until they expire (revoke them first if that matters)
    Delete {
        /// The client ID
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `ward token`.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Sign a token with the token service's real key (admin only, audited); prints the token alone
    #[command(
        after_help = "Claims in --claims override the defaults (iss, sub, aud, exp, iat, nbf, jti, scope, client_id);\nwith --exact only the given claims are signed. `--claims -` reads the JSON from stdin.\n\nExample:\n  ward token mint --client reports                                  # a normal token\n  ward token mint --client reports --claims '{\"exp\": 1}'            # expired\n  ward token mint --client reports --not-before 1h                  # not yet valid\n  ward token mint --client reports --exact --claims '{\"sub\": \"x\"}' # no exp, no iss, no aud"
    )]
    Mint {
        /// The client the token is for
        #[arg(long = "client", value_name = "ID")]
        client_id: String,
        /// Claims as a JSON object, or `-` for stdin
        #[arg(long, value_name = "JSON|-")]
        claims: Option<String>,
        /// Sign only the given claims
        #[arg(long)]
        exact: bool,
        /// Lifetime (default: the server's token lifetime)
        #[arg(long, value_parser = parse_duration, value_name = "D")]
        expires_in: Option<std::time::Duration>,
        /// Not valid until this long from now
        #[arg(long, value_parser = parse_duration, value_name = "D")]
        not_before: Option<std::time::Duration>,
        /// The audience (default: the client's first)
        #[arg(long, value_name = "AUD")]
        audience: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Verify a token offline against its issuer's JWKS (discovery at ISSUER/.well-known/openid-configuration)
    #[command(
        after_help = "Checks the signature (ES256 or EdDSA, key chosen by kid from the JWKS), iss, aud, exp and nbf,\nand prints the claims. Exit status 1 when the token is refused, with the reason.\n\nExample:\n  ward token verify \"$TOKEN\" --audience orders"
    )]
    Verify {
        /// The token (`-`: standard input)
        #[arg(value_name = "TOKEN")]
        jwt: String,
        /// The audience the token must name
        #[arg(long, value_name = "AUD")]
        audience: String,
        /// The issuer (default: WARD_ADDR)
        #[arg(long, value_name = "URL")]
        issuer: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The exchange policy (RFC 8693): which client may exchange which token for which audience (Cedar)
    #[command(subcommand)]
    Policy(ExchangePolicyCommand),
}

/// `ward token policy`.
#[derive(Subcommand)]
pub enum ExchangePolicyCommand {
    /// Validate and put a policy in force (FILE, or `-` for stdin)
    #[command(
        after_help = "The schema: principal Token::Client (client_id, spiffe_id), action Token::Action::\"exchange\",\nresource Token::Audience (the new token's audience), context { subject: {sub, issuer, client_id, scopes,\nactors, tenant}, scopes, lifetime (seconds), kind (\"access\" or \"event\") }. No policy: no exchange.\n\nExample:\n  permit(principal == Token::Client::\"gateway\", action, resource == Token::Audience::\"spiffe://example.org/ns/shop/sa/orders\")\n  when { context.kind == \"access\" };\n  permit(principal == Token::Client::\"producer\", action, resource == Token::Audience::\"billing\")\n  when { context.kind == \"event\" && context.lifetime <= 7200 };"
    )]
    Write {
        #[arg(value_name = "FILE|-")]
        file: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the policy in force
    Read {
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn read_arg(v: &str) -> anyhow::Result<String> {
    if v == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        return Ok(s.trim().to_owned());
    }
    Ok(v.to_owned())
}

fn print_client(c: &Value) {
    println!("client_id    {}", c["client_id"].as_str().unwrap_or(""));
    println!("auth method  {}", c["auth_method"].as_str().unwrap_or(""));
    if let Some(id) = c["spiffe_id"].as_str() {
        println!("spiffe id    {id}");
    }
    let list = |k: &str| {
        c[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    println!("scopes       {}", list("scopes"));
    println!("audiences    {}", list("audiences"));
    println!(
        "created      {}",
        rfc3339(c["created_at"].as_i64().unwrap_or(0))
    );
}

fn print_secret(c: &Value) {
    if let Some(secret) = c["client_secret"].as_str() {
        println!("client_secret {secret}");
        eprintln!("The secret is shown once: store it now (Ward keeps only its hash).");
    }
}

pub async fn run_client(cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Create {
            name,
            scopes,
            audiences,
            spiffe_id,
            jwk,
            client,
        } => {
            let jwk: Option<Value> = match jwk {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading the JWK file {path}"))?;
                    Some(
                        serde_json::from_str(&text)
                            .with_context(|| format!("{path} is not a JSON JWK"))?,
                    )
                }
                None => None,
            };
            let body = json!({"client_id": name, "scopes": scopes, "audiences": audiences, "spiffe_id": spiffe_id, "jwk": jwk});
            let (_, c) = client
                .client()?
                .vault("POST", "/v1/oauth/clients", Some(&body))
                .await?;
            client.print(&c, |c| {
                print_client(c);
                print_secret(c);
            });
        }
        ClientCommand::List { client } => {
            let (_, v) = client
                .client()?
                .vault("GET", "/v1/oauth/clients", None)
                .await?;
            client.print(&v, |v| {
                let list = v["clients"].as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("no clients; create one with `ward client create`");
                }
                for c in list {
                    println!(
                        "{:<24} {:<20} {}",
                        c["client_id"].as_str().unwrap_or(""),
                        c["auth_method"].as_str().unwrap_or(""),
                        c["audiences"]
                            .as_array()
                            .map(|a| a
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(","))
                            .unwrap_or_default()
                    );
                }
            });
        }
        ClientCommand::Show { name, client } => {
            let (_, c) = client
                .client()?
                .vault(
                    "GET",
                    &format!("/v1/oauth/clients/{}", id_path(&name)?),
                    None,
                )
                .await?;
            client.print(&c, print_client);
        }
        ClientCommand::RotateSecret { name, client } => {
            let (_, c) = client
                .client()?
                .vault(
                    "POST",
                    &format!("/v1/oauth/clients/{}/rotate-secret", id_path(&name)?),
                    None,
                )
                .await?;
            client.print(&c, print_secret);
        }
        ClientCommand::Delete { name, client } => {
            client
                .client()?
                .vault(
                    "DELETE",
                    &format!("/v1/oauth/clients/{}", id_path(&name)?),
                    None,
                )
                .await?;
            eprintln!("deleted client {name}");
        }
    }
    Ok(())
}

/// A client ID as a path segment (refused rather than encoded when it
/// holds anything but the characters IDs are made of).
fn id_path(id: &str) -> anyhow::Result<&str> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        || id == "."
        || id == ".."
    {
        bail!("{id:?} is not a client ID (letters, digits, '-', '_', '.')");
    }
    Ok(id)
}

pub async fn run_token(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Mint {
            client_id,
            claims,
            exact,
            expires_in,
            not_before,
            audience,
            client,
        } => {
            let claims: Value = match claims {
                Some(c) => {
                    let text = read_arg(&c)?;
                    let v: Value = serde_json::from_str(&text)
                        .map_err(|e| anyhow!("--claims is not JSON: {e}"))?;
                    if !v.is_object() {
                        bail!("--claims must be a JSON object");
                    }
                    v
                }
                None => json!({}),
            };
            let body = json!({
                "client_id": client_id,
                "claims": claims,
                "exact": exact,
                "expires_in": expires_in.map(|d| d.as_secs()),
                "not_before": not_before.map(|d| d.as_secs()),
                "audience": audience,
            });
            let (_, v) = client
                .client()?
                .vault("POST", "/v1/oauth/mint", Some(&body))
                .await?;
            println!("{}", v["access_token"].as_str().unwrap_or_default());
        }
        TokenCommand::Verify {
            jwt: token,
            audience,
            issuer,
            client,
        } => {
            let token = read_arg(&token)?;
            let issuer = match issuer.or_else(|| client.addr.clone()) {
                Some(i) => i.trim_end_matches('/').to_owned(),
                None => bail!("no issuer: pass --issuer URL or set WARD_ADDR"),
            };
            let cacert = client.cacert.clone().ok_or_else(|| {
                anyhow!("no CA certificate: set WARD_CACERT or pass --cacert FILE")
            })?;
            let http = ward_client::Client::new(&issuer, None, &cacert)?;
            let conf = http
                .get_json("/.well-known/openid-configuration")
                .await
                .context("reading the issuer's discovery document")?;
            if conf["issuer"].as_str() != Some(issuer.as_str()) {
                bail!(
                    "the discovery document names issuer {}, not {issuer}",
                    conf["issuer"]
                );
            }
            let jwks_uri = conf["jwks_uri"]
                .as_str()
                .ok_or_else(|| anyhow!("the discovery document has no jwks_uri"))?;
            let path = jwks_uri
                .strip_prefix(&issuer)
                .ok_or_else(|| anyhow!("the jwks_uri {jwks_uri} is not under the issuer"))?;
            let jwks = http.get_json(path).await.context("reading the JWKS")?;
            let audiences = [audience];
            match ward_identity::access_token::verify(
                &token,
                &jwks,
                &ward_identity::access_token::Expect {
                    issuer: &issuer,
                    audiences: &audiences,
                    algorithms: &[
                        ward_identity::access_token::Algorithm::ES256,
                        ward_identity::access_token::Algorithm::EdDSA,
                    ],
                    leeway: 5,
                },
            ) {
                Ok(claims) => client.print(&claims, |c| {
                    println!("valid");
                    println!("{}", serde_json::to_string_pretty(c).unwrap_or_default());
                }),
                Err(e) => bail!("the token is refused: {e}"),
            }
        }
        TokenCommand::Policy(ExchangePolicyCommand::Write { file, client }) => {
            let text = if file == "-" {
                read_arg("-")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?
            };
            let (_, v) = client
                .client()?
                .vault(
                    "PUT",
                    "/v1/oauth/exchange-policy",
                    Some(&json!({"policy": text})),
                )
                .await?;
            client.print(&v, |v| {
                println!(
                    "exchange policy version {} in force (sha256 {})",
                    v["version"],
                    v["sha256"].as_str().unwrap_or("")
                )
            });
        }
        TokenCommand::Policy(ExchangePolicyCommand::Read { client }) => {
            let (_, v) = client
                .client()?
                .vault("GET", "/v1/oauth/exchange-policy", None)
                .await?;
            client.print(&v, |v| {
                if v["version"] == 0 {
                    println!(
                        "no exchange policy: nothing is exchanged (`ward token policy write FILE`)"
                    );
                } else {
                    println!("{}", v["policy"].as_str().unwrap_or(""));
                }
            });
        }
    }
    Ok(())
}
