//! Published ports: docker's `-p` forms, parsed into requests, and the
//! host ports they get at task create (checked free by binding them, as
//! the `portmap` plugin would silently take a port another program holds).

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::NetError;
use crate::cni::PortMapping;

/// One requested publication; `host_port` 0 asks for a free port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
    /// First and last host port (0, 0: any free one; a range longer than
    /// the container's: the first free port in it).
    pub host_ports: (u16, u16),
    pub container_port: u16,
    pub protocol: String,
}

fn bad(s: &str, why: &str) -> NetError {
    NetError::Invalid(format!(
        "-p {s:?}: {why} (write [IP:][HOSTPORT:]CTRPORT[/tcp|udp], ports or ranges like 8000-8001)"
    ))
}

fn port_range(s: &str, whole: &str) -> Result<(u16, u16), NetError> {
    let one = |p: &str| -> Result<u16, NetError> {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad(whole, &format!("{p:?} is not a port")))
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if b < a {
                return Err(bad(whole, "a range must go upwards"));
            }
            Ok((a, b))
        }
        None => one(s).map(|p| (p, p)),
    }
}

/// Parses one `-p` value in docker's forms: `CTRPORT`, `HOSTPORT:CTRPORT`,
/// `IP:HOSTPORT:CTRPORT`, `IP::CTRPORT`, each with `/tcp` or `/udp` and
/// ports or ranges (`8000-8001:80-81`).
pub fn parse(s: &str) -> Result<Vec<PortSpec>, NetError> {
    let (rest, protocol) = match s.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (s, "tcp".to_owned()),
    };
    if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad(s, &format!("protocol {protocol:?}: use tcp or udp")));
    }
    // An IPv6 host address is written in brackets: [::1]:8080:80.
    let (host_ip, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, r) = r
            .split_once("]:")
            .ok_or_else(|| bad(s, "unclosed [ in the address"))?;
        (ip.to_owned(), r)
    } else {
        match rest.matches(':').count() {
            2 => {
                let (ip, r) = rest.split_once(':').unwrap_or_default();
                (ip.to_owned(), r)
            }
            0 | 1 => (String::new(), rest),
            _ => return Err(bad(s, "too many colons")),
        }
    };
    if !host_ip.is_empty() && host_ip.parse::<IpAddr>().is_err() {
        return Err(bad(s, &format!("{host_ip:?} is not an IP address")));
    }
    let (host, ctr) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None => ("", rest),
    };
    let ctr = port_range(ctr, s)?;
    let host = if host.is_empty() {
        None
    } else {
        Some(port_range(host, s)?)
    };
    let n = ctr.1 - ctr.0;
    let mut v = Vec::new();
    for i in 0..=n {
        let host_ports = match host {
            None => (0, 0),
            // One container port, a host range: any free port of the range.
            Some(h) if n == 0 => h,
            Some(h) if h.1 - h.0 == n => (h.0 + i, h.0 + i),
            Some(_) => {
                return Err(bad(
                    s,
                    "the host range and the container range differ in length",
                ))
            }
        };
        v.push(PortSpec {
            host_ip: host_ip.clone(),
            host_ports,
            container_port: ctr.0 + i,
            protocol: protocol.clone(),
        });
    }
    Ok(v)
}

/// The image's `ExposedPorts` keys (`80/tcp`, `53/udp`, `8080`) as
/// requests for free host ports (`-P`).
pub fn exposed(keys: &[String]) -> Vec<PortSpec> {
    let mut v: Vec<PortSpec> = keys
        .iter()
        .filter_map(|k| parse(k).ok())
        .flatten()
        .collect();
    v.sort_by(|a, b| (a.container_port, &a.protocol).cmp(&(b.container_port, &b.protocol)));
    v.dedup();
    v
}

fn overlaps(a: &str, b: &str) -> bool {
    let any = |s: &str| s.is_empty() || s == "0.0.0.0" || s == "::";
    any(a) || any(b) || a == b
}

/// Whether `(ip, port, proto)` can be bound on the host now.
fn bindable(ip: &str, port: u16, proto: &str) -> std::io::Result<u16> {
    let addr: IpAddr = if ip.is_empty() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        ip.parse().map_err(std::io::Error::other)?
    };
    let sa = SocketAddr::new(addr, port);
    match proto {
        "udp" => UdpSocket::bind(sa).and_then(|s| s.local_addr()),
        _ => TcpListener::bind(sa).and_then(|s| s.local_addr()),
    }
    .map(|a| a.port())
}

