"""Keys of an external authorization server, fetched through the one SSRF-safe fetcher."""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bastion.errors import BastionError
from bastion.oauth.rfc8414 import well_known_paths

__all__ = ["JsonFetcher", "RemoteKeySource", "UnusableKeys"]


class UnusableKeys(BastionError):
    pass


class JsonFetcher(Protocol):
    async def get_json(self, url: str) -> dict[str, Any]: ...


_PUBLIC_KTY = frozenset({"EC", "RSA", "OKP"})


class RemoteKeySource:
    """JWKS of ``issuer``: from ``jwks_uri`` if given, else from the issuer's metadata."""

    def __init__(self, fetcher: JsonFetcher, issuer: str, jwks_uri: str | None = None) -> None:
        self.fetcher = fetcher
        self.issuer = issuer
        self.jwks_uri = jwks_uri
        self._keys: KeySet | None = None

    async def key_set(self) -> KeySet:
        if self._keys is None:
            return await self.refresh()
        return self._keys

    async def refresh(self) -> KeySet:
        uri = self.jwks_uri or await self._discover_jwks_uri()
        document = await self.fetcher.get_json(uri)
        keys = document.get("keys")
        if not isinstance(keys, list):
            raise UnusableKeys(f"the JWKS of {self.issuer} has no keys array")
        # Only asymmetric public keys: an "oct" key in a JWKS would make HS256 forgeable.
        public = [k for k in keys if isinstance(k, dict) and k.get("kty") in _PUBLIC_KTY
                  and "d" not in k and k.get("use", "sig") == "sig"]
        try:
            self._keys = KeySet.import_key_set({"keys": public})
        except (JoseError, ValueError, TypeError) as exc:
            raise UnusableKeys(f"the JWKS of {self.issuer} cannot be read") from exc
        return self._keys

    async def _discover_jwks_uri(self) -> str:
        last: BastionError | None = None
        p = urlsplit(self.issuer)
        for path in well_known_paths(self.issuer):
            url = f"{p.scheme}://{p.netloc}{path}"
            try:
                meta = await self.fetcher.get_json(url)
            except BastionError as exc:
                last = exc
                continue
            if meta.get("issuer") != self.issuer:
                raise UnusableKeys(f"the metadata at {url} names another issuer")
            uri = meta.get("jwks_uri")
            if not isinstance(uri, str):
                raise UnusableKeys(f"the metadata of {self.issuer} has no jwks_uri")
            self.jwks_uri = uri
            return uri
        raise UnusableKeys(f"no metadata found for {self.issuer}") from last
