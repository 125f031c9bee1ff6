"""hvac (HashiCorp's Python Vault client, pinned by .ci/run) against `ward server`.

Run by crates/ward/tests/vault.rs with one JSON argument. Prints one line per
check, "PASS name" or "FAIL name: why"; the Rust test fails on any FAIL and
on a missing check. Each check uses hvac's own calls (what a Vault user
writes), never raw HTTP, except where a check is about the wire itself
(LIST, path tricks).
"""
import base64
import json
import subprocess
import sys
import time

import hvac
import requests

cfg = json.loads(sys.argv[1])
only = set(sys.argv[2:])
addr, ca, root = cfg["addr"], cfg["cacert"], cfg["token"]


def check(name):
    def wrap(f):
        if only and name not in only:
            return f
        try:
            r = f()
            if r is False:
                print(f"FAIL {name}: returned False", flush=True)
            else:
                print(f"PASS {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported by name
            print(f"FAIL {name}: {type(e).__name__}: {str(e)[:300]}", flush=True)
        return f
    return wrap


def admin():
    return hvac.Client(url=addr, token=root, verify=ca)


def raises(exc, f):
    try:
        f()
    except exc:
        return True
    return False


@check("kv_versions_cas_and_reads")
def _():
    kv = admin().secrets.kv.v2
    w1 = kv.create_or_update_secret(path="app/db", secret={"password": "one"})
    assert w1["data"]["version"] == 1, w1
    w2 = kv.create_or_update_secret(path="app/db", secret={"password": "two"}, cas=1)
    assert w2["data"]["version"] == 2, w2
    assert kv.read_secret_version(path="app/db", raise_on_deleted_version=True)["data"]["data"] == {"password": "two"}
    assert kv.read_secret_version(path="app/db", version=1, raise_on_deleted_version=True)["data"]["data"]["password"] == "one"
    # A stale check-and-set is Vault's 400, which hvac raises as InvalidRequest.
    assert raises(hvac.exceptions.InvalidRequest, lambda: kv.create_or_update_secret(path="app/db", secret={"x": "y"}, cas=1))
    # cas=0 only creates.
    assert raises(hvac.exceptions.InvalidRequest, lambda: kv.create_or_update_secret(path="app/db", secret={"x": "y"}, cas=0))
    assert kv.create_or_update_secret(path="app/new", secret={"x": "y"}, cas=0)["data"]["version"] == 1
    assert raises(hvac.exceptions.InvalidPath, lambda: kv.read_secret_version(path="app/never", raise_on_deleted_version=True))


@check("kv_list")
def _():
    kv = admin().secrets.kv.v2
    kv.create_or_update_secret(path="tree/a", secret={"k": "v"})
    kv.create_or_update_secret(path="tree/sub/b", secret={"k": "v"})
    keys = kv.list_secrets(path="tree")["data"]["keys"]
    assert keys == ["a", "sub/"], keys
    assert "tree/" in kv.list_secrets(path="")["data"]["keys"]
    assert raises(hvac.exceptions.InvalidPath, lambda: kv.list_secrets(path="nothing-here"))
    # The raw LIST method, as the Vault CLI sends it.
    r = requests.request("LIST", f"{addr}/v1/secret/metadata/tree", headers={"X-Vault-Token": root}, verify=ca)
    assert r.status_code == 200 and r.json()["data"]["keys"] == ["a", "sub/"], r.text


@check("kv_delete_undelete_destroy")
def _():
    kv = admin().secrets.kv.v2
    kv.create_or_update_secret(path="life/s", secret={"v": "1"})
    kv.create_or_update_secret(path="life/s", secret={"v": "2"})
    kv.delete_latest_version_of_secret(path="life/s")
    assert raises(hvac.exceptions.InvalidPath, lambda: kv.read_secret_version(path="life/s", raise_on_deleted_version=True))
    # Without raising, the 404 still carries the version's metadata, with its deletion time.
    r = kv.read_secret_version(path="life/s", raise_on_deleted_version=False)
    assert r["data"]["metadata"]["deletion_time"] != "" and r["data"]["data"] is None, r
    kv.undelete_secret_versions(path="life/s", versions=[2])
    assert kv.read_secret_version(path="life/s", raise_on_deleted_version=True)["data"]["data"]["v"] == "2"
    kv.delete_secret_versions(path="life/s", versions=[1])
    assert raises(hvac.exceptions.InvalidPath, lambda: kv.read_secret_version(path="life/s", version=1, raise_on_deleted_version=True))
    kv.destroy_secret_versions(path="life/s", versions=[1])
    meta = kv.read_secret_metadata(path="life/s")["data"]
    assert meta["versions"]["1"]["destroyed"] is True and meta["current_version"] == 2, meta
    # A destroyed version cannot come back.
    kv.undelete_secret_versions(path="life/s", versions=[1])
    assert kv.read_secret_metadata(path="life/s")["data"]["versions"]["1"]["destroyed"] is True


@check("kv_metadata")
def _():
    kv = admin().secrets.kv.v2
    for i in range(4):
        kv.create_or_update_secret(path="meta/s", secret={"i": str(i)})
    kv.update_metadata(path="meta/s", max_versions=2, custom_metadata={"owner": "shop"}, cas_required=True)
    meta = kv.read_secret_metadata(path="meta/s")["data"]
    assert meta["max_versions"] == 2 and meta["cas_required"] is True, meta
    assert meta["custom_metadata"] == {"owner": "shop"}, meta
    assert sorted(meta["versions"]) == ["3", "4"] and meta["oldest_version"] == 3, meta
    # cas_required: a write without cas is refused.
    assert raises(hvac.exceptions.InvalidRequest, lambda: kv.create_or_update_secret(path="meta/s", secret={"i": "x"}))
    assert kv.create_or_update_secret(path="meta/s", secret={"i": "5"}, cas=4)["data"]["version"] == 5
    assert sorted(kv.read_secret_metadata(path="meta/s")["data"]["versions"]) == ["4", "5"]
    # hvac's patch: read, merge, write with cas.
    kv.patch(path="meta/s", secret={"extra": "y"})
    d = kv.read_secret_version(path="meta/s", raise_on_deleted_version=True)["data"]["data"]
    assert d == {"i": "5", "extra": "y"}, d
    kv.delete_metadata_and_all_versions(path="meta/s")
    assert raises(hvac.exceptions.InvalidPath, lambda: kv.read_secret_metadata(path="meta/s"))
    assert raises(hvac.exceptions.InvalidPath, lambda: kv.read_secret_version(path="meta/s", raise_on_deleted_version=True))


@check("sys_seal_status_and_mounts")
def _():
    c = admin()
    st = c.sys.read_seal_status()
    assert st["sealed"] is False and st["initialized"] is True, st
    assert c.sys.is_initialized() is True
    mounts = c.sys.list_mounted_secrets_engines()["data"]
    assert mounts["secret/"]["options"]["version"] == "2", mounts


POLICY = """
@id("orders-read-own")
permit(principal == Ward::Service::"{orders}", action in [Vault::Action::"read", Vault::Action::"list"], resource)
when {{ resource.path like "secret/data/orders/*" || resource.path like "secret/metadata/orders*" }};
@id("orders-transit")
permit(principal == Ward::Service::"{orders}", action == Vault::Action::"update", resource)
when {{ resource.path == "transit/encrypt/orders" || resource.path == "transit/decrypt/orders" }};
@id("root-is-off-limits")
forbid(principal, action, resource) when {{ resource.path like "secret/data/orders/root*" }};
"""


def setup_policy():
    c = admin()
    c.adapter.put("/v1/sys/policies/cedar/orders", json={"policy": POLICY.format(orders=cfg["orders"])})
    kv = c.secrets.kv.v2
    kv.create_or_update_secret(path="orders/db", secret={"password": "orders-pw"})
    kv.create_or_update_secret(path="orders/root", secret={"password": "root-pw"})
    kv.create_or_update_secret(path="payments/db", secret={"password": "payments-pw"})
    c.secrets.transit.create_key(name="orders")


def jwt_client(jwt):
    w = hvac.Client(url=addr, verify=ca)
    r = w.auth.jwt.jwt_login(role="any-name", jwt=jwt)
    assert r["auth"]["renewable"] is True and 0 < r["auth"]["lease_duration"] <= 3600, r["auth"]
    assert w.token == r["auth"]["client_token"]
    return w


@check("jwt_login_grants_follow_the_spiffe_id")
def _():
    setup_policy()
    w = jwt_client(cfg["jwt_orders"])
    assert w.secrets.kv.v2.read_secret_version(path="orders/db", raise_on_deleted_version=True)["data"]["data"]["password"] == "orders-pw"
    assert "db" in w.secrets.kv.v2.list_secrets(path="orders")["data"]["keys"]
    # No grant: 403, hvac's Forbidden.
    assert raises(hvac.exceptions.Forbidden, lambda: w.secrets.kv.v2.read_secret_version(path="payments/db", raise_on_deleted_version=True))
    # Read is not write.
    assert raises(hvac.exceptions.Forbidden, lambda: w.secrets.kv.v2.create_or_update_secret(path="orders/db", secret={"p": "x"}))
    # A forbid beats the grant.
    assert raises(hvac.exceptions.Forbidden, lambda: w.secrets.kv.v2.read_secret_version(path="orders/root", raise_on_deleted_version=True))
    # The admin API is not the workload's.
    r = requests.get(f"{addr}/v1/entries", headers={"X-Vault-Token": w.token}, verify=ca)
    assert r.status_code == 403, r.status_code
    # Transit as granted.
    ct = w.secrets.transit.encrypt_data(name="orders", plaintext=base64.b64encode(b"card").decode())["data"]["ciphertext"]
    assert base64.b64decode(w.secrets.transit.decrypt_data(name="orders", ciphertext=ct)["data"]["plaintext"]) == b"card"
    assert raises(hvac.exceptions.Forbidden, lambda: w.secrets.transit.rotate_key(name="orders"))


@check("payments_is_refused_orders_secret")
def _():
    setup_policy()
    w = jwt_client(cfg["jwt_payments"])
    assert raises(hvac.exceptions.Forbidden, lambda: w.secrets.kv.v2.read_secret_version(path="orders/db", raise_on_deleted_version=True))


@check("path_tricks_are_refused")
def _():
    setup_policy()
    w = jwt_client(cfg["jwt_orders"])
    s = requests.Session()
    s.headers["X-Vault-Token"] = w.token
    for trick in [
        "/v1/secret/data/orders/../payments/db",
        "/v1/secret/data/orders/%2e%2e/payments/db",
        "/v1/secret/data/orders%2F..%2Fpayments%2Fdb",
        "/v1/secret/data/orders//db",
        "/v1/secret/data/orders/db/",
        "/v1/secret/data/orders/./db",
        "/v1/secret/data/orders\\..\\payments\\db",
    ]:
        # A prepared request keeps the path exactly as written.
        req = requests.Request("GET", addr + "/v1/").prepare()
        req.url = addr + trick
        r = s.send(req, verify=ca)
        assert r.status_code in (400, 403, 404), (trick, r.status_code, r.text)
        assert "payments-pw" not in r.text, trick


@check("bad_jwts_are_refused")
def _():
    w = hvac.Client(url=addr, verify=ca)
    h, p, sig = cfg["jwt_orders"].split(".")
    none = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    for bad in [cfg["jwt_wrong_audience"], cfg["jwt_expired"], f"{none}.{p}.", f"{h}.{p}.{'A' * len(sig)}", "not-a-jwt"]:
        assert raises(hvac.exceptions.Forbidden, lambda: w.auth.jwt.jwt_login(role="x", jwt=bad)), bad[:40]


@check("cert_login_with_the_x509_svid")
def _():
    setup_policy()
    w = hvac.Client(url=addr, verify=ca)
    r = w.auth.cert.login(cert_pem=cfg["svid_cert"], key_pem=cfg["svid_key"])
    assert r["auth"]["metadata"]["spiffe_id"] == cfg["orders"], r["auth"]
    assert w.secrets.kv.v2.read_secret_version(path="orders/db", raise_on_deleted_version=True)["data"]["data"]["password"] == "orders-pw"
    # Without a client certificate there is no one to log in.
    r = requests.post(f"{addr}/v1/auth/cert/login", json={}, verify=ca)
    assert r.status_code in (401, 403) and "client_token" not in r.text, r.text


@check("workload_tokens_renew_and_revoke")
def _():
    w = jwt_client(cfg["jwt_orders"])
    me = w.auth.token.lookup_self()["data"]
    assert me["meta"]["spiffe_id"] == cfg["orders"] and me["renewable"] is True, me
    r = w.auth.token.renew_self(increment=60)
    assert 0 < r["auth"]["lease_duration"] <= 60, r["auth"]
    w.auth.token.revoke_self()
    time.sleep(0.2)
    assert raises(hvac.exceptions.Forbidden, lambda: w.auth.token.lookup_self())


@check("transit_encrypt_rotate_rewrap_and_min_version")
def _():
    t = admin().secrets.transit
    t.create_key(name="tk")
    ct1 = t.encrypt_data(name="tk", plaintext=base64.b64encode(b"secret one").decode())["data"]["ciphertext"]
    assert ct1.startswith("vault:v1:"), ct1
    t.rotate_key(name="tk")
    assert t.read_key(name="tk")["data"]["latest_version"] == 2
    ct2 = t.encrypt_data(name="tk", plaintext=base64.b64encode(b"secret two").decode())["data"]["ciphertext"]
    assert ct2.startswith("vault:v2:"), ct2
    assert base64.b64decode(t.decrypt_data(name="tk", ciphertext=ct1)["data"]["plaintext"]) == b"secret one"
    rw = t.rewrap_data(name="tk", ciphertext=ct1)["data"]["ciphertext"]
    assert rw.startswith("vault:v2:"), rw
    assert base64.b64decode(t.decrypt_data(name="tk", ciphertext=rw)["data"]["plaintext"]) == b"secret one"
    t.update_key_configuration(name="tk", min_decryption_version=2)
    assert raises(hvac.exceptions.InvalidRequest, lambda: t.decrypt_data(name="tk", ciphertext=ct1))
    # A tampered ciphertext fails authentication, never returns garbage.
    raw = bytearray(base64.b64decode(ct2.split(":", 2)[2]))
    raw[-1] ^= 1
    bad = "vault:v2:" + base64.b64encode(bytes(raw)).decode()
    assert raises(hvac.exceptions.InvalidRequest, lambda: t.decrypt_data(name="tk", ciphertext=bad))
    dk = t.generate_data_key(name="tk", key_type="plaintext", bits=256)["data"]
    assert len(base64.b64decode(dk["plaintext"])) == 32
    assert t.decrypt_data(name="tk", ciphertext=dk["ciphertext"])["data"]["plaintext"] == dk["plaintext"]


@check("transit_sign_and_verify")
def _():
    t = admin().secrets.transit
    data = base64.b64encode(b"release 1.2.3").decode()
    other = base64.b64encode(b"release 6.6.6").decode()
    for kt in ["ecdsa-p256", "ed25519"]:
        name = "sig-" + kt
        t.create_key(name=name, key_type=kt)
        sig = t.sign_data(name=name, hash_input=data)["data"]["signature"]
        assert sig.startswith("vault:v1:"), sig
        assert t.verify_signed_data(name=name, hash_input=data, signature=sig)["data"]["valid"] is True
        assert t.verify_signed_data(name=name, hash_input=other, signature=sig)["data"]["valid"] is False
        t.rotate_key(name=name)
        assert t.verify_signed_data(name=name, hash_input=data, signature=sig)["data"]["valid"] is True, "old signatures verify after rotation"
    assert raises(hvac.exceptions.InvalidRequest, lambda: t.encrypt_data(name="sig-ed25519", plaintext=data))


def login_ok(kind, url_host, port, db, user, password):
    if kind == "pg":
        out = subprocess.run(["psql", "-h", url_host, "-p", str(port), "-U", user, "-d", db, "-w", "-Atc", "select current_user"],
                             env={"PGPASSWORD": password, "PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "5"}, capture_output=True, text=True, timeout=20)
        return out.returncode == 0 and out.stdout.strip() == user
    # No database named: the server's default MySQL statements grant nothing.
    out = subprocess.run(["mariadb", "-h", url_host, "-P", str(port), "-u", user, f"-p{password}", "-N", "-e", "select current_user()"],
                         capture_output=True, text=True, timeout=20)
    return out.returncode == 0 and out.stdout.strip().startswith(user)


def db_case(kind, url, plugin, host, port, db):
    c = admin()
    d = c.secrets.database
    name = f"{kind}conn"
    d.configure(name=name, plugin_name=plugin, connection_url=url, allowed_roles=[f"{kind}app", f"{kind}short"])
    if kind == "pg":
        create = ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"]
    else:
        create = ["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';", "GRANT SELECT ON test.* TO '{{name}}'@'%';"]
    # hvac's own call, with Vault's statement templates.
    d.create_role(name=f"{kind}app", db_name=name, creation_statements=create, default_ttl="1h", max_ttl="2h")
    # The server's default statements for the plugin.
    c.adapter.post(f"/v1/database/roles/{kind}short", json={"db_name": name, "default_ttl": 3, "max_ttl": 5})
    r = d.generate_credentials(name=f"{kind}app")
    u, p = r["data"]["username"], r["data"]["password"]
    assert r["lease_duration"] == 3600 and r["renewable"] is True and r["lease_id"].startswith(f"database/creds/{kind}app/"), r
    assert login_ok(kind, host, port, db, u, p), f"{kind}: the new user cannot log in"
    lk = c.sys.read_lease(lease_id=r["lease_id"])["data"]
    assert 0 < lk["ttl"] <= 3600, lk
    rn = c.sys.renew_lease(lease_id=r["lease_id"], increment=1800)
    assert 0 < rn["lease_duration"] <= 1800, rn
    c.sys.revoke_lease(lease_id=r["lease_id"])
    assert not login_ok(kind, host, port, db, u, p), f"{kind}: the user still logs in after revocation"
    assert raises(hvac.exceptions.InvalidRequest, lambda: c.sys.read_lease(lease_id=r["lease_id"]))
    # Expiry: the server drops the user once the lease lapses.
    s = d.generate_credentials(name=f"{kind}short")
    su, sp = s["data"]["username"], s["data"]["password"]
    assert login_ok(kind, host, port, db, su, sp)
    deadline = time.time() + 30
    while time.time() < deadline and login_ok(kind, host, port, db, su, sp):
        time.sleep(0.5)
    assert not login_ok(kind, host, port, db, su, sp), f"{kind}: the user still logs in after its lease expired"


@check("database_postgres")
def _():
    db_case("pg", cfg["pg_url"], "postgresql-database-plugin", "127.0.0.1", 5432, "test")


@check("database_mariadb")
def _():
    db_case("my", cfg["my_url"], "mysql-database-plugin", "127.0.0.1", 3306, "test")
