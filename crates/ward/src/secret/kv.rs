//! `ward secret put|get|list|delete|undelete|destroy|history|metadata`: KV v2 at `secret/`.

#[allow(unused_imports)]
use super::*;

pub(super) async fn put(a: PutArgs) -> anyhow::Result<()> {
    let path = check_path("PATH", &a.path, false)?;
    let data = match &a.json {
        Some(file) => {
            let what = if file == "-" { "standard input" } else { file };
            // serde_json's message gives line and column, never the text.
            match serde_json::from_str::<Value>(&read_text(file)?)
                .map_err(|e| anyhow!("{what} is not JSON: {e}"))?
            {
                Value::Object(m) => m,
                _ => bail!("{what} must hold a JSON object: {{\"KEY\": \"VALUE\", …}}"),
            }
        }
        None => data_from_pairs(&a.pairs)?,
    };
    if data.is_empty() {
        bail!("nothing to write: give KEY=VALUE pairs or --json FILE");
    }
    let mut body = json!({ "data": data });
    if let Some(cas) = a.cas {
        body["options"] = json!({ "cas": cas });
    }
    let answer = Vault::connect(&a.client)?
        .call("POST", &format!("/v1/secret/data/{path}"), Some(body))
        .await
        .with_context(|| format!("cannot write {path}"))?;
    let meta = &answer["data"];
    a.client.print(meta, |m| {
        println!(
            "{path}: version {} written ({} keys)",
            m["version"],
            data.len()
        )
    });
    Ok(())
}

