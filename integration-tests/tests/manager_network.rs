//! Networking people expect (issue 19) against a real daemon: published
//! ports (TCP and UDP, loopback and the host's own address, chosen ports),
//! outbound NAT to a server outside the bridge, user networks with names
//! and aliases, and nothing left on the host (iptables rules, veths,
//! bridges, address leases, namespace mounts) after `rm -f`, `network rm`
//! and a SIGKILLed daemon.
//!
//! Every test has subnets of its own in 10.93.0.0/16 and bridges named
//! `bnet*` (or the per-root `berth-<hash>`), and a guard that removes its
//! containers, networks, bridges and namespaces however it ends.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_integration_tests::fixtures::image;
use berth_integration_tests::manager::Daemon;
use berth_integration_tests::wait_until;

const PATIENCE: Duration = Duration::from_secs(10);

/// A daemon whose containers, networks and host links are removed however
/// the test ends (before the daemon itself goes).
struct Net {
    d: Daemon,
    links: Vec<String>,
    netns: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl Drop for Net {
    fn drop(&mut self) {
        let ids = String::from_utf8_lossy(&self.d.cli(&["ps", "-aq"]).stdout).into_owned();
        for id in ids.split_whitespace() {
            let _ = self.d.cli(&["rm", "-f", id]);
        }
        let nets =
            String::from_utf8_lossy(&self.d.cli(&["network", "ls", "-q"]).stdout).into_owned();
        for n in nets.split_whitespace().filter(|n| *n != "bridge") {
            let _ = self.d.cli(&["network", "rm", n]);
        }
        if let Some(b) = builtin_bridge(&self.d) {
            self.links.push(b);
        }
        for l in &self.links {
            let _ = Command::new("ip").args(["link", "del", l]).output();
        }
        for n in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

fn builtin_bridge(d: &Daemon) -> Option<String> {
    let out = d.cli(&["network", "inspect", "bridge"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["Options"]["com.docker.network.bridge.name"]
        .as_str()
        .map(str::to_owned)
}

/// A tag for this process's names (interface names are 15 bytes at most).
fn tag() -> u32 {
    std::process::id() % 10000
}

/// A daemon with the fixture images, `config` (TOML) as its config file.
fn daemon(config: &str) -> Net {
    let tmp = tempfile::tempdir().unwrap();
    let tar = image::standard_tar(tmp.path());
    let cfg = tmp.path().join("config.toml");
    std::fs::write(&cfg, format!("{config}\n[cri]\nenabled = false\n")).unwrap();
    let d = Daemon::start_with(&["--config", cfg.to_str().unwrap()]);
    d.ok(&["load", "-i", tar.to_str().unwrap()]);
    Net {
        d,
        links: vec![],
        netns: vec![],
        _tmp: tmp,
    }
}

/// A daemon whose built-in bridge network is `bnet<x><tag>` on
/// 10.93.<octet>.0/24.
fn bridge_daemon(x: &str, octet: u8) -> Net {
    let bridge = format!("bnet{x}{}", tag());
    let mut n = daemon(&format!(
        "[network]\nbridge = \"{bridge}\"\nsubnet = \"10.93.{octet}.0/24\"\n"
    ));
    n.links.push(bridge);
    n
}

/// An HTTP GET of `/` through `addr`, the body.
fn http_get(addr: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned())
}

/// Waits for `addr` to answer with `want`.
fn wait_http(addr: &str, want: &str) {
    wait_until(&format!("{addr} to answer {want:?}"), PATIENCE, || {
        http_get(addr).is_ok_and(|b| b.trim() == want)
    });
}

/// The host's first global IPv4 address (not loopback).
fn host_address() -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .filter(|a| !a.starts_with("10.93."))
        .expect("a global IPv4 address on the host")
        .to_owned()
}

/// busybox httpd serving `body` at /index.html on port 80.
fn httpd(body: &str) -> String {
    format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www")
}

/// Every iptables rule (all tables) that names one of `needles`.
fn rules_naming(needles: &[String]) -> Vec<String> {
    let out = Command::new("iptables-save").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| needles.iter().any(|n| l.contains(n.as_str())))
        .map(|l| l.split(" [").next().unwrap_or(l).to_owned())
        .collect()
}

/// The per-container chains (`CNI-...`, not the plugins' shared
/// `CNI-HOSTPORT-*`) the lines name.
fn chains_in(lines: &[String]) -> Vec<String> {
    let mut v: Vec<String> = lines
        .iter()
        .flat_map(|l| l.split([' ', ':']))
        .filter(|w| {
            (w.starts_with("CNI-") && !w.starts_with("CNI-HOSTPORT")) || w.starts_with("BERTH-")
        })
        .map(str::to_owned)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The veths attached to `bridge`.
fn bridge_ports(bridge: &str) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Address leases (host-local's files named by address) under the daemon.
fn leases(d: &Daemon) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let Ok(nets) = std::fs::read_dir(d.dir().join("state/cni/ipam")) else {
        return v;
    };
    for n in nets.flatten() {
        for f in std::fs::read_dir(n.path()).into_iter().flatten().flatten() {
            if f.file_name().to_string_lossy().starts_with("10.") {
                v.push(f.path());
            }
        }
    }
    v
}

fn netns_mounts(d: &Daemon) -> Vec<String> {
    let dir = d.dir().display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir) && m.ends_with("/netns"))
        .map(str::to_owned)
        .collect()
}

/// A UDP echo server ("pong:" + the datagram) on `port` inside the network
/// namespace of container `id` (the image's busybox has no UDP server):
/// what answers is reached through the container's address, as the
/// published port's DNAT sends it.
fn udp_echo_in(d: &Daemon, id: &str, port: u16) -> std::thread::JoinHandle<()> {
    let ns = d.dir().join(format!("state/tasks/default/{id}/netns"));
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = UdpSocket::bind(("0.0.0.0", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 512];
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let mut reply = b"pong:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from);
        }
    });
    rx.recv_timeout(PATIENCE).expect("the UDP server to start");
    h
}

