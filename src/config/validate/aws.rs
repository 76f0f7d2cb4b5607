//! `kind = "aws"`: an issuer whose tokens are presigned STS GetCallerIdentity URLs (contract section 5).
//! It has no `iss`, no keys and no algorithms; what it has is an allowlist of STS endpoints, an optional CA
//! bundle for them, and an optional account allowlist.

use std::path::Path;

use super::super::raw::RawIssuer;
use super::{ConfigError, duration_or_zero, file_path, issuer_headers};
use crate::config::{
    AWS_GLOBAL_STS_HOST, AWS_TOKEN_LIFETIME, AwsConfig, DEFAULT_KID_REFETCH_INTERVAL, DEFAULT_LEEWAY,
    DEFAULT_REFRESH_INTERVAL, IssuerConfig, IssuerKind, KeySource, StsEndpoint,
};

/// Validates one `kind = "aws"` issuer (its name is already checked).
pub(super) fn issuer(key: &str, r: RawIssuer, base: &Path) -> Result<IssuerConfig, ConfigError> {
    let jwt_only = [
        ("issuer", r.issuer.is_some(), "aws tokens have no iss: the STS host allowlist takes its place"),
        ("jwks_uri", r.jwks_uri.is_some(), "aws tokens are checked by STS, not with keys"),
        ("jwks_file", r.jwks_file.is_some(), "aws tokens are checked by STS, not with keys"),
        ("algorithms", r.algorithms.is_some(), "aws tokens are SigV4-signed, checked by STS"),
        ("max_token_lifetime", r.max_token_lifetime.is_some(), "fixed at 15m for kind aws (STS's own limit)"),
        ("refresh_interval", r.refresh_interval.is_some(), "aws issuers have no keys to refresh"),
        ("kid_refetch_interval", r.kid_refetch_interval.is_some(), "aws issuers have no keys to refetch"),
    ];
    if let Some((field, _, why)) = jwt_only.iter().find(|(_, set, _)| *set) {
        return Err(ConfigError::invalid(format!("{key}.{field}"), format!("not valid for kind = \"aws\": {why}")));
    }
    if r.audiences.is_empty() {
        return Err(ConfigError::invalid(
            format!("{key}.audiences"),
            "required: at least one x-k8s-aws-id value (the --cluster-name of `aws eks get-token`)",
        ));
    }
    for (i, audience) in r.audiences.iter().enumerate() {
        if audience.is_empty() || !audience.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::invalid(
                format!("{key}.audiences[{i}]"),
                "must be non-empty visible ASCII without spaces: it is sent to STS as the x-k8s-aws-id header",
            ));
        }
    }
    let endpoints = match (r.regions, r.sts_endpoint) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                format!("{key}.sts_endpoint"),
                "set regions or sts_endpoint, not both: sts_endpoint replaces the STS host allowlist",
            ));
        }
        (None, Some(url)) => vec![sts_endpoint(&format!("{key}.sts_endpoint"), &url)?],
        (Some(regions), None) if regions.is_empty() => {
            return Err(ConfigError::invalid(
                format!("{key}.regions"),
                format!("must list at least one region, or be left out to accept only {AWS_GLOBAL_STS_HOST}"),
            ));
        }
        (regions, None) => {
            let mut endpoints = vec![StsEndpoint { host: AWS_GLOBAL_STS_HOST.to_string(), port: 443 }];
            for (i, region) in regions.unwrap_or_default().iter().enumerate() {
                let endpoint = StsEndpoint { host: regional_host(&format!("{key}.regions[{i}]"), region)?, port: 443 };
                if !endpoints.contains(&endpoint) {
                    endpoints.push(endpoint);
                }
            }
            endpoints
        }
    };
    let accounts = match r.accounts {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(ConfigError::invalid(
                format!("{key}.accounts"),
                "an empty list allows no account: list at least one, or leave accounts out to allow any",
            ));
        }
        Some(list) => {
            for (i, account) in list.iter().enumerate() {
                if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ConfigError::invalid(
                        format!("{key}.accounts[{i}]"),
                        format!("\"{account}\" is not an AWS account id (12 digits, quoted: \"012345678901\")"),
                    ));
                }
            }
            Some(list)
        }
    };
    let sts_ca = r.sts_ca.map(|p| file_path(&format!("{key}.sts_ca"), &p, base)).transpose()?;
    Ok(IssuerConfig {
        name: r.name,
        kind: IssuerKind::Aws,
        issuer: String::new(),
        audiences: r.audiences,
        keys: KeySource::Sts,
        algorithms: Vec::new(),
        max_token_lifetime: AWS_TOKEN_LIFETIME,
        leeway: duration_or_zero(&format!("{key}.leeway"), &r.leeway, DEFAULT_LEEWAY)?,
        refresh_interval: DEFAULT_REFRESH_INTERVAL,
        kid_refetch_interval: DEFAULT_KID_REFETCH_INTERVAL,
        headers: issuer_headers(key, r.headers)?,
        aws: Some(AwsConfig { endpoints, sts_ca, accounts }),
    })
}

