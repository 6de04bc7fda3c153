//! `grpm tls init`: a small CA, an agent certificate for the given names and addresses, and a
//! client certificate, so that mutual TLS is one command. The CA's private key is used once and
//! discarded: nothing else can ever be signed by it, so it cannot be stolen; run `tls init`
//! again (with every agent name) to re-issue.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Years the certificates are valid for.
const VALID_YEARS: i32 = 10;

/// The generated files' contents, PEM.
pub struct Bundle {
    // (No Debug: it holds private keys.)
    pub ca: String,
    pub agent: String,
    pub agent_key: String,
    pub client: String,
    pub client_key: String,
}

impl Bundle {
    /// (file name, contents, secret) in the order they are written.
    fn files(&self) -> [(&'static str, &str, bool); 5] {
        [
            ("ca.pem", &self.ca, false),
            ("agent.pem", &self.agent, false),
            ("agent-key.pem", &self.agent_key, true),
            ("client.pem", &self.client, false),
            ("client-key.pem", &self.client_key, true),
        ]
    }
}

/// Generates the CA, the agent certificate (valid for every name or IP of `hosts`) and the
/// client certificate.
pub fn generate(hosts: &[String]) -> Result<Bundle, String> {
    if hosts.is_empty() {
        return Err("give the agent's names or addresses: --host NAME (may be repeated)".into());
    }
    let rc = |e: rcgen::Error| format!("cannot generate certificates: {e}");

    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, "grpm CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut ca);
    let ca_key = KeyPair::generate().map_err(rc)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(rc)?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |sans: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
        let mut p = CertificateParams::new(sans).map_err(|e| match e {
            rcgen::Error::InvalidAsn1String(_) => {
                "a --host is neither a DNS name nor an IP address".to_string()
            }
            e => rc(e),
        })?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![usage];
        p.use_authority_key_identifier_extension = true;
        set_validity(&mut p);
        let key = KeyPair::generate().map_err(rc)?;
        let cert = p.signed_by(&key, &issuer).map_err(rc)?;
        Ok::<_, String>((cert.pem(), key.serialize_pem()))
    };
    for h in hosts {
        if h.is_empty() || h.contains(['/', ' ', '*']) {
            return Err(format!(
                "--host {h:?} is neither a DNS name nor an IP address"
            ));
        }
    }
    let (agent, agent_key) = leaf(
        hosts.to_vec(),
        &hosts[0],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client, client_key) = leaf(
        Vec::new(),
        "grpm client",
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    Ok(Bundle {
        ca: ca_cert.pem(),
        agent,
        agent_key,
        client,
        client_key,
    })
}

/// Valid from a day ago (clock skew) to ten years on.
fn set_validity(p: &mut CertificateParams) {
    let day_ago = (crate::model::now_unix_ms() / 1000).saturating_sub(86_400);
    let (y, m, d) = crate::model::civil_from_days((day_ago / 86_400) as i64);
    // A real date (day 28 exists in every month); the casts hold for years before 2^31.
    let (y, m, d) = (y as i32, m as u8, d.min(28) as u8);
    p.not_before = rcgen::date_time_ymd(y, m, d);
    p.not_after = rcgen::date_time_ymd(y + VALID_YEARS, m, d);
}

/// Writes the bundle into `dir` (created 0700 when missing): keys 0600, certificates 0644.
/// Refuses, before writing anything, when a file exists and `force` is not set.
pub fn write(dir: &Path, b: &Bundle, force: bool) -> Result<Vec<PathBuf>, String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if !force {
        let existing: Vec<String> = b
            .files()
            .iter()
            .map(|(name, _, _)| dir.join(name))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(format!(
                "{} already exist; nothing written (add --force to replace them)",
                existing.join(", ")
            ));
        }
    }
    let mut written = Vec::new();
    for (name, text, secret) in b.files() {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if secret { 0o600 } else { 0o644 })
            .open(&tmp)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn bundle_is_written_privately_and_never_over_existing_files() {
        let b = generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert!(b.ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(b.agent_key.contains("PRIVATE KEY"));
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tls");
        let files = write(&out, &b, false).unwrap();
        assert_eq!(files.len(), 5);
        let mode = |n: &str| fs::metadata(out.join(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("agent-key.pem"), 0o600);
        assert_eq!(mode("client-key.pem"), 0o600);
        assert_eq!(mode("ca.pem"), 0o644);
        assert_eq!(
            fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let again = generate(&["x".into()]).unwrap();
        let err = write(&out, &again, false).unwrap_err();
        assert!(err.contains("--force"), "{err}");
        assert_eq!(fs::read_to_string(out.join("ca.pem")).unwrap(), b.ca);
        write(&out, &again, true).unwrap();
        assert_eq!(fs::read_to_string(out.join("ca.pem")).unwrap(), again.ca);
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(generate(&[]).is_err());
        assert!(generate(&["a b".into()])
            .err()
            .is_some_and(|e| e.contains("DNS name")));
    }
}
