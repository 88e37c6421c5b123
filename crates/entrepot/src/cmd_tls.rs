//! `entrepot tls dev-ca`: a development certificate authority and a server certificate for the given
//! host names and addresses, so a team can run HTTPS on day one — and how to make each client trust it.
//!
//! The CA is created once per output directory and reused: run the command again with other hosts and
//! only the server certificate changes (a running server reloads it), while clients keep trusting the
//! same CA.
//!
//! Must never: write a private key readable by others, or overwrite an existing CA key.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

#[derive(Args)]
pub struct DevCaArgs {
    /// Where to write ca.crt, ca.key, server.crt and server.key.
    #[arg(long, default_value = "./entrepot-tls")]
    pub out: PathBuf,
    /// A host name or IP address the server certificate is valid for; repeatable.
    #[arg(long = "host", required = true)]
    pub hosts: Vec<String>,
}

const CA_NAME: &str = "Entrepot development CA";

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    dn.push(DnType::OrganizationName, "Entrepot");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

fn validity(p: &mut CertificateParams, days: u64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let from = now.saturating_sub(Duration::from_secs(86_400));
    let until = now + Duration::from_secs(days * 86_400);
    p.not_before = rcgen::date_time_ymd(1970, 1, 1) + from;
    p.not_after = rcgen::date_time_ymd(1970, 1, 1) + until;
}

fn write(path: &Path, data: &str, private: bool) -> Result<(), String> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    }
    let mut f = opts.open(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(data.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn dev_ca(a: DevCaArgs) -> Result<(), String> {
    std::fs::create_dir_all(&a.out).map_err(|e| format!("cannot create {}: {e}", a.out.display()))?;
    let ca_key_path = a.out.join("ca.key");
    let ca_crt_path = a.out.join("ca.crt");
    let err = |e: rcgen::Error| e.to_string();
    let ca_key = if ca_key_path.exists() {
        let pem = std::fs::read_to_string(&ca_key_path).map_err(|e| format!("{}: {e}", ca_key_path.display()))?;
        eprintln!("reusing the CA in {}", a.out.display());
        KeyPair::from_pem(&pem).map_err(err)?
    } else {
        let key = KeyPair::generate().map_err(err)?;
        let mut params = ca_params();
        validity(&mut params, 3650);
        let cert = params.self_signed(&key).map_err(err)?;
        write(&ca_key_path, &key.serialize_pem(), true)?;
        write(&ca_crt_path, &cert.pem(), false)?;
        key
    };
    // Signing only needs the CA's name and key: the same name and key give the same issuer and
    // authority key identifier as the CA certificate on disk.
    let issuer = Issuer::new(ca_params(), ca_key);

    let mut params = CertificateParams::new(a.hosts.clone()).map_err(err)?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, a.hosts[0].as_str());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.is_ca = IsCa::NoCa;
    validity(&mut params, 825);
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    let chain = cert.pem();
    write(&a.out.join("server.key"), &key.serialize_pem(), true)?;
    write(&a.out.join("server.crt"), &chain, false)?;

    let dir = std::fs::canonicalize(&a.out).unwrap_or(a.out.clone());
    let d = dir.display();
    let host = &a.hosts[0];
    println!(
        "Wrote {d}/ca.crt (the CA), {d}/server.crt and {d}/server.key (for {}).

Serve HTTPS:
    entrepot serve --tls-cert {d}/server.crt --tls-key {d}/server.key --listen {host}:5000

Trust the CA (replace 5000 with your port):
  docker:          mkdir -p /etc/docker/certs.d/{host}:5000 && cp {d}/ca.crt /etc/docker/certs.d/{host}:5000/ca.crt
  podman, skopeo,
  buildah:         mkdir -p /etc/containers/certs.d/{host}:5000 && cp {d}/ca.crt /etc/containers/certs.d/{host}:5000/ca.crt
                   (or pass --cert-dir DIR holding ca.crt)
  the system store (curl, oras, helm, crane):
    Debian/Ubuntu: cp {d}/ca.crt /usr/local/share/ca-certificates/entrepot-dev.crt && update-ca-certificates
    Fedora/RHEL:   cp {d}/ca.crt /etc/pki/ca-trust/source/anchors/entrepot-dev.crt && update-ca-trust
  curl only:       curl --cacert {d}/ca.crt https://{host}:5000/v2/",
        a.hosts.join(", ")
    );
    Ok(())
}
