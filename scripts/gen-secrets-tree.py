#!/usr/bin/env python3
"""Writes a deterministic source tree of about SIZE_MB megabytes for the
secret-scanning benchmark: Python, JavaScript, Go and YAML files full of
code that mentions tokens, secrets and passwords without holding any
(the hard case for a scanner), npm lock files with integrity hashes, and
PLANTED credentials at known places. Prints the planted (file, line) pairs
as JSON on stdout. Usage: gen-secrets-tree.py DIR [SIZE_MB]"""
import base64, json, os, random, string, sys

out, size_mb = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100
rng = random.Random(20261202)
alnum = string.ascii_letters + string.digits
words = ("user request token secret password config client session cache key value handler "
         "service order payment cart item price stock queue event retry timeout limit auth").split()

def ident():
    return "_".join(rng.choice(words) for _ in range(rng.randint(1, 3)))

def code_line(lang):
    a, b = ident(), ident()
    return rng.choice({
        "py": [f"    {a} = {b}(request.{ident()}, timeout={rng.randint(1, 60)})",
               f"    if not {a}.token_valid({b}):", f"        raise ValueError('bad {a}')",
               f"    password_hash = hasher.hash({a}.password)", f"    # refresh the {a} before it expires",
               f"    return {{'{a}': {b}, 'count': {rng.randint(0, 999)}}}"],
        "js": [f"  const {a} = await {b}(req.{ident()});", f"  if (!{a}.secret) throw new Error('missing {b}');",
               f"  res.json({{ {a}: {b}.map(x => x.id) }});", f"  // token rotation for {a}",
               f"  const apiKey = process.env.{a.upper()};"],
        "go": [f"\t{a} := {b}(ctx, req.{ident().title()})", f"\tif err != nil {{ return fmt.Errorf(\"{a}: %w\", err) }}",
               f"\ttoken, err := auth.Token(ctx, {a})", f"\t// password comes from the vault, never the config"],
        "yaml": [f"  {a}: {rng.randint(1, 9999)}", f"  {a}_secret_ref: {b}", f"  password_file: /run/secrets/{a}",
                 f"  {a}: \"{b}\""],
    }[lang])

def fake(prefix, alphabet, n):
    return prefix + "".join(rng.choice(alphabet) for _ in range(n))

planted = []
def plant(path, lines, text):
    lines.append(text)
    planted.append([path, len(lines)])

total, target, i = 0, size_mb * 1_000_000, 0
os.makedirs(out, exist_ok=True)
while total < target:
    i += 1
    d = os.path.join(out, f"svc{i % 40:02d}", rng.choice(["src", "lib", "internal", "deploy"]))
    os.makedirs(d, exist_ok=True)
    lang = rng.choice(["py", "js", "go", "yaml"])
    rel = os.path.relpath(os.path.join(d, f"{ident()}_{i}.{lang}"), out)
    lines = []
    if i % 25 == 0:
        lines = ['{', '  "name": "app", "lockfileVersion": 3, "packages": {']
        for _ in range(600):
            h = base64.b64encode(rng.randbytes(64)).decode()
            lines.append(f'    "node_modules/{ident()}": {{ "version": "1.{rng.randint(0,20)}.0", "integrity": "sha512-{h}" }},')
        lines.append("  }\n}")
        rel = os.path.join(os.path.dirname(rel), "package-lock.json")
    else:
        for _ in range(rng.randint(400, 1200)):
            lines.append(code_line(lang))
            if rng.random() < 0.00004:
                plant(rel, lines, rng.choice([
                    f'AWS_KEY = "{fake("AKIA", "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)}"',
                    f'token = "{fake("ghp_", alnum, 36)}"',
                    f'DATABASE_URL = "postgres://app:{fake("", alnum, 16)}@db:5432/app"',
                    f'api_key = "{fake("", alnum, 32)}"',
                ]))
    text = "\n".join(lines) + "\n"
    path = os.path.join(out, rel)
    with open(path, "a" if os.path.exists(path) else "w") as f:
        f.write(text)
    total += len(text)
json.dump({"bytes": total, "planted": planted}, sys.stdout)
