//! End-to-end: containerd's `ctr` against the registry, with a private containerd (root, state and
//! socket in a temp dir, CRI plugin disabled) started by the test.
//!
//! Covers `ctr images pull --plain-http --all-platforms` of a two-platform OCI index pushed by skopeo
//! (every blob byte-identical in containerd's content store), and `ctr images push --plain-http` of that
//! index to another repository (same digests).

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Server;
use support::e2e::*;

struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    fn start() -> Containerd {
        require(&["containerd", "ctr"]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"#,
            root = p.join("root").display(),
            state = p.join("state").display(),
            sock = p.join("c.sock").display(),
        );
        std::fs::write(p.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(p.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(p.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start containerd ({e}): run .ci/install-clients"));
        let c = Containerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if c.socket().exists() && try_run(&mut c.ctr(&["version"])).ok() {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "containerd did not start:\n{}",
                    std::fs::read_to_string(c.dir.path().join("containerd.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(self.socket()).args(["--namespace", "e2e"]).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Vec<u8> {
        try_run(&mut self.ctr(args)).expect_ok().stdout
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ctr_pull_all_platforms_and_push() {
    let s = Server::start();
    let sk = Skopeo::new();
    let tmp = tempfile::tempdir().unwrap();
    let repo = unique_repo("ctr", "pull");
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

    let ctd = Containerd::start();
    let image = format!("{}/{repo}:multi", s.addr);
    ctd.run(&["images", "pull", "--plain-http", "--all-platforms", "--snapshotter", "native", &image]);
    let listed = String::from_utf8(ctd.run(&["images", "ls"])).unwrap();
    let line = listed
        .lines()
        .find(|l| l.starts_with(&image))
        .unwrap_or_else(|| panic!("{image} not in ctr images ls:\n{listed}"));
    assert!(line.contains(&index_digest), "{line}");
    assert!(line.contains("linux/amd64,linux/arm64"), "{line}");
    // Every blob in containerd's content store is byte-identical to the layout's.
    for d in layout.reachable(&index_digest) {
        assert_same_bytes(&ctd.run(&["content", "get", &d]), &layout.blob(&d), &format!("content {d}"));
    }

    // Push the index (all platforms) to another repository.
    let repo2 = unique_repo("ctr", "push");
    let copy = format!("{}/{repo2}:copy", s.addr);
    ctd.run(&["images", "tag", &image, &copy]);
    ctd.run(&["images", "push", "--plain-http", &copy]);
    let (bytes, ct, dcd) = get_manifest(&s.addr, &repo2, "copy");
    assert_eq!(dcd, index_digest);
    assert_eq!(ct, OCI_INDEX);
    assert_same_bytes(&bytes, &layout.blob(&index_digest), "index pushed by ctr");
    let index: Value = serde_json::from_slice(&bytes).unwrap();
    for m in index["manifests"].as_array().unwrap() {
        let d = m["digest"].as_str().unwrap();
        let (mb, _, _) = get_manifest(&s.addr, &repo2, d);
        assert_same_bytes(&mb, &layout.blob(d), "platform manifest pushed by ctr");
        for b in layout.reachable(d).iter().skip(1) {
            assert_same_bytes(&get_blob(&s.addr, &repo2, b), &layout.blob(b), &format!("blob {b} pushed by ctr"));
        }
    }
}