/// `sts.{region}.amazonaws.com`, or `….amazonaws.com.cn` for the China regions (the aws-cn partition).
fn regional_host(key: &str, region: &str) -> Result<String, ConfigError> {
    let well_formed = region.split('-').count() >= 3
        && region
            .split('-')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && region.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    if !well_formed {
        return Err(ConfigError::invalid(
            key,
            format!("\"{region}\" is not an AWS region name (e.g. \"us-east-1\", \"eu-west-1\", \"cn-north-1\")"),
        ));
    }
    let suffix = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
    Ok(format!("sts.{region}.{suffix}"))
}

/// `sts_endpoint`: `https://host[:port]`, nothing more; the token's URL must name exactly this.
fn sts_endpoint(key: &str, url: &str) -> Result<StsEndpoint, ConfigError> {
    let uri: http::Uri = url.parse().map_err(|e| ConfigError::invalid(key, format!("\"{url}\" is not a URL ({e})")))?;
    if uri.scheme_str() != Some("https") {
        return Err(ConfigError::invalid(key, format!("\"{url}\" must be https:// (tokens name https URLs only)")));
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    if host.is_empty() || authority.contains('@') {
        return Err(ConfigError::invalid(key, format!("\"{url}\" must name a host (and no user information)")));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(ConfigError::invalid(key, format!("\"{url}\" must be https://host[:port] with no path or query")));
    }
    Ok(StsEndpoint { host, port: uri.port_u16().unwrap_or(443) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regional_hosts_follow_the_partition() {
        assert_eq!(regional_host("k", "eu-west-1").ok().as_deref(), Some("sts.eu-west-1.amazonaws.com"));
        assert_eq!(regional_host("k", "us-gov-west-1").ok().as_deref(), Some("sts.us-gov-west-1.amazonaws.com"));
        assert_eq!(regional_host("k", "cn-north-1").ok().as_deref(), Some("sts.cn-north-1.amazonaws.com.cn"));
        for bad in ["", "useast1", "us-east", "US-EAST-1", "us-east-1.evil.com", "us--east-1", "-us-east-1", "1a-b-c"] {
            assert!(regional_host("k", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sts_endpoint_is_scheme_host_port_only() {
        let e = sts_endpoint("k", "https://127.0.0.1:7443").ok();
        assert_eq!(e, Some(StsEndpoint { host: "127.0.0.1".into(), port: 7443 }));
        let e = sts_endpoint("k", "https://STS.Example.com/").ok();
        assert_eq!(e, Some(StsEndpoint { host: "sts.example.com".into(), port: 443 }));
        let e = sts_endpoint("k", "https://[::1]:9443").ok();
        assert_eq!(e.as_ref().map(ToString::to_string).as_deref(), Some("https://[::1]:9443"));
        for bad in ["http://127.0.0.1:7443", "https://a@sts.example.com", "https://sts.example.com/x", "https://s/?a=b"]
        {
            assert!(sts_endpoint("k", bad).is_err(), "{bad}");
        }
    }
}
