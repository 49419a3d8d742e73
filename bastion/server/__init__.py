"""The built-in OAuth 2.1 authorization server (L3): Starlette routes over the pure rules in
``bastion.oauth`` and the state in ``bastion.storage``."""

from bastion.server.app import build_authorization_server, build_authorization_server_routes
from bastion.server.clients import DocumentFetcher
from bastion.server.tokens import mint_access_token

__all__ = [
    "DocumentFetcher",
    "build_authorization_server",
    "build_authorization_server_routes",
    "mint_access_token",
]
