//! Test certificates for TLS servers on 127.0.0.1, made with Debian's
//! `openssl`: a CA (`cert.pem`, its key `ca-key.pem`) and a leaf it signs
//! for IP 127.0.0.1 (`leaf.pem`, key `key.pem`). TLS clients (rustls)
//! refuse a CA certificate used as the server's own, hence two.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Writes the CA and the leaf into `dir`.
pub fn make_ca_and_leaf(dir: &Path) -> Result<()> {
    let p = |n: &str| dir.join(n);
    let ext = p("leaf.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )?;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let d = |n: &str| p(n).display().to_string();
    let steps: [Vec<String>; 3] = [
        [
            s(&[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ]),
            s(&["-subj", "/CN=berth test CA", "-keyout"]),
            vec![d("ca-key.pem"), "-out".into(), d("cert.pem")],
        ]
        .concat(),
        [
            s(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
            ]),
            vec!["-keyout".into(), d("key.pem"), "-out".into(), d("leaf.csr")],
        ]
        .concat(),
        [
            s(&["x509", "-req", "-days", "2", "-CAcreateserial", "-in"]),
            vec![d("leaf.csr"), "-CA".into(), d("cert.pem"), "-CAkey".into()],
            vec![d("ca-key.pem"), "-extfile".into(), d("leaf.ext")],
            vec!["-out".into(), d("leaf.pem")],
        ]
        .concat(),
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .context("running openssl (install Debian's openssl package)")?;
        if !out.status.success() {
            bail!(
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}
