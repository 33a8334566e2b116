//! A proxy's address, `host:port`, which is also its resource id in the pool. Every request
//! type reads addresses through [`canonical`], so `Proxy.example:0080` added and
//! `proxy.example:80` released name the same resource: hosts are lowercased (DNS names are
//! case-insensitive) and ports written in plain decimal.

/// The longest host, in bytes: a DNS name's limit.
const MAX_HOST_BYTES: usize = 253;

/// `text` as a proxy id in its one canonical spelling.
///
/// The host is a DNS name or IPv4 address (ASCII letters, digits, `.`, `-`, `_`) or an IPv6
/// address in brackets (`[::1]:3128`); the port is a decimal number from 1 to 65535.
///
/// # Errors
///
/// A message quoting `text` and saying what is wrong with it.
pub(crate) fn canonical(text: &str) -> Result<String, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} is not host:port"))?;
    check_host(host).map_err(|why| format!("{text:?}: {why}"))?;
    let port = port_number(port)
        .ok_or_else(|| format!("{text:?}: the port must be a number from 1 to 65535"))?;
    Ok(format!("{}:{port}", host.to_ascii_lowercase()))
}

fn check_host(host: &str) -> Result<(), &'static str> {
    if host.is_empty() {
        return Err("the host is empty");
    }
    if host.len() > MAX_HOST_BYTES {
        return Err("the host is longer than 253 bytes");
    }
    let fits = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ipv6) => !ipv6.is_empty() && ipv6.bytes().all(is_ipv6_byte),
        None => host.bytes().all(is_name_byte),
    };
    if fits {
        Ok(())
    } else {
        Err("the host must be a name, an IPv4 address or an IPv6 address in brackets")
    }
}

fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_')
}

/// Hex digits, `:`, `.` (an embedded IPv4 address) and `%` (a zone, as in `fe80::1%eth0`).
fn is_ipv6_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b':' | b'.' | b'%')
}

fn port_number(port: &str) -> Option<u16> {
    if port.is_empty() || !port.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    port.parse::<u16>().ok().filter(|&port| port != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_are_accepted_as_written() {
        for text in [
            "10.0.0.7:3128",
            "proxy-1.example.com:80",
            "[::1]:8080",
            "a:65535",
        ] {
            assert_eq!(canonical(text).unwrap(), text);
        }
    }

    #[test]
    fn hosts_are_lowercased_and_ports_plain_decimal() {
        assert_eq!(canonical("Proxy.Example:0080").unwrap(), "proxy.example:80");
        assert_eq!(canonical("[FE80::1]:1").unwrap(), "[fe80::1]:1");
    }

    #[test]
    fn a_missing_or_empty_host_is_refused() {
        assert!(canonical("3128").unwrap_err().contains("is not host:port"));
        assert!(canonical(":3128")
            .unwrap_err()
            .contains("the host is empty"));
        assert!(canonical("[]:3128").is_err());
    }

    #[test]
    fn ports_outside_1_to_65535_are_refused() {
        for text in ["h:0", "h:65536", "h:", "h:+80", "h:-1", "h:8o", "h: 80"] {
            let err = canonical(text).unwrap_err();
            assert!(err.contains("from 1 to 65535"), "{text}: {err}");
        }
    }

    #[test]
    fn hosts_with_spaces_slashes_or_bare_colons_are_refused() {
        for text in [
            "a b:80",
            "a/b:80",
            "user@h:80",
            "::1:80",
            "h\n:80",
            "ünï.com:80",
        ] {
            assert!(canonical(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_host_longer_than_a_dns_name_is_refused() {
        let long = format!("{}:80", "a".repeat(254));
        assert!(canonical(&long).unwrap_err().contains("253"));
        let longest = format!("{}:80", "a".repeat(253));
        assert!(canonical(&longest).is_ok());
    }

    #[test]
    fn the_error_quotes_the_input() {
        assert!(canonical("nope").unwrap_err().starts_with("\"nope\""));
    }
}
