"""Authlib and PyJWT (pinned by .ci/run) against Ward's token service.

Run by crates/ward/tests/oauth.rs with one JSON argument. Prints one line per
check, "PASS name" or "FAIL name: why"; the Rust test fails on any FAIL and
on a missing check.
"""
import base64
import json
import sys
import time
import uuid

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from cryptography.hazmat.primitives.asymmetric import ec

cfg = json.loads(sys.argv[1])
addr, ca, admin = cfg["addr"], cfg["cacert"], cfg["token"]
cid, secret, aud = cfg["client_id"], cfg["client_secret"], cfg["audience"]
token_url = addr + "/oauth/token"


def check(name):
    def wrap(f):
        try:
            r = f()
            print(f"FAIL {name}: returned False" if r is False else f"PASS {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported by name
            import traceback
            traceback.print_exc()
            where = traceback.extract_tb(e.__traceback__)[-1]
            print(f"FAIL {name}: {type(e).__name__}: {str(e)[:300]} (line {where.lineno} in {where.name})", flush=True)
        return f
    return wrap


def post(path, **kw):
    return requests.post(addr + path, verify=ca, timeout=10, **kw)


def cc_token(scope=None):
    s = OAuth2Session(cid, secret, scope=scope, token_endpoint_auth_method="client_secret_basic")
    return s.fetch_token(token_url, grant_type="client_credentials", verify=ca)["access_token"]


def verified(tok):
    conf = requests.get(addr + "/.well-known/openid-configuration", verify=ca, timeout=10).json()
    assert conf["issuer"] == addr, conf["issuer"]
    import ssl
    ctx = ssl.create_default_context(cafile=ca)
    key = jwt.PyJWKClient(conf["jwks_uri"], ssl_context=ctx).get_signing_key_from_jwt(tok)
    return jwt.decode(tok, key.key, algorithms=["ES256"], audience=aud, issuer=addr,
                      options={"require": ["exp", "iat", "iss", "aud", "jti", "sub"]})


@check("authlib_client_credentials_and_pyjwt_discovery")
def _():
    claims = verified(cc_token())
    assert claims["client_id"] == cid and claims["sub"] == cid, claims
    assert claims["exp"] - claims["iat"] <= 900, claims
    assert set(claims["scope"].split()) == {"orders:read", "orders:write"}, claims
    assert jwt.get_unverified_header(cc_token())["typ"] == "at+jwt"


@check("scopes_are_down_scoped_and_bounded")
def _():
    assert verified(cc_token("orders:read"))["scope"] == "orders:read"
    r = post("/oauth/token", auth=(cid, secret), data={"grant_type": "client_credentials", "scope": "admin"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope", r.text
    r = post("/oauth/token", auth=(cid, secret), data={"grant_type": "client_credentials", "audience": "https://elsewhere"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_target", r.text


@check("bad_client_authentication_is_refused")
def _():
    r = post("/oauth/token", auth=(cid, secret + "x"), data={"grant_type": "client_credentials"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    assert "WWW-Authenticate" in r.headers
    r = post("/oauth/token", auth=("nobody", secret), data={"grant_type": "client_credentials"})
    assert r.status_code == 401, r.text
    # Two ways at once, and a parameter twice.
    r = post("/oauth/token", auth=(cid, secret), data={"grant_type": "client_credentials", "client_secret": secret, "client_id": cid})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text
    r = post("/oauth/token", auth=(cid, secret), data="grant_type=client_credentials&grant_type=client_credentials",
             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400, r.text
    r = post("/oauth/token", auth=(cid, secret), data={"grant_type": "password", "username": "u", "password": "p"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type", r.text
    r = post("/oauth/token", auth=(cid, secret), json={"grant_type": "client_credentials"})
    assert r.status_code == 400, r.text
    # The secret never appears in an answer.
    assert secret not in r.text


@check("introspection_and_revocation")
def _():
    tok = cc_token()
    r = post("/oauth/introspect", auth=(cid, secret), data={"token": tok})
    body = r.json()
    assert r.status_code == 200 and body["active"] is True and body["client_id"] == cid, r.text
    jti = body["jti"]
    r = post("/oauth/revoke", auth=(cid, secret), data={"token": tok})
    assert r.status_code == 200, r.text
    r = post("/oauth/introspect", auth=(cid, secret), data={"token": tok})
    assert r.json() == {"active": False}, r.text
    listed = requests.get(addr + "/oauth/revoked", verify=ca, timeout=10).json()["revoked"]
    assert any(x["jti"] == jti for x in listed), listed
    # Garbage is answered 200 (RFC 7009 §2.2) and changes nothing.
    assert post("/oauth/revoke", auth=(cid, secret), data={"token": "garbage"}).status_code == 200
    r = post("/oauth/introspect", auth=(cid, secret), data={"token": "e30.e30."})
    assert r.json() == {"active": False}, r.text
    r = post("/oauth/introspect", data={"token": tok})
    assert r.status_code == 401, r.text


def b64(n):
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


@check("authlib_private_key_jwt_and_replay")
def _():
    key = ec.generate_private_key(ec.SECP256R1())
    nums = key.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": b64(nums.x), "y": b64(nums.y), "kid": "k1"}
    name = "pkjwt-" + uuid.uuid4().hex[:8]
    r = requests.post(addr + "/v1/oauth/clients", verify=ca, timeout=10,
                      headers={"Authorization": "Bearer " + admin},
                      json={"client_id": name, "scopes": ["jobs:run"], "audiences": [aud], "jwk": jwk})
    assert r.status_code == 201 and r.json()["client_secret"] is None, r.text
    from cryptography.hazmat.primitives import serialization
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    from joserfc.jwk import ECKey
    s = OAuth2Session(name, ECKey.import_key(pem), token_endpoint_auth_method="private_key_jwt")
    s.register_client_auth_method(PrivateKeyJWT(token_url, alg="ES256", headers={"kid": "k1"}))
    tok = s.fetch_token(token_url, grant_type="client_credentials", verify=ca)["access_token"]
    assert verified(tok)["client_id"] == name
    # The same assertion twice: the second is a replay.
    now = int(time.time())
    assertion = jwt.encode({"iss": name, "sub": name, "aud": token_url, "exp": now + 60, "iat": now,
                            "jti": uuid.uuid4().hex}, pem, algorithm="ES256", headers={"kid": "k1"})
    form = {"grant_type": "client_credentials", "client_assertion": assertion,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    assert post("/oauth/token", data=form).status_code == 200
    r = post("/oauth/token", data=form)
    assert r.status_code == 401 and "replay" in r.json()["error_description"], r.text
    # An assertion a day long, one for another audience, one signed by another key.
    for claims, signer in [
        ({"exp": now + 86400}, pem),
        ({"aud": "https://elsewhere/token"}, pem),
        ({}, ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
    ]:
        c = {"iss": name, "sub": name, "aud": token_url, "exp": now + 60, "jti": uuid.uuid4().hex}
        c.update(claims)
        form["client_assertion"] = jwt.encode(c, signer, algorithm="ES256", headers={"kid": "k1"})
        r = post("/oauth/token", data=form)
        assert r.status_code == 401, (claims, r.text)
    # A symmetric or private key is never registered.
    r = requests.post(addr + "/v1/oauth/clients", verify=ca, timeout=10,
                      headers={"Authorization": "Bearer " + admin},
                      json={"client_id": name + "-hs", "audiences": [aud], "jwk": {"kty": "oct", "k": "c2VjcmV0"}})
    assert r.status_code == 400, r.text
