//! The dyno namespace's one nf_tables rule, written over netlink by crew
//! itself rather than by an `nft` process.
//!
//! Why by hand: the pool makes a namespace for every networked dyno, and
//! `nft -f` there (a process to start, a dynamic binary to load, a script to
//! parse) cost about 5 ms of CPU per namespace, more than the whole start of
//! an isolated dyno, on the same cores as the dyno starting next. What the
//! rule needs of the nf_tables netlink protocol is small: one batch of three
//! messages (table, chain, rule) made of a handful of attributes. The crates
//! that speak it either wrap libnftnl (a C library to link) or drive `nft`
//! (the cost this module removes), so the bytes are laid out here, as in
//! `include/uapi/linux/netfilter/nf_tables.h`.
//!
//! The rule is [`super::firewall::LOOPBACK_FORWARD`] (the `nft` text stays as
//! its description; a root test checks that `nft list ruleset` in a namespace
//! this module wrote shows exactly that text).

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

// nfnetlink (linux/netfilter/nfnetlink.h, linux/netlink.h).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_APPEND: u16 = 0x800;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_EXCL: u16 = 0x200;
const NLA_F_NESTED: u16 = 0x8000;
const AF_UNSPEC: u8 = 0;
const NFPROTO_IPV4: u8 = 2;

// nf_tables messages and attributes (linux/netfilter/nf_tables.h).
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NF_INET_PRE_ROUTING: u32 = 0;
/// `priority dstnat`.
const NF_IP_PRI_NAT_DST: i32 = -100;
const NF_ACCEPT: u32 = 1;
const NFT_REG_1: u32 = 1;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CMP_EQ: u32 = 0;
const NFT_NAT_DNAT: u32 = 1;
const IFNAMSIZ: usize = 16;
const IPPROTO_TCP: u8 = 6;

/// The table and chain of [`super::firewall::LOOPBACK_FORWARD`].
const TABLE: &str = "crew_dyno";
const CHAIN: &str = "prerouting";

/// Writes the loopback forward (TCP arriving on `eth0` goes to 127.0.0.1,
/// same port) into the calling thread's network namespace, in one
/// transaction: all of it or, on an error, none; where the table is
/// already, it fails (`AlreadyExists`) and changes nothing.
pub(crate) fn apply_loopback_forward() -> io::Result<()> {
    let batch = loopback_forward_batch();
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.send(&batch.bytes, 0)?;
    // The kernel handles the batch within `send` and queues one answer per
    // message that asked for one (and an error for any that failed) before
    // `send` returns: whatever is not queued now never comes, so reading
    // without blocking cannot wait forever.
    socket.set_non_blocking(true)?;
    let mut buffer = vec![0u8; 16 * 1024];
    let mut acknowledged = 0;
    while acknowledged < batch.acks {
        let n = match socket.recv(&mut &mut buffer[..], 0) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::other(format!(
                    "nf_tables answered {acknowledged} of the {} messages of the \
                     loopback forward",
                    batch.acks
                )));
            }
            Err(e) => return Err(e),
        };
        let mut offset = 0;
        while offset + 16 <= n {
            let length = u32::from_ne_bytes(read4(&buffer, offset)) as usize;
            let kind = u16::from_ne_bytes([buffer[offset + 4], buffer[offset + 5]]);
            if length < 16 || offset + length > n {
                return Err(io::Error::other("an unreadable nf_tables answer"));
            }
            if kind == NLMSG_ERROR {
                if length < 20 {
                    return Err(io::Error::other("a short nf_tables acknowledgement"));
                }
                let code = i32::from_ne_bytes(read4(&buffer, offset + 16));
                if code != 0 {
                    let error = io::Error::from_raw_os_error(-code);
                    return Err(io::Error::new(
                        error.kind(),
                        format!("nf_tables refused the loopback forward: {error}"),
                    ));
                }
                acknowledged += 1;
            }
            offset += (length + 3) & !3;
        }
    }
    Ok(())
}

fn read4(buffer: &[u8], at: usize) -> [u8; 4] {
    [buffer[at], buffer[at + 1], buffer[at + 2], buffer[at + 3]]
}

/// A batch and how many acknowledgements it asks for.
struct Batch {
    bytes: Vec<u8>,
    acks: usize,
}

