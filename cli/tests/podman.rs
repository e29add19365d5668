//! End to end with real podman: Debian's podman 4.x with its CNI backend
//! runs containers on a weft network through the `weft-cni` plugin.
//!
//! The test isolates podman completely: a `containers.conf` of its own
//! (`CONTAINERS_CONF`) selects the CNI backend, points `cni_plugin_dirs`
//! at a scratch dir holding `weft-cni` (and `/usr/lib/cni`),
//! `network_config_dir` at a scratch dir holding the test's conflist, and
//! keeps podman's temporary files, locks and event log in the scratch dir;
//! `--root`/`--runroot` keep images and containers there too (vfs driver,
//! so nothing is mounted). The image is a static busybox root made into a
//! tarball and `podman import`ed. On these machines podman also needs
//! `default_ulimits = []`, `cgroup_manager = "cgroupfs"`, `--runtime
//! /usr/sbin/runc` and `--ulimit host`.
//!
//! Outside the scratch dir podman still touches a few host paths, and the
//! test checks each is clean afterwards: the containers' namespaces under
//! `/run/netns`, runc's state `/run/runc/<id>` and libcni's cache
//! `/var/lib/cni/results/<network>-<id>-eth0`. The import runs in a private
//! mount namespace with a tmpfs on `/var/lib`, so that podman's host-wide
//! blob cache (`/var/lib/containers/cache`) is not written. While `b` runs,
//! conmon holds the published host port open in the host's namespace
//! (podman's port reservation); traffic only flows inside the test's
//! namespaces.
//!
//! The daemon runs in a "router" namespace R whose uplink `up0` is a veth
//! to an "outside" namespace O (192.168.98.1/24; weft owns 192.168.98.2;
//! `common::Uplinked`), so a published port (`-p`) is reached from O
//! through the uplink. Podman makes the containers' namespaces itself
//! (`/run/netns/netns-<uuid>`) and removes them with the containers.
//!
//! Needs root; skipped (with the reason printed) when podman is not
//! installed. Subnet index 98 (see `common`).

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};

use common::*;

const PLUGIN: &str = env!("CARGO_BIN_EXE_weft-cni");
const INDEX: u8 = 98;
/// Bound of one podman command (an import or a first run can be slow on a
/// loaded machine).
const PODMAN_TIMEOUT: Duration = Duration::from_secs(180);
/// The static busybox of Debian's busybox-static.
const BUSYBOX: &str = "/bin/busybox";
/// The OCI runtime the podman commands use.
const RUNC: &str = "/usr/sbin/runc";
/// The host port published in the test.
const HOST_PORT: u16 = 18098;

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}:\n{}", describe(out));
}

/// The path of `program` on `PATH`, if installed.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------
// An isolated podman
// ---------------------------------------------------------------------------

/// Podman confined to a scratch dir, with a conflist for one weft network
/// and a busybox image. Dropping it removes every container it made
/// (`podman rm -af`, which runs the plugin's `DEL`) and then the dir: drop
/// it before the daemon.
struct Podman {
    conf: PathBuf,
    root: PathBuf,
    runroot: PathBuf,
    image: String,
    dir: TempDir,
}

