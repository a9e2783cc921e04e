"""What every client sub-command shares: connection flags and human (traceback-free) errors."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from typing import Callable

import httpx

from fwemu.client.control_plane import ControlPlaneClient
from fwemu.client.errors import FwApiError, FwError
from fwemu.client.retry import RetryPolicy

LOCAL_BASE_URL = "http://127.0.0.1:8700"   # where `fwemu serve` listens by default
LOCAL_DEV_API_KEY = "fw-local-dev"          # the emulator's built-in development key
# A person is waiting at the terminal: give up on a dead server within seconds, not minutes.
CLI_RETRY = RetryPolicy(max_retries=3, max_elapsed_s=10.0)


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", default=None,
                        help=f"control plane URL (default: $FIREWORKS_BASE_URL, else {LOCAL_BASE_URL})")
    parser.add_argument("--api-key", default=None,
                        help=f"API key (default: $FIREWORKS_API_KEY, else the dev key {LOCAL_DEV_API_KEY})")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the client does")


def connection(args: argparse.Namespace) -> tuple[str, str]:
    """(base_url, api_key): flag, else environment, else the local emulator's defaults."""
    base_url = args.base_url or os.environ.get("FIREWORKS_BASE_URL") or LOCAL_BASE_URL
    api_key = args.api_key or os.environ.get("FIREWORKS_API_KEY") or LOCAL_DEV_API_KEY
    return base_url, api_key


def control_plane(args: argparse.Namespace) -> ControlPlaneClient:
    base_url, api_key = connection(args)
    return ControlPlaneClient(base_url, api_key, retry=CLI_RETRY)


def setup_logging(args: argparse.Namespace) -> None:
    level = logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def human_errors(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the errors a user can cause or fix into one `error: ...` line and exit status 1."""

    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        setup_logging(args)
        try:
            return run(args)
        except FwApiError as exc:
            print(f"error: the server refused: {exc.message} (HTTP {exc.status}"
                  f"{', ' + exc.status_name if exc.status_name else ''})", file=sys.stderr)
        except FwError as exc:
            print(f"error: {exc}", file=sys.stderr)
        except httpx.HTTPError as exc:
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
        return 1

    return wrapper


def table(rows: list[list[str]], headers: list[str]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in [headers, *rows]]
    return "\n".join(lines)
