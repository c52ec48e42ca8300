//! crew's one nftables table: what a dyno may reach.
//!
//! The whole table is written as one `nft -f` script that first makes the
//! table (so that deleting it cannot fail), deletes it, and makes it again:
//! one transaction, so a table a killed crew left behind is replaced wholly
//! and no moment passes without the walls. No other table is touched. The
//! `nft` program is the tool here as it is for the `nftables` crate, which
//! also feeds it a script (in JSON); the text form is the one readers of
//! this code know.

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::Ipv4Range;

/// What the rules are made from.
pub(crate) struct Walls<'a> {
    /// The table's name (in the `inet` family), also the bridge's name.
    pub table: &'a str,
    pub bridge: &'a str,
    pub range: Ipv4Range,
    pub gateway: Ipv4Addr,
    /// Whether dynos may send DNS to the gateway (where crew's forwarder is).
    pub dns_on_gateway: bool,
}

impl Walls<'_> {
    /// The script that replaces the table.
    ///
    /// - input: from the bridge, only replies to the host's own connections
    ///   (the router's, the probe's) and, with a forwarder, DNS to the
    ///   gateway. Any destination address the host owns, on any interface
    ///   and loopback's too, is delivered through input, so this one chain
    ///   keeps dynos off every host service.
    /// - forward: nothing starts a connection towards a dyno (not the
    ///   outside, not another dyno routed through the gateway); dynos reach
    ///   beyond the host, but not link-local addresses (cloud metadata
    ///   services live there) nor the dyno range itself.
    /// - postrouting: what leaves the dyno range for another interface is
    ///   masqueraded.
    pub(crate) fn script(&self) -> String {
        let Walls {
            table,
            bridge,
            range,
            gateway,
            dns_on_gateway,
        } = self;
        let dns = if *dns_on_gateway {
            format!(
                "\t\tiifname \"{bridge}\" ip daddr {gateway} meta l4proto {{ tcp, udp }} th dport 53 accept\n"
            )
        } else {
            String::new()
        };
        format!(
            "table inet {table} {{}}\n\
             delete table inet {table}\n\
             table inet {table} {{\n\
             \tchain input {{\n\
             \t\ttype filter hook input priority filter; policy accept;\n\
             \t\tiifname \"{bridge}\" ct state established,related accept\n\
             {dns}\
             \t\tiifname \"{bridge}\" drop\n\
             \t}}\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\toifname \"{bridge}\" ct state established,related accept\n\
             \t\toifname \"{bridge}\" drop\n\
             \t\tiifname \"{bridge}\" ip daddr {{ {range}, 169.254.0.0/16 }} drop\n\
             \t\tiifname \"{bridge}\" meta nfproto ipv6 drop\n\
             \t\tiifname \"{bridge}\" accept\n\
             \t}}\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tip saddr {range} oifname != \"{bridge}\" masquerade\n\
             \t}}\n\
             }}\n"
        )
    }
}

/// Inside a dyno's namespace: TCP arriving on `eth0` goes to the same port
/// on the dyno's loopback, so a web server bound to 127.0.0.1 is reached as
/// one bound to every address is. Needs `route_localnet` on `eth0`. The
/// pool writes it over netlink ([`super::nftables`]), not with `nft`; this
/// text is what `nft list ruleset` shows there, and a test holds the two
/// together.
#[cfg(test)]
pub(crate) const LOOPBACK_FORWARD: &str = "table ip crew_dyno {\n\
     \tchain prerouting {\n\
     \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
     \t\tiifname \"eth0\" meta l4proto tcp dnat to 127.0.0.1\n\
     \t}\n\
     }\n";

/// Runs an nft script in one transaction.
pub(crate) fn apply(script: &str) -> io::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run nft (install the nftables package): {e}"),
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "nft refused crew's rules: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Deletes the table, if it is there.
pub(crate) fn remove(table: &str) -> io::Result<()> {
    apply(&format!(
        "table inet {table} {{}}\ndelete table inet {table}\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walls(dns: bool) -> String {
        Walls {
            table: "crew0",
            bridge: "crew0",
            range: Ipv4Range::parse("10.213.0.0/16").unwrap(),
            gateway: Ipv4Addr::new(10, 213, 0, 1),
            dns_on_gateway: dns,
        }
        .script()
    }

    #[test]
    fn the_table_is_replaced_in_one_script() {
        let script = walls(false);
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines[0], "table inet crew0 {}");
        assert_eq!(lines[1], "delete table inet crew0");
        assert_eq!(lines[2], "table inet crew0 {");
        assert!(!script.contains("dport 53"), "{script}");
        assert!(script.contains("ip saddr 10.213.0.0/16 oifname != \"crew0\" masquerade"));
    }

    #[test]
    fn dns_to_the_gateway_is_let_in_only_with_a_forwarder() {
        let script = walls(true);
        let input = script.split("chain forward").next().unwrap();
        let dns = input.find("th dport 53 accept").expect("a DNS rule");
        let drop = input.find("iifname \"crew0\" drop").expect("the drop");
        assert!(dns < drop, "{script}");
        assert!(input.contains("ip daddr 10.213.0.1 "), "{script}");
    }
}
