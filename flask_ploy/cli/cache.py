"""``flask ploy cache get|set|delete|ttl|incr|count|clear``: one Cache binding."""

from __future__ import annotations

import click

from ..cache import Cache, MemoryBackend
from .common import bad_argument, check_binding, current_bindings, n_keys, ploy_cli, reporting


def _cache(name: str) -> Cache:
    """A Cache on the backend of binding *name* that raises when the backend fails.

    The CLI must not report a miss when the server is down, whatever
    ``PLOY_CACHE_ON_ERROR`` says. A ``memory://`` binding is refused: this
    command's process would read and write a cache of its own, gone when it
    exits.
    """
    check_binding(name, "cache")
    bindings = current_bindings()
    cache = bindings.caches[name]
    if isinstance(cache.backend, MemoryBackend):
        raise click.ClickException(
            f"{name} uses memory://, a cache in each process's own memory: this command"
            " would read and write a cache of its own, gone when it exits, never the"
            " app's. Leave PLOY_CACHE_URL unset for a SQLite file in the instance folder"
            " that the app's processes and this command share, or use redis://"
        )
    s = bindings.settings
    return Cache(
        cache.name,
        cache.resource,
        cache.backend,
        prefix=s.cache_key_prefix,
        max_key_bytes=s.max_key_bytes,
        max_value_bytes=s.max_value_bytes,
        on_error="raise",
        default_ttl=s.cache_default_ttl,
    )


@ploy_cli.group("cache")
def cache_group() -> None:
    """Read, write, count and clear a Cache binding.

    Not on memory://: a command has a process, and so a memory:// cache, of
    its own.
    """


@cache_group.command("get")
@click.argument("binding")
@click.argument("key")
def cache_get(binding: str, key: str) -> None:
    """Print the value of KEY; exit 1 if it is missing or expired."""
    cache = _cache(binding)
    with reporting(), bad_argument("key"):
        value = cache.get(key)
    if value is None:
        raise click.ClickException(f"{binding} has no key {key!r} (or it expired)")
    click.echo(value)


@cache_group.command("set")
@click.argument("binding")
@click.argument("key")
@click.argument("value")
@click.option("--ttl", type=int, default=None, help="Expire after this many seconds (>= 1).")
def cache_set(binding: str, key: str, value: str, ttl: int | None) -> None:
    """Store VALUE under KEY, for --ttl seconds or until evicted."""
    cache = _cache(binding)
    with reporting(), bad_argument("key", "value", "ttl"):
        cache.set(key, value, ttl=ttl)


@cache_group.command("delete")
@click.argument("binding")
@click.argument("key")
def cache_delete(binding: str, key: str) -> None:
    """Delete KEY. Deleting a missing key is not an error."""
    cache = _cache(binding)
    with reporting(), bad_argument("key"):
        deleted = cache.delete(key)
    click.echo(f"Deleted {key!r}." if deleted else f"{binding} had no key {key!r}.")


@cache_group.command("ttl")
@click.argument("binding")
@click.argument("key")
def cache_ttl(binding: str, key: str) -> None:
    """Print the seconds until KEY expires, or 'no expiry'; exit 1 if it is missing."""
    cache = _cache(binding)
    with reporting(), bad_argument("key"):
        left = cache.ttl(key)
    if left == 0:
        raise click.ClickException(f"{binding} has no key {key!r} (or it expired)")
    click.echo("no expiry" if left is None else str(left))


@cache_group.command("incr")
@click.argument("binding")
@click.argument("key")
@click.option("--amount", type=int, default=1, show_default=True, help="What to add (may be < 0).")
@click.option(
    "--ttl", type=int, default=None, help="Seconds to live, if this creates the key (>= 1)."
)
def cache_incr(binding: str, key: str, amount: int, ttl: int | None) -> None:
    """Add --amount to the integer at KEY atomically (a missing key counts from 0); print it."""
    cache = _cache(binding)
    with reporting(), bad_argument("key", "amount", "ttl"):
        click.echo(cache.incr(key, amount, ttl=ttl))


@cache_group.command("count")
@click.argument("binding")
def cache_count(binding: str) -> None:
    """Print the number of unexpired keys of BINDING's resource (scans Redis)."""
    cache = _cache(binding)
    with reporting():
        click.echo(cache.count())


@cache_group.command("clear")
@click.argument("binding")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def cache_clear(binding: str, yes: bool) -> None:
    """Delete every key of BINDING's resource (other bindings on it too)."""
    cache = _cache(binding)
    if not yes:
        click.confirm(
            f"Delete every key of {binding} (resource {cache.resource!r}, on"
            f" {cache.backend.display_url})?",
            abort=True,
        )
    with reporting():
        try:
            n = cache.clear()
        except cache.backend.errors as exc:
            raise click.ClickException(f"{binding}: {type(exc).__name__}: {exc}") from None
    click.echo(f"Deleted {n_keys(n)} of {binding} (resource {cache.resource!r}).")