impl Podman {
    /// Writes the configuration for weft network `network` of the daemon
    /// at `socket` and imports the busybox image; `marker` is the content
    /// of the image's `/www/index.html`.
    fn new(network: &str, socket: &Path, marker: &str) -> Podman {
        let dir = TempDir::new("podman");
        let p = |name: &str| dir.path().join(name);
        let plugins = p("cni-bin");
        let netd = p("net.d");
        for d in [&plugins, &netd, &p("tmp"), &p("img")] {
            fs::create_dir_all(d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        }
        symlink(PLUGIN, plugins.join("weft-cni")).expect("link weft-cni into the plugin dir");
        let conf = p("containers.conf");
        let text = format!(
            r#"[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
tmp_dir = "{tmp}"
lock_type = "file"
events_logger = "file"
events_logfile_path = "{events}"
image_copy_tmp_dir = "{tmp}"
volume_path = "{volumes}"

[network]
network_backend = "cni"
cni_plugin_dirs = ["{plugins}", "/usr/lib/cni"]
network_config_dir = "{netd}"
"#,
            tmp = p("tmp").display(),
            events = p("events.log").display(),
            volumes = p("volumes").display(),
            plugins = plugins.display(),
            netd = netd.display(),
        );
        fs::write(&conf, text).expect("write containers.conf");
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [{
                "type": "weft-cni",
                "network": network,
                "socket": socket,
                "capabilities": {"portMappings": true, "aliases": true},
            }],
        });
        fs::write(
            netd.join(format!("{network}.conflist")),
            serde_json::to_vec_pretty(&conflist).expect("conflist JSON"),
        )
        .expect("write the conflist");
        let pod = Podman {
            conf,
            root: p("root"),
            runroot: p("run"),
            image: format!("localhost/{}", unique_name("busybox")),
            dir,
        };
        pod.import(marker);
        pod
    }

    /// A static busybox root (busybox, its applets as symlinks, a web page)
    /// as a tarball, imported as [`Self::image`].
    fn import(&self, marker: &str) {
        let img = self.dir.path().join("img");
        let bin = img.join("bin");
        fs::create_dir_all(&bin).expect("create img/bin");
        fs::create_dir_all(img.join("www")).expect("create img/www");
        fs::copy(BUSYBOX, bin.join("busybox")).unwrap_or_else(|e| {
            panic!("copy {BUSYBOX} ({e}): install busybox-static (a statically linked busybox)")
        });
        let file = host_exec(&["file", "-L", BUSYBOX]);
        if file.status.success() {
            assert!(
                text(&file.stdout).contains("statically linked"),
                "{BUSYBOX} is not static, so it cannot run alone in a container: \
                 install busybox-static\n{}",
                describe(&file)
            );
        }
        for applet in [
            "sh", "sleep", "ping", "nslookup", "httpd", "wget", "ip", "cat",
        ] {
            symlink("busybox", bin.join(applet)).expect("busybox applet link");
        }
        fs::write(img.join("www/index.html"), format!("{marker}\n")).expect("write index.html");
        let tar = self.dir.path().join("img.tar");
        let out = host_exec(&[
            "tar",
            "-C",
            img.to_str().expect("utf-8 path"),
            "-cf",
            tar.to_str().expect("utf-8 path"),
            ".",
        ]);
        assert_ok(&out, "tar of the busybox root");
        // The copy into storage would record blob digests in the host-wide
        // cache /var/lib/containers/cache (not moved by --root): import in
        // a private mount namespace where /var/lib is a throwaway tmpfs.
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount -t tmpfs -o size=8m weft-t-podman /var/lib && exec \"$@\"")
            .arg("sh");
        self.podman(&mut cmd)
            .args(["import", tar.to_str().expect("utf-8 path"), &self.image]);
        let out = run_timeout(&mut cmd, PODMAN_TIMEOUT);
        assert_ok(&out, "podman import of the busybox root");
    }

    /// Appends `podman --root … --runroot … --storage-driver vfs` with
    /// this podman's `CONTAINERS_CONF` to `cmd`.
    fn podman<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("CONTAINERS_CONF", &self.conf)
            .arg("podman")
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(["--storage-driver", "vfs"])
    }

    /// `podman --root … --runroot … --storage-driver vfs ARGS…` with this
    /// podman's `CONTAINERS_CONF`, bounded by [`PODMAN_TIMEOUT`].
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("env");
        self.podman(&mut cmd).args(args);
        run_timeout(&mut cmd, PODMAN_TIMEOUT)
    }

    /// A podman command that must succeed; its trimmed stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_ok(&out, &format!("podman {}", args.join(" ")));
        text(&out.stdout).trim().to_owned()
    }

    /// Starts container `name` on `network` with extra `podman run`
    /// options and a command; returns its ID.
    fn start(&self, name: &str, network: &str, options: &[&str], command: &[&str]) -> String {
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            "--runtime",
            RUNC,
            "--ulimit",
            "host",
        ];
        args.extend_from_slice(options);
        args.push(&self.image);
        args.extend_from_slice(command);
        self.ok(&args)
    }

    /// `podman exec NAME COMMAND…`.
    fn exec(&self, name: &str, command: &[&str]) -> Output {
        let mut args = vec!["exec", name];
        args.extend_from_slice(command);
        self.run(&args)
    }

    /// `podman exec` that must succeed within 3 tries (the first packets
    /// may be spent on ARP); its stdout.
    fn exec_ok(&self, name: &str, command: &[&str]) -> String {
        let mut out = self.exec(name, command);
        for _ in 0..2 {
            if out.status.success() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
            out = self.exec(name, command);
        }
        assert_ok(&out, &format!("podman exec {name} {}", command.join(" ")));
        text(&out.stdout)
    }

    /// The value of a Go template over `podman inspect NAME`.
    fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "--format", format, name])
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let out = self.run(&["rm", "-a", "-f", "-t", "0"]);
        if !out.status.success() {
            eprintln!("cleanup: podman rm -af failed:\n{}", describe(&out));
        }
    }
}

