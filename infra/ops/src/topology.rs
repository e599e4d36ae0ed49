//! The replica sets the operator declares: `NAME/host:port,host:port,...`, the same notation
//! mongos uses for shards, parsed and validated before anything is sent to a server.

use std::fmt;
use std::str::FromStr;

/// One replica set and every one of its members, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplSetSpec {
    pub name: String,
    pub members: Vec<String>,
}

impl ReplSetSpec {
    /// `NAME/host1:port,host2:port` — what `addShard` expects.
    pub fn connection_string(&self) -> String {
        format!("{}/{}", self.name, self.members.join(","))
    }
}

impl fmt::Display for ReplSetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.connection_string())
    }
}

impl FromStr for ReplSetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (name, hosts) = s.split_once('/').ok_or_else(|| {
            format!("`{s}` is not NAME/host:port,host:port,... (missing `/` after the set name)")
        })?;
        if name.is_empty() {
            return Err(format!("`{s}`: the replica set name is empty"));
        }
        let mut members = Vec::new();
        for host in hosts.split(',').map(str::trim) {
            let (h, port) = host.rsplit_once(':').ok_or_else(|| {
                format!("`{host}` in `{s}` is not host:port (the port is required)")
            })?;
            if h.is_empty() || port.parse::<u16>().is_err() {
                return Err(format!("`{host}` in `{s}` is not host:port"));
            }
            if members
                .iter()
                .any(|m: &String| m.eq_ignore_ascii_case(host))
            {
                return Err(format!("`{host}` appears twice in `{s}`"));
            }
            members.push(host.to_owned());
        }
        Ok(Self {
            name: name.to_owned(),
            members,
        })
    }
}

/// Host names are case-insensitive; ports are compared as written.
pub fn same_host(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_every_member() {
        let rs: ReplSetSpec = "cfg/a:27017, b:27018 ,c:1".parse().expect("valid");
        assert_eq!(rs.name, "cfg");
        assert_eq!(rs.members, vec!["a:27017", "b:27018", "c:1"]);
        assert_eq!(rs.connection_string(), "cfg/a:27017,b:27018,c:1");
    }

    #[test]
    fn refuses_what_mongos_would_refuse_later() {
        for bad in ["a:1,b:2", "/a:1", "rs/a", "rs/a:x", "rs/", "rs/a:1,A:1"] {
            assert!(bad.parse::<ReplSetSpec>().is_err(), "{bad} accepted");
        }
    }
}
