from kernel.clientip import forwarded_client, parse_networks, resolve_scope

PROXIES = parse_networks(["10.0.0.0/8", "::1"])


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert forwarded_client("198.51.100.4", ["203.0.113.1"], PROXIES) == "198.51.100.4"
    assert forwarded_client("198.51.100.4", ["203.0.113.1"], ()) == "198.51.100.4"


def test_the_client_is_the_first_untrusted_hop_from_the_right() -> None:
    assert forwarded_client("10.0.0.2", ["203.0.113.1"], PROXIES) == "203.0.113.1"
    assert forwarded_client("10.0.0.2", ["6.6.6.6, 203.0.113.1, 10.0.0.9"], PROXIES) == "203.0.113.1"
    assert forwarded_client("10.0.0.2", ["6.6.6.6", "203.0.113.1:5555"], PROXIES) == "203.0.113.1"
    assert forwarded_client("::1", ["[2001:db8::7]:443"], PROXIES) == "2001:db8::7"


def test_a_hop_that_is_no_address_ends_the_walk_at_the_last_proxy() -> None:
    assert forwarded_client("10.0.0.2", ["203.0.113.1, garbage"], PROXIES) == "10.0.0.2"
    assert forwarded_client("10.0.0.2", ["garbage, 10.0.0.5"], PROXIES) == "10.0.0.5"
    assert forwarded_client("10.0.0.2", [], PROXIES) == "10.0.0.2"


def test_forwarding_headers_from_an_untrusted_peer_never_reach_the_application() -> None:
    scope = {
        "type": "http",
        "scheme": "https",
        "client": ["6.6.6.6", 0],
        "headers": [(b"x-forwarded-for", b"6.6.6.6"), (b"X-Forwarded-Proto", b"https"), (b"host", b"a")],
    }
    resolve_scope(scope, ("198.51.100.4", 5000), PROXIES)
    assert scope["client"] == ["198.51.100.4", 5000]
    assert scope["headers"] == [(b"host", b"a")]


def test_a_trusted_proxy_sets_the_client_and_the_scheme() -> None:
    scope = {
        "type": "http",
        "scheme": "http",
        "headers": [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.1"), (b"x-forwarded-proto", b"https")],
    }
    resolve_scope(scope, ("10.1.2.3", 5000), PROXIES)
    assert scope["client"] == ["203.0.113.1", 0]
    assert scope["scheme"] == "https"
