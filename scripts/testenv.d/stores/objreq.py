#!/usr/bin/env python3
"""Signed requests against the local object stores of scripts/testenv (standard library only).

  objreq.py s3 METHOD URL --access-key-file F --secret-key-file F [--region R] [--data FILE|-]
            [--cacert CA.pem]   (https URLs: the CA that signed the server's certificate)
  objreq.py azure METHOD URL --account A --key-file F [--data FILE|-] [-H 'Name: value']...
  objreq.py azure-sas (container|account) --account A --key-file F [--container C]
            [--permissions racwdl] [--expiry 2099-12-31T00:00:00Z] [--version V]

Requests print the response body to stdout and the status line to stderr. The exit status is
0 for 2xx and for any status given with --ok (e.g. --ok 409 for "already exists"), 1 otherwise.
Only loopback URLs are accepted: these are test helpers for services on 127.0.0.1.
"""
import argparse
import base64
import datetime
import hashlib
import hmac
import http.client
import ssl
import sys
import urllib.parse

AZURE_API_VERSION = "2021-08-06"


def read_secret(path):
    with open(path, "r", encoding="utf-8") as f:
        return f.read().strip()


def read_body(arg):
    if arg is None:
        return b""
    if arg == "-":
        return sys.stdin.buffer.read()
    with open(arg, "rb") as f:
        return f.read()


def parse_loopback(url):
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or u.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"objreq: refusing non-loopback or non-http(s) URL: {url}")
    return u


