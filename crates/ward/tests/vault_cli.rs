//! End to end: `ward secret` against a real dev server — KV versions,
//! check-and-set, soft delete and destroy, metadata, the vault's Cedar
//! policies, transit, database connections (and, with
//! WARD_TEST_POSTGRES_URL, credentials whose user lives exactly as long as
//! its lease), and the help of every subcommand.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::*;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Runs the CLI against `s`, asserting success; returns stdout.
fn ok(s: &Server, args: &[&str]) -> String {
    let out = s.ward(args);
    assert!(
        out.status.success(),
        "ward {args:?} failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

/// Runs the CLI against `s`, asserting failure; returns stderr.
fn fails(s: &Server, args: &[&str]) -> String {
    let out = s.ward(args);
    assert!(
        !out.status.success(),
        "ward {args:?} should have failed: {}",
        stdout(&out)
    );
    stderr(&out)
}

/// Runs the CLI against `s` with `input` on standard input.
fn ward_stdin(s: &Server, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(ward_bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&s.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ward");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn kv_versions_fields_and_check_and_set() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "cli.test");
    let pw = tmp.path().join("pw.txt");
    std::fs::write(&pw, "from-a-file\n").unwrap();

    // KEY=VALUE, KEY=@FILE (exact contents) and KEY=- (stdin), none echoed.
    let out = ward_stdin(
        &s,
        &[
            "secret",
            "put",
            "orders/db",
            "username=orders",
            &format!("password=@{}", pw.display()),
            "token=-",
        ],
        b"from-stdin",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out) + &stderr(&out);
    assert!(printed.contains("version 1"), "{printed}");
    for value in ["from-a-file", "from-stdin", "=orders"] {
        assert!(!printed.contains(value), "put echoed a value: {printed}");
    }

    let table = ok(&s, &["secret", "get", "orders/db"]);
    assert!(table.contains("version 1"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("username") && l.ends_with("orders")),
        "{table}"
    );
    assert_eq!(
        ok(&s, &["secret", "get", "orders/db", "--field", "password"]),
        "from-a-file\n\n",
        "--field prints the value raw, newline-terminated"
    );
    assert_eq!(
        ok(&s, &["secret", "get", "orders/db", "--field", "token"]),
        "from-stdin\n"
    );
    let data = s.ward_json(&["secret", "get", "orders/db"]);
    assert_eq!(
        data,
        serde_json::json!({"username": "orders", "password": "from-a-file\n", "token": "from-stdin"})
    );
    let e = fails(&s, &["secret", "get", "orders/db", "--field", "nope"]);
    assert!(
        e.contains("no key \"nope\"") && e.contains("username"),
        "{e}"
    );
    assert!(!e.contains("from-a-file"), "an error showed a value: {e}");

    // A second version; the first stays readable.
    assert!(ok(&s, &["secret", "put", "orders/db", "username=v2"]).contains("version 2"));
    assert_eq!(
        ok(&s, &["secret", "get", "orders/db", "--field", "username"]),
        "v2\n"
    );
    assert_eq!(
        ok(
            &s,
            &[
                "secret",
                "get",
                "orders/db",
                "--version",
                "1",
                "--field",
                "username"
            ]
        ),
        "orders\n"
    );

    // Check-and-set: a stale version is refused, naming the current one.
    let e = fails(
        &s,
        &["secret", "put", "orders/db", "--cas", "1", "username=stale"],
    );
    assert!(e.contains("it is 2"), "{e}");
    assert!(!e.contains("stale"), "{e}");
    assert_eq!(
        ok(&s, &["secret", "get", "orders/db", "--field", "username"]),
        "v2\n",
        "the refused write changed nothing"
    );
    assert!(
        ok(
            &s,
            &["secret", "put", "orders/db", "--cas", "2", "username=v3"]
        )
        .contains("version 3")
    );
    let e = fails(&s, &["secret", "put", "orders/new", "--cas", "1", "a=b"]);
    assert!(e.contains("it is 0"), "{e}");

    // The whole object as JSON, from stdin.
    let out = ward_stdin(
        &s,
        &["secret", "put", "orders/config", "--json", "-"],
        br#"{"replicas": 3, "debug": false}"#,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        s.ward_json(&["secret", "get", "orders/config"]),
        serde_json::json!({"replicas": 3, "debug": false})
    );

    // Mistakes are named before anything is sent, without the argument's text.
    let e = fails(&s, &["secret", "put", "orders/db", "hunter2"]);
    assert!(e.contains("argument 1") && !e.contains("hunter2"), "{e}");
    let e = fails(&s, &["secret", "get", "orders/../payments"]);
    assert!(e.contains("`..`"), "{e}");
    let e = fails(&s, &["secret", "get", "orders/none"]);
    assert!(e.contains("no secret at orders/none"), "{e}");
    let e = fails(&s, &["secret", "get", "orders/db", "--version", "9"]);
    assert!(e.contains("no secret at version 9 of orders/db"), "{e}");
}

#[test]
fn kv_list_delete_undelete_destroy_and_history() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "cli.test");
    assert!(ok(&s, &["secret", "list"]).contains("no secrets under the root"));
    ok(&s, &["secret", "put", "orders/db", "v=1"]);
    ok(&s, &["secret", "put", "orders/db", "v=2"]);
    ok(&s, &["secret", "put", "orders/db", "v=3"]);
    ok(&s, &["secret", "put", "orders/api/key", "v=k"]);
    ok(&s, &["secret", "put", "top", "v=t"]);

    assert_eq!(ok(&s, &["secret", "list"]), "orders/\ntop\n");
    assert_eq!(ok(&s, &["secret", "list", "orders"]), "api/\ndb\n");
    assert_eq!(
        s.ward_json(&["secret", "list", "orders/api"]),
        serde_json::json!(["key"])
    );

    // Soft delete of the latest: reading it says deleted (and when), non-zero.
    ok(&s, &["secret", "delete", "orders/db"]);
    let e = fails(&s, &["secret", "get", "orders/db"]);
    assert!(
        e.contains("version 3 of orders/db was deleted at 20"),
        "{e}"
    );
    assert!(
        e.contains("ward secret undelete orders/db --versions 3"),
        "{e}"
    );
    ok(&s, &["secret", "undelete", "orders/db", "--versions", "3"]);
    assert_eq!(
        ok(&s, &["secret", "get", "orders/db", "--field", "v"]),
        "3\n"
    );

    // Delete by version, destroy, and the history that shows both.
    ok(&s, &["secret", "delete", "orders/db", "--versions", "2"]);
    ok(&s, &["secret", "destroy", "orders/db", "--versions", "1"]);
    let e = fails(&s, &["secret", "get", "orders/db", "--version", "1"]);
    assert!(e.contains("destroyed"), "{e}");
    let e = fails(&s, &["secret", "undelete", "orders/db"]);
    assert!(e.contains("--versions"), "undelete needs versions: {e}");
    ok(&s, &["secret", "undelete", "orders/db", "--versions", "1"]);
    assert!(
        fails(&s, &["secret", "get", "orders/db", "--version", "1"]).contains("destroyed"),
        "a destroyed version stays destroyed"
    );

    let history = ok(&s, &["secret", "history", "orders/db"]);
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 4, "{history}");
    assert!(lines[0].starts_with("VERSION"), "{history}");
    assert!(
        lines[1].starts_with('3') && lines[1].contains("live") && lines[1].ends_with("(current)"),
        "{history}"
    );
    assert!(
        lines[2].starts_with('2') && lines[2].contains("deleted 20"),
        "{history}"
    );
    assert!(
        lines[3].starts_with('1') && lines[3].contains("destroyed"),
        "{history}"
    );
    let rows = s.ward_json(&["secret", "history", "orders/db"]);
    assert_eq!(rows[0]["version"], 3);
    assert_eq!(rows[2]["destroyed"], true);
    let e = fails(&s, &["secret", "history", "orders/none"]);
    assert!(e.contains("no secret at orders/none"), "{e}");
}

