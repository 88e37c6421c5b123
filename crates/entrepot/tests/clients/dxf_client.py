"""Drive python-dxf against a registry, for crates/entrepot/tests/e2e_dxf.rs.

Usage: DXF_CHUNK_SIZE=N dxf_client.py HOST REPO WORKDIR OUT_JSON

WORKDIR holds small.bin and big.bin. Steps (plain HTTP, no credentials: python-dxf refuses to send
credentials over plain HTTP):
  - push small.bin from a file (monolithic PUT with Content-Length);
  - push big.bin from an iterator of DXF_CHUNK_SIZE-byte chunks (a PUT with Transfer-Encoding: chunked);
  - pull both with chunk_size=DXF_CHUNK_SIZE (python-dxf checks the digest while reading);
  - aliases: set v1 -> [small, big], v2 -> [big], read them back, list, delete v1, list again;
  - mount big.bin into REPO/mounted from REPO, read it there, alias it as m1;
  - delete the small blob, check it is gone;
  - catalog: list repositories in one request and page by page (n=1).
(The dxf command line passes DXF_CHUNK_SIZE as a string and breaks: read it here as an int.)
"""

import hashlib
import json
import os
import sys

import dxf
import requests


def main():
    host, repo, workdir, out = sys.argv[1:5]
    chunk = int(os.environ.get("DXF_CHUNK_SIZE", "8192"))
    os.chdir(workdir)
    small = open("small.bin", "rb").read()
    big = open("big.bin", "rb").read()
    d_small = "sha256:" + hashlib.sha256(small).hexdigest()
    d_big = "sha256:" + hashlib.sha256(big).hexdigest()
    r = {"chunk_size": chunk}

    d = dxf.DXF(host, repo, insecure=True)
    r["push_small"] = d.push_blob("small.bin")
    chunks_sent = []

    def gen():
        for i in range(0, len(big), chunk):
            chunks_sent.append(i)
            yield big[i : i + chunk]

    r["push_big"] = d.push_blob(data=gen(), digest=d_big)
    r["chunks_sent"] = len(chunks_sent)
    # Pushing again with the existence check is a no-op that returns the digest.
    r["push_big_again"] = d.push_blob("big.bin")

    it, size = d.pull_blob(d_big, size=True, chunk_size=chunk)
    pulled = b"".join(it)
    r["pull_big"] = {"size": size, "sha256": "sha256:" + hashlib.sha256(pulled).hexdigest()}
    pulled = b"".join(d.pull_blob(d_small, chunk_size=chunk))
    r["pull_small"] = {"sha256": "sha256:" + hashlib.sha256(pulled).hexdigest()}
    r["blob_size_small"] = d.blob_size(d_small)

    # Aliases are Docker v2s2 manifests whose config is the first layer.
    d.set_alias("v1", d_small, d_big)
    d.set_alias("v2", d_big)
    r["get_alias_v1"] = d.get_alias("v1")
    r["get_alias_v2"] = d.get_alias("v2")
    r["digest_v1"] = d.get_digest("v1")
    r["aliases"] = sorted(d.list_aliases())
    r["aliases_paged"] = sorted(d.list_aliases(batch_size=1))
    r["del_alias_v1"] = d.del_alias("v1")
    r["aliases_after"] = sorted(d.list_aliases())
    try:
        d.get_alias("v1")
        r["v1_after_delete"] = "still there"
    except requests.exceptions.HTTPError as e:
        r["v1_after_delete"] = e.response.status_code

    # Cross-repository mount.
    m = dxf.DXF(host, repo + "/mounted", insecure=True)
    r["mount"] = m.mount_blob(repo, d_big)
    r["mounted_size"] = m.blob_size(d_big)
    r["mounted_sha256"] = "sha256:" + hashlib.sha256(b"".join(m.pull_blob(d_big))).hexdigest()
    # Give the mounted repository a manifest too, so the catalog must list it whatever its policy for
    # repositories that only hold blobs.
    m.set_alias("m1", d_big)
    r["mounted_aliases"] = m.list_aliases()
    try:
        m.mount_blob(repo, "sha256:" + "0" * 64)
        r["mount_missing"] = "mounted"
    except dxf.exceptions.DXFMountFailed:
        r["mount_missing"] = "DXFMountFailed"
    except requests.exceptions.HTTPError as e:
        r["mount_missing"] = e.response.status_code

    # Blob delete.
    d.del_blob(d_small)
    try:
        d.blob_size(d_small)
        r["small_after_delete"] = "still there"
    except requests.exceptions.HTTPError as e:
        r["small_after_delete"] = e.response.status_code

    # Catalog.
    base = dxf.DXFBase(host, insecure=True)
    r["repos"] = base.list_repos()
    r["repos_paged"] = base.list_repos(batch_size=1)
    r["expected"] = {"small": d_small, "big": d_big}
    with open(out, "w") as f:
        json.dump(r, f)


if __name__ == "__main__":
    main()
