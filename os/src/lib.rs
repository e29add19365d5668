//! All of weft's operating-system code: TAP, network namespaces, packet
//! sockets, rtnetlink, UDP with GSO/GRO; the only crate with `unsafe`.
//!
//! Linux only. Everything else in weft (the forwarding core, the VXLAN and
//! NAT logic, DNS) is I/O-free and talks to the kernel through this crate.
//!
//! - [`tap`]: TAP devices on `/dev/net/tun` ([`Tap`]), optionally with the
//!   virtio-net header for checksum/segmentation offloads ([`VirtioNetHdr`]).
//! - [`netlink`]: a minimal synchronous rtnetlink client ([`Netlink`]) for
//!   link, address and route configuration.
//! - [`linkstats`]: a link's packet and drop counters read inside another
//!   namespace ([`linkstats::link_stats_in`]), for `weft stats`.
//! - [`napi`]: a TAP's second queue, whose receive processing runs in a
//!   kernel thread of its own ([`napi::NapiQueue`], threaded NAPI).
//! - [`netns`]: running a closure inside another network namespace on a
//!   dedicated thread ([`run_in_netns`]).
//! - [`packet`]: `AF_PACKET` sockets bound to an interface, for uplinks
//!   ([`packet::PacketSocket`]).
//! - [`provision`]: creating and configuring a TAP port inside a workload's
//!   namespace ([`provision::provision_tap`]).
//! - [`privilege`]: whether this process has `CAP_NET_ADMIN` over the host
//!   (what "root" means to weft's defaults).
//! - [`userns`]: the rootless helper, a single-threaded child that enters a
//!   user-owned namespace's user namespace and provisions the TAP there.
//! - [`hostsock`]: peek offsets, copy-free discard and send-queue depth
//!   for the socket uplink's host TCP sockets.
//! - [`udp`]: the VTEP's UDP sockets, with batched receive, UDP GSO and GRO
//!   ([`udp::VxlanSocket`]).
//!
//! The rest of the workspace is `#![forbid(unsafe_code)]`; here every
//! `unsafe` block carries a `// SAFETY:` comment (the workspace denies
//! `clippy::undocumented_unsafe_blocks`), and libraries (`socket2`, `nix`,
//! `netlink-packet-route`) are used wherever they cover a call.
//!
//! Everything here acts on the network namespace of the calling thread;
//! [`run_in_netns`] is how to act on another one. File descriptors created
//! inside a namespace stay bound to it and can be used from any thread.

pub mod affinity;
mod cmsg;
pub mod ethtool;
pub mod hostsock;
pub mod linkstats;
pub mod napi;
pub mod netlink;
pub mod netns;
pub mod packet;
pub mod peer;
pub mod privilege;
pub mod provision;
mod rco_guard;
pub mod sender_cpus;
pub mod tap;
pub mod udp;
pub mod userns;

pub use netlink::{LinkStats, Netlink, NetlinkError};
pub use netns::{check_netns, netns_path_for_name, netns_path_for_pid, run_in_netns, NetnsError};
pub use tap::{Tap, TapError, TapOptions, VirtioNetHdr};

/// An error's message followed by its sources', joined by `: `: what a
/// person needs from an OS error chain in one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Helpers for tests that need a scratch network namespace.
#[cfg(test)]
pub(crate) mod testns {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    pub(crate) use json::Json;

    static COUNTER: AtomicU32 = AtomicU32::new(0);

    /// Whether the tests run as root (needed for namespaces and TAPs).
    pub(crate) fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// A network namespace created with `ip netns add` and deleted with
    /// `ip netns del` on drop (also when the test panics).
    pub(crate) struct TestNs {
        name: String,
        path: PathBuf,
    }

    impl TestNs {
        /// Creates `weft-t<pid>-<n>-<tag>`, or returns `None` (after printing
        /// why) when not running as root.
        pub(crate) fn new(tag: &str) -> Option<TestNs> {
            if !is_root() {
                eprintln!("skipping test {tag}: needs root for network namespaces");
                return None;
            }
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("weft-t{}-{n}-{tag}", std::process::id());
            run("ip", &["netns", "add", &name]);
            let path = super::netns_path_for_name(&name).unwrap();
            Some(TestNs { name, path })
        }