#[test]
fn published_ports_answer_on_loopback_and_the_host_address() {
    let n = bridge_daemon("p", 11);
    let d = &n.d;
    // A fixed host port, taken from the free ones.
    let fixed = TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let udp = UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p_tcp = format!("{fixed}:80");
    let p_udp = format!("{udp}:5353/udp");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &p_tcp,
        "-p",
        &p_udp,
        "busybox",
        "sh",
        "-c",
        &httpd("hello"),
    ]);
    wait_http(&format!("127.0.0.1:{fixed}"), "hello");
    wait_http(&format!("{}:{fixed}", host_address()), "hello");

    // UDP through the published port.
    let server = udp_echo_in(d, "web", 5353);
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.send_to(b"ping", ("127.0.0.1", udp)).unwrap();
    let mut buf = [0u8; 64];
    let (got, _) = c
        .recv_from(&mut buf)
        .expect("an answer through the UDP port");
    assert_eq!(&buf[..got], b"pong:ping");
    server.join().unwrap();

    // No host port: a free one is chosen, and `berth port` names it.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "any",
        "-p",
        "80",
        "-p",
        "127.0.0.1::80/udp",
        "busybox",
        "sh",
        "-c",
        &httpd("chosen"),
    ]);
    let port = d.ok(&["port", "any", "80/tcp"]);
    let host_port: u16 = port
        .trim()
        .strip_prefix("0.0.0.0:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("berth port: {port}"));
    assert_ne!(host_port, 0);
    wait_http(&format!("127.0.0.1:{host_port}"), "chosen");
    let all = d.ok(&["port", "any"]);
    assert!(
        all.contains(&format!("80/tcp -> 0.0.0.0:{host_port}")),
        "{all}"
    );
    assert!(all.contains("80/udp -> 127.0.0.1:"), "{all}");
    assert!(d.fails(&["port", "any", "81"]).contains("no public port"));

    // ps and inspect show them as docker does.
    let ps = d.json(&["ps", "--format", "json"]);
    let web = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "web")
        .unwrap();
    let want = format!("0.0.0.0:{fixed}->80/tcp");
    assert!(
        web["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == want.as_str()),
        "{web}"
    );
    assert!(d.ok(&["ps"]).contains(&want));
    let i = d.json(&["inspect", "web"]);
    assert_eq!(
        i[0]["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        fixed.to_string()
    );
    assert_eq!(
        i[0]["HostConfig"]["PortBindings"]["5353/udp"][0]["HostPort"],
        udp.to_string()
    );
    assert_eq!(i[0]["HostConfig"]["NetworkMode"], "bridge");
    let ip = i[0]["NetworkSettings"]["IPAddress"].as_str().unwrap();
    assert!(ip.starts_with("10.93.11."), "{i}");

    // A port in use is a clear error, and the failed start leaves nothing.
    let held = TcpListener::bind("0.0.0.0:0").unwrap();
    let busy = held.local_addr().unwrap().port();
    let before = leases(d).len();
    let err = d.fails(&[
        "run",
        "-d",
        "--name",
        "clash",
        "-p",
        &format!("{busy}:80"),
        "busybox",
        "sleep",
        "9",
    ]);
    assert!(
        err.contains("already in use") && err.contains(&busy.to_string()),
        "{err}"
    );
    // The same port another container publishes is refused too.
    let err = d.fails(&[
        "run", "-d", "--name", "clash2", "-p", &p_tcp, "busybox", "sleep", "9",
    ]);
    assert!(err.contains("another container publishes it"), "{err}");
    assert_eq!(leases(d).len(), before);
    assert!(!d.dir().join("state/tasks/default/clash").exists());
    assert!(!d.dir().join("state/tasks/default/clash2").exists());
    // Bad forms are refused before anything is made.
    let err = d.fails(&["run", "--rm", "-p", "80:80:80:80", "busybox", "true"]);
    assert!(err.contains("-p"), "{err}");
    let err = d.fails(&[
        "run", "--rm", "--net", "host", "-p", "80", "busybox", "true",
    ]);
    assert!(err.contains("need a bridge network"), "{err}");
    drop(held);
}

/// A server in a network namespace of the test's own, reached from the
/// host through a veth pair on 10.93.250.<4x>/30: not on any bridge, so a
/// container reaches it only through the host's routing and NAT.
struct Outside {
    name: String,
    host_if: String,
    server: String,
}

fn outside(n: &mut Net, x: u8) -> Outside {
    let name = format!("bnetsrv{}{x}", tag());
    let (host_if, peer) = (format!("bnvh{}{x}", tag()), format!("bnvs{}{x}", tag()));
    n.netns.push(name.clone());
    n.links.push(host_if.clone());
    let base = 4 * x;
    let (host_ip, server) = (
        format!("10.93.250.{}", base + 1),
        format!("10.93.250.{}", base + 2),
    );
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ip(&["netns", "add", &name]);
    ip(&[
        "link", "add", &host_if, "type", "veth", "peer", "name", &peer, "netns", &name,
    ]);
    ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
    ip(&["link", "set", &host_if, "up"]);
    ip(&[
        "-n",
        &name,
        "addr",
        "add",
        &format!("{server}/30"),
        "dev",
        &peer,
    ]);
    ip(&["-n", &name, "link", "set", &peer, "up"]);
    ip(&["-n", &name, "link", "set", "lo", "up"]);
    Outside {
        name,
        host_if,
        server,
    }
}

/// A TCP server on port 7000 in the outside namespace: answers "pong" and
/// reports each client's address.
fn serve_outside(o: &Outside) -> std::sync::mpsc::Receiver<String> {
    let ns = PathBuf::from("/run/netns").join(&o.name);
    let addr = format!("{}:7000", o.server);
    let (tx, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l = TcpListener::bind(&addr).unwrap();
        ready_tx.send(()).unwrap();
        for s in l.incoming().flatten() {
            let mut s = s;
            let peer = s
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = s.write_all(b"pong\n");
            if tx.send(peer).is_err() {
                break;
            }
        }
    });
    ready.recv_timeout(PATIENCE).expect("the outside server");
    rx
}

