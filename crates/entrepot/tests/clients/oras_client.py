"""Drive the oras Python SDK against a registry, for crates/entrepot/tests/e2e_oras.rs.

Usage: oras_client.py COMMAND HOST REPO WORKDIR OUT_JSON

  artifacts  push the files in WORKDIR (monolithic upload as REPO:mono, again with other annotations as
             REPO:again, chunked upload as REPO/chunked:chunked), pull :mono and :chunked back into
             WORKDIR/pulled-<tag>, list REPO's tags, delete the :mono tag, list again.
  referrers  push an artifact REPO:target, then three artifacts whose manifests have a `subject`:
             an SBOM (artifact type taken from its config media type) and a signature (explicit
             artifactType with the OCI empty config) on the target, and one whose subject does not
             exist (REPO:dangling).

Writes the observed facts as JSON to OUT_JSON; the Rust test asserts on them and on the registry.
Talks plain HTTP (insecure=True) with the basic auth backend (the default token backend misreads a
Basic challenge).
"""

import hashlib
import json
import os
import sys

import oras.client
import oras.oci
import requests


def sha256_file(path):
    with open(path, "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


def client(host):
    return oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")


def head_manifest(host, repo, ref):
    r = requests.head(
        f"http://{host}/v2/{repo}/manifests/{ref}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    r.raise_for_status()
    return r.headers["Docker-Content-Digest"], int(r.headers["Content-Length"])


def artifacts(host, repo, out):
    c = client(host)
    files = sorted(f for f in os.listdir(".") if os.path.isfile(f))
    result = {"files": {f: sha256_file(f) for f in files}, "pushed": {}, "pulled": {}}
    # The chunked push goes to another repository: oras skips blobs the repository already has.
    targets = {
        "mono": f"{host}/{repo}:mono",
        "again": f"{host}/{repo}:again",
        "chunked": f"{host}/{repo}/chunked:chunked",
    }
    for tag, chunked in (("mono", False), ("again", False), ("chunked", True)):
        r = c.push(
            target=targets[tag],
            files=files,
            manifest_annotations={"org.example.upload": tag},
            do_chunked=chunked,
            chunk_size=256 * 1024,
            quiet=True,
        )
        result["pushed"][tag] = {
            "status": r.status_code,
            "digest": r.headers.get("Docker-Content-Digest"),
            "location": r.headers.get("Location"),
        }
    for tag in ("mono", "chunked"):
        outdir = os.path.abspath(f"pulled-{tag}")
        paths = c.pull(target=targets[tag], outdir=outdir)
        result["pulled"][tag] = {os.path.basename(p): sha256_file(p) for p in paths}
        result.setdefault("manifests", {})[tag] = c.get_manifest(targets[tag])
    result["tags_before"] = c.get_tags(f"{host}/{repo}")
    result["deleted"] = c.delete_tags(f"{host}/{repo}", "mono")
    result["tags_after"] = c.get_tags(f"{host}/{repo}")
    with open(out, "w") as f:
        json.dump(result, f)


def referrers(host, repo, out):
    c = client(host)
    with open("target.txt", "w") as f:
        f.write("the subject artifact\n")
    with open("sbom.spdx.json", "w") as f:
        json.dump({"spdxVersion": "SPDX-2.3", "name": "e2e"}, f)
    with open("sbom-config.json", "w") as f:
        json.dump({"generator": "entrepot-e2e"}, f)
    with open("signature.sig", "wb") as f:
        f.write(b"not really a signature\n")

    c.push(target=f"{host}/{repo}:target", files=["target.txt"], quiet=True)
    digest, size = head_manifest(host, repo, "target")
    subject = oras.oci.Subject(
        mediaType="application/vnd.oci.image.manifest.v1+json", digest=digest, size=size
    )
    result = {"target": {"digest": digest, "size": size}}

    # 1. An SBOM: artifact type comes from the config media type.
    r = c.push(
        target=f"{host}/{repo}:sbom",
        files=["sbom.spdx.json:application/spdx+json"],
        manifest_config="sbom-config.json:application/vnd.example.sbom.v1+json",
        manifest_annotations={"org.example.kind": "sbom"},
        subject=subject,
        quiet=True,
    )
    result["sbom"] = {
        "status": r.status_code,
        "digest": r.headers.get("Docker-Content-Digest"),
        "oci_subject": r.headers.get("OCI-Subject"),
    }

    # 2. A signature in the OCI 1.1 style: explicit artifactType, empty config.
    container = c.get_container(f"{host}/{repo}:sig")
    sig_layer = oras.oci.NewLayer("signature.sig", media_type="application/vnd.example.sig")
    c._check_200_response(c.upload_blob("signature.sig", container, sig_layer))
    empty = "empty.json"
    with open(empty, "w") as f:
        f.write("{}")
    empty_desc = {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": sha256_file(empty),
        "size": 2,
    }
    c._check_200_response(c.upload_blob(empty, container, empty_desc))
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.signature.v1",
        "config": empty_desc,
        "layers": [sig_layer],
        "subject": {"mediaType": subject.mediaType, "digest": digest, "size": size},
        "annotations": {"org.example.kind": "signature"},
    }
    r = c.upload_manifest(manifest, container)
    c._check_200_response(r)
    result["sig"] = {
        "status": r.status_code,
        "digest": r.headers.get("Docker-Content-Digest"),
        "oci_subject": r.headers.get("OCI-Subject"),
    }

    # 3. A referrer whose subject was never pushed (allowed by the spec).
    missing = "sha256:" + hashlib.sha256(b"no such manifest " + repo.encode()).hexdigest()
    r = c.push(
        target=f"{host}/{repo}:dangling",
        files=["signature.sig"],
        manifest_config="sbom-config.json:application/vnd.example.dangling.v1+json",
        subject=oras.oci.Subject(
            mediaType="application/vnd.oci.image.manifest.v1+json", digest=missing, size=123
        ),
        quiet=True,
    )
    result["dangling"] = {
        "status": r.status_code,
        "digest": r.headers.get("Docker-Content-Digest"),
        "subject": missing,
        "oci_subject": r.headers.get("OCI-Subject"),
    }
    with open(out, "w") as f:
        json.dump(result, f)


def main():
    command, host, repo, workdir, out = sys.argv[1:6]
    os.chdir(workdir)
    {"artifacts": artifacts, "referrers": referrers}[command](host, repo, out)


if __name__ == "__main__":
    main()