/// `table ip crew_dyno { chain prerouting { type nat hook prerouting
/// priority dstnat; policy accept; iifname "eth0" meta l4proto tcp dnat to
/// 127.0.0.1 } }`, as `nft` sends it (`nft --debug=netlink`):
///
/// ```text
/// [ meta load iifname => reg 1 ]
/// [ cmp eq reg 1 0x30687465 0x00000000 0x00000000 0x00000000 ]
/// [ meta load l4proto => reg 1 ]
/// [ cmp eq reg 1 0x00000006 ]
/// [ immediate reg 1 0x0100007f ]
/// [ nat dnat ip addr_min reg 1 ]
/// ```
fn loopback_forward_batch() -> Batch {
    let mut eth0 = [0u8; IFNAMSIZ];
    eth0[..4].copy_from_slice(b"eth0");
    let expressions = [
        expression("meta", |e| {
            e.u32(NFTA_META_KEY, NFT_META_IIFNAME);
            e.u32(NFTA_META_DREG, NFT_REG_1);
        }),
        expression("cmp", |e| {
            e.u32(NFTA_CMP_SREG, NFT_REG_1);
            e.u32(NFTA_CMP_OP, NFT_CMP_EQ);
            e.nested(NFTA_CMP_DATA, |d| d.bytes(NFTA_DATA_VALUE, &eth0));
        }),
        expression("meta", |e| {
            e.u32(NFTA_META_KEY, NFT_META_L4PROTO);
            e.u32(NFTA_META_DREG, NFT_REG_1);
        }),
        expression("cmp", |e| {
            e.u32(NFTA_CMP_SREG, NFT_REG_1);
            e.u32(NFTA_CMP_OP, NFT_CMP_EQ);
            e.nested(NFTA_CMP_DATA, |d| d.bytes(NFTA_DATA_VALUE, &[IPPROTO_TCP]));
        }),
        expression("immediate", |e| {
            e.u32(NFTA_IMMEDIATE_DREG, NFT_REG_1);
            e.nested(NFTA_IMMEDIATE_DATA, |d| {
                d.bytes(NFTA_DATA_VALUE, &[127, 0, 0, 1]);
            });
        }),
        expression("nat", |e| {
            e.u32(NFTA_NAT_TYPE, NFT_NAT_DNAT);
            e.u32(NFTA_NAT_FAMILY, u32::from(NFPROTO_IPV4));
            e.u32(NFTA_NAT_REG_ADDR_MIN, NFT_REG_1);
        }),
    ];

    let mut bytes = Vec::with_capacity(512);
    let mut sequence = 0;
    let mut message = |kind: u16, flags: u16, family: u8, res_id: u16, body: Attributes| {
        sequence += 1;
        let length = 16 + 4 + body.0.len();
        bytes.extend_from_slice(&(length as u32).to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&(sequence as u32).to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        // struct nfgenmsg: family, version 0, res_id (big-endian).
        bytes.push(family);
        bytes.push(0);
        bytes.extend_from_slice(&res_id.to_be_bytes());
        bytes.extend_from_slice(&body.0);
    };
    let nftables = |message: u16| (NFNL_SUBSYS_NFTABLES << 8) | message;
    let create = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK;

    message(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        AF_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
        Attributes::default(),
    );
    let mut table = Attributes::default();
    table.string(NFTA_TABLE_NAME, TABLE);
    // A table already there fails the whole batch (a second rule would
    // otherwise be appended to the chain).
    message(
        nftables(NFT_MSG_NEWTABLE),
        create | NLM_F_EXCL,
        NFPROTO_IPV4,
        0,
        table,
    );
    let mut chain = Attributes::default();
    chain.string(NFTA_CHAIN_TABLE, TABLE);
    chain.string(NFTA_CHAIN_NAME, CHAIN);
    chain.nested(NFTA_CHAIN_HOOK, |h| {
        h.u32(NFTA_HOOK_HOOKNUM, NF_INET_PRE_ROUTING);
        h.u32(NFTA_HOOK_PRIORITY, NF_IP_PRI_NAT_DST as u32);
    });
    chain.u32(NFTA_CHAIN_POLICY, NF_ACCEPT);
    chain.string(NFTA_CHAIN_TYPE, "nat");
    message(nftables(NFT_MSG_NEWCHAIN), create, NFPROTO_IPV4, 0, chain);
    let mut rule = Attributes::default();
    rule.string(NFTA_RULE_TABLE, TABLE);
    rule.string(NFTA_RULE_CHAIN, CHAIN);
    rule.nested(NFTA_RULE_EXPRESSIONS, |list| {
        for e in &expressions {
            list.nested(NFTA_LIST_ELEM, |elem| elem.0.extend_from_slice(&e.0));
        }
    });
    message(
        nftables(NFT_MSG_NEWRULE),
        create | NLM_F_APPEND,
        NFPROTO_IPV4,
        0,
        rule,
    );
    message(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        AF_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
        Attributes::default(),
    );
    Batch { bytes, acks: 3 }
}

/// The attributes of one expression (`NFTA_EXPR_NAME`, `NFTA_EXPR_DATA`).
fn expression(name: &str, data: impl FnOnce(&mut Attributes)) -> Attributes {
    let mut e = Attributes::default();
    e.string(NFTA_EXPR_NAME, name);
    e.nested(NFTA_EXPR_DATA, data);
    e
}

/// Netlink attributes, laid end to end, each padded to four bytes.
#[derive(Default)]
struct Attributes(Vec<u8>);

impl Attributes {
    fn bytes(&mut self, kind: u16, payload: &[u8]) {
        let length = 4 + payload.len();
        self.0.extend_from_slice(&(length as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.pad();
    }

    /// A NUL-terminated string.
    fn string(&mut self, kind: u16, text: &str) {
        let mut payload = Vec::with_capacity(text.len() + 1);
        payload.extend_from_slice(text.as_bytes());
        payload.push(0);
        self.bytes(kind, &payload);
    }

    /// nf_tables numbers are big-endian.
    fn u32(&mut self, kind: u16, value: u32) {
        self.bytes(kind, &value.to_be_bytes());
    }

    fn nested(&mut self, kind: u16, inner: impl FnOnce(&mut Attributes)) {
        let mut nested = Attributes::default();
        inner(&mut nested);
        self.bytes(kind | NLA_F_NESTED, &nested.0);
    }

    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks a run of attributes, checking every length.
    fn attributes(mut bytes: &[u8]) -> Vec<(u16, &[u8])> {
        let mut found = Vec::new();
        while !bytes.is_empty() {
            assert!(bytes.len() >= 4, "a truncated attribute header");
            let length = u16::from_ne_bytes([bytes[0], bytes[1]]) as usize;
            let kind = u16::from_ne_bytes([bytes[2], bytes[3]]);
            assert!(
                length >= 4 && length <= bytes.len(),
                "attribute length {length}"
            );
            found.push((kind, &bytes[4..length]));
            bytes = &bytes[((length + 3) & !3).min(bytes.len())..];
        }
        found
    }

    #[test]
    fn the_batch_is_begin_table_chain_rule_end_and_every_length_adds_up() {
        let batch = loopback_forward_batch();
        let mut bytes = &batch.bytes[..];
        let mut kinds = Vec::new();
        let mut acks = 0;
        while !bytes.is_empty() {
            let length = u32::from_ne_bytes(read4(bytes, 0)) as usize;
            assert_eq!(length % 4, 0);
            let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
            let flags = u16::from_ne_bytes([bytes[6], bytes[7]]);
            if flags & NLM_F_ACK != 0 {
                acks += 1;
            }
            // Every attribute inside parses to the message's end.
            attributes(&bytes[20..length]);
            kinds.push(kind);
            bytes = &bytes[length..];
        }
        assert_eq!(
            kinds,
            [0x10, 0x0a00, 0x0a03, 0x0a06, 0x11],
            "begin, NEWTABLE, NEWCHAIN, NEWRULE, end"
        );
        assert_eq!(acks, batch.acks);
    }

    #[test]
    fn the_rule_holds_the_six_expressions_nft_makes() {
        let batch = loopback_forward_batch();
        // The rule is the fourth message.
        let mut bytes = &batch.bytes[..];
        for _ in 0..3 {
            let length = u32::from_ne_bytes(read4(bytes, 0)) as usize;
            bytes = &bytes[length..];
        }
        let length = u32::from_ne_bytes(read4(bytes, 0)) as usize;
        let rule = attributes(&bytes[20..length]);
        let (_, list) = rule
            .iter()
            .find(|(k, _)| k & !NLA_F_NESTED == NFTA_RULE_EXPRESSIONS)
            .expect("the expressions");
        let names: Vec<&[u8]> = attributes(list)
            .iter()
            .map(|(_, elem)| attributes(elem)[0].1)
            .collect();
        assert_eq!(
            names,
            [
                &b"meta\0"[..],
                b"cmp\0",
                b"meta\0",
                b"cmp\0",
                b"immediate\0",
                b"nat\0"
            ]
        );
    }

    /// What `nft` reads back from a namespace this module wrote is the
    /// rule's text, to the character.
    #[test]
    fn nft_lists_exactly_the_loopback_forward_it_would_have_written() {
        if !crate::os::is_root() {
            eprintln!("skipped: writing nf_tables rules in a new network namespace needs root");
            return;
        }
        let nft = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let Some(nft) = nft else {
            eprintln!("skipped: nft (Debian: nftables) is not installed to read the rules back");
            return;
        };
        // A thread of its own, which ends with the namespace it made.
        let listed = std::thread::spawn(move || -> io::Result<String> {
            crate::os::new_thread_network_namespace()?;
            apply_loopback_forward()?;
            // A second time fails whole and adds nothing.
            let again = apply_loopback_forward();
            assert_eq!(
                again.as_ref().map_err(io::Error::kind).err(),
                Some(io::ErrorKind::AlreadyExists),
                "{again:?}"
            );
            // A child starts in its parent thread's network namespace.
            let output = std::process::Command::new(nft)
                .args(["list", "ruleset"])
                .output()?;
            assert!(output.status.success(), "{output:?}");
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        })
        .join()
        .expect("the namespace thread")
        .expect("write and list the rules");
        assert_eq!(listed, super::super::firewall::LOOPBACK_FORWARD);
    }
}
