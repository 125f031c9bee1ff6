"""A test OIDC issuer: discovery and JWKS over HTTPS, an ES256 key made at
start (never stored), and POST /mint, which signs the JSON claims it is
given (a test-only endpoint standing in for a user's login).

Usage: oidc_issuer.py CERT KEY READY_FILE
"""
import base64
import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

cert, key, ready = sys.argv[1:4]
signing = ec.generate_private_key(ec.SECP256R1())
numbers = signing.public_key().public_numbers()


def b64(n):
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


JWK = {"kty": "EC", "crv": "P-256", "x": b64(numbers.x), "y": b64(numbers.y),
       "kid": "idp-1", "alg": "ES256", "use": "sig"}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/.well-known/openid-configuration":
            self.answer(200, {"issuer": ISSUER, "jwks_uri": ISSUER + "/jwks",
                              "id_token_signing_alg_values_supported": ["ES256"]})
        elif self.path == "/jwks":
            self.answer(200, {"keys": [JWK]})
        else:
            self.answer(404, {"error": "not found"})

    def do_POST(self):
        if self.path != "/mint":
            return self.answer(404, {"error": "not found"})
        n = int(self.headers.get("Content-Length", "0"))
        claims = json.loads(self.rfile.read(n))
        claims.setdefault("iss", ISSUER)
        token = jwt.encode(claims, signing, algorithm="ES256", headers={"kid": "idp-1"})
        self.answer(200, {"token": token})


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
ISSUER = "https://127.0.0.1:%d" % server.server_address[1]
with open(ready + ".tmp", "w") as f:
    json.dump({"issuer": ISSUER}, f)
import os
os.rename(ready + ".tmp", ready)
server.serve_forever()
