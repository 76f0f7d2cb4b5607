#!/usr/bin/env python3
"""Regenerates the seed inputs under fuzz/corpus/*/seed-* (they are committed; running this is optional).

Needs Python 3 with `cryptography` and `botocore`. Writes:
  keys/jwks.json            the public key the RS256 seed is signed with (the jwt target trusts it)
  corpus/jwt/seed-*         Authorization values: a real RS256 token, a real-shaped ES256 token (the target
                            re-signs ES256 tokens with its own key, so only the shape matters), broken ones
  corpus/aws_token/seed-*   k8s-aws-v1. tokens presigned exactly like `aws eks get-token` (fake credentials),
                            an ARN and STS answers (JSON, XML)
The RSA private key is thrown away: nothing secret is ever written.
"""
import base64
import json
import os
import time

from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

HERE = os.path.dirname(os.path.abspath(__file__))
ISS = "https://gitlab.example.com"
AUD = "https://deploy.example.com"
EXP_2100 = 4102444800  # the jwt target's issuer accepts lifetimes up to 100 years, so seeds stay valid


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def num(n: int) -> str:
    return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def write(target: str, name: str, data: str) -> None:
    path = os.path.join(HERE, "corpus", target)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "seed-" + name), "w") as f:
        f.write(data)


def gitlab_claims(now: int) -> dict:
    return {
        "iss": ISS, "aud": AUD, "iat": now, "nbf": now, "exp": EXP_2100, "jti": "seed-1",
        "sub": "project_path:platform/api:ref_type:branch:ref:main", "project_path": "platform/api",
        "namespace_path": "platform", "ref": "main", "ref_type": "branch", "ref_protected": "true",
        "environment": "production", "job_id": "4242", "pipeline_id": "1717", "user_login": "alice",
        "https://sts.amazonaws.com/": {"aws_account": "123456789012"},
    }


def jwt_seeds() -> None:
    now = int(time.time())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = rsa_key.public_key().public_numbers()
    jwks = {"keys": [{"kty": "RSA", "kid": "fuzz-rs256", "use": "sig", "alg": "RS256", "n": num(pub.n), "e": num(pub.e)}]}
    os.makedirs(os.path.join(HERE, "keys"), exist_ok=True)
    with open(os.path.join(HERE, "keys", "jwks.json"), "w") as f:
        json.dump(jwks, f, indent=1)
        f.write("\n")

    def signing_input(header: dict, claims: dict) -> str:
        return b64(json.dumps(header, separators=(",", ":")).encode()) + "." + b64(
            json.dumps(claims, separators=(",", ":")).encode())

    claims = gitlab_claims(now)
    si = signing_input({"alg": "RS256", "typ": "JWT", "kid": "fuzz-rs256"}, claims)
    sig = rsa_key.sign(si.encode(), padding.PKCS1v15(), hashes.SHA256())
    write("jwt", "rs256", "Bearer " + si + "." + b64(sig))

    ec_key = ec.generate_private_key(ec.SECP256R1())
    okta = {"iss": ISS, "aud": [AUD, "api://other"], "iat": now, "exp": EXP_2100, "sub": "0oa1b2c3",
            "cid": "0oa1b2c3", "scp": ["deploy:production", "read"], "uid": "00u1"}
    si = signing_input({"alg": "ES256", "typ": "at+jwt", "kid": "fuzz-es256"}, okta)
    r, s = decode_dss_signature(ec_key.sign(si.encode(), ec.ECDSA(hashes.SHA256())))
    write("jwt", "es256", "bearer " + si + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big")))

    expired = dict(claims, iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    write("jwt", "expired", "Bearer " + signing_input({"alg": "ES256", "kid": "fuzz-es256"}, expired) + "." + b64(b"x" * 64))
    write("jwt", "alg-none", "Bearer " + signing_input({"alg": "none"}, claims) + ".")
    write("jwt", "crit", "Bearer " + signing_input({"alg": "ES256", "crit": ["b64"], "kid": "fuzz-es256"}, claims) + ".c2ln")
    write("jwt", "jwe", "Bearer eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d")


def aws_seeds() -> None:
    def presign(region: str, host: str, cluster: str, token: str | None) -> str:
        creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", token)
        url = f"https://{host}/?Action=GetCallerIdentity&Version=2011-06-15"
        request = AWSRequest(method="GET", url=url, headers={"x-k8s-aws-id": cluster})
        SigV4QueryAuth(creds, "sts", region, expires=60).add_auth(request)
        return "k8s-aws-v1." + b64(request.url.encode())

    write("aws_token", "regional", presign("us-east-1", "sts.us-east-1.amazonaws.com", "runway-prod", None))
    write("aws_token", "global-session", presign("us-east-1", "sts.amazonaws.com", "runway-prod", "FwoGZXIvYXdzE+//session"))
    write("aws_token", "endpoint", presign("eu-west-1", "127.0.0.1:7443", "runway-test", None))
    # The same target also feeds its input to the ARN parser and to the STS answer parser.
    write("aws_token", "arn", "arn:aws:sts::123456789012:assumed-role/deploy/ci/job-1")
    arn, user = "arn:aws:sts::123456789012:assumed-role/deploy/job-1", "AROAEXAMPLE:job-1"
    answer = {"GetCallerIdentityResult": {"Arn": arn, "Account": "123456789012", "UserId": user}}
    write("aws_token", "sts-json", json.dumps({"GetCallerIdentityResponse": answer}))
    write("aws_token", "sts-xml",
          '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
          f"<GetCallerIdentityResult><Arn>{arn}</Arn><UserId>{user}</UserId><Account>123456789012</Account>"
          "</GetCallerIdentityResult><ResponseMetadata><RequestId>0</RequestId></ResponseMetadata>"
          "</GetCallerIdentityResponse>")


if __name__ == "__main__":
    jwt_seeds()
    aws_seeds()