#[test]
fn kv_metadata_set_print_and_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "cli.test");
    ok(&s, &["secret", "put", "orders/db", "v=1"]);
    let printed = ok(
        &s,
        &[
            "secret",
            "metadata",
            "orders/db",
            "--max-versions",
            "2",
            "--cas-required",
            "true",
            "--delete-version-after",
            "1h",
            "--custom",
            "owner=team-orders",
        ],
    );
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("max versions") && l.ends_with(" 2")),
        "{printed}"
    );
    assert!(printed.contains("owner=team-orders"), "{printed}");
    let meta = s.ward_json(&["secret", "metadata", "orders/db"]);
    assert_eq!(meta["cas_required"], true);
    assert_eq!(meta["delete_version_after"], "1h0m0s");
    assert_eq!(meta["custom_metadata"]["owner"], "team-orders");

    // cas_required: a write without --cas is refused and says how to pass it.
    let e = fails(&s, &["secret", "put", "orders/db", "v=2"]);
    assert!(e.contains("check-and-set"), "{e}");
    ok(&s, &["secret", "put", "orders/db", "--cas", "1", "v=2"]);
    ok(&s, &["secret", "put", "orders/db", "--cas", "2", "v=3"]);
    // max_versions 2: version 1 is gone.
    let meta = s.ward_json(&["secret", "metadata", "orders/db"]);
    assert_eq!(meta["oldest_version"], 2, "{meta}");
    assert_eq!(meta["current_version"], 3, "{meta}");
    // delete_version_after: the new version is scheduled for deletion.
    let history = ok(&s, &["secret", "history", "orders/db"]);
    assert!(history.contains("to be deleted at"), "{history}");

    ok(&s, &["secret", "metadata", "orders/db", "--delete"]);
    let e = fails(&s, &["secret", "get", "orders/db"]);
    assert!(e.contains("no secret at orders/db"), "{e}");
    let e = fails(&s, &["secret", "metadata", "orders/db"]);
    assert!(e.contains("no secret at orders/db"), "{e}");
    let e = fails(
        &s,
        &[
            "secret",
            "metadata",
            "orders/db",
            "--delete",
            "--max-versions",
            "1",
        ],
    );
    assert!(e.contains("cannot be used with"), "{e}");
}