// ---------------------------------------------------------------------------
// What the daemon holds
// ---------------------------------------------------------------------------

/// Descriptors the daemon holds per TAP: the plain queue and the NAPI
/// queue (weft_os::napi; the daemon runs as root, so it can load the
/// steering program a TAP needs for its second queue).
const QUEUES_PER_TAP: usize = 2;

/// The `/dev/net/tun` descriptors process `pid` holds.
fn tap_fds(pid: u32) -> usize {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).expect("read the daemon's fds");
    fds.filter_map(Result::ok)
        .filter(|fd| {
            fs::read_link(fd.path()).is_ok_and(|target| target == Path::new("/dev/net/tun"))
        })
        .count()
}

/// The endpoints of `network`, by name.
fn endpoints(daemon: &Daemon, network: &str) -> Vec<Value> {
    json(daemon, &["endpoints", network])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn endpoint<'a>(eps: &'a [Value], name: &str) -> &'a Value {
    eps.iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no endpoint named {name}: {eps:?}"))
}

fn ip_of(ep: &Value) -> String {
    let cidr = ep["ip"].as_str().unwrap_or_default();
    cidr.split('/').next().unwrap_or_default().to_owned()
}

/// The address `nslookup NAME SERVER` (busybox) printed for `name`.
fn looked_up(output: &str, name: &str) -> Option<String> {
    let mut lines = output.lines().skip_while(|l| !l.contains(name));
    lines.find_map(|l| {
        l.trim()
            .strip_prefix("Address:")
            .map(|a| a.trim().to_owned())
    })
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

#[test]
fn podman_containers_on_a_weft_network() {
    require_root!();
    if which("podman").is_none() {
        println!(
            "skipped: podman is not installed \
             (apt-get install podman runc containernetworking-plugins busybox-static)"
        );
        return;
    }
    let w = Uplinked::new(INDEX);
    let net = unique_name("pnet");
    create_network(&w.daemon, &net, &subnet(INDEX, 1), &[]);
    let gateway = addr(INDEX, 1, 1);
    let marker = unique_name("hello");
    let pod = Podman::new(&net, &w.daemon.socket, &marker);

    // Two containers, one serving HTTP on port 80 published as HOST_PORT.
    let a = unique_name("pa");
    let b = unique_name("pb");
    // a asks for its address and MAC (podman passes them in CNI_ARGS;
    // podman 4.3 then passes no aliases or port mappings for it).
    let static_ip = addr(INDEX, 1, 50);
    let static_mac = "02:aa:bb:cc:dd:50";
    let id_a = pod.start(
        &a,
        &net,
        &["--ip", &static_ip, "--mac-address", static_mac],
        &["sleep", "600"],
    );
    let published = format!("{HOST_PORT}:80");
    let id_b = pod.start(
        &b,
        &net,
        &["-p", &published],
        &["httpd", "-f", "-p", "80", "-h", "/www"],
    );

    // Each is an endpoint named after the container, owned by it, with an
    // address from the subnet, in the namespace podman made.
    let eps = endpoints(&w.daemon, &net);
    assert_eq!(eps.len(), 2, "{eps:?}");
    let (ep_a, ep_b) = (endpoint(&eps, &a), endpoint(&eps, &b));
    for (ep, id) in [(ep_a, &id_a), (ep_b, &id_b)] {
        assert_eq!(
            ep["owner"],
            json!({"network": net, "container_id": id, "ifname": "eth0"})
        );
        assert!(
            ep["ip"]
                .as_str()
                .is_some_and(|ip| ip.starts_with(&format!("10.{INDEX}.1."))),
            "{ep}"
        );
        assert!(
            ep["netns"]
                .as_str()
                .is_some_and(|ns| ns.starts_with("/run/netns/")),
            "{ep}"
        );
    }
    let (ip_a, ip_b) = (ip_of(ep_a), ip_of(ep_b));
    assert_eq!(ip_a, static_ip);
    assert_eq!(ep_a["mac"], static_mac);
    // Podman saw the plugin's result: the container's address and MAC.
    let shown = pod.inspect(&a, &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}} {{{{(index .NetworkSettings.Networks \"{net}\").MacAddress}}}}"));
    assert_eq!(
        shown,
        format!("{ip_a} {}", ep_a["mac"].as_str().unwrap_or_default()),
        "podman inspect"
    );
    // Inside the container, eth0 is weft's TAP with that address.
    let link = pod.exec_ok(&a, &["ip", "addr", "show", "eth0"]);
    assert!(link.contains(&format!("inet {ip_a}/24")), "{link}");

    // They reach the gateway and each other.
    pod.exec_ok(&a, &["ping", "-c", "1", "-W", "2", &gateway]);
    pod.exec_ok(&a, &["ping", "-c", "1", "-W", "2", &ip_b]);
    pod.exec_ok(&b, &["ping", "-c", "1", "-W", "2", &ip_a]);

    // Names resolve at the gateway: the container's name and the short ID
    // podman gives as an alias; ping by name goes through it too.
    let out = pod.exec_ok(&a, &["nslookup", &b, &gateway]);
    assert_eq!(looked_up(&out, &b), Some(ip_b.clone()), "{out}");
    let out = pod.exec_ok(&b, &["nslookup", &a, &gateway]);
    assert_eq!(looked_up(&out, &a), Some(ip_a.clone()), "{out}");
    let short_b = &id_b[..12];
    let out = pod.exec_ok(&a, &["nslookup", short_b, &gateway]);
    assert_eq!(looked_up(&out, short_b), Some(ip_b.clone()), "{out}");
    let out = pod.exec_ok(&a, &["ping", "-c", "1", "-W", "2", &b]);
    assert!(out.contains(&ip_b), "ping {b} went elsewhere:\n{out}");
    let page = pod.exec_ok(&a, &["wget", "-q", "-O", "-", &format!("http://{b}/")]);
    assert_eq!(page.trim(), marker);

    // The outside is reached through the uplink (masquerade)…
    pod.exec_ok(&a, &["ping", "-c", "1", "-W", "2", &w.outside_ip()]);
    // …and the published port reaches b from the outside.
    let url = format!("http://{}:{HOST_PORT}/", w.uplink_ip());
    let fetched = wait_for(Duration::from_secs(10), || {
        let out = w.o.exec(&["curl", "-sS", "--max-time", "3", &url]);
        out.status.success().then(|| text(&out.stdout))
    });
    assert_eq!(
        fetched.as_deref().map(str::trim),
        Some(marker.as_str()),
        "curl {url} from the outside namespace"
    );

    // `podman restart` runs DEL then ADD for the same container: b comes
    // back under its name, still published.
    let before = endpoint(&endpoints(&w.daemon, &net), &b).clone();
    pod.ok(&["restart", "-t", "0", &b]);
    let eps = endpoints(&w.daemon, &net);
    assert_eq!(eps.len(), 2, "{eps:?}");
    let after = endpoint(&eps, &b);
    assert_eq!(after["owner"], before["owner"]);
    assert_ne!(after["netns"], before["netns"], "a new namespace");
    let fetched = wait_for(Duration::from_secs(10), || {
        let out = w.o.exec(&["curl", "-sS", "--max-time", "3", &url]);
        out.status.success().then(|| text(&out.stdout))
    });
    assert_eq!(
        fetched.as_deref().map(str::trim),
        Some(marker.as_str()),
        "curl {url} after podman restart"
    );
    let ep_b = after;

    // `podman rm` runs DEL: no endpoint, no TAP, no namespace, no CNI
    // cache entry is left.
    assert_eq!(
        tap_fds(w.daemon.pid()),
        2 * QUEUES_PER_TAP,
        "the daemon's TAP queues before rm"
    );
    let netns: Vec<PathBuf> = [ep_a, ep_b]
        .iter()
        .map(|e| PathBuf::from(e["netns"].as_str().unwrap_or_default()))
        .collect();
    pod.ok(&["rm", "-f", "-t", "0", &a, &b]);
    assert_eq!(endpoints(&w.daemon, &net), Vec::<Value>::new());
    assert_eq!(tap_fds(w.daemon.pid()), 0, "TAPs left open after podman rm");
    for ns in &netns {
        assert!(!ns.exists(), "{} left behind", ns.display());
    }
    for id in [&id_a, &id_b] {
        let cache = Path::new("/var/lib/cni/results").join(format!("{net}-{id}-eth0"));
        assert!(!cache.exists(), "{} left behind", cache.display());
    }
    for id in [&id_a, &id_b] {
        let state = Path::new("/run/runc").join(id);
        assert!(!state.exists(), "{} left behind", state.display());
    }
    assert_eq!(pod.ok(&["ps", "-a", "-q"]), "");
}
