"""Typed reads of the environment, and the error a bad value raises.

A leaf module: configuration (otp_service/config.py) and every adapter's settings read the environment through it, and
it imports nothing of the service's, so configuration flows one way: config -> adapters' settings -> envreader.
"""
from __future__ import annotations

import builtins
import os
from typing import Mapping, overload


class ConfigError(ValueError):
    """A variable is missing or malformed. The message names it."""


class EnvReader:
    """Typed reads of OTP_* variables; each failure names the variable and says what was expected.

    The methods are named after the types they return, so inside the class those names are the methods: the
    annotations spell the types builtins.str, builtins.int... for the type checker."""

    def __init__(self, environ: Mapping[builtins.str, builtins.str] | None = None):
        self.environ = os.environ if environ is None else environ

    def raw(self, name: builtins.str) -> builtins.str | None:
        value = self.environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    @overload
    def str(self, name: builtins.str, default: builtins.str) -> builtins.str: ...
    @overload
    def str(self, name: builtins.str, default: None = None) -> builtins.str | None: ...

    def str(self, name: builtins.str, default: builtins.str | None = None) -> builtins.str | None:
        value = self.raw(name)
        return default if value is None else value

    def int(
        self, name: builtins.str, default: builtins.int, minimum: builtins.int | None = None,
        maximum: builtins.int | None = None,
    ) -> builtins.int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
        if minimum is not None and number < minimum or maximum is not None and number > maximum:
            bounds = f"{minimum if minimum is not None else '-inf'}..{maximum if maximum is not None else 'inf'}"
            raise ConfigError(f"{name} must be in {bounds}, got {number}")
        return number

    def float(self, name: builtins.str, default: builtins.float, minimum: builtins.float = 0.0) -> builtins.float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
        if not number >= minimum or number != number or number == float("inf"):
            raise ConfigError(f"{name} must be a finite number >= {minimum}, got {value!r}")
        return number

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")

    def list(self, name: builtins.str) -> tuple[builtins.str, ...]:
        value = self.raw(name)
        if value is None:
            return ()
        return tuple(item.strip() for item in value.split(",") if item.strip())

    def choice(self, name: builtins.str, default: builtins.str, choices: tuple[builtins.str, ...]) -> builtins.str:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value.lower()
