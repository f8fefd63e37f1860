"""Storage URIs: which are allowed, where the server is, and the one place that tells a
local path from an object store.

A results root is a local (or NFS) path, or a URI: s3://bucket/prefix (an
S3-compatible server named in the query or by the standard AWS variables), gs://,
hdfs://, abfs://. The URI is stored in study.json and every trial's config, so it
never holds a credential: those come from each machine's environment or profile.
"""
from __future__ import annotations

import os
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit


class StoreError(RuntimeError):
    """The results storage cannot be used (unknown scheme, unwritable, a lease held, ...)."""


SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "abfs", "abfss")
S3_QUERY = ("endpoint_override", "scheme", "region")     # where the server is, never who you are
SECRETS = ("access_key", "secret_key", "session_token", "role_arn", "external_id", "sig")
SECRET_WORDS = ("key", "secret", "token", "password", "passwd", "credential", "auth")
NAMED_USER = ("hdfs", "abfs", "abfss")     # user info names a user (hdfs) or a container (abfs)
NO_SECRETS = ("credentials come only from the environment (AWS_ACCESS_KEY_ID, "
              "AWS_SECRET_ACCESS_KEY; GOOGLE_APPLICATION_CREDENTIALS; AZURE_STORAGE_ACCOUNT_KEY), "
              "the AWS profile or an instance role, never from a URI that is stored and logged")


def kind(root: str) -> str:
    """'local', 's3' or 'arrow' (another pyarrow filesystem: gs://, hdfs://, abfs://)."""
    if "://" not in root or root.startswith("file://"):
        return "local"
    return "s3" if root.startswith("s3://") else "arrow"


def check_uri(root: str) -> None:
    """Refuse an unknown scheme, a credential anywhere in the URI (user info, any scheme's
    secret query keys) or an unknown S3 query key, without touching any filesystem or
    network. The messages never repeat the URI, which may hold the secret."""
    if "://" not in root:
        return
    scheme = root.split("://", 1)[0]
    if scheme not in SCHEMES:
        raise StoreError(f"storage: unknown scheme {scheme!r}; "
                         "allowed: a local path, file://, s3://, gs://, hdfs://, abfs://")
    parts = urlsplit(root)
    if parts.password is not None or (parts.username is not None and scheme not in NAMED_USER):
        raise StoreError(f"storage: a credential in the user-info part of the {scheme}:// URI "
                         f"(before '@'); {NO_SECRETS}")
    for key in parse_qs(parts.query, keep_blank_values=True):
        if key.lower() in SECRETS or any(w in key.lower() for w in SECRET_WORDS):
            raise StoreError(f"storage: {key} in the URI; {NO_SECRETS}")
        if scheme == "s3" and key not in S3_QUERY:
            raise StoreError(f"storage: unknown query parameter {key!r} in the URI; allowed: "
                             f"{', '.join(S3_QUERY)}")


def query(root: str) -> dict[str, str]:
    """The URI's query as {key: last value}."""
    return {k: v[-1] for k, v in parse_qs(urlsplit(root).query).items()}


def resolve_root(root: str) -> str:
    """The root every process opens: for s3://, the endpoint and region of the standard AWS
    variables (AWS_ENDPOINT_URL[_S3], AWS_REGION, AWS_DEFAULT_REGION) written into its query,
    so trials on other nodes reach the same server; values in the URI win. No credentials."""
    check_uri(root)
    if kind(root) != "s3":
        return root
    parts = urlsplit(root)
    q = query(root)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and "endpoint_override" not in q:
        e = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        q["endpoint_override"] = e.netloc
        q.setdefault("scheme", e.scheme)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region and "region" not in q:
        q["region"] = region
    return urlunsplit(("s3", parts.netloc, parts.path, urlencode(sorted(q.items()), safe=":"),
                       ""))


def split_query(uri: str) -> tuple[str, str]:
    """'s3://b/p?x=1' -> ('s3://b/p', '?x=1')."""
    base, sep, q = uri.partition("?")
    return base, sep + q


def endpoint_url(root: str) -> str | None:
    """The S3 server's URL ('http://127.0.0.1:9000'), or None for AWS itself."""
    q = query(root)
    endpoint = q.get("endpoint_override")
    if endpoint and "://" not in endpoint:
        endpoint = f"{q.get('scheme', 'https')}://{endpoint}"
    return endpoint


def polars_options(root: str) -> dict[str, str] | None:
    """Polars' storage_options for the same server (credentials still from the environment)."""
    if kind(root) != "s3":
        return None
    q, out = query(root), {}
    if "endpoint_override" in q:
        out["aws_endpoint_url"] = endpoint_url(root)
        out["aws_allow_http"] = str(q.get("scheme") == "http").lower()
    if "region" in q:
        out["aws_region"] = q["region"]
    return out or None