#[test]
fn outbound_nat_reaches_a_server_outside_the_bridge() {
    let mut n = bridge_daemon("o", 14);
    let o = outside(&mut n, 1);
    let seen = serve_outside(&o);
    let d = &n.d;
    let probe = format!("nc -w 3 {} 7000 </dev/null", o.server);
    // Masqueraded: the server sees the host's address on its link, not
    // the container's (to which it has no route).
    let out = d.ok(&[
        "run", "--rm", "--net", "bridge", "busybox", "sh", "-c", &probe,
    ]);
    assert_eq!(out.trim(), "pong");
    let peer = seen.recv_timeout(PATIENCE).unwrap();
    assert_eq!(peer, format!("10.93.250.{}", 5), "{peer} via {}", o.host_if);

    // An internal network has no way out.
    d.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.93.15.0/24",
        "--bridge",
        &format!("bnetI{}", tag()),
        "closed",
    ]);
    let r = d.cli(&[
        "run", "--rm", "--net", "closed", "busybox", "sh", "-c", &probe,
    ]);
    assert!(
        !r.status.success(),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );
    assert!(seen.recv_timeout(Duration::from_millis(300)).is_err());
    let err = d.fails(&[
        "run", "--rm", "--net", "closed", "-p", "80", "busybox", "true",
    ]);
    assert!(err.contains("internal"), "{err}");
    d.ok(&["network", "rm", "closed"]);
    assert!(!link_exists(&format!("bnetI{}", tag())));
}

