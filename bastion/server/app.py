"""The built-in authorization server as Starlette routes, mounted by the gateway at its origin.

``build_authorization_server_routes(config, store, keys, clock, cimd_fetcher=None)`` returns
the routes; endpoint paths are the issuer's path plus ``/authorize``, ``/token`` and so on, and
the metadata is served at every well-known location for that issuer (RFC 8414 path insertion,
OIDC appended form).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bastion.audit import AuditLog
from bastion.clock import Clock
from bastion.config.model import BastionConfig
from bastion.keys import SigningKeys
from bastion.oauth import rfc8414
from bastion.server import authorize as authz
from bastion.server.clients import CimdResolver, ClientRegistry, DocumentFetcher
from bastion.server.context import AuthorizationServer, resource_table
from bastion.server.introspection import introspect_endpoint, revoke_endpoint
from bastion.server.registration import RegistrationEndpoint
from bastion.server.responses import json_response
from bastion.server.token import token_endpoint
from bastion.storage.base import Store

__all__ = ["TOKEN_ENDPOINT_AUTH_METHODS", "build_authorization_server",
           "build_authorization_server_routes"]

# private_key_jwt is not implemented yet, so it is not advertised.
TOKEN_ENDPOINT_AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post",
                               "private_key_jwt")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")

Handler = Callable[[AuthorizationServer, Request], Awaitable[Response]]


def build_authorization_server(
    config: BastionConfig,
    store: Store,
    keys: SigningKeys,
    clock: Clock,
    cimd_fetcher: DocumentFetcher | None = None,
    audit: AuditLog | None = None,
) -> AuthorizationServer:
    settings = config.authorization_server
    resolver = CimdResolver(cimd_fetcher, settings, clock) if cimd_fetcher is not None else None
    registry = ClientRegistry(
        settings, store, clock, resolver, allow_http_loopback=settings.allow_http_loopback,
        jwks_fetcher=cimd_fetcher,
    )
    return AuthorizationServer(
        config=config, store=store, keys=keys, clock=clock, clients=registry,
        resources=resource_table(config), audit=audit,
    )


def build_authorization_server_routes(
    config: BastionConfig,
    store: Store,
    keys: SigningKeys,
    clock: Clock,
    cimd_fetcher: DocumentFetcher | None = None,
    audit: AuditLog | None = None,
) -> list[BaseRoute]:
    server = build_authorization_server(config, store, keys, clock, cimd_fetcher, audit)
    return routes_for(server)


def routes_for(server: AuthorizationServer) -> list[BaseRoute]:
    config = server.config
    settings = config.authorization_server
    prefix = rfc8414.issuer_path(server.issuer)

    def bind(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await handler(server, request)

        return endpoint

    async def metadata(request: Request) -> Response:
        doc = rfc8414.metadata_document(
            issuer=server.issuer,
            scopes_supported=server.all_scopes(),
            token_endpoint_auth_methods=TOKEN_ENDPOINT_AUTH_METHODS,
            grant_types=GRANT_TYPES,
            registration=settings.dcr_enabled,
            cimd=server.clients.cimd_supported,
        )
        return json_response(doc, headers={"Cache-Control": "public, max-age=300"})

    async def jwks(request: Request) -> Response:
        return json_response(
            server.keys.public_jwks(), headers={"Cache-Control": "public, max-age=300"}
        )

    routes: list[BaseRoute] = [
        Route(path, metadata, methods=["GET"]) for path in rfc8414.well_known_paths(server.issuer)
    ]
    routes += [
        Route(prefix + "/jwks.json", jwks, methods=["GET"]),
        Route(prefix + "/authorize", bind(authz.authorize), methods=["GET"]),
        Route(prefix + "/login", bind(authz.login_get), methods=["GET"]),
        Route(prefix + "/login", bind(authz.login_post), methods=["POST"]),
        Route(prefix + "/consent", bind(authz.consent_get), methods=["GET"]),
        Route(prefix + "/consent", bind(authz.consent_post), methods=["POST"]),
        Route(prefix + "/token", bind(token_endpoint), methods=["POST"]),
        Route(prefix + "/revoke", bind(revoke_endpoint), methods=["POST"]),
        Route(prefix + "/introspect", bind(introspect_endpoint), methods=["POST"]),
    ]
    if settings.dcr_enabled:
        registration = RegistrationEndpoint(server)
        routes.append(Route(prefix + "/register", registration.handle, methods=["POST"]))
    return routes
