//! The principal STS names, and its canonical ARN: what policy rules and Kong see.
//!
//! An assumed-role session (`arn:aws:sts::ACCT:assumed-role/ROLE/SESSION`) becomes the role it is a session
//! of (`arn:aws:iam::ACCT:role/ROLE`), so one rule covers every session; users, roots, federated users and
//! roles stay as they are. Every partition (`aws`, `aws-cn`, `aws-us-gov`, `aws-iso`…) is accepted. The
//! rules are aws-iam-authenticator's: an assumed-role ARN carries the role's name, not its path, so the
//! canonical role ARN has no path either.

/// The principal behind a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Canonical ARN (assumed-role sessions folded into their role).
    pub arn: String,
    /// The ARN exactly as STS gave it.
    pub raw_arn: String,
    /// The 12-digit account id from the ARN.
    pub account: String,
    /// The session name, for an assumed-role session.
    pub session_name: Option<String>,
}

/// An ARN that does not name an IAM principal Runway can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{arn}\" is not a usable principal ARN: {why}")]
pub struct ArnError {
    /// The ARN (as STS gave it; never a secret).
    pub arn: String,
    /// What is wrong.
    pub why: &'static str,
}

/// Parses and canonicalises a principal ARN from GetCallerIdentity.
pub fn canonicalize(raw: &str) -> Result<Principal, ArnError> {
    let err = |why| ArnError { arn: raw.to_string(), why };
    let mut parts = raw.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(err("expected arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE"));
    };
    if !is_partition(partition) {
        return Err(err("unknown partition"));
    }
    if !region.is_empty() {
        return Err(err("IAM and STS principals have no region"));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("the account is not 12 digits"));
    }
    let segments: Vec<&str> = resource.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(err("empty resource segment"));
    }
    let principal = |arn: String, session_name: Option<String>| Principal {
        arn,
        raw_arn: raw.to_string(),
        account: account.to_string(),
        session_name,
    };
    match (service, segments.as_slice()) {
        ("sts", ["assumed-role", role @ .., session]) if !role.is_empty() => Ok(principal(
            format!("arn:{partition}:iam::{account}:role/{}", role.join("/")),
            Some((*session).to_string()),
        )),
        ("sts", ["assumed-role", ..]) => Err(err("an assumed-role ARN names a role and a session")),
        ("sts", ["federated-user", _, ..]) => Ok(principal(raw.to_string(), None)),
        ("sts", _) => Err(err("STS principals are assumed-role or federated-user")),
        ("iam", ["root"]) | ("iam", ["user" | "role", _, ..]) => Ok(principal(raw.to_string(), None)),
        ("iam", _) => Err(err("IAM principals are root, user/NAME or role/NAME")),
        _ => Err(err("the service is neither iam nor sts")),
    }
}

/// `aws`, or `aws-` followed by lower-case words (`aws-cn`, `aws-us-gov`, `aws-iso-b`, `aws-eusc`…).
fn is_partition(p: &str) -> bool {
    p == "aws"
        || p.strip_prefix("aws-").is_some_and(|rest| {
            rest.split('-').all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every ARN shape GetCallerIdentity returns, in every partition, and what each becomes.
    #[test]
    fn canonicalisation_table() {
        let ok: &[(&str, &str, Option<&str>)] = &[
            // Assumed-role sessions fold into their role; the session name is kept aside.
            (
                "arn:aws:sts::123456789012:assumed-role/ci-deploy/gitlab-job-42",
                "arn:aws:iam::123456789012:role/ci-deploy",
                Some("gitlab-job-42"),
            ),
            (
                "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Admin_0123abcd/alice@example.com",
                "arn:aws:iam::123456789012:role/AWSReservedSSO_Admin_0123abcd",
                Some("alice@example.com"),
            ),
            (
                "arn:aws:sts::123456789012:assumed-role/eks-node/i-0123456789abcdef0",
                "arn:aws:iam::123456789012:role/eks-node",
                Some("i-0123456789abcdef0"),
            ),
            (
                "arn:aws-cn:sts::123456789012:assumed-role/builder/s1",
                "arn:aws-cn:iam::123456789012:role/builder",
                Some("s1"),
            ),
            (
                "arn:aws-us-gov:sts::123456789012:assumed-role/builder/s1",
                "arn:aws-us-gov:iam::123456789012:role/builder",
                Some("s1"),
            ),
            (
                "arn:aws-iso-b:sts::123456789012:assumed-role/builder/s1",
                "arn:aws-iso-b:iam::123456789012:role/builder",
                Some("s1"),
            ),
            // Users (with and without a path), roots, federated users and roles stay as they are.
            ("arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:user/alice", None),
            ("arn:aws:iam::123456789012:user/ops/alice", "arn:aws:iam::123456789012:user/ops/alice", None),
            ("arn:aws:iam::123456789012:root", "arn:aws:iam::123456789012:root", None),
            ("arn:aws:sts::123456789012:federated-user/bob", "arn:aws:sts::123456789012:federated-user/bob", None),
            ("arn:aws:iam::123456789012:role/ci", "arn:aws:iam::123456789012:role/ci", None),
            ("arn:aws:iam::123456789012:role/team/ci", "arn:aws:iam::123456789012:role/team/ci", None),
            ("arn:aws-cn:iam::123456789012:user/li", "arn:aws-cn:iam::123456789012:user/li", None),
            ("arn:aws-us-gov:iam::123456789012:root", "arn:aws-us-gov:iam::123456789012:root", None),
            ("arn:aws-iso:sts::123456789012:federated-user/x", "arn:aws-iso:sts::123456789012:federated-user/x", None),
        ];
        for (raw, canonical, session) in ok {
            let p = canonicalize(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(p.arn, *canonical, "{raw}");
            assert_eq!(p.raw_arn, *raw);
            assert_eq!(p.account, "123456789012");
            assert_eq!(p.session_name.as_deref(), *session, "{raw}");
        }
        let bad = [
            "",
            "NOT AN ARN",
            "arn:aws:sts::123456789012",
            "arn:aws:sts::123456789012:assumed-role/only-role",
            "arn:aws:sts::123456789012:assumed-role//session",
            "arn:aws:sts::123456789012:assumed-role",
            "arn:aws:sts::123456789012:federated-user",
            "arn:aws:sts::123456789012:user/alice",
            "arn:aws:iam::123456789012:group/admins",
            "arn:aws:iam::123456789012:user",
            "arn:aws:iam::123456789012:root/x",
            "arn:aws:iam::123456789012:policy/p",
            "arn:aws:s3:::bucket",
            "arn:aws:ec2:us-east-1:123456789012:instance/i-1",
            "arn:aws:iam:us-east-1:123456789012:user/alice",
            "arn:aws:iam::12345678901:user/alice",
            "arn:aws:iam::12345678901x:user/alice",
            "arn:gcp:iam::123456789012:user/alice",
            "arn:aws-:iam::123456789012:user/alice",
            "arn:AWS:iam::123456789012:user/alice",
            "arn:aws:iam::123456789012:user/alice/",
        ];
        for raw in bad {
            assert!(canonicalize(raw).is_err(), "{raw:?} must be refused");
        }
    }
}