#[test]
fn user_networks_resolve_names_and_aliases_only_inside() {
    let n = bridge_daemon("u", 16);
    let d = &n.d;
    let (ba, bb) = (format!("bnetA{}", tag()), format!("bnetB{}", tag()));
    let id = d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.93.17.0/24",
        "--bridge",
        &ba,
        "front",
    ]);
    assert_eq!(id.trim().len(), 64, "{id}");
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.93.18.0/24",
        "--bridge",
        &bb,
        "back",
    ]);
    assert!(link_exists(&ba) && link_exists(&bb));
    let ls = d.ok(&["network", "ls"]);
    assert!(ls.contains("front") && ls.contains("10.93.18.0/24"), "{ls}");
    // Names, overlapping subnets and bad subnets are refused.
    assert!(d
        .fails(&["network", "create", "--subnet", "10.93.17.0/25", "x"])
        .contains("overlaps"));
    assert!(d
        .fails(&["network", "create", "--subnet", "10.93.19.0/24", "front"])
        .contains("already exists"));
    assert!(d
        .fails(&["network", "create", "bridge"])
        .contains("reserved"));
    assert!(d
        .fails(&["network", "create", "--subnet", "nope", "y"])
        .contains("CIDR"));

    d.ok(&[
        "run",
        "-d",
        "--net",
        "front",
        "--name",
        "a",
        "--network-alias",
        "db",
        "--network-alias",
        "cache",
        "busybox",
        "sleep",
        "100",
    ]);
    d.ok(&[
        "run", "-d", "--net", "front", "--name", "b", "busybox", "sleep", "100",
    ]);
    d.ok(&[
        "run", "-d", "--net", "back", "--name", "c", "busybox", "sleep", "100",
    ]);
    for name in ["a", "db", "cache"] {
        let out = d.ok(&["exec", "b", "ping", "-c1", "-W2", name]);
        assert!(out.contains("10.93.17."), "{name}: {out}");
    }
    let out = d.ok(&["exec", "a", "ping", "-c1", "-W2", "b"]);
    assert!(out.contains("1 packets received"), "{out}");
    // Not across networks: neither by name nor by address (from either
    // side, nor from the built-in bridge network).
    for name in ["a", "db", "b"] {
        let r = d.cli(&["exec", "c", "ping", "-c1", "-W1", name]);
        assert!(!r.status.success(), "c reached {name}");
    }
    let ip_of = |id: &str| {
        d.json(&["inspect", id])[0]["NetworkSettings"]["IPAddress"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (ip_a, ip_c) = (ip_of("a"), ip_of("c"));
    let r = d.cli(&["exec", "c", "ping", "-c1", "-W1", &ip_a]);
    assert!(!r.status.success(), "c reached {ip_a}");
    let r = d.cli(&["exec", "a", "ping", "-c1", "-W1", &ip_c]);
    assert!(!r.status.success(), "a reached {ip_c}");
    let r = d.cli(&[
        "run", "--rm", "--net", "bridge", "busybox", "ping", "-c1", "-W1", &ip_a,
    ]);
    assert!(!r.status.success(), "the bridge network reached {ip_a}");
    // The host still reaches them.
    let ping = Command::new("busybox")
        .args(["ping", "-c1", "-W2", &ip_a])
        .output()
        .unwrap();
    assert!(ping.status.success(), "the host cannot reach {ip_a}");
    // A container that joins later is known to those already there, and
    // one that leaves is forgotten.
    d.ok(&[
        "run", "-d", "--net", "front", "--name", "late", "busybox", "sleep", "100",
    ]);
    d.ok(&["exec", "a", "ping", "-c1", "-W2", "late"]);
    d.ok(&["rm", "-f", "late"]);
    let hosts = d.ok(&["exec", "a", "cat", "/etc/hosts"]);
    assert!(!hosts.contains("late"), "{hosts}");
    assert!(hosts.contains("db"), "{hosts}");

    let i = d.json(&["network", "inspect", "front"]);
    assert_eq!(i[0]["IPAM"]["Config"][0]["Subnet"], "10.93.17.0/24");
    assert_eq!(i[0]["Containers"]["a"]["Aliases"][0], "db");
    assert!(i[0]["Containers"]["b"]["IPv4Address"]
        .as_str()
        .unwrap()
        .starts_with("10.93.17."));
    let ins = d.json(&["inspect", "a"]);
    assert_eq!(ins[0]["HostConfig"]["NetworkMode"], "front");
    assert!(ins[0]["NetworkSettings"]["Networks"]["front"]["IPAddress"]
        .as_str()
        .unwrap()
        .starts_with("10.93.17."));

    // In use: refused, also for a stopped container that names it.
    let err = d.fails(&["network", "rm", "front"]);
    assert!(err.contains("in use") && err.contains("default/a"), "{err}");
    d.ok(&["rm", "-f", "a", "b"]);
    d.ok(&[
        "create", "--net", "front", "--name", "idle", "busybox", "true",
    ]);
    assert!(d
        .fails(&["network", "rm", "front"])
        .contains("default/idle"));
    d.ok(&["rm", "idle"]);
    d.ok(&["network", "rm", "front"]);
    assert!(!link_exists(&ba));
    assert!(!d.dir().join("state/cni/ipam/berth-net-front").exists());
    assert!(d
        .fails(&["run", "--rm", "--net", "front", "busybox", "true"])
        .contains("no network"));
    assert!(d
        .fails(&["network", "rm", "bridge"])
        .contains("cannot be removed"));
}

#[test]
fn nothing_is_left_after_rm_network_rm_and_a_crash() {
    let mut n = bridge_daemon("c", 20);
    let bridge = n.links[0].clone();
    let ub = format!("bnetU{}", tag());
    let d = &mut n.d;
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.93.21.0/24",
        "--bridge",
        &ub,
        "crashnet",
    ]);
    let ids = [
        format!("nw1x{}", tag()),
        format!("nw2x{}", tag()),
        format!("nw3x{}", tag()),
    ];
    d.ok(&[
        "run",
        "-d",
        "--name",
        &ids[0],
        "-p",
        "80",
        "busybox",
        "sh",
        "-c",
        &httpd("one"),
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        &ids[1],
        "--net",
        "crashnet",
        "-p",
        "80",
        "-p",
        "81/udp",
        "--network-alias",
        "two",
        "busybox",
        "sh",
        "-c",
        &httpd("two"),
    ]);
    d.ok(&[
        "run", "-d", "--name", &ids[2], "--net", "crashnet", "busybox", "sleep", "100",
    ]);
    let port_of = |d: &Daemon, id: &str| -> String {
        d.ok(&["port", id, "80"])
            .trim()
            .replace("0.0.0.0", "127.0.0.1")
    };
    wait_http(&port_of(d, &ids[0]), "one");
    wait_http(&port_of(d, &ids[1]), "two");
    // The rules berth's plugins made name the containers (NAT chains and
    // the port mappings' comments) or the subnets; remember their chains.
    let needles: Vec<String> = ids
        .iter()
        .map(|i| format!("id: \\\"{i}-"))
        .chain(["10.93.20.".into(), "10.93.21.".into(), ub.clone()])
        .collect();
    let made = rules_naming(&needles);
    let chains = chains_in(&made);
    assert!(made.iter().any(|l| l.contains("MASQUERADE")), "{made:#?}");
    assert!(made.iter().any(|l| l.contains("DNAT")), "{made:#?}");
    assert!(chains.len() >= 6, "{chains:?}");
    assert!(made.iter().any(|l| l.contains("BERTH-ISO")), "{made:#?}");
    assert_eq!(bridge_ports(&bridge), 1);
    assert_eq!(bridge_ports(&ub), 2);
    assert_eq!(leases(d).len(), 3);

    // A crash: the containers keep their network and ports; the daemon
    // finds them again. One of them dies while the daemon is down.
    d.kill9();
    let shim: i32 = std::fs::read_to_string(
        d.dir()
            .join(format!("state/tasks/default/{}/shim.pid", ids[2])),
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.respawn();
    wait_http(&port_of(d, &ids[0]), "one");
    wait_http(&port_of(d, &ids[1]), "two");
    wait_until("the dead task's network to go", PATIENCE, || {
        bridge_ports(&ub) == 1
    });
    assert_eq!(leases(d).len(), 2);
    let hosts = d.ok(&["exec", &ids[1], "cat", "/etc/hosts"]);
    assert!(!hosts.contains(&ids[2]), "{hosts}");

    // Removed after the crash: every rule, veth, lease and mount goes.
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut rm = vec!["rm", "-f"];
    rm.extend(&all);
    d.ok(&rm);
    d.ok(&["network", "rm", "crashnet"]);
    let mut needles = needles;
    needles.extend(chains.iter().cloned());
    let left = rules_naming(&needles);
    assert!(left.is_empty(), "rules left: {left:#?}");
    assert_eq!(bridge_ports(&bridge), 0);
    assert!(!link_exists(&ub), "{ub} left");
    assert!(leases(d).is_empty(), "{:?}", leases(d));
    assert!(netns_mounts(d).is_empty(), "{:?}", netns_mounts(d));
    assert_eq!(d.bundles_left(), 0);

    // A removal the crash cut short is finished at the next start.
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.93.22.0/24",
        "--bridge",
        &ub,
        "half",
    ]);
    let rec = d.root().join("networks/half.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
    v["removing"] = true.into();
    d.kill9();
    std::fs::write(&rec, serde_json::to_vec(&v).unwrap()).unwrap();
    d.respawn();
    assert!(!rec.exists());
    assert!(!link_exists(&ub));
}