def send(method, u, path, query, headers, body, ok, cacert=None):
    """Send to u's host; path and query are already percent-encoded."""
    if u.scheme == "https":
        ctx = ssl.create_default_context(cafile=cacert)
        conn = http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=30, context=ctx)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=30)
    target = path + ("?" + query if query else "")
    conn.request(method, target, body=body if body or method in ("PUT", "POST") else None,
                 headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    sys.stderr.write(f"HTTP {resp.status} {resp.reason}\n")
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return 0 if 200 <= resp.status < 300 or resp.status in ok else 1


# ---------------------------------------------------------------- S3 (AWS Signature Version 4)

def _sha256(b):
    return hashlib.sha256(b).hexdigest()


def _hmac(key, msg):
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def _s3_quote(s):
    return urllib.parse.quote(s, safe="-_.~")


def _qsl(query):
    """Query pairs, decoded; a literal '+' stays '+' (S3 and Azure do not treat it as space)."""
    return urllib.parse.parse_qsl(query.replace("+", "%2B"), keep_blank_values=True)


def _s3_quote_path(path):
    """Percent-encode each segment once (input may be raw or already encoded)."""
    return "/".join(_s3_quote(urllib.parse.unquote(seg)) for seg in path.split("/"))


def s3_request(a):
    u = parse_loopback(a.url)
    access = read_secret(a.access_key_file)
    secret = read_secret(a.secret_key_file)
    body = read_body(a.data)
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    host = u.netloc
    payload_hash = _sha256(body)
    headers = {"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
    for h in a.header:
        k, v = h.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    # Canonical URI: each segment URI-encoded once (S3 does not double-encode).
    canon_uri = _s3_quote_path(u.path or "/")
    query = _qsl(u.query)
    canon_query = "&".join(f"{_s3_quote(k)}={_s3_quote(v)}" for k, v in sorted(query))
    names = sorted(headers)
    canon_headers = "".join(f"{n}:{' '.join(str(headers[n]).split())}\n" for n in names)
    signed = ";".join(names)
    creq = "\n".join([a.method, canon_uri, canon_query, canon_headers, signed, payload_hash])
    scope = f"{day}/{a.region}/s3/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, _sha256(creq.encode("utf-8"))])
    k = _hmac(("AWS4" + secret).encode("utf-8"), day)
    k = _hmac(k, a.region)
    k = _hmac(k, "s3")
    k = _hmac(k, "aws4_request")
    sig = hmac.new(k, sts.encode("utf-8"), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
                                f"SignedHeaders={signed}, Signature={sig}")
    if body:
        headers["content-length"] = str(len(body))
    return send(a.method, u, canon_uri, canon_query, headers, body, a.ok, a.cacert)


# ---------------------------------------------------------------- Azure Blob (SharedKey, SAS)

def azure_request(a):
    u = parse_loopback(a.url)
    key = base64.b64decode(read_secret(a.key_file))
    body = read_body(a.data)
    headers = {
        "x-ms-date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%a, %d %b %Y %H:%M:%S GMT"),
        "x-ms-version": AZURE_API_VERSION,
    }
    for h in a.header:
        k, v = h.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    # A PUT on /<account>/<container>/<blob> without comp= or restype= uploads a block blob.
    if a.method == "PUT" and len(u.path.strip("/").split("/", 2)) == 3 \
            and "comp=" not in u.query and "restype=" not in u.query:
        headers.setdefault("x-ms-blob-type", "BlockBlob")
    length = str(len(body)) if body else ""
    if body or a.method in ("PUT", "POST"):
        headers["content-length"] = str(len(body))
    std = [headers.get(n, "") for n in ("content-encoding", "content-language")]
    std.append(length)
    std += [headers.get(n, "") for n in ("content-md5", "content-type", "date",
                                          "if-modified-since", "if-match", "if-none-match",
                                          "if-unmodified-since", "range")]
    canon_headers = "".join(f"{n}:{headers[n].strip()}\n"
                            for n in sorted(h for h in headers if h.startswith("x-ms-")))
    # Path-style emulator URLs already start with /<account>; the resource is /<account><path>,
    # with the path percent-encoded as sent.
    path = _s3_quote_path(u.path or "/")
    canon_res = f"/{a.account}{path}"
    params = {}
    for k, v in _qsl(u.query):
        params.setdefault(k.lower(), []).append(v)
    for k in sorted(params):
        canon_res += f"\n{k}:{','.join(sorted(params[k]))}"
    sts = a.method + "\n" + "\n".join(std) + "\n" + canon_headers + canon_res
    sig = base64.b64encode(hmac.new(key, sts.encode("utf-8"), hashlib.sha256).digest()).decode()
    headers["authorization"] = f"SharedKey {a.account}:{sig}"
    query = "&".join(f"{_s3_quote(k)}={_s3_quote(v)}"
                     for k, v in _qsl(u.query))
    return send(a.method, u, path, query, headers, body, a.ok)


def azure_sas(a):
    key = base64.b64decode(read_secret(a.key_file))
    v = a.version
    if a.kind == "container":
        if not a.container:
            sys.exit("objreq: azure-sas container needs --container")
        # Service SAS, version 2020-12-06 and later.
        fields = [a.permissions, "", a.expiry, f"/blob/{a.account}/{a.container}", "", "", "",
                  v, "c", "", "", "", "", "", "", ""]
        sts = "\n".join(fields)
        q = [("sv", v), ("sr", "c"), ("sp", a.permissions), ("se", a.expiry)]
    else:
        # Account SAS, version 2020-12-06 and later (note the trailing newline).
        fields = [a.account, a.permissions, "b", "sco", "", a.expiry, "", "", v, ""]
        sts = "\n".join(fields) + "\n"
        q = [("sv", v), ("ss", "b"), ("srt", "sco"), ("sp", a.permissions), ("se", a.expiry)]
    sig = base64.b64encode(hmac.new(key, sts.encode("utf-8"), hashlib.sha256).digest()).decode()
    q.append(("sig", sig))
    print(urllib.parse.urlencode(q, quote_via=urllib.parse.quote, safe=""))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    s3 = sub.add_parser("s3")
    s3.add_argument("method")
    s3.add_argument("url")
    s3.add_argument("--access-key-file", required=True)
    s3.add_argument("--secret-key-file", required=True)
    s3.add_argument("--region", default="us-east-1")
    s3.add_argument("--data")
    s3.add_argument("-H", "--header", action="append", default=[])
    s3.add_argument("--ok", type=int, action="append", default=[])
    s3.add_argument("--cacert")
    s3.set_defaults(fn=s3_request)

    az = sub.add_parser("azure")
    az.add_argument("method")
    az.add_argument("url")
    az.add_argument("--account", required=True)
    az.add_argument("--key-file", required=True)
    az.add_argument("--data")
    az.add_argument("-H", "--header", action="append", default=[])
    az.add_argument("--ok", type=int, action="append", default=[])
    az.set_defaults(fn=azure_request)

    sas = sub.add_parser("azure-sas")
    sas.add_argument("kind", choices=["container", "account"])
    sas.add_argument("--account", required=True)
    sas.add_argument("--key-file", required=True)
    sas.add_argument("--container")
    sas.add_argument("--permissions", default="racwdl")
    sas.add_argument("--expiry", default="2099-12-31T00:00:00Z")
    sas.add_argument("--version", default=AZURE_API_VERSION)
    sas.set_defaults(fn=azure_sas)

    a = p.parse_args()
    if hasattr(a, "method"):
        a.method = a.method.upper()
    sys.exit(a.fn(a))


if __name__ == "__main__":
    main()
