"""pytest plugin (bench only): run the gateway's own tests with the raw upstream prototype.

    PYTHONPATH=bench/experiments .venv/bin/python -m pytest tests/gateway -p raw_upstream_plugin

Loaded before the test packages' conftest files, so their ``from
bastion.gateway.upstream_http import HttpUpstream`` gets the prototype.
"""

from raw_upstream import RawHttpUpstream

import bastion.gateway.upstream_http as upstream_http
import bastion.runtime as runtime

upstream_http.HttpUpstream = RawHttpUpstream  # type: ignore[misc,assignment]
runtime.HttpUpstream = RawHttpUpstream  # type: ignore[misc,assignment]