#[test]
fn two_daemons_keep_their_own_bridges_subnets_and_rules() {
    // Default bridge and subnet: each root gets its own bridge and a free
    // subnet of the pool.
    let pool = "[network]\npool = \"10.93.64.0/20\"\n";
    let a = daemon(pool);
    a.d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "80",
        "busybox",
        "sh",
        "-c",
        &httpd("a"),
    ]);
    let b = daemon(pool);
    b.d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "80",
        "busybox",
        "sh",
        "-c",
        &httpd("b"),
    ]);
    let (ba, bb) = (builtin_bridge(&a.d).unwrap(), builtin_bridge(&b.d).unwrap());
    assert_ne!(ba, bb);
    assert!(
        ba.starts_with("berth-") && bb.starts_with("berth-"),
        "{ba} {bb}"
    );
    let subnet = |d: &Daemon| {
        d.json(&["network", "inspect", "bridge"])[0]["IPAM"]["Config"][0]["Subnet"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (sa, sb) = (subnet(&a.d), subnet(&b.d));
    assert_ne!(sa, sb);
    assert!(
        sa.starts_with("10.93.") && sb.starts_with("10.93."),
        "{sa} {sb}"
    );
    let port = |d: &Daemon| {
        d.ok(&["port", "web", "80"])
            .trim()
            .replace("0.0.0.0", "127.0.0.1")
    };
    let (pa, pb) = (port(&a.d), port(&b.d));
    wait_http(&pa, "a");
    wait_http(&pb, "b");
    // Removing a's "web" leaves b's rules and port alone.
    let b_rules = rules_naming(&[sb.trim_end_matches("0/24").to_owned()]);
    assert!(!b_rules.is_empty());
    a.d.ok(&["rm", "-f", "web"]);
    assert_eq!(
        rules_naming(&[sb.trim_end_matches("0/24").to_owned()]),
        b_rules
    );
    assert!(rules_naming(&[sa.trim_end_matches("0/24").to_owned()]).is_empty());
    wait_http(&pb, "b");
    assert!(http_get(&pa).is_err());
}

#[test]
fn publish_all_takes_the_images_exposed_ports() {
    use berth_integration_tests::fixtures::image::{
        tar_layout, Compression, ImageSpec, LayerSpec, Layout, Platform, PATH_ENV,
    };
    use berth_integration_tests::fixtures::rootfs;
    let n = bridge_daemon("e", 24);
    let d = &n.d;
    // An image that exposes 80/tcp and 5353/udp and serves on 80.
    let tmp = tempfile::tempdir().unwrap();
    let mut layout = Layout::create(&tmp.path().join("layout")).unwrap();
    let img = layout
        .put_image(&ImageSpec {
            layers: vec![LayerSpec {
                entries: rootfs::busybox().unwrap(),
                compression: Compression::Gzip,
            }],
            config: serde_json::json!({
                "Cmd": ["sh", "-c", httpd("exposed")],
                "Env": [PATH_ENV],
                "ExposedPorts": { "80/tcp": {}, "5353/udp": {} },
            }),
            platform: Platform::host(),
            docker: false,
        })
        .unwrap();
    layout.tag("exposed", &img.manifest);
    layout.finish().unwrap();
    let tar = tar_layout(&tmp.path().join("layout"), &tmp.path().join("e.tar"));
    d.ok(&["load", "-i", tar.to_str().unwrap()]);

    // -P alone: the bridge network, a free host port for each.
    d.ok(&["run", "-d", "--name", "all", "-P", "exposed"]);
    let ports = d.ok(&["port", "all"]);
    assert!(ports.contains("80/tcp -> 0.0.0.0:"), "{ports}");
    assert!(ports.contains("5353/udp -> 0.0.0.0:"), "{ports}");
    let web = d
        .ok(&["port", "all", "80"])
        .trim()
        .replace("0.0.0.0", "127.0.0.1");
    wait_http(&web, "exposed");
    // A -p for an exposed port takes its place.
    let fixed = TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "some",
        "-P",
        "-p",
        &format!("{fixed}:80"),
        "exposed",
    ]);
    assert_eq!(
        d.ok(&["port", "some", "80"]).trim(),
        format!("0.0.0.0:{fixed}")
    );
    wait_http(&format!("127.0.0.1:{fixed}"), "exposed");
    // Without -P, exposed ports are not published.
    d.ok(&["run", "-d", "--name", "none", "--net", "bridge", "exposed"]);
    assert_eq!(d.ok(&["port", "none"]), "");
}

#[test]
fn default_network_bridge_makes_bridge_the_default() {
    let bridge = format!("bnetd{}", tag());
    let mut n = daemon(&format!(
        "[network]\nbridge = \"{bridge}\"\nsubnet = \"10.93.26.0/24\"\ndefault_network = \"bridge\"\n"
    ));
    n.links.push(bridge);
    let d = &n.d;
    let out = d.ok(&[
        "run", "--rm", "busybox", "ip", "-4", "-o", "addr", "show", "eth0",
    ]);
    assert!(out.contains("10.93.26."), "{out}");
    // --net host still gives the host's network.
    let out = d.ok(&[
        "run", "--rm", "--net", "host", "busybox", "ip", "-4", "-o", "addr",
    ]);
    assert!(out.contains(&host_address()), "{out}");
}
