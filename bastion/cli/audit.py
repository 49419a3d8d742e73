"""``bastion audit verify|export|tail|public-key``: read and check the audit trail offline.

The store is named by one flag: ``--data-dir DIR`` (``DIR/audit.db``), ``--db FILE`` (a SQLite
file), ``--url postgresql://...`` (``?schema=`` as in the configuration), ``--jsonl FILE`` (a
mirror or an export), or ``--config FILE`` (the data folder and storage URL it names).

``verify`` also lists allowed calls whose decision is in the log but whose upstream outcome is
not (calls still running, or outcomes lost when the process was killed): a warning, not a
break of the chain, unless ``--require-outcomes``.

Exit codes: 0 all good, 1 verification failed (the first bad record is named), 2 usage or the
store could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from bastion.audit.checkpoint import Checkpoint
from bastion.audit.export import export_lines, load, normalise_since, tail
from bastion.audit.keys import AUDIT_KEY_DIR, AuditSigner, load_public_keys
from bastion.audit.log import open_sink
from bastion.audit.private import create_private_file
from bastion.audit.sinks.base import AuditSink
from bastion.audit.sinks.jsonl import JsonlContents, parse_jsonl
from bastion.audit.verify import Report, verify

__all__ = ["main", "register"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MAX_PROBLEMS_SHOWN = 20


class UsageError(Exception):
    pass


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("audit", help="verify, export and follow the audit trail")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    v = sub.add_parser("verify", help="check the chain and its signed checkpoints; name the "
                                      "first bad record")
    _location(v)
    v.add_argument("--public-key", type=Path, action="append", default=[], metavar="FILE",
                   help="the audit public key(s), a JWKS or JWK from `bastion audit "
                        "public-key` (default with --data-dir/--config: the data folder's)")
    v.add_argument("--anchor", type=Path, action="append", default=[], metavar="FILE",
                   help="JSONL with checkpoints kept elsewhere (e.g. an earlier export): "
                        "catches a tail removed together with its checkpoints")
    v.add_argument("--require-signed", action="store_true",
                   help="fail if records after the last checkpoint exist (default: warn)")
    v.add_argument("--require-outcomes", action="store_true",
                   help="fail if an allowed call has no upstream outcome record (default: "
                        "warn; a call still running has none yet)")
    v.add_argument("--since", help="verify only the records from this time (RFC 3339) on")
    v.set_defaults(func=_verify)

    e = sub.add_parser("export", help="write records of every writer merged in time order, "
                                      "with their checkpoints (for a SIEM)")
    _location(e)
    e.add_argument("--since", help="records from this time on (RFC 3339, e.g. 2026-01-31T00:00Z)")
    e.add_argument("--format", choices=["jsonl"], default="jsonl")
    e.add_argument("--output", "-o", type=Path, help="file to write (default: standard output)")
    e.set_defaults(func=_export)

    t = sub.add_parser("tail", help="show the latest records")
    _location(t)
    t.add_argument("-n", "--lines", type=int, default=20, help="how many (default 20)")
    t.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    t.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    t.add_argument("--format", choices=["text", "jsonl"], default="text")
    t.set_defaults(func=_tail)

    k = sub.add_parser("public-key", help="print the public keys that verify checkpoints (JWKS)")
    k.add_argument("--data-dir", type=Path, help="data folder (its audit-keys/)")
    k.add_argument("--config", type=Path, help="configuration file naming the data folder")
    k.add_argument("--output", "-o", type=Path, help="file to write (default: standard output)")
    k.set_defaults(func=_public_key)


def _location(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--data-dir", type=Path, help="data folder (its audit.db)")
    where.add_argument("--db", type=Path, help="SQLite audit database file")
    where.add_argument("--url", help="PostgreSQL URL (postgresql://...; ?schema=NAME)")
    where.add_argument("--jsonl", type=Path, help="JSONL audit file (a mirror or an export)")
    where.add_argument("--config", type=Path, help="configuration file (its data folder and "
                                                   "storage URL)")


# --- helpers ---------------------------------------------------------------------------------


def _data_dir(args: argparse.Namespace) -> Path | None:
    if getattr(args, "data_dir", None) is not None:
        return Path(args.data_dir)
    if getattr(args, "config", None) is not None:
        from bastion.config.load import load_config

        return load_config(Path(args.config)).data_dir
    return None


def _check_location(args: argparse.Namespace) -> None:
    """Refuse a missing file up front: opening it would create an empty store."""
    for name in ("jsonl", "db"):
        path = getattr(args, name, None)
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{path}: no such file")
    if getattr(args, "data_dir", None) is not None:
        db = Path(args.data_dir) / "audit.db"
        if not db.is_file():
            raise UsageError(f"{db}: no audit database there")


async def _open(args: argparse.Namespace) -> AuditSink:
    if args.jsonl is not None:
        return await open_sink(jsonl=args.jsonl)
    if args.db is not None:
        return await open_sink(db=args.db)
    if args.url is not None:
        return await open_sink(url=args.url)
    if args.config is not None:
        from bastion.config.load import load_config

        config = load_config(Path(args.config))
        url = config.storage_url
        if url and url.startswith(("postgresql://", "postgres://")):
            return await open_sink(url=url)
        return await open_sink(data_dir=config.data_dir)
    if args.data_dir is not None:
        return await open_sink(data_dir=Path(args.data_dir))
    raise UsageError("name the audit store: --data-dir, --db, --url, --jsonl or --config")


def _read_jsonl(path: Path) -> JsonlContents:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from exc
    return parse_jsonl(data.decode("utf-8", "replace").splitlines(),
                       final_newline=not data or data.endswith(b"\n"))


def _public_keys(args: argparse.Namespace) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for path in args.public_key:
        try:
            keys.update(load_public_keys(json.loads(Path(path).read_text("utf-8"))))
        except (OSError, ValueError, KeyError) as exc:
            raise UsageError(f"{path}: not an audit public key (JWKS or JWK): {exc}") from exc
    if keys:
        return keys
    data_dir = _data_dir(args)
    if data_dir is not None and (data_dir / AUDIT_KEY_DIR).is_dir():
        print(f"note: using the public keys in {data_dir / AUDIT_KEY_DIR}; for evidence, pass "
              "a copy kept elsewhere with --public-key", file=sys.stderr)
        return AuditSigner.load_or_create(data_dir).public_keys()
    raise UsageError("verify needs the audit public key: --public-key FILE (from `bastion "
                     "audit public-key`), or --data-dir/--config to use the data folder's")


def _since(args: argparse.Namespace) -> str | None:
    if not args.since:
        return None
    try:
        return normalise_since(args.since)
    except ValueError as exc:
        raise UsageError(f"--since {args.since!r}: not an RFC 3339 time ({exc})") from exc


def _run(args: argparse.Namespace, make: Any) -> int:
    try:
        _check_location(args)
        result: int = asyncio.run(make(args))
    except UsageError as exc:
        print(f"bastion audit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError) as exc:
        print(f"bastion audit: cannot read the audit store: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # driver errors (sqlite3, asyncpg) have no common base
        print(f"bastion audit: cannot read the audit store: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return EXIT_USAGE
    return result


# --- verbs -----------------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    return _run(args, _verify_async)


async def _verify_async(args: argparse.Namespace) -> int:
    keys = _public_keys(args)
    since = _since(args)
    warnings: list[str] = []
    anchors: list[Checkpoint] = []
    for path in args.anchor:
        anchors.extend(_read_jsonl(path).checkpoints)
    if args.jsonl is not None:
        contents = _read_jsonl(args.jsonl)
        for number, why in contents.bad_lines:
            print(f"FAILED: line {number} of {args.jsonl}: {why}")
        if contents.bad_lines:
            return EXIT_FAILED
        records, checkpoints = contents.records, contents.checkpoints
        warnings.extend(contents.warnings)
        if since is not None:
            records = [r for r in records if str(r.get("time", "")) >= since]
    else:
        sink = await _open(args)
        try:
            records, checkpoints = await load(sink, since=since)
        finally:
            await sink.close()
    report = verify(records, [*checkpoints, *anchors], keys, partial=since is not None,
                    require_signed=args.require_signed, require_outcomes=args.require_outcomes)
    _print_report(report, warnings, sys.stdout)
    return EXIT_OK if report.ok else EXIT_FAILED


def _print_report(report: Report, extra_warnings: Sequence[str], out: TextIO) -> None:
    for warning in [*extra_warnings, *report.warnings]:
        print(f"warning: {warning}", file=out)
    if report.without_outcome_count:
        print("  allowed calls without an outcome record:", file=out)
        for missing in report.without_outcome[:MAX_PROBLEMS_SHOWN]:
            print(f"    {missing.describe()}", file=out)
        if report.without_outcome_count > MAX_PROBLEMS_SHOWN:
            print(f"    ... and {report.without_outcome_count - MAX_PROBLEMS_SHOWN} more",
                  file=out)
    if report.ok:
        print(f"ok: {report.records} records from {len(report.writers)} writer(s) verified",
              file=out)
    else:
        first = report.first_problem
        assert first is not None
        print(f"FAILED: first bad record: {first.describe()}", file=out)
        for problem in report.problems[1:MAX_PROBLEMS_SHOWN]:
            print(f"  also {problem.describe()}", file=out)
        if len(report.problems) > MAX_PROBLEMS_SHOWN:
            print(f"  ... and {len(report.problems) - MAX_PROBLEMS_SHOWN} more", file=out)
    for w in report.writers:
        span = "no records" if w.last_seq is None else f"seq {w.first_seq}..{w.last_seq}"
        print(f"  writer {w.writer}: {w.records} records, {span}, signed through seq "
              f"{w.signed_through} ({w.checkpoints} checkpoint(s))", file=out)


def _export(args: argparse.Namespace) -> int:
    loaded: list[tuple[list[dict[str, Any]], list[Checkpoint]]] = []

    async def fetch(args: argparse.Namespace) -> int:
        since = _since(args)
        sink = await _open(args)
        try:
            loaded.append(await load(sink, since=since))
        finally:
            await sink.close()
        return EXIT_OK

    code = _run(args, fetch)
    if code != EXIT_OK:
        return code
    records, checkpoints = loaded[0]
    lines = export_lines(records, checkpoints)
    if args.output is not None:
        output = Path(args.output)
        create_private_file(output)  # 0600 when made here: the records name people and calls
        with output.open("w", encoding="utf-8") as out:
            out.writelines(line + "\n" for line in lines)
    else:
        sys.stdout.writelines(line + "\n" for line in lines)
    print(f"exported {len(records)} records, {len(checkpoints)} checkpoints", file=sys.stderr)
    return EXIT_OK


def _tail(args: argparse.Namespace) -> int:
    if args.lines < 1:
        print("bastion audit: -n must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    return _run(args, _tail_async)


async def _tail_async(args: argparse.Namespace) -> int:
    sink = await _open(args)
    try:
        seen: dict[str, int] = {}
        batch = await tail(sink, args.lines)
        while True:
            for record in batch:
                writer, seq = str(record.get("writer")), int(record.get("seq") or 0)
                seen[writer] = max(seen.get(writer, 0), seq)
                print(_show(record, args.format), flush=True)
            if not args.follow:
                return EXIT_OK
            await asyncio.sleep(args.interval)
            batch = await tail(sink, args.lines, after=seen)
    finally:
        await sink.close()


def _show(record: Any, fmt: str) -> str:
    if fmt == "jsonl":
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    parts = [str(record.get("time", "")), f"{record.get('writer')}#{record.get('seq')}",
             str(record.get("kind", ""))]
    principal = record.get("principal")
    if isinstance(principal, dict):
        parts.append(f"sub={principal.get('sub')}")
    for name in ("client_id", "mount", "method", "tool", "decision", "rule", "reason"):
        if record.get(name) is not None:
            parts.append(f"{name}={record[name]}")
    upstream = record.get("upstream")
    if isinstance(upstream, dict):
        parts.append(f"upstream={upstream.get('outcome')}/{upstream.get('latency_us')}us")
    return " ".join(parts)


def _public_key(args: argparse.Namespace) -> int:
    try:
        data_dir = _data_dir(args)
    except UsageError as exc:
        print(f"bastion audit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if data_dir is None:
        print("bastion audit: name the data folder: --data-dir or --config", file=sys.stderr)
        return EXIT_USAGE
    if not (data_dir / AUDIT_KEY_DIR).is_dir():
        print(f"bastion audit: {data_dir / AUDIT_KEY_DIR}: no audit keys there (they are made "
              "when the audit log first opens)", file=sys.stderr)
        return EXIT_USAGE
    text = json.dumps(AuditSigner.load_or_create(data_dir).public_jwks(), indent=2) + "\n"
    if args.output is not None:
        Path(args.output).write_text(text, "utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bastion.cli.audit ...``: the ``audit`` verb on its own."""
    parser = argparse.ArgumentParser(prog="bastion")
    register(parser.add_subparsers(dest="verb", metavar="VERB", required=True))
    args = parser.parse_args(["audit", *(sys.argv[1:] if argv is None else argv)])
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