pub(super) async fn get(a: GetArgs) -> anyhow::Result<()> {
    let path = check_path("PATH", &a.path, false)?;
    let vault = Vault::connect(&a.client)?;
    let mut url = format!("/v1/secret/data/{path}");
    if let Some(v) = a.version {
        url.push_str(&format!("?version={v}"));
    }
    let which = match a.version {
        Some(v) => format!("version {v} of {path}"),
        None => path.to_owned(),
    };
    let (status, body) = vault.client.vault_any_status("GET", &url, None).await?;
    if status == 404 {
        // A deleted or destroyed version comes with its metadata.
        let meta = &body["data"]["metadata"];
        if meta.is_object() {
            let version = &meta["version"];
            if meta["destroyed"].as_bool().unwrap_or(false) {
                bail!("version {version} of {path} is destroyed: its data is gone for good");
            }
            bail!(
                "version {version} of {path} was deleted at {}: `ward secret undelete {path} --versions {version}` restores it",
                meta["deletion_time"].as_str().unwrap_or("?")
            );
        }
        bail!("no secret at {which} (`ward secret list` shows what there is)");
    }
    if !(200..300).contains(&status) {
        return Err(anyhow!(ClientError::from_vault(status, &body)))
            .with_context(|| format!("cannot read {which}"));
    }
    warn(&body);
    let data = &body["data"]["data"];
    if let Some(field) = &a.field {
        let Some(value) = data.get(field) else {
            let keys: Vec<&str> = data
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            bail!(
                "{which} has no key {field:?}; its keys: {}",
                keys.join(", ")
            );
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", plain(value))?;
        return Ok(());
    }
    let meta = &body["data"]["metadata"];
    a.client.print(data, |data| {
        println!(
            "{path}, version {} (created {})",
            meta["version"],
            meta["created_time"].as_str().unwrap_or("?")
        );
        let mut rows = vec![("KEY".to_owned(), "VALUE".to_owned())];
        if let Some(m) = data.as_object() {
            rows.extend(m.iter().map(|(k, v)| (k.clone(), plain(v))));
        }
        print_table(&rows);
    });
    Ok(())
}

pub(super) async fn list(path: &str, client: ClientArgs) -> anyhow::Result<()> {
    let path = check_path("PATH", path, true)?;
    let url = if path.is_empty() {
        "/v1/secret/metadata/".to_owned()
    } else {
        format!("/v1/secret/metadata/{path}/")
    };
    let keys: Vec<String> = match Vault::connect(&client)?.call("LIST", &url, None).await {
        Ok(v) => v["data"]["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect(),
        // Vault answers an empty folder 404.
        Err(ClientError::Api { status: 404, .. }) => Vec::new(),
        Err(e) => return Err(anyhow!(e)).with_context(|| format!("cannot list {path:?}")),
    };
    client.print(&keys, |keys| {
        if keys.is_empty() {
            let at = if path.is_empty() { "the root" } else { path };
            println!("no secrets under {at}");
        }
        for k in keys {
            println!("{k}");
        }
    });
    Ok(())
}

pub(super) async fn change_versions(
    path: &str,
    op: &str,
    done: &str,
    versions: &[u64],
    client: &ClientArgs,
) -> anyhow::Result<()> {
    let path = check_path("PATH", path, false)?;
    Vault::connect(client)?
        .call(
            "POST",
            &format!("/v1/secret/{op}/{path}"),
            Some(json!({ "versions": versions })),
        )
        .await
        .with_context(|| format!("cannot {op} {path}"))?;
    client.print(&json!({"path": path, done: versions}), |_| {
        println!("{path}: versions {} are {done}", versions_text(versions))
    });
    Ok(())
}

/// The metadata of `path`, or a clear error when there is no secret.
async fn read_metadata(vault: &Vault, path: &str) -> anyhow::Result<Value> {
    let v = vault
        .call("GET", &format!("/v1/secret/metadata/{path}"), None)
        .await
        .map_err(not_found(|| format!("no secret at {path}")))?;
    Ok(v["data"].clone())
}

pub(super) async fn history(path: &str, client: ClientArgs) -> anyhow::Result<()> {
    let path = check_path("PATH", path, false)?;
    let meta = read_metadata(&Vault::connect(&client)?, path).await?;
    let current = meta["current_version"].as_u64().unwrap_or(0);
    let mut versions: Vec<(u64, &Value)> = meta["versions"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| k.parse().ok().map(|n| (n, v)))
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    let rows: Vec<Value> = versions
        .iter()
        .map(|(n, v)| {
            json!({
                "version": n,
                "created_time": v["created_time"],
                "deletion_time": v["deletion_time"],
                "destroyed": v["destroyed"],
                "state": version_state(v),
                "current": *n == current,
            })
        })
        .collect();
    client.print(&rows, |rows| {
        println!("{:<8} {:<32} STATE", "VERSION", "CREATED");
        for r in rows {
            let mark = if r["current"] == true {
                " (current)"
            } else {
                ""
            };
            println!(
                "{:<8} {:<32} {}{mark}",
                r["version"].to_string(),
                r["created_time"].as_str().unwrap_or("?"),
                r["state"].as_str().unwrap_or("?")
            );
        }
    });
    Ok(())
}

pub(super) async fn metadata(a: MetadataArgs) -> anyhow::Result<()> {
    let path = check_path("PATH", &a.path, false)?;
    let vault = Vault::connect(&a.client)?;
    let url = format!("/v1/secret/metadata/{path}");
    if a.delete {
        vault
            .call("DELETE", &url, None)
            .await
            .with_context(|| format!("cannot delete {path}"))?;
        a.client
            .print(&json!({"path": path, "deleted": true}), |_| {
                println!("{path}: deleted with every version")
            });
        return Ok(());
    }
    let mut body = Map::new();
    if let Some(m) = a.max_versions {
        body.insert("max_versions".into(), m.into());
    }
    if let Some(c) = a.cas_required {
        body.insert("cas_required".into(), c.into());
    }
    if let Some(d) = a.delete_version_after {
        body.insert("delete_version_after".into(), d.as_secs().into());
    }
    if !a.custom.is_empty() {
        let custom: BTreeMap<&str, &str> = a
            .custom
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        body.insert("custom_metadata".into(), json!(custom));
    }
    if !body.is_empty() {
        vault
            .call("POST", &url, Some(Value::Object(body)))
            .await
            .with_context(|| format!("cannot change the metadata of {path}"))?;
    }
    let meta = read_metadata(&vault, path).await?;
    a.client.print(&meta, |m| {
        let max = match m["max_versions"].as_u64() {
            Some(0) | None => format!("{} (the mount's setting)", m["mount_max_versions"]),
            Some(n) => n.to_string(),
        };
        let dva = m["delete_version_after"].as_str().unwrap_or("0s");
        let custom = m["custom_metadata"]
            .as_object()
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k}={}", plain(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "none".to_owned());
        print_table(&[
            ("path".into(), path.to_owned()),
            ("current version".into(), m["current_version"].to_string()),
            ("oldest version".into(), m["oldest_version"].to_string()),
            ("max versions".into(), max),
            ("cas required".into(), m["cas_required"].to_string()),
            (
                "delete version after".into(),
                if dva == "0s" {
                    "never".into()
                } else {
                    dva.to_owned()
                },
            ),
            ("custom metadata".into(), custom),
            ("created".into(), plain(&m["created_time"])),
            ("updated".into(), plain(&m["updated_time"])),
        ]);
    });
    Ok(())
}