const ORDERS_POLICY: &str = r#"permit(principal == Ward::Service::"spiffe://cli.test/ns/shop/sa/orders", action == Vault::Action::"read", resource) when { resource.path like "secret/data/orders/*" };
"#;

#[test]
fn vault_policies_write_read_list_delete_and_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "cli.test");
    assert!(ok(&s, &["secret", "policy", "list"]).contains("no vault policies"));
    let file = tmp.path().join("orders.cedar");
    std::fs::write(&file, ORDERS_POLICY).unwrap();
    ok(
        &s,
        &[
            "secret",
            "policy",
            "write",
            "orders",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(
        ok(&s, &["secret", "policy", "read", "orders"]),
        ORDERS_POLICY
    );
    assert_eq!(
        s.ward_json(&["secret", "policy", "read", "orders"])["name"],
        "orders"
    );

    // A policy that does not type-check is refused, naming it and the line.
    let out = ward_stdin(
        &s,
        &["secret", "policy", "write", "broken", "-"],
        b"// a comment\npermit(principal, action == Vault::Action::\"read\", resource) when { resource.nope == 1 };\n",
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("policy broken"), "{e}");
    assert!(e.contains("line 2"), "{e}");
    let out = ward_stdin(
        &s,
        &["secret", "policy", "write", "garbled", "-"],
        b"permit(",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("policy garbled"), "{}", stderr(&out));
    assert_eq!(ok(&s, &["secret", "policy", "list"]), "orders\n");
    assert_eq!(
        s.ward_json(&["secret", "policy", "list"]),
        serde_json::json!(["orders"])
    );

    ok(&s, &["secret", "policy", "delete", "orders"]);
    let e = fails(&s, &["secret", "policy", "read", "orders"]);
    assert!(e.contains("no vault policy named orders"), "{e}");
    assert!(ok(&s, &["secret", "policy", "list"]).contains("no vault policies"));
    let e = fails(
        &s,
        &["secret", "policy", "write", "a/b", file.to_str().unwrap()],
    );
    assert!(e.contains("not a name"), "{e}");

    // The schema needs no server.
    let out = Command::new(ward_bin())
        .args(["secret", "policy", "schema"])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let schema = stdout(&out);
    assert!(schema.contains("namespace Vault"), "{schema}");
    assert!(
        schema.contains("action create, read, update, patch, delete, list"),
        "{schema}"
    );
}

#[test]
fn transit_encrypt_decrypt_rotate_and_show() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "cli.test");
    let shown = ok(&s, &["secret", "transit", "create", "orders"]);
    assert!(shown.contains("aes256-gcm96"), "{shown}");

    let ct1 = ok(
        &s,
        &[
            "secret",
            "transit",
            "encrypt",
            "orders",
            "--plaintext",
            "4111 1111",
        ],
    );
    let ct1 = ct1.trim();
    assert!(ct1.starts_with("vault:v1:"), "{ct1}");
    assert!(!ct1.contains("4111"));
    let out = s.ward(&["secret", "transit", "decrypt", "orders", ct1]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        out.stdout, b"4111 1111",
        "the plaintext exactly, nothing added"
    );

    // Bytes that are not text survive a round trip through a file.
    let bytes: Vec<u8> = (0..=255u8).rev().collect();
    let file = tmp.path().join("blob.bin");
    std::fs::write(&file, &bytes).unwrap();
    let ct_file = ok(
        &s,
        &[
            "secret",
            "transit",
            "encrypt",
            "orders",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    let out = ward_stdin(
        &s,
        &["secret", "transit", "decrypt", "orders", "-"],
        ct_file.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, bytes);

    // Rotation: new ciphertexts use version 2, old ones still decrypt.
    assert!(ok(&s, &["secret", "transit", "rotate", "orders"]).contains("version 2"));
    let ct2 = ok(
        &s,
        &["secret", "transit", "encrypt", "orders", "--plaintext", "x"],
    );
    assert!(ct2.starts_with("vault:v2:"), "{ct2}");
    assert_eq!(
        s.ward(&["secret", "transit", "decrypt", "orders", ct1])
            .stdout,
        b"4111 1111"
    );
    let shown = ok(&s, &["secret", "transit", "show", "orders"]);
    assert!(
        shown.contains("version 1") && shown.contains("version 2"),
        "{shown}"
    );
    assert_eq!(
        s.ward_json(&["secret", "transit", "show", "orders"])["latest_version"],
        2
    );

    // A tampered ciphertext does not decrypt; nor does an unknown key.
    let mut bad = ct1.to_string();
    let last = bad.pop().unwrap();
    bad.push(if last == 'A' { 'B' } else { 'A' });
    fails(&s, &["secret", "transit", "decrypt", "orders", &bad]);
    let e = fails(&s, &["secret", "transit", "show", "nope"]);
    assert!(e.contains("no transit key named nope"), "{e}");
    // An existing name of another type is not silently reused.
    let e = fails(
        &s,
        &["secret", "transit", "create", "orders", "--type", "ed25519"],
    );
    assert!(e.contains("already exists with type aes256-gcm96"), "{e}");
    let e = fails(&s, &["secret", "transit", "encrypt", "orders"]);
    assert!(e.contains("--plaintext") && e.contains("--file"), "{e}");
}

#[test]
fn db_configure_with_an_unreachable_database_fails_without_the_password() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "cli.test");
    let e = fails(
        &s,
        &[
            "secret",
            "db",
            "configure",
            "shop",
            "--plugin",
            "postgresql",
            "--url",
            "postgres://u:s3cretpw@127.0.0.1:1/x",
        ],
    );
    assert!(e.contains("connection shop was not configured"), "{e}");
    assert!(
        e.contains("127.0.0.1:1"),
        "the message names the database: {e}"
    );
    assert!(!e.contains("s3cretpw"), "the password leaked: {e}");
    let e = fails(&s, &["secret", "db", "rotate-root", "shop"]);
    assert!(e.contains("no database connection named shop"), "{e}");

    // The same through placeholders and a password file.
    let pw = tmp.path().join("pw.txt");
    std::fs::write(&pw, "s3cretpw\n").unwrap();
    let e = fails(
        &s,
        &[
            "secret",
            "db",
            "configure",
            "shop",
            "--plugin",
            "postgresql",
            "--url",
            "postgres://{{username}}:{{password}}@127.0.0.1:1/x",
            "--username",
            "admin",
            "--password-file",
            pw.to_str().unwrap(),
        ],
    );
    assert!(e.contains("127.0.0.1:1"), "{e}");
    assert!(!e.contains("s3cretpw"), "the password leaked: {e}");
    // A credential the URL has no place for is refused, not dropped.
    let e = fails(
        &s,
        &[
            "secret",
            "db",
            "configure",
            "shop",
            "--plugin",
            "postgresql",
            "--url",
            "postgres://127.0.0.1:1/x",
            "--password-file",
            pw.to_str().unwrap(),
        ],
    );
    assert!(e.contains("{{password}}"), "{e}");
    assert!(!e.contains("s3cretpw"), "{e}");
    let e = fails(
        &s,
        &[
            "secret",
            "db",
            "configure",
            "shop",
            "--plugin",
            "mysql",
            "--url",
            "postgres://u:s3cretpw@127.0.0.1:1/x",
            "--no-verify",
        ],
    );
    assert!(e.contains("does not match plugin"), "{e}");
    assert!(!e.contains("s3cretpw"), "{e}");
    let e = fails(&s, &["secret", "db", "creds", "nope"]);
    assert!(e.contains("unknown role"), "{e}");
}

