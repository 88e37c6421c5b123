//! End-to-end: OCI image layouts made offline with umoci (several layers, a whiteout, edited config, and
//! a hand-written two-platform image index), pushed to the registry with skopeo, pulled back into a
//! fresh layout and unpacked again with umoci: the files come back intact.

mod support;

use std::process::Command;

use serde_json::Value;
use support::Server;
use support::e2e::*;

fn unpack(layout: &std::path::Path, tag: &str, bundle: &std::path::Path) {
    run(Command::new("umoci").args(["unpack", "--image", &format!("{}:{tag}", layout.display())]).arg(bundle));
}

#[test]
fn umoci_multi_layer_image_survives_push_and_pull() {
    require(&["umoci", "skopeo", "tar"]);
    let s = Server::start();
    let sk = Skopeo::new();
    let tmp = tempfile::tempdir().unwrap();
    let repo = unique_repo("umoci", "layers");
    let src = tmp.path().join("src");
    let image = format!("{}:v1", src.display());

    run(Command::new("umoci").arg("init").arg("--layout").arg(&src));
    run(Command::new("umoci").args(["new", "--image", &image]));
    // Layer 1: a file.
    let files = tmp.path().join("files");
    std::fs::create_dir_all(files.join("tree/sub")).unwrap();
    std::fs::write(files.join("motd"), "to be whited out\n").unwrap();
    run(Command::new("umoci").args(["insert", "--image", &image]).arg(files.join("motd")).arg("/etc/motd"));
    // Layer 2: a directory.
    std::fs::write(files.join("tree/a.txt"), "file a\n").unwrap();
    let big = pseudo_random(300 * 1024, 99);
    std::fs::write(files.join("tree/sub/big.bin"), &big).unwrap();
    run(Command::new("umoci").args(["insert", "--image", &image]).arg(files.join("tree")).arg("/opt/tree"));
    // Layer 3: a raw tar layer.
    std::fs::create_dir_all(files.join("raw/usr/share/doc")).unwrap();
    std::fs::write(files.join("raw/usr/share/doc/README"), "raw layer\n").unwrap();
    let tar = tmp.path().join("raw.tar");
    run(Command::new("tar").arg("-C").arg(files.join("raw")).arg("-cf").arg(&tar).arg("usr"));
    run(Command::new("umoci").args(["raw", "add-layer", "--image", &image]).arg(&tar));
    // Layer 4: a whiteout.
    run(Command::new("umoci").args(["insert", "--image", &image, "--whiteout", "/etc/motd"]));
    // Config edits.
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--author=Entrepot E2E",
        "--config.env=GREETING=bonjour",
        "--config.label=org.example.test=umoci",
        "--config.workingdir=/opt/tree",
        "--config.entrypoint=/opt/tree/a.txt",
    ]));
    run(Command::new("umoci").arg("gc").arg("--layout").arg(&src));
    let layout = Layout::new(&src);
    let mdigest = layout.digest("v1");
    let manifest: Value = serde_json::from_slice(&layout.blob(&mdigest)).unwrap();
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 4);

    sk.run(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{image}"),
        &format!("docker://{}/{repo}:v1", s.addr),
    ]);
    let (bytes, _, dcd) = get_manifest(&s.addr, &repo, "v1");
    assert_eq!(dcd, mdigest);
    assert_same_bytes(&bytes, &layout.blob(&mdigest), "manifest");
    for d in layout.reachable(&mdigest).iter().skip(1) {
        assert_same_bytes(&get_blob(&s.addr, &repo, d), &layout.blob(d), &format!("blob {d}"));
    }

    // Pull into a fresh layout and unpack: the filesystem is the one we built.
    let out = tmp.path().join("out");
    sk.run(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/{repo}:v1", s.addr),
        &format!("oci:{}:pulled", out.display()),
    ]);
    assert_eq!(Layout::new(&out).digest("pulled"), mdigest);
    let bundle = tmp.path().join("bundle");
    unpack(&out, "pulled", &bundle);
    let rootfs = bundle.join("rootfs");
    assert!(!rootfs.join("etc/motd").exists(), "whiteout not applied");
    assert_eq!(std::fs::read_to_string(rootfs.join("opt/tree/a.txt")).unwrap(), "file a\n");
    assert_same_bytes(&std::fs::read(rootfs.join("opt/tree/sub/big.bin")).unwrap(), &big, "big.bin unpacked");
    assert_eq!(std::fs::read_to_string(rootfs.join("usr/share/doc/README")).unwrap(), "raw layer\n");
    let runtime: Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(runtime["process"]["cwd"], "/opt/tree");
    assert!(
        runtime["process"]["env"].as_array().unwrap().iter().any(|e| e == "GREETING=bonjour"),
        "env: {}",
        runtime["process"]["env"]
    );
    let config: Value =
        serde_json::from_slice(&get_blob(&s.addr, &repo, manifest["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(config["author"], "Entrepot E2E");
    assert_eq!(config["config"]["Labels"]["org.example.test"], "umoci");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 4);
}

#[test]
fn umoci_hand_written_index_pushes_and_unpacks_per_platform() {
    require(&["umoci", "skopeo"]);
    let s = Server::start();
    let sk = Skopeo::new();
    let tmp = tempfile::tempdir().unwrap();
    let repo = unique_repo("umoci", "index");
    let src = tmp.path().join("src");
    let index_digest = multi_arch_layout(&src, "multi");
    let layout = Layout::new(&src);

    sk.run(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", src.display()),
        &format!("docker://{}/{repo}:multi", s.addr),
    ]);

    // The index as the registry serves it lists both platforms.
    let (bytes, ct, dcd) = get_manifest(&s.addr, &repo, "multi");
    assert_eq!(ct, OCI_INDEX);
    assert_eq!(dcd, index_digest);
    let index: Value = serde_json::from_slice(&bytes).unwrap();
    let platforms: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (d["platform"]["architecture"].as_str().unwrap().to_string(), d["digest"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        platforms,
        [("amd64".to_string(), layout.digest("amd64")), ("arm64".to_string(), layout.digest("arm64"))]
    );
    assert_eq!(index["annotations"]["org.example.entrepot.test"], "multi-arch");

    // Pull everything back, tag each platform manifest in the pulled layout, and unpack it.
    let out = tmp.path().join("out");
    sk.run(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{}/{repo}:multi", s.addr),
        &format!("oci:{}:multi", out.display()),
    ]);
    let pulled = Layout::new(&out);
    assert_eq!(pulled.digest("multi"), index_digest);
    for (i, (arch, digest)) in platforms.iter().enumerate() {
        let size = pulled.blob(digest).len();
        pulled.tag(arch, OCI_MANIFEST, digest, size);
        let bundle = tmp.path().join(format!("bundle-{arch}"));
        unpack(&out, arch, &bundle);
        assert_eq!(
            std::fs::read_to_string(bundle.join("rootfs/platform.txt")).unwrap(),
            format!("platform linux/{arch}\n")
        );
        assert_same_bytes(
            &std::fs::read(bundle.join("rootfs/data.bin")).unwrap(),
            &pseudo_random(64 * 1024, 7 + i as u64),
            &format!("data.bin for {arch}"),
        );
        let m: Value = serde_json::from_slice(&pulled.blob(digest)).unwrap();
        let c: Value = serde_json::from_slice(&pulled.blob(m["config"]["digest"].as_str().unwrap())).unwrap();
        assert_eq!(c["architecture"], arch.as_str());
    }
}