/// Host ports for `specs`: each given one checked free (on the host, and
/// among `taken`, what this daemon's other containers publish), each
/// missing one chosen free. `taken` grows with what is chosen.
pub fn resolve(
    specs: &[PortSpec],
    taken: &mut Vec<PortMapping>,
) -> Result<Vec<PortMapping>, NetError> {
    let mut out = Vec::new();
    for s in specs {
        let clash = |taken: &[PortMapping], port: u16| {
            taken.iter().any(|t| {
                t.host_port == port && t.protocol == s.protocol && overlaps(&t.host_ip, &s.host_ip)
            })
        };
        let shown = if s.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &s.host_ip
        };
        let port = if s.host_ports == (0, 0) {
            let mut found = None;
            for _ in 0..64 {
                let p = bindable(&s.host_ip, 0, &s.protocol).map_err(|e| {
                    NetError::Conflict(format!(
                        "no free host port on {shown} for {}/{}: {e}",
                        s.container_port, s.protocol
                    ))
                })?;
                if !clash(taken, p) {
                    found = Some(p);
                    break;
                }
            }
            found.ok_or_else(|| {
                NetError::Conflict(format!("no free host port on {shown}/{}", s.protocol))
            })?
        } else {
            let (first, last) = s.host_ports;
            let mut last_err = None;
            let mut found = None;
            for p in first..=last {
                if clash(taken, p) {
                    last_err = Some("another container publishes it".to_owned());
                    continue;
                }
                match bindable(&s.host_ip, p, &s.protocol) {
                    Ok(_) => {
                        found = Some(p);
                        break;
                    }
                    Err(e) => last_err = Some(e.to_string()),
                }
            }
            let range = if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            };
            found.ok_or_else(|| {
                NetError::Conflict(format!(
                    "host port {shown}:{range}/{} is already in use: {}",
                    s.protocol,
                    last_err.unwrap_or_default()
                ))
            })?
        };
        let m = PortMapping {
            host_port: port,
            container_port: s.container_port,
            protocol: s.protocol.clone(),
            host_ip: s.host_ip.clone(),
        };
        taken.push(m.clone());
        out.push(m);
    }
    Ok(out)
}

/// docker's text for one mapping: `0.0.0.0:8080->80/tcp`.
pub fn describe(m: &PortMapping) -> String {
    let ip = if m.host_ip.is_empty() {
        "0.0.0.0"
    } else {
        &m.host_ip
    };
    format!("{ip}:{}->{}/{}", m.host_port, m.container_port, m.protocol)
}

/// Every port mapping recorded under `tasks` (`<state>/tasks/*/*/`).
pub fn published(tasks: &Path) -> Vec<PortMapping> {
    super::bundles(tasks)
        .into_iter()
        .filter_map(|(_, _, b)| crate::cni::load(&b).ok().flatten())
        .flat_map(|a| a.port_mappings)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> PortSpec {
        let v = parse(s).unwrap();
        assert_eq!(v.len(), 1, "{v:?}");
        v.into_iter().next().unwrap()
    }

    #[test]
    fn dockers_forms_parse() {
        let p = one("8080:80");
        assert_eq!((p.host_ports, p.container_port), ((8080, 8080), 80));
        assert_eq!((p.host_ip.as_str(), p.protocol.as_str()), ("", "tcp"));
        let p = one("127.0.0.1:8080:80/udp");
        assert_eq!(
            (p.host_ip.as_str(), p.host_ports, p.protocol.as_str()),
            ("127.0.0.1", (8080, 8080), "udp")
        );
        let p = one("127.0.0.1::80");
        assert_eq!((p.host_ip.as_str(), p.host_ports), ("127.0.0.1", (0, 0)));
        assert_eq!(one("80").host_ports, (0, 0));
        assert_eq!(one("[::1]:8080:80").host_ip, "::1");
        let v = parse("8000-8001:80-81/tcp").unwrap();
        assert_eq!(
            v.iter()
                .map(|p| (p.host_ports.0, p.container_port))
                .collect::<Vec<_>>(),
            [(8000, 80), (8001, 81)]
        );
        assert_eq!(one("9000-9010:80").host_ports, (9000, 9010));
        assert_eq!(parse("80-82").unwrap().len(), 3);
        for bad in [
            "",
            "x",
            "0",
            "70000",
            "1:2:3:4",
            "8000-8002:80-81",
            "80/icmp",
            "nope:80:80",
            "81-80",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exposed_ports_ask_for_free_host_ports() {
        let v = exposed(&["80/tcp".into(), "53/udp".into(), "80/tcp".into()]);
        assert_eq!(v.len(), 2);
        assert!(v.iter().all(|p| p.host_ports == (0, 0)));
    }

    #[test]
    fn a_held_port_is_refused_and_a_free_one_chosen() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let spec = |host: u16| PortSpec {
            host_ip: "127.0.0.1".into(),
            host_ports: (host, host),
            container_port: 80,
            protocol: "tcp".into(),
        };
        let mut taken = vec![];
        let e = resolve(&[spec(port)], &mut taken).unwrap_err().to_string();
        assert!(e.contains("already in use"), "{e}");
        let got = resolve(&[spec(0)], &mut taken).unwrap();
        assert_ne!(got[0].host_port, 0);
        // What another container publishes counts as taken too.
        let again = got[0].host_port;
        let e = resolve(&[spec(again)], &mut taken).unwrap_err().to_string();
        assert!(e.contains("another container"), "{e}");
        assert_eq!(describe(&got[0]), format!("127.0.0.1:{again}->80/tcp"));
    }
}