        pub(crate) fn name(&self) -> &str {
            &self.name
        }

        pub(crate) fn path(&self) -> &Path {
            &self.path
        }

        /// Whether `ip link show dev IFNAME` finds the interface.
        pub(crate) fn link_exists(&self, ifname: &str) -> bool {
            Command::new("ip")
                .args(["-n", &self.name, "link", "show", "dev", ifname])
                .output()
                .expect("run ip")
                .status
                .success()
        }

        /// Waits up to two seconds for `ifname` to disappear.
        pub(crate) fn wait_link_gone(&self, ifname: &str) -> bool {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                if !self.link_exists(ifname) {
                    return true;
                }
                if Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }

    fn run(cmd: &str, args: &[&str]) -> String {
        let out = Command::new(cmd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("failed to run {cmd} {args:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Output of `ip -n NS ARGS...`.
    pub(crate) fn ip_text(ns: &TestNs, args: &[&str]) -> String {
        let mut all = vec!["-n", ns.name()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Output of `tc -n NS ARGS...`.
    pub(crate) fn tc_text(ns: &TestNs, args: &[&str]) -> String {
        let mut all = vec!["-n", ns.name()];
        all.extend_from_slice(args);
        run("tc", &all)
    }

    /// Parsed output of `ip -n NS -j ARGS...`.
    pub(crate) fn ip_json(ns: &TestNs, args: &[&str]) -> Json {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        let text = ip_text(ns, &all);
        Json::parse(&text).unwrap_or_else(|| panic!("bad JSON from ip: {text}"))
    }

    /// Just enough JSON to read `ip -j` output (no serde_json in this crate).
    pub(crate) mod json {
        use std::ops::Index;

        #[derive(Debug, Clone, PartialEq)]
        pub(crate) enum Json {
            Null,
            Bool(bool),
            Num(f64),
            Str(String),
            Arr(Vec<Json>),
            Obj(Vec<(String, Json)>),
        }

        static NULL: Json = Json::Null;

        impl Json {
            pub(crate) fn parse(text: &str) -> Option<Json> {
                let mut p = Parser {
                    s: text.as_bytes(),
                    i: 0,
                };
                let v = p.value()?;
                p.ws();
                (p.i == p.s.len()).then_some(v)
            }

            pub(crate) fn as_str(&self) -> Option<&str> {
                match self {
                    Json::Str(s) => Some(s),
                    _ => None,
                }
            }

            pub(crate) fn as_u64(&self) -> Option<u64> {
                match self {
                    Json::Num(n) if *n >= 0.0 && n.fract() == 0.0 => Some(*n as u64),
                    _ => None,
                }
            }

            pub(crate) fn as_array(&self) -> &[Json] {
                match self {
                    Json::Arr(a) => a,
                    _ => &[],
                }
            }

            /// Whether this is an array containing the string `s`.
            pub(crate) fn contains_str(&self, s: &str) -> bool {
                self.as_array().iter().any(|v| v.as_str() == Some(s))
            }
        }

        impl Index<usize> for Json {
            type Output = Json;
            fn index(&self, i: usize) -> &Json {
                self.as_array().get(i).unwrap_or(&NULL)
            }
        }

        impl Index<&str> for Json {
            type Output = Json;
            fn index(&self, key: &str) -> &Json {
                match self {
                    Json::Obj(fields) => fields
                        .iter()
                        .find(|(k, _)| k == key)
                        .map(|(_, v)| v)
                        .unwrap_or(&NULL),
                    _ => &NULL,
                }
            }
        }

        impl PartialEq<&str> for Json {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == Some(*other)
            }
        }

        impl PartialEq<u64> for Json {
            fn eq(&self, other: &u64) -> bool {
                self.as_u64() == Some(*other)
            }
        }

        struct Parser<'a> {
            s: &'a [u8],
            i: usize,
        }

        impl Parser<'_> {
            fn ws(&mut self) {
                while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
                    self.i += 1;
                }
            }

            fn eat(&mut self, c: u8) -> bool {
                self.ws();
                if self.s.get(self.i) == Some(&c) {
                    self.i += 1;
                    true
                } else {
                    false
                }
            }

            fn lit(&mut self, word: &str, v: Json) -> Option<Json> {
                self.s[self.i..].starts_with(word.as_bytes()).then(|| {
                    self.i += word.len();
                    v
                })
            }

            fn value(&mut self) -> Option<Json> {
                self.ws();
                match *self.s.get(self.i)? {
                    b'{' => {
                        self.i += 1;
                        let mut fields = Vec::new();
                        if self.eat(b'}') {
                            return Some(Json::Obj(fields));
                        }
                        loop {
                            self.ws();
                            let k = self.string()?;
                            if !self.eat(b':') {
                                return None;
                            }
                            fields.push((k, self.value()?));
                            if self.eat(b'}') {
                                return Some(Json::Obj(fields));
                            }
                            if !self.eat(b',') {
                                return None;
                            }
                        }
                    }
                    b'[' => {
                        self.i += 1;
                        let mut items = Vec::new();
                        if self.eat(b']') {
                            return Some(Json::Arr(items));
                        }
                        loop {
                            items.push(self.value()?);
                            if self.eat(b']') {
                                return Some(Json::Arr(items));
                            }
                            if !self.eat(b',') {
                                return None;
                            }
                        }
                    }
                    b'"' => self.string().map(Json::Str),
                    b't' => self.lit("true", Json::Bool(true)),
                    b'f' => self.lit("false", Json::Bool(false)),
                    b'n' => self.lit("null", Json::Null),
                    _ => {
                        let start = self.i;
                        while self.i < self.s.len()
                            && matches!(
                                self.s[self.i],
                                b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                            )
                        {
                            self.i += 1;
                        }
                        std::str::from_utf8(&self.s[start..self.i])
                            .ok()?
                            .parse()
                            .ok()
                            .map(Json::Num)
                    }
                }
            }

            fn string(&mut self) -> Option<String> {
                if self.s.get(self.i) != Some(&b'"') {
                    return None;
                }
                self.i += 1;
                let mut out = Vec::new();
                loop {
                    let c = *self.s.get(self.i)?;
                    self.i += 1;
                    match c {
                        b'"' => return String::from_utf8(out).ok(),
                        b'\\' => {
                            let e = *self.s.get(self.i)?;
                            self.i += 1;
                            match e {
                                b'n' => out.push(b'\n'),
                                b't' => out.push(b'\t'),
                                b'r' => out.push(b'\r'),
                                b'b' => out.push(8),
                                b'f' => out.push(12),
                                b'u' => {
                                    let hex = std::str::from_utf8(self.s.get(self.i..self.i + 4)?)
                                        .ok()?;
                                    self.i += 4;
                                    let ch = char::from_u32(u32::from_str_radix(hex, 16).ok()?)
                                        .unwrap_or('\u{fffd}');
                                    out.extend_from_slice(ch.to_string().as_bytes());
                                }
                                other => out.push(other),
                            }
                        }
                        other => out.push(other),
                    }
                }
            }
        }

        #[test]
        fn parses_ip_style_json() {
            let v = Json::parse(
                r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"mtu":65536,"x":null,"y":true,"s":"a\"b\u0041","n":-1.5e1}]"#,
            )
            .unwrap();
            assert_eq!(v[0]["ifname"], "lo");
            assert_eq!(v[0]["mtu"], 65536u64);
            assert!(v[0]["flags"].contains_str("UP"));
            assert_eq!(v[0]["s"], "a\"bA");
            assert_eq!(v[0]["n"], Json::Num(-15.0));
            assert_eq!(v[1], Json::Null);
            assert_eq!(Json::parse("[1,]"), None);
            assert_eq!(Json::parse("[] x"), None);
        }
    }
}
