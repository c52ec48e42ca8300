//! Unit tests of the dyno network's pure parts: address ranges, the
//! resolver choice and `resolv.conf`, the lease pool, and when the pool
//! makes namespaces. Apart from
//! `mod.rs` only for its length (the network's code alone is about 700
//! lines).

use super::*;

#[test]
fn ranges_parse_and_refuse_nonsense() {
    let range = Ipv4Range::parse("10.213.0.0/16").unwrap();
    assert_eq!(range.to_string(), "10.213.0.0/16");
    assert_eq!(range.host(1), Ipv4Addr::new(10, 213, 0, 1));
    assert_eq!(range.dyno_addresses(), 65533);
    for bad in [
        "10.213.0.0",
        "10.213.0.1/16",
        "10.213.0.0/30",
        "x/16",
        "10.0.0.0/33",
    ] {
        assert!(Ipv4Range::parse(bad).is_err(), "{bad}");
    }
    let err = Ipv4Range::parse("10.213.7.0/16").unwrap_err();
    assert!(err.contains("10.213.0.0/16"), "{err}");
}

#[test]
fn overlaps_are_found_both_ways() {
    let range = Ipv4Range::parse("10.213.0.0/16").unwrap();
    assert!(range.overlaps(Ipv4Addr::new(10, 0, 0, 0), 8));
    assert!(range.overlaps(Ipv4Addr::new(10, 213, 5, 0), 24));
    assert!(range.overlaps(Ipv4Addr::new(10, 213, 5, 9), 32));
    assert!(!range.overlaps(Ipv4Addr::new(10, 214, 0, 0), 16));
    assert!(!range.overlaps(Ipv4Addr::new(192, 0, 2, 0), 24));
}

#[test]
fn a_loopback_resolver_is_relayed_and_others_are_used_directly() {
    let stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.org\n";
    let resolver = Resolver::choose(None, stub);
    assert_eq!(resolver, Resolver::Relay("127.0.0.53:53".parse().unwrap()));
    assert_eq!(
        resolver.resolv_conf(Ipv4Addr::new(10, 213, 0, 1), stub),
        "# written by crew for its dynos\noptions edns0 trust-ad\nsearch example.org\n\
         nameserver 10.213.0.1\n"
    );
    let plain = "nameserver 192.0.2.53\nnameserver 2001:db8::53\n";
    let resolver = Resolver::choose(None, plain);
    assert_eq!(
        resolver,
        Resolver::Servers(vec!["192.0.2.53".parse().unwrap()])
    );
    assert_eq!(
        Resolver::choose(None, ""),
        Resolver::Relay("127.0.0.1:53".parse().unwrap())
    );
    assert_eq!(
        Resolver::choose(Some("127.0.0.1:5353".parse().unwrap()), plain),
        Resolver::Relay("127.0.0.1:5353".parse().unwrap())
    );
    assert_eq!(
        Resolver::choose(Some("192.0.2.9:53".parse().unwrap()), stub),
        Resolver::Servers(vec!["192.0.2.9".parse().unwrap()])
    );
}

#[test]
fn addresses_are_leased_round_robin_and_given_back() {
    let inner = Arc::new(Inner {
        config: DynoNetworkConfig {
            range: Ipv4Range::parse("10.9.9.0/29").unwrap(),
            ..DynoNetworkConfig::default()
        },
        gateway: Ipv4Addr::new(10, 9, 9, 1),
        bridge_index: 0,
        host_namespace: os::open_thread_network_namespace().unwrap(),
        pool: Mutex::new(Pool::default()),
        filled: Condvar::new(),
        drained: Condvar::new(),
        leases: Mutex::new(Leases::default()),
        description: String::new(),
    });
    let a = inner.lease().unwrap();
    let b = inner.lease().unwrap();
    assert_eq!(a.address(), Ipv4Addr::new(10, 9, 9, 2));
    assert_eq!(b.address(), Ipv4Addr::new(10, 9, 9, 3));
    drop(a);
    // .2 is free again, but the next ones come first.
    let rest: Vec<Lease> = (0..3).map(|_| inner.lease().unwrap()).collect();
    let addresses: Vec<Ipv4Addr> = rest.iter().map(Lease::address).collect();
    assert_eq!(
        addresses,
        [
            Ipv4Addr::new(10, 9, 9, 4),
            Ipv4Addr::new(10, 9, 9, 5),
            Ipv4Addr::new(10, 9, 9, 6)
        ]
    );
    assert_eq!(inner.lease().unwrap().address(), Ipv4Addr::new(10, 9, 9, 2));
    let _held = inner.lease().unwrap();
    assert!(inner.lease().is_err(), "a /29 has five dyno addresses");
}

#[test]
fn the_pool_makes_namespaces_between_starts_not_during_them() {
    let ms = Duration::from_millis;
    // Full: nothing to make until one is taken.
    assert_eq!(when_to_make(8, 8, 0, None), Make::WhenSignalled);
    // Nothing started yet (a new pool), or quiet for long enough: now.
    assert_eq!(when_to_make(0, 8, 0, None), Make::Now);
    assert_eq!(when_to_make(7, 8, 0, Some(REFILL_QUIET)), Make::Now);
    // A dyno is starting: not beside it.
    assert_eq!(when_to_make(7, 8, 1, Some(ms(500))), Make::WhenSignalled);
    // One has just started: wait out the quiet time.
    assert_eq!(
        when_to_make(7, 8, 0, Some(ms(5))),
        Make::After(REFILL_QUIET - ms(5))
    );
    // Running low (under a quarter full): at once, starting dynos or not,
    // since the next start would wait for it.
    assert_eq!(when_to_make(1, 8, 3, Some(ms(1))), Make::Now);
    assert_eq!(when_to_make(2, 8, 3, Some(ms(1))), Make::WhenSignalled);
    // A pool of one is low whenever it is empty.
    assert_eq!(when_to_make(0, 1, 1, Some(ms(1))), Make::Now);
    assert_eq!(when_to_make(1, 1, 0, None), Make::WhenSignalled);
}
