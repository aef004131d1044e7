"""Test harness for etls-auth: a real Envoy 1.40 with the filter, real HTTP upstreams in threads,
token helpers and an HTTP client that shows every Set-Cookie.

Modules:
  paths      repo paths, the wasm and the Envoy binary (missing tools fail loudly, never skip)
  envoy      Envoy bootstrap configs and a process wrapper (start, wait ready, stop by PID, log)
  upstreams  threaded HTTP servers: echo app, stub login API, stub refresh server
  tokens     mint and decode HS256 JWTs with PyJWT
  client     raw HTTP/1.1 client (no redirects, raw paths, all Set-Cookie) and Set-Cookie parser
  node       the jose interop scripts in tests/node
"""
