"""Drive the oras Python SDK against a registry with authentication over HTTPS, for
crates/entrepot/tests/e2e_auth.rs.

Usage: oras_auth.py BACKEND HOST REPO CA_FILE USER PASSWORD WORKDIR OUT_JSON

BACKEND is `basic` (Basic credentials on every request) or `token` (the Docker token protocol: follow
the Bearer challenge to the realm, then send the token). Logs in, pushes the files of WORKDIR as
REPO:BACKEND, pulls them back into WORKDIR/pulled, lists the tags, then tries a wrong password.

oras-py 0.2.43's token backend keeps the first token it gets for every later request of the client (it
asks again only for a missing token), so a single client cannot push: the blob HEAD gets a pull token
and the upload POST that follows needs pull,push (distribution behaves the same way). With `token`,
the push goes through a basic-backend client and the pull, tag listing and the wrong password through
fresh token-backend clients.
Writes what it observed as JSON to OUT_JSON; the Rust test asserts on it.
"""

import hashlib
import json
import os
import sys

import oras.client


def sha256_file(path):
    with open(path, "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


def main():
    backend, host, repo, ca, user, password, workdir, out = sys.argv[1:9]
    os.chdir(workdir)
    files = sorted(f for f in os.listdir(".") if os.path.isfile(f))
    os.environ["DOCKER_CONFIG"] = os.path.abspath(".docker")  # login() writes credentials there

    def client(b):
        c = oras.client.OrasClient(hostname=host, tls_verify=ca, auth_backend=b)
        c.login(username=user, password=password, hostname=host, tls_verify=ca)
        return c

    result = {"files": {f: sha256_file(f) for f in files}}
    pusher = client("basic")
    r = pusher.push(target=f"{host}/{repo}:{backend}", files=files, quiet=True)
    result["push_status"] = r.status_code
    paths = client(backend).pull(target=f"{host}/{repo}:{backend}", outdir=os.path.abspath("pulled"))
    result["pulled"] = {os.path.basename(p): sha256_file(p) for p in paths}
    result["tags"] = client(backend).get_tags(f"{host}/{repo}")

    # oras retries a refused request with exponential backoff (about two minutes in all): check this
    # once, with tokens, and without the sleeps between its retries.
    if backend != "token":
        with open(out, "w") as f:
            json.dump(result, f)
        return
    import time

    time.sleep = lambda _seconds: None
    bad = oras.client.OrasClient(hostname=host, tls_verify=ca, auth_backend=backend)
    try:
        bad.login(username=user, password=password + "-wrong", hostname=host, tls_verify=ca)
        bad.pull(target=f"{host}/{repo}:{backend}", outdir=os.path.abspath("pulled-bad"))
        result["wrong_password"] = "accepted"
    except Exception as e:  # the SDK raises on the 401
        result["wrong_password"] = f"refused: {type(e).__name__}"
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
