"""The node's RPC server foundation: JSON-RPC 2.0 over HTTP (hypercorn-trio) + metrics.

Modules, each owning one thing:

- ``errors``  -- the ``RpcError`` classes and what each JSON-RPC code means to a client;
- ``params``  -- declarative param schemas (``Int``, ``Hex``, ``Str``...) and ``Param``;
- ``auth``    -- API keys per member organisation (stored hashed), roles, open mode;
- ``registry`` -- ``MethodRegistry``: methods, their declarations, the OpenRPC document;
- ``jsonrpc`` -- ``Dispatcher``: the JSON-RPC 2.0 wire protocol, pure, bytes in/out;
- ``http``    -- the ASGI app (/, /rpc, /metrics, /health) and ``serve_http``.

Typical use by the node::

    rpc = MethodRegistry(title="dvp node", version=__version__)
    register_node_methods(rpc, node)        # @rpc.method(...) handlers
    app = make_app(rpc, CredentialStore.from_config(cfg["api_credentials"]), metrics)
    port = await nursery.start(serve_http, app, cfg["rpc_host"], cfg["rpc_port"])
"""

from node.rpc.auth import ApiKey, CredentialStore, Principal, generate_api_key, hash_api_key
from node.rpc.errors import (
    Busy,
    ConsentRequired,
    InternalError,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    NotFound,
    ParseError,
    Pruned,
    Rejected,
    RpcError,
    Timeout,
    Unauthorised,
)
from node.rpc.http import RpcApp, RpcMetrics, make_app, serve_http
from node.rpc.jsonrpc import Dispatcher, Limits
from node.rpc.params import Bool, Choice, Hex, Int, ListOf, Param, Str
from node.rpc.registry import CallContext, Method, MethodRegistry, Result

__all__ = [
    "ApiKey",
    "Bool",
    "Busy",
    "CallContext",
    "Choice",
    "ConsentRequired",
    "CredentialStore",
    "Dispatcher",
    "Hex",
    "Int",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "Limits",
    "ListOf",
    "Method",
    "MethodNotFound",
    "MethodRegistry",
    "NotFound",
    "ParseError",
    "Param",
    "Principal",
    "Pruned",
    "Rejected",
    "Result",
    "RpcApp",
    "RpcError",
    "RpcMetrics",
    "Str",
    "Timeout",
    "Unauthorised",
    "generate_api_key",
    "hash_api_key",
    "make_app",
    "serve_http",
]