#[test]
fn operator_mistakes_say_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "cli.test");
    let out = Command::new(ward_bin())
        .args(["secret", "get", "orders/db"])
        .env_clear()
        .env("WARD_ADDR", s.addr())
        .env("WARD_CACERT", s.cacert())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("WARD_TOKEN"), "{}", stderr(&out));
    let out = Command::new(ward_bin())
        .args(["secret", "list"])
        .env_clear()
        .env("WARD_ADDR", s.addr())
        .env("WARD_CACERT", s.cacert())
        .env("WARD_TOKEN", "not-a-token")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
    let e = fails(&s, &["secret", "lease", "lookup", "database/creds/x/none"]);
    assert!(e.contains("invalid lease"), "{e}");
    assert!(ok(&s, &["secret", "lease", "list"]).contains("no leases"));
}

#[test]
fn help_of_every_subcommand_has_an_example() {
    let commands: &[&[&str]] = &[
        &["secret"],
        &["secret", "put"],
        &["secret", "get"],
        &["secret", "list"],
        &["secret", "delete"],
        &["secret", "undelete"],
        &["secret", "destroy"],
        &["secret", "history"],
        &["secret", "metadata"],
        &["secret", "policy"],
        &["secret", "policy", "write"],
        &["secret", "policy", "read"],
        &["secret", "policy", "list"],
        &["secret", "policy", "delete"],
        &["secret", "policy", "schema"],
        &["secret", "db"],
        &["secret", "db", "configure"],
        &["secret", "db", "rotate-root"],
        &["secret", "db", "role"],
        &["secret", "db", "creds"],
        &["secret", "lease"],
        &["secret", "lease", "list"],
        &["secret", "lease", "lookup"],
        &["secret", "lease", "renew"],
        &["secret", "lease", "revoke"],
        &["secret", "lease", "revoke-prefix"],
        &["secret", "transit"],
        &["secret", "transit", "create"],
        &["secret", "transit", "encrypt"],
        &["secret", "transit", "decrypt"],
        &["secret", "transit", "rotate"],
        &["secret", "transit", "show"],
    ];
    for c in commands {
        let out = Command::new(ward_bin())
            .args(*c)
            .arg("--help")
            .env_clear()
            .output()
            .unwrap();
        let text = stdout(&out);
        assert!(out.status.success(), "{c:?} --help: {}", stderr(&out));
        assert!(
            text.contains("Example"),
            "{c:?} --help has no example:\n{text}"
        );
        assert!(
            text.contains(&format!("ward {}", c.join(" "))),
            "{c:?} --help shows no use of the command:\n{text}"
        );
    }
    let policy = stdout(
        &Command::new(ward_bin())
            .args(["secret", "policy", "write", "--help"])
            .output()
            .unwrap(),
    );
    assert!(policy.contains("forbid"), "{policy}");
    assert!(
        policy.contains(r#"resource.path like "secret/data/orders/*""#),
        "{policy}"
    );
    let top = stdout(&Command::new(ward_bin()).arg("--help").output().unwrap());
    assert!(top.contains("secret"), "{top}");
}

#[test]
fn postgres_credentials_live_as_long_as_their_lease() {
    let Some(url) = required_env("WARD_TEST_POSTGRES_URL", "a PostgreSQL server") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "cli.test");
    ok(
        &s,
        &[
            "secret",
            "db",
            "configure",
            "pg",
            "--plugin",
            "postgresql",
            "--url",
            &url,
            "--allowed-roles",
            "clirole,clirole2",
        ],
    );
    ok(&s, &["secret", "db", "role", "clirole2", "--db", "pg"]);
    ok(
        &s,
        &[
            "secret",
            "db",
            "role",
            "clirole",
            "--db",
            "pg",
            "--default-ttl",
            "1h",
            "--max-ttl",
            "2h",
        ],
    );
    // A role the connection does not allow gets nothing.
    ok(&s, &["secret", "db", "role", "other", "--db", "pg"]);
    let e = fails(&s, &["secret", "db", "creds", "other"]);
    assert!(e.contains("allowed_roles"), "{e}");

    let creds = s.ward_json(&["secret", "db", "creds", "clirole"]);
    let user = creds["username"].as_str().unwrap().to_string();
    let lease = creds["lease_id"].as_str().unwrap().to_string();
    assert!(lease.starts_with("database/creds/clirole/"), "{creds}");
    assert_eq!(creds["lease_duration"], 3600);
    assert!(!creds["password"].as_str().unwrap().is_empty());
    assert!(pg_role_exists(&url, &user), "{user} was not created");

    let table = ok(&s, &["secret", "db", "creds", "clirole"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("lease_duration") && l.ends_with("1h")),
        "{table}"
    );

    let listed = s.ward_json(&[
        "secret",
        "lease",
        "list",
        "--prefix",
        "database/creds/clirole",
    ]);
    let mine = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["lease_id"] == lease.as_str())
        .unwrap_or_else(|| panic!("{lease} not listed: {listed}"))
        .clone();
    assert_eq!(mine["state"], "active");
    assert_eq!(mine["stuck"], false);
    assert!(ok(&s, &["secret", "lease", "list"]).contains(&lease));
    assert!(
        s.ward_json(&["secret", "lease", "list", "--stuck"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    let looked = s.ward_json(&["secret", "lease", "lookup", &lease]);
    assert_eq!(looked["state"], "active");
    let renewed = s.ward_json(&["secret", "lease", "renew", &lease, "--increment", "30m"]);
    assert_eq!(renewed["lease_duration"], 1800);

    assert!(ok(&s, &["secret", "lease", "revoke", &lease]).contains("revoked"));
    assert!(
        wait_for(Duration::from_secs(10), || !pg_role_exists(&url, &user)),
        "{user} outlived its lease"
    );
    assert!(!ok(&s, &["secret", "lease", "list"]).contains(&lease));

    // The database down: revoke warns, keeps the lease as revoking, and
    // the user is dropped once the database is back.
    let down = s.ward_json(&["secret", "db", "creds", "clirole"]);
    let (user, lease) = (
        down["username"].as_str().unwrap().to_string(),
        down["lease_id"].as_str().unwrap().to_string(),
    );
    assert!(pg_role_exists(&url, &user));
    ok(
        &s,
        &[
            "secret",
            "db",
            "configure",
            "pg",
            "--plugin",
            "postgresql",
            "--url",
            "postgres://postgres@127.0.0.1:1/unreachable",
            "--allowed-roles",
            "clirole,clirole2",
            "--no-verify",
        ],
    );
    let out = s.ward(&["secret", "lease", "revoke", &lease]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("is being revoked"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("warning: the credential could not be revoked yet"),
        "{}",
        stderr(&out)
    );
    assert!(pg_role_exists(&url, &user), "the database was down");
    let listed = s.ward_json(&["secret", "lease", "list", "--prefix", &lease]);
    assert_eq!(listed[0]["state"], "revoking", "{listed}");
    ok(
        &s,
        &[
            "secret",
            "db",
            "configure",
            "pg",
            "--plugin",
            "postgresql",
            "--url",
            &url,
            "--allowed-roles",
            "clirole,clirole2",
        ],
    );
    assert!(
        wait_for(Duration::from_secs(30), || !pg_role_exists(&url, &user)),
        "{user} was never dropped after the database came back"
    );

    // revoke-prefix drops every user of the role, and none of another
    // role whose name merely starts the same.
    let a = s.ward_json(&["secret", "db", "creds", "clirole"])["username"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(pg_role_exists(&url, &a));
    let sibling = s.ward_json(&["secret", "db", "creds", "clirole2"]);
    let b = sibling["username"].as_str().unwrap().to_string();
    ok(
        &s,
        &["secret", "lease", "revoke-prefix", "database/creds/clirole"],
    );
    assert!(
        wait_for(Duration::from_secs(15), || !pg_role_exists(&url, &a)),
        "{a} outlived revoke-prefix"
    );
    // The prefix is a folder: the other role's lease and user stay.
    std::thread::sleep(Duration::from_secs(2));
    assert!(pg_role_exists(&url, &b), "revoke-prefix reached {b}");
    ok(
        &s,
        &[
            "secret",
            "lease",
            "revoke",
            sibling["lease_id"].as_str().unwrap(),
        ],
    );
    assert!(wait_for(Duration::from_secs(15), || !pg_role_exists(
        &url, &b
    )));
}
